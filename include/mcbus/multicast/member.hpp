// mcbus/multicast: the member side. member_machine is the membership state machine as pure
// logic (the SASL client is the model): it decides, for a connection's subscriptions, when to
// probe a sender, when to Join, when to leave, and which path serves each subscription. The
// connection carries out what it asks through an Env; the simulation test drives the same code
// with a simulated bus.
//
// Per publisher (by unique name) the states are:
//
//   unknown ──probe──▶ probing ──offers──▶ joining ──reply R──▶ member ──lost──▶ backoff ──▶ joining
//                         │no                 │refused                 │left/owner moved
//                         ▼                   ▼                        ▼
//                    not a publisher       backoff                    none
//
// Per subscription: it is on the bus (AddMatch) from subscribe() on, until a Join that carries
// its rule is answered; then the group serves it from the reply's serial on (delivery_gate,
// stream.hpp) and the bus rule is removed. When the group is lost, or the rule's sender changes
// owner, it goes back to the bus at once. A subscription made with subscribe_via::bus never joins.
// When a well-known name passes to a new owner, that owner's bus copies are held until its Join,
// which asks for a replay of what it emitted since it took the name (owner_changed()).
#pragma once

#include <mcbus/error.hpp>
#include <mcbus/multicast/protocol.hpp>
#include <mcbus/multicast/stream.hpp>
#include <mcbus/wire/unix_fd.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

MCBUS_NAMESPACE_BEGIN

// Which path a subscription takes. automatic: the publisher's multicast group when the rule's
// sender offers org.mcbus.Multicast1 (learnt in the background; the bus serves meanwhile), the bus
// otherwise. bus: the bus, always. multicast: subscribe() waits for the group and fails without it.
enum class subscribe_via { automatic, bus, multicast };

namespace multicast {

// Re-joins after a group was lost wait this long, doubling up to the cap, so that a publisher that
// keeps closing the socket is not asked again in a tight loop. A membership that lasted
// `backoff_reset` starts again from the first step.
struct rejoin_backoff {
  std::chrono::milliseconds first{100};
  std::chrono::milliseconds cap{30000};
  std::chrono::milliseconds reset_after{10000};
};

// How a Join (or the probe before it) ended.
enum class join_outcome {
  joined,         // reply serial given
  not_publisher,  // the sender offers no org.mcbus.Multicast1
  gone,           // the sender left the bus
  refused,        // denied, full, a bad reply, a timeout: try again later
};

// NameOwnerChanged signals for a rule's well-known name not handled yet (member_machine::
// subscribe()). At namespace scope: clang 14 cannot construct a nested struct with default member
// initializers in a default argument of its enclosing class (optional<T>::emplace() then fails).
struct pending_owner_changes {
  std::string owner;
  int count = 0;
};

class member_machine {
 public:
  using clock = std::chrono::steady_clock;

  struct subscription_state {
    std::string text;    // the canonical rule
    std::string sender;  // the rule's sender (a well-known or unique name), empty: none
    bool wants_group = false;
    bool bus_match = false;   // the rule is in place on the bus
    bool followed = false;    // it followed its name to a new owner: the replay is for it
    int changes_to_skip = 0;  // owner changes it was made after (subscribe()'s `pending`)
    delivery_gate gate;
  };

  explicit member_machine(rejoin_backoff b = {}) : backoff_(b) {}

