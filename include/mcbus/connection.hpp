// mcbus: a connection to a D-Bus bus (or peer).
//
//   auto conn = mcbus::connection::session();             // result<connection>
//   auto reply = conn->call(mcbus::message::method_call(
//       "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "ListNames"));
//   auto names = reply->read<std::vector<std::string_view>>();
//
// basic_connection<Transport> does the work: authentication and Hello, serials, pending calls
// with timeouts, blocking calls that wait without dispatching anything else (as libdbus and sd-bus
// do), asynchronous calls with callbacks, signal subscriptions filtered exactly on the client
// side, exported objects, name ownership, and the hooks a foreign event loop needs (fd(), events(),
// timeout(), process()). mcbus::connection picks io_uring or poll at run time.
//
// A connection is used from one thread. Handlers may call back into it, blocking calls included.
#pragma once

#include <mcbus/connection/auth.hpp>
#include <mcbus/connection/call_error.hpp>
#include <mcbus/connection/inbox.hpp>
#include <mcbus/connection/object.hpp>
#include <mcbus/connection/received_message.hpp>
#include <mcbus/error.hpp>
#include <mcbus/io/auto.hpp>
#include <mcbus/match.hpp>
#include <mcbus/multicast/member.hpp>
#include <mcbus/wire.hpp>

#include <poll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

MCBUS_NAMESPACE_BEGIN

inline constexpr bus_name bus_service = "org.freedesktop.DBus";
inline constexpr object_path_view bus_path = "/org/freedesktop/DBus";
inline constexpr interface_name bus_interface = "org.freedesktop.DBus";

struct connection_options {
  std::chrono::milliseconds call_timeout{25000};  // the D-Bus default, as in libdbus and sd-bus
  std::chrono::milliseconds connect_timeout{25000};
  bool unix_fds = true;  // negotiate fd passing where the socket allows it
  bool hello = true;     // register on a bus; false for a direct peer connection
  transport_choice transport = transport_choice::automatic;
  std::size_t max_fds_per_message = 16;  // received messages carrying more are refused
  // Bytes received and not yet dispatched. Past this the connection stops reading (the peer is
  // pushed back, as libdbus does at its 63 MiB max_received_size) until dispatching catches up.
  // A blocking call whose reply is behind such a flood then times out, with a reason.
  std::size_t max_inbox_bytes = 64 * 1024 * 1024;
  // Calls sent with call_async() (and the connection's own) still waiting for a reply. One more
  // is refused with errc::over_quota. dbus-daemon's session bus allows 50000 per connection,
  // its system bus 128.
  std::size_t max_pending_calls = 8192;
  // How long packets wait for a message that a Unicast marker announced over the bus, and how
  // many packets and bytes may pile up behind it, before the marker is given up (and reported).
  // The same counts bound the bus copies held from a new owner of a name until its replay is in.
  // A publisher cannot make a member hold more than this, per membership.
  std::chrono::milliseconds multicast_marker_timeout{25000};
  std::size_t multicast_max_held = 65536;
  std::size_t multicast_max_held_bytes = 16 * 1024 * 1024;
  // subscribe() asks a rule's sender whether it runs a group, and joins it, in the background
  // (the bus serves the subscription meanwhile); a sender that does not answer in this time is
  // asked again later.
  std::chrono::milliseconds multicast_join_timeout{25000};
  // After a group is lost, the subscriptions are on the bus at once, and the publisher is asked
  // to take us back after a delay that doubles each time (multicast/member.hpp).
  multicast::rejoin_backoff multicast_rejoin{};
};

// RequestName flags and replies (org.freedesktop.DBus.RequestName).
namespace name_flags {
inline constexpr std::uint32_t allow_replacement = 0x1;
inline constexpr std::uint32_t replace_existing = 0x2;
inline constexpr std::uint32_t do_not_queue = 0x4;
}  // namespace name_flags
enum class request_name_reply : std::uint32_t { primary_owner = 1, in_queue = 2, exists = 3, already_owner = 4 };
enum class release_name_reply : std::uint32_t { released = 1, non_existent = 2, not_owner = 3 };

template <class Transport>
class basic_connection;

// Keeps a signal subscription alive; destroying it removes the match rule from the bus.
class subscription {
 public:
  subscription() = default;
  subscription(subscription&& o) noexcept : id_(o.id_), cancel_(std::move(o.cancel_)) { o.cancel_ = nullptr; }
  subscription& operator=(subscription&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      cancel_ = std::move(o.cancel_);
      o.cancel_ = nullptr;
    }
    return *this;
  }
  subscription(const subscription&) = delete;
  subscription& operator=(const subscription&) = delete;
  ~subscription() { reset(); }

  void reset() {
    if (cancel_) std::exchange(cancel_, nullptr)();
  }
  bool active() const noexcept { return static_cast<bool>(cancel_); }
  // Forget the subscription without removing it: it lives as long as the connection.
  void release() noexcept { cancel_ = nullptr; }

 private:
  template <class>
  friend class basic_connection;
  subscription(std::uint64_t id, std::function<void()> cancel) : id_(id), cancel_(std::move(cancel)) {}
  std::uint64_t id_ = 0;
  std::function<void()> cancel_;
};

template <class Transport>
class basic_connection {
 public:
  using clock = std::chrono::steady_clock;
  using signal_handler = std::function<void(const message_view&)>;
  using reply_handler = std::function<void(call_result<message_view>)>;

  // ---- opening ------------------------------------------------------------------------------

  static result<basic_connection> open(std::string_view address, connection_options opts = {}) {
    auto sock = open_socket(address, opts.connect_timeout);
    if (!sock) return sock.error();
    return from_socket(std::move(sock->fd), sock->can_pass_fds, opts);
  }

  static result<basic_connection> session(connection_options opts = {}) {
    auto list = session_bus_address();
    if (!list) return list.error();
    return open_first(*list, opts);
  }

  static result<basic_connection> system(connection_options opts = {}) {
    auto list = system_bus_address();
    if (!list) return list.error();
    return open_first(*list, opts);
  }

  // Authenticates on an already connected socket, then says Hello (unless opts.hello is false).
  static result<basic_connection> from_socket(unix_fd fd, bool can_pass_fds, connection_options opts = {}) {
    sasl_options sasl;
    sasl.negotiate_unix_fd = can_pass_fds && opts.unix_fds;
    auto auth = authenticate(fd.get(), std::move(sasl), opts.connect_timeout);
    if (!auth) return auth.error();
    result<Transport> t = open_transport(fd, auth->unix_fds, opts.transport);
    if (!t) return t.error();
    basic_connection c;
    c.st_ = std::make_shared<state>(std::move(*t), opts);
    c.install_packet_handler();
    c.st_->unix_fds = auth->unix_fds;
    c.st_->guid = auth->guid;
    if (!auth->leftover.empty()) {
      received_fds none;
      if (error e = c.st_->in.feed(std::as_bytes(std::span(auth->leftover)), none)) return e;
    }
    if (opts.hello) {
      auto name = c.call_method(bus_service, bus_path, bus_interface, "Hello");
      if (!name) return name.error().cause();
      auto unique = name->template read_first<std::string>();
      if (!unique) return unique.error();
      c.st_->unique_name = std::move(*unique);
    }
    return c;
  }

  // The transport calls back into the connection for multicast packets; a move points it at the
  // new object.
  basic_connection(basic_connection&& o) noexcept : st_(std::move(o.st_)) { install_packet_handler(); }
  basic_connection& operator=(basic_connection&& o) noexcept {
    if (this != &o) {
      st_ = std::move(o.st_);
      install_packet_handler();
    }
    return *this;
  }
  ~basic_connection() {
    if (st_ && st_->connected) flush(std::chrono::milliseconds(1000));
  }

  // ---- state --------------------------------------------------------------------------------

  const std::string& unique_name() const noexcept { return st_->unique_name; }
  bool connected() const noexcept { return st_->connected; }
  bool can_pass_fds() const noexcept { return st_->unix_fds; }
  const char* transport_name() const noexcept {
    if constexpr (requires(const Transport& t) { t.name(); }) {
      return st_->transport.name();
    } else {
      return Transport::name;
    }
  }
  const connection_options& options() const noexcept { return st_->opts; }

  // ---- sending ------------------------------------------------------------------------------

  // Assigns the next serial, seals and queues the message; returns the serial. Outside a handler
  // the queue is flushed at once; inside one, everything queued goes out in one batch when the
  // loop iteration ends.
  result<std::uint32_t> send(message&& m) {
    state& s = *st_;
    if (!s.connected) return error(errc::not_connected);
    if (!m.fds().empty() && !s.unix_fds) {
      return error(errc::not_supported, error::no_offset, "this connection cannot pass unix fds");
    }
    const std::uint32_t serial = next_serial();
    m.set_serial(serial);
    if (error e = m.seal()) return e;
    if (s.send_hook && s.send_hook(m)) return serial;
    s.transport.enqueue(std::move(m));
    s.unconfirmed_output = true;
    if (s.iterating == 0) {
      if (error e = s.transport.flush()) {
        lost(e);
        return e;
      }
    }
    return serial;
  }

