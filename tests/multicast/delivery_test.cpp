// Reliability and order: slow members, quotas and drops, publisher restarts, the serial order
// across the group and the bus, and ordinary bus clients that did not join.
#include <mcbus/multicast.hpp>

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "harness.hpp"

using namespace mcbus;
using mcbus_test::bus_test;
using mcbus_test::looper;
using mcbus_test::reading;
using mcbus_test::received_log;

namespace {

class Delivery : public bus_test {
 protected:
  struct side {
    std::unique_ptr<looper> loop;
    std::string unique;
  };

  void open_side(side& s, const connection_options& opts) {
    auto c = connection::open(bus_->address(), opts);
    ASSERT_TRUE(c) << c.error().message();
    s.unique = c->unique_name();
    s.loop = std::make_unique<looper>(std::move(*c));
  }
  void open_side(side& s) {
    auto c = connect();
    ASSERT_TRUE(c) << c.error().message();
    s.unique = c->unique_name();
    s.loop = std::make_unique<looper>(std::move(*c));
  }

  multicast::publisher* make_publisher(side& s, const std::string& name, multicast::publisher_options opts = {}) {
    std::shared_ptr<multicast::publisher> made =
        s.loop->run([&](connection& conn) -> std::shared_ptr<multicast::publisher> {
          auto owned = conn.request_name(bus_name::from_unchecked(name));
          if (!owned || *owned != request_name_reply::primary_owner) return nullptr;
          auto created = multicast::publisher::create(conn, opts);
          return created ? std::shared_ptr<multicast::publisher>(std::move(*created)) : nullptr;
        });
    multicast::publisher* raw = made.get();
    if (made) s.loop->keep(std::move(made));
    return raw;
  }

  std::shared_ptr<received_log> subscribe(side& s, const std::string& rule,
                                          subscribe_via via = subscribe_via::automatic) {
    auto log = std::make_shared<received_log>();
    EXPECT_EQ(mcbus_test::subscribe_logging(*s.loop, rule, log, via), "");
    return log;
  }

  static std::uint64_t packets(side& s, const std::string& publisher) {
    return mcbus_test::group_packets(*s.loop, publisher);
  }

  // A publisher's name is free once the bus has noticed that it exited (asked through `s`).
  static bool name_freed(side& s, const std::string& name) {
    const auto freed_by = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    bool freed = false;
    while (!freed && std::chrono::steady_clock::now() < freed_by) {
      freed = s.loop->run([&](connection& c) { return !c.get_name_owner(bus_name::from_unchecked(name)).has_value(); });
    }
    return freed;
  }

