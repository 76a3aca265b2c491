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
  // How long packets wait for a message that a Unicast marker announced over the bus.
  std::chrono::milliseconds multicast_marker_timeout{25000};
  // subscribe() asks a rule's sender to Join its group; a sender that does not answer in this
  // time is served through the bus.
  std::chrono::milliseconds multicast_join_timeout{2000};
  // A publisher that dropped us (over quota) is asked at once to take us back. Until it answers,
  // and if it refuses, the subscriptions use the bus: that serves them only while the publisher
  // sends bus copies (publisher_options::bus_copy), so without a re-join a publisher with no
  // copies would deliver nothing more. Each drop is reported (on_multicast_lost).
  bool multicast_rejoin_after_drop = true;
};

// Which path a subscription takes. automatic: the publisher's multicast group when the rule's
// sender offers org.mcbus.Multicast1, the bus otherwise.
enum class subscribe_via { automatic, bus, multicast };

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
  subscription(subscription&& o) noexcept : cancel_(std::move(o.cancel_)) { o.cancel_ = nullptr; }
  subscription& operator=(subscription&& o) noexcept {
    if (this != &o) {
      reset();
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
  explicit subscription(std::function<void()> cancel) : cancel_(std::move(cancel)) {}
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
    if (s.iterating == 0) {
      if (error e = s.transport.flush()) {
        lost(e);
        return e;
      }
    }
    return serial;
  }

  // Writes everything queued, waiting up to `timeout`.
  error flush(std::chrono::milliseconds timeout = std::chrono::milliseconds(25000)) {
    state& s = *st_;
    const auto deadline = clock::now() + timeout;
    while (s.connected && s.transport.has_pending_output()) {
      if (clock::now() >= deadline) return {errc::timeout, error::no_offset, "flush"};
      if (error e = s.transport.wait(detail::to_poll_timeout(deadline),
                                     [&](auto bytes, auto& fds) { receive(bytes, fds); })) {
        lost(e);
        return e;
      }
    }
    return s.connected ? error() : error(errc::disconnected);
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
    return static_cast<request_name_reply>(*code);
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
  // When the rule names a sender that offers org.mcbus.Multicast1 (and `via` allows), the
  // connection joins that publisher's group and the messages skip the bus; otherwise the rule is
  // added to the bus (AddMatch). The returned handle undoes either when destroyed.
  call_result<subscription> subscribe(std::string_view rule_text, signal_handler handler,
                                      subscribe_via via = subscribe_via::automatic) {
    auto rule = match_rule::parse(rule_text);
    if (!rule) return call_error(rule.error());
    const std::string canonical = rule->to_string();
    std::string publisher;
    const std::string_view sender = rule->sender().value_or(std::string_view());
    if (via != subscribe_via::bus && st_->opts.hello && !sender.empty() && sender != bus_service.str()) {
      auto joined = join_group(sender, canonical);
      if (joined) {
        publisher = std::move(*joined);
      } else if (via == subscribe_via::multicast) {
        return joined.error();
      }
    }
    if (publisher.empty() && st_->opts.hello) {
      auto added = add_match(canonical);
      if (!added) return added.error();
    }
    track_sender(*rule);
    const std::uint64_t id = ++st_->next_subscription;
    st_->subscriptions.emplace(id, subscription_entry{std::move(*rule), canonical, std::move(handler), publisher});
    std::weak_ptr<state> weak = st_;
    return subscription([weak, id]() {
      auto s = weak.lock();
      if (!s) return;
      auto it = s->subscriptions.find(id);
      if (it == s->subscriptions.end()) return;
      const std::string text = it->second.text;
      const std::string from = it->second.publisher;
      s->subscriptions.erase(it);
      if (!from.empty()) return leave_rule(*s, from, text);
      if (s->connected && s->opts.hello) {
        // RemoveMatch is sent without waiting: the handle may die inside a handler.
        message m = message::method_call(bus_service, bus_path, bus_interface, "RemoveMatch");
        m.append(text);
        m.set_no_reply_expected();
        send_on(*s, std::move(m));
      }
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
  // Called when a publisher drops this member or its group closes; the subscriptions on it have
  // moved to the bus by then.
  void on_multicast_lost(std::function<void(std::string_view publisher, const error&)> fn) {
    st_->multicast_lost = std::move(fn);
  }
  // Called when subscribe() could not join a sender's group and used the bus instead (the sender
  // offers no group, refused us, or did not answer in time): the reason, for logs.
  void on_multicast_fallback(std::function<void(std::string_view sender, const call_error&)> fn) {
    st_->multicast_fallback = std::move(fn);
  }

  // ---- for the multicast publisher ------------------------------------------------------------

  // True inside a loop iteration (handlers run there): sends are then batched until it ends.
  bool dispatching() const noexcept { return st_->iterating > 0; }
  // The next serial of this connection: bus and multicast messages share one sequence.
  std::uint32_t allocate_serial() noexcept { return next_serial(); }
  Transport& transport() noexcept { return st_->transport; }
  // Sees every message before it is queued for the bus (after its serial is set); returning true
  // means the hook took it and will send it later with send_unhooked().
  void set_send_hook(std::function<bool(message&)> hook) { st_->send_hook = std::move(hook); }
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
    // An answered call leaves its deadline in the heap (a heap cannot remove from the middle);
    // those that reach the top are dropped here, so that the loop never wakes for them.
    while (!s.deadlines.empty() && !deadline_is_live(s, s.deadlines.top())) s.deadlines.pop();
    if (s.deadlines.empty()) return -1;
    return detail::to_poll_timeout(s.deadlines.top().first);
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
    std::string publisher;  // unique name of the group it is served by; empty: the bus
  };

  struct state {
    state(Transport&& t, connection_options o) : transport(std::move(t)), opts(o), in(o.max_fds_per_message) {}
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
    // Owners of the well-known names that subscriptions name as sender, for exact matching.
    std::map<std::string, std::string, std::less<>> owners;
    object_registry objects;
    std::function<void(std::string_view)> name_acquired;
    std::function<void(std::string_view)> name_lost;
    std::function<void(const error&)> disconnected;
    std::function<void(const error&)> invalid_message;
    std::function<bool(const message_view&)> filter;
    error fatal;
    // Multicast: groups joined, names known not to be publishers, the publisher's hooks.
    multicast::membership_set members;
    bool handling_packet = false;
    std::function<void(std::string_view, const error&)> multicast_lost;
    std::function<void(std::string_view, const call_error&)> multicast_fallback;
    std::function<bool(message&)> send_hook;
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
    if (s.iterating == 0) (void)s.transport.flush();
    return serial;
  }

  void receive(std::span<const std::byte> bytes, received_fds& fds) {
    if (error e = st_->in.feed(bytes, fds)) st_->fatal = e;
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
    expire_calls();
    if (!s.members.empty()) s.members.expire(s.opts.multicast_marker_timeout, packet_delivery(s), packet_problem(s));
    --s.iterating;
    if (!io && s.connected) io = s.transport.flush();
    if (!io && s.fatal) io = s.fatal;
    if (io) {
      lost(io);
      return io.code() == errc::disconnected ? error() : io;
    }
    return {};
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
        if (multicast::membership* m = s.members.empty() ? nullptr : s.members.find(reply.header().sender)) {
          // The one exception to "a blocking call dispatches nothing": packets this publisher sent
          // before its reply are handled first, so that its messages stay in serial order.
          const std::uint32_t source = m->source;
          s.members.before_bus_message(
              *m, reply.header().serial, [&](auto fn) { s.transport.drain_packets(source, fn); }, packet_delivery(s),
              packet_problem(s));
          if (multicast::membership* again = s.members.find(reply.header().sender)) {
            s.members.after_bus_message(*again, reply.header().serial, packet_delivery(s), packet_problem(s));
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
      if (clock::now() >= deadline) return call_error(error(errc::timeout, error::no_offset, "waiting for a reply"));
      error io =
          s.transport.wait(detail::to_poll_timeout(deadline), [&](auto bytes, auto& fds) { receive(bytes, fds); });
      if (io) {
        lost(io);
        return call_error(io);
      }
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
    multicast::membership* member = s.members.empty() ? nullptr : s.members.find(m.header().sender);
    if (!member) return dispatch_bus(m);
    // Packets older than this message are handled first, newer ones after it.
    const std::string publisher(m.header().sender);
    const std::uint32_t source = member->source;
    s.members.before_bus_message(
        *member, m.serial(), [&](auto fn) { s.transport.drain_packets(source, fn); }, packet_delivery(s),
        packet_problem(s));
    dispatch_bus(m);
    if (multicast::membership* again = s.members.find(publisher)) {
      s.members.after_bus_message(*again, m.serial(), packet_delivery(s), packet_problem(s));
    }
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
        dispatch_signal(s, m, false);
        return;
      case message_type::method_call:
        s.objects.dispatch(m, [this](message&& reply) { (void)send(std::move(reply)); });
        return;
      default: return;  // unknown message types are ignored, as the specification says
    }
  }

  // Signals from the bus go to bus subscriptions; packets from a group go to the subscriptions
  // that group serves. A message never reaches a subscription twice.
  static void dispatch_signal(state& s, const message_view& m, bool from_packet) {
    if (s.subscriptions.empty()) return;
    // The lookup is borrowed by the context: it must outlive every matches() call below.
    const auto owner_of = [&s](std::string_view name) -> std::string_view {
      auto it = s.owners.find(name);
      return it == s.owners.end() ? std::string_view() : std::string_view(it->second);
    };
    const match_context ctx{s.unique_name, owner_of};
    // Handlers may add or remove subscriptions: collect first, then call those still present.
    std::vector<std::uint64_t> hits;
    // A broadcast from a publisher whose group serves a subscription reached that subscription
    // through the group already; one addressed to us (a unicast fallback) did not.
    const std::string_view sender = m.header().sender;
    const bool broadcast = m.header().destination.empty();
    for (const auto& [id, sub] : s.subscriptions) {
      if (from_packet ? sub.publisher != sender : broadcast && !sub.publisher.empty() && sub.publisher == sender)
        continue;
      if (sub.rule.matches(m, ctx)) hits.push_back(id);
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
      auto it = s.owners.find(name);
      if (it != s.owners.end()) it->second = std::string(new_owner);
      if (!new_owner.empty() && name[0] != ':') rejoin_after_restart(std::string(name), std::string(new_owner));
    } else if (member == "NameAcquired" && m.header().destination == s.unique_name) {
      auto name = m.read_first<std::string_view>();
      if (!name) return;
      if (*name != s.unique_name) s.owned_names.emplace_back(*name);
      if (s.name_acquired) s.name_acquired(*name);
    } else if (member == "NameLost" && m.header().destination == s.unique_name) {
      auto name = m.read_first<std::string_view>();
      if (!name) return;
      std::erase(s.owned_names, *name);
      if (s.name_lost) s.name_lost(*name);
    }
  }

  // A rule whose sender is a well-known name matches messages from that name's current owner:
  // learn the owner now, and follow NameOwnerChanged for it.
  void track_sender(const match_rule& rule) {
    state& s = *st_;
    const std::string_view sender = rule.sender().value_or(std::string_view());
    if (sender.empty() || sender[0] == ':' || sender == bus_service.str() || s.owners.count(sender)) return;
    std::string owner;
    if (s.opts.hello) {
      if (auto o = get_name_owner(bus_name::from_unchecked(sender))) owner = std::move(*o);
      std::string rule_text =
          "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
          "member='NameOwnerChanged',arg0='";
      rule_text += sender;
      rule_text += '\'';
      (void)add_match(rule_text);
    }
    s.owners.emplace(std::string(sender), std::move(owner));
  }

  // ---- multicast groups (the member side) ---------------------------------------------------------

  void install_packet_handler() {
    if (!st_) return;
    state* sp = st_.get();  // the transport lives inside the state: the pointer outlives the handler
    packet_handler h;
    h.packet = [sp](std::uint32_t source, std::span<const std::byte> bytes) {
      if (multicast::membership* m = sp->members.by_source(source)) {
        sp->members.on_packet(*m, bytes, packet_delivery(*sp), packet_problem(*sp));
      }
    };
    h.closed = [sp](std::uint32_t source, const error& why) {
      if (multicast::membership* m = sp->members.by_source(source)) {
        group_lost(*sp, m->publisher, why);
      } else if (sp->packet_closed) {
        sp->packet_closed(source, why);
      }
    };
    h.sent = [sp](std::uint64_t token, int res) {
      if (sp->packet_sent) sp->packet_sent(token, res);
    };
    h.writable = [sp](std::uint32_t watch) {
      if (sp->packet_writable) sp->packet_writable(watch);
    };
    st_->transport.set_packet_handler(std::move(h));
  }

  static multicast::packet_delivery packet_delivery(state& s) {
    return [&s](multicast::membership&, const message_view& m) {
      if (m.type() != message_type::signal) return;
      s.handling_packet = true;
      dispatch_signal(s, m, true);
      s.handling_packet = false;
    };
  }
  static multicast::packet_problem packet_problem(state& s) {
    return [&s](multicast::membership&, const error& e) {
      if (s.invalid_message) s.invalid_message(e);
    };
  }

  // Joins (or re-joins, with one more rule) the group of the publisher behind `sender`. Returns
  // the publisher's unique name; an error means the subscription should use the bus.
  call_result<std::string> join_group(std::string_view sender, const std::string& rule) {
    state& s = *st_;
    std::string publisher(sender);
    if (sender[0] != ':') {
      auto owner = get_name_owner(bus_name::from_unchecked(sender));
      if (!owner) return owner.error();
      publisher = std::move(*owner);
    }
    std::vector<std::string> rules;
    if (multicast::membership* m = s.members.find(publisher)) rules = m->rules;
    rules.push_back(rule);
    auto joined = join_call(bus_name::from_unchecked(sender), rules);
    if (!joined) {
      if (s.multicast_fallback) s.multicast_fallback(sender, joined.error());
      return joined.error();
    }
    install_group(publisher, std::string(sender), std::move(joined->first), joined->second, std::move(rules));
    return publisher;
  }

  call_result<std::pair<unix_fd, std::uint32_t>> join_call(bus_name name, const std::vector<std::string>& rules) {
    if (!st_->unix_fds) return call_error(error(errc::not_supported, error::no_offset, "no fd passing on this bus"));
    auto reply = call(join_message(name, rules), st_->opts.multicast_join_timeout);
    if (!reply) return reply.error();
    return read_join_reply(*st_, name, reply->view());
  }

  static message join_message(bus_name name, const std::vector<std::string>& rules) {
    message join = message::method_call(name, multicast::path, multicast::interface, multicast::join_method);
    join.append(rules, multicast::known_join_flags);
    return join;
  }

  // The socket and packet size of a Join reply; a group we cannot take is left at once.
  static call_result<std::pair<unix_fd, std::uint32_t>> read_join_reply(state& s, bus_name name,
                                                                        const message_view& reply) {
    auto values = reply.template read<unix_fd, std::uint32_t, std::uint32_t>();
    if (!values) return call_error(values.error());
    auto& [fd, version, max_packet] = *values;
    if (version < 1 || max_packet > max_packet_size || !fd) {
      message leave = message::method_call(name, multicast::path, multicast::interface, multicast::leave_method);
      leave.set_no_reply_expected();
      send_on(s, std::move(leave));
      return call_error(error(errc::not_supported, error::no_offset, "publisher's packets are larger than we take"));
    }
    return std::pair<unix_fd, std::uint32_t>(std::move(fd), max_packet);
  }

  void install_group(const std::string& publisher, std::string joined_as, unix_fd fd, std::uint32_t max_packet,
                     std::vector<std::string> rules) {
    install_group_on(*st_, publisher, std::move(joined_as), std::move(fd), max_packet, std::move(rules));
  }

  static void install_group_on(state& s, const std::string& publisher, std::string joined_as, unix_fd fd,
                               std::uint32_t max_packet, std::vector<std::string> rules) {
    if (multicast::membership* old = s.members.find(publisher)) {
      // The publisher moved us to the new socket: what the old one still holds comes first.
      const std::uint32_t old_source = old->source;
      s.transport.drain_packets(old_source, [&](std::span<const std::byte> bytes) {
        s.members.on_packet(*old, bytes, packet_delivery(s), packet_problem(s));
      });
      s.transport.remove_packet_source(old_source);
      s.members.remove(publisher);
    }
    multicast::membership& m = s.members.add(publisher, std::move(joined_as), std::move(fd), max_packet);
    m.rules = std::move(rules);
    if (error e = s.transport.add_packet_source(m.source, m.socket.get())) {
      group_lost(s, publisher, e);
    }
  }

  // Subscriptions that the bus served while a group was being (re-)joined move to the group: the
  // bus stops sending them, and the group's publisher's broadcast copies are ignored from here on.
  static void move_to_group(state& s, const std::vector<std::uint64_t>& ids, const std::string& publisher) {
    for (std::uint64_t id : ids) {
      auto it = s.subscriptions.find(id);
      if (it == s.subscriptions.end()) continue;
      if (it->second.publisher.empty()) {
        message remove = message::method_call(bus_service, bus_path, bus_interface, "RemoveMatch");
        remove.append(it->second.text);
        remove.set_no_reply_expected();
        send_on(s, std::move(remove));
      }
      it->second.publisher = publisher;
    }
  }

  // A subscription served by a group ended: with no rule left, leave the group.
  static void leave_rule(state& s, const std::string& publisher, const std::string& rule) {
    multicast::membership* m = s.members.find(publisher);
    if (!m) return;
    if (auto it = std::find(m->rules.begin(), m->rules.end(), rule); it != m->rules.end()) m->rules.erase(it);
    // The filter stays as wide as it was until no rule is left: extra packets are matched away.
    if (!m->rules.empty()) return;
    message leave = message::method_call(bus_name::from_unchecked(publisher), multicast::path, multicast::interface,
                                         multicast::leave_method);
    leave.set_no_reply_expected();
    send_on(s, std::move(leave));
    s.transport.remove_packet_source(m->source);
    s.members.remove(publisher);
  }

  // The group is gone (dropped over quota, socket closed, publisher exited): its subscriptions go
  // to the bus at once, and the publisher is asked to take us back.
  static void group_lost(state& s, std::string publisher, const error& why) {
    multicast::membership* m = s.members.find(publisher);
    if (!m) return;
    std::vector<std::string> rules = std::move(m->rules);
    std::string joined_as = std::move(m->joined_as);
    s.transport.remove_packet_source(m->source);
    s.members.remove(publisher);
    std::vector<std::uint64_t> ids;
    for (auto& [id, sub] : s.subscriptions) {
      if (sub.publisher != publisher) continue;
      ids.push_back(id);
      sub.publisher.clear();
      if (s.connected && s.opts.hello) {
        message add = message::method_call(bus_service, bus_path, bus_interface, "AddMatch");
        add.append(sub.text);
        add.set_no_reply_expected();
        send_on(s, std::move(add));
      }
    }
    if (s.multicast_lost) s.multicast_lost(publisher, why);
    // A drop shows as the Dropped signal or as the socket closing, whichever is read first. A
    // publisher that has exited refuses the Join, and NameOwnerChanged brings its successor.
    const bool publisher_may_take_us_back = why.code() == errc::dropped || why.code() == errc::disconnected;
    if (publisher_may_take_us_back && s.opts.multicast_rejoin_after_drop && !ids.empty()) {
      rejoin_after_drop(s, publisher, std::move(joined_as), std::move(rules), std::move(ids));
    }
  }

  // An asynchronous Join: the drop is reported from inside a loop iteration, which must not block.
  static void rejoin_after_drop(state& s, const std::string& publisher, std::string joined_as,
                                std::vector<std::string> rules, std::vector<std::uint64_t> ids) {
    if (!s.unix_fds) return;
    const bus_name name = bus_name::from_unchecked(publisher);
    const std::uint32_t serial = send_on(s, join_message(name, rules));
    if (serial == 0) return;
    const auto deadline = clock::now() + s.opts.multicast_join_timeout;
    state* sp = &s;  // the state outlives its pending calls: they end with it
    s.pending.emplace(serial,
                      pending_call{deadline, [sp, publisher, joined_as = std::move(joined_as), rules = std::move(rules),
                                              ids = std::move(ids)](call_result<message_view> reply) {
                                     state& st = *sp;
                                     call_result<std::pair<unix_fd, std::uint32_t>> joined =
                                         reply ? read_join_reply(st, bus_name::from_unchecked(publisher), *reply)
                                               : call_result<std::pair<unix_fd, std::uint32_t>>(reply.error());
                                     if (!joined) {
                                       if (st.multicast_fallback) st.multicast_fallback(publisher, joined.error());
                                       return;  // the subscriptions stay on the bus
                                     }
                                     install_group_on(st, publisher, joined_as, std::move(joined->first),
                                                      joined->second, rules);
                                     move_to_group(st, ids, publisher);
                                   }});
    s.deadlines.emplace(deadline, serial);
  }

  // A well-known name got a new owner: subscriptions naming it as sender re-join the new owner's
  // group if it has one (a restarted publisher), leaving the bus where they had fallen back to it.
  void rejoin_after_restart(const std::string& name, const std::string& new_owner) {
    state& s = *st_;
    std::vector<std::uint64_t> ids;
    std::vector<std::string> rules;
    for (auto& [id, sub] : s.subscriptions) {
      if (sub.rule.sender().value_or(std::string_view()) != name || sub.publisher == new_owner) continue;
      ids.push_back(id);
      rules.push_back(sub.text);
    }
    if (ids.empty()) return;
    auto joined = join_call(bus_name::from_unchecked(name), rules);
    if (!joined) return;  // not a publisher (or refused): the subscriptions stay on the bus
    install_group(new_owner, name, std::move(joined->first), joined->second, rules);
    move_to_group(s, ids, new_owner);
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
