// The admission restriction ANDed into a member's rule (publisher.hpp, detail::restrict_rule),
// judged on messages by the exact evaluator: the result never passes what the restriction
// rejects, never loses what both rules accept, and is exactly the conjunction where one test
// implies the other.
#include <mcbus/multicast.hpp>

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

using namespace mcbus;

namespace {

std::vector<message> sample_messages() {
  std::vector<message> out;
  for (std::string_view path : {"/", "/a", "/a/b", "/a/b/c", "/x"}) {
    for (std::string_view arg0 : {"org", "org.a", "org.a.b", "org.b", "net"}) {
      for (std::string_view member : {"Reading", "Alarm"}) {
        message m = message::signal(object_path_view::from_unchecked(path), interface_name::from_unchecked("org.S1"),
                                    member_name::from_unchecked(member));
        m.set_sender(bus_name::from_unchecked(":1.7"));
        m.append(arg0, std::string_view("/a/b"));
        out.push_back(std::move(m));
      }
    }
  }
  return out;
}

match_rule rule(std::string_view text) {
  auto r = match_rule::parse(text);
  EXPECT_TRUE(r) << text;
  return r ? *r : match_rule();
}

struct verdicts {
  bool sound = true;      // passes everything both rules accept
  bool bounded = true;    // passes nothing the restriction rejects
  bool exact = true;      // passes exactly what both accept
  bool anything = false;  // the conjunction accepts at least one sample
};

verdicts judge(const match_rule& wanted, const match_rule& allowed, const std::optional<match_rule>& got) {
  verdicts v;
  for (message& m : sample_messages()) {
    auto view = m.view();
    EXPECT_TRUE(view);
    const bool want = wanted.matches(*view) && allowed.matches(*view);
    const bool pass = got && got->matches(*view);
    v.anything = v.anything || want;
    if (want && !pass) v.sound = false;
    if (pass && !allowed.matches(*view)) v.bounded = false;
    if (want != pass) v.exact = false;
  }
  return v;
}

TEST(RestrictRule, NarrowerTestsWinAndDisjointPairsGiveNothing) {
  struct row {
    const char* wanted;
    const char* allowed;
    bool exact;
  };
  const row rows[] = {
      {"member='Reading'", "member='Reading'", true},
      {"member='Reading'", "member='Alarm'", true},  // disjoint
      {"path_namespace='/a'", "path_namespace='/a/b'", true},
      {"path_namespace='/a/b'", "path_namespace='/a'", true},
      {"path_namespace='/a'", "path_namespace='/x'", true},  // disjoint
      {"path='/a/b'", "path_namespace='/a'", true},
      {"path_namespace='/a'", "path='/a/b/c'", true},
      {"path_namespace='/x'", "path='/a/b'", true},  // disjoint
      {"arg0='org.a'", "arg0namespace='org'", true},
      {"arg0namespace='org'", "arg0='org.a.b'", true},
      {"arg0='net'", "arg0namespace='org'", true},  // disjoint
      {"arg0namespace='org.a'", "arg0namespace='org'", true},
      {"arg0namespace='org'", "arg0namespace='org.a'", true},
      {"arg0namespace='org.b'", "arg0namespace='org.a'", true},  // disjoint
      {"arg0='org.a'", "arg0='org.b'", true},                    // disjoint
      {"member='Alarm',arg0namespace='org'", "path_namespace='/a',arg0='org.a'", true},
      // argNpath with another argN test cannot be one rule: the restriction's test is kept.
      {"arg1path='/a/'", "arg1='/a/b'", false},
  };
  for (const row& r : rows) {
    const match_rule wanted = rule(r.wanted), allowed = rule(r.allowed);
    const auto got = multicast::detail::restrict_rule(wanted, allowed);
    const verdicts v = judge(wanted, allowed, got);
    EXPECT_TRUE(v.sound) << r.wanted << " AND " << r.allowed;
    EXPECT_TRUE(v.bounded) << r.wanted << " AND " << r.allowed;
    if (r.exact) {
      EXPECT_TRUE(v.exact) << r.wanted << " AND " << r.allowed << " gave " << (got ? got->to_string() : "");
    }
    if (!v.anything) {
      EXPECT_FALSE(got) << r.wanted << " AND " << r.allowed << " cannot both hold";
    }
  }
}

}  // namespace
