// Private buses for integration tests: a dbus-daemon, or a dbus-broker (which needs a launcher, a
// listening socket and a journal socket; it runs inside `unshare --mount --pid` with a tmpfs on
// /run so that the real /run is untouched). Each bus lives in its own temporary folder and dies
// with the test_bus object.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace mcbus_test {

enum class bus_kind { dbus_daemon, dbus_broker };

inline const char* to_string(bus_kind k) { return k == bus_kind::dbus_daemon ? "dbus-daemon" : "dbus-broker"; }

inline bool program_exists(const char* path) { return ::access(path, X_OK) == 0; }

// Runs argv; returns its pid or -1.
inline pid_t spawn(const std::vector<std::string>& args, const std::string& out_file = {}) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (!out_file.empty()) {
    posix_spawn_file_actions_addopen(&fa, 1, out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
  }
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

// True once something accepts connections on the unix socket at `path`.
inline bool wait_for_socket(const std::string& path, std::chrono::milliseconds limit, pid_t watched = -1) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0;
    ::close(fd);
    if (ok) return true;
    if (watched > 0 && ::waitpid(watched, nullptr, WNOHANG) == watched) return false;  // it died
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // polling a start-up, not timing a test
  }
  return false;
}

inline std::string bus_config(const std::string& listen) {
  std::string c =
      "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
      " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
      "<busconfig>\n  <type>session</type>\n";
  if (!listen.empty()) c += "  <listen>" + listen + "</listen>\n";
  c += "  <auth>EXTERNAL</auth>\n"
       "  <policy context=\"default\">\n"
       "    <allow send_destination=\"*\" eavesdrop=\"true\"/>\n"
       "    <allow eavesdrop=\"true\"/>\n"
       "    <allow own=\"*\"/>\n"
       "    <allow user=\"*\"/>\n"
       "  </policy>\n"
       "  <limit name=\"max_match_rules_per_connection\">100000</limit>\n"
       "  <limit name=\"max_replies_per_connection\">100000</limit>\n"
       "  <limit name=\"max_incoming_unix_fds\">1024</limit>\n"
       "  <limit name=\"max_outgoing_unix_fds\">1024</limit>\n";
  // mcbus-bench fanout runs 256 subscribers of one uid, plus the emitter: above dbus-daemon's
  // default of 256 connections per user. dbus-daemon only (listen is set): dbus-broker-launch
  // refuses to start with this limit in its configuration, and allows that many already.
  if (!listen.empty()) c += "  <limit name=\"max_connections_per_user\">1024</limit>\n";
  c += "</busconfig>\n";
  return c;
}

// The part of the dbus-broker recipe that runs first inside the private mount namespace, as sh
// lines: a tmpfs on /run, a journal socket there, and a machine id where the machine has none
// ($3 is a scratch directory). dbus-broker-launch fails with ENOENT without /etc/machine-id,
// which a fresh chroot or container may lack; the machine itself is left untouched.
inline const char* private_broker_setup() {
  return "mount -t tmpfs tmpfs /run\n"
         "if [ ! -s /etc/machine-id ]; then\n"
         "  mkdir -p \"$3/etc\"\n"
         "  tr -d - </proc/sys/kernel/random/uuid >\"$3/etc/machine-id\"\n"
         "  if [ -e /etc/machine-id ]; then mount --bind \"$3/etc/machine-id\" /etc/machine-id\n"
         "  else mount -t overlay overlay -o lowerdir=\"$3/etc\":/etc /etc; fi\n"
         "fi\n"
         "mkdir -p /run/systemd/journal\n"
         "/usr/bin/python3 -c 'import socket\n"
         "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
         "s.bind(\"/run/systemd/journal/socket\")\n"
         "while True: s.recv(65536)' &\n"
         "while [ ! -S /run/systemd/journal/socket ]; do sleep 0.01; done\n";
}

class test_bus {
 public:
  // Starts a bus, or returns null with `why` saying what is missing.
  static std::unique_ptr<test_bus> start(bus_kind kind, std::string& why) {
    auto bus = std::unique_ptr<test_bus>(new test_bus(kind));
    char tmpl[] = "/tmp/mcbus-bus-XXXXXX";
    if (!::mkdtemp(tmpl)) {
      why = "mkdtemp failed";
      return nullptr;
    }
    bus->dir_ = tmpl;
    ::chmod(tmpl, 0755);  // tests connect as other users too (setpriv to nobody)
    bus->socket_ = bus->dir_ + "/socket";
    const bool ok = kind == bus_kind::dbus_daemon ? bus->start_daemon(why) : bus->start_broker(why);
    return ok ? std::move(bus) : nullptr;
  }

