// mcbus-bench: the fan-out harness that signals-bus and fanout share.
//
// One emitter (this process) and N subscribers (forked processes). Signal j belongs to group
// G = j mod groups, where groups = round(1/S), and subscriber i wants group i mod groups: a
// fraction S of the signals. Two rule shapes say which group a signal is in:
//   member:        the signal's member is "Reading<G>", the rule says member='Reading<G>'. This is
//                  what most real subscribers write, and what a bus matches most cheaply.
//   arg0namespace: the member is "Reading", arg0 is the sensor name "org.sensor.g<G>.s<K>", and the
//                  rule says arg0namespace='org.sensor.g<G>'. A bus tests a string prefix.
// Every rule also names the sender, interface and member, as subscribers to one service do.
//
// The run has two phases. Load: M signals as fast as the path takes them, with at most `window`
// messages in flight (emitted but not yet received by every subscriber that wants them: the
// emitter reads the subscribers' counters in shared memory, so flow control costs the path
// nothing). Every path gets the same window, so the bus cannot drop signals over its quotas
// (dbus-broker would), and none gets an advantage. Paced: P signals, each emitted once the one
// before has reached all its subscribers: the one-way latency of an idle path. Subscribers stamp
// each receive against the CLOCK_MONOTONIC time in the body (same machine, same clock).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common.hpp"

namespace mcbus_bench {

inline constexpr const char* bench_path = "/org/mcbus/Bench";
inline constexpr const char* bench_interface = "org.mcbus.Bench1";
inline constexpr const char* bench_member = "Reading";
inline constexpr unsigned names_per_group = 10;
// Emits outside a loop share one io_uring submission per this many messages, on every path that
// submits (the mcbus publisher and the floor), so that the floor batches exactly as mcbus does.
inline constexpr unsigned emit_burst = 32;

enum class rule_shape { member, arg0namespace };
const char* to_string(rule_shape s);

struct plan {
  unsigned subscribers = 1;
  unsigned groups = 1;
  unsigned messages = 0;  // load phase
  unsigned paced = 0;     // paced phase
  unsigned window = 1024;
  rule_shape shape = rule_shape::arg0namespace;
  bool lossy = false;                  // udp: losses are counted, not waited for
  std::string sender;                  // the well-known name the rules name
  std::vector<unsigned> paced_groups;  // groups that have a subscriber, in turn for the paced phase

  static plan make(unsigned subscribers, double selectivity, unsigned messages, unsigned paced, unsigned window);

  unsigned group_of_subscriber(unsigned i) const { return i % groups; }
  unsigned group_of(std::uint32_t seq) const {
    return seq < messages ? seq % groups : paced_groups[(seq - messages) % paced_groups.size()];
  }
  std::string sensor(std::uint32_t seq) const;
  std::string member(std::uint32_t seq) const;
  std::string group_namespace(unsigned g) const;
  std::string rule(unsigned i) const;
  std::uint64_t expected_load(unsigned i) const;
  std::uint64_t expected_total(unsigned i) const;
  double selectivity() const { return 1.0 / groups; }
};

// What the processes share. Counters are written by one process and read by others.
struct control {
  std::atomic<std::uint32_t> publisher_ready{0};
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint32_t> go{0};
  std::atomic<std::uint32_t> stop{0};
  std::atomic<std::uint32_t> failed{0};
  char why[512] = {};
};

struct sub_slot {
  std::atomic<std::uint64_t> delivered{0};
  std::atomic<std::uint64_t> load_done_ns{0};
  std::atomic<std::uint64_t> last_ns{0};
  double cpu_load_s = 0;
  std::uint64_t switches = 0;  // context switches (voluntary: waits) during the load phase
  std::uint64_t reordered = 0;
  std::uint64_t extra = 0;  // more messages than expected
  std::uint64_t sample_offset = 0;
  std::uint64_t expected = 0;
  std::uint64_t expected_load = 0;
};

class shared_state {
 public:
  explicit shared_state(const plan& p);
  explicit operator bool() const { return static_cast<bool>(mem_); }
  control& ctl() const { return *reinterpret_cast<control*>(mem_.data()); }
  sub_slot& slot(unsigned i) const { return slots()[i]; }
  std::uint32_t* samples(unsigned i) const { return samples_base() + slot(i).sample_offset; }
  void fail(const std::string& why) const;

