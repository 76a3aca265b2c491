// mcbus-bench: what every mode shares: options, the private bus, clocks, CPU accounting, shared
// memory between the forked processes, percentiles and JSON output.
#pragma once

#include <mcbus/connection.hpp>

#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

// The private-bus recipe is the tests' own (dbus-daemon directly; dbus-broker through its launcher
// inside unshare). The tools are built from the source tree, so it is included from there.
#include "../../tests/support/test_bus.hpp"

namespace mcbus_bench {

// ---- options -----------------------------------------------------------------------------------

struct options {
  std::string mode;
  std::string address;         // --bus-address; empty: start a private bus
  std::string bus = "broker";  // which private bus: broker or daemon
  std::string via = "multicast";
  unsigned calls = 20000;
  unsigned subscribers = 8;
  double selectivity = 0.1;
  unsigned messages = 20000;
  std::vector<std::string> rules{"member", "arg0namespace"};  // --rules: the rule shapes to run
  unsigned window = 1024;  // messages in flight at most (emitted, not yet received by all)
  unsigned paced = 500;    // messages of the paced latency phase
  bool sdbus = true;       // run the sd-bus baseline when built with it
  bool floor = true;       // run the raw SEQPACKET floor (fanout)
  double timeout_s = 120;  // a run that has not finished by then fails
};

// ---- clocks and CPU ----------------------------------------------------------------------------

inline std::uint64_t now_ns() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::uint64_t(ts.tv_sec) * 1000000000u + std::uint64_t(ts.tv_nsec);
}

inline double process_cpu_s() {
  timespec ts;
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

// Context switches of this process so far: voluntary (it waited) and involuntary (it was
// preempted). Both cost a switch; a path that wakes a process per message pays for it here.
inline std::uint64_t context_switches() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<std::uint64_t>(ru.ru_nvcsw) + static_cast<std::uint64_t>(ru.ru_nivcsw);
}

// Sleeps briefly while waiting on another process: gives the CPU away (2 cores are shared by
// every process of a run), without the 50 us timer slack that would dominate the wait.
inline void nap(long ns = 20000) {
  timespec ts{0, ns};
  ::nanosleep(&ts, nullptr);
}

// utime+stime and context switches of a process and of all its descendants that are alive, from
// /proc (CPU in clock ticks: 10 ms resolution, which is why runs should last seconds). Used for the
// bus daemon, whose process tree (launcher, broker) the benchmark did not necessarily start itself.
struct process_usage {
  double cpu_s = 0;
  std::uint64_t switches = 0;  // voluntary and involuntary, of every thread
};
process_usage tree_usage(pid_t root);

// The pid of the process at the other end of a connected unix socket (the bus).
pid_t peer_pid(int fd);

// ---- the bus -----------------------------------------------------------------------------------

struct bus_handle {
  std::unique_ptr<mcbus_test::test_bus> owned;  // null when --bus-address was given
  std::string address;
  std::string name;  // "dbus-broker", "dbus-daemon" or "external"
};

// Starts the private bus the options ask for, or uses --bus-address. Prints why on failure.
std::optional<bus_handle> open_bus(const options& o);

// ---- shared memory between the forked processes -----------------------------------------------

// An anonymous shared mapping, created before fork() so that every process sees the same bytes.
class shared_region {
 public:
  explicit shared_region(std::size_t bytes) : size_(std::max<std::size_t>(bytes, 4096)) {
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    base_ = p == MAP_FAILED ? nullptr : static_cast<std::byte*>(p);
  }
  ~shared_region() {
    if (base_) ::munmap(base_, size_);
  }
  shared_region(const shared_region&) = delete;
  shared_region& operator=(const shared_region&) = delete;
  std::byte* data() const noexcept { return base_; }
  explicit operator bool() const noexcept { return base_ != nullptr; }

 private:
  std::size_t size_;
  std::byte* base_;
};

// Forks; the child runs fn and leaves with _exit (no destructors of the parent's objects run
// twice: the private bus, for one, belongs to the parent).
template <class Fn>
pid_t fork_child(Fn&& fn) {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    int rc = fn();
    std::fflush(stdout);
    std::fflush(stderr);
    ::_exit(rc);
  }
  return pid;
}

// Waits for a child; true when it exited with status 0.
inline bool reap(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return false;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// ---- figures -----------------------------------------------------------------------------------

// The q-quantile (0..1) of the samples, which it sorts; 0 for none.
template <class T>
double quantile(std::vector<T>& v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t i = std::min(v.size() - 1, static_cast<std::size_t>(q * double(v.size())));
  return double(v[i]);
}

// One JSON object written on one line, keys in the order they are added.
class json_line {
 public:
  json_line& str(std::string_view key, std::string_view value) {
    sep(key);
    out_ += '"';
    for (char c : value) {
      if (c == '"' || c == '\\') out_ += '\\';
      out_ += c;
    }
    out_ += '"';
    return *this;
  }
  json_line& num(std::string_view key, double value, int decimals = 3) {
    sep(key);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
    out_ += buf;
    return *this;
  }
  json_line& integer(std::string_view key, std::uint64_t value) {
    sep(key);
    out_ += std::to_string(value);
    return *this;
  }
  json_line& boolean(std::string_view key, bool value) {
    sep(key);
    out_ += value ? "true" : "false";
    return *this;
  }
  // Appends the other line's fields after this one's.
  json_line& merge(const json_line& other) {
    if (other.out_.size() > 1) {
      if (out_.size() > 1) out_ += ',';
      out_.append(other.out_, 1);
    }
    return *this;
  }
  void print() const {
    std::printf("%s}\n", out_.c_str());
    std::fflush(stdout);
  }

 private:
  void sep(std::string_view key) {
    out_ += out_.size() > 1 ? ",\"" : "\"";
    out_ += key;
    out_ += "\":";
  }
  std::string out_ = "{";
};

inline double ratio(double a, double b) { return b > 0 ? a / b : 0; }

// ---- the modes -----------------------------------------------------------------------------------

int run_roundtrip(const options& o);
int run_signals_bus(const options& o);
int run_fanout(const options& o);

}  // namespace mcbus_bench