  std::string name(std::string_view base) const {
    return std::string(base) + "." + mcbus_test::param_name({GetParam(), 0});
  }
};
MCBUS_ALL_BUSES_AND_TRANSPORTS(Delivery);

// Replies, unicast fallbacks (messages too large for a packet) and group packets from one
// publisher reach a member in serial order, whatever path each took.
TEST_P(Delivery, SerialOrderHoldsAcrossTheGroupAndTheBus) {
  side pub_side, member;
  open_side(pub_side);
  open_side(member);
  const std::string sender = name("org.mcbus.Test.Order");
  multicast::publisher* pub = make_publisher(pub_side, sender);
  ASSERT_NE(pub, nullptr);
  // A method that emits a signal, then replies: the reply (bus) comes after the signal (group).
  std::shared_ptr<object_handle> obj = pub_side.loop->run([&](connection& c) {
    return std::make_shared<object_handle>(c.add_object(
        "/org/mcbus/Order", object_builder().interface("org.mcbus.Order1").method("Tick", [pub](std::uint32_t i) {
          (void)pub->emit(reading("tick", i));
          return i;
        })));
  });
  pub_side.loop->keep(obj);
  auto log = subscribe(member, "type='signal',sender='" + sender + "'");
  ASSERT_TRUE(mcbus_test::wait_joined(*member.loop, pub_side.unique));
  const std::string big(40 * 1024, 'x');  // larger than a packet: goes over the bus
  constexpr int rounds = 200;
  int replies = 0;
  for (int i = 0; i < rounds; ++i) {
    member.loop->run([&, i](connection& c) {
      message m =
          message::method_call(bus_name::from_unchecked(sender), "/org/mcbus/Order", "org.mcbus.Order1", "Tick");
      m.append(static_cast<std::uint32_t>(i));
      return c.call_async(std::move(m), [&, log](call_result<message_view> r) {
        if (!r) return;
        ++replies;
        log->add(*r);  // replies join the same log, in the order they are handled
      });
    });
    pub_side.loop->run([&, i](connection&) {
      (void)pub->emit(reading("plain", i));
      if (i % 20 == 0) (void)pub->emit(reading(big, i));
      return 0;
    });
  }
  const std::size_t expected = rounds * 3 + rounds / 20;  // tick + plain + reply, and the big ones
  ASSERT_TRUE(member.loop->wait_for([&] { return replies == rounds && log->serials.size() >= expected; }))
      << replies << " replies, " << member.loop->run([&](connection&) { return log->serials.size(); }) << " of "
      << expected << " messages";
  member.loop->run([&](connection&) {
    EXPECT_EQ(log->serials.size(), expected);
    EXPECT_TRUE(log->increasing()) << "a message was handled after one with a higher serial";
    return 0;
  });
  EXPECT_EQ(pub_side.loop->run([&](connection&) { return pub->stats().unicast_fallbacks; }),
            static_cast<std::uint64_t>(rounds / 20));
  EXPECT_GE(pub_side.loop->run([&](connection&) { return pub->stats().markers; }),
            static_cast<std::uint64_t>(rounds + rounds / 20));  // a marker per reply and per fallback
}

// A member that stops reading is never dropped: once its socket is full, the publisher serves it
// over the bus (addressed to it, where the bus buffers as it does for any subscriber) until the
// socket drains. The others are not held up, and once it reads again it has every signal, once,
// in order. (Regression: such a member used to be dropped and lose half its signals.)
TEST_P(Delivery, ASlowMemberIsServedOverTheBusAndLosesNothing) {
  side pub_side, fast, slow;
  open_side(pub_side);
  open_side(fast);
  open_side(slow);
  const std::string sender = name("org.mcbus.Test.Quota");
  multicast::publisher* pub = make_publisher(pub_side, sender);
  ASSERT_NE(pub, nullptr);
  auto fast_log = subscribe(fast, "type='signal',sender='" + sender + "'");
  auto slow_log = subscribe(slow, "type='signal',sender='" + sender + "'");
  ASSERT_TRUE(mcbus_test::wait_joined(*slow.loop, pub_side.unique));
  ASSERT_TRUE(mcbus_test::wait_joined(*fast.loop, pub_side.unique));
  ASSERT_TRUE(pub_side.loop->wait_for([&] { return pub->member_count() == 2; }));
  std::vector<error> lost;
  slow.loop->run([&](connection& c) {
    c.on_multicast_lost([&](std::string_view, const error& e) { lost.push_back(e); });
    return 0;
  });
  slow.loop->pause(true);  // stops reading: its socket fills
  constexpr int n = 5000;
  constexpr int round = 50;
  for (int start = 0; start < n; start += round) {
    pub_side.loop->run([&](connection&) {
      for (int i = start; i < start + round; ++i) (void)pub->emit(reading("s", i, "Reading"));
      return 0;
    });
    ASSERT_TRUE(
        fast.loop->wait_for([&] { return fast_log->serials.size() >= static_cast<std::size_t>(start + round); }));
  }
  const auto stats = pub_side.loop->run([&](connection&) { return pub->stats(); });
  EXPECT_GT(stats.backpressure, 0u) << "the slow member's socket was never full";
  EXPECT_GT(stats.overflow_unicasts, 0u) << "nothing went over the bus for the slow member";
  EXPECT_EQ(pub_side.loop->run([&](connection&) { return pub->member_count(); }), 2u);
  slow.loop->pause(false);
  ASSERT_TRUE(slow.loop->wait_for([&] { return slow_log->serials.size() >= n; }))
      << slow.loop->run([&](connection&) { return slow_log->serials.size(); }) << " of " << n;
  for (auto* l : {&fast_log, &slow_log}) {
    EXPECT_EQ((*l)->serials.size(), static_cast<std::size_t>(n));
    EXPECT_TRUE((*l)->increasing());
  }
  EXPECT_EQ(fast_log->serials, slow_log->serials);
  EXPECT_TRUE(lost.empty());
  // And it is back on the group once it has caught up.
  const std::uint64_t before = packets(slow, pub_side.unique);
  pub_side.loop->run([&](connection&) { return pub->emit(reading("after", 1)); });
  ASSERT_TRUE(slow.loop->wait_for([&] { return slow_log->serials.size() == n + 1; }));
  EXPECT_GT(packets(slow, pub_side.unique), before);
}

// A publisher that flushes and then exits leaves nothing behind: connection::flush() also writes
// the packets in flight and the bus copies that wait behind them. Found by the 20-repetition soak
// (trial case 3): flush() returned while the publisher still held its last 182 bus copies; the
// destructors queued them, the bus lagged by seconds, and a plain subscriber never got them.
TEST_P(Delivery, FlushWritesWhatThePublisherHolds) {
  side pub_side, member, plain;
  open_side(pub_side);
  open_side(member);
  open_side(plain);
  const std::string sender = name("org.mcbus.Test.Flush");
  multicast::publisher* pub = make_publisher(pub_side, sender);
  ASSERT_NE(pub, nullptr);
  const std::string rule = "type='signal',sender='" + sender + "'";
  auto member_log = subscribe(member, rule);
  auto plain_log = subscribe(plain, rule, subscribe_via::bus);
  ASSERT_TRUE(mcbus_test::wait_joined(*member.loop, pub_side.unique));
  // The member stops reading, as a starved one does: its socket fills, and what the publisher
  // sends it goes over the bus in its stream.
  member.loop->pause(true);
  constexpr int n = 20000;
  for (int round = 0; round < 4; ++round) {
    const auto [flushed, held] = pub_side.loop->run([&](connection& c) {
      {
        multicast::publisher::batch burst(*pub);
        for (int i = 0; i < n / 4; ++i) (void)pub->emit(reading("f", i));
      }
      const error e = c.flush();
      return std::pair{e, pub->holds_output() || c.transport().has_pending_output()};
    });
    EXPECT_FALSE(flushed) << flushed.message();
    EXPECT_FALSE(held) << "round " << round << ": flush() returned with output still held";
  }
  EXPECT_GT(pub_side.loop->run([&](connection&) { return pub->stats().backpressure; }), 0u)
      << "the member's socket was never full";
  member.loop->pause(false);
  const auto all_arrive = [&](side& s, const std::shared_ptr<received_log>& log) {
    return s.loop->wait_for([&] { return log->serials.size() >= n; });
  };
  ASSERT_TRUE(all_arrive(member, member_log));
  ASSERT_TRUE(all_arrive(plain, plain_log));
  EXPECT_EQ(member_log->serials, plain_log->serials);
  EXPECT_TRUE(member_log->increasing());
}

// Under overflow_policy::drop a member that does not keep up loses packets, and is told exactly
// which, in order with the signals: it never sees a duplicate or an inversion.
TEST_P(Delivery, UnderTheDropPolicyAMemberIsToldExactlyWhatItMissed) {
  side pub_side, slow;
  open_side(pub_side);
  open_side(slow);
  const std::string sender = name("org.mcbus.Test.Drop");
  multicast::publisher_options opts;
  opts.policy = multicast::overflow_policy::drop;
  opts.bus_copy = false;
  multicast::publisher* pub = make_publisher(pub_side, sender, opts);
  ASSERT_NE(pub, nullptr);
  auto seen = std::make_shared<std::vector<std::uint32_t>>();
  auto gaps = std::make_shared<std::vector<std::array<std::uint32_t, 3>>>();
  std::shared_ptr<subscription> sub = slow.loop->run([&](connection& c) -> std::shared_ptr<subscription> {
    c.on_multicast_gap([gaps](std::string_view, std::uint32_t first, std::uint32_t last, std::uint32_t count) {
      gaps->push_back({first, last, count});
    });
    auto made = c.subscribe(
        "type='signal',sender='" + sender + "'", [seen](const message_view& m) { seen->push_back(m.serial()); },
        subscribe_via::multicast);
    return made ? std::make_shared<subscription>(std::move(*made)) : nullptr;
  });
  ASSERT_TRUE(sub);
  slow.loop->keep(sub);
  slow.loop->pause(true);
  constexpr int n = 3000;
  for (int start = 0; start < n; start += 50) {
    pub_side.loop->run([&](connection&) {
      for (int i = start; i < start + 50; ++i) (void)pub->emit(reading("s", i, "Reading"));
      return 0;
    });
  }
  const auto stats = pub_side.loop->run([&](connection&) { return pub->stats(); });
  ASSERT_GT(stats.lost, 0u) << "the member's socket never filled";
  EXPECT_EQ(stats.overflow_unicasts, 0u);
  slow.loop->pause(false);
  // Everything is accounted for: delivered, or reported in a gap.
  ASSERT_TRUE(slow.loop->wait_for([&] {
    std::uint64_t reported = 0;
    for (const auto& g : *gaps) reported += g[2];
    return seen->size() + reported >= static_cast<std::size_t>(n);
  })) << slow.loop->run([&](connection&) { return seen->size(); })
      << " delivered";
  slow.loop->run([&](connection&) {
    std::uint64_t reported = 0;
    for (const auto& g : *gaps) reported += g[2];
    EXPECT_EQ(seen->size() + reported, static_cast<std::size_t>(n));
    EXPECT_EQ(reported, stats.lost);
    EXPECT_TRUE(std::is_sorted(seen->begin(), seen->end()) &&
                std::adjacent_find(seen->begin(), seen->end()) == seen->end())
        << "a duplicate or an inversion";
    for (std::uint32_t s : *seen) {  // nothing delivered lies inside a reported gap
      for (const auto& g : *gaps) EXPECT_FALSE(s >= g[0] && s <= g[1]) << s;
    }
    return 0;
  });
}

// With the block policy, emit() waits for a member over its quota instead of dropping it, and
// turns the loop while it waits; once the member reads again, everything arrives, in order.
TEST_P(Delivery, TheBlockPolicyWaitsForASlowMember) {
  side pub_side, member;
  open_side(pub_side);
  open_side(member);
  auto prober = connect();
  ASSERT_TRUE(prober) << prober.error().message();
  const std::string sender = name("org.mcbus.Test.Block");
  multicast::publisher_options opts;
  opts.quota_messages = 32;
  opts.policy = multicast::overflow_policy::block;
  opts.block_timeout = std::chrono::seconds(60);  // far longer than the test looks for
  opts.bus_copy = false;
  multicast::publisher* pub = make_publisher(pub_side, sender, opts);
  ASSERT_NE(pub, nullptr);
  // A call can be answered while an emit() is under way only if that emit() turns the loop, so
  // the answer describes the publisher from inside the wait.
  int emitting = -1;  // the emit() under way; used on the publisher's loop only
  using probe_state = std::tuple<std::int32_t, std::uint64_t, std::uint64_t, std::uint64_t>;
  std::shared_ptr<object_handle> probe = pub_side.loop->run([&](connection& c) {
    return std::make_shared<object_handle>(
        c.add_object("/org/mcbus/Probe", object_builder().interface("org.mcbus.Probe1").method("State", [&] {
          return probe_state(emitting, pub->stats().backpressure, pub->stats().lost, pub->queued(member.unique));
        })));
  });
  pub_side.loop->keep(probe);
  auto ask = [&]() -> std::optional<probe_state> {
    auto r = prober->call(
        message::method_call(bus_name::from_unchecked(sender), "/org/mcbus/Probe", "org.mcbus.Probe1", "State"),
        std::chrono::seconds(5));
    if (!r) return std::nullopt;
    auto v = r->view().read<std::int32_t, std::uint64_t, std::uint64_t, std::uint64_t>();
    return v ? std::optional<probe_state>(*v) : std::nullopt;
  };
  auto log = subscribe(member, "type='signal',sender='" + sender + "'");
  ASSERT_TRUE(mcbus_test::wait_joined(*member.loop, pub_side.unique));
  member.loop->pause(true);
  member.loop->run([](connection&) { return 0; });  // the loop sees the pause before it turns again

  constexpr int n = 3000;  // far more than its socket and its quota hold
  std::atomic<bool> finished{false};
  std::future<error> emitted = std::async(std::launch::async, [&] {
    const error e = pub_side.loop->run([&](connection&) {
      error err;
      for (int i = 0; i < n && !err; ++i) {
        emitting = i;
        err = pub->emit(reading("b", i));
      }
      emitting = -1;
      return err;
    });
    finished = true;
    return e;
  });
  std::optional<probe_state> blocked;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!blocked && !finished && std::chrono::steady_clock::now() < deadline) {
    auto s = ask();
    if (s && std::get<0>(*s) >= 0) blocked = s;
  }
  const bool never_blocked = !blocked;
  if (never_blocked) member.loop->pause(false);  // whatever went wrong, let emit() finish
  ASSERT_FALSE(never_blocked) << "emit() never waited inside its loop (it finished: " << finished.load() << ")";
  const auto [at, backpressure, dropped, queued] = *blocked;
  EXPECT_GE(at, static_cast<int>(opts.quota_messages));
  EXPECT_GT(backpressure, 0u) << "the member's socket was never found full";
  EXPECT_EQ(dropped, 0u);
  EXPECT_GT(queued, opts.quota_messages);
  // While the member reads nothing, the same emit() is still waiting.
  const std::optional<probe_state> again = ask();
  member.loop->pause(false);
  ASSERT_TRUE(again);
  EXPECT_EQ(std::get<0>(*again), at);
  EXPECT_FALSE(finished.load());

