// The simulation's engine: one schedule, from one seed. See world.hpp.
#pragma once

#include "world.hpp"

#include <cstdio>
#include <functional>
#include <tuple>

namespace sim {

class simulation {
 public:
  bool trace = false;

  explicit simulation(std::uint64_t seed, bool restarts = true) : rng_(seed) {
    cfg_.members = pick(1, 3);
    cfg_.subscriptions = pick(1, 2);
    cfg_.steps = pick(40, 220);
    cfg_.topics = pick(1, 4);
    cfg_.restart = chance(0.3) && restarts;
    cfg_.drop = chance(0.2);
    cfg_.big = chance(0.5) ? 0.0 : 0.08;
    cfg_.targeted = chance(0.5) ? 0.0 : 0.05;
  }

  result run() {
    start_publisher();
    for (int k = 0; k < cfg_.members; ++k) add_member();
    for (int step = 0; step < cfg_.steps; ++step) {
      now_ += pick(1, 2000);
      chaos_step();
      if (!r_.ok) return r_;
    }
    // Quiescence: no more emits or changes, everything in flight arrives.
    for (int guard = 0; guard < 200000 && busy(); ++guard) {
      now_ += pick(1, 2000);
      settle_step();
      if (!r_.ok) return r_;
    }
    if (busy()) return fail("the world did not settle: " + busy_reason());
    check();
    return r_;
  }

  const config& cfg() const { return cfg_; }

 private:
  // ---- randomness ----------------------------------------------------------------------------
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool chance(double p) { return std::bernoulli_distribution(p)(rng_); }
  clock::time_point tp() const { return clock::time_point(std::chrono::microseconds(now_)); }

  result fail(std::string why) {
    if (r_.ok) {
      r_.ok = false;
      r_.why = std::move(why);
    }
    return r_;
  }

  // ---- the world ------------------------------------------------------------------------------
  static bus_message make(kind k) {
    bus_message b;
    b.k = k;
    return b;
  }
  int new_conn(const std::string& prefix) {
    conns_.emplace_back();
    conns_.back().name = ":" + prefix + std::to_string(conns_.size());
    return static_cast<int>(conns_.size()) - 1;
  }
  int conn_by_name(const std::string& name) const {
    for (std::size_t i = 0; i < conns_.size(); ++i) {
      if (conns_[i].name == name) return static_cast<int>(i);
    }
    return -1;
  }

  void start_publisher() {
    publishers_.emplace_back();
    publisher& p = publishers_.back();
    p.conn = new_conn("p");
    p.policy = cfg_.drop ? overflow_policy::drop : overflow_policy::bus;
    p.record_cap = static_cast<std::size_t>(pick(2, 64));
    bus_message own = make(kind::own);
    own.from = p.conn;
    own.to = -2;
    conns_[p.conn].out.push_back(own);
  }
  publisher* publisher_of(int conn) {
    for (publisher& p : publishers_) {
      if (p.conn == conn) return &p;
    }
    return nullptr;
  }

  void add_member() {
    members_.emplace_back();
    members_.back().conn = new_conn("m");
    const int subs = pick(1, cfg_.subscriptions);
    for (int s = 0; s < subs; ++s) subscribe(static_cast<int>(members_.size()) - 1);
  }

  void subscribe(int m) {
    subscription sub;
    sub.id = ++next_sub_;
    sub.member = m;
    sub.r.topics = static_cast<std::uint32_t>(pick(1, (1 << cfg_.topics) - 1));
    sub.r.sender = well_known;
    if (chance(0.2) && !owner_.empty()) sub.r.sender = owner_;  // by unique name
    bus_message add = make(kind::add_match);
    add.from = members_[m].conn;
    add.to = -2;
    add.text = sub.r.text();
    add.sub = sub.id;
    conns_[members_[m].conn].out.push_back(add);
    subs_.push_back(sub);
  }
  subscription* sub_by_id(std::uint64_t id) {
    for (subscription& s : subs_) {
      if (s.id == id) return &s;
    }
    return nullptr;
  }

  bool rule_matches(const rule& r, int from, int topic, const std::string& owner_now) const {
    if (!(r.topics & (1u << topic))) return false;
    const std::string& name = conns_[from].name;
    return r.sender == well_known ? owner_now == name : r.sender == name;
  }

  // ---- steps ----------------------------------------------------------------------------------
  void chaos_step() {
    const int what = pick(0, 99);
    if (what < 30) return route_one();
    if (what < 55) return member_step(pick(0, static_cast<int>(members_.size()) - 1));
    if (what < 75) return publisher_emit();
    if (what < 90) return publisher_step();
    if (what < 93 && cfg_.members < 4) return add_member();
    if (what < 96) return subscribe(pick(0, static_cast<int>(members_.size()) - 1));
    if (what < 98 && cfg_.restart && publishers_.size() < 3) return restart_publisher();
    for (member& m : members_) {
      member_env env{*this, m};
      m.machine.tick(env);
    }
  }

  void settle_step() {
    const int what = pick(0, 3);
    if (what == 0) return route_one();
    if (what == 1) return publisher_step();
    if (what == 2) {
      for (member& m : members_) {
        member_env env{*this, m};
        m.machine.tick(env);
      }
    }
    member_step(pick(0, static_cast<int>(members_.size()) - 1));
  }

