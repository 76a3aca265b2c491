// mcbus-bench: the private bus, and CPU accounting of processes the benchmark did not start.
#include "common.hpp"

#include <dirent.h>
#include <sys/socket.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

namespace mcbus_bench {

namespace {

struct proc_stat {
  pid_t ppid = 0;
  unsigned long long ticks = 0;  // utime + stime
};

// voluntary_ctxt_switches + nonvoluntary_ctxt_switches of every thread of the process.
unsigned long long read_switches(pid_t pid) {
  unsigned long long n = 0;
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(tasks.c_str());
  if (!d) return 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream in(tasks + "/" + e->d_name + "/status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.starts_with("voluntary_ctxt_switches:") || line.starts_with("nonvoluntary_ctxt_switches:")) {
        n += std::strtoull(line.c_str() + line.find(':') + 1, nullptr, 10);
      }
    }
  }
  ::closedir(d);
  return n;
}

// Fields of /proc/PID/stat after the command name, which may hold spaces and parentheses.
bool read_stat(pid_t pid, proc_stat& out) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  // state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
  std::vector<std::string> f;
  while (f.size() < 13 && rest >> field) f.push_back(field);
  if (f.size() < 13) return false;
  out.ppid = static_cast<pid_t>(std::atol(f[1].c_str()));
  out.ticks = std::strtoull(f[11].c_str(), nullptr, 10) + std::strtoull(f[12].c_str(), nullptr, 10);
  return true;
}

}  // namespace

process_usage tree_usage(pid_t root) {
  if (root <= 0) return {};
  std::map<pid_t, proc_stat> all;
  if (DIR* d = ::opendir("/proc")) {
    while (dirent* e = ::readdir(d)) {
      char* end = nullptr;
      const long pid = std::strtol(e->d_name, &end, 10);
      if (!end || *end || pid <= 0) continue;
      proc_stat s;
      if (read_stat(static_cast<pid_t>(pid), s)) all.emplace(static_cast<pid_t>(pid), s);
    }
    ::closedir(d);
  }
  // The root and everything below it.
  std::vector<pid_t> todo{root};
  unsigned long long ticks = 0, switches = 0;
  while (!todo.empty()) {
    const pid_t p = todo.back();
    todo.pop_back();
    if (auto it = all.find(p); it != all.end()) {
      ticks += it->second.ticks;
      switches += read_switches(p);
    }
    for (const auto& [pid, s] : all) {
      if (s.ppid == p) todo.push_back(pid);
    }
  }
  return {double(ticks) / double(::sysconf(_SC_CLK_TCK)), switches};
}

pid_t peer_pid(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
  return cred.pid;
}

std::optional<bus_handle> open_bus(const options& o) {
  bus_handle b;
  if (!o.address.empty()) {
    b.address = o.address;
    b.name = "external";
    return b;
  }
  const auto kind = o.bus == "daemon" ? mcbus_test::bus_kind::dbus_daemon : mcbus_test::bus_kind::dbus_broker;
  std::string why;
  b.owned = mcbus_test::test_bus::start(kind, why);
  if (!b.owned) {
    std::fprintf(stderr, "mcbus-bench: cannot start %s: %s\n", mcbus_test::to_string(kind), why.c_str());
    return std::nullopt;
  }
  b.address = b.owned->address();
  b.name = mcbus_test::to_string(kind);
  return b;
}

}  // namespace mcbus_bench
