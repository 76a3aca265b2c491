// Addresses and the SASL client against real buses: a private dbus-daemon (unix path, abstract and
// tcp listeners) and a private dbus-broker. Each test authenticates over a plain blocking socket,
// sends Hello right behind BEGIN and checks the bus's reply, which proves that the byte stream after
// the SASL lines is where the spec says it is.
#include <mcbus/io/address.hpp>
#include <mcbus/io/sasl.hpp>
#include <mcbus/wire.hpp>

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "test_bus.hpp"  // the private dbus-broker recipe

namespace {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto deadline_after = 10s;

bool have_program(const char* path) { return ::access(path, X_OK) == 0; }

// A child process whose stdout we read; killed (its process group) when this goes away.
class child {
 public:
  child() = default;
  child(const child&) = delete;
  child& operator=(const child&) = delete;
  ~child() { stop(); }

  bool start(const std::vector<std::string>& argv) {
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return false;
    pid_ = ::fork();
    if (pid_ < 0) return false;
    if (pid_ == 0) {
      ::setpgid(0, 0);
      ::dup2(out[1], 1);
      const int null = ::open("/dev/null", O_WRONLY);
      if (null >= 0) ::dup2(null, 2);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      ::_exit(127);
    }
    ::close(out[1]);
    out_ = out[0];
    return true;
  }

  // One line of the child's stdout, or "" at the deadline or EOF.
  std::string read_line(clock_type::time_point deadline) {
    while (true) {
      if (auto nl = buf_.find('\n'); nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now()).count();
      if (left <= 0) return {};
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      char tmp[512];
      const ssize_t n = ::read(out_, tmp, sizeof tmp);
      if (n <= 0) return {};
      buf_.append(tmp, static_cast<std::size_t>(n));
    }
  }

  void stop() {
    if (pid_ > 0) {
      ::kill(-pid_, SIGTERM);
      ::kill(pid_, SIGTERM);
      int status = 0;
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
    }
    if (out_ >= 0) ::close(out_);
    out_ = -1;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string buf_;
};

fs::path scratch_dir() {
  const fs::path d = fs::temp_directory_path() / ("mcbus-io-test-" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

const char* const policy = R"(
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>)";

// Starts dbus-daemon with the given <listen> and extra config; returns its address ("" on failure).
std::string start_dbus_daemon(child& c, const std::string& name, const std::string& listen, const std::string& extra) {
  const fs::path conf = scratch_dir() / (name + ".conf");
  std::ofstream(conf) << "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
                         " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n<busconfig>\n"
                         "  <type>session</type>\n  <listen>"
                      << listen << "</listen>\n"
                      << extra << policy << "\n</busconfig>\n";
  if (!c.start({"dbus-daemon", "--config-file=" + conf.string(), "--nofork", "--nopidfile", "--print-address=1"}))
    return {};
  return c.read_line(clock_type::now() + deadline_after);
}

// A connected blocking socket to the first address of the list that takes a connection, retrying
// until the deadline while the socket file does not exist yet or refuses.
int connect_to(const mcbus::address& a, clock_type::time_point deadline) {
  auto sas = mcbus::resolve(a);
  if (!sas) return -1;
  while (clock_type::now() < deadline) {
    for (const auto& sa : *sas) {
      const int fd = ::socket(sa.domain, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) return -1;
      if (::connect(fd, sa.get(), sa.length) == 0) return fd;
      ::close(fd);
    }
    pollfd none{-1, 0, 0};
    ::poll(&none, 0, 20);  // the listener is still starting: wait a little, up to the deadline
  }
  return -1;
}

bool send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Reads what is there (waiting up to the deadline); "" on EOF, timeout or error.
std::string receive(int fd, clock_type::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now()).count();
  pollfd p{fd, POLLIN, 0};
  if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) return {};
  char buf[4096];
  const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

struct session {
  int fd = -1;
  std::unique_ptr<mcbus::sasl_client> auth;
  bool eof = false;
  std::string unique_name;  // from the Hello reply
  ~session() {
    if (fd >= 0) ::close(fd);
  }
};

// Connects, runs SASL to the end, then sends Hello behind BEGIN and reads its reply.
void authenticate_and_hello(session& s, const mcbus::address& address, mcbus::sasl_options o,
                            clock_type::time_point deadline) {
  s.auth = std::make_unique<mcbus::sasl_client>(std::move(o));
  s.fd = connect_to(address, deadline);
  ASSERT_GE(s.fd, 0) << "could not connect to " << address.to_string();
  auto& a = *s.auth;
  while (a.status() == mcbus::sasl_status::in_progress) {
    ASSERT_TRUE(send_all(s.fd, a.output_text()));
    a.consume(a.output().size());
    const std::string got = receive(s.fd, deadline);
    if (got.empty()) {
      s.eof = true;
      return;
    }
    a.feed(got);
  }
  if (!a.authenticated()) return;
  auto hello =
      mcbus::message::method_call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello");
  hello.set_serial(1);
  auto bytes = hello.to_bytes();
  ASSERT_TRUE(bytes);
  std::string out(a.output_text());  // BEGIN, then the first message in the same write
  out.append(reinterpret_cast<const char*>(bytes->data()), bytes->size());
  a.consume(a.output().size());
  ASSERT_TRUE(send_all(s.fd, out));
  std::string in = a.take_leftover();
  while (true) {
    if (in.size() >= 16) {
      auto len = mcbus::message_length(std::as_bytes(std::span<const char>(in.data(), in.size())));
      ASSERT_TRUE(len) << len.error().message();
      if (in.size() >= *len) {
        auto view = mcbus::message_view::parse(std::as_bytes(std::span<const char>(in.data(), *len)));
        ASSERT_TRUE(view) << view.error().message();
        ASSERT_EQ(view->type(), mcbus::message_type::method_return);
        ASSERT_EQ(view->reply_serial(), 1u);
        auto name = view->read_first<std::string_view>();
        ASSERT_TRUE(name);
        s.unique_name = std::string(*name);
        return;
      }
    }
    const std::string got = receive(s.fd, deadline);
    ASSERT_FALSE(got.empty()) << "no Hello reply before the deadline";
    in += got;
  }
}

class DbusDaemon : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_program("/usr/bin/dbus-daemon")) GTEST_SKIP() << "dbus-daemon is not installed";
    path_ = (scratch_dir() / "daemon.sock").string();
    address_text_ = start_dbus_daemon(daemon_, "daemon", "unix:path=" + path_, "  <auth>EXTERNAL</auth>\n");
    ASSERT_FALSE(address_text_.empty()) << "dbus-daemon printed no address";
    auto list = mcbus::parse_address_list(address_text_);
    ASSERT_TRUE(list) << address_text_ << ": " << list.error().message();
    address_ = list->front();
  }
  void TearDown() override {
    daemon_.stop();
    std::error_code ec;
    fs::remove(path_, ec);
  }
  child daemon_;
  std::string path_, address_text_;
  mcbus::address address_;
};