  std::string busy_reason() const {
    std::string why;
    for (const connection& c : conns_) {
      if (!c.out.empty()) why += c.name + " has output; ";
      if (c.alive && !c.in.empty()) why += c.name + " has input; ";
    }
    for (const publisher& p : publishers_) {
      if (!p.alive) continue;
      if (!p.completions.empty()) why += "completions; ";
      if (!p.writable.empty()) why += "writable; ";
      if (!p.fifo.empty())
        why += "fifo " + std::to_string(p.fifo.size()) + " unwritten " + std::to_string(p.unwritten) + "; ";
    }
    for (const member& m : members_) {
      for (const auto& [name, g] : m.groups) {
        if (g.closing) continue;
        const socket& s = sockets_[static_cast<std::size_t>(g.socket)];
        if (!s.queue.empty() || s.closed || !g.next_sockets.empty() || g.merge.held() > 0) {
          why += conns_[m.conn].name + " group " + name + " q=" + std::to_string(s.queue.size()) +
                 " closed=" + std::to_string(s.closed) + " next=" + std::to_string(g.next_sockets.size()) +
                 " held=" + std::to_string(g.merge.held()) + " waiting=" + std::to_string(g.merge.waiting()) + "; ";
        }
      }
      if (m.machine.next_deadline()) why += conns_[m.conn].name + " back-off; ";
      if (!m.pending.empty()) why += conns_[m.conn].name + " pending calls; ";
    }
    return why;
  }

  bool busy() const {
    for (const connection& c : conns_) {
      if (!c.out.empty() || (c.alive && !c.in.empty())) return true;
    }
    for (const publisher& p : publishers_) {
      if (!p.alive) continue;
      if (!p.completions.empty() || !p.writable.empty()) return true;
      if (!p.fifo.empty()) return true;
    }
    for (const member& m : members_) {
      for (const auto& [name, g] : m.groups) {
        if (g.closing || g.ended) continue;
        if (!sockets_[g.socket].queue.empty() || sockets_[g.socket].closed || !g.next_sockets.empty()) return true;
        if (g.merge.held() > 0) return true;
      }
      if (m.machine.next_deadline() || !m.pending.empty()) return true;
    }
    return false;
  }

  // ---- the daemon -----------------------------------------------------------------------------
  void route_one() {
    std::vector<int> ready;
    for (std::size_t i = 0; i < conns_.size(); ++i) {
      if (!conns_[i].out.empty()) ready.push_back(static_cast<int>(i));
    }
    if (ready.empty()) return;
    connection& from = conns_[ready[static_cast<std::size_t>(pick(0, static_cast<int>(ready.size()) - 1))]];
    bus_message m = std::move(from.out.front());
    from.out.pop_front();
    m.routed = ++route_seq_;
    if (trace) {
      std::printf("route %s kind %d -> %d serial %u topic %d copy %d text %s owner %s\n", from.name.c_str(),
                  static_cast<int>(m.k), m.to, m.serial, m.topic, m.copy, m.text.c_str(), owner_.c_str());
    }
    switch (m.k) {
      case kind::add_match:
        from.matches.insert(m.text);
        if (subscription* s = sub_by_id(m.sub)) activate(*s);
        return;
      case kind::remove_match: {
        auto it = from.matches.find(m.text);
        if (it != from.matches.end()) from.matches.erase(it);
        return;
      }
      case kind::own: {  // RequestName, queued behind the owner as dbus-daemon queues it
        bus_message reply = make(kind::own_reply);
        reply.to = m.from;
        reply.ok = owner_.empty();
        if (reply.ok) {
          set_owner(conns_[m.from].name);
        } else {
          queued_owners_.push_back(m.from);
        }
        conns_[m.from].in.push_back(reply);
        return;
      }
      case kind::death:
        // As dbus-daemon does (NoReply, "recipient disconnected"), every call still waiting for
        // the dead connection's reply gets an error, after the replies it sent before it died.
        for (member& waiting : members_) {
          for (const auto& [serial, call] : waiting.pending) {
            if (call.second != conns_[m.from].name) continue;
            bus_message err = make(call.first == kind::join ? kind::join_reply : kind::probe_reply);
            err.from = m.from;
            err.to = waiting.conn;
            err.ok = false;
            err.outcome = join_outcome::gone;
            err.reply_to = serial;
            err.routed = m.routed;
            conns_[waiting.conn].in.push_back(err);
          }
        }
        if (owner_ == conns_[m.from].name) {
          set_owner("");
          while (!queued_owners_.empty()) {
            const int next = queued_owners_.front();
            queued_owners_.pop_front();
            if (conns_[next].alive) {
              set_owner(conns_[next].name);
              conns_[next].in.push_back(make(kind::acquired));
              break;
            }
          }
        }
        return;
      default: break;
    }
    if (m.k == kind::signal && m.to == -1) return broadcast(m);
    if (m.to < 0) return;
    connection& to = conns_[m.to];
    if (!to.alive) {
      if (m.k == kind::join || m.k == kind::probe) {  // the daemon answers for the dead
        bus_message err = make(m.k == kind::join ? kind::join_reply : kind::probe_reply);
        err.from = m.to;
        err.to = m.from;
        err.ok = false;
        err.outcome = join_outcome::gone;
        err.reply_to = m.serial;
        err.routed = m.routed;
        conns_[m.from].in.push_back(err);
      }
      return;
    }
    if (m.k == kind::signal && !m.copy) shadow(m, m.to);
    to.in.push_back(m);
  }