  // Writes everything queued, waiting up to `timeout`: what a publisher on this connection still
  // holds (packets in flight, and the bus copies that wait behind them) included. On a bus, it
  // then waits until the bus has read it all (one Peer.Ping round trip): a bus that writes to a
  // client which has exited gets EPIPE, and dbus-daemon then drops what it had not yet read from
  // that client, signals to other subscribers included. Call it before the process exits; the
  // destructor tries for one second only.
  error flush(std::chrono::milliseconds timeout = std::chrono::milliseconds(25000)) {
    state& s = *st_;
    const auto deadline = clock::now() + timeout;
    while (true) {
      while (s.connected && (s.transport.has_pending_output() || (s.send_hook_holding && s.send_hook_holding()))) {
        if (clock::now() >= deadline) return {errc::timeout, error::no_offset, "flush"};
        if (error e = wait_without_dispatching(deadline)) return e;
      }
      if (!s.connected) return errc::disconnected;
      // The reply cannot be read while the inbox is full: then what was written is all we know.
      if (!s.opts.hello || !s.unconfirmed_output || s.receiving_paused) return {};
      if (error e = confirm_bus_read_everything(deadline)) return e;
    }
  }

  // Sends a call and waits for its reply. Nothing else is dispatched while waiting; messages that
  // arrive meanwhile stay queued for the next process().
  call_result<received_message> call(message&& m, std::chrono::milliseconds timeout = std::chrono::milliseconds(-1)) {
    state& s = *st_;
    if (timeout.count() < 0) timeout = s.opts.call_timeout;
    m.set_no_reply_expected(false);
    auto serial = send(std::move(m));
    if (!serial) return call_error(serial.error());
    return wait_for_reply(*serial, clock::now() + timeout);
  }

  // Convenience: builds the call from its parts and appends `args`.
  template <class... Args>
  call_result<received_message> call_method(bus_name destination, object_path_view path, interface_name interface,
                                            member_name member, const Args&... args) {
    message m = message::method_call(destination, path, interface, member);
    if constexpr (sizeof...(Args) > 0) m.append(args...);
    if (m.err()) return call_error(m.err());
    return call(std::move(m));
  }

  // Sends a call; `handler` runs from the loop with the reply or the error (timeout included).
  error call_async(message&& m, reply_handler handler,
                   std::chrono::milliseconds timeout = std::chrono::milliseconds(-1)) {
    state& s = *st_;
    if (timeout.count() < 0) timeout = s.opts.call_timeout;
    if (error e = pending_room(s)) return e;
    m.set_no_reply_expected(false);
    auto serial = send(std::move(m));
    if (!serial) return serial.error();
    const auto deadline = clock::now() + timeout;
    s.pending.emplace(*serial, pending_call{deadline, std::move(handler)});
    s.deadlines.emplace(deadline, *serial);
    return {};
  }

  // Emits a signal (a message built with message::signal).
  result<std::uint32_t> emit(message&& m) { return send(std::move(m)); }

  // ---- the bus ------------------------------------------------------------------------------

  call_result<request_name_reply> request_name(bus_name name, std::uint32_t flags = 0) {
    auto r = call_method(bus_service, bus_path, bus_interface, "RequestName", name.str(), flags);
    if (!r) return r.error();
    auto code = r->template read_first<std::uint32_t>();
    if (!code) return call_error(code.error());
    const auto reply = static_cast<request_name_reply>(*code);
    // Known at once, not only when NameAcquired is dispatched: a publisher created next compiles
    // its members' filters with the names it owns.
    if ((reply == request_name_reply::primary_owner || reply == request_name_reply::already_owner) &&
        std::ranges::find(st_->owned_names, name.str()) == st_->owned_names.end()) {
      st_->owned_names.emplace_back(name.str());
    }
    return reply;
  }

  call_result<release_name_reply> release_name(bus_name name) {
    auto r = call_method(bus_service, bus_path, bus_interface, "ReleaseName", name.str());
    if (!r) return r.error();
    auto code = r->template read_first<std::uint32_t>();
    if (!code) return call_error(code.error());
    return static_cast<release_name_reply>(*code);
  }

  call_result<std::string> get_name_owner(bus_name name) {
    auto r = call_method(bus_service, bus_path, bus_interface, "GetNameOwner", name.str());
    if (!r) return r.error();
    auto owner = r->template read_first<std::string>();
    if (!owner) return call_error(owner.error());
    return std::move(*owner);
  }

  call_result<> add_match(std::string_view rule) {
    auto r = call_method(bus_service, bus_path, bus_interface, "AddMatch", rule);
    if (!r) return r.error();
    return {};
  }
  call_result<> remove_match(std::string_view rule) {
    auto r = call_method(bus_service, bus_path, bus_interface, "RemoveMatch", rule);
    if (!r) return r.error();
    return {};
  }

  // NameAcquired / NameLost, as the bus reports them for this connection.
  void on_name_acquired(std::function<void(std::string_view)> fn) { st_->name_acquired = std::move(fn); }
  void on_name_lost(std::function<void(std::string_view)> fn) { st_->name_lost = std::move(fn); }
  // Called once when the connection is lost (after every pending call got its error).
  void on_disconnect(std::function<void(const error&)> fn) { st_->disconnected = std::move(fn); }
  // Called for each received message that failed validation (it is dropped, never dispatched).
  // Where its header still says so, a refused reply also ends its call with the refusal, and a
  // refused call addressed to us is answered with an error.
  void on_invalid_message(std::function<void(const error&)> fn) { st_->invalid_message = std::move(fn); }
  // Sees every valid received message before anything else does; returning true stops it there
  // (no reply matching, no signal handlers, no method dispatch). Monitors and bridges use it.
  void set_filter(std::function<bool(const message_view&)> fn) { st_->filter = std::move(fn); }

  // Calls fn(name, old_owner, new_owner) on every NameOwnerChanged for `name`.
  call_result<subscription> watch_name_owner(
      bus_name name, std::function<void(std::string_view, std::string_view, std::string_view)> fn) {
    std::string rule =
        "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
        "member='NameOwnerChanged',path='/org/freedesktop/DBus',arg0='";
    rule += name.str();
    rule += '\'';
    return subscribe(rule, [fn = std::move(fn)](const message_view& m) {
      auto args = m.read<std::string_view, std::string_view, std::string_view>();
      if (args) fn(std::get<0>(*args), std::get<1>(*args), std::get<2>(*args));
    });
  }

  // ---- signals ------------------------------------------------------------------------------

  // Calls `handler` for each signal that matches the rule exactly, as dbus-daemon would judge it.
  // The rule is added to the bus (AddMatch) before subscribe() returns, so every signal emitted
  // after that is delivered. When the rule names a sender that runs a multicast group (and `via`
  // allows), the connection joins the group in the background and the signals then skip the bus,
  // each still delivered once and in the sender's order (docs/multicast-protocol.md).
  // subscribe_via::multicast waits for the group instead, and fails without it. The returned
  // handle undoes everything when destroyed.
  call_result<subscription> subscribe(std::string_view rule_text, signal_handler handler,
                                      subscribe_via via = subscribe_via::automatic) {
    state& s = *st_;
    auto rule = match_rule::parse(rule_text);
    if (!rule) return call_error(rule.error());
    const std::string canonical = rule->to_string();
    std::string sender(rule->sender().value_or(std::string_view()));
    if (!s.opts.hello || sender == bus_service.str()) via = subscribe_via::bus;
    if (via == subscribe_via::multicast && !s.unix_fds) {
      return call_error(error(errc::not_supported, error::no_offset, "no fd passing on this bus: no multicast"));
    }
    track_sender(*rule);
    if (s.opts.hello) {
      auto added = add_match(canonical);
      if (!added) return added.error();
    }
    const std::uint64_t id = ++s.next_subscription;
    s.subscriptions.emplace(id, subscription_entry{std::move(*rule), canonical, std::move(handler)});
    machine_env env{s};
    if (via == subscribe_via::multicast) {
      const std::string publisher = sender.empty() || sender[0] == ':' ? sender : std::string(s.machine.owner(sender));
      if (publisher.empty()) {
        return drop_subscription(
            id, call_error(error(errc::not_supported, error::no_offset, "the rule's sender has no owner")));
      }
      s.machine.subscribe(id, canonical, sender, via, s.opts.hello, env);
      if (error e = join_blocking(id, publisher)) return drop_subscription(id, call_error(e));
    } else {
      s.machine.subscribe(id, canonical, sender, s.unix_fds ? via : subscribe_via::bus, s.opts.hello, env,
                          pending_owner(s, sender));
    }
    std::weak_ptr<state> weak = st_;
    return subscription(id, [weak, id]() {
      auto sp = weak.lock();
      if (!sp || !sp->subscriptions.erase(id)) return;
      machine_env env{*sp};
      sp->machine.unsubscribe(id, env);
    });
  }

