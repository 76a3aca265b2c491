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
// iteration go out in one io_uring submission. Each member's stream is a member_route (route.hpp):
// a member whose socket is full is served over the bus until it drains, so nothing is lost and
// nobody waits for it. By default each signal also goes once onto the bus for ordinary clients;
// mcbus members take it from the group only.
//
// The publisher's bus messages leave in serial order: one addressed to a member waits until its
// marker is written (a single submission), and what follows it waits behind it.
//
// A publisher refers to its connection: do not move the connection while the publisher lives.
#pragma once

#include <mcbus/connection.hpp>
#include <mcbus/match.hpp>
#include <mcbus/multicast/admission.hpp>
#include <mcbus/multicast/join_request.hpp>
#include <mcbus/multicast/protocol.hpp>
#include <mcbus/multicast/route.hpp>
#include <mcbus/multicast/routing.hpp>

#include <linux/filter.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#ifndef SO_LOCK_FILTER
#define SO_LOCK_FILTER 44
#endif

MCBUS_NAMESPACE_BEGIN
namespace multicast {

struct publisher_options {
  bool bus_copy = true;  // also send each signal once on the bus, for clients that did not join
  // What happens to a member whose socket is full (route.hpp). The default loses nothing and
  // delays nobody: the member is served over the bus until its socket drains.
  overflow_policy policy = overflow_policy::bus;
  // overflow_policy::block: emit() waits while a member has more than this many packets queued,
  // up to block_timeout; then that member is served over the bus.
  std::size_t quota_messages = 4096;
  std::chrono::milliseconds block_timeout{5000};
  // Members in all, and per uid. Each member costs the publisher one fd, so the total is also
  // bounded by the soft RLIMIT_NOFILE less `fd_reserve` (read at each Join): a Join past it is
  // refused with TooManyMembers instead of failing everyone's Join with EMFILE. dbus-daemon's
  // system bus allows 256 connections per user.
  std::size_t max_members = 4096;
  std::size_t max_members_per_uid = 256;
  std::size_t fd_reserve = 64;
  // Joins being answered at once (waiting for the caller's credentials, or for a re-join to take
  // effect): one per caller, and this many in all. More are refused with LimitsExceeded at once,
  // so that Joins sent back to back cost the publisher neither memory nor its loop.
  std::size_t max_joins_in_flight = 64;
  // What one Join may carry, checked on the wire before anything is allocated for it, and before
  // the caller's credentials are asked for. dbus-daemon's system bus allows 512 match rules per
  // connection; a rule is at most 1024 bytes there.
  std::size_t max_rules_per_member = 512;
  std::size_t max_join_bytes = 64 * 1024;  // the rules' text, all together
  // Rules that name none of interface, member, path, arg0 or arg0namespace are tested on every
  // emitted signal, for every member (routing.hpp); this many per member at most, so that members
  // cannot make each emit() cost members × max_rules_per_member tests. A Join with more is
  // refused with InvalidRules, and its caller stays on the bus.
  std::size_t max_unkeyed_rules_per_member = 16;
  std::size_t max_packet = max_packet_size;
  // A member that followed a well-known name here from its previous owner may have had no rule
  // on the bus when this publisher's first signals left (the successor window,
  // docs/multicast-protocol.md). The publisher records what it emits for `replay_for` after it
  // starts or takes a name, at most replay_max_signals and replay_max_bytes, and replays what
  // matches to such a member when it joins (join_replay). replay_for = 0 turns it off.
  std::chrono::milliseconds replay_for{10000};
  std::size_t replay_max_signals = 16384;
  std::size_t replay_max_bytes = std::size_t{4} << 20;
  std::function<admission(const credentials&)> admit;  // unset: everyone is allowed
};

struct publisher_stats {
  std::uint64_t emitted = 0;
  std::uint64_t packets = 0;  // packets written to member sockets (markers and notices included)
  std::uint64_t bus_copies = 0;
  std::uint64_t unicast_fallbacks = 0;  // signals too large for a packet (or with fds), sent over the bus
  std::uint64_t overflow_unicasts = 0;  // packets sent over the bus because a member's socket was full
  std::uint64_t markers = 0;
  std::uint64_t backpressure = 0;  // times a member's socket was found full
  std::uint64_t lost = 0;          // packets discarded under overflow_policy::drop (each one reported)
  std::uint64_t joins = 0;         // Joins answered with a socket
  std::uint64_t denied = 0;        // refused by the admission policy, or for eavesdropping
  std::uint64_t refused_full = 0;  // refused with TooManyMembers (a limit above, or out of fds)
  std::uint64_t refused_busy = 0;  // refused with LimitsExceeded (max_joins_in_flight)
  std::uint64_t replayed = 0;      // signals replayed to members that followed a name here (join_replay)
};

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
    for (auto& [name, m] : members_) {
      conn_.transport().remove_packet_source(hangup_source(m.id));
      route_sink sink{*this, m};
      m.route.close(sink);
    }
    conn_.set_send_hook(nullptr);
    conn_.set_packet_send_handlers(nullptr, nullptr);
    conn_.set_packet_closed_handler(nullptr);
    for (bus_slot& slot : bus_fifo_) {
      if (slot.msg) (void)conn_.send_unhooked(std::move(*slot.msg));
    }
  }

  // Sends a signal to every member whose rules can match it (and, by default, once on the bus).
  error emit(message&& signal) {
    if (signal.type() != message_type::signal)
      return {errc::invalid_argument, error::no_offset, "emit() takes a signal"};
    if (!conn_.connected()) return errc::not_connected;
    signal.set_sender(bus_name::from_unchecked(conn_.unique_name()));
    signal.set_serial(conn_.allocate_serial());
    if (error e = signal.seal()) return e;
    auto out = std::make_shared<message>(std::move(signal));
    auto view = out->view();
    if (!view) return view.error();
    ++stats_.emitted;
    record(out, view->serial());
    // Packets carry no fds, and a socket takes at most max_packet: those go over the bus instead.
    const bool fits = out->size() <= opts_.max_packet && out->fds().empty();
    const auto owner_of = [this](std::string_view name) -> std::string_view { return own_name(name); };
    // Only the rules the index files under this signal's keys are tested, each once.
    ++emit_seq_;
    touched_.clear();
    // A signal addressed to one connection goes to that member only, eavesdropper or not.
    const std::string_view addressed = view->header().destination;
    index_.candidates(*view, [&](detail::route r) {
      auto it = by_id_.find(r.member);
      if (it == by_id_.end()) return;
      member& mem = *it->second;
      if (mem.last_emit == emit_seq_ || (!addressed.empty() && mem.name != addressed)) return;
      const match_context ctx{mem.name, owner_of};
      if (!mem.rules[r.rule].matches(*view, ctx)) return;
      mem.last_emit = emit_seq_;
      touched_.push_back(&mem);
    });
    conn_.transport().reap_packet_sends();  // how the last emit() went, before queueing more
    for (member* mem : touched_) {
      route_sink sink{*this, *mem};
      if (fits) {
        mem->route.push(entry{view->serial(), entry_kind::packet, out, {}}, sink);
      } else {
        ++stats_.unicast_fallbacks;
        reserve_bus_slot(view->serial());
        mem->route.push(entry{view->serial(), entry_kind::bus, {}, unicast_copy(*mem, *view)}, sink);
      }
      track(*mem);
    }
    if (opts_.bus_copy) {
      ++stats_.bus_copies;
      auto copy = message::copy_of(*view);
      if (copy) bus_out(std::move(*copy));
    }
    for (member* mem : touched_) {
      route_sink sink{*this, *mem};
      flush(*mem, sink);
      track(*mem);
    }
    submit_unless_batching();
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
      if (--p_->batching_ == 0) p_->submit_unless_batching();
    }

   private:
    basic_publisher* p_;
  };

  std::size_t member_count() const noexcept { return members_.size(); }
  // Whether packets are in flight, or bus messages wait behind them. connection::flush() waits
  // until neither: a publisher that flushes before it exits leaves nothing behind.
  bool holds_output() const noexcept { return !bus_fifo_.empty() || unwritten_ != 0; }
  const publisher_stats& stats() const noexcept { return stats_; }
  std::vector<std::string> member_names() const {
    std::vector<std::string> out;
    for (const auto& [name, m] : members_) out.push_back(name);
    return out;
  }
  // A member's packets waiting in the publisher (queued or being written): for monitoring and tests.
  std::size_t queued(std::string_view member) const {
    auto it = members_.find(member);
    return it == members_.end() ? 0 : it->second.route.queued();
  }
  // True while a member's socket is full (it is then served over the bus, or waited for).
  bool overflowing(std::string_view member) const {
    auto it = members_.find(member);
    return it != members_.end() && it->second.route.full();
  }

 private:
  // One entry of a member's stream: a packet to write (shared by every member it goes to), or a
  // message for the bus.
  struct entry {
    std::uint32_t serial = 0;
    entry_kind kind = entry_kind::packet;
    std::shared_ptr<message> pkt;
    message bus;
  };

  struct member {
    std::string name;
    std::uint32_t id = 0;
    std::optional<std::uint32_t> uid;  // from the bus, for max_members_per_uid
    unix_fd socket;
    std::vector<match_rule> rules;  // what it asked for, restricted by the admission policy
    // A re-join, taken up once no chain is in flight on the old socket: its socket (our end and
    // the member's), its rules, and the reply that announces them.
    unix_fd next_socket;
    unix_fd next_reply_socket;
    std::vector<match_rule> next_rules;
    deferred_reply next_reply;
    bool next_reply_replay = false;  // that Join asked for a replay: its reply has four values
    member_route<entry> route;
    std::deque<packet_send> sends;  // stable storage for the chain in flight
    subscription gone_watch;
    std::uint64_t last_emit = 0;  // the emit that last selected it: each emit sends once
    bool unwritten = false;       // its route holds packets not yet written (counted in unwritten_)
    // A member being replayed to starts its stream once its Join reply has left (the replay's
    // serials are older than the reply's, and must not overtake it on the bus).
    std::optional<std::uint32_t> awaiting_reply;
  };

  // The I/O that a member_route asks for.
  struct route_sink {
    basic_publisher& p;
    member& m;
    entry marker(std::uint32_t serial) {
      message mk = message::signal(path, interface, unicast_marker);
      ++p.stats_.markers;
      return p.control_entry(std::move(mk), serial, entry_kind::marker);
    }
    entry lost_notice(std::uint32_t first, std::uint32_t last, std::uint32_t count) {
      message note = message::signal(path, interface, multicast::lost_notice);
      note.append(first, last, count);
      return p.control_entry(std::move(note), last, entry_kind::lost);
    }
    void write(std::deque<entry>& chain) { p.write_chain(m, chain); }
    void send_bus(entry& e) { p.send_entry(m, e); }
    void discarded(const entry&) { ++p.stats_.lost; }
    void watch_writable() {
      ++p.stats_.backpressure;
      p.conn_.transport().watch_writable(m.id, m.socket.get());
    }
  };

  basic_publisher(Connection& conn, publisher_options opts, match_rule marker)
      : conn_(conn), opts_(std::move(opts)), marker_rule_(std::move(marker)) {}

  void start() {
    object_ = conn_.add_object(
        path,
        object_builder()
            .interface(interface)
            .raw_method(join_method, "asu", "huu", [this](method_call& call) { on_join(call); }, {"rules", "flags"},
                        {"socket", "version", "max_packet"})
            .method(leave_method, [this](method_call& call) { remove_member(std::string(call.sender())); })
            .template signal<std::string>(dropped_signal, {"reason"})
            .template signal<std::uint32_t, std::uint32_t, std::uint32_t>(lost_notice, {"first", "last", "count"}));
    // flush() waits for what is held here too, unless emit() is batching (inside a loop
    // iteration, or a batch): that goes out when the iteration or the batch ends.
    conn_.set_send_hook([this](message& m) { return on_bus_send(m); },
                        [this] { return !conn_.dispatching() && batching_ == 0 && holds_output(); });
    conn_.set_packet_send_handlers([this](std::uint64_t token, int res) { on_sent(token, res); },
                                   [this](std::uint32_t id) { on_writable(id); });
    conn_.set_packet_closed_handler([this](std::uint32_t source, const error&) {
      if (!(source & hangup_bit)) return;
      if (member* m = by_id(source & ~hangup_bit)) remove_member(m->name);
    });
  }

  // ---- joining ----------------------------------------------------------------------------------

  // Bounds first, read from the wire before anything is allocated for the rules; then the
  // caller's credentials and the admission policy; only an admitted caller's rules are parsed.
  void on_join(method_call& call) {
    const std::string sender(call.sender());
    deferred_reply reply = call.defer();
    auto request = read_join_request(call.message(), {opts_.max_rules_per_member, opts_.max_join_bytes});
    if (!request) return reply.fail(std::move(request.error()));
    const std::uint32_t flags = request->flags;
    std::vector<std::string> texts = std::move(request->rules);
    if (auto full = over_member_limit(sender)) return reply.fail(std::move(*full));
    if (auto busy = joins_in_flight(sender)) return reply.fail(std::move(*busy));
    asking_.insert(sender);
    message ask = message::method_call(bus_service, bus_path, bus_interface, "GetConnectionCredentials");
    ask.append(std::string_view(sender));
    auto alive = alive_;
    const error e = conn_.call_async(std::move(ask), [this, alive, sender, flags, texts = std::move(texts),
                                                      reply = std::move(reply)](call_result<message_view> r) mutable {
      if (!*alive) return;
      asking_.erase(sender);
      if (!r) return reply.fail(call_error(errors::failed, "no credentials for the caller: " + r.error().message()));
      admit(sender, read_credentials(sender, *r), texts, std::move(reply), flags);
    });
    if (e) {
      asking_.erase(sender);
      reply.fail(call_error(errors::failed, e.message()));
    }
  }

  // A caller with a Join still being answered (its credentials asked for, or its re-join waiting
  // to take effect) gets no second one; nor does anyone while max_joins_in_flight are.
  std::optional<call_error> joins_in_flight(const std::string& sender) {
    auto it = members_.find(sender);
    const bool pending = asking_.count(sender) || (it != members_.end() && it->second.next_socket);
    if (!pending && asking_.size() < opts_.max_joins_in_flight) return std::nullopt;
    ++stats_.refused_busy;
    return call_error(dbus_error::limits_exceeded, pending ? "a Join of yours is still being answered"
                                                           : "too many Joins are being answered; try again");
  }

  std::optional<call_error> over_unkeyed_limit(const std::vector<match_rule>& rules) const {
    const auto unkeyed = static_cast<std::size_t>(
        std::ranges::count_if(rules, [](const match_rule& r) { return !detail::routing_index::keyed(r); }));
    if (unkeyed <= opts_.max_unkeyed_rules_per_member) return std::nullopt;
    return call_error(errors::invalid_rules,
                      std::to_string(unkeyed) +
                          " rules name none of interface, member, path, arg0 or arg0namespace; a " +
                          "publisher tests those on every signal and takes " +
                          std::to_string(opts_.max_unkeyed_rules_per_member) + " per member");
  }
  // The total: max_members, and what the fd limit leaves after the reserve. Checked before the
  // credentials are asked for, and again when the socket is made (Joins overlap).
  std::optional<call_error> over_member_limit(const std::string& sender) {
    if (members_.count(sender)) return std::nullopt;  // a re-join replaces its socket
    std::size_t limit = opts_.max_members;
    rlimit nofile{};
    if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
      const auto soft = static_cast<std::size_t>(nofile.rlim_cur);
      limit = std::min(limit, soft > opts_.fd_reserve ? soft - opts_.fd_reserve : 0);
    }
    if (members_.size() < limit) return std::nullopt;
    ++stats_.refused_full;
    return call_error(errors::too_many_members,
                      "this publisher has as many members as it takes (" + std::to_string(limit) + ")");
  }
  std::optional<call_error> over_uid_limit(const std::string& sender, const credentials& creds) {
    if (!creds.uid || members_.count(sender)) return std::nullopt;
    const auto same = static_cast<std::size_t>(
        std::ranges::count_if(members_, [&](const auto& kv) { return kv.second.uid == creds.uid; }));
    if (same < opts_.max_members_per_uid) return std::nullopt;
    ++stats_.refused_full;
    return call_error(errors::too_many_members, "uid " + std::to_string(*creds.uid) + " has " + std::to_string(same) +
                                                    " members, as many as it may");
  }

  // A rule in an error message, cut short: the caller sent it, and needs no more than its start.
  static std::string quote_rule(std::string_view t) {
    constexpr std::size_t shown = 64;
    return "'" + std::string(t.substr(0, shown)) + (t.size() > shown ? "...'" : "'");
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

  void admit(const std::string& sender, const credentials& creds, const std::vector<std::string>& texts,
             deferred_reply reply, std::uint32_t flags) {
    const admission verdict = opts_.admit ? opts_.admit(creds) : admission::allow();
    if (verdict.decision == admission::verdict::deny) {
      ++stats_.denied;
      return reply.fail(
          call_error(errors::access_denied, verdict.reason.empty() ? "not allowed to join" : verdict.reason));
    }
    std::vector<match_rule> rules;
    rules.reserve(texts.size());
    for (const std::string& t : texts) {
      auto r = match_rule::parse(t);
      if (!r) return reply.fail(call_error(errors::invalid_rules, quote_rule(t) + ": " + r.error().message()));
      const auto dest = r->destination();
      if (!verdict.eavesdrop && (r->eavesdrop() || (dest && *dest != sender))) {
        ++stats_.denied;
        return reply.fail(call_error(errors::access_denied, quote_rule(t) +
                                                                ": eavesdropping (eavesdrop='true', or a destination "
                                                                "other than the member) needs the policy's consent"));
      }
      // A rule given twice is kept once: each one left is tested on the signals it is filed under.
      if (std::ranges::find(rules, *r) == rules.end()) rules.push_back(std::move(*r));
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
    if (auto many = over_unkeyed_limit(rules)) return reply.fail(std::move(*many));
    if (auto full = over_member_limit(sender)) return reply.fail(std::move(*full));
    if (auto full = over_uid_limit(sender, creds)) return reply.fail(std::move(*full));
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
      const int err = errno;
      if (err == EMFILE || err == ENFILE) ++stats_.refused_full;
      return reply.fail(call_error(err == EMFILE || err == ENFILE ? errors::too_many_members : errors::failed,
                                   std::string("no socket for the member: ") + std::strerror(err)));
    }
    unix_fd mine(sv[0]), theirs(sv[1]);
    if (error e = attach_filter(theirs.get(), sender, rules))
      return reply.fail(call_error(errors::failed, e.message()));
    ++stats_.joins;
    const bool wants_replay = flags & join_replay;
    auto it = members_.find(sender);
    if (it != members_.end()) {
      // A re-join: the reply, the new rules and the new socket all take effect together, once no
      // chain is in flight on the old socket, so that the old socket holds only what was emitted
      // before the reply and the new one only what came after (take_up_next_socket()). Nothing
      // is replayed to a member: its stream goes on.
      member& m = it->second;
      m.next_socket = std::move(mine);
      m.next_rules = std::move(rules);
      m.next_reply = std::move(reply);
      m.next_reply_socket = std::move(theirs);
      m.next_reply_replay = wants_replay;
      take_up_next_socket(m);
      return;
    }
    std::vector<const recorded*> replay;
    if (wants_replay) replay = select_replay(rules);
    send_join_reply(reply, theirs, wants_replay, replay.empty() ? 0 : replay.back()->serial);
    member& m = install(sender, std::move(mine), std::move(rules), creds.uid);
    if (replay.empty()) return;
    if (std::ranges::any_of(bus_fifo_, [this](const bus_slot& b) { return b.serial == join_reply_serial_; })) {
      m.awaiting_reply = join_reply_serial_;
      ++awaiting_replies_;
    }
    push_replay(m, replay);
  }

  // The reply is not part of the member's stream (it has none yet, or is replacing it): it takes
  // no marker. Its serial is the member's boundary: everything emitted after it is routed with the
  // rules it answers.
  void send_join_reply(deferred_reply& reply, const unix_fd& theirs, bool replay_asked, std::uint32_t last_replayed) {
    replying_join_ = true;  // on_bus_send() notes its serial in join_reply_serial_
    if (replay_asked) {
      reply.reply(theirs, version, static_cast<std::uint32_t>(opts_.max_packet), last_replayed);
    } else {
      reply.reply(theirs, version, static_cast<std::uint32_t>(opts_.max_packet));
    }
    replying_join_ = false;
  }

  // ---- the replay for members that followed a name here (join_replay) ---------------------------

  struct recorded {
    std::uint32_t serial;
    std::shared_ptr<message> msg;
    std::shared_ptr<const std::vector<std::string>> names;  // the names owned when it was emitted
  };

  void record(const std::shared_ptr<message>& m, std::uint32_t serial) {
    const std::vector<std::string>& owned = conn_.owned_names();
    if (!names_ || *names_ != owned) {
      const bool gained = !names_ || std::ranges::any_of(owned, [this](const std::string& n) {
        return std::ranges::find(*names_, n) == names_->end();
      });
      names_ = std::make_shared<const std::vector<std::string>>(owned);
      if (gained && opts_.replay_for.count() > 0) {
        record_until_ = clock::now() + opts_.replay_for;
        recording_ = true;
      }
    }
    if (!recording_) return;  // most emits: no clock read once the window is over
    if (clock::now() >= record_until_) {
      recording_ = false;
      return forget_record();
    }
    if (record_.size() >= opts_.replay_max_signals || record_bytes_ + m->size() > opts_.replay_max_bytes) return;
    record_.push_back({serial, m, names_});
    record_bytes_ += m->size();
  }
  void forget_record() {
    record_.clear();
    record_bytes_ = 0;
  }

  // What the record holds that a rule naming a well-known name matched when it was emitted
  // (rules naming a unique name had their rule on the bus all along).
  std::vector<const recorded*> select_replay(const std::vector<match_rule>& rules) {
    std::vector<const recorded*> out;
    if (clock::now() >= record_until_) forget_record();
    for (const recorded& r : record_) {
      auto view = r.msg->view();
      if (!view) continue;
      const auto owner_of = [&](std::string_view name) -> std::string_view {
        return std::ranges::find(*r.names, name) != r.names->end() ? conn_.unique_name() : std::string_view();
      };
      const match_context ctx{std::string_view(), owner_of};
      for (const match_rule& rule : rules) {
        const auto sender = rule.sender();
        if (!sender || sender->empty() || (*sender)[0] == ':' || !rule.matches(*view, ctx)) continue;
        out.push_back(&r);
        break;
      }
    }
    return out;
  }

  // The replay goes first in the new member's stream, as packets (or over the bus, announced by
  // markers, for what does not fit one).
  void push_replay(member& m, const std::vector<const recorded*>& replay) {
    route_sink sink{*this, m};
    for (const recorded* r : replay) {
      auto view = r->msg->view();
      if (!view) continue;
      ++stats_.replayed;
      if (r->msg->size() <= opts_.max_packet && r->msg->fds().empty()) {
        m.route.push(entry{r->serial, entry_kind::packet, r->msg, {}}, sink);
      } else {  // no reserved slot: its broadcast copy left long ago, and the reply goes first
        m.route.push(entry{r->serial, entry_kind::bus, {}, unicast_copy(m, *view)}, sink);
      }
    }
    flush(m, sink);
    track(m);
    submit_unless_batching();
  }
  void flush(member& m, route_sink& sink) {
    if (!m.awaiting_reply) m.route.flush(sink);
  }
  // The bus FIFO sent `serial`: a member waiting for that Join reply starts its stream.
  void reply_left(std::uint32_t serial) {
    for (auto& [name, m] : members_) {
      if (m.awaiting_reply != serial) continue;
      m.awaiting_reply.reset();
      --awaiting_replies_;
      route_sink sink{*this, m};
      m.route.flush(sink);
      track(m);
    }
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

  member& install(const std::string& name, unix_fd socket, std::vector<match_rule> rules,
                  std::optional<std::uint32_t> uid) {
    member& m = members_[name];
    m.name = name;
    m.uid = uid;
    m.id = ++next_id_;
    m.route = member_route<entry>(opts_.policy);
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
          if (args && std::get<2>(*args).empty()) remove_member(name);
        },
        subscribe_via::bus);
    if (watch) m.gone_watch = std::move(*watch);
    return m;
  }

  void take_up_next_socket(member& m) {
    if (!m.next_socket || m.route.busy()) return;
    send_join_reply(m.next_reply, m.next_reply_socket, m.next_reply_replay, 0);
    m.next_reply_socket.reset();
    m.rules = std::move(m.next_rules);
    m.next_rules.clear();
    conn_.transport().remove_packet_source(hangup_source(m.id));
    by_id_.erase(m.id);
    m.id = ++next_id_;
    by_id_[m.id] = &m;
    m.socket = std::move(m.next_socket);  // the old one closes here: nothing of it is in flight
    watch_hangup(m);
    rebuild_index();
    route_sink sink{*this, m};
    m.route.on_writable(sink);  // a fresh socket has room, whatever the old one had
    track(m);
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

  std::string_view own_name(std::string_view name) const {
    for (const std::string& n : conn_.owned_names()) {
      if (n == name) return conn_.unique_name();
    }
    return {};
  }

  entry control_entry(message&& m, std::uint32_t serial, entry_kind kind) {
    m.set_sender(bus_name::from_unchecked(conn_.unique_name()));
    m.set_serial(serial);
    (void)m.seal();  // a fixed header and at most three integers: always fits
    return entry{serial, kind, std::make_shared<message>(std::move(m)), {}};
  }

  // The signal as a message addressed to one member, with the same serial.
  message unicast_copy(const member& m, const message_view& v) {
    message direct = message::from_header(v.header());
    direct.set_destination(bus_name::from_unchecked(m.name));
    direct.set_serial(v.serial());
    // The body starts 8-aligned in both messages, so its bytes are valid as they are.
    direct.append_with(v.header().signature, [&](writer& w) { w.put_raw(v.body_bytes()); });
    for (int fd : v.fds()) direct.fds().emplace_back(unix_fd::dup_cloexec(fd));
    (void)direct.seal();
    return direct;
  }

  void write_chain(member& m, std::deque<entry>& chain) {
    std::vector<packet_send*> sends;
    m.sends.clear();
    for (std::size_t i = 0; i < chain.size(); ++i) {
      packet_send& s = m.sends.emplace_back();
      s.set(m.socket.get(), chain[i].pkt->header_bytes(), chain[i].pkt->body_bytes(),
            std::uint64_t{m.id} << 32 | static_cast<std::uint32_t>(i));
      sends.push_back(&s);
    }
    conn_.transport().send_packets(sends);
  }

  void send_entry(member& m, entry& e) {
    if (e.kind == entry_kind::packet) {
      ++stats_.overflow_unicasts;
      auto v = e.pkt->view();
      if (v) bus_out(unicast_copy(m, *v), true);
      return;
    }
    if (e.kind == entry_kind::bus) fill_bus_slot(e.serial, std::move(e.bus));
  }

  // Every bus message of the connection passes here first (the send hook).
  bool on_bus_send(message& m) {
    if (replying_join_) {
      join_reply_serial_ = m.serial();
      return hold_behind_fifo(m);
    }
    auto view = m.view();
    if (!view) return false;
    const std::string_view dest = view->header().destination;
    if (!dest.empty()) {
      auto it = members_.find(dest);
      if (it != members_.end()) {
        // To a member: in its stream, after everything it has been sent on the group socket.
        member& mem = it->second;
        const std::uint32_t serial = m.serial();
        reserve_bus_slot(serial);
        route_sink sink{*this, mem};
        mem.route.push(entry{serial, entry_kind::bus, {}, std::move(m)}, sink);
        flush(mem, sink);
        track(mem);
        submit_unless_batching();
        return true;
      }
    }
    return hold_behind_fifo(m);
  }

  // ---- the publisher's bus messages, in serial order ----------------------------------------------

  struct bus_slot {
    std::uint32_t serial;
    std::optional<message> msg;  // empty: a message to a member, waiting for its marker
  };

  // Nothing leaves for the bus while a packet emitted before it is still in the publisher's
  // memory: if the publisher dies, a plain subscriber cannot have a signal a member never got.
  // Packets leave within one submission, or go over the bus themselves when a socket is full, so
  // the wait is short and nobody waits on a slow member.
  bool hold_behind_fifo(message& m, bool to_member = false) {
    if (bus_fifo_.empty() && unwritten_ == 0) return false;
    enter_fifo(m.serial(), std::move(m), to_member);
    return true;
  }
  // In serial order: a packet that comes back from a full socket goes over the bus before a later
  // message already waiting there, and before the bus copy of the same signal. Were the publisher
  // killed between the two sends, the member would then have one signal more than a plain
  // subscriber (a documented exception), never one less.
  void enter_fifo(std::uint32_t serial, std::optional<message> m, bool to_member) {
    auto at = bus_fifo_.end();
    while (at != bus_fifo_.begin() &&
           (serial_before(serial, std::prev(at)->serial) || (to_member && std::prev(at)->serial == serial))) {
      --at;
    }
    bus_fifo_.insert(at, bus_slot{serial, std::move(m)});
  }
  void release_fifo() {
    while (unwritten_ == 0 && !bus_fifo_.empty() && bus_fifo_.front().msg) {
      const std::uint32_t serial = bus_fifo_.front().serial;
      (void)conn_.send_unhooked(std::move(*bus_fifo_.front().msg));
      bus_fifo_.pop_front();
      if (awaiting_replies_ != 0) reply_left(serial);
    }
  }
  // Called after every change to a member's route: counts the members with packets about to be
  // written. A member that the block policy is waiting for does not count: others do not wait for
  // it (what it holds is lost if the publisher dies meanwhile; the block policy's price).
  void track(member& m) {
    const bool now = !m.awaiting_reply && (m.route.busy() || (!m.route.queue().empty() && !m.route.full()));
    if (now == m.unwritten) return;
    m.unwritten = now;
    now ? ++unwritten_ : --unwritten_;
    if (unwritten_ == 0) release_fifo();
  }
  void bus_out(message&& m, bool to_member = false) {
    if (!hold_behind_fifo(m, to_member)) (void)conn_.send_unhooked(std::move(m));
  }
  void reserve_bus_slot(std::uint32_t serial) { enter_fifo(serial, std::nullopt, true); }
  void fill_bus_slot(std::uint32_t serial, message&& m) {
    for (bus_slot& slot : bus_fifo_) {
      if (!slot.msg && slot.serial == serial) {
        slot.msg = std::move(m);
        release_fifo();
        return;
      }
    }
    bus_out(std::move(m), true);
  }

  // Outside the loop and outside a batch, what was queued goes out now, and the packet sends
  // that completed at once are taken in, so that the bus copies they held go out too.
  void submit_unless_batching() {
    if (conn_.dispatching() || batching_ != 0) return;
    (void)conn_.transport().flush();
    if (unwritten_ != 0) conn_.transport().reap_packet_sends();
  }

  void on_sent(std::uint64_t token, int res) {
    const auto id = static_cast<std::uint32_t>(token >> 32);
    member* m = by_id(id);
    if (!m) return retired_done(id);
    if (res >= 0) {
      ++stats_.packets;
    } else if (res != -EAGAIN && res != -ECANCELED) {
      return remove_member(std::string(m->name));  // the member closed its end: it left
    }
    route_sink sink{*this, *m};
    m->route.on_sent(static_cast<std::uint32_t>(token), res >= 0, sink);
    take_up_next_socket(*m);
    track(*m);
    submit_unless_batching();
  }

  void on_writable(std::uint32_t id) {
    member* m = by_id(id);
    if (!m) return;
    route_sink sink{*this, *m};
    m->route.on_writable(sink);
    track(*m);
    submit_unless_batching();
  }

  member* by_id(std::uint32_t id) {
    auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : it->second;
  }

  // ---- block policy -------------------------------------------------------------------------------

  error wait_for_quota() {
    const auto deadline = clock::now() + opts_.block_timeout;
    while (true) {
      member* slow = nullptr;
      for (auto& [name, m] : members_) {
        if (m.route.queued() > opts_.quota_messages) slow = &m;
      }
      if (!slow) return {};
      if (clock::now() >= deadline) {
        route_sink sink{*this, *slow};
        slow->route.spill(sink);  // waited long enough: it is served over the bus
        track(*slow);
        continue;
      }
      if (error e = conn_.run_for(std::chrono::milliseconds(5))) return e;
    }
  }

  void remove_member(const std::string& name) {
    auto it = members_.find(name);
    if (it == members_.end()) return;
    member& m = it->second;
    conn_.transport().remove_packet_source(hangup_source(m.id));
    route_sink sink{*this, m};
    m.route.close(sink);  // bus messages still go out: over the bus nothing is lost
    // The chain in flight keeps its socket and bytes until the kernel is done with them.
    if (m.route.busy()) {
      retired_.push_back({m.id, std::move(m.socket), std::move(m.sends), std::move(m.route.inflight())});
    }
    if (m.unwritten) --unwritten_;
    if (m.awaiting_reply) --awaiting_replies_;
    by_id_.erase(m.id);
    touched_.erase(std::remove(touched_.begin(), touched_.end(), &m), touched_.end());
    members_.erase(it);
    rebuild_index();
    release_fifo();
  }

  struct retired_socket {
    std::uint32_t id;
    unix_fd socket;
    std::deque<packet_send> sends;
    std::deque<entry> entries;
  };
  void retired_done(std::uint32_t id) {
    for (auto it = retired_.begin(); it != retired_.end(); ++it) {
      if (it->id != id) continue;
      if (!it->entries.empty()) it->entries.pop_front();
      if (it->entries.empty()) retired_.erase(it);
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
  int batching_ = 0;  // open batch objects
  std::deque<bus_slot> bus_fifo_;
  std::size_t unwritten_ = 0;  // members whose packets are not all written yet
  std::deque<retired_socket> retired_;
  std::uint32_t next_id_ = 0;
  std::set<std::string, std::less<>> asking_;  // callers whose credentials are being asked for
  bool replying_join_ = false;
  std::uint32_t join_reply_serial_ = 0;  // the serial of the last Join reply sent (or held in the FIFO)
  std::size_t awaiting_replies_ = 0;     // members whose stream waits for their Join reply to leave
  std::deque<recorded> record_;          // what was emitted since the publisher started or took a name
  std::size_t record_bytes_ = 0;
  clock::time_point record_until_{};
  bool recording_ = false;
  std::shared_ptr<const std::vector<std::string>> names_;  // the names owned at the last emit
  publisher_stats stats_;
  // Callbacks that may outlive the publisher (pending calls, subscriptions) check this first.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

using publisher = basic_publisher<connection>;

}  // namespace multicast
MCBUS_NAMESPACE_END