  void broadcast(const bus_message& m) {
    shadow(m, -1);
    if (m.virtual_) return;
    for (std::size_t i = 0; i < conns_.size(); ++i) {
      connection& c = conns_[i];
      if (!c.alive || static_cast<int>(i) == m.from) continue;
      for (const std::string& text : c.matches) {
        if (text_matches(text, m)) {
          c.in.push_back(m);
          break;
        }
      }
    }
  }
  bool text_matches(const std::string& text, const bus_message& m) const {
    const auto slash = text.find('/');
    rule r{text.substr(0, slash), static_cast<std::uint32_t>(std::stoul(text.substr(slash + 1)))};
    return rule_matches(r, m.from, m.topic, owner_);
  }
  // What a plain subscriber with the same rule, added when this one was, gets. A broadcast from a
  // publisher that took the name over, routed while the member had neither its rule on the bus nor
  // a place in that publisher's group, is noted: the successor window (docs/multicast-protocol.md).
  void shadow(const bus_message& m, int only_to) {
    for (subscription& s : subs_) {
      if (!s.active || (only_to >= 0 && members_[s.member].conn != only_to)) continue;
      if (!rule_matches(s.r, m.from, m.topic, owner_)) continue;
      s.shadow.push_back({m.from, m.serial});
      const connection& c = conns_[members_[s.member].conn];
      publisher* p = publisher_of(m.from);
      if (only_to < 0 && p && p != &publishers_.front() && !c.matches.count(s.r.text()) &&
          !p->members.count(members_[s.member].conn)) {
        s.window.push_back({m.from, m.serial});
      }
    }
  }

  void activate(subscription& s) {
    s.active = true;
    s.active_from = route_seq_;
    member& m = members_[s.member];
    conns_[m.conn].tracks_owner = true;
    // subscribe() returns now: it learnt the owner and added the rule, and the machine takes over.
    if (!m.machine.tracks_owner(well_known)) m.machine.set_owner(well_known, owner_);  // as track_sender()
    member_env env{*this, m};
    // The owner when the AddMatch was answered (a NameOwnerChanged may be on its way): as the
    // connection learns it from its inbox.
    member_machine::pending_changes pending{owner_, 0};
    for (const bus_message& b : conns_[m.conn].in) pending.count += b.k == kind::noc;
    m.machine.subscribe(s.id, s.r.text(), s.r.sender, mcbus::subscribe_via::automatic, true, env, pending);
  }

  void set_owner(const std::string& name) {
    owner_ = name;
    for (std::size_t i = 0; i < conns_.size(); ++i) {
      if (!conns_[i].alive || !conns_[i].tracks_owner) continue;
      bus_message noc = make(kind::noc);
      noc.to = static_cast<int>(i);
      noc.owner = name;
      noc.routed = route_seq_;
      conns_[i].in.push_back(noc);
    }
  }

  // ---- members --------------------------------------------------------------------------------
  struct member_env {
    simulation& w;
    member& m;
    clock::time_point now() const { return w.tp(); }
    void add_match(const std::string& text) { send_daemon(kind::add_match, text); }
    void remove_match(const std::string& text) { send_daemon(kind::remove_match, text); }
    void send_daemon(kind k, const std::string& text) {
      bus_message b = make(k);
      b.from = m.conn;
      b.to = -2;
      b.text = text;
      w.conns_[m.conn].out.push_back(b);
    }
    std::uint32_t call(kind k, const std::string& publisher, std::vector<std::string> rules = {},
                       std::uint32_t flags = 0) {
      bus_message b = make(k);
      b.from = m.conn;
      b.to = w.conn_by_name(publisher);
      b.serial = w.conns_[m.conn].next_serial();
      b.rules = std::move(rules);
      b.flags = flags;
      m.pending[b.serial] = {k, publisher};
      w.conns_[m.conn].out.push_back(b);
      return b.serial;
    }
    void probe(const std::string& publisher) { call(kind::probe, publisher); }
    void join(const std::string& publisher, std::vector<std::string> rules, std::uint32_t flags) {
      const std::uint32_t serial = call(kind::join, publisher, std::move(rules), flags);
      if (flags & join_replay) m.replay_calls.insert(serial);
    }
    void hold(const std::string& publisher, std::string_view) { m.holds[publisher].owned = true; }
    void release_held(const std::string& publisher) { w.release(m, publisher); }
    void leave(const std::string& publisher) {
      bus_message b = make(kind::leave);
      b.from = m.conn;
      b.to = w.conn_by_name(publisher);
      b.serial = w.conns_[m.conn].next_serial();
      w.conns_[m.conn].out.push_back(b);
      auto it = m.groups.find(publisher);
      if (it != m.groups.end()) it->second.closing = true;
      w.release(m, publisher);
    }
    void fallback(const std::string&, const char*) {}
  };

  struct packet_sink {
    simulation& w;
    member& m;
    const std::string& publisher;
    packet current{};
    held hold() { return {current.serial, current.kind, current}; }
    void deliver_current() { w.deliver_packet(m, publisher, current); }
    void deliver(held& h) { w.deliver_packet(m, publisher, h.p); }
    void problem(const mcbus::error& e) { m.problems.push_back(e.message()); }
  };

  void deliver_packet(member& m, const std::string& publisher, const packet& p) {
    if (p.kind == packet_kind::lost) {
      m.gaps.emplace_back(publisher, p.lost);
      progress(m, publisher, p.lost.last, true);
      return;
    }
    bus_message as = make(kind::signal);
    as.from = conn_by_name(publisher);
    as.serial = p.serial;
    as.topic = p.topic;
    progress(m, publisher, p.serial, false);
    dispatch(m, as, origin::packet);
    progress(m, publisher, p.serial, true);
  }

