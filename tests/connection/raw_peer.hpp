// A peer on a socketpair that speaks SASL by hand and then sends whatever bytes, with whatever fds,
// the test gives it: nothing between it and the connection validates or limits them, as a bus
// would. Tests of what the connection refuses on arrival use it.
#pragma once

#include <mcbus/connection.hpp>

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "fixture.hpp"

namespace mcbus_test {

class raw_peer_test : public testing::TestWithParam<mcbus::transport_choice> {
 protected:
  void SetUp() override {
    if (GetParam() == mcbus::transport_choice::uring && !bus_test::uring_available()) {
      GTEST_SKIP() << "io_uring_setup() fails on this machine";
    }
    open_pair(false);
  }

  // Replaces the pair. With `hello`, the peer plays a bus that names the connection ":1.1".
  void open_pair(bool hello) {
    conn_.reset();
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    raw_ = mcbus::unix_fd(sv[1]);
    unread_.clear();
    std::thread server([this, hello] {
      const std::string rest = serve_sasl_as_bus(raw_.get());
      unread_.assign(reinterpret_cast<const std::byte*>(rest.data()),
                     reinterpret_cast<const std::byte*>(rest.data()) + rest.size());
      if (!hello) return;
      const std::optional<std::vector<std::byte>> bytes = read_message();
      if (!bytes) return;
      auto call = mcbus::message_view::parse(*bytes);
      if (!call) return;
      mcbus::message reply = mcbus::message::method_return(*call);
      reply.append(std::string_view(":1.1"));
      send_raw(std::move(reply), 1);
    });
    mcbus::connection_options o;  // the default fd limit
    o.hello = hello;
    o.transport = GetParam();
    conn_.emplace(mcbus::connection::from_socket(mcbus::unix_fd(sv[0]), true, o));
    server.join();
    ASSERT_TRUE(*conn_) << conn_->error().message();
    ASSERT_TRUE((*conn_)->can_pass_fds());
  }

  mcbus::connection& conn() { return **conn_; }

  // The bytes a message would go out as, with `serial`.
  static std::vector<std::byte> bytes_of(mcbus::message&& m, std::uint32_t serial) {
    m.set_serial(serial);
    auto bytes = m.to_bytes();
    EXPECT_TRUE(bytes) << bytes.error().message();
    return bytes ? std::move(*bytes) : std::vector<std::byte>();
  }

  // One sendmsg() per message, its fds beside its first byte, as a bus sends them.
  void send_raw(mcbus::message&& m, std::uint32_t serial) {
    std::vector<int> fds;
    for (const mcbus::unix_fd& fd : m.fds()) fds.push_back(fd.get());
    send_raw_bytes(bytes_of(std::move(m), serial), fds);
  }

  void send_raw_bytes(std::span<const std::byte> bytes, std::span<const int> fds = {}) {
    iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
    if (!fds.empty()) {
      mh.msg_control = control.data();
      mh.msg_controllen = control.size();
      cmsghdr* c = CMSG_FIRSTHDR(&mh);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ASSERT_EQ(::sendmsg(raw_.get(), &mh, MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
  }

  // Reads one whole message from the raw end, blocking until it is there.
  std::optional<std::vector<std::byte>> read_message() {
    auto fill = [&](std::vector<std::byte>& buf, std::size_t want) {
      const std::size_t have = buf.size();
      buf.resize(want);
      const std::size_t n = std::min(want - have, unread_.size());
      if (n > 0) std::memcpy(buf.data() + have, unread_.data(), n);  // data() may be null when empty
      unread_.erase(unread_.begin(), unread_.begin() + static_cast<std::ptrdiff_t>(n));
      const std::size_t rest = want - have - n;
      return rest == 0 || ::recv(raw_.get(), buf.data() + have + n, rest, MSG_WAITALL) == static_cast<ssize_t>(rest);
    };
    std::vector<std::byte> buf;
    if (!fill(buf, mcbus::fixed_header_length)) return std::nullopt;
    auto len = mcbus::message_length(buf);
    if (!len || !fill(buf, *len)) return std::nullopt;
    return buf;
  }

  // The next message from the connection, parsed into `out` (which keeps its bytes).
  std::optional<mcbus::message_view> next_message(std::vector<std::byte>& out) {
    auto bytes = read_message();
    if (!bytes) return std::nullopt;
    out = std::move(*bytes);
    auto v = mcbus::message_view::parse(out);
    if (!v) return std::nullopt;
    return *v;
  }

  // The type of the next message from the connection, if it answers `serial`.
  std::optional<mcbus::message_type> read_reply_to(std::uint32_t serial) {
    std::vector<std::byte> buf;
    auto v = next_message(buf);
    if (!v || v->reply_serial() != serial) return std::nullopt;
    return v->type();
  }

  // Runs the connection's loop until it has written something to the raw end.
  testing::AssertionResult run_until_peer_readable() {
    const mcbus::error e = conn().run_until(
        [&] {
          pollfd p{raw_.get(), POLLIN, 0};
          return ::poll(&p, 1, 0) == 1;
        },
        std::chrono::seconds(10));
    if (e) return testing::AssertionFailure() << e.message();
    return testing::AssertionSuccess();
  }

  mcbus::unix_fd raw_;
  std::vector<std::byte> unread_;  // read past BEGIN with the SASL lines
  std::optional<mcbus::result<mcbus::connection>> conn_;
};

inline std::string transport_param_name(const testing::TestParamInfo<mcbus::transport_choice>& info) {
  return info.param == mcbus::transport_choice::poll ? "poll" : "uring";
}

}  // namespace mcbus_test
