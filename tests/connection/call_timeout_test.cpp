// The pending-call timeout as a foreign event loop sees it through timeout(): the default of 25 s
// (as in libdbus and sd-bus), and shorter ones given per call or per connection. Reading the
// deadline instead of waiting for it keeps these tests from sleeping 25 s.
#include <mcbus/connection.hpp>

#include <gtest/gtest.h>

#include <chrono>

#include "fixture.hpp"

using namespace mcbus;
using mcbus_test::bus_test;

namespace {

class CallTimeout : public bus_test {
 protected:
  // A call to a peer that never runs its loop, so nothing can ever answer it.
  static message hang(const connection& silent) {
    return message::method_call(bus_name::from_unchecked(silent.unique_name()), "/t", "org.example.T", "Hang");
  }

  // timeout() is 0 while received messages wait (NameAcquired after Hello, say): empty the inbox
  // so that what it reports is the pending calls' deadline.
  static void settle(connection& c) { ASSERT_FALSE(c.process()); }
};
MCBUS_ALL_BUSES_AND_TRANSPORTS(CallTimeout);

TEST_P(CallTimeout, TheDefaultIs25SecondsAndShowsInTheLoopTimeout) {
  EXPECT_EQ(connection_options{}.call_timeout, std::chrono::seconds(25));
  MCBUS_TEST_CONNECT(silent);
  MCBUS_TEST_CONNECT(c);
  settle(c);
  EXPECT_EQ(c.timeout(), -1) << "no call is pending yet";
  bool answered = false;
  ASSERT_FALSE(c.call_async(hang(silent), [&](call_result<message_view>) { answered = true; }));
  settle(c);
  ASSERT_FALSE(answered) << "the call ended early: its deadline would no longer mean anything";
  const int ms = c.timeout();
  // Rounded up to whole milliseconds, and only microseconds have passed since the call was sent.
  EXPECT_GE(ms, 24000);
  EXPECT_LE(ms, 25000);
}

TEST_P(CallTimeout, AShorterTimeoutGivenToTheCallShowsInstead) {
  MCBUS_TEST_CONNECT(silent);
  MCBUS_TEST_CONNECT(c);
  settle(c);
  bool answered = false;
  ASSERT_FALSE(c.call_async(hang(silent), [&](call_result<message_view>) { answered = true; }));
  ASSERT_FALSE(c.call_async(
      hang(silent), [&](call_result<message_view>) { answered = true; }, std::chrono::seconds(5)));
  settle(c);
  ASSERT_FALSE(answered);
  // The loop must wake for the earliest deadline, not the first call's.
  const int ms = c.timeout();
  EXPECT_GE(ms, 4000);
  EXPECT_LE(ms, 5000);
}

TEST_P(CallTimeout, TheConnectionOptionReplacesTheDefault) {
  MCBUS_TEST_CONNECT(silent);
  connection_options o = options();
  o.call_timeout = std::chrono::seconds(7);
  auto c_r = connection::open(bus_->address(), o);
  ASSERT_TRUE(c_r) << c_r.error().message();
  connection& c = *c_r;
  settle(c);
  bool answered = false;
  ASSERT_FALSE(c.call_async(hang(silent), [&](call_result<message_view>) { answered = true; }));
  settle(c);
  ASSERT_FALSE(answered);
  const int ms = c.timeout();
  EXPECT_GE(ms, 6000);
  EXPECT_LE(ms, 7000);
}

// timeout() -1 means no deadline: with nothing pending, a foreign loop must not wake for the
// deadline of a call that was answered long ago.
TEST_P(CallTimeout, AnAnsweredCallLeavesNoDeadlineBehind) {
  MCBUS_TEST_CONNECT(c);
  settle(c);
  bool answered = false;
  ASSERT_FALSE(c.call_async(message::method_call(bus_service, bus_path, bus_interface, "GetId"),
                            [&](call_result<message_view> r) { answered = static_cast<bool>(r); }));
  ASSERT_FALSE(c.run_until([&] { return answered; }, std::chrono::seconds(10)));
  settle(c);
  EXPECT_EQ(c.timeout(), -1);
}

TEST_P(CallTimeout, AnsweringTheEarliestCallLeavesTheNextDeadline) {
  MCBUS_TEST_CONNECT(silent);
  MCBUS_TEST_CONNECT(c);
  settle(c);
  bool hung_answered = false;
  ASSERT_FALSE(c.call_async(hang(silent), [&](call_result<message_view>) { hung_answered = true; }));
  bool answered = false;
  ASSERT_FALSE(c.call_async(
      message::method_call(bus_service, bus_path, bus_interface, "GetId"),
      [&](call_result<message_view> r) { answered = static_cast<bool>(r); }, std::chrono::seconds(5)));
  ASSERT_FALSE(c.run_until([&] { return answered; }, std::chrono::seconds(10)));
  settle(c);
  ASSERT_FALSE(hung_answered);
  // The 25 s call is the only one left: the answered 5 s call's deadline is not the next wake-up.
  const int ms = c.timeout();
  EXPECT_GE(ms, 20000);
  EXPECT_LE(ms, 25000);
}

}  // namespace
