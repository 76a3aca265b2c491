// mcbus/multicast: the publisher, which owns a multicast group and fans signals out to it.
//
//   auto pub = mcbus::multicast::publisher::create(conn);      // exports org.mcbus.Multicast1
//   pub->emit(mcbus::message::signal("/org/example/Sensor", "org.example.Sensor1", "Reading")
//                 .append(std::string("t1"), 21.5));
//
// Members join over the bus (Join), which authenticates them: the publisher asks the bus for
// their credentials, lets an admission policy allow, deny or restrict them, then creates an
// AF_UNIX SOCK_SEQPACKET pair, attaches the member's rules compiled to classic BPF to the member's
// end, locks the filter there (SO_LOCK_FILTER) and hands that end over. emit() sends the whole
// D-Bus message to the members whose rules can match, and only to them; all sends of a loop
// iteration go out in one io_uring submission. A member that cannot keep up gets a queue up to
// its quota, then is dropped with an explicit Dropped signal (or, with the block policy, emit()
// waits, for a bounded time). By default each signal also goes once onto the bus for ordinary
// clients; mcbus members take it from the group only.
//
// A publisher refers to its connection: do not move the connection while the publisher lives.
#pragma once

#include <mcbus/connection.hpp>
#include <mcbus/match.hpp>
#include <mcbus/multicast/protocol.hpp>
#include <mcbus/multicast/routing.hpp>

#include <linux/filter.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#ifndef SO_LOCK_FILTER
#define SO_LOCK_FILTER 44
#endif

MCBUS_NAMESPACE_BEGIN
namespace multicast {

// What the bus says about a member (org.freedesktop.DBus.GetConnectionCredentials).
struct credentials {
  std::string unique_name;
  std::optional<std::uint32_t> uid;
  std::optional<std::uint32_t> pid;
  std::vector<std::uint32_t> gids;
};

// An admission policy's answer: allow, deny, or restrict (the member receives only what its rules
// AND one of the restriction rules accept).
struct admission {
  enum class verdict { allow, deny, restrict };
  verdict decision = verdict::allow;
  std::string reason;
  std::vector<std::string> restrict_rules;

