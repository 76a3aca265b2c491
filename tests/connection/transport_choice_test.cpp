// The run-time choice of transport (io/auto.hpp): MCBUS_TRANSPORT forces one when the options
// leave the choice to mcbus, any other value is refused, and when io_uring_setup() fails the poll
// transport takes over (README, "Requirements and limitations").
#include <mcbus/connection.hpp>

#include <errno.h>
#include <gtest/gtest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "fixture.hpp"

using namespace mcbus;
using mcbus_test::bus_kind;
using mcbus_test::bus_test;

namespace {

// Sets MCBUS_TRANSPORT for one test and puts back what was there, so that neither the other tests
// nor a value the developer exported are disturbed.
class transport_env {
 public:
  explicit transport_env(const char* value) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value, 1);
  }
  transport_env(const transport_env&) = delete;
  transport_env& operator=(const transport_env&) = delete;
  ~transport_env() {
    if (old_) {
      ::setenv(name, old_->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }

 private:
  static constexpr const char* name = "MCBUS_TRANSPORT";
  std::optional<std::string> old_;
};

const char* expected_name(transport_choice t) { return t == transport_choice::poll ? "poll" : "io_uring"; }

class TransportChoice : public bus_test {
 protected:
  result<connection> connect_automatic() {
    connection_options o;
    o.transport = transport_choice::automatic;
    return connection::open(bus_->address(), o);
  }
};
MCBUS_ALL_BUSES_AND_TRANSPORTS(TransportChoice);

TEST_P(TransportChoice, TheEnvironmentForcesTheTransport) {
  const transport_choice want = std::get<1>(GetParam());
  std::vector<const char*> spellings{want == transport_choice::poll ? "poll" : "uring"};
  if (want == transport_choice::uring) spellings.push_back("io_uring");  // accepted too (auto.hpp)
  for (const char* value : spellings) {
    SCOPED_TRACE(value);
    transport_env env(value);
    auto c = connect_automatic();
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_STREQ(c->transport_name(), expected_name(want));
    auto reply = c->call_method(bus_service, bus_path, bus_interface, "GetId");
    EXPECT_TRUE(reply) << reply.error().message();
  }
}

TEST_P(TransportChoice, AnInvalidValueIsRefusedInsteadOfGuessed) {
  for (const char* value : {"epoll", "POLL", "uring "}) {
    SCOPED_TRACE(value);
    transport_env env(value);
    auto c = connect_automatic();
    ASSERT_FALSE(c) << "connected over " << c->transport_name();
    EXPECT_EQ(c.error().code(), errc::invalid_argument);
    EXPECT_NE(c.error().message().find("MCBUS_TRANSPORT"), std::string::npos) << c.error().message();
  }
}

// The variable only decides when the options leave the choice open: a program that chose a
// transport in code keeps it whatever the environment says.
TEST_P(TransportChoice, AnExplicitChoiceInTheOptionsIgnoresTheEnvironment) {
  const transport_choice want = std::get<1>(GetParam());
  for (const char* value : {"bogus", want == transport_choice::poll ? "uring" : "poll"}) {
    SCOPED_TRACE(value);
    transport_env env(value);
    auto c = connect();
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_STREQ(c->transport_name(), expected_name(want));
  }
}

TEST_P(TransportChoice, AnEmptyValueLeavesTheChoiceToMcbus) {
  transport_env env("");
  auto c = connect_automatic();
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_STREQ(c->transport_name(), uring_available() ? "io_uring" : "poll");
}

// ---- io_uring_setup() refused ---------------------------------------------------------------

// What the child reports through its exit status.
enum child_status : int {
  child_ok = 0,
  child_no_filter = 77,  // the seccomp filter could not be installed: skip
  child_filter_ineffective = 10,
  child_uring_still_works = 11,
  child_cannot_connect = 12,
  child_not_poll = 13,
  child_call_failed = 14,
  child_ping_failed = 15,
  child_forced_uring_fell_back = 16,
};

const char* describe(int status) {
  switch (status) {
    case child_filter_ineffective: return "io_uring_setup() was not refused with the filter's errno";
    case child_uring_still_works: return "uring_transport::open() succeeded under the filter";
    case child_cannot_connect: return "the automatic transport could not connect";
    case child_not_poll: return "the automatic transport is not poll";
    case child_call_failed: return "a call to the bus failed";
    case child_ping_failed: return "an asynchronous Ping to itself was not answered";
    case child_forced_uring_fell_back: return "MCBUS_TRANSPORT=uring fell back to poll instead of failing";
    default: return "unexpected exit status";
  }
}

#if defined(__x86_64__)
constexpr std::uint32_t native_audit_arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr std::uint32_t native_audit_arch = AUDIT_ARCH_AARCH64;
#else
constexpr std::uint32_t native_audit_arch = 0;  // unknown here: match the syscall number alone
#endif

// Classic BPF, no libseccomp: io_uring_setup() fails with `err`, every other call is allowed.
// Syscall numbers differ between ABIs, hence the architecture check where it is known.
bool refuse_io_uring_setup(int err) {
  std::vector<sock_filter> prog;
  if constexpr (native_audit_arch != 0) {
    prog.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, static_cast<std::uint32_t>(offsetof(seccomp_data, arch))));
    prog.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, native_audit_arch, 1, 0));
    prog.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  }
  prog.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, static_cast<std::uint32_t>(offsetof(seccomp_data, nr))));
  prog.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1));
  prog.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (static_cast<std::uint32_t>(err) & SECCOMP_RET_DATA)));
  prog.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  sock_fprog fprog{static_cast<unsigned short>(prog.size()), prog.data()};
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  return ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) == 0;
}

