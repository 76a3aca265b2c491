// The multicast fast path: who gets what, the locked filter, admission, and members that leave.
#include <mcbus/multicast.hpp>

#include <gtest/gtest.h>
#include <linux/filter.h>
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <filesystem>
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

class Multicast : public bus_test {
 protected:
  using publisher_side = mcbus_test::publisher_side;
  void start_publisher(publisher_side& p, const std::string& name, multicast::publisher_options opts = {}) {
    mcbus_test::start_publisher(p, connect(), name, std::move(opts));
  }

  // A subscriber with one rule, running in its own loop.
  struct subscriber_side {
    std::unique_ptr<looper> loop;
    std::shared_ptr<received_log> log = std::make_shared<received_log>();
    std::string unique;
  };

  void start_subscriber(subscriber_side& s, const std::string& rule, subscribe_via via = subscribe_via::automatic) {
    auto c = connect();
    ASSERT_TRUE(c) << c.error().message();
    s.unique = c->unique_name();
    s.loop = std::make_unique<looper>(std::move(*c));
    ASSERT_EQ(mcbus_test::subscribe_logging(*s.loop, rule, s.log, via), "");
  }

  static std::size_t received(subscriber_side& s) {
    return s.loop->run([&](connection&) { return s.log->serials.size(); });
  }
  static std::uint64_t packets(subscriber_side& s, const std::string& publisher) {
    return mcbus_test::group_packets(*s.loop, publisher);
  }

  std::string name(std::string_view base) const {
    return std::string(base) + "." + mcbus_test::param_name({GetParam(), 0});
  }

  // The D-Bus error name a Join with these rules gets, "" when it is answered with a socket.
  std::string join_error(const std::string& publisher, const std::vector<std::string>& rules,
                         std::string* text = nullptr) {
    auto hand = connect();
    EXPECT_TRUE(hand) << hand.error().message();
    if (!hand) return "no connection";
    auto joined = mcbus_test::join_by_hand(*hand, publisher, rules);
    if (joined) return "";
    if (text) *text = joined.error().message();
    return joined.error().name();
  }
};
MCBUS_ALL_BUSES_AND_TRANSPORTS(Multicast);

TEST_P(Multicast, EachMemberGetsExactlyItsMatchesInOrder) {
  publisher_side p;
  start_publisher(p, name("org.mcbus.Test.Fanout"));
  const std::string sender = name("org.mcbus.Test.Fanout");
  subscriber_side a, b, none, iface, other_iface;
  start_subscriber(a, "type='signal',sender='" + sender + "',member='Reading',arg0='a'");
  start_subscriber(b, "type='signal',sender='" + sender + "',member='Other'");
  start_subscriber(none, "type='signal',sender='" + sender + "',arg0='nobody-sends-this'");
  // Rules filed under their interface in the routing index.
  start_subscriber(iface, "type='signal',sender='" + sender + "',interface='org.mcbus.Sensor1'");
  start_subscriber(other_iface, "type='signal',sender='" + sender + "',interface='org.mcbus.Nothing1'");
  ASSERT_TRUE(p.loop->wait_for([&] { return p.pub->member_count() == 5u; }));

  constexpr int n = 300;
  const error e = p.loop->run([&](connection&) {
    for (int i = 0; i < n; ++i) {
      if (error err = p.pub->emit(reading(i % 2 ? "a" : "b", i))) return err;
      if (i % 10 == 0) {
        if (error err = p.pub->emit(reading("x", i, "Other"))) return err;
      }
    }
    return error();
  });
  ASSERT_FALSE(e) << e.message();
  ASSERT_TRUE(a.loop->wait_for([&] { return a.log->serials.size() >= n / 2; }));
  ASSERT_TRUE(b.loop->wait_for([&] { return b.log->serials.size() >= n / 10; }));
  ASSERT_TRUE(iface.loop->wait_for([&] { return iface.log->serials.size() >= n + n / 10; }));
  // Everything sent has been written to the sockets: a short turn of the loops settles it.
  ASSERT_TRUE(p.loop->wait_for([&] { return p.pub->queued(a.unique) == 0 && p.pub->queued(none.unique) == 0; }));
  ASSERT_TRUE(a.loop->wait_for([&] { return true; }));

  EXPECT_EQ(received(a), static_cast<std::size_t>(n / 2));
  EXPECT_EQ(received(b), static_cast<std::size_t>(n / 10));
  EXPECT_EQ(received(none), 0u);
  EXPECT_EQ(received(iface), static_cast<std::size_t>(n + n / 10));
  EXPECT_EQ(received(other_iface), 0u);
  a.loop->run([&](connection&) {
    EXPECT_TRUE(a.log->increasing());
    for (const std::string& s : a.log->args) EXPECT_EQ(s, "a");
    return 0;
  });
  // They came through the group, not the bus, and the member whose rule matches nothing was
  // never sent a single packet: counted on its socket.
  EXPECT_EQ(packets(a, p.unique), static_cast<std::uint64_t>(n / 2));
  EXPECT_EQ(packets(b, p.unique), static_cast<std::uint64_t>(n / 10));
  EXPECT_EQ(packets(none, p.unique), 0u);
  // The interface member takes every signal, more than its socket may hold at once: the rest
  // come over the bus (overflow), so only "some by packet" is certain.
  EXPECT_GT(packets(iface, p.unique), 0u);
  EXPECT_EQ(packets(other_iface, p.unique), 0u);
}