  static admission allow() { return {}; }
  static admission deny(std::string why) { return {verdict::deny, std::move(why), {}}; }
  static admission restrict_to(std::vector<std::string> rules) { return {verdict::restrict, {}, std::move(rules)}; }
};

enum class overflow_policy {
  drop,   // a member over its quota for longer than the grace period is dropped (and told so)
  block,  // emit() waits for a member over its quota, up to block_timeout, then drops it
};

struct publisher_options {
  bool bus_copy = true;  // also send each signal once on the bus, for clients that did not join
  std::size_t quota_messages = 4096;
  std::size_t quota_bytes = std::size_t{8} << 20;
  std::chrono::milliseconds over_quota_grace{1000};
  overflow_policy policy = overflow_policy::drop;
  std::chrono::milliseconds block_timeout{5000};
  std::size_t max_members = 4096;
  std::size_t max_packet = max_packet_size;
  std::function<admission(const credentials&)> admit;  // unset: everyone is allowed
};

struct publisher_stats {
  std::uint64_t emitted = 0;
  std::uint64_t packets = 0;  // packets written to member sockets
  std::uint64_t bus_copies = 0;
  std::uint64_t unicast_fallbacks = 0;  // messages too large for a packet, sent over the bus
  std::uint64_t markers = 0;
  std::uint64_t backpressure = 0;  // sends that found a member's socket full
  std::uint64_t dropped_members = 0;
  std::uint64_t joins = 0;
  std::uint64_t denied = 0;
};

namespace detail {

// The conjunction of a member's rule and a restriction, key by key. Where both constrain a key
// and one test implies the other (a path inside a namespace, a namespace inside a namespace, a
// string inside an arg0namespace), the narrower one is kept; where they cannot both hold, no
// message can satisfy the pair and nothing is returned. Two tests that one rule cannot state
// together (two senders that may be a name and its owner, argNpath against another argN test)
// keep the restriction's: the filter then passes a little more than the conjunction, never more
// than the restriction allows, and the member's exact matching takes the rest away.
inline std::optional<match_rule> restrict_rule(const match_rule& wanted, const match_rule& allowed) {
  using opt = std::optional<std::string_view>;
  match_rule out;
  // Equality keys: equal or absent on one side, or no message has both values.
  bool disjoint = false;
  auto both = [&](opt a, opt b) -> opt {
    if (a && b && *a != *b) disjoint = true;
    return b ? b : a;
  };
  if (wanted.type() && allowed.type() && *wanted.type() != *allowed.type()) return std::nullopt;
  if (auto t = allowed.type() ? allowed.type() : wanted.type()) (void)out.set_type(*t);
  const opt sender = allowed.sender() ? allowed.sender() : wanted.sender();
  const opt interface = both(wanted.interface(), allowed.interface());
  const opt member = both(wanted.member(), allowed.member());
  const opt destination = both(wanted.destination(), allowed.destination());
  if (disjoint) return std::nullopt;
  if (sender) (void)out.set_sender(*sender);
  if (interface) (void)out.set_interface(*interface);
  if (member) (void)out.set_member(*member);
  if (destination) (void)out.set_destination(*destination);
  (void)out.set_eavesdrop(wanted.eavesdrop() && allowed.eavesdrop());

  // path is a point and path_namespace a subtree: keep the narrower, or nothing if they miss.
  const opt wp = wanted.path(), wn = wanted.path_namespace(), ap = allowed.path(), an = allowed.path_namespace();
  if ((wp && ap && *wp != *ap) || (wp && an && !match_rule::in_path_namespace(*wp, *an)) ||
      (ap && wn && !match_rule::in_path_namespace(*ap, *wn)) ||
      (wn && an && !match_rule::in_path_namespace(*wn, *an) && !match_rule::in_path_namespace(*an, *wn))) {
    return std::nullopt;
  }
  if (wp || ap) {
    (void)out.set_path(wp ? *wp : *ap);
  } else if (wn && an) {
    (void)out.set_path_namespace(match_rule::in_path_namespace(*wn, *an) ? *wn : *an);
  } else if (wn || an) {
    (void)out.set_path_namespace(wn ? *wn : *an);
  }

  for (unsigned index = 0; index <= match_rule::max_arg; ++index) {
    const std::optional<match_arg> w = wanted.find_arg(index), a = allowed.find_arg(index);
    if (!w && !a) continue;
    match_arg pick = a ? *a : *w;
    if (w && a) {
      using k = match_arg_kind;
      const auto within = [](const match_arg& x, const match_arg& ns) {  // x's matches all lie in ns
        return match_rule::arg_namespace_matches(x.value, ns.value);
      };
      if (w->kind == k::string && a->kind == k::string) {
        if (w->value != a->value) return std::nullopt;
      } else if (w->kind != k::path && a->kind != k::path) {  // string or namespace, one of each or both
        const bool w_in_a = a->kind == k::arg0namespace && within(*w, *a);
        const bool a_in_w = w->kind == k::arg0namespace && within(*a, *w);
        if (!w_in_a && !a_in_w) return std::nullopt;
        pick = w_in_a ? *w : *a;
      }
    }
    (void)out.add_arg(index, pick.kind, pick.value);
  }
  return out;
}

}  // namespace detail

template <class Connection>
class basic_publisher {
 public:
  using clock = std::chrono::steady_clock;

  static result<std::unique_ptr<basic_publisher>> create(Connection& conn, publisher_options opts = {}) {
    if (conn.unique_name().empty()) return error(errc::not_connected, error::no_offset, "a publisher needs a bus");
    if (!conn.can_pass_fds()) return error(errc::not_supported, error::no_offset, "the bus connection cannot pass fds");
    auto marker = match_rule::parse(marker_rule);
    if (!marker) return marker.error();
    std::unique_ptr<basic_publisher> p(new basic_publisher(conn, std::move(opts), *marker));
    p->start();
    return p;
  }

