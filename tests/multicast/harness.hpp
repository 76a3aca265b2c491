// Test harness: connections that run their loops in their own threads (a publisher must answer
// Join while a subscriber blocks in subscribe()), with work posted to them and results waited for
// with deadlines.
#pragma once

#include <mcbus/multicast.hpp>

#include <gtest/gtest.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <linux/sockios.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fixture.hpp"

namespace mcbus_test {

class looper {
 public:
  explicit looper(mcbus::connection conn) : conn_(std::move(conn)) {
    thread_ = std::thread([this] { loop(); });
  }
  looper(const looper&) = delete;
  looper& operator=(const looper&) = delete;
  ~looper() { stop(); }

  // Runs f(connection&) on the loop thread and returns what it returns.
  template <class F>
  auto run(F&& f) -> decltype(f(std::declval<mcbus::connection&>())) {
    using R = decltype(f(std::declval<mcbus::connection&>()));
    auto task = std::make_shared<std::packaged_task<R()>>([this, &f]() -> R { return f(conn_); });
    auto done = task->get_future();
    {
      std::lock_guard lock(mutex_);
      tasks_.push_back([task] { (*task)(); });
    }
    return done.get();
  }

  // Waits until pred() (evaluated on the loop thread) is true; false after the deadline.
  template <class Pred>
  bool wait_for(Pred&& pred, std::chrono::milliseconds limit = std::chrono::seconds(30)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      if (run([&](mcbus::connection&) { return static_cast<bool>(pred()); })) return true;
    }
    return run([&](mcbus::connection&) { return static_cast<bool>(pred()); });
  }

  // Keeps an object alive until the loop ends, and destroys it on the loop thread.
  void keep(std::shared_ptr<void> p) {
    run([&](mcbus::connection&) {
      kept_.push_back(std::move(p));
      return 0;
    });
  }

  void stop() {
    if (!thread_.joinable()) return;
    stopping_ = true;
    thread_.join();
  }

  // Stops turning the loop (the connection stays open): a member that does not read.
  void pause(bool on) { paused_ = on; }

 private:
  void loop() {
    std::deque<std::function<void()>> work;  // reused: a turn with no task allocates nothing
    while (!stopping_) {
      {
        std::lock_guard lock(mutex_);
        work.swap(tasks_);
      }
      for (auto& w : work) w();
      work.clear();
      if (paused_ || !conn_.connected()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));  // idle: nothing to turn
        continue;
      }
      (void)conn_.run_for(std::chrono::milliseconds(1));
    }
    kept_.clear();  // subscriptions and publishers die on their own thread
    std::lock_guard lock(mutex_);
    for (auto& w : tasks_) w();
  }

  mcbus::connection conn_;
  std::thread thread_;
  std::mutex mutex_;
  std::deque<std::function<void()>> tasks_;
  std::vector<std::shared_ptr<void>> kept_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> paused_{false};
};

// What one subscriber saw: the serials and first arguments of the signals it handled.
struct received_log {
  std::vector<std::uint32_t> serials;
  std::vector<std::string> args;
  std::vector<std::string> members;

  void add(const mcbus::message_view& m) {
    serials.push_back(m.serial());
    auto a = m.read_first<std::string>();
    args.push_back(a ? *a : std::string());
    members.emplace_back(m.header().member);
  }
  bool increasing() const {
    for (std::size_t i = 1; i < serials.size(); ++i) {
      if (!mcbus::multicast::serial_before(serials[i - 1], serials[i])) return false;
    }
    return true;
  }
};

// Subscribes on the loop's connection and records what arrives in `log`; the subscription lives
// as long as the loop. Returns the error text, empty on success.
inline std::string subscribe_logging(looper& loop, const std::string& rule, std::shared_ptr<received_log> log,
                                     mcbus::subscribe_via via = mcbus::subscribe_via::automatic) {
  std::shared_ptr<mcbus::subscription> kept;
  std::string err = loop.run([&](mcbus::connection& conn) -> std::string {
    auto sub = conn.subscribe(
        rule, [log](const mcbus::message_view& m) { log->add(m); }, via);
    if (!sub) return sub.error().message();
    kept = std::make_shared<mcbus::subscription>(std::move(*sub));
    return {};
  });
  if (kept) loop.keep(std::move(kept));
  return err;
}

