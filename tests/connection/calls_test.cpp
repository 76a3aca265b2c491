// Hello, method calls, replies, errors, timeouts and asynchronous calls, against real buses.
#include <mcbus/connection.hpp>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "fixture.hpp"

using namespace mcbus;
using mcbus_test::bus_test;

namespace {

class Calls : public bus_test {};
MCBUS_ALL_BUSES_AND_TRANSPORTS(Calls);

TEST_P(Calls, HelloGivesAUniqueNameAndTheChosenTransport) {
  MCBUS_TEST_CONNECT(c);
  EXPECT_TRUE(is_valid_unique_name(c.unique_name())) << c.unique_name();
  EXPECT_STREQ(c.transport_name(), std::get<1>(GetParam()) == transport_choice::poll ? "poll" : "io_uring");
  EXPECT_TRUE(c.can_pass_fds());
}

TEST_P(Calls, ListNamesContainsOurOwnName) {
  MCBUS_TEST_CONNECT(c);
  auto reply = c.call_method(bus_service, bus_path, bus_interface, "ListNames");
  ASSERT_TRUE(reply) << reply.error().message();
  auto names = reply->read_first<std::vector<std::string_view>>();
  ASSERT_TRUE(names);
  EXPECT_NE(std::find(names->begin(), names->end(), c.unique_name()), names->end());
}

TEST_P(Calls, ErrorRepliesCarryTheErrorNameAndText) {
  MCBUS_TEST_CONNECT(c);
  auto reply = c.call_method(bus_service, bus_path, bus_interface, "NoSuchMethod");
  ASSERT_FALSE(reply);
  EXPECT_TRUE(reply.error().is_remote());
  EXPECT_EQ(reply.error().name(), dbus_error::unknown_method);
  EXPECT_FALSE(reply.error().text().empty());
  auto owner = c.get_name_owner("org.example.NobodyOwnsThis");
  ASSERT_FALSE(owner);
  EXPECT_EQ(owner.error().name(), dbus_error::name_has_no_owner);
}

TEST_P(Calls, ACallNobodyAnswersTimesOut) {
  MCBUS_TEST_CONNECT(server);
  MCBUS_TEST_CONNECT(client);
  std::vector<deferred_reply> parked;  // never answered
  auto obj = server.add_object("/t", object_builder().interface("org.example.T").method("Hang", [&](method_call& call) {
    parked.push_back(call.defer());
  }));
  bool got_call = false;
  message m = message::method_call(bus_name::from_unchecked(server.unique_name()), "/t", "org.example.T", "Hang");
  // The server must see the call before the client's blocking wait starts, so run it alongside.
  ASSERT_FALSE(client.call_async(
      std::move(m),
      [&](call_result<message_view> r) {
        got_call = true;
        EXPECT_FALSE(r);
        EXPECT_EQ(r.error().code(), errc::timeout);
        EXPECT_EQ(r.error().name(), dbus_error::no_reply);
      },
      std::chrono::milliseconds(300)));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!got_call && std::chrono::steady_clock::now() < deadline) {
    ASSERT_FALSE(server.process());
    ASSERT_FALSE(client.run_for(std::chrono::milliseconds(20)));
  }
  EXPECT_TRUE(got_call);
  EXPECT_EQ(parked.size(), 1u);
}

TEST_P(Calls, BlockingCallTimesOutWithNoReply) {
  MCBUS_TEST_CONNECT(c);
  // Our own unique name, but nobody runs our loop while we block: the call cannot be answered.
  auto obj = c.add_object("/t", object_builder().interface("org.example.T").method("Ping", [] {}));
  message m = message::method_call(bus_name::from_unchecked(c.unique_name()), "/t", "org.example.T", "Ping");
  const auto start = std::chrono::steady_clock::now();
  auto r = c.call(std::move(m), std::chrono::milliseconds(200));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), errc::timeout);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(200));
  // The queued call is still answered once the loop runs, and the late reply is dropped quietly.
  EXPECT_FALSE(c.run_for(std::chrono::milliseconds(50)));
  EXPECT_TRUE(c.connected());
}

TEST_P(Calls, AsyncCallsAllGetTheirOwnReplies) {
  MCBUS_TEST_CONNECT(server);
  MCBUS_TEST_CONNECT(client);
  auto obj = server.add_object(
      "/calc", object_builder().interface("org.example.Calc").method("Double", [](std::int64_t x) { return x * 2; }));
  constexpr int n = 2000;
  int done = 0;
  int wrong = 0;
  for (int i = 0; i < n; ++i) {
    message m =
        message::method_call(bus_name::from_unchecked(server.unique_name()), "/calc", "org.example.Calc", "Double");
    m.append(std::int64_t{i});
    ASSERT_FALSE(client.call_async(std::move(m), [&, i](call_result<message_view> r) {
      ++done;
      auto v = r ? r->read_first<std::int64_t>() : result<std::int64_t>(errc::bad_reply);
      if (!v || *v != 2 * i) ++wrong;
    }));
    if (i % 64 == 0) {
      ASSERT_FALSE(server.process());
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (done < n && std::chrono::steady_clock::now() < deadline) {
    ASSERT_FALSE(server.run_for(std::chrono::milliseconds(5)));
    ASSERT_FALSE(client.run_for(std::chrono::milliseconds(5)));
  }
  EXPECT_EQ(done, n);
  EXPECT_EQ(wrong, 0);
}

TEST_P(Calls, NoReplyExpectedGetsNoReply) {
  MCBUS_TEST_CONNECT(server);
  MCBUS_TEST_CONNECT(client);
  int calls = 0;
  auto obj = server.add_object("/n", object_builder().interface("org.example.N").method("Note", [&](std::string_view) {
    ++calls;
    return std::uint32_t{1};
  }));
  message m = message::method_call(bus_name::from_unchecked(server.unique_name()), "/n", "org.example.N", "Note");
  m.append(std::string_view("x"));
  m.set_no_reply_expected();
  ASSERT_TRUE(client.send(std::move(m)));
  // A normal call afterwards proves ordering: when its reply is back, Note has been handled.
  message ping =
      message::method_call(bus_name::from_unchecked(server.unique_name()), "/n", "org.freedesktop.DBus.Peer", "Ping");
  bool pinged = false;
  ASSERT_FALSE(client.call_async(std::move(ping), [&](call_result<message_view> r) { pinged = static_cast<bool>(r); }));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!pinged && std::chrono::steady_clock::now() < deadline) {
    ASSERT_FALSE(server.run_for(std::chrono::milliseconds(5)));
    ASSERT_FALSE(client.run_for(std::chrono::milliseconds(5)));
  }
  EXPECT_TRUE(pinged);
  EXPECT_EQ(calls, 1);
}

}  // namespace