  // True while a handler runs for a message that came through a multicast group (not the bus).
  bool handling_packet() const noexcept { return st_->handling_packet; }
  // The publishers whose groups this connection is in, and how many packets each sent.
  std::vector<std::pair<std::string, std::uint64_t>> multicast_groups() const {
    std::vector<std::pair<std::string, std::uint64_t>> out;
    for (const auto& [name, m] : st_->members.all()) out.emplace_back(name, m.packets);
    return out;
  }
  // The group socket joined with `publisher` (-1 if none): for inspection, not for reading.
  int multicast_socket(std::string_view publisher) const {
    const multicast::membership* m = st_->members.find(publisher);
    return m ? m->socket.get() : -1;
  }
  // True when the subscription's rule is served by a multicast group now (not the bus).
  bool served_by_group(const subscription& sub) const {
    const auto* st = st_->machine.find(sub_id(sub));
    return st && st->gate.in_group;
  }
  // Called when a group this connection was in is lost (the publisher exited, closed the socket,
  // or broke the protocol): the subscriptions on it are back on the bus by then, and a re-join
  // follows (connection_options::multicast_rejoin). When the bus reports the owner change of a
  // well-known name first, the subscriptions follow the name to its new owner and leave the old
  // group without this call: it reports a lost group, not every publisher that exits.
  void on_multicast_lost(std::function<void(std::string_view publisher, const error&)> fn) {
    st_->multicast_lost = std::move(fn);
  }
  // Called when a sender's group could not be joined (it runs none, refused us, or did not
  // answer) and the bus keeps serving: the reason, for logs.
  void on_multicast_fallback(std::function<void(std::string_view sender, const call_error&)> fn) {
    st_->multicast_fallback = std::move(fn);
  }
  // Called, in order with the signals, when a publisher that runs overflow_policy::drop discarded
  // signals meant for us: the serials first..last (in its sequence) and how many were lost.
  void on_multicast_gap(
      std::function<void(std::string_view publisher, std::uint32_t first, std::uint32_t last, std::uint32_t count)>
          fn) {
    st_->multicast_gap = std::move(fn);
  }

  // ---- for the multicast publisher ------------------------------------------------------------

  // True inside a loop iteration (handlers run there): sends are then batched until it ends.
  bool dispatching() const noexcept { return st_->iterating > 0; }
  // The next serial of this connection: bus and multicast messages share one sequence.
  std::uint32_t allocate_serial() noexcept { return next_serial(); }
  Transport& transport() noexcept { return st_->transport; }
  // Sees every message before it is queued for the bus (after its serial is set); returning true
  // means the hook took it and will send it later with send_unhooked(). `holding` says whether
  // the hook still has messages to send: flush() waits for them.
  void set_send_hook(std::function<bool(message&)> hook, std::function<bool()> holding = {}) {
    st_->send_hook = std::move(hook);
    st_->send_hook_holding = std::move(holding);
  }
  result<std::uint32_t> send_unhooked(message&& m) {
    if (!st_->connected) return error(errc::not_connected);
    const std::uint32_t serial = m.serial();
    send_on(*st_, std::move(m), false);
    return serial;
  }
  // A packet source added by someone else than the member side (the publisher watches its ends of
  // the member sockets this way) reached end of file or failed.
  void set_packet_closed_handler(std::function<void(std::uint32_t source, const error&)> fn) {
    st_->packet_closed = std::move(fn);
  }
  // Results of packet sends and writable notifications (see io/packets.hpp).
  void set_packet_send_handlers(std::function<void(std::uint64_t, int)> sent,
                                std::function<void(std::uint32_t)> writable) {
    st_->packet_sent = std::move(sent);
    st_->packet_writable = std::move(writable);
  }
  // The well-known names this connection owns, as the bus last reported them.
  const std::vector<std::string>& owned_names() const noexcept { return st_->owned_names; }

  // ---- exported objects ---------------------------------------------------------------------

  object_registry& objects() noexcept { return st_->objects; }

  // Exports an object; see object.hpp for the builder. The handle unregisters it when destroyed.
  object_handle add_object(object_path_view path, object_builder builder) {
    std::weak_ptr<state> weak = st_;
    return st_->objects.add(path, std::move(builder), [weak](message&& m) {
      if (auto s = weak.lock()) send_on(*s, std::move(m));
    });
  }

  // ---- the loop -----------------------------------------------------------------------------

  // For a foreign event loop: poll fd() for events(), wake after timeout() ms (-1: no deadline),
  // then call process().
  int fd() const noexcept { return st_->transport.poll_fd(); }
  // The bus socket itself (fd() may be an io_uring or epoll fd that covers it).
  int socket_fd() const noexcept { return st_->transport.socket(); }
  short events() const noexcept {
    if constexpr (requires(const Transport& t) { t.poll_events(); }) {
      return st_->transport.poll_events();
    } else {
      return static_cast<short>(POLLIN | (st_->transport.has_pending_output() ? POLLOUT : 0));
    }
  }
  int timeout() const noexcept {
    if (!st_->in.empty()) return 0;
    state& s = *st_;
    // Work the transport has in hand (completions taken early, a receive to re-arm) makes no fd
    // readable: the loop must come back at once.
    if constexpr (requires(const Transport& t) { t.has_work(); }) {
      if (s.transport.has_work()) return 0;
    }
    // An answered call leaves its deadline in the heap (a heap cannot remove from the middle);
    // those that reach the top are dropped here, so that the loop never wakes for them.
    while (!s.deadlines.empty() && !deadline_is_live(s, s.deadlines.top())) s.deadlines.pop();
    std::optional<clock::time_point> next = member_deadline();
    if (!s.deadlines.empty() && (!next || s.deadlines.top().first < *next)) next = s.deadlines.top().first;
    return next ? detail::to_poll_timeout(*next) : -1;
  }

  // Does all the work that is ready, without blocking.
  error process() { return iterate(0); }

  // Runs until stop() or until the connection is lost. A stop() that came before run() makes it
  // return at once; the request is used up either way.
  error run() {
    while (st_->connected && !st_->stopped.exchange(false)) {
      if (error e = iterate(timeout())) return e;
    }
    return st_->connected ? error() : error(errc::disconnected);
  }

  // Runs for `d` (or until stop() or the connection is lost).
  error run_for(std::chrono::milliseconds d) {
    const auto deadline = clock::now() + d;
    while (st_->connected && !st_->stopped.exchange(false)) {
      const auto now = clock::now();
      if (now >= deadline) break;
      int t = detail::to_poll_timeout(deadline);
      const int next = timeout();
      if (next >= 0 && next < t) t = next;
      if (error e = iterate(t)) return e;
    }
    return st_->connected ? error() : error(errc::disconnected);
  }

  // Runs until `done()` is true, a deadline passes, or the connection is lost.
  template <class Pred>
  error run_until(Pred&& done, std::chrono::milliseconds limit) {
    const auto deadline = clock::now() + limit;
    while (st_->connected && !done()) {
      if (clock::now() >= deadline) return {errc::timeout, error::no_offset, "run_until"};
      int t = detail::to_poll_timeout(deadline);
      const int next = timeout();
      if (next >= 0 && next < t) t = next;
      if (error e = iterate(t)) return e;
    }
    return done() ? error() : error(errc::disconnected);
  }

  // Makes run() and run_for() return after the current iteration. Safe to call from a signal
  // handler (install it without SA_RESTART so that the wait is interrupted).
  void stop() noexcept { st_->stopped.store(true, std::memory_order_relaxed); }

 private:
  struct pending_call {
    clock::time_point deadline;
    reply_handler handler;
  };
  struct subscription_entry {
    match_rule rule;
    std::string text;
    signal_handler handler;
  };