  ~test_bus() { stop(); }

  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      for (int i = 0; i < 200 && ::waitpid(pid_, &status, WNOHANG) == 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      if (::waitpid(pid_, &status, WNOHANG) == 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
      }
      pid_ = -1;
    }
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
      dir_.clear();
    }
  }

  const std::string& address() const noexcept { return address_; }
  const std::string& socket_path() const noexcept { return socket_; }
  bus_kind kind() const noexcept { return kind_; }
  pid_t pid() const noexcept { return pid_; }

 private:
  explicit test_bus(bus_kind kind) : kind_(kind) {}

  bool start_daemon(std::string& why) {
    if (!program_exists("/usr/bin/dbus-daemon")) {
      why = "dbus-daemon is not installed (Debian package dbus-daemon)";
      return false;
    }
    const std::string conf = dir_ + "/bus.conf";
    std::ofstream(conf) << bus_config("unix:path=" + socket_);
    pid_ = spawn({"/usr/bin/dbus-daemon", "--config-file=" + conf, "--nofork", "--nopidfile", "--nosyslog"},
                 dir_ + "/log");
    if (pid_ < 0 || !wait_for_socket(socket_, std::chrono::seconds(20), pid_)) {
      why = "dbus-daemon did not start: " + log();
      return false;
    }
    address_ = "unix:path=" + socket_;
    return true;
  }

  // dbus-broker needs systemd-style socket activation, a journal socket to log to, and a machine
  // id (dbus-broker-launch fails with ENOENT without /etc/machine-id, which a fresh chroot or
  // container may lack). All are provided inside a private mount and pid namespace, leaving the
  // machine untouched; killing unshare takes the tree down.
  bool start_broker(std::string& why) {
    for (const char* p :
         {"/usr/bin/dbus-broker-launch", "/usr/bin/systemd-socket-activate", "/usr/bin/unshare", "/usr/bin/python3"}) {
      if (!program_exists(p)) {
        why = std::string(p) + " is missing (Debian packages dbus-broker, systemd, util-linux, python3)";
        return false;
      }
    }
    const std::string conf = dir_ + "/bus.conf";
    std::ofstream(conf) << bus_config("");
    const std::string script = dir_ + "/run.sh";
    std::ofstream(script)
        << "set -e\n"
        << private_broker_setup()
        << "exec /usr/bin/systemd-socket-activate -l \"$1\" -E DBUS_SESSION_BUS_ADDRESS=unix:path=\"$1\" "
           "/usr/bin/dbus-broker-launch --scope user --config-file \"$2\"\n";
    pid_ = spawn({"/usr/bin/unshare", "--mount", "--propagation", "private", "--fork", "--pid", "--kill-child",
                  "/bin/sh", script, socket_, conf, dir_},
                 dir_ + "/log");
    if (pid_ < 0 || !wait_for_socket(socket_, std::chrono::seconds(20), pid_)) {
      why = "dbus-broker did not start (" + first_error() + ")";
      return false;
    }
    ::chmod(socket_.c_str(), 0666);  // systemd-socket-activate makes it 0755: let other users in
    address_ = "unix:path=" + socket_;
    return true;
  }

  // The line of the log that says what went wrong: the first error, else the last line.
  std::string first_error() const {
    std::ifstream in(dir_ + "/log");
    std::string line, last;
    while (std::getline(in, line)) {
      if (line.find("ERROR") != std::string::npos || line.find("unshare:") != std::string::npos ||
          line.find("mount:") != std::string::npos)
        return line;
      if (!line.empty()) last = line;
    }
    return last.empty() ? "no output" : last;
  }

  std::string log() const {
    std::ifstream in(dir_ + "/log");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return text.empty() ? "(no output)" : text;
  }

  bus_kind kind_;
  pid_t pid_ = -1;
  std::string dir_;
  std::string socket_;
  std::string address_;
};

// One bus per kind per test program, started on first use (starting a bus costs ~50 ms).
inline test_bus* shared_bus(bus_kind kind, std::string& why) {
  static std::unique_ptr<test_bus> buses[2];
  static std::string reasons[2];
  static bool tried[2] = {false, false};
  const int i = kind == bus_kind::dbus_daemon ? 0 : 1;
  if (!tried[i]) {
    tried[i] = true;
    buses[i] = test_bus::start(kind, reasons[i]);
  }
  why = reasons[i];
  return buses[i].get();
}

}  // namespace mcbus_test