// The packet count above is the library's own. Here a connection joins by hand and the test reads
// the socket itself: signals its rule does not match leave nothing on it, and the one that matches,
// sent after them on the same ordered stream, is the only packet there.
TEST_P(Multicast, ANonMatchingSignalLeavesNothingOnTheMembersOwnSocket) {
  publisher_side p;
  const std::string sender = name("org.mcbus.Test.Socket");
  start_publisher(p, sender);
  auto hand = connect();
  ASSERT_TRUE(hand) << hand.error().message();
  const std::string hand_name = hand->unique_name();
  auto joined = mcbus_test::join_by_hand(
      *hand, sender, {"type='signal',sender='" + sender + "',interface='org.mcbus.Sensor1',member='Alarm'"});
  ASSERT_TRUE(joined) << joined.error().message();
  ASSERT_TRUE(joined->socket);
  EXPECT_EQ(joined->version, 1u);
  ASSERT_GT(joined->max_packet, 0u);
  const int fd = joined->socket.get();
  ASSERT_EQ(p.loop->run([&](connection&) { return p.pub->member_names(); }), std::vector<std::string>{hand_name});

  // Every key of the rule but one can be right and the signal still does not match.
  constexpr int misses = 100;
  ASSERT_FALSE(p.loop->run([&](connection&) {
    for (int i = 0; i < misses; ++i) {
      message m = i % 2
                      ? reading("miss", i)
                      : message::signal("/org/mcbus/Sensor", "org.mcbus.Other1", member_name::from_unchecked("Alarm"));
      if (error e = p.pub->emit(std::move(m))) return e;
    }
    return error();
  }));
  ASSERT_TRUE(p.loop->wait_for([&] { return p.pub->queued(hand_name) == 0; }));
  EXPECT_EQ(mcbus_test::bytes_queued(fd), 0);
  std::array<std::byte, 65536> buf{};
  EXPECT_EQ(::recv(fd, buf.data(), buf.size(), MSG_PEEK | MSG_DONTWAIT), -1);
  EXPECT_EQ(errno, EAGAIN);

  // The control: a signal that matches does reach this very socket.
  ASSERT_FALSE(p.loop->run([&](connection&) { return p.pub->emit(reading("control", 1, "Alarm")); }));
  pollfd pfd{fd, POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 20000), 1) << "the matching signal never arrived";
  const int queued = mcbus_test::bytes_queued(fd);
  const ssize_t peeked = ::recv(fd, buf.data(), buf.size(), MSG_PEEK | MSG_DONTWAIT);
  ASSERT_GT(peeked, 0);
  EXPECT_EQ(queued, peeked) << "more than one packet is waiting";
  ASSERT_EQ(::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT), peeked);
  auto got = message_view::parse(std::span<const std::byte>(buf.data(), static_cast<std::size_t>(peeked)));
  ASSERT_TRUE(got) << got.error().message();
  EXPECT_EQ(got->header().member, "Alarm");
  EXPECT_EQ(got->header().sender, p.unique);
  auto arg0 = got->read_first<std::string>();
  ASSERT_TRUE(arg0);
  EXPECT_EQ(*arg0, "control");
  EXPECT_EQ(::recv(fd, buf.data(), buf.size(), MSG_PEEK | MSG_DONTWAIT), -1);
  EXPECT_EQ(errno, EAGAIN);
  EXPECT_EQ(mcbus_test::bytes_queued(fd), 0);
}