  struct state {
    state(Transport&& t, connection_options o)
        : transport(std::move(t)), opts(o), in(o.max_fds_per_message), machine(o.multicast_rejoin) {}
    Transport transport;
    connection_options opts;
    detail::inbox in;
    std::string unique_name;
    std::string guid;
    bool unix_fds = false;
    bool connected = true;
    std::atomic<bool> stopped{false};
    int iterating = 0;
    std::uint32_t serial = 0;
    std::unordered_map<std::uint32_t, pending_call> pending;
    std::priority_queue<std::pair<clock::time_point, std::uint32_t>,
                        std::vector<std::pair<clock::time_point, std::uint32_t>>, std::greater<>>
        deadlines;
    std::map<std::uint64_t, subscription_entry> subscriptions;
    std::uint64_t next_subscription = 0;
    // Which path serves each subscription, the owners of the names they name as sender, and the
    // groups to join (multicast/member.hpp).
    multicast::member_machine machine;
    object_registry objects;
    std::function<void(std::string_view)> name_acquired;
    std::function<void(std::string_view)> name_lost;
    std::function<void(const error&)> disconnected;
    std::function<void(const error&)> invalid_message;
    std::function<bool(const message_view&)> filter;
    error fatal;
    // Multicast: the group sockets, the Join calls in flight, the publisher's hooks.
    multicast::membership_set members;
    std::set<std::uint32_t> join_calls;  // serials of Joins whose replies are not part of a stream
    // A successor's bus copies, held until its replay is in (member_machine::owner_changed()):
    // `until` is the last serial replayed, set once the Join is answered.
    struct held_copy {
      received_message msg;
      std::uint64_t newest_subscription;  // a subscription made after it arrived does not get it
    };
    struct successor_hold {
      std::deque<held_copy> copies;
      std::size_t bytes = 0;  // of the copies
      std::optional<std::uint32_t> until;
      std::uint32_t reply = 0;         // the Join reply's serial, once it came
      std::vector<std::string> names;  // the well-known names it owned when the copies came
      // A copy from before the reply is judged by `last` alone; one after it, as any bus copy
      // (the group serves what it matches).
      multicast::origin origin_of(std::uint32_t serial) const {
        return until && !multicast::serial_before(serial, reply) ? multicast::origin::broadcast
                                                                 : multicast::origin::backfill;
      }
    };
    std::map<std::string, successor_hold, std::less<>> holds;
    bool handling_packet = false;
    bool receiving_paused = false;  // the inbox is full (max_inbox_bytes)
    std::function<void(std::string_view, const error&)> multicast_lost;
    std::function<void(std::string_view, const call_error&)> multicast_fallback;
    std::function<void(std::string_view, std::uint32_t, std::uint32_t, std::uint32_t)> multicast_gap;
    std::function<bool(message&)> send_hook;
    std::function<bool()> send_hook_holding;
    // Something was sent since the bus last confirmed that it had read everything (flush()).
    bool unconfirmed_output = false;
    std::function<void(std::uint64_t, int)> packet_sent;
    std::function<void(std::uint32_t)> packet_writable;
    std::function<void(std::uint32_t, const error&)> packet_closed;  // sources that are not memberships
    std::vector<std::string> owned_names;  // a stream error noticed while receiving, reported by the loop
  };

  basic_connection() = default;

  static bool deadline_is_live(const state& s, const std::pair<clock::time_point, std::uint32_t>& d) noexcept {
    auto it = s.pending.find(d.second);
    // A serial that wrapped around may be pending again, with another deadline.
    return it != s.pending.end() && it->second.deadline == d.first;
  }

  static result<basic_connection> open_first(const std::vector<address>& list, connection_options opts) {
    std::string text;
    for (const address& a : list) {
      if (!text.empty()) text += ';';
      text += a.to_string();
    }
    return open(text, opts);
  }

  static result<Transport> open_transport(unix_fd& fd, bool unix_fds, transport_choice choice) {
    if constexpr (std::is_same_v<Transport, auto_transport>) {
      return auto_transport::open(fd, unix_fds, choice);
    } else {
      (void)choice;
      return Transport::open(fd, unix_fds);
    }
  }

  std::uint32_t next_serial() noexcept {
    if (++st_->serial == 0) st_->serial = 1;
    return st_->serial;
  }

  // Queues a message for the bus; with assign_serial false it keeps the serial it has.
  // Returns the message's serial, or 0 when nothing was sent.
  static std::uint32_t send_on(state& s, message&& m, bool assign_serial = true) {
    if (!s.connected) return 0;
    if (assign_serial) {
      if (++s.serial == 0) s.serial = 1;
      m.set_serial(s.serial);
    }
    if (m.seal()) return 0;
    const std::uint32_t serial = m.serial();
    if (assign_serial && s.send_hook && s.send_hook(m)) return serial;
    s.transport.enqueue(std::move(m));
    s.unconfirmed_output = true;
    if (s.iterating == 0) (void)s.transport.flush();
    return serial;
  }

  static error pending_room(const state& s) {
    if (s.pending.size() < s.opts.max_pending_calls) return {};
    return error(errc::over_quota, error::no_offset,
                 "too many calls already wait for replies (connection_options::max_pending_calls)");
  }

  void receive(std::span<const std::byte> bytes, received_fds& fds) {
    state& s = *st_;
    if (error e = s.in.feed(bytes, fds)) s.fatal = e;
    if (!s.receiving_paused && s.in.queued_bytes() >= s.opts.max_inbox_bytes) {
      s.receiving_paused = true;
      s.transport.pause_receiving(true);
    }
  }
  void resume_receiving_if_room() {
    state& s = *st_;
    if (s.receiving_paused && s.in.queued_bytes() < s.opts.max_inbox_bytes) {
      s.receiving_paused = false;
      s.transport.pause_receiving(false);
    }
  }

  // One turn of the loop: wait up to timeout_ms for I/O, dispatch, expire deadlines, and send
  // what the handlers queued in one batch.
  error iterate(int timeout_ms) {
    state& s = *st_;
    if (!s.connected) return errc::disconnected;
    ++s.iterating;
    if (!s.in.empty()) timeout_ms = 0;
    error io = s.transport.wait(timeout_ms, [&](auto bytes, auto& fds) { receive(bytes, fds); });
    dispatch_all();
    resume_receiving_if_room();
    expire_calls();
    member_timers();
    --s.iterating;
    if (!io && s.connected) io = s.transport.flush();
    if (!io && s.fatal) io = s.fatal;
    if (io) {
      lost(io);
      return io.code() == errc::disconnected ? error() : io;
    }
    return {};
  }

  // Sends Peer.Ping to the bus and waits for the answer. A bus handles one client's messages in
  // order, so any answer, an error included, means it has read everything sent before.
  error confirm_bus_read_everything(clock::time_point deadline) {
    state& s = *st_;
    message ping =
        message::method_call(bus_service, bus_path, interface_name::from_unchecked("org.freedesktop.DBus.Peer"),
                             member_name::from_unchecked("Ping"));
    const std::uint32_t serial = send_on(s, std::move(ping));
    s.unconfirmed_output = false;
    if (serial == 0) return s.connected ? error(errc::invalid_argument) : error(errc::disconnected);
    auto answer = wait_for_reply(serial, deadline);
    if (answer || answer.error().is_remote()) return {};
    return answer.error().cause();
  }

  // What blocking operations (a call, a join, flush()) do while they wait: read into the inbox and
  // dispatch nothing, so that handlers never run inside them. A failed wait ends the connection.
  error wait_without_dispatching(clock::time_point until) {
    state& s = *st_;
    error io = s.transport.wait(detail::to_poll_timeout(until), [&](auto bytes, auto& fds) { receive(bytes, fds); });
    if (io) lost(io);
    return io;
  }

  call_result<received_message> wait_for_reply(std::uint32_t serial, clock::time_point deadline) {
    state& s = *st_;
    std::size_t scanned = s.in.size();  // what is already queued arrived before the call was sent
    while (true) {
      auto& entries = s.in.entries();
      for (std::size_t i = scanned; i < entries.size(); ++i) {
        detail::inbox_entry& e = entries[i];
        if (e.reply_serial != serial || (e.type != message_type::method_return && e.type != message_type::error)) {
          continue;
        }
        // The refusal stays queued: the next dispatch reports it to on_invalid_message, as a
        // blocking call dispatches nothing.
        if (e.invalid) return call_error(e.invalid);
        received_message reply = received_message::copy_of(s.in.view(e), std::move(e.fds));
        entries.erase(entries.begin() + static_cast<std::ptrdiff_t>(i));
        multicast::membership* m = s.members.empty() ? nullptr : live_membership(s, reply.header().sender);
        if (m && !s.join_calls.count(serial)) {
          // The one exception to "a blocking call dispatches nothing": packets this publisher sent
          // before its reply are handled first, so that its messages stay in serial order.
          const std::string publisher = m->publisher;
          drain_into(s, *m);
          packet_sink sink{s, publisher};
          m->merge.before_unicast(reply.header().serial, sink);
          if (multicast::membership* again = live_membership(s, publisher)) {
            again->merge.after_unicast(reply.header().serial, sink);
            finish_if_ended(s, publisher);
          }
        }
        if (reply.header().type == message_type::error) return call_error::from_reply(reply.view());
        return reply;
      }
      scanned = entries.size();
      if (!s.connected) return call_error(errc::disconnected);
      if (s.fatal) {
        lost(s.fatal);
        return call_error(s.fatal);
      }
      if (clock::now() >= deadline) {
        if (s.receiving_paused) {
          return call_error(error(errc::timeout, error::no_offset,
                                  "waiting for a reply, which may be behind the messages that filled the inbox "
                                  "(connection_options::max_inbox_bytes)"));
        }
        return call_error(error(errc::timeout, error::no_offset, "waiting for a reply"));
      }
      if (error io = wait_without_dispatching(deadline)) return call_error(io);
    }
  }

