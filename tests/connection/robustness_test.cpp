// What happens when things go wrong: the bus goes away, a peer disconnects in the middle of a
// call, or a raw socket peer sends malformed messages. Each is reported, never a crash or a hang.
#include <mcbus/connection.hpp>

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "fixture.hpp"

using namespace mcbus;
using mcbus_test::bus_test;

namespace {

class Robustness : public bus_test {};
MCBUS_ALL_BUSES_AND_TRANSPORTS(Robustness);

TEST_P(Robustness, PeerDisconnectsInTheMiddleOfACall) {
  MCBUS_TEST_CONNECT(client);
  std::optional<call_error> result;
  {
    MCBUS_TEST_CONNECT(server);
    std::vector<deferred_reply> parked;
    auto obj = server.add_object("/x", object_builder().interface("org.example.X").method("Wait", [&](method_call& c) {
      parked.push_back(c.defer());
    }));
    message m = message::method_call(bus_name::from_unchecked(server.unique_name()), "/x", "org.example.X", "Wait");
    ASSERT_FALSE(client.call_async(std::move(m), [&](call_result<message_view> r) {
      ASSERT_FALSE(r);
      result = r.error();
    }));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (parked.empty() && std::chrono::steady_clock::now() < deadline) {
      ASSERT_FALSE(server.run_for(std::chrono::milliseconds(2)));
      ASSERT_FALSE(client.process());
    }
    ASSERT_EQ(parked.size(), 1u);
  }  // the server goes away without replying
  ASSERT_FALSE(client.run_until([&] { return result.has_value(); }, std::chrono::seconds(10)));
  EXPECT_TRUE(result->is_remote());  // the bus answers for the vanished peer
  EXPECT_EQ(result->name(), dbus_error::no_reply) << result->message();
  EXPECT_TRUE(client.connected());
}

TEST_P(Robustness, TheBusGoingAwayEndsPendingCallsAndTellsTheHandler) {
  std::string why;
  auto bus = mcbus_test::test_bus::start(std::get<0>(GetParam()), why);
  ASSERT_TRUE(bus) << why;
  auto client_r = connection::open(bus->address(), options());
  ASSERT_TRUE(client_r) << client_r.error().message();
  connection& client = *client_r;
  auto server_r = connection::open(bus->address(), options());
  ASSERT_TRUE(server_r);
  std::vector<deferred_reply> parked;
  auto obj = server_r->add_object("/x", object_builder().interface("org.example.X").method("Wait", [&](method_call& c) {
    parked.push_back(c.defer());
  }));
  std::optional<call_error> pending_result;
  std::optional<error> lost;
  client.on_disconnect([&](const error& e) { lost = e; });
  message m = message::method_call(bus_name::from_unchecked(server_r->unique_name()), "/x", "org.example.X", "Wait");
  ASSERT_FALSE(client.call_async(std::move(m), [&](call_result<message_view> r) {
    ASSERT_FALSE(r);
    pending_result = r.error();
  }));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (parked.empty() && std::chrono::steady_clock::now() < deadline) {
    ASSERT_FALSE(server_r->run_for(std::chrono::milliseconds(2)));
    ASSERT_FALSE(client.process());
  }
  ASSERT_EQ(parked.size(), 1u);
  bus->stop();
  EXPECT_FALSE(client.run_until([&] { return lost.has_value(); }, std::chrono::seconds(10)).code() == errc::timeout);
  ASSERT_TRUE(lost.has_value());
  ASSERT_TRUE(pending_result.has_value());
  EXPECT_EQ(pending_result->name(), dbus_error::disconnected);
  EXPECT_FALSE(client.connected());
  auto after = client.send(message::signal("/x", "org.example.X", "Late"));
  ASSERT_FALSE(after);
  EXPECT_EQ(after.error().code(), errc::not_connected);
  auto call_after = client.call_method(bus_service, bus_path, bus_interface, "ListNames");
  ASSERT_FALSE(call_after);
  EXPECT_EQ(call_after.error().name(), dbus_error::disconnected);
}

// A raw peer on the other end of a socketpair: answers SASL by hand, then writes whatever bytes
// the test gives it.
class RawPeer : public testing::TestWithParam<transport_choice> {
 protected:
  struct pair {
    std::optional<result<connection>> conn;
    int raw = -1;
  };

  void SetUp() override {
    if (GetParam() == transport_choice::uring && !mcbus_test::bus_test::uring_available()) {
      GTEST_SKIP() << "io_uring_setup() fails on this machine";
    }
    open_pair(p_);
  }
  void TearDown() override {
    if (p_.raw >= 0) ::close(p_.raw);
  }
  connection& conn() { return **p_.conn; }
  int raw() const { return p_.raw; }