  // A successor's held bus copies: handed on once its replay is in (as the connection does).
  void release(member& m, const std::string& publisher) {
    auto it = m.holds.find(publisher);
    if (it == m.holds.end()) return;
    const successor_hold hold = std::move(it->second);
    m.holds.erase(it);
    for (const bus_message& b : hold.copies) dispatch(m, b, hold.origin_of(b.serial), true);
  }
  void progress(member& m, const std::string& publisher, std::uint32_t serial, bool done) {
    auto it = m.holds.find(publisher);
    if (it == m.holds.end() || !it->second.until) return;
    const std::uint32_t until = *it->second.until;
    if (done ? serial_before(serial, until) : !serial_before(until, serial)) {
      if (done) return;
      // Held copies older than what the stream hands on next go first: the two merge by serial.
      std::vector<bus_message>& copies = it->second.copies;
      std::size_t n = 0;
      while (n < copies.size() && serial_before(copies[n].serial, serial)) ++n;
      std::vector<bus_message> older(copies.begin(), copies.begin() + static_cast<std::ptrdiff_t>(n));
      copies.erase(copies.begin(), copies.begin() + static_cast<std::ptrdiff_t>(n));
      for (const bus_message& b : older) dispatch(m, b, it->second.origin_of(b.serial), true);
      return;
    }
    release(m, publisher);
  }
  void lose_group(member& m, group& g, const std::string& name) {
    g.closing = true;
    member_env env{*this, m};
    m.machine.group_lost(name, env);
    release(m, name);
  }

  // `owned_then`: a held copy, matched as it was sent, when its sender owned the name.
  void dispatch(member& m, const bus_message& b, origin from, bool owned_then = false) {
    const std::string& sender = conns_[b.from].name;
    if (trace) {
      std::printf("  %s dispatch %s#%u topic %d via %s\n", conns_[m.conn].name.c_str(), sender.c_str(), b.serial,
                  b.topic,
                  from == origin::packet    ? "packet"
                  : from == origin::unicast ? "unicast"
                                            : "broadcast");
    }
    for (subscription& s : subs_) {
      if (&members_[s.member] != &m || !s.active) continue;
      if (from != origin::packet && b.routed < s.active_from) continue;  // before subscribe() returned
      const std::string owner = owned_then ? sender : std::string(m.machine.owner(well_known));
      if (!rule_matches(s.r, b.from, b.topic, owner)) continue;
      auto* st = m.machine.find(s.id);
      if (trace && st) {
        std::printf("    sub %llu gate pub=%s in_group=%d joined_at=%u last=%d\n",
                    static_cast<unsigned long long>(s.id), st->gate.publisher.c_str(), st->gate.in_group,
                    st->gate.joined_at, st->gate.last ? static_cast<int>(*st->gate.last) : -1);
      }
      if (!st || !st->gate.accept(from, sender, b.serial)) continue;
      s.log.push_back({b.from, b.serial});
    }
  }

  void member_step(int index) {
    member& m = members_[static_cast<std::size_t>(index)];
    connection& c = conns_[m.conn];
    // Packets and bus messages come in any interleaving; each path in order.
    std::vector<std::string> readable;
    for (auto& [name, g] : m.groups) {
      if (!g.closing && !g.ended && (!sockets_[g.socket].queue.empty() || sockets_[g.socket].closed)) {
        readable.push_back(name);
      }
    }
    const bool bus = !c.in.empty();
    if (!bus && readable.empty()) return;
    if (bus && (readable.empty() || chance(0.5))) return member_bus(m);
    read_packet(m, readable[static_cast<std::size_t>(pick(0, static_cast<int>(readable.size()) - 1))]);
  }

  void read_packet(member& m, const std::string& name) {
    group& g = m.groups[name];
    socket& s = sockets_[g.socket];
    if (trace) {
      std::printf("  %s reads sock %d: %s\n", conns_[m.conn].name.c_str(), g.socket,
                  s.queue.empty() ? "EOF" : std::to_string(s.queue.front().serial).c_str());
    }
    if (s.queue.empty()) {  // end of file
      if (g.ended) return;
      if (!g.next_sockets.empty()) {
        g.socket = g.next_sockets.front();
        g.next_sockets.pop_front();
        return;
      }
      if (m.machine.joining(name)) {  // a re-join's reply is on its way: its socket follows this one
        g.ended = true;
        return;
      }
      if (g.merge.waiting() || g.merge.held() > 0) {  // lost once the held packets are handled
        g.ended = g.lose_when_handled = true;
        return;
      }
      lose_group(m, g, name);
      return;
    }
    packet p = s.queue.front();
    s.queue.pop_front();
    freed(s);
    packet_sink sink{*this, m, name, p};
    g.merge.on_packet(p.serial, p.kind, sink);
  }

  void freed(socket& s) {
    if (s.watched && s.queue.size() < s.capacity) {
      s.watched = false;
      if (publisher* p = publisher_of(s.publisher))
        p->writable.push_back({s.member, static_cast<int>(&s - sockets_.data())});
    }
  }