// Packets the loop's connection received from `publisher`'s group; ~0 when not a member.
inline std::uint64_t group_packets(looper& loop, const std::string& publisher) {
  return loop.run([&](mcbus::connection& c) -> std::uint64_t {
    for (const auto& [name, n] : c.multicast_groups()) {
      if (name == publisher) return n;
    }
    return ~std::uint64_t{0};
  });
}

// subscribe() joins a publisher's group in the background: waits (from outside the loop) until
// the connection is in `publisher`'s group.
inline bool wait_joined(looper& loop, const std::string& publisher,
                        std::chrono::milliseconds limit = std::chrono::seconds(30)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (group_packets(loop, publisher) == ~std::uint64_t{0}) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// A publisher owning `name`, running in its own loop; `pub` is used on that loop only.
struct publisher_side {
  std::unique_ptr<looper> loop;
  mcbus::multicast::publisher* pub = nullptr;
  std::string unique;
};
// Starts it on `conn` (fails the test if the name or the publisher cannot be had).
inline void start_publisher(publisher_side& p, mcbus::result<mcbus::connection> conn, const std::string& name,
                            mcbus::multicast::publisher_options opts = {}) {
  ASSERT_TRUE(conn) << conn.error().message();
  p.unique = conn->unique_name();
  p.loop = std::make_unique<looper>(std::move(*conn));
  std::shared_ptr<mcbus::multicast::publisher> made =
      p.loop->run([&](mcbus::connection& c) -> std::shared_ptr<mcbus::multicast::publisher> {
        auto owned = c.request_name(mcbus::bus_name::from_unchecked(name));
        if (!owned || *owned != mcbus::request_name_reply::primary_owner) return nullptr;
        auto created = mcbus::multicast::publisher::create(c, std::move(opts));
        if (!created) return nullptr;
        return std::shared_ptr<mcbus::multicast::publisher>(std::move(*created));
      });
  ASSERT_TRUE(made) << "cannot own " << name << " or make a publisher there";
  p.pub = made.get();
  p.loop->keep(std::move(made));
}

// A Join made by hand, as any D-Bus client could make it (docs/multicast-protocol.md), so that
// the test owns the socket and no mcbus member code ever reads it.
struct hand_joined {
  mcbus::unix_fd socket;
  std::uint32_t version = 0;
  std::uint32_t max_packet = 0;
};
inline mcbus::call_result<hand_joined> join_by_hand(mcbus::connection& conn, const std::string& publisher,
                                                    const std::vector<std::string>& rules) {
  // Spelled out from the protocol text rather than taken from the library's constants: a mistake
  // there should not be copied into the test.
  mcbus::message join = mcbus::message::method_call(mcbus::bus_name::from_unchecked(publisher), "/org/mcbus/Multicast1",
                                                    "org.mcbus.Multicast1", "Join");
  join.append(rules, std::uint32_t{0});
  auto reply = conn.call(std::move(join), std::chrono::seconds(20));
  if (!reply) return reply.error();
  auto values = reply->view().read<mcbus::unix_fd, std::uint32_t, std::uint32_t>();
  if (!values) return mcbus::call_error(values.error());
  auto& [fd, version, max_packet] = *values;
  return hand_joined{std::move(fd), version, max_packet};
}

// Bytes queued on a socket, as the kernel counts them; -1 if the ioctl fails.
inline int bytes_queued(int fd) {
  int n = 0;
  return ::ioctl(fd, SIOCINQ, &n) == 0 ? n : -1;
}

inline mcbus::message reading(std::string_view sensor, double value, std::string_view member = "Reading") {
  mcbus::message m =
      mcbus::message::signal("/org/mcbus/Sensor", "org.mcbus.Sensor1", mcbus::member_name::from_unchecked(member));
  m.append(sensor, value, std::uint64_t{0});
  return m;
}

}  // namespace mcbus_test