  pair p_;

  void open_pair(pair& p) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    p.raw = sv[1];
    std::thread server([raw = sv[1]] { mcbus_test::serve_sasl_as_bus(raw); });
    connection_options o;
    o.hello = false;
    o.transport = GetParam();
    p.conn.emplace(connection::from_socket(unix_fd(sv[0]), true, o));
    server.join();
    ASSERT_TRUE(*p.conn) << p.conn->error().message();
  }

  static std::vector<std::byte> ping_call(std::uint32_t serial) {
    message m = message::method_call({}, "/", "org.freedesktop.DBus.Peer", "Ping");
    m.set_serial(serial);
    return *m.to_bytes();
  }

  static void write_all(int fd, std::span<const std::byte> bytes) {
    ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }

  // Reads one whole reply from the raw end; returns its type.
  static message_type read_reply(int fd) {
    std::vector<std::byte> buf(16);
    if (::recv(fd, buf.data(), 16, MSG_WAITALL) != 16) return message_type::invalid;
    auto len = message_length(buf);
    if (!len) return message_type::invalid;
    buf.resize(*len);
    if (::recv(fd, buf.data() + 16, *len - 16, MSG_WAITALL) != static_cast<ssize_t>(*len - 16))
      return message_type::invalid;
    auto v = message_view::parse(buf);
    return v ? v->type() : message_type::invalid;
  }
};
INSTANTIATE_TEST_SUITE_P(Transports, RawPeer, testing::Values(transport_choice::uring, transport_choice::poll),
                         [](const auto& info) { return info.param == transport_choice::poll ? "poll" : "uring"; });

TEST_P(RawPeer, AMalformedMessageIsReportedAndTheConnectionGoesOn) {
  connection& c = conn();
  std::vector<error> invalid;
  c.on_invalid_message([&](const error& e) { invalid.push_back(e); });
  // A valid call whose body claims a bad UTF-8 string: framing intact, content invalid.
  message bad = message::method_call({}, "/", "org.example.X", "Y");
  bad.append(std::string_view("ok"));
  auto bytes = *bad.to_bytes();
  bytes[bytes.size() - 2] = std::byte{0xff};
  write_all(raw(), bytes);
  auto ping = ping_call(7);
  write_all(raw(), ping);
  ASSERT_FALSE(c.run_until([&] { return !invalid.empty(); }, std::chrono::seconds(10)));
  ASSERT_EQ(invalid.size(), 1u);
  EXPECT_EQ(invalid[0].code(), errc::bad_utf8) << invalid[0].message();
  ASSERT_FALSE(c.run_for(std::chrono::milliseconds(20)));
  EXPECT_EQ(read_reply(raw()), message_type::error);          // its caller is not left waiting
  EXPECT_EQ(read_reply(raw()), message_type::method_return);  // the Ping after it was answered
  EXPECT_TRUE(c.connected());
}

TEST_P(RawPeer, ABrokenFrameEndsTheConnectionWithAReason) {
  connection& c = conn();
  std::optional<error> lost;
  c.on_disconnect([&](const error& e) { lost = e; });
  std::optional<call_error> pending;
  message call = message::method_call({}, "/", "org.example.X", "Y");
  ASSERT_FALSE(c.call_async(std::move(call), [&](call_result<message_view> r) {
    ASSERT_FALSE(r);
    pending = r.error();
  }));
  auto garbage = ping_call(9);
  garbage[0] = std::byte{'X'};  // neither 'l' nor 'B': the stream cannot be framed any more
  write_all(raw(), garbage);
  const error e = c.run_until([&] { return lost.has_value(); }, std::chrono::seconds(10));
  ASSERT_TRUE(lost.has_value()) << e.message();
  EXPECT_EQ(lost->code(), errc::bad_endian) << lost->message();
  ASSERT_TRUE(pending.has_value());
  EXPECT_EQ(pending->name(), dbus_error::disconnected);
  EXPECT_FALSE(c.connected());
}

TEST_P(RawPeer, ThePeerClosingIsADisconnect) {
  connection& c = conn();
  std::optional<error> lost;
  c.on_disconnect([&](const error& e) { lost = e; });
  ::close(std::exchange(p_.raw, -1));
  (void)c.run_until([&] { return lost.has_value(); }, std::chrono::seconds(10));
  ASSERT_TRUE(lost.has_value());
  EXPECT_EQ(lost->code(), errc::disconnected);
}

}  // namespace