 private:
  sub_slot* slots() const { return reinterpret_cast<sub_slot*>(mem_.data() + slots_at_); }
  std::uint32_t* samples_base() const { return reinterpret_cast<std::uint32_t*>(mem_.data() + samples_at_); }
  static std::size_t bytes(const plan& p);
  std::size_t slots_at_ = 0, samples_at_ = 0;
  shared_region mem_;
};

// Bookkeeping for one subscriber: call received() for each message it gets.
class recorder {
 public:
  recorder(const shared_state& sh, unsigned i) : sh_(sh), slot_(sh.slot(i)), samples_(sh.samples(i)) {}
  void started() {
    cpu_go_ = process_cpu_s();
    switches_go_ = context_switches();
  }
  void received(std::uint32_t seq, std::uint64_t sent_ns) {
    const std::uint64_t t = now_ns();
    const std::uint64_t n = slot_.delivered.load(std::memory_order_relaxed);
    if (n >= slot_.expected) {
      ++slot_.extra;
      return;
    }
    if (n > 0 && seq <= last_seq_) ++slot_.reordered;
    last_seq_ = seq;
    const std::uint64_t lat = t > sent_ns ? t - sent_ns : 0;
    samples_[n] = lat > 0xffffffffu ? 0xffffffffu : static_cast<std::uint32_t>(lat);
    slot_.last_ns.store(t, std::memory_order_relaxed);
    if (n + 1 == slot_.expected_load) {
      slot_.cpu_load_s = process_cpu_s() - cpu_go_;
      slot_.switches = context_switches() - switches_go_;
      slot_.load_done_ns.store(t, std::memory_order_relaxed);
    }
    slot_.delivered.store(n + 1, std::memory_order_release);
  }
  bool done() const {
    return slot_.delivered.load(std::memory_order_relaxed) >= slot_.expected ||
           sh_.ctl().stop.load(std::memory_order_relaxed);
  }
  // Waits for the emitter's go; false if the run was abandoned.
  bool wait_go() const;

 private:
  const shared_state& sh_;
  sub_slot& slot_;
  std::uint32_t* samples_;
  std::uint32_t last_seq_ = 0;
  double cpu_go_ = 0;
  std::uint64_t switches_go_ = 0;
};

// One side of a path. The emitter lives in the harness process; subscribers in forked children.
class emitter {
 public:
  virtual ~emitter() = default;
  // Connects (and, for a publisher, starts serving Join). False with `why` on failure.
  virtual bool setup(std::string& why) = 0;
  // Non-blocking loop work: reap completions, answer calls, write what is queued.
  virtual void serve() = 0;
  virtual bool emit(std::uint32_t seq, const std::string& member, const std::string& sensor, std::uint64_t ts,
                    std::string& why) = 0;
  // The pids whose CPU counts besides this process and the subscribers (the bus).
  virtual std::vector<pid_t> extra_pids() { return {}; }
  // Figures the path wants to add to its JSON line (e.g. the transport, publisher stats).
  virtual void describe(json_line&) {}
};

// Runs subscriber i in a child: connects, subscribes, marks itself ready, waits for go, then
// receives until it has what it expects or the run stops. Returns the exit status.
using subscriber_main = std::function<int(const plan&, const shared_state&, unsigned i)>;

struct path {
  std::string impl;  // mcbus, sd-bus, raw-seqpacket
  std::string via;   // multicast, bus, udp, floor
  std::function<std::unique_ptr<emitter>(const plan&)> make_emitter;
  subscriber_main subscriber;
  std::vector<pid_t> bus_pids;  // the bus daemon's process tree roots (CPU)
};

struct result_figures {
  bool ok = false;
  std::string why;
  double seconds = 0;
  double emitted_per_s = 0;
  std::uint64_t delivered = 0, expected = 0, delivered_load = 0, expected_load = 0;
  std::uint64_t reordered = 0, extra = 0;
  double cpu_s = 0, cpu_emitter_s = 0, cpu_subscribers_s = 0, cpu_bus_s = 0;
  std::uint64_t switches_emitter = 0, switches_subscribers = 0, switches_bus = 0;
  double p50_us = 0, p99_us = 0, load_p50_us = 0, load_p99_us = 0;
};

// Runs both phases over one path. `line` gets the path's own figures (describe()).
result_figures run_path(const plan& p, const path& route, const options& o, json_line& line);

// The common fields of a fan-out JSON line.
void put_figures(json_line& line, const result_figures& r, bool with_loss);

// The paths (mcbus over multicast or the bus; UDP; the raw floor; sd-bus).
path mcbus_path(const std::string& via, const std::string& address, pid_t bus_pid);
path udp_path(const plan& p);
path floor_path(const plan& p, std::size_t message_size);
#if MCBUS_BENCH_HAVE_SDBUS
path sdbus_path(const std::string& address, pid_t bus_pid);
#endif

// The size of the D-Bus signal the paths send (the floor sends as many bytes).
std::size_t signal_size(const plan& p);

// A signal as mcbus builds it for the fan-out.
mcbus::message make_signal(const std::string& member, const std::string& sensor, std::uint64_t ts, std::uint32_t seq);

}  // namespace mcbus_bench