  void dispatch_all() {
    state& s = *st_;
    while (!s.in.empty() && s.connected) {
      detail::inbox_entry e = std::move(s.in.entries().front());
      s.in.entries().pop_front();
      s.in.enter();
      if (e.invalid) {
        if (s.invalid_message) s.invalid_message(e.invalid);
        refused(e);
      } else {
        dispatch(s.in.view(e));
      }
      s.in.leave();
    }
  }

  // A refused reply ends its call with the refusal; a refused call that wants a reply gets an
  // error, so that its caller does not wait out its timeout either.
  void refused(const detail::inbox_entry& e) {
    state& s = *st_;
    if (e.type == message_type::method_return || e.type == message_type::error) {
      auto it = s.pending.find(e.reply_serial);
      if (it == s.pending.end()) return;
      reply_handler h = std::move(it->second.handler);
      s.pending.erase(it);
      h(call_error(e.invalid));
      return;
    }
    if (e.call_serial == 0 || !addressed_to_us(e.call_destination)) return;
    const std::string_view name =
        e.invalid.code() == errc::too_many_fds ? dbus_error::limits_exceeded : dbus_error::invalid_args;
    (void)send(message::error_reply(e.call_serial, bus_name::from_unchecked(e.call_sender),
                                    error_name::from_unchecked(name), "message refused: " + e.invalid.message()));
  }

  // A monitor or an eavesdropper also receives calls meant for others, and must not answer them
  // (dbus-daemon disconnects a monitor that sends anything). On a peer connection every call is ours.
  bool addressed_to_us(std::string_view destination) const {
    const state& s = *st_;
    if (!s.opts.hello) return true;
    return destination == s.unique_name || std::ranges::find(s.owned_names, destination) != s.owned_names.end();
  }

  void dispatch(const message_view& m) {
    state& s = *st_;
    if (s.filter && s.filter(m)) return;
    // A message to us from a publisher whose group we are in is part of its stream: packets older
    // than it are handled first, newer ones after it. Join replies are not part of any stream.
    multicast::membership* member = s.members.empty() ? nullptr : live_membership(s, m.header().sender);
    if (!member || m.header().destination.empty() || is_join_reply(s, m)) return dispatch_bus(m);
    const std::string publisher(m.header().sender);
    drain_into(s, *member);
    {
      packet_sink sink{s, publisher};
      member->merge.before_unicast(m.serial(), sink);
    }
    replay_progress(s, publisher, m.serial(), false);
    dispatch_bus(m);
    replay_progress(s, publisher, m.serial(), true);
    if (multicast::membership* again = live_membership(s, publisher)) {
      packet_sink sink{s, publisher};
      again->merge.after_unicast(m.serial(), sink);
      finish_if_ended(s, publisher);
    }
  }

  // A group whose socket ended with packets waiting for a bus message: lost once they are handled.
  static void finish_if_ended(state& s, const std::string& publisher) {
    multicast::membership* m = live_membership(s, publisher);
    if (!m || !m->lose_when_handled || m->merge.waiting() || m->merge.held() > 0) return;
    group_lost(s, publisher, error(errc::disconnected, error::no_offset, "group closed"));
  }

  void dispatch_bus(const message_view& m) {
    state& s = *st_;
    switch (m.type()) {
      case message_type::method_return:
      case message_type::error: {
        auto it = s.pending.find(m.reply_serial());
        if (it == s.pending.end()) return;  // a late reply: its call already timed out
        reply_handler h = std::move(it->second.handler);
        s.pending.erase(it);
        if (m.type() == message_type::error) {
          h(call_error::from_reply(m));
        } else {
          h(m);
        }
        return;
      }
      case message_type::signal:
        if (m.header().sender == bus_service && m.header().interface == bus_interface) bus_signal(m);
        if (m.header().interface == multicast::interface.str() &&
            m.header().member == multicast::dropped_signal.str() && m.header().destination == s.unique_name) {
          group_lost(s, std::string(m.header().sender),
                     error(errc::dropped, error::no_offset, "the publisher dropped us"));
        }
        if (held_back(s, m)) return;
        dispatch_signal(s, m, bus_origin(s, m));
        return;
      case message_type::method_call:
        s.objects.dispatch(m, [this](message&& reply) { (void)send(std::move(reply)); });
        return;
      default: return;  // unknown message types are ignored, as the specification says
    }
  }

  static multicast::origin bus_origin(state& s, const message_view& m) {
    if (!m.header().destination.empty()) return multicast::origin::unicast;
    if (s.members.empty()) return multicast::origin::broadcast;
    const multicast::membership* g = live_membership(s, m.header().sender);
    return g && g->ended ? multicast::origin::backfill : multicast::origin::broadcast;
  }

  // Each subscription gets what matches its rule exactly, from the path that serves it (its
  // delivery_gate), once: a message never reaches a subscription twice or out of order.
  // `names_then`: held copies are matched as they were sent, when their sender owned these names.
  static void dispatch_signal(state& s, const message_view& m, multicast::origin from,
                              const std::vector<std::string>* names_then = nullptr,
                              std::uint64_t newest_subscription = ~std::uint64_t{0}) {
    if (s.subscriptions.empty()) return;
    // The lookup is borrowed by the context: it must outlive every matches() call below.
    const auto owner_of = [&s, &m, names_then](std::string_view name) -> std::string_view {
      if (names_then && std::ranges::find(*names_then, name) != names_then->end()) return m.header().sender;
      return s.machine.owner(name);
    };
    const match_context ctx{s.unique_name, owner_of};
    // Handlers may add or remove subscriptions: collect first, then call those still present.
    std::vector<std::uint64_t> hits;
    const std::string_view sender = m.header().sender;
    for (const auto& [id, sub] : s.subscriptions) {
      if (id > newest_subscription) break;  // ids grow, and the map is ordered by them
      if (!sub.rule.matches(m, ctx)) continue;
      multicast::member_machine::subscription_state* st = s.machine.find(id);
      if (st ? !st->gate.accept(from, sender, m.serial()) : from == multicast::origin::packet) continue;
      hits.push_back(id);
    }
    for (std::uint64_t id : hits) {
      auto it = s.subscriptions.find(id);
      if (it == s.subscriptions.end()) continue;
      signal_handler h = it->second.handler;  // a copy: the handler may erase its own entry
      h(m);
    }
  }

  void bus_signal(const message_view& m) {
    state& s = *st_;
    const std::string_view member = m.header().member;
    if (member == "NameOwnerChanged") {
      auto args = m.read<std::string_view, std::string_view, std::string_view>();
      if (!args) return;
      const auto [name, old_owner, new_owner] = *args;
      // What the old owner's group socket still holds was emitted before the bus saw the name
      // change: a plain subscriber got those signals first, so they are handled first.
      if (!old_owner.empty() && s.machine.tracks_owner(name)) {
        if (multicast::membership* m = live_membership(s, old_owner)) {
          const std::string publisher(old_owner);
          drain_into(s, *m);
          packet_sink sink{s, publisher};
          if (multicast::membership* again = live_membership(s, publisher)) again->merge.release_all(sink);
        }
        release_hold(s, old_owner);  // and what was held from it, when it was a successor
      }
      machine_env env{s};
      s.machine.owner_changed(name, new_owner, env);
    } else if (member == "NameAcquired" && m.header().destination == s.unique_name) {
      auto name = m.read_first<std::string_view>();
      if (!name) return;
      if (*name != s.unique_name && std::ranges::find(s.owned_names, *name) == s.owned_names.end()) {
        s.owned_names.emplace_back(*name);
      }
      if (s.name_acquired) s.name_acquired(*name);
    } else if (member == "NameLost" && m.header().destination == s.unique_name) {
      auto name = m.read_first<std::string_view>();
      if (!name) return;
      std::erase(s.owned_names, *name);
      if (s.name_lost) s.name_lost(*name);
    }
  }