TEST_P(Multicast, TheFilterIsLockedOnTheMembersSocket) {
  publisher_side p;
  const std::string sender = name("org.mcbus.Test.Lock");
  start_publisher(p, sender);
  subscriber_side s;
  start_subscriber(s, "type='signal',sender='" + sender + "',member='Reading'");
  ASSERT_TRUE(mcbus_test::wait_joined(*s.loop, p.unique));
  const int fd = s.loop->run([&](connection& c) { return c.multicast_socket(p.unique); });
  ASSERT_GE(fd, 0);
  const int ignored = 0;
  EXPECT_NE(::setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &ignored, sizeof(ignored)), 0);
  EXPECT_EQ(errno, EPERM);
  sock_filter accept_all[] = {{BPF_RET | BPF_K, 0, 0, 0xffffffff}};
  sock_fprog prog{1, accept_all};
  EXPECT_NE(::setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)), 0);
  EXPECT_EQ(errno, EPERM);
  const int zero = 0;
  EXPECT_NE(::setsockopt(fd, SOL_SOCKET, SO_LOCK_FILTER, &zero, sizeof(zero)), 0);
}

TEST_P(Multicast, AdmissionCanDenyAndRestrict) {
  publisher_side p;
  const std::string sender = name("org.mcbus.Test.Admission");
  multicast::publisher_options opts;
  std::string deny_name;
  opts.admit = [&deny_name](const multicast::credentials& c) {
    if (c.unique_name == deny_name) return multicast::admission::deny("not this one");
    return multicast::admission::restrict_to({"arg0='allowed'"});
  };
  start_publisher(p, sender, opts);
  subscriber_side restricted, denied;
  start_subscriber(restricted, "type='signal',sender='" + sender + "',member='Reading'");
  {
    auto c = connect();
    ASSERT_TRUE(c);
    p.loop->run([&](connection&) {
      deny_name = c->unique_name();
      return 0;
    });
    denied.unique = c->unique_name();
    denied.loop = std::make_unique<looper>(std::move(*c));
    auto log = denied.log;
    std::shared_ptr<subscription> kept;
    ASSERT_TRUE(denied.loop->run([&](connection& conn) {
      auto sub = conn.subscribe("type='signal',sender='" + sender + "',member='Reading'",
                                [log](const message_view& m) { log->add(m); });
      if (sub) kept = std::make_shared<subscription>(std::move(*sub));
      return static_cast<bool>(sub);
    }));
    denied.loop->keep(std::move(kept));
  }
  // The joins go on in the background: the denial, and the restricted member's place in the group.
  ASSERT_TRUE(p.loop->wait_for([&] { return p.pub->stats().denied == 1u; }));
  ASSERT_TRUE(mcbus_test::wait_joined(*restricted.loop, p.unique));
  ASSERT_FALSE(p.loop->run([&](connection&) {
    for (const char* who : {"allowed", "other", "allowed"}) {
      if (error e = p.pub->emit(reading(who, 1))) return e;
    }
    return error();
  }));
  // Restricted: only what both its rule and the policy accept, through the group.
  ASSERT_TRUE(restricted.loop->wait_for([&] { return restricted.log->serials.size() >= 2; }));
  // Denied: it still gets everything, through the bus (the publisher's bus copy).
  ASSERT_TRUE(denied.loop->wait_for([&] { return denied.log->serials.size() >= 3; }));
  EXPECT_EQ(packets(denied, p.unique), ~std::uint64_t{0});  // never became a member
  EXPECT_EQ(received(restricted), 2u);
  EXPECT_EQ(packets(restricted, p.unique), 2u);
  restricted.loop->run([&](connection&) {
    for (const std::string& s : restricted.log->args) EXPECT_EQ(s, "allowed");
    return 0;
  });
}

