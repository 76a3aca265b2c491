// The parameters every connection test runs under: which bus, which transport.
#pragma once

#include <mcbus/connection.hpp>

#include <gtest/gtest.h>

#include <unistd.h>

#include <string>
#include <string_view>
#include <tuple>

#include "mcbus_instantiations.hpp"
#include "test_bus.hpp"

namespace mcbus_test {

using bus_and_transport = std::tuple<bus_kind, mcbus::transport_choice>;

inline std::string param_name(const testing::TestParamInfo<bus_and_transport>& info) {
  const bus_kind bus = std::get<0>(info.param);
  const mcbus::transport_choice t = std::get<1>(info.param);
  return std::string(bus == bus_kind::dbus_daemon ? "daemon" : "broker") + "_" +
         (t == mcbus::transport_choice::poll ? "poll" : "uring");
}

// The server side of SASL for a raw socket peer that plays the bus: accepts EXTERNAL and agrees to
// fd passing, then returns at BEGIN, leaving the socket to the test. Returns what it read past
// BEGIN: the client may send its first message (Hello) right behind it.
inline std::string serve_sasl_as_bus(int fd) {
  std::string in;
  auto read_line = [&] {
    char buf[256];
    while (in.find("\r\n") == std::string::npos) {
      const ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n <= 0) return std::string();
      in.append(buf, static_cast<std::size_t>(n));
    }
    const std::size_t eol = in.find("\r\n");
    std::string line = in.substr(0, eol);
    in.erase(0, eol + 2);
    return line;
  };
  auto say = [&](std::string_view s) { (void)!::write(fd, s.data(), s.size()); };
  std::string line = read_line();  // "\0AUTH EXTERNAL ..."
  say("OK 0123456789abcdef0123456789abcdef\r\n");
  while (!(line = read_line()).empty()) {
    if (line == "NEGOTIATE_UNIX_FD") say("AGREE_UNIX_FD\r\n");
    if (line == "BEGIN") return in;
  }
  return {};
}

class bus_test : public testing::TestWithParam<bus_and_transport> {
 protected:
  void SetUp() override {
    std::string why;
    bus_ = shared_bus(std::get<0>(GetParam()), why);
    if (!bus_) GTEST_SKIP() << to_string(std::get<0>(GetParam())) << " unavailable: " << why;
    if (std::get<1>(GetParam()) == mcbus::transport_choice::uring && !uring_available()) {
      GTEST_SKIP() << "io_uring_setup() fails on this machine (kernel, seccomp or kernel.io_uring_disabled)";
    }
  }

  // Whether io_uring works here: the same test as the connection's own fallback.
 public:
  static bool uring_available() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return false;
    mcbus::unix_fd a(fds[0]), b(fds[1]);
    return static_cast<bool>(mcbus::uring_transport::open(a, true));
  }

 protected:
  mcbus::connection_options options() const {
    mcbus::connection_options o;
    o.transport = std::get<1>(GetParam());
    return o;
  }

  mcbus::result<mcbus::connection> connect() { return mcbus::connection::open(bus_->address(), options()); }

  bool is_broker() const { return std::get<0>(GetParam()) == bus_kind::dbus_broker; }

  test_bus* bus_ = nullptr;
};

// Opens a connection to the test's bus as `var`, or fails the test with the reason.
#define MCBUS_TEST_CONNECT(var)                      \
  auto var##_r = connect();                          \
  ASSERT_TRUE(var##_r) << var##_r.error().message(); \
  mcbus::connection& var = *var##_r

#define MCBUS_ALL_BUSES_AND_TRANSPORTS(suite)                                                                 \
  INSTANTIATE_TEST_SUITE_P(                                                                                   \
      AllBuses, suite,                                                                                        \
      testing::Combine(testing::Values(mcbus_test::bus_kind::dbus_daemon, mcbus_test::bus_kind::dbus_broker), \
                       testing::Values(mcbus::transport_choice::uring, mcbus::transport_choice::poll)),       \
      mcbus_test::param_name)

}  // namespace mcbus_test