  ASSERT_EQ(emitted.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  const error e = emitted.get();
  ASSERT_FALSE(e) << e.message();
  ASSERT_TRUE(member.loop->wait_for([&] { return log->serials.size() == n; }))
      << member.loop->run([&](connection&) { return log->serials.size(); }) << " of " << n;
  EXPECT_EQ(pub_side.loop->run([&](connection&) { return pub->stats().lost; }), 0u);
  member.loop->run([&](connection&) {
    EXPECT_TRUE(log->increasing());
    for (int i = 0; i < n; ++i) EXPECT_EQ(log->args[static_cast<std::size_t>(i)], "b") << i;
    return 0;
  });
}

// The block policy's wait is bounded: once block_timeout has passed for a member that never
// reads, emit() returns and that member is served over the bus instead; it stays a member, and
// nothing meant for it is lost.
TEST_P(Delivery, TheBlockPolicyServesAMemberThatNeverReadsOverTheBusAfterTheTimeout) {
  side pub_side;
  open_side(pub_side);
  const std::string sender = name("org.mcbus.Test.BlockTimeout");
  multicast::publisher_options opts;
  opts.quota_messages = 32;
  opts.policy = multicast::overflow_policy::block;
  opts.block_timeout = std::chrono::milliseconds(500);
  opts.bus_copy = false;
  multicast::publisher* pub = make_publisher(pub_side, sender, opts);
  ASSERT_NE(pub, nullptr);
  // The member joins by hand and never reads its socket; its bus connection it does read.
  auto hand = connect();
  ASSERT_TRUE(hand) << hand.error().message();
  std::size_t over_bus = 0;
  hand->set_filter([&](const message_view& m) {
    if (m.type() == message_type::signal && m.header().sender == pub_side.unique && m.header().member == "Reading") {
      ++over_bus;
    }
    return false;
  });
  auto joined = mcbus_test::join_by_hand(*hand, sender, {"type='signal',sender='" + sender + "'"});
  ASSERT_TRUE(joined) << joined.error().message();
  ASSERT_EQ(pub_side.loop->run([&](connection&) { return pub->member_count(); }), 1u);

  struct outcome {
    error e;
    int returned = 0;
    std::chrono::steady_clock::duration longest{};
    multicast::publisher_stats stats;
    std::size_t members = 0;
  };
  constexpr int n = 3000;  // far more than its socket and its quota hold
  std::future<outcome> emitted = std::async(std::launch::async, [&] {
    return pub_side.loop->run([&](connection&) {
      outcome o;
      for (int i = 0; i < n && !o.e; ++i) {
        const auto start = std::chrono::steady_clock::now();
        o.e = pub->emit(reading("t", i));
        o.longest = std::max(o.longest, std::chrono::steady_clock::now() - start);
        if (!o.e) ++o.returned;
      }
      o.stats = pub->stats();
      o.members = pub->member_count();
      return o;
    });
  });
  if (emitted.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
    joined->socket.reset();  // a closed end fails the publisher's sends, which ends any wait
    emitted.wait();
    FAIL() << "emit() still waited after 60 s for a member that never reads; block_timeout is "
           << opts.block_timeout.count() << " ms";
  }
  const outcome o = emitted.get();
  ASSERT_FALSE(o.e) << o.e.message();
  EXPECT_EQ(o.returned, n);
  EXPECT_GE(std::chrono::duration_cast<std::chrono::milliseconds>(o.longest).count(), opts.block_timeout.count())
      << "no emit() waited for the member";
  EXPECT_GT(o.stats.backpressure, 0u);
  EXPECT_GT(o.stats.overflow_unicasts, 0u);
  EXPECT_EQ(o.stats.lost, 0u);
  EXPECT_EQ(o.members, 1u);
  // What did not fit in its socket came over the bus, addressed to it: together, everything.
  const int fd = joined->socket.get();
  std::array<std::byte, 65536> buf{};
  std::size_t in_socket = 0;
  while (::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT) > 0) ++in_socket;
  EXPECT_GT(in_socket, 0u);
  ASSERT_FALSE(
      hand->run_until([&] { return over_bus + in_socket >= static_cast<std::size_t>(n); }, std::chrono::seconds(20)))
      << over_bus << " over the bus and " << in_socket << " packets of " << n;
}

