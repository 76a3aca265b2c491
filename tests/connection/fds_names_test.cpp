// Unix fd passing in both directions, and bus name ownership.
#include <mcbus/connection.hpp>

#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "fixture.hpp"

using namespace mcbus;
using mcbus_test::bus_test;

namespace {

class FdsAndNames : public bus_test {
 protected:
  template <class Pred>
  static bool turn_both(connection& a, connection& b, Pred done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      if (a.run_for(std::chrono::milliseconds(2)) || b.run_for(std::chrono::milliseconds(2))) return false;
    }
    return done();
  }
};
MCBUS_ALL_BUSES_AND_TRANSPORTS(FdsAndNames);

std::string read_line(int fd) {
  std::string line;
  char c;
  while (::read(fd, &c, 1) == 1 && c != '\n') line += c;
  return line;
}

TEST_P(FdsAndNames, FdsTravelBothWays) {
  MCBUS_TEST_CONNECT(server);
  MCBUS_TEST_CONNECT(client);
  auto obj = server.add_object("/fd", object_builder()
                                          .interface("org.example.Fd")
                                          .method("ReadLine", [](unix_fd fd) { return read_line(fd.get()); })
                                          .method("Open", [](std::string_view text) {
                                            int p[2];
                                            if (::pipe2(p, O_CLOEXEC) != 0) return unix_fd();
                                            const std::string line = std::string(text) + "\n";
                                            if (::write(p[1], line.data(), line.size()) < 0) ::close(p[0]);
                                            ::close(p[1]);
                                            return unix_fd(p[0]);
                                          }));
  // client -> server
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  unix_fd read_end(p[0]);
  ASSERT_EQ(::write(p[1], "through the bus\n", 16), 16);
  ::close(p[1]);
  message m = message::method_call(bus_name::from_unchecked(server.unique_name()), "/fd", "org.example.Fd", "ReadLine");
  m.append(read_end);
  read_end.reset();  // the message holds its own duplicate
  std::optional<std::string> line;
  ASSERT_FALSE(client.call_async(std::move(m), [&](call_result<message_view> r) {
    ASSERT_TRUE(r) << r.error().message();
    line = std::string(*r->read_first<std::string_view>());
  }));
  ASSERT_TRUE(turn_both(server, client, [&] { return line.has_value(); }));
  EXPECT_EQ(*line, "through the bus");
  // server -> client
  message open = message::method_call(bus_name::from_unchecked(server.unique_name()), "/fd", "org.example.Fd", "Open");
  open.append(std::string_view("and back"));
  std::optional<std::string> back;
  ASSERT_FALSE(client.call_async(std::move(open), [&](call_result<message_view> r) {
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->fds().size(), 1u);
    auto fd = r->read_first<unix_fd>();
    ASSERT_TRUE(fd) << fd.error().message();
    back = read_line(fd->get());
  }));
  ASSERT_TRUE(turn_both(server, client, [&] { return back.has_value(); }));
  EXPECT_EQ(*back, "and back");
}

// Regression: a message with fds used to share one sendmsg() with the messages queued after it,
// and dbus-broker closes a connection that does that.
TEST_P(FdsAndNames, AMessageWithFdsIsNotBatchedWithWhatFollows) {
  MCBUS_TEST_CONNECT(server);
  MCBUS_TEST_CONNECT(client);
  auto obj = server.add_object("/fd", object_builder().interface("org.example.Fd").method("Give", [&](method_call& c) {
    deferred_reply r = c.defer();
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return;
    unix_fd keep(p[0]);
    ::close(p[1]);
    r.reply(keep);  // queued first: inside a handler, sends are batched until the iteration ends
    for (int i = 0; i < 3; ++i) (void)server.emit(message::signal("/fd", "org.example.Fd", "After"));
  }));
  int after = 0;
  auto sub = client.subscribe("type='signal',member='After'", [&](const message_view&) { ++after; });
  ASSERT_TRUE(sub);
  std::optional<bool> got_fd;
  message m = message::method_call(bus_name::from_unchecked(server.unique_name()), "/fd", "org.example.Fd", "Give");
  ASSERT_FALSE(
      client.call_async(std::move(m), [&](call_result<message_view> r) { got_fd = r && r->fds().size() == 1; }));
  ASSERT_TRUE(turn_both(server, client, [&] { return got_fd.has_value() && after == 3; }));
  EXPECT_TRUE(*got_fd);
  EXPECT_TRUE(server.connected());
}

