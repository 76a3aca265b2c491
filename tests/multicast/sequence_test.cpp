// The long sequence: a million signals to eight members with different rules, one of which stops
// reading. Every live member gets exactly what the exact evaluator says its rule matches, once
// each and in order; the one that stopped gets a prefix of that and an explicit drop.
//
// MCBUS_SEQUENCE_MESSAGES overrides the count (the sanitizer build runs fewer).
#include <mcbus/multicast.hpp>

#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace mcbus;
using mcbus_test::bus_test;
using mcbus_test::looper;

namespace {

class Sequence : public bus_test {};
MCBUS_ALL_BUSES_AND_TRANSPORTS(Sequence);

std::uint32_t message_count() {
  const char* v = std::getenv("MCBUS_SEQUENCE_MESSAGES");
  return v ? static_cast<std::uint32_t>(std::strtoul(v, nullptr, 10)) : 1000000u;
}

// Signal i: sensor "s<i % 16>" (arg0), value i, on member Reading or (every 7th) Alarm.
message numbered(std::uint32_t i) {
  message m = message::signal("/org/mcbus/Sensor", "org.mcbus.Sensor1",
                              i % 7 == 0 ? member_name("Alarm") : member_name("Reading"));
  m.append("s" + std::to_string(i % 16), static_cast<double>(i), std::uint64_t{i});
  return m;
}

struct member_side {
  std::string rule;
  std::unique_ptr<looper> loop;
  std::shared_ptr<std::vector<std::uint64_t>> got = std::make_shared<std::vector<std::uint64_t>>();
  std::shared_ptr<std::optional<error>> lost = std::make_shared<std::optional<error>>();
  std::vector<std::uint64_t> expected;
  match_rule parsed;
};

TEST_P(Sequence, AMillionSignalsToEightMembersExactlyAndInOrder) {
  const std::uint32_t n = message_count();
  const std::string sender = "org.mcbus.Test.Sequence." + mcbus_test::param_name({GetParam(), 0});
  auto pc = connect();
  ASSERT_TRUE(pc) << pc.error().message();
  const std::string publisher_unique = pc->unique_name();
  looper pub_loop(std::move(*pc));
  multicast::publisher_options opts;
  opts.bus_copy = false;  // every reader here joins; the bus copy is tested elsewhere
  std::shared_ptr<multicast::publisher> pub = pub_loop.run([&](connection& c) -> std::shared_ptr<multicast::publisher> {
    if (!c.request_name(bus_name::from_unchecked(sender))) return nullptr;
    auto made = multicast::publisher::create(c, opts);
    return made ? std::shared_ptr<multicast::publisher>(std::move(*made)) : nullptr;
  });
  ASSERT_TRUE(pub);
  pub_loop.keep(pub);

  const std::string base = "type='signal',sender='" + sender + "'";
  std::vector<member_side> members(8);
  const char* rules[] = {
      ",arg0='s1'",                      // 1/16
      ",arg0='s2',member='Reading'",     // part of 1/16
      ",member='Alarm'",                 // 1/7
      ",arg0namespace='s1'",             // s1 and nothing else (s10..s15 are not s1.*)
      ",interface='org.mcbus.Sensor1'",  // everything
      ",arg0='s15'",                     // 1/16
      ",arg0='nobody'",                  // nothing: never a packet
      ",arg0='s3'",                      // the member that stops reading
  };
  for (std::size_t k = 0; k < members.size(); ++k) {
    member_side& m = members[k];
    m.rule = base + rules[k];
    auto parsed = match_rule::parse(m.rule);
    ASSERT_TRUE(parsed) << m.rule;
    m.parsed = *parsed;
    auto c = connect();
    ASSERT_TRUE(c);
    m.loop = std::make_unique<looper>(std::move(*c));
    auto got = m.got;
    auto lost = m.lost;
    std::shared_ptr<subscription> kept = m.loop->run([&](connection& conn) -> std::shared_ptr<subscription> {
      conn.on_multicast_lost([lost](std::string_view, const error& e) { *lost = e; });
      auto sub = conn.subscribe(m.rule, [got](const message_view& msg) {
        auto v = msg.read<std::string_view, double, std::uint64_t>();
        got->push_back(v ? std::get<2>(*v) : ~std::uint64_t{0});
      });
      return sub ? std::make_shared<subscription>(std::move(*sub)) : nullptr;
    });
    ASSERT_TRUE(kept) << m.rule;
    m.loop->keep(std::move(kept));
  }
  ASSERT_TRUE(pub_loop.wait_for([&] { return pub->member_count() == members.size(); }));
  for (member_side& m : members) ASSERT_TRUE(mcbus_test::wait_joined(*m.loop, publisher_unique));
  member_side& slow = members.back();
  slow.loop->pause(true);

  // What each rule matches, by the exact evaluator, computed from the same messages (the rules
  // name the publisher by its well-known name; the lookup says who owns it).
  const name_owner owners[] = {{sender, publisher_unique}};
  const match_context ctx{{}, name_lookup(owners)};
  for (std::uint32_t i = 0; i < n; ++i) {
    message m = numbered(i);
    m.set_sender(bus_name::from_unchecked(publisher_unique));
    auto v = m.view();
    ASSERT_TRUE(v);
    for (member_side& s : members) {
      if (s.parsed.matches(*v, ctx)) s.expected.push_back(i);
    }
  }

  // Emit in rounds that the live members keep up with.
  constexpr std::uint32_t round = 2000;
  for (std::uint32_t start = 0; start < n; start += round) {
    const std::uint32_t end = std::min(n, start + round);
    const error e = pub_loop.run([&](connection&) {
      multicast::publisher::batch burst(*pub);
      for (std::uint32_t i = start; i < end; ++i) {
        if (error err = pub->emit(numbered(i))) return err;
      }
      return error();
    });
    ASSERT_FALSE(e) << e.message();
    for (std::size_t k = 0; k + 1 < members.size(); ++k) {
      member_side& m = members[k];
      std::size_t want = 0;
      while (want < m.expected.size() && m.expected[want] < end) ++want;
      ASSERT_TRUE(m.loop->wait_for([&] { return m.got->size() >= want; }, std::chrono::seconds(60)))
          << m.rule << ": " << m.loop->run([&](connection&) { return m.got->size(); }) << " of " << want;
    }
  }

  for (std::size_t k = 0; k + 1 < members.size(); ++k) {
    member_side& m = members[k];
    m.loop->run([&](connection& c) {
      EXPECT_EQ(*m.got, m.expected) << m.rule;  // exactly, once each, in order
      EXPECT_FALSE(m.lost->has_value()) << m.rule;
      if (m.expected.empty()) {
        for (const auto& [name, packets] : c.multicast_groups()) EXPECT_EQ(packets, 0u) << m.rule;
      }
      return 0;
    });
  }
  // The one that stopped reading was served over the bus meanwhile: once it reads again it has
  // everything too, exactly, and was never dropped.
  EXPECT_GT(pub_loop.run([&](connection&) { return pub->stats().overflow_unicasts; }), 0u);
  EXPECT_EQ(pub_loop.run([&](connection&) { return pub->member_count(); }), members.size());
  slow.loop->pause(false);
  ASSERT_TRUE(slow.loop->wait_for([&] { return slow.got->size() >= slow.expected.size(); }, std::chrono::seconds(120)))
      << slow.loop->run([&](connection&) { return slow.got->size(); }) << " of " << slow.expected.size();
  slow.loop->run([&](connection&) {
    EXPECT_EQ(*slow.got, slow.expected);
    EXPECT_FALSE(slow.lost->has_value());
    return 0;
  });
}

}  // namespace
