// Reliability and order: slow members, quotas and drops, publisher restarts, the serial order
// across the group and the bus, and ordinary bus clients that did not join.
#include <mcbus/multicast.hpp>

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
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
  ASSERT_NE(packets(member, pub_side.unique), ~std::uint64_t{0});
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

// A member that does not read is dropped with a Dropped signal once over its quota, and its
// subscription carries on over the bus (here without the re-join that follows by default); the
// others get everything.
TEST_P(Delivery, ASlowMemberIsDroppedExplicitlyAndFallsBackToTheBus) {
  side pub_side, fast, slow;
  open_side(pub_side);
  open_side(fast);
  connection_options no_rejoin = options();
  no_rejoin.multicast_rejoin_after_drop = false;
  open_side(slow, no_rejoin);
  const std::string sender = name("org.mcbus.Test.Quota");
  multicast::publisher_options opts;
  opts.quota_messages = 64;
  opts.over_quota_grace = std::chrono::milliseconds(0);
  multicast::publisher* pub = make_publisher(pub_side, sender, opts);
  ASSERT_NE(pub, nullptr);
  auto fast_log = subscribe(fast, "type='signal',sender='" + sender + "'");
  auto slow_log = subscribe(slow, "type='signal',sender='" + sender + "'");
  std::optional<error> lost;
  slow.loop->run([&](connection& c) {
    c.on_multicast_lost([&](std::string_view, const error& e) { lost = e; });
    return 0;
  });
  slow.loop->pause(true);  // stops reading: its socket fills, then its queue
  // The publisher emits in rounds that the live member keeps up with; the paused one cannot.
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
  ASSERT_TRUE(pub_side.loop->wait_for([&] { return pub->stats().dropped_members == 1; }))
      << "backpressure " << pub_side.loop->run([&](connection&) { return pub->stats().backpressure; }) << ", queued "
      << pub_side.loop->run([&](connection&) { return pub->queued(slow.unique); }) << ", packets "
      << pub_side.loop->run([&](connection&) { return pub->stats().packets; });
  EXPECT_EQ(pub_side.loop->run([&](connection&) { return pub->member_count(); }), 1u);
  ASSERT_TRUE(fast.loop->wait_for([&] { return fast_log->serials.size() == n; }));
  fast.loop->run([&](connection&) {
    EXPECT_TRUE(fast_log->increasing());
    return 0;
  });
  slow.loop->pause(false);
  ASSERT_TRUE(slow.loop->wait_for([&] { return lost.has_value(); }));
  EXPECT_EQ(lost->code(), errc::dropped) << lost->message();
  const std::size_t before = slow.loop->run([&](connection&) { return slow_log->serials.size(); });
  EXPECT_LT(before, static_cast<std::size_t>(n));
  EXPECT_GT(before, 0u);
  // From now on it is served by the bus (the publisher's bus copy).
  pub_side.loop->run([&](connection&) { return pub->emit(reading("after", 1)); });
  ASSERT_TRUE(slow.loop->wait_for([&] { return slow_log->serials.size() == before + 1; }));
  // The Dropped signal (which its rule matches) came in sequence with the packets and the copy.
  EXPECT_TRUE(slow.loop->run([&](connection&) { return slow_log->increasing(); }));
  EXPECT_EQ(packets(slow, pub_side.unique), ~std::uint64_t{0});
}

// Without bus copies, the bus cannot serve a dropped member: it joins again, is told of the drop,
// and gets what is emitted after the re-join through the group, in order.
TEST_P(Delivery, ADroppedMemberRejoinsAPublisherWithoutBusCopies) {
  side pub_side, slow;
  open_side(pub_side);
  open_side(slow);
  const std::string sender = name("org.mcbus.Test.Rejoin");
  multicast::publisher_options opts;
  opts.quota_messages = 64;
  opts.over_quota_grace = std::chrono::milliseconds(0);
  opts.bus_copy = false;
  multicast::publisher* pub = make_publisher(pub_side, sender, opts);
  ASSERT_NE(pub, nullptr);
  auto log = subscribe(slow, "type='signal',sender='" + sender + "'");
  std::vector<error> lost;
  slow.loop->run([&](connection& c) {
    c.on_multicast_lost([&](std::string_view, const error& e) { lost.push_back(e); });
    return 0;
  });
  slow.loop->pause(true);
  for (int start = 0; start < 5000; start += 50) {
    pub_side.loop->run([&](connection&) {
      for (int i = start; i < start + 50; ++i) (void)pub->emit(reading("s", i, "Reading"));
      return 0;
    });
    if (pub_side.loop->run([&](connection&) { return pub->stats().dropped_members; }) == 1) break;
  }
  ASSERT_TRUE(pub_side.loop->wait_for([&] { return pub->stats().dropped_members == 1; }));
  slow.loop->pause(false);
  ASSERT_TRUE(slow.loop->wait_for([&] { return !lost.empty(); }));
  ASSERT_TRUE(pub_side.loop->wait_for([&] { return pub->member_count() == 1; })) << "no re-join";
  const std::size_t before = slow.loop->run([&](connection&) { return log->serials.size(); });
  pub_side.loop->run([&](connection&) {
    for (int i = 0; i < 10; ++i) (void)pub->emit(reading("after", i));
    return 0;
  });
  ASSERT_TRUE(slow.loop->wait_for([&] { return log->serials.size() == before + 10; }))
      << slow.loop->run([&](connection&) { return log->serials.size(); }) - before << " of 10 after the re-join";
  slow.loop->run([&](connection&) {
    std::string seen;  // serial:member of each message handled, to show where the order broke
    for (std::size_t i = 0; i < log->serials.size(); ++i) {
      seen += std::to_string(log->serials[i]) + ":" + log->members[i] + " ";
    }
    EXPECT_TRUE(log->increasing()) << seen;
    const error& first = lost.front();
    EXPECT_TRUE(first.code() == errc::dropped || first.code() == errc::disconnected) << first.message();
    return 0;
  });
  EXPECT_EQ(packets(slow, pub_side.unique), 10u);
}