// A publisher that restarts under the same name is joined again.
TEST_P(Delivery, ARestartedPublisherIsJoinedAgain) {
  side member;
  open_side(member);
  const std::string sender = name("org.mcbus.Test.Restart");
  std::shared_ptr<received_log> log;
  {
    side first;
    open_side(first);
    multicast::publisher* p1 = make_publisher(first, sender);
    ASSERT_NE(p1, nullptr);
    log = subscribe(member, "type='signal',sender='" + sender + "'");
    EXPECT_TRUE(mcbus_test::wait_joined(*member.loop, first.unique));
    first.loop->run([&](connection&) { return p1->emit(reading("one", 1)); });
    ASSERT_TRUE(member.loop->wait_for([&] { return log->serials.size() == 1; }));
  }  // the first publisher exits
  ASSERT_TRUE(name_freed(member, sender)) << sender << " is still owned";
  side second;
  open_side(second);
  multicast::publisher* p2 = make_publisher(second, sender);
  ASSERT_NE(p2, nullptr);
  bool joined = false;
  const auto join_by = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!joined && std::chrono::steady_clock::now() < join_by)
    joined = packets(member, second.unique) != ~std::uint64_t{0};
  ASSERT_TRUE(joined) << "the member did not join the restarted publisher";
  ASSERT_TRUE(second.loop->wait_for([&] { return p2->member_count() == 1; }));
  second.loop->run([&](connection&) { return p2->emit(reading("two", 2)); });
  ASSERT_TRUE(member.loop->wait_for([&] { return log->serials.size() == 2; }));
  EXPECT_EQ(packets(member, second.unique), 1u);
}

