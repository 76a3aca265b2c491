// Match rule text: the conformance tables of dbus-daemon 1.14 and dbus-broker 33, sd-bus's fuzz
// inputs, error reports, the canonical form and compile-time parsing.
#include <mcbus/match.hpp>

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "test_support.hpp"

using namespace mcbus;

namespace {

std::filesystem::path conf(const char* rel) { return mcbus_test::conformance_dir() / rel; }

void expect_round_trip(const match_rule& r, const std::string& origin) {
  const std::string text = r.to_string();
  auto back = match_rule::parse(text, {.limit_length = false});
  ASSERT_TRUE(back) << origin << " -> " << text << ": " << back.error().message();
  EXPECT_TRUE(*back == r) << origin << " -> " << text;
  // The canonical form avoids the sequences on which dbus-daemon and the specification differ.
  auto spec = match_rule::parse(text, {.syntax = match_syntax::specification, .limit_length = false});
  ASSERT_TRUE(spec) << text;
  EXPECT_TRUE(*spec == r) << "canonical form read differently by the specification's rules: " << text;
  EXPECT_EQ(back->to_string(), text) << "canonical form is not stable";
}

TEST(MatchRuleParse, DbusDaemonParseTable) {
  const auto rows = mcbus_test::read_tsv(conf("dbus-1.14.10/match-rules-parse.tsv"));
  ASSERT_GE(rows.size(), 30u);
  for (const auto& row : rows) {
    const std::string rule = row.size() > 1 ? row[1] : std::string();
    auto r = match_rule::parse(rule);
    EXPECT_EQ(r.has_value(), row[0] == "valid") << "rule: " << rule << (r ? "" : " error: " + r.error().message());
    if (r) expect_round_trip(*r, rule);
  }
}

// Error notes are static; match_rule_error_key() finds the key of the pair the offset falls in,
// so every message can name the key, including unknown ones.
TEST(MatchRuleParse, ErrorsNameTheKeyAndTheByte) {
  struct row {
    std::string_view rule;
    std::string_view key;
    std::size_t offset;
  };
  for (const row& r : {row{"colour='red'", "colour", 0}, row{"type='signal', member='A", "member", 22},
                       row{"type='signal',type='signal'", "type", 14}, row{"arg64='x'", "arg64", 0},
                       row{"path_namespace='/a/'", "path_namespace", 0}, row{"arg0='a,b',member='1x'", "member", 11}}) {
    auto p = match_rule::parse(r.rule);
    ASSERT_FALSE(p) << r.rule;
    EXPECT_EQ(p.error().offset(), r.offset) << r.rule;
    EXPECT_EQ(match_rule_error_key(r.rule, p.error()), r.key) << r.rule;
    EXPECT_NE(match_rule_error_text(r.rule, p.error()).find("key '" + std::string(r.key) + "'"), std::string::npos);
  }
  auto ns = match_rule::parse("path_namespace='/a/'");
  EXPECT_STREQ(ns.error().where(), "path_namespace: not a valid object path");
}

TEST(MatchRuleParse, DbusDaemonEqualityTable) {
  const auto rows = mcbus_test::read_tsv(conf("dbus-1.14.10/match-rules-equal.tsv"));
  ASSERT_GE(rows.size(), 15u);
  std::vector<match_rule> firsts;
  for (const auto& row : rows) {
    ASSERT_EQ(row.size(), 2u);
    auto a = match_rule::parse(row[0]);
    auto b = match_rule::parse(row[1]);
    ASSERT_TRUE(a && b) << row[0] << " / " << row[1];
    EXPECT_TRUE(*a == *b) << row[0] << " / " << row[1];
    EXPECT_EQ(a->to_string(), b->to_string());
    firsts.push_back(*a);
  }
  // As in dbus's test_equality(): the rule of each row differs from the rule of every other row.
  for (std::size_t i = 0; i < firsts.size(); ++i) {
    for (std::size_t j = 0; j < firsts.size(); ++j) {
      if (i == j) continue;
      EXPECT_FALSE(firsts[i] == firsts[j]) << rows[i][0] << " == " << rows[j][0];
    }
  }
}

// dbus-broker 33's parse table, with the argument values it expects. Three rows show where
// dbus-broker (which follows the specification's quoting and skips stray '=' before keys) and
// dbus-daemon part ways; mcbus follows dbus-daemon by default, and the integration test checks
// each of these against a real dbus-daemon.
// The dbus-broker TSV writes a carriage return as \r, which test_support's reader (backslash, tab,
// newline) does not undo; this reads it with that escape too.
std::vector<mcbus_test::tsv_row> read_tsv_with_cr(const std::filesystem::path& p) {
  auto rows = mcbus_test::read_tsv(p);
  const std::string raw = mcbus_test::read_text(p);
  std::vector<std::string> lines;
  for (std::size_t at = 0; at < raw.size();) {
    const std::size_t nl = raw.find('\n', at);
    const std::string line = raw.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
    if (!line.empty() && line[0] != '#') lines.push_back(line);
    at = nl == std::string::npos ? raw.size() : nl + 1;
  }
  for (std::size_t i = 0; i < rows.size() && i < lines.size(); ++i) {
    if (lines[i].find("\\r") == std::string::npos) continue;
    std::string fixed = lines[i];
    // In place, not with replace(): g++ 12 at -O3 warns falsely on that one (-Wrestrict).
    for (std::size_t at = 0; (at = fixed.find("\\r", at)) != std::string::npos;) {
      fixed[at] = '\x01';
      fixed.erase(at + 1, 1);
    }
    mcbus_test::tsv_row row;
    for (std::size_t start = 0;;) {
      const std::size_t tab = fixed.find('\t', start);
      std::string cell =
          mcbus_test::tsv_unescape(fixed.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
      for (char& c : cell) c = c == '\x01' ? '\r' : c;
      row.push_back(cell);
      if (tab == std::string::npos) break;
      start = tab + 1;
    }
    rows[i] = row;
  }
  return rows;
}

TEST(MatchRuleParse, DbusBrokerParseTable) {
  const auto rows = read_tsv_with_cr(conf("dbus-broker-33/match-rules-parse.tsv"));
  ASSERT_GE(rows.size(), 40u);
  int with_args = 0;
  for (const auto& row : rows) {
    const std::string& verdict = row[0];
    const std::string rule = row.size() > 1 ? row[1] : std::string();
    auto r = match_rule::parse(rule);
    if (rule == "eavesdrop=true") {
      // dbus-broker refuses it for unprivileged peers; dbus-daemon accepts it where policy allows.
      EXPECT_TRUE(r);
      continue;
    }
    EXPECT_EQ(r.has_value(), verdict == "valid") << "rule: " << rule;
    if (!r || row.size() < 3 || row[2].rfind("arg", 0) != 0) continue;
    ++with_args;
    std::vector<std::string> want(row.begin() + 2, row.end());
    auto args_of = [](const match_rule& m) {
      std::vector<std::string> out;
      for (std::size_t i = 0; i < m.arg_count(); ++i) {
        out.push_back("arg" + std::to_string(m.arg(i).index) + "=" + std::string(m.arg(i).value));
      }
      return out;
    };
    const bool stray_equals = rule.find("=arg0") != std::string::npos;
    const bool backslash_comma = rule.find("\\,") != std::string::npos;
    if (stray_equals) {
      // dbus-daemon stops at an '=' where a key should start: the rest is ignored.
      EXPECT_TRUE(r->empty()) << rule;
    } else if (backslash_comma) {
      // dbus-daemon keeps "\," together: arg1 runs on to the next unquoted comma.
      EXPECT_EQ(args_of(*r), (std::vector<std::string>{"arg0='", "arg1=\\,arg2=,", "arg3=\\\\"})) << rule;
      auto spec = match_rule::parse(rule, {.syntax = match_syntax::specification});
      ASSERT_TRUE(spec);
      EXPECT_EQ(args_of(*spec), want) << "specification syntax: " << rule;
    } else {
      EXPECT_EQ(args_of(*r), want) << rule;
    }
    expect_round_trip(*r, rule);
  }
  EXPECT_EQ(with_args, 5);
}

// The specification's own escaping examples, in its own syntax.
TEST(MatchRuleParse, SpecificationEscapingExamples) {
  for (const char* text : {R"(arg0=''\''',arg1='\',arg2=',',arg3='\\')", R"(arg0=\',arg1=\,arg2=',',arg3=\\)"}) {
    auto r = match_rule::parse(text, {.syntax = match_syntax::specification});
    ASSERT_TRUE(r) << text;
    ASSERT_EQ(r->arg_count(), 4u);
    EXPECT_EQ(r->arg(0).value, "'");
    EXPECT_EQ(r->arg(1).value, "\\");
    EXPECT_EQ(r->arg(2).value, ",");
    EXPECT_EQ(r->arg(3).value, "\\\\");
  }
}

TEST(MatchRuleParse, SdBusFuzzInputsDoNotCrash) {
  int lines = 0;
  for (const auto& entry : std::filesystem::directory_iterator(conf("systemd-252.39/fuzz-bus-match"))) {
    const std::string text = mcbus_test::read_text(entry.path());
    std::size_t start = 0;
    while (start <= text.size()) {
      const std::size_t nl = text.find('\n', start);
      const std::string line = text.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
      for (match_syntax s : {match_syntax::dbus_daemon, match_syntax::specification}) {
        auto r = match_rule::parse(line, {.syntax = s});
        if (r) expect_round_trip(*r, line);
      }
      ++lines;
      if (nl == std::string::npos) break;
      start = nl + 1;
    }
  }
  EXPECT_GE(lines, 10);
  // sd-bus's looser dialect: argNhas is not a dbus-daemon key, and \' inside quotes is not an escape.
  EXPECT_FALSE(match_rule::parse("arg4has='pi'"));
  EXPECT_FALSE(match_rule::parse("arg2='wal\\'do',sender='foo',type='signal',interface='bar.x',"));
}

// Behaviour of dbus-daemon 1.14 that these tables do not show, read from bus/signals.c and checked
// against dbus-daemon by the integration test.
TEST(MatchRuleParse, DbusDaemonQuirks) {
  // argN numbers go through strtoul(..., 0).
  EXPECT_EQ(match_rule::parse("arg0x1='a'")->arg(0).index, 1u);
  EXPECT_EQ(match_rule::parse("arg010='a'")->arg(0).index, 8u);
  EXPECT_EQ(match_rule::parse("arg+1='a'")->arg(0).index, 1u);
  EXPECT_EQ(match_rule::parse("arg-0='a'")->arg(0).index, 0u);
  EXPECT_EQ(match_rule::parse("arg0x1fpath='a'")->arg(0).index, 31u);
  EXPECT_EQ(match_rule::parse("arg0x1fpath='a'")->arg(0).kind, match_arg_kind::path);
  EXPECT_FALSE(match_rule::parse("arg-1='a'"));
  EXPECT_FALSE(match_rule::parse("arg08='a'"));
  EXPECT_FALSE(match_rule::parse("arg00namespace='a'"));
  EXPECT_FALSE(match_rule::parse("arg99999999999999999999='a'"));
  EXPECT_FALSE(match_rule::parse("argpath='a'"));
  // At most 16 keys are read; what follows is ignored, valid or not.
  std::string seventeen;
  for (int i = 0; i < 16; ++i) seventeen += "arg" + std::to_string(i) + "='a',";
  auto r = match_rule::parse(seventeen + "bogus='x'");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->arg_count(), 16u);
  std::string dup;
  for (int i = 0; i < 16; ++i) dup += "arg0='a',";
  EXPECT_FALSE(match_rule::parse(dup + "arg0='b'"));
  // An '=' where a key belongs ends the rule.
  EXPECT_TRUE(match_rule::parse("member='A',=junk,bogus")->member() == "A");
  // eavesdrop may repeat; the last one wins.
  EXPECT_FALSE(match_rule::parse("eavesdrop='true',eavesdrop='false'")->eavesdrop());
  // libdbus's unique names are looser than the specification's.
  EXPECT_TRUE(match_rule::parse("sender=':'"));
  EXPECT_TRUE(match_rule::parse("sender=':1'"));
  EXPECT_TRUE(match_rule::parse("arg0namespace=':1'"));
  EXPECT_FALSE(match_rule::parse("sender=':1.'"));
  // Whitespace: skipped around keys, kept in values.
  EXPECT_EQ(match_rule::parse("member=A, arg0= x ")->arg(0).value, " x ");
  EXPECT_FALSE(match_rule::parse("type = signal"));  // the value is " signal"
  // Empty values are values; empty paths and names are not.
  EXPECT_EQ(match_rule::parse("arg0=''")->arg(0).value, "");
  EXPECT_TRUE(match_rule::parse("arg0path=")->find_arg(0));
  EXPECT_FALSE(match_rule::parse("member=''"));
  // Texts that could not be a D-Bus string.
  EXPECT_FALSE(match_rule::parse(std::string_view("member='A'\0", 11)));
  EXPECT_FALSE(match_rule::parse("arg0='\xff'"));
}

TEST(MatchRuleParse, ErrorsNameKeyAndPosition) {
  struct {
    std::string_view text;
    std::size_t offset;
    std::string_view where;
  } cases[] = {
      {"type='signal',sender='foo'", 14, "sender"},
      {"member='A',member='B'", 11, "specified twice"},
      {"path='/a',path_namespace='/b'", 10, "path or path_namespace"},
      {"arg64='x'", 0, "above 63"},
      {"arg1namespace='x'", 0, "arg0namespace"},
      {"arg0namespace='a.'", 0, "namespace"},
      {"member='A", 7, "unbalanced"},
      {"member", 0, "'='"},
      {"colour='red'", 0, "unknown key"},
      {"eavesdrop='yes'", 0, "eavesdrop"},
      {"path_namespace='/a/'", 0, "object path"},
  };
  for (const auto& c : cases) {
    auto r = match_rule::parse(c.text);
    ASSERT_FALSE(r) << c.text;
    EXPECT_EQ(r.error().code(), errc::bad_match_rule);
    EXPECT_EQ(r.error().offset(), c.offset) << c.text;
    EXPECT_NE(std::string_view(r.error().where()).find(c.where), std::string_view::npos)
        << c.text << ": " << r.error().message();
  }
  const std::string long_rule = std::string(200, ' ') + "arg0='" + std::string(900, 'x') + "'";
  auto r = match_rule::parse(long_rule);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().offset(), 1024u);
  EXPECT_TRUE(match_rule::parse(long_rule, {.limit_length = false}));
  // Without the limit, the values must still fit a rule's 1024 bytes.
  auto huge = match_rule::parse("arg0='" + std::string(1100, 'x') + "'", {.limit_length = false});
  ASSERT_FALSE(huge);
  EXPECT_NE(std::string_view(huge.error().where()).find("1024"), std::string_view::npos);
}