  basic_publisher(const basic_publisher&) = delete;
  basic_publisher& operator=(const basic_publisher&) = delete;
  ~basic_publisher() {
    *alive_ = false;
    conn_.set_send_hook(nullptr);
    conn_.set_packet_send_handlers(nullptr, nullptr);
    conn_.set_packet_closed_handler(nullptr);
    for (auto& [name, m] : members_) conn_.transport().remove_packet_source(hangup_source(m.id));
    release_held_bus();
  }

  // Sends a signal to every member whose rules can match it (and, by default, once on the bus).
  error emit(message&& signal) {
    if (signal.type() != message_type::signal)
      return {errc::invalid_argument, error::no_offset, "emit() takes a signal"};
    if (!conn_.connected()) return errc::not_connected;
    signal.set_sender(bus_name::from_unchecked(conn_.unique_name()));
    signal.set_serial(conn_.allocate_serial());
    if (error e = signal.seal()) return e;
    auto out = std::make_shared<packet>(std::move(signal), false);
    auto view = out->msg.view();
    if (!view) return view.error();
    ++stats_.emitted;
    // Packets carry no fds, and a socket takes at most max_packet: those go over the bus instead.
    const bool fits = out->msg.size() <= opts_.max_packet && out->msg.fds().empty();
    const auto owner_of = [this](std::string_view name) -> std::string_view { return own_name(name); };
    // Only the rules the index files under this signal's keys are tested, each once.
    ++emit_seq_;
    touched_.clear();
    index_.candidates(*view, [&](detail::route r) {
      auto it = by_id_.find(r.member);
      if (it == by_id_.end()) return;
      member& mem = *it->second;
      if (mem.last_emit == emit_seq_) return;
      const match_context ctx{mem.name, owner_of};
      if (!mem.rules[r.rule].matches(*view, ctx)) return;
      mem.last_emit = emit_seq_;
      touched_.push_back(&mem);
    });
    std::vector<std::string> dropped;
    for (member* mem : touched_) {
      if (!fits) {
        unicast(*mem, *view);
      } else if (enqueue(*mem, out)) {
        dropped.push_back(mem->name);
      }
    }
    if (opts_.bus_copy) {
      ++stats_.bus_copies;
      auto copy = message::copy_of(*view);
      if (copy) send_to_bus(std::move(*copy));
    }
    flush_touched();
    for (const std::string& name : dropped) remove_member(name, true);
    if (opts_.policy == overflow_policy::block) return wait_for_quota();
    return {};
  }

  // Inside a loop iteration, emit() only queues and everything goes out in one submission when
  // the iteration ends. A burst emitted outside the loop can get the same batching: while a
  // batch object lives, emit() queues; its destruction submits once.
  class batch {
   public:
    explicit batch(basic_publisher& p) : p_(&p) { ++p_->batching_; }
    batch(const batch&) = delete;
    batch& operator=(const batch&) = delete;
    ~batch() {
      if (--p_->batching_ == 0 && !p_->conn_.dispatching()) (void)p_->conn_.transport().flush();
    }

   private:
    basic_publisher* p_;
  };

  std::size_t member_count() const noexcept { return members_.size(); }
  const publisher_stats& stats() const noexcept { return stats_; }
  std::vector<std::string> member_names() const {
    std::vector<std::string> out;
    for (const auto& [name, m] : members_) out.push_back(name);
    return out;
  }
  // A member's packet queue (waiting for its socket): for monitoring and tests.
  std::size_t queued(std::string_view member) const {
    auto it = members_.find(member);
    return it == members_.end() ? 0 : it->second.queue.size() + it->second.inflight.size();
  }

 private:
  struct packet {
    packet(message&& m, bool is_marker) : msg(std::move(m)), marker(is_marker) {}
    message msg;
    bool marker;
  };