  // Everything the group's sockets hold joins its merge, held: the current socket, then a
  // re-join's next ones (the publisher wrote to them only after it closed the one before).
  void drain(member& m, group& g, const std::string& publisher) {
    std::vector<int> socks{g.socket};
    socks.insert(socks.end(), g.next_sockets.begin(), g.next_sockets.end());
    for (int index : socks) {
      socket& s = sockets_[static_cast<std::size_t>(index)];
      while (!s.queue.empty()) {
        packet p = s.queue.front();
        s.queue.pop_front();
        packet_sink sink{*this, m, publisher, p};
        g.merge.on_drained(p.serial, sink);
      }
      freed(s);
    }
  }

  void member_bus(member& m) {
    connection& c = conns_[m.conn];
    bus_message b = std::move(c.in.front());
    c.in.pop_front();
    member_env env{*this, m};
    if (trace)
      std::printf("  %s bus kind %d from %d serial %u\n", c.name.c_str(), static_cast<int>(b.k), b.from, b.serial);
    switch (b.k) {
      case kind::noc: {  // the old owner's socket is handled first, as the connection does
        const std::string old_owner(m.machine.owner(well_known));
        auto g = m.groups.find(old_owner);
        if (!old_owner.empty() && g != m.groups.end() && !g->second.closing) {
          drain(m, g->second, old_owner);
          packet_sink sink{*this, m, old_owner};
          g->second.merge.release_all(sink);
        }
        if (!old_owner.empty()) release(m, old_owner);
        m.machine.owner_changed(well_known, b.owner, env);
        return;
      }
      case kind::probe_reply: {
        auto it = m.pending.find(b.reply_to);
        if (it == m.pending.end()) return;
        const std::string pub = it->second.second;
        m.pending.erase(it);
        m.machine.probe_done(pub, b.ok ? join_outcome::joined : b.outcome, env);
        return;
      }
      case kind::join_reply: {
        auto it = m.pending.find(b.reply_to);
        if (it == m.pending.end()) return;
        const std::string pub = it->second.second;
        m.pending.erase(it);
        auto g = m.groups.find(pub);
        const bool asked = m.replay_calls.erase(b.reply_to) > 0;
        if (!b.ok) {
          if (g != m.groups.end() && !g->second.closing && g->second.ended) {
            if (g->second.merge.waiting() || g->second.merge.held() > 0) {
              g->second.lose_when_handled = true;  // once the held packets are handled
            } else {
              lose_group(m, g->second, pub);
            }
          }
          return m.machine.join_done(pub, b.outcome, 0, env);
        }
        if (g != m.groups.end() && !g->second.closing && g->second.ended) {
          g->second.socket = b.socket;
          g->second.ended = g->second.lose_when_handled = false;
        } else if (g != m.groups.end() && !g->second.closing) {
          g->second.next_sockets.push_back(b.socket);
        } else {
          group fresh;
          fresh.socket = b.socket;
          fresh.publisher = pub;
          m.groups[pub] = std::move(fresh);
        }
        m.machine.join_done(pub, join_outcome::joined, b.serial, env);
        if (auto h = m.holds.find(pub); h != m.holds.end()) {
          if (asked && b.until != 0) {
            h->second.until = b.until;
            h->second.reply = b.serial;
          } else {
            release(m, pub);
          }
        }
        return;
      }
      case kind::signal: break;
      default: return;
    }
    const std::string& sender = conns_[b.from].name;
    if (b.to != m.conn) {
      if (auto h = m.holds.find(sender); h != m.holds.end()) {
        h->second.copies.push_back(b);
        return;
      }
    }
    auto g = m.groups.find(sender);
    if (b.to != m.conn || g == m.groups.end() || g->second.closing) {
      const bool after_end = g != m.groups.end() && !g->second.closing && g->second.ended;
      return dispatch(m, b, b.to == m.conn ? origin::unicast : after_end ? origin::backfill : origin::broadcast);
    }
    // In the publisher's stream: what the sockets hold goes first.
    drain(m, g->second, sender);
    packet_sink sink{*this, m, sender};
    g->second.merge.before_unicast(b.serial, sink);
    progress(m, sender, b.serial, false);
    dispatch(m, b, origin::unicast);
    progress(m, sender, b.serial, true);
    g = m.groups.find(sender);
    if (g != m.groups.end() && !g->second.closing) {
      g->second.merge.after_unicast(b.serial, sink);
      if (g->second.lose_when_handled && !g->second.merge.waiting() && g->second.merge.held() == 0) {
        lose_group(m, g->second, sender);
      }
    }
  }

  // ---- publishers -----------------------------------------------------------------------------
  struct route_sink {
    simulation& w;
    publisher& p;
    int member;
    publisher_member& pm;
    publisher_entry marker(std::uint32_t serial) { return {serial, entry_kind::marker, 0, false, {}}; }
    publisher_entry lost_notice(std::uint32_t first, std::uint32_t last, std::uint32_t count) {
      return {last, entry_kind::lost, 0, false, {first, last, count}};
    }
    void write(std::deque<publisher_entry>& chain) {
      socket& s = w.sockets_[static_cast<std::size_t>(pm.socket)];
      if (w.trace) {
        std::printf("write to %d sock %d:", member, pm.socket);
        for (auto& e : chain) std::printf(" %u/%d", e.serial, static_cast<int>(e.kind));
        std::printf(" (room %zu)\n", s.capacity - s.queue.size());
      }
      bool failed = false;
      for (std::size_t i = 0; i < chain.size(); ++i) {
        const publisher_entry& e = chain[i];
        if (failed || s.closed || s.queue.size() >= s.capacity) {
          failed = true;
        } else {
          const packet_kind k = e.kind == entry_kind::marker ? packet_kind::marker
                                : e.kind == entry_kind::lost ? packet_kind::lost
                                                             : packet_kind::signal;
          s.queue.push_back({e.serial, k, e.topic, e.lost});
        }
        p.completions.push_back({member, pm.socket, i, !failed});
      }
    }
    void send_bus(publisher_entry& e) {
      if (w.trace) std::printf("send_bus to %d: %u kind %d\n", member, e.serial, static_cast<int>(e.kind));
      bus_message b = make(kind::signal);
      b.from = p.conn;
      b.to = member;
      b.serial = e.serial;
      b.topic = e.topic;
      b.copy = e.copy;
      if (e.kind == entry_kind::bus) return w.fill_slot(p, e.serial, b);
      w.bus_out(p, b);
    }
    void watch_writable() {
      socket& s = w.sockets_[static_cast<std::size_t>(pm.socket)];
      s.watched = true;
      w.freed(s);
    }
    void discarded(const publisher_entry& e) { w.discarded_.insert({p.conn, member, e.serial}); }
  };

