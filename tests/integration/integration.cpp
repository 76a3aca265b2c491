// The shared state of the integration tests: services that live across tests, the leftover-process
// check, and main().
#include "integration.hpp"

#include <dirent.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace mcbus_integration {

namespace {

// Running services, by bus. The echo-service of a bus serves one transport at a time: two could
// not both own org.mcbus.Echo.
struct echo_entry {
  service svc;
  transport mode = transport::uring;
};
std::map<bus_kind, echo_entry>& echo_services() {
  static std::map<bus_kind, echo_entry> m;
  return m;
}
std::map<bus_kind, service>& types_services() {
  static std::map<bus_kind, service> m;
  return m;
}
std::map<bus_kind, std::unique_ptr<mcbus::connection>>& own_connections() {
  static std::map<bus_kind, std::unique_ptr<mcbus::connection>> m;
  return m;
}

}  // namespace

bool uring_available() {
  static const bool ok = [] {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return false;
    mcbus::unix_fd a(fds[0]), b(fds[1]);
    return static_cast<bool>(mcbus::uring_transport::open(a, true));
  }();
  return ok;
}

const std::string& python_dbus_missing() {
  static const std::string why = [] {
    if (!mcbus_test::program_exists(python_bin)) return std::string(python_bin) + " is not installed";
    run_result r = run({python_bin, "-c",
                        "import dbus, dbus.service, dbus.mainloop.glib\n"
                        "from gi.repository import GLib"});
    return r.status.exited(0) ? std::string() : r.status.describe() + ": " + r.err;
  }();
  return why;
}