  struct member {
    std::string name;
    std::uint32_t id = 0;
    unix_fd socket;
    std::vector<match_rule> rules;  // what it asked for, restricted by the admission policy
    std::deque<std::shared_ptr<packet>> queue;
    std::deque<std::shared_ptr<packet>> inflight;
    std::deque<packet_send> sends;  // stable storage for the in-flight sends
    std::size_t queued_bytes = 0;
    bool waiting_writable = false;
    std::optional<clock::time_point> over_quota_since;
    // Bus messages to this member, each waiting for its marker (same serial) to be written.
    std::deque<message> after_marker;
    subscription gone_watch;
    std::uint64_t last_emit = 0;  // the emit that last selected it: each emit sends once
  };

  basic_publisher(Connection& conn, publisher_options opts, match_rule marker)
      : conn_(conn), opts_(std::move(opts)), marker_rule_(std::move(marker)) {}

  void start() {
    object_ = conn_.add_object(
        path, object_builder()
                  .interface(interface)
                  .method(join_method,
                          [this](method_call& call, std::vector<std::string> rules, std::uint32_t flags) {
                            on_join(call, std::move(rules), flags);
                          },
                          {"rules", "flags"}, {"socket", "version", "max_packet"})
                  .returns("huu")  // the reply is sent later (deferred), so the handler's type cannot say
                  .method(leave_method, [this](method_call& call) { remove_member(std::string(call.sender()), false); })
                  .template signal<std::string>(dropped_signal, {"reason"}));
    conn_.set_send_hook([this](message& m) { return on_bus_send(m); });
    conn_.set_packet_send_handlers([this](std::uint64_t token, int res) { on_sent(token, res); },
                                   [this](std::uint32_t id) { on_writable(id); });
    conn_.set_packet_closed_handler([this](std::uint32_t source, const error&) {
      if (!(source & hangup_bit)) return;
      if (member* m = by_id(source & ~hangup_bit)) remove_member(m->name, false);
    });
  }

  // ---- joining ----------------------------------------------------------------------------------

  void on_join(method_call& call, std::vector<std::string> texts, std::uint32_t flags) {
    const std::string sender(call.sender());
    deferred_reply reply = call.defer();
    if (flags & ~known_join_flags) return reply.fail(call_error(errors::unsupported_flags, "unknown Join flags"));
    if (texts.empty()) return reply.fail(call_error(errors::invalid_rules, "Join needs at least one rule"));
    std::vector<match_rule> rules;
    for (const std::string& t : texts) {
      auto r = match_rule::parse(t);
      if (!r) return reply.fail(call_error(errors::invalid_rules, "'" + t + "': " + r.error().message()));
      rules.push_back(std::move(*r));
    }
    if (!members_.count(sender) && members_.size() >= opts_.max_members) {
      return reply.fail(call_error(errors::too_many_members, "this publisher has as many members as it takes"));
    }
    message ask = message::method_call(bus_service, bus_path, bus_interface, "GetConnectionCredentials");
    ask.append(std::string_view(sender));
    auto alive = alive_;
    const error e = conn_.call_async(std::move(ask), [this, alive, sender, rules = std::move(rules),
                                                      reply = std::move(reply)](call_result<message_view> r) mutable {
      if (!*alive) return;
      if (!r) return reply.fail(call_error(errors::failed, "no credentials for the caller: " + r.error().message()));
      admit(sender, read_credentials(sender, *r), std::move(rules), std::move(reply));
    });
    if (e) reply.fail(call_error(errors::failed, e.message()));
  }

  static credentials read_credentials(const std::string& sender, const message_view& reply) {
    credentials c;
    c.unique_name = sender;
    auto dict = reply.read_first<std::map<std::string, variant>>();
    if (!dict) return c;
    if (auto it = dict->find("UnixUserID"); it != dict->end()) {
      if (auto v = it->second.to<std::uint32_t>()) c.uid = *v;
    }
    if (auto it = dict->find("ProcessID"); it != dict->end()) {
      if (auto v = it->second.to<std::uint32_t>()) c.pid = *v;
    }
    if (auto it = dict->find("UnixGroupIDs"); it != dict->end()) {
      if (auto v = it->second.to<std::vector<std::uint32_t>>()) c.gids = *v;
    }
    return c;
  }