// A member that closes its group socket but stays on the bus sends no Leave and causes no
// NameOwnerChanged: the publisher sees its end hang up and forgets it, without emitting anything.
TEST_P(Multicast, AMemberThatHangsUpIsRemovedAtOnce) {
  publisher_side p;
  const std::string sender = name("org.mcbus.Test.Hangup");
  start_publisher(p, sender);
  auto hand = connect();
  ASSERT_TRUE(hand) << hand.error().message();
  auto joined = mcbus_test::join_by_hand(*hand, sender, {"type='signal',sender='" + sender + "'"});
  ASSERT_TRUE(joined) << joined.error().message();
  ASSERT_EQ(p.loop->run([&](connection&) { return p.pub->member_count(); }), 1u);
  joined->socket.reset();
  ASSERT_TRUE(p.loop->wait_for([&] { return p.pub->member_count() == 0; }))
      << "the publisher still lists the member after its socket closed";
  EXPECT_TRUE(hand->connected());
  EXPECT_EQ(p.loop->run([&](connection&) { return p.pub->stats().lost; }), 0u);
}

TEST_P(Multicast, MembersThatLeaveOrVanishAreCleanedUpWithoutFdLeaks) {
  publisher_side p;
  const std::string sender = name("org.mcbus.Test.Leave");
  start_publisher(p, sender);
  auto fds = [] {
    std::size_t n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
    return n;
  };
  // A first member makes the publisher's connection open what it keeps for good (the poll
  // transport's epoll set, which also watches member sockets for hang-up): count after it.
  std::size_t before = 0;
  for (int round = 0; round < 4; ++round) {
    if (round == 1) before = fds();
    subscriber_side left, crashed;
    start_subscriber(left, "type='signal',sender='" + sender + "'");
    start_subscriber(crashed, "type='signal',sender='" + sender + "'");
    ASSERT_TRUE(p.loop->wait_for([&] { return p.pub->member_count() == 2u; }));
    left.loop.reset();                     // the subscription ends: Leave
    crashed.loop->run([](connection& c) {  // the process "crashes": its socket closes under it
      const int fd = c.socket_fd();
      ::shutdown(fd, SHUT_RDWR);
      return 0;
    });
    crashed.loop.reset();
    ASSERT_TRUE(p.loop->wait_for([&] { return p.pub->member_count() == 0; }));
  }
  EXPECT_EQ(fds(), before);
}

// What one Join may carry, and the order of the publisher's checks: the bounds are read from the
// wire first, then the caller's credentials and the admission policy are asked, and only an
// admitted caller's rules are parsed. A caller the policy denies costs the publisher no parsing.
// More rules than max_rules_per_member, or more bytes of them than max_join_bytes, are refused
// before the policy is even asked (the policy counts its calls).
TEST_P(Multicast, TooManyRulesOrBytesAreRefusedBeforeThePolicyIsAsked) {
  publisher_side p;
  auto asked = std::make_shared<std::atomic<int>>(0);
  multicast::publisher_options opts;
  opts.max_rules_per_member = 8;
  opts.max_join_bytes = 1024;
  opts.admit = [asked](const multicast::credentials&) {
    ++*asked;
    return multicast::admission::allow();
  };
  const std::string sender = name("org.mcbus.Test.JoinLimits");
  start_publisher(p, sender, opts);
  const std::string rule = "type='signal',sender='" + sender + "'";
  EXPECT_EQ(join_error(sender, std::vector<std::string>(9, rule)), "org.mcbus.Multicast1.Error.InvalidRules");
  EXPECT_EQ(join_error(sender, {rule + ",arg0='" + std::string(1100, 'x') + "'"}),
            "org.mcbus.Multicast1.Error.InvalidRules");
  EXPECT_EQ(asked->load(), 0);
  // At the bounds, it joins.
  EXPECT_EQ(join_error(sender, std::vector<std::string>(8, rule)), "");
  EXPECT_EQ(asked->load(), 1);
  EXPECT_EQ(p.loop->run([&](connection&) { return p.pub->stats().joins; }), 1u);  // (the caller has left since)
}