TEST(MatchRuleParse, CanonicalFormAndRoundTrip) {
  auto r = match_rule::parse("arg2='x',  sender=':1.5',member=Changed,type=signal,arg0path=/a/,eavesdrop=true");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->to_string(), "type='signal',member='Changed',sender=':1.5',eavesdrop='true',arg0path='/a/',arg2='x'");
  auto q = match_rule::parse(R"(arg0=it\'s,arg1='a,b',arg2=\\x)");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->to_string(), R"(arg0='it'\''s',arg1='a,b',arg2='\\x')");
  expect_round_trip(*q, "quotes");
  // A rule near the length limit can have a longer canonical form (every apostrophe becomes '\'')
  // that dbus-daemon would refuse; it parses back with the limit off.
  std::string near = "arg0=";
  for (int i = 0; i < 300; ++i) near += "\\'";
  auto n = match_rule::parse(near);
  ASSERT_TRUE(n);
  EXPECT_GT(n->to_string().size(), match_rule::max_length);
  EXPECT_FALSE(match_rule::parse(n->to_string()));
  expect_round_trip(*n, "apostrophes");
}

TEST(MatchRuleBuild, SettersValidateLikeParse) {
  match_rule r;
  EXPECT_TRUE(r.empty());
  EXPECT_FALSE(r.set_interface("org.example.Foo"));
  EXPECT_TRUE(r.set_interface("not an interface"));
  EXPECT_EQ(r.interface(), "org.example.Foo");
  EXPECT_FALSE(r.set_path("/a"));
  EXPECT_FALSE(r.set_path_namespace("/b"));  // replaces path
  EXPECT_FALSE(r.path());
  EXPECT_EQ(r.path_namespace(), "/b");
  EXPECT_FALSE(r.add_arg(3, "x"));
  EXPECT_FALSE(r.add_arg(1, match_arg_kind::path, "/p/"));
  EXPECT_TRUE(r.add_arg(1, "again"));
  EXPECT_TRUE(r.add_arg(64, "x"));
  EXPECT_TRUE(r.add_arg(1, match_arg_kind::arg0namespace, "a.b"));
  EXPECT_EQ(r.arg(0).index, 1u);
  EXPECT_EQ(r.arg(1).index, 3u);
  EXPECT_EQ(r.to_string(), "interface='org.example.Foo',path_namespace='/b',arg1path='/p/',arg3='x'");
  // Replacing values many times compacts the buffer instead of running out of it.
  for (int i = 0; i < 200; ++i) ASSERT_FALSE(r.set_member(std::string(200, static_cast<char>('A' + i % 26))));
  EXPECT_EQ(r.member()->size(), 200u);
  EXPECT_EQ(r.interface(), "org.example.Foo");
  match_rule full;
  for (unsigned i = 0; i < 16; ++i) ASSERT_FALSE(full.add_arg(i, "v"));
  EXPECT_TRUE(full.set_member("Seventeen"));
  EXPECT_TRUE(full.set_eavesdrop(true));
}

// Parsing is constexpr: rules written in the source are checked when it compiles.
constexpr auto compile_time_rule =
    match_rule::parse("type='signal',interface='org.example.Foo',arg2path='/a/'").value();
static_assert(compile_time_rule.interface() == "org.example.Foo");
static_assert(compile_time_rule.find_arg(2)->kind == match_arg_kind::path);
static_assert(!match_rule::parse("type='telegram'"));
static_assert(!match_rule::parse("arg64='x'"));
using namespace mcbus::literals;
constexpr auto literal_rule = "member='Changed',arg0namespace='com.example'"_match;
static_assert(literal_rule.member() == "Changed" && literal_rule.arg(0).kind == match_arg_kind::arg0namespace);

TEST(MatchRuleParse, CompileTimeRulesEqualRunTimeRules) {
  EXPECT_TRUE(compile_time_rule == *match_rule::parse("arg2path='/a/',interface='org.example.Foo',type='signal'"));
  EXPECT_TRUE(literal_rule == *match_rule::parse("arg0namespace='com.example',member='Changed'"));
}

}  // namespace