  // A new subscription, already added to the bus when `on_bus` (AddMatch answered). With
  // subscribe_via::multicast the caller starts the Join itself (join_now()). `pending`: the
  // NameOwnerChanged signals for the rule's well-known name that the bus sent before it answered
  // the AddMatch and that are not handled yet: the subscription starts with the owner the last
  // one names, and those changes are old news to it when they are handled (it followed the name
  // nowhere: no replay is for it).
  using pending_changes = pending_owner_changes;
  template <class Env>
  void subscribe(std::uint64_t id, std::string text, std::string sender, subscribe_via via, bool on_bus, Env& env,
                 std::optional<pending_changes> pending = std::nullopt) {
    subscription_state& s = subs_[id];
    s.text = std::move(text);
    s.sender = std::move(sender);
    s.wants_group = via != subscribe_via::bus && !s.sender.empty();
    s.bus_match = on_bus;
    if (!s.wants_group) return;
    const bool ahead = pending && pending->count > 0 && s.sender[0] != ':';
    if (ahead) s.changes_to_skip = pending->count;
    const std::string publisher = ahead ? std::move(pending->owner) : resolve(s.sender);
    if (publisher.empty()) return;  // nobody owns the name yet: NameOwnerChanged brings the owner
    s.gate.follow(publisher);
    if (via != subscribe_via::multicast) ensure(publisher, env);
  }

  template <class Env>
  void unsubscribe(std::uint64_t id, Env& env) {
    auto it = subs_.find(id);
    if (it == subs_.end()) return;
    subscription_state s = std::move(it->second);
    subs_.erase(it);
    if (s.bus_match) env.remove_match(s.text);
    if (s.gate.in_group) release_if_unwanted(s.gate.publisher, env);
  }

  // The owner of a well-known name that subscriptions name, as the bus reports it ("" = none).
  void set_owner(std::string_view name, std::string_view owner) {
    if (name.empty() || name[0] == ':') return;
    owners_.insert_or_assign(std::string(name), std::string(owner));
  }
  bool tracks_owner(std::string_view name) const { return owners_.find(name) != owners_.end(); }
  std::string_view owner(std::string_view name) const {
    auto it = owners_.find(name);
    return it == owners_.end() ? std::string_view() : std::string_view(it->second);
  }

  // NameOwnerChanged for a tracked name: its subscriptions follow the new owner, over the bus
  // until they are in its group.
  //
  // A subscription that follows the name from one owner to the next had its rule off the bus
  // while the old owner's group served it, so the new owner's first signals may have passed it
  // by (the successor window). The new owner's bus copies are then held (Env::hold) and its Join
  // asks for a replay (join_replay): what it emitted since it took the name, merged with what was
  // held, once the replay is in (the connection does that part).
  template <class Env>
  void owner_changed(std::string_view name, std::string_view new_owner, Env& env) {
    if (!tracks_owner(name)) return;
    const bool had_owner = !owner(name).empty();
    set_owner(name, new_owner);
    std::vector<std::string> left;
    bool followed = false;
    for (auto& [id, s] : subs_) {
      if (!s.wants_group || s.sender != name) continue;
      if (s.changes_to_skip > 0) {
        --s.changes_to_skip;
        continue;
      }
      if (s.gate.publisher == new_owner) continue;
      followed = s.followed = true;
      if (s.gate.in_group) {
        left.push_back(s.gate.publisher);
        s.gate.leave();
        back_to_bus(s, env);
      }
      s.gate.follow(new_owner);
    }
    for (const std::string& p : left) release_if_unwanted(p, env);
    if (followed && new_owner.empty()) orphaned_.emplace(name);
    const bool successor = followed && (had_owner || orphaned_.erase(std::string(name)) > 0);
    if (new_owner.empty()) return;
    const std::string publisher(new_owner);
    if (successor) {
      group& g = groups_[publisher];
      if (!g.member) {
        g.replay = true;
        env.hold(publisher, name);  // its copies are matched later as they were sent: it owned `name`
      }
    }
    ensure(publisher, env);
  }
  // True while `publisher`'s bus copies are to be held: from the owner change that made it a
  // successor until its Join (with a replay) is answered or fails.
  bool holding(std::string_view publisher) const {
    auto it = groups_.find(publisher);
    return it != groups_.end() && it->second.replay;
  }