// Rules with no routing key are tested on every emit for every member (issue 11, attack 3: a
// million of them made each emit cost 7.3 ms). A member may bring max_unkeyed_rules_per_member of
// them, and as many keyed rules as max_rules_per_member allows.
TEST_P(Multicast, RulesWithNoRoutingKeyAreLimitedPerMember) {
  publisher_side p;
  multicast::publisher_options opts;
  opts.max_unkeyed_rules_per_member = 4;
  const std::string sender = name("org.mcbus.Test.Unkeyed");
  start_publisher(p, sender, opts);
  const auto unkeyed = [&](int n) {
    std::vector<std::string> rules;
    for (int i = 0; i < n; ++i)
      rules.push_back("type='signal',sender='" + sender + "',path_namespace='/org/example/p" + std::to_string(i) + "'");
    return rules;
  };
  EXPECT_EQ(join_error(sender, unkeyed(5)), "org.mcbus.Multicast1.Error.InvalidRules");
  std::vector<std::string> rules = unkeyed(4);
  for (int i = 0; i < 100; ++i) rules.push_back("type='signal',member='M" + std::to_string(i) + "'");
  EXPECT_EQ(join_error(sender, rules), "");
  EXPECT_EQ(p.loop->run([&](connection&) { return p.pub->stats().joins; }), 1u);
}

// A denied caller's rules are never parsed: a bad rule from it gets AccessDenied, not
// InvalidRules. An admitted caller's bad rule is named in the error, cut short.
TEST_P(Multicast, ADeniedCallersRulesAreNotParsedAndErrorsDoNotEchoTheRule) {
  publisher_side p;
  auto deny = std::make_shared<std::atomic<bool>>(true);
  multicast::publisher_options opts;
  opts.admit = [deny](const multicast::credentials&) {
    return *deny ? multicast::admission::deny("not you") : multicast::admission::allow();
  };
  const std::string sender = name("org.mcbus.Test.JoinOrder");
  start_publisher(p, sender, opts);
  const std::string bad = "type='signal',nonsense='" + std::string(900, 'y') + "'";
  EXPECT_EQ(join_error(sender, {bad}), "org.mcbus.Multicast1.Error.AccessDenied");
  *deny = false;
  std::string text;
  EXPECT_EQ(join_error(sender, {bad}, &text), "org.mcbus.Multicast1.Error.InvalidRules");
  EXPECT_LT(text.size(), 300u) << text;
  EXPECT_NE(text.find("nonsense"), std::string::npos) << text;
}

// Eavesdropping needs the admission policy's consent: a rule with eavesdrop='true', or with a
// destination other than the member itself, is refused by default (issue 11, attack 5).
TEST_P(Multicast, EavesdroppingNeedsThePolicysConsent) {
  publisher_side p;
  const std::string sender = name("org.mcbus.Test.Eavesdrop");
  start_publisher(p, sender);
  const std::string rule = "type='signal',sender='" + sender + "'";
  EXPECT_EQ(join_error(sender, {rule + ",eavesdrop='true'"}), "org.mcbus.Multicast1.Error.AccessDenied");
  EXPECT_EQ(join_error(sender, {rule + ",destination=':1.999999'"}), "org.mcbus.Multicast1.Error.AccessDenied");
  auto self = connect();
  ASSERT_TRUE(self) << self.error().message();
  auto joined = mcbus_test::join_by_hand(*self, sender, {rule + ",destination='" + self->unique_name() + "'"});
  EXPECT_TRUE(joined) << joined.error().message();
}

