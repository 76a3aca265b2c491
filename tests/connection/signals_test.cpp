// Signals: emitting, subscribing with exact client-side filtering, and unsubscribing.
#include <mcbus/connection.hpp>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "fixture.hpp"

using namespace mcbus;
using mcbus_test::bus_test;

namespace {

class Signals : public bus_test {};
MCBUS_ALL_BUSES_AND_TRANSPORTS(Signals);

message tick(std::string_view iface_text, std::string_view member_text, std::string_view arg) {
  message m = message::signal("/org/example/Ticker", interface_name::from_unchecked(iface_text),
                              member_name::from_unchecked(member_text));
  m.append(arg);
  return m;
}

TEST_P(Signals, SubscribersGetExactlyTheirMatches) {
  MCBUS_TEST_CONNECT(emitter);
  MCBUS_TEST_CONNECT(listener);
  std::vector<std::string> by_member, by_arg, everything;
  auto s1 =
      listener.subscribe("type='signal',interface='org.example.Ticker',member='Tick'",
                         [&](const message_view& m) { by_member.emplace_back(*m.read_first<std::string_view>()); });
  ASSERT_TRUE(s1) << s1.error().message();
  auto s2 = listener.subscribe("type='signal',interface='org.example.Ticker',arg0='b'",
                               [&](const message_view& m) { by_arg.emplace_back(*m.read_first<std::string_view>()); });
  ASSERT_TRUE(s2) << s2.error().message();
  // The emitter runs no loop here, so it cannot answer a Join: ask for the bus directly.
  auto s3 = listener.subscribe(
      "type='signal',sender='" + emitter.unique_name() + "'",
      [&](const message_view& m) { everything.emplace_back(m.header().member); }, subscribe_via::bus);
  ASSERT_TRUE(s3) << s3.error().message();

  ASSERT_TRUE(emitter.emit(tick("org.example.Ticker", "Tick", "a")));
  ASSERT_TRUE(emitter.emit(tick("org.example.Ticker", "Tock", "b")));
  ASSERT_TRUE(emitter.emit(tick("org.example.Ticker", "Tick", "b")));
  ASSERT_TRUE(emitter.emit(tick("org.example.Other", "Tick", "b")));
  ASSERT_TRUE(emitter.emit(tick("org.example.Ticker", "End", "z")));
  ASSERT_FALSE(
      listener.run_until([&] { return !everything.empty() && everything.back() == "End"; }, std::chrono::seconds(10)));
  EXPECT_EQ(by_member, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(by_arg, (std::vector<std::string>{"b", "b"}));
  EXPECT_EQ(everything, (std::vector<std::string>{"Tick", "Tock", "Tick", "Tick", "End"}));
}

TEST_P(Signals, DroppingTheHandleStopsDeliveryAndRemovesTheRule) {
  MCBUS_TEST_CONNECT(emitter);
  MCBUS_TEST_CONNECT(listener);
  int gone = 0, kept = 0;
  auto temp = listener.subscribe("type='signal',member='Gone'", [&](const message_view&) { ++gone; });
  ASSERT_TRUE(temp);
  auto keep = listener.subscribe("type='signal',member='Kept'", [&](const message_view&) { ++kept; });
  ASSERT_TRUE(keep);
  ASSERT_TRUE(emitter.emit(message::signal("/x", "org.example.X", "Gone")));
  ASSERT_TRUE(emitter.emit(message::signal("/x", "org.example.X", "Kept")));
  ASSERT_FALSE(listener.run_until([&] { return kept == 1; }, std::chrono::seconds(10)));
  EXPECT_EQ(gone, 1);
  temp->reset();  // sends RemoveMatch
  // The bus must no longer send it: count what arrives on the socket with a filter that sees all.
  int gone_on_the_wire = 0;
  listener.set_filter([&](const message_view& m) {
    if (m.header().member == "Gone") ++gone_on_the_wire;
    return false;
  });
  // A round trip to the bus after RemoveMatch: the rule is gone by the time the reply is back.
  ASSERT_TRUE(listener.call_method(bus_service, bus_path, bus_interface, "GetId"));
  ASSERT_TRUE(emitter.emit(message::signal("/x", "org.example.X", "Gone")));
  ASSERT_TRUE(emitter.emit(message::signal("/x", "org.example.X", "Kept")));
  ASSERT_FALSE(listener.run_until([&] { return kept == 2; }, std::chrono::seconds(10)));
  EXPECT_EQ(gone, 1);
  EXPECT_EQ(gone_on_the_wire, 0);
}

TEST_P(Signals, WellKnownSenderRulesFollowTheOwner) {
  MCBUS_TEST_CONNECT(owner);
  MCBUS_TEST_CONNECT(listener);
  const std::string name = "org.mcbus.Test.Sender." + mcbus_test::param_name({GetParam(), 0});
  ASSERT_EQ(*owner.request_name(bus_name::from_unchecked(name)), request_name_reply::primary_owner);
  std::vector<std::string> got;
  auto sub = listener.subscribe(
      "type='signal',sender='" + name + "',member='Hi'",
      [&](const message_view& m) { got.emplace_back(m.header().sender); }, subscribe_via::bus);
  ASSERT_TRUE(sub) << sub.error().message();
  ASSERT_TRUE(owner.emit(message::signal("/x", "org.example.X", "Hi")));
  ASSERT_FALSE(listener.run_until([&] { return got.size() == 1; }, std::chrono::seconds(10)));
  EXPECT_EQ(got[0], owner.unique_name());
}

TEST_P(Signals, UnicastSignalsReachOnlyTheirDestination) {
  MCBUS_TEST_CONNECT(emitter);
  MCBUS_TEST_CONNECT(target);
  MCBUS_TEST_CONNECT(bystander);
  int target_got = 0, bystander_got = 0, bystander_sentinel = 0;
  auto t = target.subscribe("type='signal',member='Direct'", [&](const message_view&) { ++target_got; });
  ASSERT_TRUE(t);
  auto b = bystander.subscribe("type='signal',member='Direct'", [&](const message_view&) { ++bystander_got; });
  ASSERT_TRUE(b);
  auto sentinel =
      bystander.subscribe("type='signal',member='Sentinel'", [&](const message_view&) { ++bystander_sentinel; });
  ASSERT_TRUE(sentinel);
  message direct = message::signal("/x", "org.example.X", "Direct");
  direct.set_destination(bus_name::from_unchecked(target.unique_name()));
  ASSERT_TRUE(emitter.emit(std::move(direct)));
  ASSERT_TRUE(emitter.emit(message::signal("/x", "org.example.X", "Sentinel")));
  ASSERT_FALSE(target.run_until([&] { return target_got == 1; }, std::chrono::seconds(10)));
  ASSERT_FALSE(bystander.run_until([&] { return bystander_sentinel == 1; }, std::chrono::seconds(10)));
  EXPECT_EQ(bystander_got, 0);
}

TEST_P(Signals, AnInvalidRuleIsRefusedWithTheReason) {
  MCBUS_TEST_CONNECT(c);
  auto bad = c.subscribe("type='signal',member='A',member='B'", [](const message_view&) {});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), errc::bad_match_rule) << bad.error().message();
}

}  // namespace