// The successor window (docs/multicast-protocol.md): a member stopped while its publisher dies
// and another process takes the name had its rule off the bus (the group served it), so the new
// owner's first signals passed it by. The new owner replays them when the member joins it, and
// the member ends with exactly what a plain bus subscriber got, in order.
TEST_P(Delivery, AMemberStoppedAcrossAnOwnerChangeGetsTheNewOwnersFirstSignals) {
  side member, control;
  open_side(member);
  open_side(control);
  const std::string sender = name("org.mcbus.Test.Successor");
  const std::string rule = "type='signal',sender='" + sender + "'";
  std::shared_ptr<received_log> got, want;
  {
    side first;
    open_side(first);
    multicast::publisher* p1 = make_publisher(first, sender);
    ASSERT_NE(p1, nullptr);
    got = subscribe(member, rule);
    want = subscribe(control, rule, subscribe_via::bus);
    ASSERT_TRUE(mcbus_test::wait_joined(*member.loop, first.unique));
    first.loop->run([&](connection&) { return p1->emit(reading("first", 0)); });
    ASSERT_TRUE(member.loop->wait_for([&] { return got->args.size() == 1; }));
    member.loop->pause(true);  // stopped: it reads nothing until the new owner has emitted
  }                            // the first publisher exits
  ASSERT_TRUE(name_freed(control, sender)) << sender << " is still owned";
  side second;
  open_side(second);
  multicast::publisher* p2 = make_publisher(second, sender);
  ASSERT_NE(p2, nullptr);
  constexpr int count = 50;
  second.loop->run([&](connection&) {
    for (int i = 1; i <= count; ++i) (void)p2->emit(reading("second", i));
    return 0;
  });
  ASSERT_TRUE(control.loop->wait_for([&] { return want->args.size() == 1 + count; }));
  member.loop->pause(false);
  // It joins the new owner, is replayed to, and catches up; then one more signal from the group.
  ASSERT_TRUE(second.loop->wait_for([&] { return p2->member_count() == 1; }));
  second.loop->run([&](connection&) { return p2->emit(reading("second", count + 1)); });
  ASSERT_TRUE(control.loop->wait_for([&] { return want->args.size() == 2 + count; }));
  member.loop->wait_for([&] { return got->args.size() >= 2 + count; }, std::chrono::seconds(10));
  const auto seen = [](looper& l, const std::shared_ptr<received_log>& log) {
    return l.run([&](connection&) { return std::make_pair(log->args, log->serials); });
  };
  EXPECT_EQ(seen(*member.loop, got), seen(*control.loop, want));
  EXPECT_GE(second.loop->run([&](connection&) { return p2->stats().replayed; }), std::uint64_t{count});
}