// Runs in the forked child: gtest's assertions cannot report from there, the exit status does.
int child_under_filter(const std::string& address, int err) {
  if (!refuse_io_uring_setup(err)) return child_no_filter;
  // io_uring_setup(1, NULL) fails with EFAULT when allowed: only the filter gives `err`.
  errno = 0;
  if (::syscall(__NR_io_uring_setup, 1, nullptr) != -1 || errno != err) return child_filter_ineffective;
  if (bus_test::uring_available()) return child_uring_still_works;
  ::unsetenv("MCBUS_TRANSPORT");
  connection_options o;
  o.transport = transport_choice::automatic;
  auto c = connection::open(address, o);
  if (!c) return child_cannot_connect;
  if (std::strcmp(c->transport_name(), "poll") != 0) return child_not_poll;
  auto names = c->call_method(bus_service, bus_path, bus_interface, "ListNames");
  if (!names) return child_call_failed;
  bool pinged = false;
  message ping =
      message::method_call(bus_name::from_unchecked(c->unique_name()), "/", "org.freedesktop.DBus.Peer", "Ping");
  if (c->call_async(std::move(ping), [&](call_result<message_view> r) { pinged = static_cast<bool>(r); })) {
    return child_ping_failed;
  }
  if (c->run_until([&] { return pinged; }, std::chrono::seconds(10)) || !pinged) return child_ping_failed;
  // Forcing io_uring means failing rather than quietly running on something else.
  ::setenv("MCBUS_TRANSPORT", "uring", 1);
  if (connection::open(address, o)) return child_forced_uring_fell_back;
  return child_ok;
}

// Waits for the child with a deadline (pidfd), so that a hung child fails the test instead of
// hanging it. Returns the wait status, or nullopt if it had to be killed.
std::optional<int> wait_child(pid_t pid, std::chrono::milliseconds limit) {
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd >= 0) {
    pollfd p{pidfd, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(limit.count()));
    ::close(pidfd);
    if (ready != 1) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      return std::nullopt;
    }
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return std::nullopt;
  return status;
}

class UringRefused : public testing::TestWithParam<bus_kind> {};
INSTANTIATE_TEST_SUITE_P(AllBuses, UringRefused, testing::Values(bus_kind::dbus_daemon, bus_kind::dbus_broker),
                         [](const auto& info) { return info.param == bus_kind::dbus_daemon ? "daemon" : "broker"; });

TEST_P(UringRefused, ThePollTransportTakesOverWhenIoUringSetupFails) {
  std::string why;
  mcbus_test::test_bus* bus = mcbus_test::shared_bus(GetParam(), why);
  if (!bus) GTEST_SKIP() << to_string(GetParam()) << " unavailable: " << why;
  for (const int err : {ENOSYS, EPERM}) {
    SCOPED_TRACE(std::strerror(err));
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0) << std::strerror(errno);
    // _exit: the child must not run the parent's destructors (they would stop the shared bus).
    if (pid == 0) ::_exit(child_under_filter(bus->address(), err));
    const std::optional<int> status = wait_child(pid, std::chrono::seconds(60));
    ASSERT_TRUE(status.has_value()) << "the child did not finish within 60 s";
    ASSERT_TRUE(WIFEXITED(*status)) << "the child was killed by signal " << WTERMSIG(*status);
    const int code = WEXITSTATUS(*status);
    if (code == child_no_filter) {
      GTEST_SKIP() << "cannot install a seccomp filter here (PR_SET_NO_NEW_PRIVS or PR_SET_SECCOMP refused)";
    }
    EXPECT_EQ(code, child_ok) << describe(code);
  }
}

}  // namespace