TEST_F(DbusDaemon, ExternalWithFdNegotiation) {
  const auto deadline = clock_type::now() + deadline_after;
  EXPECT_EQ(address_.kind(), mcbus::address_kind::unix_path);
  EXPECT_EQ(address_.path(), path_);
  ASSERT_EQ(address_.guid().size(), 32u) << "dbus-daemon prints its guid in the address";
  session s;
  mcbus::sasl_options o;
  o.negotiate_unix_fd = address_.can_pass_fds();
  authenticate_and_hello(s, address_, o, deadline);
  ASSERT_EQ(s.auth->status(), mcbus::sasl_status::authenticated) << s.auth->failure().message();
  EXPECT_TRUE(s.auth->unix_fd_agreed());
  EXPECT_EQ(s.auth->server_guid(), address_.guid());
  EXPECT_EQ(s.unique_name.substr(0, 1), ":");
}

TEST_F(DbusDaemon, ExternalEmptyResponseWithoutFds) {
  const auto deadline = clock_type::now() + deadline_after;
  session s;
  mcbus::sasl_options o;
  o.external_empty_response = true;
  authenticate_and_hello(s, address_, o, deadline);
  ASSERT_EQ(s.auth->status(), mcbus::sasl_status::authenticated) << s.auth->failure().message();
  EXPECT_FALSE(s.auth->unix_fd_agreed());
  EXPECT_EQ(s.unique_name.substr(0, 1), ":");
}

TEST_F(DbusDaemon, WrongUidIsRejected) {
  const auto deadline = clock_type::now() + deadline_after;
  session s;
  mcbus::sasl_options o;
  o.uid = ::geteuid() + 4321;  // claims someone the kernel says we are not
  authenticate_and_hello(s, address_, o, deadline);
  EXPECT_EQ(s.auth->status(), mcbus::sasl_status::failed);
  EXPECT_EQ(s.auth->failure().code(), mcbus::errc::auth_rejected) << s.auth->failure().message();
}

TEST_F(DbusDaemon, AnonymousOnlyIsRejectedByAnExternalOnlyBus) {
  const auto deadline = clock_type::now() + deadline_after;
  session s;
  mcbus::sasl_options o;
  o.external = false;
  o.anonymous = true;
  authenticate_and_hello(s, address_, o, deadline);
  EXPECT_EQ(s.auth->status(), mcbus::sasl_status::failed);
  EXPECT_EQ(s.auth->failure().code(), mcbus::errc::auth_rejected) << s.auth->failure().message();
}

TEST(DbusDaemonTransports, AbstractSocket) {
  if (!have_program("/usr/bin/dbus-daemon")) GTEST_SKIP() << "dbus-daemon is not installed";
  child d;
  const std::string name = "/mcbus/test-" + std::to_string(::getpid());
  const std::string text = start_dbus_daemon(d, "abstract", "unix:abstract=" + name, "  <auth>EXTERNAL</auth>\n");
  ASSERT_FALSE(text.empty());
  auto list = mcbus::parse_address_list(text);
  ASSERT_TRUE(list) << text;
  ASSERT_EQ(list->front().kind(), mcbus::address_kind::unix_abstract);
  EXPECT_EQ(list->front().abstract_name(), name);
  const auto deadline = clock_type::now() + deadline_after;
  session s;
  mcbus::sasl_options o;
  o.negotiate_unix_fd = true;
  authenticate_and_hello(s, list->front(), o, deadline);
  ASSERT_EQ(s.auth->status(), mcbus::sasl_status::authenticated) << s.auth->failure().message();
  EXPECT_TRUE(s.auth->unix_fd_agreed());
}