  // A rule whose sender is a well-known name matches messages from that name's current owner:
  // follow NameOwnerChanged for it (the match goes in first, so no change is missed), then ask
  // for the owner now.
  void track_sender(const match_rule& rule) {
    state& s = *st_;
    const std::string_view sender = rule.sender().value_or(std::string_view());
    if (sender.empty() || sender[0] == ':' || sender == bus_service.str() || s.machine.tracks_owner(sender)) return;
    std::string owner;
    if (s.opts.hello) {
      std::string rule_text =
          "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
          "member='NameOwnerChanged',arg0='";
      rule_text += sender;
      rule_text += '\'';
      (void)add_match(rule_text);
      if (auto o = get_name_owner(bus_name::from_unchecked(sender))) owner = std::move(*o);
    }
    s.machine.set_owner(sender, owner);
  }

  // ---- multicast groups (the member side) ---------------------------------------------------------

  static std::uint64_t sub_id(const subscription& sub) noexcept { return sub.id_; }

  call_result<subscription> drop_subscription(std::uint64_t id, call_error why) {
    state& s = *st_;
    s.subscriptions.erase(id);
    machine_env env{s};
    s.machine.unsubscribe(id, env);
    return why;
  }

  // What member_machine asks of the connection. Calls it makes are asynchronous: their replies
  // come back into the machine from the loop.
  // NameOwnerChanged signals for `name` still in the inbox: the bus changed the owner before it
  // answered our AddMatch, so a subscription made now starts with the last new owner.
  static std::optional<multicast::member_machine::pending_changes> pending_owner(state& s, std::string_view name) {
    std::optional<multicast::member_machine::pending_changes> owner;
    if (name.empty() || name[0] == ':') return owner;
    for (const detail::inbox_entry& e : s.in.entries()) {
      if (e.invalid || e.type != message_type::signal) continue;
      const message_view v = s.in.view(e);
      if (v.header().sender != bus_service.str() || v.header().member != "NameOwnerChanged") continue;
      auto args = v.template read<std::string_view, std::string_view, std::string_view>();
      if (!args || std::get<0>(*args) != name) continue;
      if (!owner) owner.emplace();
      owner->owner = std::string(std::get<2>(*args));
      ++owner->count;
    }
    return owner;
  }

  struct machine_env {
    state& s;
    clock::time_point now() const { return clock::now(); }
    void add_match(const std::string& text) { bus_call(s, "AddMatch", text); }
    void remove_match(const std::string& text) { bus_call(s, "RemoveMatch", text); }
    void probe(const std::string& publisher) {
      message m = message::method_call(bus_name::from_unchecked(publisher), multicast::path,
                                       "org.freedesktop.DBus.Introspectable", "Introspect");
      state* sp = &s;  // the state outlives its pending calls: they end with it
      async_call(s, std::move(m), [sp, publisher](call_result<message_view> r) {
        multicast::join_outcome outcome = multicast::join_outcome::refused;
        if (r) {
          auto xml = r->template read_first<std::string_view>();
          const bool offers = xml && xml->find("\"org.mcbus.Multicast1\"") != std::string_view::npos;
          outcome = offers ? multicast::join_outcome::joined : multicast::join_outcome::not_publisher;
        } else {
          outcome = classify(r.error());
        }
        machine_env env{*sp};
        sp->machine.probe_done(publisher, outcome, env);
      });
    }
    void join(const std::string& publisher, std::vector<std::string> rules, std::uint32_t flags) {
      message m = message::method_call(bus_name::from_unchecked(publisher), multicast::path, multicast::interface,
                                       multicast::join_method);
      m.append(rules, flags);
      state* sp = &s;
      auto sent = std::make_shared<std::uint32_t>(0);  // the reply (or the timeout) forgets the serial
      const std::uint32_t serial =
          async_call(s, std::move(m), [sp, publisher, sent, flags](call_result<message_view> r) {
            sp->join_calls.erase(*sent);
            on_join_reply(*sp, publisher, r, flags);
          });
      *sent = serial;
      if (serial) s.join_calls.insert(serial);
    }
    void leave(const std::string& publisher) {
      message m = message::method_call(bus_name::from_unchecked(publisher), multicast::path, multicast::interface,
                                       multicast::leave_method);
      m.set_no_reply_expected();
      send_on(s, std::move(m));
      close_membership(s, publisher);
    }
    void fallback(const std::string& publisher, const char* why) {
      if (s.multicast_fallback)
        s.multicast_fallback(publisher, call_error(error(errc::not_supported, error::no_offset, why)));
    }
    void hold(const std::string& publisher, std::string_view name) {
      auto& names = s.holds[publisher].names;
      if (std::ranges::find(names, name) == names.end()) names.emplace_back(name);
    }
    void release_held(const std::string& publisher) { release_hold(s, publisher); }
  };

  // The successor's held bus copies go, in order, each to the subscriptions whose `last` it is
  // after (origin::backfill): what the replay already handed on is not handed on twice.
  static void release_hold(state& s, std::string_view publisher) {
    auto it = s.holds.find(publisher);
    if (it == s.holds.end()) return;
    const typename state::successor_hold hold = std::move(it->second);
    s.holds.erase(it);
    for (const typename state::held_copy& c : hold.copies)
      dispatch_signal(s, c.msg.view(), hold.origin_of(c.msg.header().serial), &hold.names, c.newest_subscription);
  }
  // A bus copy from a successor whose hold is on: kept, unless the hold is full (then everything
  // goes now; the replay's older signals are then refused by `last`, never handed on out of order).
  static bool held_back(state& s, const message_view& m) {
    if (s.holds.empty() || !m.header().destination.empty()) return false;
    auto it = s.holds.find(m.header().sender);
    if (it == s.holds.end()) return false;
    if (it->second.copies.size() >= s.opts.multicast_max_held ||
        it->second.bytes + m.header_bytes().size() + m.body_bytes().size() > s.opts.multicast_max_held_bytes) {
      release_hold(s, m.header().sender);
      return false;
    }
    it->second.copies.push_back({received_message::copy_of(m, {}), s.next_subscription});
    it->second.bytes += m.header_bytes().size() + m.body_bytes().size();
    return true;
  }
  // `publisher`'s stream is about to hand on `serial` (done: has handed it on). The replay and
  // the held copies merge by serial: held copies older than what comes next go first, and once
  // the replay is in, the rest follow it, before anything newer.
  static void replay_progress(state& s, std::string_view publisher, std::uint32_t serial, bool done) {
    if (s.holds.empty()) return;
    auto it = s.holds.find(publisher);
    if (it == s.holds.end() || !it->second.until) return;
    const std::uint32_t until = *it->second.until;
    if (done) {
      if (!multicast::serial_before(serial, until)) release_hold(s, publisher);
      return;
    }
    if (multicast::serial_before(until, serial)) return release_hold(s, publisher);
    {
      std::deque<typename state::held_copy> older;
      auto& copies = it->second.copies;
      while (!copies.empty() && multicast::serial_before(copies.front().msg.header().serial, serial)) {
        older.push_back(std::move(copies.front()));
        copies.pop_front();
      }
      // A handler may end the hold (and erase it) meanwhile: what the copies need is taken first.
      typename state::successor_hold rest;
      rest.until = it->second.until;
      rest.reply = it->second.reply;
      rest.names = it->second.names;
      for (typename state::held_copy& c : older) {
        dispatch_signal(s, c.msg.view(), rest.origin_of(c.msg.header().serial), &rest.names, c.newest_subscription);
      }
    }
  }

  static void bus_call(state& s, std::string_view method, const std::string& arg) {
    if (!s.connected || !s.opts.hello) return;
    message m = message::method_call(bus_service, bus_path, bus_interface, member_name::from_unchecked(method));
    m.append(std::string_view(arg));
    m.set_no_reply_expected();
    send_on(s, std::move(m));
  }

  // Sends a call whose reply goes to `handler` from the loop (or with its timeout). Returns its
  // serial, 0 when nothing was sent (the handler has then been told).
  static std::uint32_t async_call(state& s, message&& m, reply_handler handler) {
    if (error e = pending_room(s)) {
      handler(call_error(e));
      return 0;
    }
    const std::uint32_t serial = send_on(s, std::move(m));
    if (serial == 0) {
      handler(call_error(errc::disconnected));
      return 0;
    }
    const auto deadline = clock::now() + s.opts.multicast_join_timeout;
    s.pending.emplace(serial, pending_call{deadline, std::move(handler)});
    s.deadlines.emplace(deadline, serial);
    return serial;
  }

  static multicast::join_outcome classify(const call_error& e) {
    const std::string_view name = e.name();
    if (name == "org.freedesktop.DBus.Error.UnknownMethod" || name == "org.freedesktop.DBus.Error.UnknownObject" ||
        name == "org.freedesktop.DBus.Error.UnknownInterface") {
      return multicast::join_outcome::not_publisher;
    }
    if (name == "org.freedesktop.DBus.Error.ServiceUnknown" || name == "org.freedesktop.DBus.Error.NameHasNoOwner") {
      return multicast::join_outcome::gone;
    }
    return multicast::join_outcome::refused;
  }