  void admit(const std::string& sender, const credentials& creds, std::vector<match_rule> rules, deferred_reply reply) {
    const admission verdict = opts_.admit ? opts_.admit(creds) : admission::allow();
    if (verdict.decision == admission::verdict::deny) {
      ++stats_.denied;
      return reply.fail(
          call_error(errors::access_denied, verdict.reason.empty() ? "not allowed to join" : verdict.reason));
    }
    if (verdict.decision == admission::verdict::restrict) {
      std::vector<match_rule> narrowed;
      for (const std::string& t : verdict.restrict_rules) {
        auto allowed = match_rule::parse(t);
        if (!allowed) return reply.fail(call_error(errors::failed, "the admission policy gave a bad rule"));
        for (const match_rule& r : rules) {
          if (auto both = detail::restrict_rule(r, *allowed)) narrowed.push_back(std::move(*both));
        }
      }
      rules = std::move(narrowed);
    }
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
      return reply.fail(call_error(errors::failed, "socketpair failed"));
    }
    unix_fd mine(sv[0]), theirs(sv[1]);
    if (error e = attach_filter(theirs.get(), sender, rules))
      return reply.fail(call_error(errors::failed, e.message()));
    // The reply must not get a marker: the member has no stream to read it from yet.
    replying_join_ = true;
    reply.reply(theirs, version, static_cast<std::uint32_t>(opts_.max_packet));
    replying_join_ = false;
    install(sender, std::move(mine), std::move(rules));
    ++stats_.joins;
  }