namespace {

// The buses (started by tests/support/test_bus.hpp, without PR_SET_PDEATHSIG) are killed by hand
// if this program dies of a signal; the services and tools die with it by themselves.
std::atomic<pid_t> fatal_kill_list[8];

void remember_for_fatal_signals(pid_t pid) {
  for (auto& slot : fatal_kill_list) {
    pid_t none = 0;
    if (slot.compare_exchange_strong(none, pid)) return;
  }
}

struct sigaction previous_action[NSIG];

// Kills the buses, then lets the handler that was there before (a sanitizer's, or the default
// action) deal with the signal.
extern "C" void on_fatal_signal(int sig, siginfo_t* info, void* context) {
  for (auto& slot : fatal_kill_list) {
    const pid_t pid = slot.load();
    if (pid > 0) ::kill(pid, SIGKILL);
  }
  const struct sigaction& before = previous_action[sig];
  if ((before.sa_flags & SA_SIGINFO) && before.sa_sigaction) {
    before.sa_sigaction(sig, info, context);
    return;
  }
  if (!(before.sa_flags & SA_SIGINFO) && before.sa_handler != SIG_DFL && before.sa_handler != SIG_IGN) {
    before.sa_handler(sig);
    return;
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

}  // namespace

std::vector<pid_t>& bus_pids() {
  static std::vector<pid_t> pids;
  return pids;
}

namespace {
std::string& scratch_dir() {
  static std::string dir;
  return dir;
}
}  // namespace

std::string scratch_file(const std::string& name, const std::string& content) {
  std::string& dir = scratch_dir();
  if (dir.empty()) {
    char tmpl[] = "/tmp/mcbus-integration-XXXXXX";
    if (::mkdtemp(tmpl)) dir = tmpl;
  }
  const std::string path = dir + "/" + name;
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

void integration_test::SetUp() {
  std::string why;
  bus_ = mcbus_test::shared_bus(kind(), why);
  if (!bus_) GTEST_SKIP() << mcbus_test::to_string(kind()) << " unavailable: " << why;
  auto& pids = bus_pids();
  if (std::find(pids.begin(), pids.end(), bus_->pid()) == pids.end()) {
    pids.push_back(bus_->pid());
    remember_for_fatal_signals(bus_->pid());
  }
  if (mode() == transport::uring && !uring_available()) {
    GTEST_SKIP() << "io_uring_setup() fails on this machine (kernel, seccomp or kernel.io_uring_disabled)";
  }
}

run_result integration_test::stop_service(service& svc, const char* name) {
  run_result r;
  if (!svc.proc) return r;
  // The bus drops the name when it notices the disconnection, which may be after the process is
  // gone: wait for NameOwnerChanged, so that a new instance can own the name at once.
  bool released = false;
  mcbus::connection* conn = own_connection();
  mcbus::call_result<mcbus::subscription> watch = mcbus::call_error(mcbus::error(mcbus::errc::not_connected));
  if (conn) {
    watch = conn->watch_name_owner(*mcbus::bus_name::from(name),
                                   [&](std::string_view, std::string_view, std::string_view now) {
                                     if (now.empty()) released = true;
                                   });
    EXPECT_TRUE(watch) << watch.error().message();
  }
  r.status = svc.proc->terminate(SIGTERM, 10s);
  r.out = svc.proc->out();
  r.err = svc.proc->err();
  if (conn && watch) {
    const mcbus::error e = conn->run_until([&] { return released; }, 10s);
    EXPECT_FALSE(e) << "the bus did not release " << name << ": " << e.message();
  }
  svc = {};
  return r;
}

service* integration_test::echo_service() {
  echo_entry& e = echo_services()[kind()];
  if (e.svc.proc && e.svc.proc->running() && e.mode == mode()) return &e.svc;
  if (e.svc.proc) {
    const run_result r = stop_service(e.svc, echo_name);
    EXPECT_TRUE(r.status.exited(0)) << "the previous echo-service ended with " << r.status.describe()
                                    << "; it printed:\n"
                                    << r.out << r.err;
  }
  std::string why;
  auto proc = child::start({echo_service_bin, "--address=" + address()}, mcbus_env(), why);
  if (!proc) {
    ADD_FAILURE() << why;
    return nullptr;
  }
  // It announces itself once it owns its name: "echo-service: org.mcbus.Echo is :1.N (transport T)".
  const std::string prefix = "echo-service: org.mcbus.Echo is ";
  if (!proc->wait_for(
          [&](const std::string& o, const std::string&) {
            const auto at = o.find(prefix);
            return at != std::string::npos && o.find('\n', at) != std::string::npos;
          },
          20s)) {
    ADD_FAILURE() << "echo-service did not start: " << proc->out() << proc->err();
    return nullptr;
  }
  const std::string& o = proc->out();
  const std::string line = o.substr(o.find(prefix) + prefix.size());
  e.svc.unique_name = line.substr(0, line.find(' '));
  EXPECT_NE(line.find(std::string("(transport ") + transport_name() + ")"), std::string::npos)
      << "echo-service does not use the transport MCBUS_TRANSPORT asked for: " << line;
  e.svc.proc = std::move(proc);
  e.mode = mode();
  return &e.svc;
}

run_result integration_test::stop_echo_service() { return stop_service(echo_services()[kind()].svc, echo_name); }

service* integration_test::types_service() {
  if (!python_dbus_missing().empty()) return nullptr;
  service& s = types_services()[kind()];
  if (s.proc && s.proc->running()) return &s;
  std::string why;
  s.proc = child::start({python_bin, std::string(script_dir) + "/types_service.py", address()}, {}, why);
  if (!s.proc) {
    ADD_FAILURE() << why;
    return nullptr;
  }
  if (!s.proc->wait_for_output("READY ", 20s) || !s.proc->wait_for_output("\n", 1s)) {
    ADD_FAILURE() << "types_service.py did not start: " << s.proc->out() << s.proc->err();
    s = {};
    return nullptr;
  }
  s.cases.clear();
  for (const std::string& line : lines_of(s.proc->out())) {
    if (line.rfind("CASE ", 0) == 0) s.cases.push_back(line.substr(5));
    if (line.rfind("READY ", 0) == 0) s.unique_name = line.substr(6);
  }
  return &s;
}

mcbus::connection* integration_test::own_connection() {
  auto& c = own_connections()[kind()];
  if (!c || !c->connected()) {
    auto opened = mcbus::connection::open(address());
    if (!opened) {
      ADD_FAILURE() << "cannot connect to " << address() << ": " << opened.error().message();
      return nullptr;
    }
    c = std::make_unique<mcbus::connection>(std::move(*opened));
  }
  return c.get();
}

std::vector<std::string> stop_all_services() {
  std::vector<std::string> problems;
  for (auto& [kind, e] : echo_services()) {
    if (!e.svc.proc) continue;
    const exit_status s = e.svc.proc->terminate(SIGTERM, 10s);
    if (!s.exited(0)) problems.push_back("echo-service on " + std::string(to_string(kind)) + ": " + s.describe());
    e.svc = {};
  }
  for (auto& [kind, s] : types_services()) {
    if (!s.proc) continue;
    const exit_status st = s.proc->terminate(SIGTERM, 10s);
    if (!st.exited(0)) problems.push_back("types_service.py on " + std::string(to_string(kind)) + ": " + st.describe());
    s = {};
  }
  own_connections().clear();
  return problems;
}

namespace {

// The children of this program that are still alive, with their command lines.
std::vector<std::string> live_children() {
  std::vector<std::string> found;
  DIR* d = ::opendir("/proc");
  if (!d) return found;
  const std::string self = std::to_string(::getpid());
  while (dirent* ent = ::readdir(d)) {
    const std::string name = ent->d_name;
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat("/proc/" + name + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so parse from the last ')'.
    const auto close = text.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(text.substr(close + 1));
    std::string state, ppid;
    rest >> state >> ppid;
    if (ppid != self) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(name));
    const auto& buses = bus_pids();
    if (std::find(buses.begin(), buses.end(), pid) != buses.end()) continue;
    std::ifstream cmd("/proc/" + name + "/cmdline");
    std::string line((std::istreambuf_iterator<char>(cmd)), std::istreambuf_iterator<char>());
    for (char& c : line) c = c == '\0' ? ' ' : c;
    found.push_back(name + " [" + state + "] " + line);
  }
  ::closedir(d);
  return found;
}

// After the last test: the long-running services stop cleanly, and no process is left behind.
class leftover_check : public testing::Environment {
 public:
  void TearDown() override {
    for (const std::string& p : stop_all_services()) ADD_FAILURE() << "did not stop cleanly: " << p;
    for (const std::string& c : live_children()) ADD_FAILURE() << "left behind: " << c;
    if (!scratch_dir().empty()) {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    }
  }
};

}  // namespace

}  // namespace mcbus_integration

int main(int argc, char** argv) {
  // Orphaned grandchildren come back to this program, so that killing a process group reaps all
  // of it (see subprocess.hpp).
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  // A closed stdout (`| head`) must not kill the program before it has stopped its children.
  ::signal(SIGPIPE, SIG_IGN);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) {
    struct sigaction sa {};
    sa.sa_sigaction = mcbus_integration::on_fatal_signal;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    ::sigaction(sig, &sa, &mcbus_integration::previous_action[sig]);
  }
  testing::InitGoogleTest(&argc, argv);
  testing::AddGlobalTestEnvironment(new mcbus_integration::leftover_check);
  return RUN_ALL_TESTS();
}