TEST_P(FdsAndNames, NoFdLeaksAcrossManyCalls) {
  MCBUS_TEST_CONNECT(server);
  MCBUS_TEST_CONNECT(client);
  auto count_fds = [] {
    int n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
    return n;
  };
  auto obj = server.add_object(
      "/fd", object_builder().interface("org.example.Fd").method("Take", [](unix_fd fd) { return fd.valid(); }));
  const int before = count_fds();
  int replies = 0;
  for (int i = 0; i < 200; ++i) {
    message one = message::method_call(bus_name::from_unchecked(server.unique_name()), "/fd", "org.example.Fd", "Take");
    int q[2];
    ASSERT_EQ(::pipe2(q, O_CLOEXEC), 0);
    one.append(borrowed_fd{q[0]});
    ::close(q[0]);
    ::close(q[1]);
    ASSERT_FALSE(client.call_async(std::move(one), [&](call_result<message_view> r) {
      EXPECT_TRUE(r && *r->read_first<bool>());
      ++replies;
    }));
  }
  ASSERT_TRUE(turn_both(server, client, [&] { return replies == 200; }));
  EXPECT_EQ(count_fds(), before);
}

TEST_P(FdsAndNames, RequestAndReleaseNames) {
  MCBUS_TEST_CONNECT(a);
  MCBUS_TEST_CONNECT(b);
  // A name per parameter: the previous test's connections may still be closing on the shared bus.
  const std::string name_text = "org.mcbus.Test.Names." + mcbus_test::param_name({GetParam(), 0});
  const bus_name name = bus_name::from_unchecked(name_text);
  std::vector<std::string> acquired, lost;
  a.on_name_acquired([&](std::string_view n) { acquired.emplace_back(n); });
  a.on_name_lost([&](std::string_view n) { lost.emplace_back(n); });
  auto r = a.request_name(name, name_flags::allow_replacement);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, request_name_reply::primary_owner);
  // Asking again keeps ownership; the flags of the new request replace the old ones.
  EXPECT_EQ(*a.request_name(name, name_flags::allow_replacement), request_name_reply::already_owner);
  EXPECT_EQ(*b.request_name(name, name_flags::do_not_queue), request_name_reply::exists);
  EXPECT_EQ(*b.get_name_owner(name), a.unique_name());
  ASSERT_TRUE(turn_both(a, b, [&] { return acquired.size() >= 2; }));  // its unique name, then the new one
  EXPECT_NE(std::find(acquired.begin(), acquired.end(), name_text), acquired.end());
  // b takes it over: a allowed replacement.
  EXPECT_EQ(*b.request_name(name, name_flags::replace_existing), request_name_reply::primary_owner);
  ASSERT_TRUE(turn_both(a, b, [&] { return !lost.empty(); }));
  EXPECT_EQ(lost.back(), name_text);
  EXPECT_EQ(*b.release_name(name), release_name_reply::released);
  // a queued itself when it lost the name (no do_not_queue), so the name went back to it.
  EXPECT_EQ(*b.release_name(name), release_name_reply::not_owner);
  EXPECT_EQ(*a.get_name_owner(name), a.unique_name());
  EXPECT_EQ(*a.release_name(name), release_name_reply::released);
  EXPECT_EQ(*a.release_name(name), release_name_reply::non_existent);
  auto bad = a.request_name(bus_name::from_unchecked(":1.999"));
  EXPECT_FALSE(bad);  // unique names cannot be requested
}

}  // namespace