  static bool is_join_reply(const state& s, const message_view& m) {
    return (m.type() == message_type::method_return || m.type() == message_type::error) &&
           s.join_calls.count(m.reply_serial()) > 0;
  }

  // The Join came back: check what the publisher handed over, install it, and tell the machine.
  static void on_join_reply(state& s, const std::string& publisher, const call_result<message_view>& reply,
                            std::uint32_t flags) {
    machine_env env{s};
    if (!reply) {
      if (multicast::membership* m = live_membership(s, publisher); m && m->ended) {
        // The old socket ended and no new one comes. Packets still held behind a marker wait for
        // their bus message first (finish_if_ended()), as when the socket ends with no re-join.
        if (m->merge.waiting() || m->merge.held() > 0) {
          m->lose_when_handled = true;
        } else {
          group_lost(s, publisher, error(errc::disconnected, error::no_offset, "group closed"));
        }
      }
      const multicast::join_outcome outcome = classify(reply.error());
      if (outcome == multicast::join_outcome::refused && s.multicast_fallback)
        s.multicast_fallback(publisher, reply.error());
      s.machine.join_done(publisher, outcome, 0, env);
      return;
    }
    std::optional<std::uint32_t> replayed;
    error bad = install_socket(s, publisher, *reply, (flags & multicast::join_replay) ? &replayed : nullptr);
    if (bad) {
      message leave = message::method_call(bus_name::from_unchecked(publisher), multicast::path, multicast::interface,
                                           multicast::leave_method);
      leave.set_no_reply_expected();
      send_on(s, std::move(leave));
      if (s.multicast_fallback) s.multicast_fallback(publisher, call_error(bad));
      s.machine.join_done(publisher, multicast::join_outcome::refused, 0, env);
      return;
    }
    s.machine.join_done(publisher, multicast::join_outcome::joined, reply->serial(), env);
    if (auto it = s.holds.find(publisher); it != s.holds.end()) {
      if (replayed && *replayed != 0) {
        it->second.until = *replayed;
        it->second.reply = reply->serial();
      } else {
        release_hold(s, publisher);
      }
    }
  }