  // The probe (is org.mcbus.Multicast1 there?) came back.
  template <class Env>
  void probe_done(const std::string& publisher, join_outcome outcome, Env& env) {
    auto it = groups_.find(publisher);
    if (it == groups_.end()) return;
    group& g = it->second;
    g.state = step::idle;
    if (outcome != join_outcome::joined) end_hold(publisher, g, env);
    switch (outcome) {
      case join_outcome::joined: g.offers = true; break;
      case join_outcome::not_publisher:
        g.offers = false;
        env.fallback(publisher, "it does not offer org.mcbus.Multicast1");
        return;
      case join_outcome::gone: groups_.erase(it); return;
      case join_outcome::refused: delay(g, env.now()); break;
    }
    ensure(publisher, env);
  }

  // The Join came back. With `joined`, the connection has installed the socket; `reply` is the
  // serial of the reply, from which the group serves the subscriptions the Join carried. A Join
  // sent with join_replay also serves, by the replay, the subscriptions that name a well-known
  // name from before the reply; the connection ends the hold once the replay is in.
  template <class Env>
  void join_done(const std::string& publisher, join_outcome outcome, std::uint32_t reply, Env& env) {
    auto it = groups_.find(publisher);
    if (it == groups_.end()) return;
    group& g = it->second;
    g.state = step::idle;
    std::vector<std::uint64_t> carried = std::move(g.carried);
    g.carried.clear();
    const bool replayed = std::exchange(g.replay_sent, false);
    if (outcome != join_outcome::joined || !replayed) end_hold(publisher, g, env);
    g.replay = false;
    switch (outcome) {
      case join_outcome::joined:
        if (!g.member) g.member_since = env.now();
        g.member = true;
        for (std::uint64_t id : carried) {
          auto s = subs_.find(id);
          if (s == subs_.end() || s->second.gate.in_group || s->second.gate.publisher != publisher) continue;
          // Only a subscription that followed its name here is replayed to: a newer one, or one
          // naming the unique name, had its rule on the bus for everything before the reply.
          const bool replay_for_it = replayed && s->second.followed;
          s->second.followed = false;
          s->second.gate.join(publisher, reply, replay_for_it);
          if (s->second.bus_match) {
            env.remove_match(s->second.text);
            s->second.bus_match = false;
          }
        }
        break;
      case join_outcome::not_publisher:
        g.offers = false;
        env.fallback(publisher, "it does not offer org.mcbus.Multicast1");
        return;
      case join_outcome::gone:
        if (!g.member) groups_.erase(it);
        return;
      case join_outcome::refused:
        delay(g, env.now());
        env.fallback(publisher, "the Join failed; the bus serves meanwhile");
        break;
    }
    ensure(publisher, env);
  }

  // The group socket is gone (the publisher exited, closed it, or broke the protocol). Its
  // subscriptions are back on the bus at once; a re-join follows after the back-off.
  template <class Env>
  void group_lost(const std::string& publisher, Env& env) {
    auto it = groups_.find(publisher);
    if (it == groups_.end()) return;
    group& g = it->second;
    const bool lasted = g.member && env.now() - g.member_since >= backoff_.reset_after;
    g.member = false;
    for (auto& [id, s] : subs_) {
      if (s.gate.publisher != publisher || !s.gate.in_group) continue;
      s.gate.leave();
      back_to_bus(s, env);
    }
    if (lasted) g.backoff = {};
    delay(g, env.now());
    ensure(publisher, env);
  }

  // Time passed: attempts whose back-off ended go ahead.
  template <class Env>
  void tick(Env& env) {
    const auto now = env.now();
    std::vector<std::string> due;
    for (auto& [name, g] : groups_) {
      if (g.state == step::idle && g.not_before && *g.not_before <= now) due.push_back(name);
    }
    for (const std::string& name : due) ensure(name, env);
  }
  // The earliest back-off that is still running, for the loop's timeout.
  std::optional<clock::time_point> next_deadline() const {
    std::optional<clock::time_point> next;
    for (const auto& [name, g] : groups_) {
      if (g.state == step::idle && g.not_before && (!next || *g.not_before < *next)) next = g.not_before;
    }
    return next;
  }

