// The limits on unix fds per message: what we send is capped at the kernel's SCM_MAX_FD (253,
// wire/limits.hpp), what we accept at connection_options::max_fds_per_message (16 by default,
// connection/inbox.hpp). Going over either is an error the connection survives, and no fd is kept.
#include <mcbus/connection.hpp>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fixture.hpp"
#include "raw_peer.hpp"

using namespace mcbus;
using mcbus_test::bus_test;

namespace {

int count_open_fds() {
  int n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

message signal_with_fds(member_name member, int fd, std::size_t n) {
  message m = message::signal("/fd", "org.example.FdLimit", member);
  for (std::size_t i = 0; i < n; ++i) m.append(borrowed_fd{fd});
  return m;
}

class FdLimit : public bus_test {
 protected:
  // Runs both loops until done(); says why not if it does not get there.
  template <class Pred>
  static testing::AssertionResult turn_both(connection& a, connection& b, Pred done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      for (connection* c : {&a, &b}) {
        if (error e = c->run_for(std::chrono::milliseconds(2))) return testing::AssertionFailure() << e.message();
      }
    }
    return done() ? testing::AssertionSuccess() : testing::AssertionFailure() << "not done within 20 s";
  }
};
MCBUS_ALL_BUSES_AND_TRANSPORTS(FdLimit);

TEST_P(FdLimit, SendingMoreFdsThanOneMessageCanCarryIsAClearError) {
  MCBUS_TEST_CONNECT(c);
  const int before = count_open_fds();
  {
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    unix_fd r(p[0]), w(p[1]);
    message m = signal_with_fds("Many", r.get(), mcbus::max_fds_per_message);
    ASSERT_FALSE(m.err()) << "the limit itself is allowed: " << m.err().message();
    m.append(r.borrow());
    EXPECT_EQ(m.err().code(), errc::too_many_fds);
    auto sent = c.send(std::move(m));
    ASSERT_FALSE(sent);
    EXPECT_EQ(sent.error().code(), errc::too_many_fds);
    EXPECT_NE(sent.error().message().find("too many unix fds"), std::string::npos) << sent.error().message();
    // A call goes the same way, and its handler is never left waiting.
    message call = message::method_call(bus_service, bus_path, bus_interface, "GetId");
    for (std::size_t i = 0; i <= mcbus::max_fds_per_message; ++i) call.append(r.borrow());
    bool handled = false;
    const error e = c.call_async(std::move(call), [&](call_result<message_view>) { handled = true; });
    EXPECT_EQ(e.code(), errc::too_many_fds);
    ASSERT_FALSE(c.process());
    EXPECT_FALSE(handled);
  }
  EXPECT_TRUE(c.connected());
  auto reply = c.call_method(bus_service, bus_path, bus_interface, "GetId");
  EXPECT_TRUE(reply) << reply.error().message();
  EXPECT_EQ(count_open_fds(), before) << "the refused messages' duplicates were not all closed";
}

// Through the bus with a limit set in the options. The default of 16 cannot be passed this way
// on every bus: dbus-daemon's own max_message_unix_fds is 16, and it disconnects a sender of 17
// (the raw peer below covers the default).
TEST_P(FdLimit, AMessageOverTheConfiguredLimitIsRefusedAndItsFdsClosed) {
  constexpr std::size_t limit = 2;
  connection_options o = options();
  o.max_fds_per_message = limit;
  auto receiver_r = connection::open(bus_->address(), o);
  ASSERT_TRUE(receiver_r) << receiver_r.error().message();
  connection& receiver = *receiver_r;
  MCBUS_TEST_CONNECT(sender);
  std::vector<error> invalid;
  receiver.on_invalid_message([&](const error& e) { invalid.push_back(e); });
  std::vector<std::string> seen;
  std::size_t fds_at_limit = 0;
  const std::string rule = "type='signal',interface='org.example.FdLimit',sender='" + sender.unique_name() + "'";
  // subscribe_via::bus: the sender runs no loop to answer a multicast Join while we wait for it.
  auto sub = receiver.subscribe(
      rule,
      [&](const message_view& m) {
        seen.emplace_back(m.header().member);
        if (m.header().member == "AtLimit") fds_at_limit = m.fds().size();
      },
      subscribe_via::bus);
  ASSERT_TRUE(sub) << sub.error().message();
  const int before = count_open_fds();
  {
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    unix_fd r(p[0]), w(p[1]);
    ASSERT_TRUE(sender.emit(signal_with_fds("AtLimit", r.get(), limit)));
    ASSERT_TRUE(sender.emit(signal_with_fds("OverLimit", r.get(), limit + 1)));
    // Sent last by the same sender, so delivered last: once it is in, the others are.
    ASSERT_TRUE(sender.emit(message::signal("/fd", "org.example.FdLimit", "After")));
  }
  ASSERT_TRUE(turn_both(receiver, sender, [&] { return !seen.empty() && seen.back() == "After"; }));
  EXPECT_EQ(seen, (std::vector<std::string>{"AtLimit", "After"}));
  EXPECT_EQ(fds_at_limit, limit);
  ASSERT_EQ(invalid.size(), 1u);
  EXPECT_EQ(invalid[0].code(), errc::too_many_fds) << invalid[0].message();
  EXPECT_TRUE(receiver.connected());
  EXPECT_EQ(count_open_fds(), before) << "fds of the refused (or the accepted) message were kept";
  auto reply = receiver.call_method(bus_service, bus_path, bus_interface, "GetId");
  EXPECT_TRUE(reply) << reply.error().message();
}

class RawFdLimit : public mcbus_test::raw_peer_test {};
INSTANTIATE_TEST_SUITE_P(Transports, RawFdLimit, testing::Values(transport_choice::uring, transport_choice::poll),
                         mcbus_test::transport_param_name);

TEST_P(RawFdLimit, TheDefaultLimitRefusesAMessageWithMoreThan16Fds) {
  const std::size_t limit = connection_options{}.max_fds_per_message;
  ASSERT_EQ(limit, 16u);
  connection& c = conn();
  std::vector<error> invalid;
  c.on_invalid_message([&](const error& e) { invalid.push_back(e); });
  std::vector<std::string> seen;
  std::size_t fds_at_limit = 0;
  c.set_filter([&](const message_view& m) {
    if (m.type() != message_type::signal) return false;
    seen.emplace_back(m.header().member);
    if (m.header().member == "AtLimit") fds_at_limit = m.fds().size();
    return true;
  });
  const int before = count_open_fds();
  {
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    unix_fd r(p[0]), w(p[1]);
    send_raw(signal_with_fds("AtLimit", r.get(), limit), 1);
    send_raw(signal_with_fds("OverLimit", r.get(), limit + 1), 2);
    send_raw(message::signal("/fd", "org.example.FdLimit", "After"), 3);
  }
  ASSERT_FALSE(c.run_until([&] { return !seen.empty() && seen.back() == "After"; }, std::chrono::seconds(10)));
  EXPECT_EQ(seen, (std::vector<std::string>{"AtLimit", "After"}));
  EXPECT_EQ(fds_at_limit, limit);
  ASSERT_EQ(invalid.size(), 1u);
  EXPECT_EQ(invalid[0].code(), errc::too_many_fds) << invalid[0].message();
  EXPECT_EQ(count_open_fds(), before) << "fds of the refused (or the accepted) message were kept";
  // The connection goes on: a Ping sent after the refused message is answered.
  send_raw(message::method_call({}, "/", "org.freedesktop.DBus.Peer", "Ping"), 4);
  ASSERT_FALSE(c.run_until(
      [&] {
        pollfd p{raw_.get(), POLLIN, 0};
        return ::poll(&p, 1, 0) == 1;
      },
      std::chrono::seconds(10)));
  EXPECT_EQ(read_reply_to(4), message_type::method_return);
  EXPECT_TRUE(c.connected());
}

}  // namespace