TEST(DbusDaemonTransports, TcpFallsBackFromExternalToAnonymous) {
  if (!have_program("/usr/bin/dbus-daemon")) GTEST_SKIP() << "dbus-daemon is not installed";
  child d;
  const std::string text =
      start_dbus_daemon(d, "tcp", "tcp:host=127.0.0.1,port=0", "  <auth>ANONYMOUS</auth>\n  <allow_anonymous/>\n");
  ASSERT_FALSE(text.empty());
  auto list = mcbus::parse_address_list(text);
  ASSERT_TRUE(list) << text << ": " << list.error().message();
  const auto& a = list->front();
  ASSERT_EQ(a.kind(), mcbus::address_kind::tcp);
  EXPECT_FALSE(a.can_pass_fds());
  const auto deadline = clock_type::now() + deadline_after;
  session s;
  mcbus::sasl_options o;
  o.anonymous = true;  // EXTERNAL first, as always; the bus rejects it and lists ANONYMOUS
  o.negotiate_unix_fd = a.can_pass_fds();
  authenticate_and_hello(s, a, o, deadline);
  ASSERT_EQ(s.auth->status(), mcbus::sasl_status::authenticated) << s.auth->failure().message();
  EXPECT_EQ(s.auth->mechanism(), mcbus::sasl_mechanism::anonymous);
  EXPECT_EQ(s.auth->server_guid(), a.guid());
  EXPECT_EQ(s.unique_name.substr(0, 1), ":");
}

// dbus-broker needs its launcher, socket activation and a journal socket to log to; the recipe of
// DESIGN.md, in a private mount and pid namespace so that the real /run is untouched.
TEST(DbusBroker, ExternalWithFdNegotiation) {
  for (const char* p : {"/usr/bin/dbus-broker-launch", "/usr/bin/dbus-broker", "/usr/bin/unshare",
                        "/usr/bin/systemd-socket-activate", "/usr/bin/python3"})
    if (!have_program(p)) GTEST_SKIP() << p << " is not installed";
  const fs::path dir = scratch_dir();
  const fs::path sock = dir / "broker.sock";
  const fs::path conf = dir / "broker.conf";
  fs::remove(sock);
  std::ofstream(conf) << "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
                         " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n<busconfig>\n"
                         "  <type>session</type>\n"
                      << policy << "\n</busconfig>\n";
  const std::string script = std::string("set -e\n") + mcbus_test::private_broker_setup() +
                             "echo namespace-ready\n"
                             "exec systemd-socket-activate -l \"$1\" -E DBUS_SESSION_BUS_ADDRESS=unix:path=\"$1\" "
                             "dbus-broker-launch --scope user --config-file \"$2\" >/dev/null\n";
  child broker;
  ASSERT_TRUE(broker.start({"unshare", "--mount", "--propagation", "private", "--fork", "--pid", "--kill-child", "sh",
                            "-c", script, "sh", sock.string(), conf.string(), dir.string()}));
  const auto deadline = clock_type::now() + deadline_after;
  std::string line;
  while ((line = broker.read_line(deadline)) != "namespace-ready")
    if (line.empty()) GTEST_SKIP() << "could not set up a private mount and pid namespace (unshare not allowed?)";
  auto list = mcbus::parse_address_list("unix:path=" + mcbus::escape_address_value(sock.string()));
  ASSERT_TRUE(list);
  session s;
  mcbus::sasl_options o;
  o.negotiate_unix_fd = true;
  authenticate_and_hello(s, list->front(), o, deadline);
  ASSERT_EQ(s.auth->status(), mcbus::sasl_status::authenticated)
      << s.auth->failure().message() << (s.eof ? " (connection closed)" : "");
  EXPECT_TRUE(s.auth->unix_fd_agreed());
  EXPECT_EQ(s.auth->server_guid().size(), 32u);
  EXPECT_EQ(s.unique_name.substr(0, 1), ":");

  // The other EXTERNAL form, the one dbus-broker's own client uses.
  session s2;
  mcbus::sasl_options o2;
  o2.external_empty_response = true;
  o2.negotiate_unix_fd = true;
  authenticate_and_hello(s2, list->front(), o2, deadline);
  ASSERT_EQ(s2.auth->status(), mcbus::sasl_status::authenticated) << s2.auth->failure().message();
  EXPECT_EQ(s2.auth->server_guid(), s.auth->server_guid());
  EXPECT_NE(s2.unique_name, s.unique_name);
  broker.stop();
  fs::remove(sock);
}

// Removes the scratch folder once every test has run.
class scratch_cleanup : public ::testing::Environment {
 public:
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(scratch_dir(), ec);
  }
};
const auto* const cleanup_registration = ::testing::AddGlobalTestEnvironment(new scratch_cleanup);

}  // namespace