// A signal the publisher addresses to one member reaches that member only, even a member the
// policy lets eavesdrop: its socket holds only the broadcast sent after it.
TEST_P(Multicast, ASignalAddressedToOneMemberReachesNoOther) {
  publisher_side p;
  multicast::publisher_options opts;
  opts.admit = [](const multicast::credentials&) { return multicast::admission::allow().allow_eavesdropping(); };
  const std::string sender = name("org.mcbus.Test.Addressed");
  start_publisher(p, sender, opts);
  const std::string rule = "type='signal',sender='" + sender + "'";
  auto spy = connect();
  auto target = connect();
  ASSERT_TRUE(spy && target);
  auto spy_joined = mcbus_test::join_by_hand(*spy, sender, {rule + ",eavesdrop='true'"});
  auto target_joined = mcbus_test::join_by_hand(*target, sender, {rule});
  ASSERT_TRUE(spy_joined) << spy_joined.error().message();
  ASSERT_TRUE(target_joined) << target_joined.error().message();
  const std::string to = target->unique_name();
  ASSERT_FALSE(p.loop->run([&](connection&) {
    message direct = reading("to-target", 1);
    direct.set_destination(bus_name::from_unchecked(to));
    if (error e = p.pub->emit(std::move(direct))) return e;
    return p.pub->emit(reading("everyone", 2));
  }));
  // Each socket's first packet says who it was for.
  const auto first_arg = [](int fd) -> std::string {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, 20000) != 1) return "nothing arrived";
    std::array<std::byte, 65536> buf{};
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n <= 0) return "recv failed";
    auto got = message_view::parse(std::span<const std::byte>(buf.data(), static_cast<std::size_t>(n)));
    if (!got) return "unparsable";
    auto arg0 = got->read_first<std::string>();
    return arg0 ? *arg0 : "unreadable";
  };
  EXPECT_EQ(first_arg(spy_joined->socket.get()), "everyone");
  EXPECT_EQ(first_arg(target_joined->socket.get()), "to-target");
}

}  // namespace

// A publisher answers max_joins_in_flight Joins at once and refuses the rest with LimitsExceeded.
// Subscribers that start together with subscribe_via::multicast must still all get in: the
// refusal is transient, and a blocking join tries again until its timeout (mcbus-bench's 256
// subscribers failed here).
TEST_P(Multicast, SubscribersThatJoinAtOnceAllGetInWhileThePublisherIsBusy) {
  publisher_side p;
  multicast::publisher_options po;
  po.max_joins_in_flight = 1;
  start_publisher(p, name("org.mcbus.Test.Busy"), po);
  const std::string rule = "type='signal',sender='" + name("org.mcbus.Test.Busy") + "',member='Reading'";
  constexpr int n = 8;
  std::vector<std::unique_ptr<looper>> loops;
  std::vector<std::shared_ptr<received_log>> logs;
  for (int i = 0; i < n; ++i) {
    auto c = connect();
    ASSERT_TRUE(c) << c.error().message();
    loops.push_back(std::make_unique<looper>(std::move(*c)));
    logs.push_back(std::make_shared<received_log>());
  }
  std::vector<std::string> errors(n);
  std::vector<std::thread> starters;
  for (int i = 0; i < n; ++i) {
    starters.emplace_back(
        [&, i] { errors[i] = mcbus_test::subscribe_logging(*loops[i], rule, logs[i], subscribe_via::multicast); });
  }
  for (std::thread& t : starters) t.join();
  for (int i = 0; i < n; ++i) EXPECT_EQ(errors[i], "") << "subscriber " << i;
  ASSERT_TRUE(p.loop->wait_for([&] { return p.pub->member_count() == std::size_t{n}; }));
  const std::uint64_t busy = p.loop->run([&](connection&) { return p.pub->stats().refused_busy; });
  std::printf("%d subscribers joined; the publisher refused %llu Joins as busy on the way\n", n,
              static_cast<unsigned long long>(busy));
}