  // For subscribe_via::multicast: start the Join now (no probe, no back-off). False when one is
  // already under way or nothing needs it.
  template <class Env>
  bool join_now(const std::string& publisher, Env& env) {
    group& g = groups_[publisher];
    if (g.state != step::idle) return false;
    g.offers = true;
    g.not_before.reset();
    return start_join(publisher, g, env);
  }

  const subscription_state* find(std::uint64_t id) const {
    auto it = subs_.find(id);
    return it == subs_.end() ? nullptr : &it->second;
  }
  subscription_state* find(std::uint64_t id) {
    auto it = subs_.find(id);
    return it == subs_.end() ? nullptr : &it->second;
  }
  bool joining(const std::string& publisher) const {
    auto it = groups_.find(publisher);
    return it != groups_.end() && it->second.state != step::idle;
  }
  bool member_of(const std::string& publisher) const {
    auto it = groups_.find(publisher);
    return it != groups_.end() && it->second.member;
  }
  // The rules a Join of `publisher` carries now: every subscription that wants its group.
  std::vector<std::string> rules_for(const std::string& publisher) const {
    std::vector<std::string> out;
    for (const auto& [id, s] : subs_) {
      if (!wants(s, publisher)) continue;
      if (std::find(out.begin(), out.end(), s.text) == out.end()) out.push_back(s.text);
    }
    return out;
  }

 private:
  enum class step : std::uint8_t { idle, probing, joining };
  struct group {
    step state = step::idle;
    std::optional<bool> offers;  // org.mcbus.Multicast1 is there
    bool member = false;
    bool again = false;  // rules changed while a call was out
    std::vector<std::uint64_t> carried;
    clock::duration backoff{};
    std::optional<clock::time_point> not_before;
    clock::time_point member_since{};
    bool replay = false;       // a successor: its bus copies are held, its Join asks for a replay
    bool replay_sent = false;  // the Join under way asked for one
  };

  std::string resolve(std::string_view sender) const {
    if (sender.empty() || sender[0] == ':') return std::string(sender);
    return std::string(owner(sender));
  }
  bool wants(const subscription_state& s, std::string_view publisher) const {
    return s.wants_group && !publisher.empty() && s.gate.publisher == publisher;
  }

  void delay(group& g, clock::time_point now) {
    g.backoff = g.backoff == clock::duration{} ? clock::duration(backoff_.first)
                                               : std::min<clock::duration>(g.backoff * 2, backoff_.cap);
    g.not_before = now + g.backoff;
  }

  template <class Env>
  void back_to_bus(subscription_state& s, Env& env) {
    if (s.bus_match) return;
    env.add_match(s.text);
    s.bus_match = true;
  }

  template <class Env>
  void ensure(const std::string& publisher, Env& env) {
    bool needed = false, wanted = false;
    for (const auto& [id, s] : subs_) {
      if (!wants(s, publisher)) continue;
      wanted = true;
      if (!s.gate.in_group) needed = true;
    }
    auto it = groups_.find(publisher);
    if (!wanted) {
      if (it != groups_.end() && !it->second.member && it->second.state == step::idle) {
        end_hold(publisher, it->second, env);
        groups_.erase(it);
      }
      return;
    }
    if (!needed) return;
    group& g = it == groups_.end() ? groups_[publisher] : it->second;
    if (g.state != step::idle) {
      g.again = true;
      return;
    }
    if (g.offers == false) return;
    if (g.not_before && env.now() < *g.not_before) return;  // tick() goes on when it ends
    g.not_before.reset();
    if (!g.offers) {
      g.state = step::probing;
      env.probe(publisher);
      return;
    }
    start_join(publisher, g, env);
  }