// With the block policy, emit() waits for a slow member instead of dropping it (within bounds).
TEST_P(Delivery, TheBlockPolicyWaitsForASlowMember) {
  side pub_side, member;
  open_side(pub_side);
  open_side(member);
  const std::string sender = name("org.mcbus.Test.Block");
  multicast::publisher_options opts;
  opts.quota_messages = 32;
  opts.policy = multicast::overflow_policy::block;
  opts.block_timeout = std::chrono::seconds(20);
  opts.bus_copy = false;
  multicast::publisher* pub = make_publisher(pub_side, sender, opts);
  ASSERT_NE(pub, nullptr);
  auto log = subscribe(member, "type='signal',sender='" + sender + "'");
  constexpr int n = 3000;
  const error e = pub_side.loop->run([&](connection&) {
    for (int i = 0; i < n; ++i) {
      if (error err = pub->emit(reading("b", i))) return err;
    }
    return error();
  });
  ASSERT_FALSE(e) << e.message();
  ASSERT_TRUE(member.loop->wait_for([&] { return log->serials.size() == n; }));
  EXPECT_EQ(pub_side.loop->run([&](connection&) { return pub->stats().dropped_members; }), 0u);
  member.loop->run([&](connection&) {
    EXPECT_TRUE(log->increasing());
    return 0;
  });
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
    EXPECT_NE(packets(member, first.unique), ~std::uint64_t{0});
    first.loop->run([&](connection&) { return p1->emit(reading("one", 1)); });
    ASSERT_TRUE(member.loop->wait_for([&] { return log->serials.size() == 1; }));
  }  // the first publisher exits
  // Its name is free once the bus has noticed.
  const auto freed_by = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  bool freed = false;
  while (!freed && std::chrono::steady_clock::now() < freed_by) {
    freed = member.loop->run(
        [&](connection& c) { return !c.get_name_owner(bus_name::from_unchecked(sender)).has_value(); });
  }
  ASSERT_TRUE(freed) << sender << " is still owned";
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

// Clients that did not join (here python3-dbus and gdbus, through the bus) still get every
// signal: the publisher's bus copy.
TEST_P(Delivery, BusClientsStillGetEverySignal) {
  if (::access("/usr/bin/gdbus", X_OK) != 0) GTEST_SKIP() << "gdbus is not installed (libglib2.0-bin)";
  side pub_side, member;
  open_side(pub_side);
  open_side(member);
  const std::string sender = name("org.mcbus.Test.BusCopy");
  multicast::publisher* pub = make_publisher(pub_side, sender);
  ASSERT_NE(pub, nullptr);
  auto log = subscribe(member, "type='signal',sender='" + sender + "'");
  // gdbus monitor prints one line per signal; it runs until killed.
  const std::string out = "/tmp/mcbus-gdbus-" + std::to_string(::getpid()) + ".txt";
  const pid_t mon =
      mcbus_test::spawn({"/usr/bin/gdbus", "monitor", "--address", bus_->address(), "--dest", sender}, out);
  ASSERT_GT(mon, 0);
  // gdbus subscribes asynchronously: wait until the bus reports its match (a signal it prints).
  auto lines = [&] {
    std::ifstream in(out);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::size_t n = 0;
    for (std::size_t at = 0; (at = text.find("org.mcbus.Sensor1.Reading", at)) != std::string::npos; ++at) ++n;
    return n;
  };
  std::size_t probes = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (lines() == 0 && std::chrono::steady_clock::now() < deadline) {
    pub_side.loop->run([&](connection&) { return pub->emit(reading("probe", 0)); });
    ++probes;
    ASSERT_TRUE(member.loop->wait_for([&] { return log->serials.size() == probes; }));
  }
  const std::size_t seen_before = lines();
  ASSERT_GT(seen_before, 0u) << "gdbus monitor never printed a signal";
  constexpr int n = 50;
  pub_side.loop->run([&](connection&) {
    for (int i = 0; i < n; ++i) (void)pub->emit(reading("g", i));
    return 0;
  });
  ASSERT_TRUE(member.loop->wait_for([&] { return log->serials.size() == probes + n; }));
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (lines() < seen_before + n && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // waiting on another process's output
  }
  ::kill(mon, SIGTERM);
  ::waitpid(mon, nullptr, 0);
  EXPECT_EQ(lines(), seen_before + n);                      // every signal after gdbus had subscribed, once
  EXPECT_EQ(packets(member, pub_side.unique), probes + n);  // the member got them from the group
  std::remove(out.c_str());
}

}  // namespace