  // The member's rules (and the marker rule) as one classic BPF program, attached to its end of
  // the pair and locked there: the member cannot detach or replace it.
  error attach_filter(int fd, const std::string& member_name, const std::vector<match_rule>& rules) {
    std::vector<match_rule> all = rules;
    all.push_back(marker_rule_);
    std::vector<name_owner> owners;
    for (const std::string& n : conn_.owned_names()) owners.push_back({n, conn_.unique_name()});
    bpf_options o;
    o.receiver = member_name;
    o.owners = owners;
    auto prog = compile_bpf(all, o);
    if (!prog) return prog.error();
    sock_fprog fprog{};
    fprog.len = static_cast<unsigned short>(prog->size());
    fprog.filter = reinterpret_cast<sock_filter*>(const_cast<bpf_insn*>(prog->data()));
    if (::setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof(fprog)) != 0) {
      return error::from_errno(errno, "SO_ATTACH_FILTER");
    }
    const int one = 1;
    if (::setsockopt(fd, SOL_SOCKET, SO_LOCK_FILTER, &one, sizeof(one)) != 0) {
      return error::from_errno(errno, "SO_LOCK_FILTER");
    }
    return {};
  }

  void install(const std::string& name, unix_fd socket, std::vector<match_rule> rules) {
    auto it = members_.find(name);
    if (it != members_.end()) {
      // A re-join: the new socket replaces the old one and what is queued moves with it. Sends in
      // flight finish on the old socket (under the old id); any that fail come back to the queue.
      member& m = it->second;
      conn_.transport().remove_packet_source(hangup_source(m.id));
      if (!m.inflight.empty()) retire(std::move(m.socket), m.id, name, std::move(m.inflight), std::move(m.sends));
      by_id_.erase(m.id);
      m.id = ++next_id_;
      by_id_[m.id] = &m;
      m.inflight.clear();
      m.sends.clear();
      m.socket = std::move(socket);
      watch_hangup(m);
      m.rules = std::move(rules);
      set_waiting(m, false);
      rebuild_index();
      flush(m);
      return;
    }
    member& m = members_[name];
    m.name = name;
    m.id = ++next_id_;
    by_id_[m.id] = &m;
    m.socket = std::move(socket);
    m.rules = std::move(rules);
    watch_hangup(m);
    rebuild_index();
    auto alive = alive_;
    std::string rule =
        "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
        "member='NameOwnerChanged',arg0='" +
        name + "'";
    auto watch = conn_.subscribe(
        rule,
        [this, alive, name](const message_view& msg) {
          if (!*alive) return;
          auto args = msg.read<std::string_view, std::string_view, std::string_view>();
          if (args && std::get<2>(*args).empty()) remove_member(name, false);
        },
        subscribe_via::bus);
    if (watch) m.gone_watch = std::move(*watch);
  }

  // A member that closes its socket but stays on the bus sends no NameOwnerChanged: the transport
  // reads the publisher's end (members send nothing on it) and reports its end of file. The
  // source ids carry a high bit, apart from the member side's own sources on the same connection.
  static constexpr std::uint32_t hangup_bit = 0x80000000u;
  static std::uint32_t hangup_source(std::uint32_t id) noexcept { return hangup_bit | id; }
  void watch_hangup(member& m) { (void)conn_.transport().add_packet_source(hangup_source(m.id), m.socket.get()); }

  // ---- sending ----------------------------------------------------------------------------------

  void rebuild_index() {
    index_.clear();
    for (auto& [name, m] : members_) {
      for (std::size_t i = 0; i < m.rules.size(); ++i) index_.add({m.id, static_cast<std::uint32_t>(i)}, m.rules[i]);
    }
  }

  void set_waiting(member& m, bool on) {
    if (m.waiting_writable == on) return;
    m.waiting_writable = on;
    on ? ++backlogged_ : --backlogged_;
  }

  std::string_view own_name(std::string_view name) const {
    for (const std::string& n : conn_.owned_names()) {
      if (n == name) return conn_.unique_name();
    }
    return {};
  }

  // Queues a packet; true when the member is to be dropped (over quota for too long).
  bool enqueue(member& m, std::shared_ptr<packet> p) {
    m.queued_bytes += p->msg.size();
    m.queue.push_back(std::move(p));
    return quota_exceeded(m);
  }

  // A message that cannot be a packet goes to the member over the bus, announced in its stream.
  void unicast(member& m, const message_view& v) {
    ++stats_.unicast_fallbacks;
    message direct = message::from_header(v.header());
    direct.set_destination(bus_name::from_unchecked(m.name));
    direct.set_serial(v.serial());
    // The body starts 8-aligned in both messages, so its bytes are valid as they are.
    direct.append_with(v.header().signature, [&](writer& w) { w.put_raw(v.body_bytes()); });
    for (int fd : v.fds()) direct.fds().emplace_back(unix_fd::dup_cloexec(fd));
    if (direct.seal()) return;
    announce_and_hold(m, std::move(direct));
  }

  void announce_and_hold(member& m, message&& bus_message) {
    message marker = message::signal(path, interface, unicast_marker);
    marker.set_sender(bus_name::from_unchecked(conn_.unique_name()));
    marker.set_serial(bus_message.serial());
    if (marker.seal()) return;
    ++stats_.markers;
    m.after_marker.push_back(std::move(bus_message));
    m.queued_bytes += marker.size();
    m.queue.push_back(std::make_shared<packet>(std::move(marker), true));
    flush(m);
  }

  // Every bus message of the connection passes here first (the send hook).
  bool on_bus_send(message& m) {
    if (replying_join_) return false;
    auto view = m.view();
    if (!view) return false;
    const std::string_view dest = view->header().destination;
    if (!dest.empty()) {
      auto it = members_.find(dest);
      if (it == members_.end()) return false;
      // To a member: after everything it has been sent on the group socket.
      announce_and_hold(it->second, std::move(m));
      return true;
    }
    if (view->type() == message_type::signal && (backlogged() || !held_bus_.empty())) {
      held_bus_.push_back(std::move(m));
      return true;
    }
    return false;
  }

  void send_to_bus(message&& m) {
    if (backlogged() || !held_bus_.empty()) {
      held_bus_.push_back(std::move(m));
      return;
    }
    (void)conn_.send_unhooked(std::move(m));
  }

  bool backlogged() const noexcept { return backlogged_ > 0; }

  void release_held_bus() {
    while (!held_bus_.empty() && !backlogged()) {
      (void)conn_.send_unhooked(std::move(held_bus_.front()));
      held_bus_.pop_front();
    }
  }

  void flush_touched() {
    conn_.transport().reap_packet_sends();  // what the last emit() sent, before queueing more
    for (member* m : touched_) flush(*m);
    if (!conn_.dispatching() && batching_ == 0) (void)conn_.transport().flush();
  }

  // One linked chain per member at a time keeps its packets in order.
  void flush(member& m) {
    if (!m.inflight.empty() || m.waiting_writable || m.queue.empty()) return;
    constexpr std::size_t chain_max = 32;
    std::vector<packet_send*> chain;
    m.sends.clear();
    while (!m.queue.empty() && chain.size() < chain_max) {
      std::shared_ptr<packet> p = std::move(m.queue.front());
      m.queue.pop_front();
      packet_send& s = m.sends.emplace_back();
      s.set(m.socket.get(), p->msg.header_bytes(), p->msg.body_bytes(),
            std::uint64_t{m.id} << 32 | static_cast<std::uint32_t>(m.inflight.size()));
      m.inflight.push_back(std::move(p));
      chain.push_back(&s);
    }
    conn_.transport().send_packets(chain);
  }

  void on_sent(std::uint64_t token, int res) {
    const auto id = static_cast<std::uint32_t>(token >> 32);
    member* m = by_id(id);
    if (!m) return retired_done(id, res);
    if (m->inflight.empty()) return;
    if (res >= 0) {
      std::shared_ptr<packet> p = std::move(m->inflight.front());
      m->inflight.pop_front();
      m->queued_bytes -= p->msg.size();
      ++stats_.packets;
      if (p->marker && !m->after_marker.empty()) {
        (void)conn_.send_unhooked(std::move(m->after_marker.front()));
        m->after_marker.pop_front();
      }
    } else if (res == -EAGAIN || res == -ECANCELED) {
      if (res == -EAGAIN) ++stats_.backpressure;
      // Not sent: back to the front of the queue, in order, once the whole chain has reported.
      m->queue.push_front(std::move(m->inflight.back()));
      m->inflight.pop_back();
      if (!m->waiting_writable) {
        set_waiting(*m, true);
        conn_.transport().watch_writable(m->id, m->socket.get());
      }
      if (!m->inflight.empty()) return;
      if (quota_exceeded(*m)) return remove_member(std::string(m->name), true);
    } else {
      const std::string name = m->name;  // the member closed its end: it left
      return remove_member(name, false);
    }
    if (m->inflight.empty()) {
      flush(*m);
      if (!backlogged()) release_held_bus();
    }
  }

  void on_writable(std::uint32_t id) {
    member* m = by_id(id);
    if (!m) return;
    set_waiting(*m, false);
    flush(*m);
    if (!conn_.dispatching()) (void)conn_.transport().flush();
  }

  member* by_id(std::uint32_t id) {
    auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : it->second;
  }

  // ---- quotas and dropping -------------------------------------------------------------------------

  bool over_quota(const member& m) const {
    return m.queue.size() + m.inflight.size() > opts_.quota_messages || m.queued_bytes > opts_.quota_bytes;
  }

  // True when the member has been over its quota for longer than the grace period (drop policy).
  bool quota_exceeded(member& m) {
    if (!over_quota(m)) {
      m.over_quota_since.reset();
      return false;
    }
    const auto now = clock::now();
    if (!m.over_quota_since) m.over_quota_since = now;
    return opts_.policy == overflow_policy::drop && now - *m.over_quota_since >= opts_.over_quota_grace;
  }

  error wait_for_quota() {
    const auto deadline = clock::now() + opts_.block_timeout;
    while (true) {
      std::string slow;
      for (auto& [name, m] : members_) {
        if (over_quota(m)) slow = name;
      }
      if (slow.empty()) return {};
      if (clock::now() >= deadline) {
        remove_member(slow, true);
        continue;
      }
      if (error e = conn_.run_for(std::chrono::milliseconds(5))) return e;
    }
  }

  void remove_member(const std::string& name, bool dropped) {
    auto it = members_.find(name);
    if (it == members_.end()) return;
    member& m = it->second;
    conn_.transport().remove_packet_source(hangup_source(m.id));
    // Bus messages held for markers still go out: over the bus nothing is lost.
    while (!m.after_marker.empty()) {
      (void)conn_.send_unhooked(std::move(m.after_marker.front()));
      m.after_marker.pop_front();
    }
    if (!m.inflight.empty()) retire(std::move(m.socket), m.id, {}, std::move(m.inflight), std::move(m.sends));
    if (dropped) {
      ++stats_.dropped_members;
      message note = message::signal(path, interface, dropped_signal);
      note.set_destination(bus_name::from_unchecked(name));
      note.append(std::string_view("over quota: the member did not read its packets in time"));
      // Past the hook, which holds bus messages behind backlogged members: this one is for a
      // member that has none any more. It still needs a serial of its own, in sequence.
      note.set_serial(conn_.allocate_serial());
      (void)conn_.send_unhooked(std::move(note));
    }
    set_waiting(m, false);
    by_id_.erase(m.id);
    touched_.erase(std::remove(touched_.begin(), touched_.end(), &m), touched_.end());
    members_.erase(it);
    rebuild_index();
    release_held_bus();
  }

  // Sockets whose last sends are still in flight stay open until those complete. Sends that fail
  // there go back to the front of the member's queue (if it re-joined), in order.
  struct retired_socket {
    std::uint32_t id;
    std::string member_name;
    unix_fd socket;
    std::deque<std::shared_ptr<packet>> inflight;
    std::deque<packet_send> sends;
    std::deque<std::shared_ptr<packet>> undelivered;
  };
  void retire(unix_fd socket, std::uint32_t id, std::string member_name, std::deque<std::shared_ptr<packet>> inflight,
              std::deque<packet_send> sends) {
    retired_.push_back({id, std::move(member_name), std::move(socket), std::move(inflight), std::move(sends), {}});
  }
  void retired_done(std::uint32_t id, int res) {
    for (auto it = retired_.begin(); it != retired_.end(); ++it) {
      if (it->id != id) continue;
      if (!it->inflight.empty()) {
        if (res < 0 && !it->member_name.empty()) it->undelivered.push_back(it->inflight.front());
        it->inflight.pop_front();
      }
      if (!it->inflight.empty()) return;
      if (auto m = members_.find(it->member_name); m != members_.end()) {
        for (auto p = it->undelivered.rbegin(); p != it->undelivered.rend(); ++p) m->second.queue.push_front(*p);
        flush(m->second);
      }
      retired_.erase(it);
      return;
    }
  }

  Connection& conn_;
  publisher_options opts_;
  match_rule marker_rule_;
  object_handle object_;
  std::map<std::string, member, std::less<>> members_;  // node-based: member pointers stay valid
  std::unordered_map<std::uint32_t, member*> by_id_;
  detail::routing_index index_;
  std::vector<member*> touched_;  // members the current emit() selected
  std::uint64_t emit_seq_ = 0;
  std::size_t backlogged_ = 0;  // members waiting for their socket to drain
  int batching_ = 0;            // open batch objects
  std::deque<message> held_bus_;
  std::deque<retired_socket> retired_;
  std::uint32_t next_id_ = 0;
  bool replying_join_ = false;
  publisher_stats stats_;
  // Callbacks that may outlive the publisher (pending calls, subscriptions) check this first.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

using publisher = basic_publisher<connection>;

}  // namespace multicast
MCBUS_NAMESPACE_END