  template <class Env>
  bool start_join(const std::string& publisher, group& g, Env& env) {
    std::vector<std::string> rules = rules_for(publisher);
    if (rules.empty()) return false;
    g.carried.clear();
    for (const auto& [id, s] : subs_) {
      if (wants(s, publisher) && !s.gate.in_group) g.carried.push_back(id);
    }
    g.state = step::joining;
    g.again = false;
    // A replay is only for a new member: a re-join's socket follows the old one's packets.
    if (g.replay && g.member) end_hold(publisher, g, env);
    g.replay_sent = g.replay;
    env.join(publisher, std::move(rules), g.replay ? join_replay : 0u);
    return true;
  }

  template <class Env>
  void end_hold(const std::string& publisher, group& g, Env& env) {
    if (!g.replay) return;
    g.replay = false;
    env.release_held(publisher);
  }

  // Nothing wants `publisher`'s group any more: leave it.
  template <class Env>
  void release_if_unwanted(const std::string& publisher, Env& env) {
    for (const auto& [id, s] : subs_) {
      if (wants(s, publisher) && s.gate.in_group) return;
    }
    auto it = groups_.find(publisher);
    if (it == groups_.end() || !it->second.member) return;
    it->second.member = false;
    env.leave(publisher);
    if (it->second.state == step::idle) groups_.erase(it);
  }

  rejoin_backoff backoff_;
  std::map<std::uint64_t, subscription_state> subs_;
  std::map<std::string, std::string, std::less<>> owners_;
  std::map<std::string, group, std::less<>> groups_;
  std::set<std::string, std::less<>> orphaned_;  // names followed by a subscription, now without owner
};

// The socket side of a membership, kept by the connection.
struct held_packet {
  std::uint32_t serial = 0;
  packet_kind kind = packet_kind::signal;
  std::vector<std::byte> bytes;
};

struct membership {
  std::string publisher;  // its unique name: the SENDER of every packet
  unix_fd socket;
  std::uint32_t source = 0;
  std::uint32_t max_packet = 0;
  stream_merge<held_packet> merge;
  // Re-joins' sockets, in order: each is read once the one before has reached its end (the
  // publisher closes it after its last packet), or after `switch_by`.
  std::deque<std::pair<unix_fd, std::uint32_t>> next_sockets;  // with their max_packet
  std::optional<std::chrono::steady_clock::time_point> switch_by;
  bool ended = false;              // the socket reached its end (a re-join under way, or packets still held)
  bool lose_when_handled = false;  // ended with held packets: the group is lost once they are handled
  std::uint64_t packets = 0;
  std::uint64_t markers = 0;
  bool closing = false;  // left or lost: no longer served, removed at the end of the loop turn
};

class membership_set {
 public:
  membership& add(const std::string& publisher, unix_fd socket, std::uint32_t max_packet) {
    membership& m = by_publisher_[publisher];
    m = membership{};
    m.publisher = publisher;
    m.socket = std::move(socket);
    m.source = ++next_source_;
    m.max_packet = max_packet;
    return m;
  }
  // The next socket of a membership gets a new source id.
  std::uint32_t renumber(membership& m) { return m.source = ++next_source_; }

  void remove(std::string_view publisher) {
    auto it = by_publisher_.find(publisher);
    if (it != by_publisher_.end()) by_publisher_.erase(it);
  }
  membership* find(std::string_view publisher) {
    auto it = by_publisher_.find(publisher);
    return it == by_publisher_.end() ? nullptr : &it->second;
  }
  const membership* find(std::string_view publisher) const {
    auto it = by_publisher_.find(publisher);
    return it == by_publisher_.end() ? nullptr : &it->second;
  }
  membership* by_source(std::uint32_t source) {
    for (auto& [name, m] : by_publisher_) {
      if (m.source == source) return &m;
    }
    return nullptr;
  }
  bool empty() const noexcept { return by_publisher_.empty(); }
  std::map<std::string, membership, std::less<>>& all() noexcept { return by_publisher_; }
  const std::map<std::string, membership, std::less<>>& all() const noexcept { return by_publisher_; }

 private:
  std::map<std::string, membership, std::less<>> by_publisher_;
  std::uint32_t next_source_ = 0;
};

}  // namespace multicast
MCBUS_NAMESPACE_END