  void bus_out(publisher& p, const bus_message& b) {
    if (p.fifo.empty() && p.unwritten == 0) {
      conns_[p.conn].out.push_back(b);
      return;
    }
    enter_fifo(p, b.serial, b);
  }
  // As the publisher: in serial order, a message to a member before the bus copy of its signal.
  void enter_fifo(publisher& p, std::uint32_t serial, std::optional<bus_message> b) {
    const bool to_member = !b || b->to >= 0;
    auto at = p.fifo.end();
    while (at != p.fifo.begin() &&
           (serial_before(serial, std::prev(at)->first) || (to_member && std::prev(at)->first == serial))) {
      --at;
    }
    p.fifo.insert(at, {serial, std::move(b)});
  }
  void fill_slot(publisher& p, std::uint32_t serial, const bus_message& b) {
    for (auto& slot : p.fifo) {
      if (!slot.second && slot.first == serial) {
        slot.second = b;
        release(p);
        return;
      }
    }
    bus_out(p, b);
  }
  void release(publisher& p) {
    while (p.unwritten == 0 && !p.fifo.empty() && p.fifo.front().second) {
      const bus_message b = *p.fifo.front().second;
      conns_[p.conn].out.push_back(b);
      p.fifo.pop_front();
      if (b.k != kind::join_reply) continue;
      for (auto& [member_conn, pm] : p.members) {
        if (pm.awaiting_reply != b.serial) continue;
        pm.awaiting_reply.reset();
        route_sink sink{*this, p, member_conn, pm};
        pm.route.flush(sink);
        track(p, pm);
      }
    }
  }
  void track(publisher& p, publisher_member& pm) {
    const bool now = !pm.awaiting_reply && (pm.route.busy() || (!pm.route.queue().empty() && !pm.route.full()));
    if (now == pm.unwritten) return;
    pm.unwritten = now;
    p.unwritten += now ? 1 : -1;
    if (p.unwritten == 0) release(p);
  }

  publisher* live_publisher() {
    for (publisher& p : publishers_) {
      if (p.alive) return &p;
    }
    return nullptr;
  }

  void publisher_emit() {
    publisher* p = live_publisher();
    if (!p || !p->started) return;
    connection& c = conns_[p->conn];
    const std::uint32_t serial = c.next_serial();
    const int topic = pick(0, cfg_.topics - 1);
    if (chance(cfg_.targeted) && !p->members.empty()) {
      // A signal addressed to one member: in its stream, announced by a marker.
      auto it = std::next(p->members.begin(), pick(0, static_cast<int>(p->members.size()) - 1));
      route_sink sink{*this, *p, it->first, it->second};
      enter_fifo(*p, serial, std::nullopt);
      it->second.route.push({serial, entry_kind::bus, topic, false, {}}, sink);
      flush(it->second, sink);
      track(*p, it->second);
      return;
    }
    const bool big = chance(cfg_.big);
    if (p->record.size() < p->record_cap) {
      p->record.push_back({serial, topic, big, p->owns});
      if (p->owns) replayable_.insert({p->conn, serial});
    }
    std::vector<int> touched;
    for (auto& [member_conn, pm] : p->members) {
      bool match = false;
      for (const rule& r : pm.rules) match = match || rule_matches(r, p->conn, topic, owner_);
      if (!match) continue;
      touched.push_back(member_conn);
      route_sink sink{*this, *p, member_conn, pm};
      if (big) {
        enter_fifo(*p, serial, std::nullopt);
        pm.route.push({serial, entry_kind::bus, topic, true, {}}, sink);
      } else {
        pm.route.push({serial, entry_kind::packet, topic, true, {}}, sink);
      }
      track(*p, pm);
    }
    bus_message copy = make(kind::signal);
    copy.from = p->conn;
    copy.serial = serial;
    copy.topic = topic;
    bus_out(*p, copy);
    for (int member_conn : touched) {
      publisher_member& pm = p->members[member_conn];
      route_sink sink{*this, *p, member_conn, pm};
      flush(pm, sink);
      track(*p, pm);
    }
  }

