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
#include <mcbus/wire.hpp>

#include <poll.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <queue>
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

  basic_connection(basic_connection&&) noexcept = default;
  basic_connection& operator=(basic_connection&&) noexcept = default;
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

  // Adds the rule to the bus (AddMatch) and calls `handler` for each message that matches it
  // exactly, as dbus-daemon would judge it. The returned handle removes the rule when destroyed.
  call_result<subscription> subscribe(std::string_view rule_text, signal_handler handler) {
    auto rule = match_rule::parse(rule_text);
    if (!rule) return call_error(rule.error());
    const std::string canonical = rule->to_string();
    if (st_->opts.hello) {
      auto added = add_match(canonical);
      if (!added) return added.error();
    }
    track_sender(*rule);
    const std::uint64_t id = ++st_->next_subscription;
    st_->subscriptions.emplace(id, subscription_entry{std::move(*rule), canonical, std::move(handler)});
    std::weak_ptr<state> weak = st_;
    return subscription([weak, id]() {
      auto s = weak.lock();
      if (!s) return;
      auto it = s->subscriptions.find(id);
      if (it == s->subscriptions.end()) return;
      const std::string text = it->second.text;
      s->subscriptions.erase(it);
      if (s->connected && s->opts.hello) {
        // RemoveMatch is sent without waiting: the handle may die inside a handler.
        message m = message::method_call(bus_service, bus_path, bus_interface, "RemoveMatch");
        m.append(text);
        m.set_no_reply_expected();
        send_on(*s, std::move(m));
      }
    });
  }

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
  short events() const noexcept {
    if constexpr (requires(const Transport& t) { t.poll_events(); }) {
      return st_->transport.poll_events();
    } else {
      return static_cast<short>(POLLIN | (st_->transport.has_pending_output() ? POLLOUT : 0));
    }
  }
  int timeout() const noexcept {
    if (!st_->in.empty()) return 0;
    if (st_->deadlines.empty()) return -1;
    return detail::to_poll_timeout(st_->deadlines.top().first);
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
    error fatal;  // a stream error noticed while receiving, reported by the loop
  };

  basic_connection() = default;

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

  static void send_on(state& s, message&& m) {
    if (!s.connected) return;
    if (++s.serial == 0) s.serial = 1;
    m.set_serial(s.serial);
    if (m.seal()) return;
    s.transport.enqueue(std::move(m));
    if (s.iterating == 0) (void)s.transport.flush();
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
        if (e.invalid || e.reply_serial != serial ||
            (e.type != message_type::method_return && e.type != message_type::error)) {
          continue;
        }
        received_message reply = received_message::copy_of(s.in.view(e), std::move(e.fds));
        entries.erase(entries.begin() + static_cast<std::ptrdiff_t>(i));
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
      } else {
        dispatch(s.in.view(e));
      }
      s.in.leave();
    }
  }

  void dispatch(const message_view& m) {
    state& s = *st_;
    if (s.filter && s.filter(m)) return;
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
        dispatch_signal(m);
        return;
      case message_type::method_call:
        s.objects.dispatch(m, [this](message&& reply) { (void)send(std::move(reply)); });
        return;
      default: return;  // unknown message types are ignored, as the specification says
    }
  }

  void dispatch_signal(const message_view& m) {
    state& s = *st_;
    if (s.subscriptions.empty()) return;
    // The lookup is borrowed by the context: it must outlive every matches() call below.
    const auto owner_of = [&s](std::string_view name) -> std::string_view {
      auto it = s.owners.find(name);
      return it == s.owners.end() ? std::string_view() : std::string_view(it->second);
    };
    const match_context ctx{s.unique_name, owner_of};
    // Handlers may add or remove subscriptions: collect first, then call those still present.
    std::vector<std::uint64_t> hits;
    for (const auto& [id, sub] : s.subscriptions) {
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
      auto it = s.owners.find(std::get<0>(*args));
      if (it != s.owners.end()) it->second = std::string(std::get<2>(*args));
    } else if (member == "NameAcquired" && m.header().destination == s.unique_name) {
      auto name = m.read_first<std::string_view>();
      if (name && s.name_acquired) s.name_acquired(*name);
    } else if (member == "NameLost" && m.header().destination == s.unique_name) {
      auto name = m.read_first<std::string_view>();
      if (name && s.name_lost) s.name_lost(*name);
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
