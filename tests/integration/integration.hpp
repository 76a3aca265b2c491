// What every integration test runs under: a private bus (dbus-daemon or dbus-broker) and an mcbus
// transport (io_uring or poll, chosen with MCBUS_TRANSPORT for every mcbus program started). The
// real echo-service runs once per (bus, transport); the python3-dbus service of test values runs
// once per bus.
#pragma once

#include <mcbus/connection.hpp>

#include "mcbus_instantiations.hpp"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "subprocess.hpp"
#include "test_bus.hpp"

namespace mcbus_test {
// How gtest shows the parameter of a failed test.
inline void PrintTo(bus_kind k, std::ostream* os) { *os << to_string(k); }
}  // namespace mcbus_test

namespace mcbus_integration {

using mcbus_test::bus_kind;

// The programs under test (paths from CMake) and the peers they are compared with.
inline constexpr const char* echo_service_bin = MCBUS_ECHO_SERVICE_BIN;
inline constexpr const char* echo_client_bin = MCBUS_ECHO_CLIENT_BIN;
inline constexpr const char* call_bin = MCBUS_CALL_BIN;
inline constexpr const char* monitor_bin = MCBUS_MONITOR_BIN;
inline constexpr const char* script_dir = MCBUS_INTEGRATION_SCRIPT_DIR;
inline constexpr const char* busctl_bin = "/usr/bin/busctl";
inline constexpr const char* gdbus_bin = "/usr/bin/gdbus";
inline constexpr const char* dbus_send_bin = "/usr/bin/dbus-send";
inline constexpr const char* dbus_monitor_bin = "/usr/bin/dbus-monitor";
// Debian's python3: python3-dbus and python3-gi are packaged for it, not for others on PATH.
inline constexpr const char* python_bin = "/usr/bin/python3";

inline constexpr const char* echo_name = "org.mcbus.Echo";
inline constexpr const char* echo_path = "/org/mcbus/Echo";
inline constexpr const char* echo_iface = "org.mcbus.Echo1";
inline constexpr const char* types_name = "org.mcbus.TestTypes";
inline constexpr const char* types_path = "/org/mcbus/TestTypes";
inline constexpr const char* types_iface = "org.mcbus.TestTypes1";

enum class transport { uring, poll };

inline void PrintTo(transport t, std::ostream* os) { *os << (t == transport::poll ? "poll" : "io_uring"); }

using param = std::tuple<bus_kind, transport>;

inline std::string param_name(const testing::TestParamInfo<param>& info) {
  return std::string(std::get<0>(info.param) == bus_kind::dbus_daemon ? "daemon" : "broker") + "_" +
         (std::get<1>(info.param) == transport::poll ? "poll" : "uring");
}

// Whether io_uring_setup() works here (it may be refused by the kernel, seccomp or a sysctl).
bool uring_available();

// Empty if python3-dbus (and GLib's introspection, for its main loop) can be imported.
const std::string& python_dbus_missing();

// A long-running service started by the tests.
struct service {
  std::unique_ptr<child> proc;
  std::string unique_name;         // its connection's unique name
  std::vector<std::string> cases;  // for the python service: the methods it offers
};

// Processes that no test may leave behind are checked for when the program ends (integration.cpp).
// Bus processes are remembered here so that the check knows them.
std::vector<pid_t>& bus_pids();

// Stops every long-running service (SIGTERM) and says which did not exit cleanly.
std::vector<std::string> stop_all_services();

class integration_test : public testing::TestWithParam<param> {
 protected:
  void SetUp() override;

  bus_kind kind() const { return std::get<0>(GetParam()); }
  transport mode() const { return std::get<1>(GetParam()); }
  const std::string& address() const { return bus_->address(); }

  // MCBUS_TRANSPORT for the mcbus programs this test starts.
  spawn_options mcbus_env() const {
    spawn_options o;
    o.env.push_back(std::string("MCBUS_TRANSPORT=") + (mode() == transport::poll ? "poll" : "uring"));
    return o;
  }
  const char* transport_name() const { return mode() == transport::poll ? "poll" : "io_uring"; }

  // The echo-service for this (bus, transport), started on first use. Fails the test (and returns
  // null) if it cannot be started.
  service* echo_service();
  // Stops the echo-service of this bus with SIGTERM; returns how it ended and all it printed.
  run_result stop_echo_service();
  // Stops a service with SIGTERM and waits until the bus has released its well-known name.
  run_result stop_service(service& svc, const char* name);
  // The python3-dbus service of typed test values on this bus (null: the test is skipped).
  service* types_service();

  // An mcbus connection from the test itself, to send signals that mark a place in the traffic
  // (null, and the test failed, if it cannot connect).
  mcbus::connection* own_connection();

  std::vector<std::string> busctl(std::vector<std::string> args) const {
    args.insert(args.begin(), {busctl_bin, "--address=" + address()});
    return args;
  }
  std::vector<std::string> mcbus_call(std::vector<std::string> args) const {
    args.insert(args.begin(), {call_bin, "--address=" + address()});
    return args;
  }

  mcbus_test::test_bus* bus_ = nullptr;
};

#define MCBUS_INTEGRATION_INSTANTIATE(suite)                                                                      \
  INSTANTIATE_TEST_SUITE_P(                                                                                       \
      Buses, suite,                                                                                               \
      testing::Combine(testing::Values(mcbus_test::bus_kind::dbus_daemon, mcbus_test::bus_kind::dbus_broker),     \
                       testing::Values(mcbus_integration::transport::uring, mcbus_integration::transport::poll)), \
      mcbus_integration::param_name)

// Skips the test when a program it talks to is not installed.
#define MCBUS_NEED_PROGRAM(path) \
  if (!mcbus_test::program_exists(path)) GTEST_SKIP() << (path) << " is not installed"

#define MCBUS_NEED_PYTHON_DBUS()                                                              \
  if (!mcbus_integration::python_dbus_missing().empty())                                      \
  GTEST_SKIP() << "python3-dbus is not usable with " << mcbus_integration::python_bin << ": " \
               << mcbus_integration::python_dbus_missing()

// Lines of `text`, without their newlines.
std::vector<std::string> lines_of(const std::string& text);

// Writes a file in this program's scratch folder (removed when the program ends); returns its path.
std::string scratch_file(const std::string& name, const std::string& content);

}  // namespace mcbus_integration