  void publisher_step() {
    std::vector<publisher*> live;
    for (publisher& p : publishers_) {
      if (p.alive) live.push_back(&p);
    }
    if (live.empty()) return;
    publisher& p = *live[static_cast<std::size_t>(pick(0, static_cast<int>(live.size()) - 1))];
    connection& c = conns_[p.conn];
    const int what = pick(0, 2);
    if (what == 0 && !p.completions.empty()) {
      completion done = p.completions.front();
      p.completions.pop_front();
      if (trace)
        std::printf("completion member %d sock %d index %zu ok %d\n", done.member, done.socket, done.index, done.ok);
      auto it = p.members.find(done.member);
      if (it == p.members.end() || it->second.socket != done.socket) return;
      route_sink sink{*this, p, done.member, it->second};
      it->second.route.on_sent(done.index, done.ok, sink);
      take_up(p, done.member);
      if (auto again = p.members.find(done.member); again != p.members.end()) track(p, again->second);
      return;
    }
    if (what == 1 && !p.writable.empty()) {
      auto [member_conn, sock] = p.writable.front();
      p.writable.pop_front();
      auto it = p.members.find(member_conn);
      if (it == p.members.end() || it->second.socket != sock) return;
      route_sink sink{*this, p, member_conn, it->second};
      it->second.route.on_writable(sink);
      track(p, it->second);
      return;
    }
    if (c.in.empty()) return;
    bus_message b = std::move(c.in.front());
    c.in.pop_front();
    if (b.k == kind::own_reply) {
      p.started = true;
      p.owns = b.ok;
    } else if (b.k == kind::acquired) {
      p.owns = true;
    } else if (b.k == kind::probe) {
      bus_message reply = make(kind::probe_reply);
      reply.from = p.conn;
      reply.to = b.from;
      reply.serial = c.next_serial();
      reply.reply_to = b.serial;
      bus_out(p, reply);
    } else if (b.k == kind::join) {
      join(p, b);
    } else if (b.k == kind::leave) {
      remove_member(p, b.from);
    }
  }

  void join(publisher& p, const bus_message& call) {
    connection& c = conns_[p.conn];
    sockets_.emplace_back();
    socket& s = sockets_.back();
    s.capacity = static_cast<std::size_t>(pick(1, 6));
    s.publisher = p.conn;
    s.member = call.from;
    const int sock = static_cast<int>(sockets_.size()) - 1;
    bus_message reply = make(kind::join_reply);
    reply.from = p.conn;
    reply.to = call.from;
    reply.reply_to = call.serial;
    reply.socket = sock;
    std::vector<rule> rules;
    for (const std::string& text : call.rules) {
      const auto slash = text.find('/');
      rules.push_back({text.substr(0, slash), static_cast<std::uint32_t>(std::stoul(text.substr(slash + 1)))});
    }
    auto it = p.members.find(call.from);
    if (it != p.members.end()) {  // a re-join: reply, rules and socket together, at take-up
      it->second.next_socket = sock;
      it->second.next_rules = std::move(rules);
      it->second.next_reply = reply;
      take_up(p, call.from);
      return;
    }
    // A member that followed the name here gets, first, what was recorded under the name.
    std::vector<const recorded*> replay;
    if (call.flags & join_replay) {
      for (const recorded& r : p.record) {
        bool match = false;
        for (const rule& x : rules) match = match || (x.sender == well_known && (x.topics & (1u << r.topic)));
        if (r.owned && match) replay.push_back(&r);
      }
    }
    reply.until = replay.empty() ? 0 : replay.back()->serial;
    reply.serial = c.next_serial();
    bus_out(p, reply);  // not in the member's stream: no marker
    publisher_member& pm = p.members[call.from];
    pm.route = member_route<publisher_entry>(p.policy);
    pm.socket = sock;
    pm.rules = std::move(rules);
    if (replay.empty()) return;
    for (const auto& slot : p.fifo) {
      if (slot.second && slot.second->k == kind::join_reply && slot.second->serial == reply.serial)
        pm.awaiting_reply = reply.serial;
    }
    route_sink sink{*this, p, call.from, pm};
    for (const recorded* r : replay) {
      ++r_.replayed;
      const entry_kind k = r->big ? entry_kind::bus : entry_kind::packet;  // no reserved slot: the reply goes first
      pm.route.push({r->serial, k, r->topic, true, {}}, sink);
    }
    flush(pm, sink);
    track(p, pm);
  }
  void flush(publisher_member& pm, route_sink& sink) {
    if (!pm.awaiting_reply) pm.route.flush(sink);
  }

  void take_up(publisher& p, int member_conn) {
    auto it = p.members.find(member_conn);
    if (it == p.members.end()) return;
    publisher_member& pm = it->second;
    if (pm.next_socket < 0 || pm.route.busy()) return;
    if (trace) std::printf("take up member %d sock %d -> %d\n", member_conn, pm.socket, pm.next_socket);
    bus_message reply = pm.next_reply;
    reply.serial = conns_[p.conn].next_serial();
    bus_out(p, reply);
    pm.rules = std::move(pm.next_rules);
    sockets_[static_cast<std::size_t>(pm.socket)].closed = true;
    pm.socket = pm.next_socket;
    pm.next_socket = -1;
    route_sink sink{*this, p, member_conn, pm};
    pm.route.on_writable(sink);
    track(p, pm);
  }

  void remove_member(publisher& p, int member_conn) {
    auto it = p.members.find(member_conn);
    if (it == p.members.end()) return;
    route_sink sink{*this, p, member_conn, it->second};
    it->second.route.close(sink);
    sockets_[static_cast<std::size_t>(it->second.socket)].closed = true;
    if (it->second.unwritten) --p.unwritten;
    p.members.erase(it);
    release(p);
  }