std::string slurp(const std::string& file) {
  std::ifstream in(file);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The serials (cookies) of the Reading signals in `busctl --json=short monitor` output whose first
// argument is `arg0`, in the order busctl printed them.
std::vector<std::uint32_t> busctl_cookies(const std::string& text, const std::string& arg0) {
  std::vector<std::uint32_t> out;
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t eol = text.find('\n', at);
    if (eol == std::string::npos) break;  // a line still being written
    const std::string_view line(text.data() + at, eol - at);
    at = eol + 1;
    if (line.find("\"member\":\"Reading\"") == std::string_view::npos) continue;
    if (line.find("\"data\":[\"" + arg0 + "\"") == std::string_view::npos) continue;
    const std::size_t c = line.find("\"cookie\":");
    if (c == std::string_view::npos) continue;
    out.push_back(static_cast<std::uint32_t>(std::strtoul(line.data() + c + 9, nullptr, 10)));
  }
  return out;
}

// Clients that did not join (here gdbus and busctl, through the bus) still get every signal: the
// publisher's bus copy.
TEST_P(Delivery, BusClientsStillGetEverySignal) {
  if (::access("/usr/bin/gdbus", X_OK) != 0) GTEST_SKIP() << "gdbus is not installed (libglib2.0-bin)";
  if (::access("/usr/bin/busctl", X_OK) != 0) GTEST_SKIP() << "busctl is not installed (systemd)";
  side pub_side, member;
  open_side(pub_side);
  open_side(member);
  const std::string sender = name("org.mcbus.Test.BusCopy");
  multicast::publisher* pub = make_publisher(pub_side, sender);
  ASSERT_NE(pub, nullptr);
  auto log = subscribe(member, "type='signal',sender='" + sender + "'");
  // subscribe() joins in the background; until it has, signals reach the member by the bus.
  ASSERT_TRUE(mcbus_test::wait_joined(*member.loop, pub_side.unique));
  // Both monitors print one entry per signal and run until killed. busctl monitors through
  // BecomeMonitor, which a bus grants to root or to the bus's own user.
  const std::string tag = std::to_string(::getpid());
  const std::string gdbus_out = "/tmp/mcbus-gdbus-" + tag + ".txt";
  const std::string busctl_out = "/tmp/mcbus-busctl-" + tag + ".txt";
  const pid_t gdbus =
      mcbus_test::spawn({"/usr/bin/gdbus", "monitor", "--address", bus_->address(), "--dest", sender}, gdbus_out);
  ASSERT_GT(gdbus, 0);
  const pid_t busctl =
      mcbus_test::spawn({"/usr/bin/busctl", "--address=" + bus_->address(), "--json=short", "monitor",
                         "--match=type='signal',sender='" + sender + "',interface='org.mcbus.Sensor1'"},
                        busctl_out);
  ASSERT_GT(busctl, 0);
  auto stop = [](pid_t pid) {
    ::kill(pid, SIGTERM);
    ::waitpid(pid, nullptr, 0);
  };
  auto gdbus_count = [&](std::string_view what) {
    const std::string text = slurp(gdbus_out);
    std::size_t n = 0;
    for (std::size_t at = 0; (at = text.find(what, at)) != std::string::npos; ++at) ++n;
    return n;
  };
  // Both subscribe asynchronously: probe until each has printed a signal. A monitor that exits
  // early was refused (or broken): what it printed says why.
  std::size_t probes = 0;
  bool busctl_exited = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while ((gdbus_count("Reading ('probe'") == 0 || busctl_cookies(slurp(busctl_out), "probe").empty()) &&
         std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(busctl, nullptr, WNOHANG) == busctl) {
      busctl_exited = true;
      break;
    }
    pub_side.loop->run([&](connection&) { return pub->emit(reading("probe", 0)); });
    ++probes;
    ASSERT_TRUE(member.loop->wait_for([&] { return log->serials.size() == probes; }));
  }
  if (busctl_exited) {
    stop(gdbus);
    const std::string why = slurp(busctl_out);
    std::remove(gdbus_out.c_str());
    std::remove(busctl_out.c_str());
    if (why.find("ccess denied") != std::string::npos || why.find("ermission") != std::string::npos) {
      GTEST_SKIP() << "the bus refuses busctl's BecomeMonitor: " << why;
    }
    FAIL() << "busctl monitor exited: " << why;
  }
  ASSERT_GT(gdbus_count("Reading ('probe'"), 0u) << "gdbus monitor never printed a signal";
  ASSERT_FALSE(busctl_cookies(slurp(busctl_out), "probe").empty()) << "busctl monitor never printed a signal";

  constexpr int n = 50;
  pub_side.loop->run([&](connection&) {
    for (int i = 0; i < n; ++i) (void)pub->emit(reading("g", i));
    return 0;
  });
  ASSERT_TRUE(member.loop->wait_for([&] { return log->serials.size() == probes + n; }));
  // The member's serials of the n signals: the bus copies carry the same ones.
  const std::vector<std::uint32_t> emitted = member.loop->run(
      [&](connection&) { return std::vector<std::uint32_t>(log->serials.end() - n, log->serials.end()); });
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while ((gdbus_count("Reading ('g'") < n || busctl_cookies(slurp(busctl_out), "g").size() < n) &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // waiting on other processes' output
  }
  stop(gdbus);
  stop(busctl);
  EXPECT_EQ(gdbus_count("Reading ('g'"), static_cast<std::size_t>(n));  // every signal, once
  EXPECT_EQ(busctl_cookies(slurp(busctl_out), "g"), emitted);           // every signal, once, in order
  EXPECT_EQ(packets(member, pub_side.unique), probes + n);              // the member got them from the group
  std::remove(gdbus_out.c_str());
  std::remove(busctl_out.c_str());
}

}  // namespace