  // A group socket must be what the protocol says: a unix SOCK_SEQPACKET socket, with packets
  // that fit our buffers.
  static error install_socket(state& s, const std::string& publisher, const message_view& reply,
                              std::optional<std::uint32_t>* replayed) {
    unix_fd fd;
    std::uint32_t version = 0, max_packet = 0, last_replayed = 0;
    // A Join with join_replay is answered with the last serial replayed as a fourth value.
    const error read =
        replayed ? reply.read_into(fd, version, max_packet, last_replayed) : reply.read_into(fd, version, max_packet);
    if (read) return read.in("Join reply");
    if (replayed) *replayed = last_replayed;
    if (!fd) return error(errc::invalid_argument, error::no_offset, "Join reply carries no socket");
    if (version < 1) return error(errc::not_supported, error::no_offset, "Join reply: unknown protocol version");
    if (max_packet == 0 || max_packet > max_packet_size) {
      return error(errc::not_supported, error::no_offset, "Join reply: packets larger than we take");
    }
    int type = 0, domain = 0;
    socklen_t len = sizeof(type);
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_SEQPACKET) {
      return error(errc::invalid_argument, error::no_offset, "Join reply: the socket is not SOCK_SEQPACKET");
    }
    len = sizeof(domain);
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_UNIX) {
      return error(errc::invalid_argument, error::no_offset, "Join reply: the socket is not AF_UNIX");
    }
    if (error e = detail::set_nonblocking(fd.get())) return e;
    if (multicast::membership* m = live_membership(s, publisher)) {
      // A re-join: the old socket is read to its end first (the publisher closes it after its
      // last packet), then this one.
      m->next_sockets.emplace_back(std::move(fd), max_packet);
      if (m->ended) {
        switch_socket(s, *m);
      } else if (!m->switch_by) {
        m->switch_by = clock::now() + std::chrono::seconds(2);
      }
      return {};
    }
    multicast::membership& m = s.members.add(publisher, std::move(fd), max_packet);
    if (error e = s.transport.add_packet_source(m.source, m.socket.get())) {
      s.members.remove(publisher);
      return e;
    }
    return {};
  }

  static multicast::membership* live_membership(state& s, std::string_view publisher) {
    multicast::membership* m = s.members.find(publisher);
    return m && !m->closing ? m : nullptr;
  }

  // The membership's socket stops being served; the record goes at the end of the iteration
  // (a packet of it may be on the way through a handler now).
  static void close_membership(state& s, const std::string& publisher) {
    multicast::membership* m = s.members.find(publisher);
    if (!m || m->closing) return;
    m->closing = true;
    s.transport.remove_packet_source(m->source);
    release_hold(s, publisher);  // the replay ends with the membership: what was held goes now
  }
  static void reap_memberships(state& s) {
    for (auto it = s.members.all().begin(); it != s.members.all().end();) {
      it = it->second.closing ? s.members.all().erase(it) : std::next(it);
    }
  }

  // The group is gone: its subscriptions go back to the bus at once.
  static void group_lost(state& s, const std::string& publisher, const error& why) {
    if (!live_membership(s, publisher)) return;
    close_membership(s, publisher);  // (and what was held from it goes)
    machine_env env{s};
    s.machine.group_lost(publisher, env);
    if (s.multicast_lost) s.multicast_lost(publisher, why);
  }

  // The publisher broke the protocol: we leave its group and use the bus.
  static void group_broken(state& s, const std::string& publisher, const error& why) {
    if (s.invalid_message) s.invalid_message(why);
    message leave = message::method_call(bus_name::from_unchecked(publisher), multicast::path, multicast::interface,
                                         multicast::leave_method);
    leave.set_no_reply_expected();
    send_on(s, std::move(leave));
    group_lost(s, publisher, why);
  }

  // subscribe_via::multicast: Join now and wait for the reply (nothing else is dispatched).
  // A publisher answers at most max_joins_in_flight Joins at once and refuses the rest with
  // LimitsExceeded: many subscribers that start together (or re-join after a restart) meet that.
  // It is transient, so a blocking join tries again, with a growing pause, until its timeout.
  error join_blocking(std::uint64_t id, const std::string& publisher) {
    state& s = *st_;
    const auto deadline = clock::now() + s.opts.multicast_join_timeout;
    auto pause = std::chrono::milliseconds(2);
    while (true) {
      bool busy = false;
      error e = join_once(id, publisher, deadline, busy);
      if (!busy || clock::now() + pause >= deadline) return e;
      const auto until = clock::now() + pause;
      while (s.connected && clock::now() < until) {
        if (error io = wait_without_dispatching(until)) return io;
      }
      pause = std::min(pause * 2, std::chrono::milliseconds(100));
    }
  }

  error join_once(std::uint64_t id, const std::string& publisher, clock::time_point deadline, bool& busy) {
    state& s = *st_;
    machine_env env{s};
    const std::uint32_t before = s.serial;
    if (!s.machine.join_now(publisher, env) && !s.machine.joining(publisher)) {
      const auto* st = s.machine.find(id);
      return st && st->gate.in_group ? error() : error(errc::not_supported, error::no_offset, "nothing to join");
    }
    // The Join just sent is the pending call with the newest serial after `before`.
    std::uint32_t serial = 0;
    for (std::uint32_t js : s.join_calls) {
      if (multicast::serial_before(before, js) && (serial == 0 || multicast::serial_before(serial, js))) serial = js;
    }
    auto it = serial == 0 ? s.pending.end() : s.pending.find(serial);
    if (it == s.pending.end()) return error(errc::not_supported, error::no_offset, "no Join under way");
    reply_handler handler = std::move(it->second.handler);
    s.pending.erase(it);
    auto reply = wait_for_reply(serial, deadline);
    if (reply) {
      handler(reply->view());
    } else {
      s.join_calls.erase(serial);
      busy = reply.error().name() == dbus_error::limits_exceeded;
      handler(reply.error());
    }
    const auto* st = s.machine.find(id);
    if (st && st->gate.in_group) return {};
    return reply ? error(errc::not_supported, error::no_offset, "the group could not be joined")
                 : reply.error().cause();
  }

  // ---- packets ----------------------------------------------------------------------------------

  void install_packet_handler() {
    if (!st_) return;
    state* sp = st_.get();  // the transport lives inside the state: the pointer outlives the handler
    packet_handler h;
    h.packet = [sp](std::uint32_t source, std::span<const std::byte> bytes) {
      multicast::membership* m = sp->members.by_source(source);
      if (!m || m->closing) return;
      // Memberships are erased only at the end of a loop turn: the name outlives this call.
      on_packet(*sp, m->publisher, bytes, false);
    };
    h.closed = [sp](std::uint32_t source, const error& why) {
      multicast::membership* m = sp->members.by_source(source);
      if (!m) {
        if (sp->packet_closed) sp->packet_closed(source, why);
        return;
      }
      if (m->closing) return;
      const std::string publisher = m->publisher;
      if (!m->next_sockets.empty()) return switch_socket(*sp, *m);
      if (sp->machine.joining(publisher)) {  // a re-join's reply is on its way: its socket follows
        m->ended = true;
        return;
      }
      if (m->merge.waiting() || m->merge.held() > 0) {
        // Packets wait behind a marker for a message that is still on its way over the bus: the
        // group ends once they are handled (finish_if_ended()).
        m->ended = m->lose_when_handled = true;
        return;
      }
      group_lost(*sp, publisher, why);
    };
    h.sent = [sp](std::uint64_t token, int res) {
      if (sp->packet_sent) sp->packet_sent(token, res);
    };
    h.writable = [sp](std::uint32_t watch) {
      if (sp->packet_writable) sp->packet_writable(watch);
    };
    st_->transport.set_packet_handler(std::move(h));
  }

  // A re-join's socket takes over from the old one, which has been read to its end.
  static void switch_socket(state& s, multicast::membership& m) {
    s.transport.remove_packet_source(m.source);
    m.socket = std::move(m.next_sockets.front().first);
    m.max_packet = m.next_sockets.front().second;
    m.next_sockets.pop_front();
    m.ended = m.lose_when_handled = false;
    m.switch_by.reset();
    if (!m.next_sockets.empty()) m.switch_by = clock::now() + std::chrono::seconds(2);
    s.members.renumber(m);
    if (error e = s.transport.add_packet_source(m.source, m.socket.get())) group_lost(s, m.publisher, e);
  }

  // Where a packet goes once stream_merge has put it in order.
  struct packet_sink {
    state& s;
    const std::string& publisher;
    std::span<const std::byte> current{};
    std::uint32_t serial = 0;
    multicast::packet_kind kind = multicast::packet_kind::signal;

    multicast::held_packet hold() { return {serial, kind, std::vector<std::byte>(current.begin(), current.end())}; }
    void deliver_current() { deliver_bytes(current); }
    void deliver(multicast::held_packet& h) { deliver_bytes(h.bytes); }
    void problem(const error& e) {
      if (s.invalid_message) s.invalid_message(e);
    }
    void deliver_bytes(std::span<const std::byte> bytes) {
      auto v = message_view::parse(bytes);
      if (!v) return;  // checked when it arrived
      if (multicast::is_loss_notice(*v)) {
        auto range = v->template read<std::uint32_t, std::uint32_t, std::uint32_t>();
        if (range && s.multicast_gap)
          s.multicast_gap(publisher, std::get<0>(*range), std::get<1>(*range), std::get<2>(*range));
        if (range) replay_progress(s, publisher, std::get<1>(*range), true);
        return;
      }
      if (v->type() != message_type::signal || multicast::is_control(*v)) return;
      replay_progress(s, publisher, v->serial(), false);
      s.handling_packet = true;
      dispatch_signal(s, *v, multicast::origin::packet);
      s.handling_packet = false;
      replay_progress(s, publisher, v->serial(), true);
    }
  };

  // A packet from `publisher`'s socket: checked, then put in order (or held, when `drained`).
  static void on_packet(state& s, const std::string& publisher, std::span<const std::byte> bytes, bool drained) {
    multicast::membership* m = live_membership(s, publisher);
    if (!m) return;
    if (bytes.size() > m->max_packet) {
      return group_broken(s, publisher,
                          error(errc::invalid_argument, error::no_offset,
                                "multicast packet larger than the max_packet its publisher announced"));
    }
    auto v = message_view::parse(bytes);
    packet_sink sink{s, publisher, bytes};
    if (!v) return sink.problem(v.error().in("multicast packet"));
    if (v->header().sender != publisher) {
      return sink.problem(
          error(errc::invalid_argument, error::no_offset, "packet does not carry the publisher's name"));
    }
    ++m->packets;
    sink.serial = v->serial();
    sink.kind = multicast::is_marker(*v)        ? multicast::packet_kind::marker
                : multicast::is_loss_notice(*v) ? multicast::packet_kind::lost
                                                : multicast::packet_kind::signal;
    if (sink.kind == multicast::packet_kind::marker) ++m->markers;
    if (drained) {
      m->merge.on_drained(sink.serial, sink);
    } else {
      m->merge.on_packet(sink.serial, sink.kind, sink);
      if (m->merge.over(hold_limits_of(s)) && m->merge.expire(clock::now(), hold_limits_of(s), sink))
        finish_if_ended(s, publisher);
    }
  }
  static multicast::hold_limits hold_limits_of(const state& s) {
    return {s.opts.multicast_marker_timeout, s.opts.multicast_max_held, s.opts.multicast_max_held_bytes};
  }

  // Everything already received on the membership's socket joins the merge, held. The transport
  // may hand the packets over out of order (uring_transport::drain_packets): they are put back in
  // the publisher's order by serial, counted from the last packet merged.
  void drain_into(state& s, multicast::membership& m) {
    const std::string publisher = m.publisher;
    std::vector<std::pair<std::uint32_t, std::vector<std::byte>>> drained;
    const auto take = [&](std::span<const std::byte> bytes) {
      auto v = message_view::parse(bytes);
      drained.emplace_back(v ? v->serial() : 0, std::vector<std::byte>(bytes.begin(), bytes.end()));
    };
    if (!m.ended) s.transport.drain_packets(m.source, take);
    // A re-join's next sockets too: the publisher wrote to them only after it closed the one before.
    for (auto& [fd, max] : m.next_sockets) {
      std::vector<std::byte> buf(max_packet_size * 2);
      for (ssize_t n; (n = ::recv(fd.get(), buf.data(), buf.size(), MSG_DONTWAIT)) > 0;) {
        take(std::span<const std::byte>(buf.data(), static_cast<std::size_t>(n)));
      }
    }
    const std::uint32_t base = m.merge.last_packet().value_or(drained.empty() ? 0 : drained.front().first);
    std::stable_sort(drained.begin(), drained.end(),
                     [base](const auto& a, const auto& b) { return a.first - base < b.first - base; });
    for (auto& [serial, bytes] : drained) on_packet(s, publisher, bytes, true);
  }

  // Timers of the member side: markers given up, re-join back-offs, re-join sockets taken up.
  void member_timers() {
    state& s = *st_;
    const auto now = clock::now();
    for (auto& [name, m] : s.members.all()) {
      if (m.closing) continue;
      packet_sink sink{s, name};
      if (m.merge.expire(now, hold_limits_of(s), sink)) {
        finish_if_ended(s, name);
        if (m.closing) continue;
      }
      if (m.switch_by && now >= *m.switch_by && !m.next_sockets.empty()) {
        drain_into(s, m);
        switch_socket(s, m);
      }
    }
    machine_env env{s};
    s.machine.tick(env);
    reap_memberships(s);
  }

  std::optional<clock::time_point> member_deadline() const {
    const state& s = *st_;
    std::optional<clock::time_point> next = s.machine.next_deadline();
    for (const auto& [name, m] : s.members.all()) {
      for (auto t : {m.merge.gives_up_at(s.opts.multicast_marker_timeout), m.switch_by}) {
        if (t && (!next || *t < *next)) next = t;
      }
    }
    return next;
  }

  void expire_calls() {
    state& s = *st_;
    const auto now = clock::now();
    while (!s.deadlines.empty() && s.deadlines.top().first <= now) {
      const std::uint32_t serial = s.deadlines.top().second;
      s.deadlines.pop();
      auto it = s.pending.find(serial);
      if (it == s.pending.end() || it->second.deadline > now) continue;
      reply_handler h = std::move(it->second.handler);
      s.pending.erase(it);
      h(call_error(error(errc::timeout, error::no_offset, "no reply within the call timeout")));
    }
  }

  // The connection is gone: every pending call ends with an error, then on_disconnect runs.
  void lost(const error& why) {
    state& s = *st_;
    if (!s.connected) return;
    s.connected = false;
    auto pending = std::move(s.pending);
    s.pending.clear();
    while (!s.deadlines.empty()) s.deadlines.pop();
    const call_error err(
        why.code() == errc::disconnected ? why : error(errc::disconnected, error::no_offset, "connection lost"));
    for (auto& [serial, call] : pending) call.handler(err);
    if (s.disconnected) s.disconnected(why);
  }

  std::shared_ptr<state> st_;

 public:
  // A fatal stream error noticed while receiving (kept until the loop reports it).
  // (Exposed for tests that feed broken streams.)
  const error& fatal_error() const noexcept { return st_->fatal; }
};

using connection = basic_connection<auto_transport>;

MCBUS_NAMESPACE_END