  void restart_publisher() {
    publisher* p = live_publisher();
    if (!p) return;
    // Killed: what it held in memory is gone; what it wrote is read to the end.
    p->alive = false;
    connection& c = conns_[p->conn];
    c.alive = false;
    for (auto& [member_conn, pm] : p->members) sockets_[static_cast<std::size_t>(pm.socket)].closed = true;
    for (auto& [member_conn, pm] : p->members) {
      if (pm.next_socket >= 0) sockets_[static_cast<std::size_t>(pm.next_socket)].closed = true;
    }
    p->members.clear();
    p->fifo.clear();
    p->completions.clear();
    c.in.clear();  // calls it had not answered: the daemon answers them when it sees the death
    bus_message death = make(kind::death);
    death.from = p->conn;
    death.to = -2;
    c.out.push_back(death);
    start_publisher();
  }

  // ---- the contract ---------------------------------------------------------------------------
  void check() {
    for (const subscription& s : subs_) {
      if (!s.active) continue;
      r_.compared += s.shadow.size();
      const member& m = members_[s.member];
      if (!cfg_.drop && s.log == s.shadow) continue;
      // No duplicate, no inversion, ever.
      for (std::size_t i = 1; i < s.log.size(); ++i) {
        const signal_id& a = s.log[i - 1];
        const signal_id& b = s.log[i];
        if (a.publisher == b.publisher && !serial_before(a.serial, b.serial)) {
          return describe(s, "a duplicate or an inversion");
        }
      }
      // Every signal delivered is one the shadow got, in its order; except that a publisher killed
      // after writing a packet but before its bus copy left gave its members one signal more.
      // And a new subscription of a connection already in the group may get, first, a copy of a
      // signal emitted just before its rule was in place (sent to the connection over the bus
      // while its socket was full).
      std::vector<signal_id> log;
      for (const signal_id& got : s.log) {
        const bool on_bus = std::find(s.shadow.begin(), s.shadow.end(), got) != s.shadow.end();
        if (!on_bus && !conns_[got.publisher].alive) {
          ++r_.killed_extra;
          continue;
        }
        if (!on_bus && log.empty() && before_shadow(s, got)) {
          ++r_.early_extra;
          continue;
        }
        log.push_back(got);
      }
      std::size_t k = 0;
      for (const signal_id& got : log) {
        while (k < s.shadow.size() && !(s.shadow[k] == got)) {
          if (!excused(m, s, s.shadow[k])) return describe(s, "a signal missing");
          ++k;
        }
        if (k == s.shadow.size()) return describe(s, "a signal the bus did not deliver");
        ++k;
      }
      for (; k < s.shadow.size(); ++k) {
        if (!excused(m, s, s.shadow[k])) return describe(s, "a signal missing at the end");
      }
    }
  }
  static bool before_shadow(const subscription& s, const signal_id& id) {
    for (const signal_id& b : s.shadow) {
      if (b.publisher == id.publisher) return serial_before(id.serial, b.serial);
    }
    return true;
  }
  bool excused(const member& m, const subscription& s, const signal_id& id) {
    if (lost_by_drop(m, id)) return true;
    // The successor window is closed by the replay, except for what no replay could give: what
    // the new owner emitted before it knew it owned the name (a queued owner), or past its
    // record, or a new owner killed before its replay was out.
    if (std::find(s.window.begin(), s.window.end(), id) != s.window.end() &&
        (!replayable_.count({id.publisher, id.serial}) || !conns_[id.publisher].alive)) {
      ++r_.successor_window;
      return true;
    }
    // Under the drop policy, a publisher killed before its loss notice was written: the member
    // cannot learn what it missed (the notice is in the stream, after the socket drains).
    if (!conns_[id.publisher].alive && discarded_.count({id.publisher, m.conn, id.serial})) {
      ++r_.killed_unreported;
      return true;
    }
    return false;
  }
  bool lost_by_drop(const member& m, const signal_id& id) const {
    if (!cfg_.drop) return false;
    for (const auto& [pub, l] : m.gaps) {
      if (pub == conns_[id.publisher].name && !serial_before(id.serial, l.first) && !serial_before(l.last, id.serial)) {
        return true;
      }
    }
    return false;
  }
  void describe(const subscription& s, const char* what) {
    std::string text = std::string(what) + " for subscription " + std::to_string(s.id) + " (" + s.r.text() +
                       ") of member " + conns_[members_[s.member].conn].name + "\n  got:   ";
    for (const signal_id& id : s.log) text += conns_[id.publisher].name + "#" + std::to_string(id.serial) + " ";
    text += "\n  bus:   ";
    for (const signal_id& id : s.shadow) text += conns_[id.publisher].name + "#" + std::to_string(id.serial) + " ";
    for (const std::string& p : members_[s.member].problems) text += "\n  problem: " + p;
    fail(text);
  }

  std::mt19937_64 rng_;
  config cfg_;
  result r_;
  std::int64_t now_ = 1000000;
  std::uint64_t route_seq_ = 0;
  std::uint64_t next_sub_ = 0;
  std::string owner_;
  std::deque<int> queued_owners_;
  std::vector<connection> conns_;
  std::deque<publisher> publishers_;
  std::deque<member> members_;
  std::vector<socket> sockets_;
  std::vector<subscription> subs_;
  std::set<std::tuple<int, int, std::uint32_t>> discarded_;
  std::set<std::pair<int, std::uint32_t>>
      replayable_;  // (publisher, serial) recorded while it owned the name  // (publisher, member, serial) under drop
};

}  // namespace sim
