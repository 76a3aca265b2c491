// mcbus: exported objects.
//
//   auto echo = conn.add_object("/org/example/Echo", mcbus::object_builder()
//       .interface("org.example.Echo1")
//         .method("Echo", [](std::string_view s) { return std::string(s); }, {"text"}, {"echoed"})
//         .signal<std::string>("Echoed", {"text"})
//         .property<std::uint32_t>("Count", [&] { return count; }));
//
// Method signatures come from the callables' parameter and return types. A handler may take a
// `method_call&` first (the call's sender, fds, and defer() for a reply sent later), and may
// return void, a value, a std::tuple of values, or call_result<...> to reply with a D-Bus error.
// The registry also answers org.freedesktop.DBus.Properties, .Introspectable (XML generated from
// the registrations, child nodes included) and .Peer, and replies with the standard errors to
// calls on unknown objects, interfaces, methods and properties, and to bad arguments.
#pragma once

#include <mcbus/connection/call_error.hpp>
#include <mcbus/connection/introspect.hpp>
#include <mcbus/error.hpp>
#include <mcbus/wire/message.hpp>
#include <mcbus/wire/reader.hpp>
#include <mcbus/wire/signature.hpp>
#include <mcbus/wire/writer.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

MCBUS_NAMESPACE_BEGIN

using send_function = std::function<void(message&&)>;

// A reply that a handler sends later: returned by method_call::defer().
class deferred_reply {
 public:
  deferred_reply() = default;
  bool valid() const noexcept { return static_cast<bool>(send_); }

  template <class... Ts>
  void reply(const Ts&... values) {
    if (!send_) return;
    message m = return_for(serial_, sender_);
    if constexpr (sizeof...(Ts) > 0) m.append(values...);
    if (m.err()) return fail(call_error(m.err()));
    std::exchange(send_, nullptr)(std::move(m));
  }
  void fail(const call_error& e) {
    if (!send_) return;
    auto name = error_name::from(e.name());
    std::exchange(
        send_, nullptr)(message::error_reply(serial_, bus_name::from_unchecked(sender_),
                                             name ? *name : error_name("org.freedesktop.DBus.Error.Failed"), e.text()));
  }

 private:
  friend class method_call;
  static message return_for(std::uint32_t serial, const std::string& sender);

  std::uint32_t serial_ = 0;
  std::string sender_;
  send_function send_;
};

// The call being handled: the message, and what the handler may do besides returning.
class method_call {
 public:
  method_call(const message_view& m, send_function send) : msg_(m), send_(std::move(send)) {}

  const message_view& message() const noexcept { return msg_; }
  std::string_view sender() const noexcept { return msg_.header().sender; }
  object_path_view path() const noexcept { return msg_.path(); }
  std::span<const int> fds() const noexcept { return msg_.fds(); }

  // The handler will reply later through the returned object; its return value is then ignored.
  deferred_reply defer() {
    deferred_ = true;
    deferred_reply d;
    if (!msg_.no_reply_expected()) {
      d.serial_ = msg_.serial();
      d.sender_ = std::string(msg_.header().sender);
      d.send_ = send_;
    }
    return d;
  }
  bool deferred() const noexcept { return deferred_; }

 private:
  message_view msg_;
  send_function send_;
  bool deferred_ = false;
};

namespace detail {

template <class T>
struct callable_traits : callable_traits<decltype(&T::operator())> {};
template <class R, class... A>
struct callable_traits<R (*)(A...)> {
  using ret = R;
  using args = std::tuple<A...>;
};
template <class R, class... A>
struct callable_traits<R(A...)> : callable_traits<R (*)(A...)> {};
template <class C, class R, class... A>
struct callable_traits<R (C::*)(A...)> : callable_traits<R (*)(A...)> {};
template <class C, class R, class... A>
struct callable_traits<R (C::*)(A...) const> : callable_traits<R (*)(A...)> {};
template <class C, class R, class... A>
struct callable_traits<R (C::*)(A...) noexcept> : callable_traits<R (*)(A...)> {};
template <class C, class R, class... A>
struct callable_traits<R (C::*)(A...) const noexcept> : callable_traits<R (*)(A...)> {};

template <class T>
struct is_tuple : std::false_type {};
template <class... Ts>
struct is_tuple<std::tuple<Ts...>> : std::true_type {};

template <class T>
struct is_call_result : std::false_type {};
template <class T>
struct is_call_result<result<T, call_error>> : std::true_type {
  using value_type = T;
};

// The out signature of a handler's return type.
template <class R>
constexpr std::string_view out_signature() {
  if constexpr (is_call_result<R>::value) {
    return out_signature<typename is_call_result<R>::value_type>();
  } else if constexpr (std::is_void_v<R>) {
    return "";
  } else if constexpr (is_tuple<R>::value) {
    return
        []<class... Ts>(std::type_identity<std::tuple<Ts...>>) { return signature_of<Ts...>; }(std::type_identity<R>{});
  } else {
    return signature_of<R>;
  }
}

template <class R>
void append_return(message& m, R&& r) {
  if constexpr (is_tuple<std::remove_cvref_t<R>>::value) {
    std::apply([&](const auto&... v) { m.append(v...); }, r);
  } else {
    m.append(r);
  }
}

// The parameters a handler reads from the body: all of them, less a leading method_call&.
template <class Args>
struct wire_args;
template <class... A>
struct wire_args<std::tuple<A...>> {
  using type = std::tuple<std::remove_cvref_t<A>...>;
  static constexpr bool takes_call = false;
};
template <class... A>
struct wire_args<std::tuple<method_call&, A...>> {
  using type = std::tuple<std::remove_cvref_t<A>...>;
  static constexpr bool takes_call = true;
};

template <class Tuple>
constexpr std::string_view tuple_signature() {
  return []<class... Ts>(std::type_identity<std::tuple<Ts...>>) {
    return signature_of<Ts...>;
  }(std::type_identity<Tuple>{});
}

}  // namespace detail

using method_invoker = std::function<void(method_call&, const send_function&)>;

struct method_def {
  std::string name;
  std::string in_signature;
  std::string out_signature;
  std::vector<std::string> in_names;
  std::vector<std::string> out_names;
  method_invoker invoke;
};

struct signal_def {
  std::string name;
  std::string signature;
  std::vector<std::string> arg_names;
};

enum class property_access { read, write, readwrite };

struct property_def {
  std::string name;
  std::string signature;
  property_access access = property_access::read;
  bool emits_changed = true;
  std::function<void(writer&)> get;           // writes the value (not the variant around it)
  std::function<call_result<>(reader&)> set;  // reads the value and applies it
};

struct interface_def {
  std::string name;
  std::vector<method_def> methods;
  std::vector<signal_def> signals;
  std::vector<property_def> properties;
};

class object_builder {
 public:
  object_builder& interface(interface_name name) {
    interfaces_.push_back(interface_def{std::string(name.str()), {}, {}, {}});
    return *this;
  }

  template <class F>
  object_builder& method(member_name name, F&& fn, std::initializer_list<std::string_view> in_names = {},
                         std::initializer_list<std::string_view> out_names = {}) {
    using traits = detail::callable_traits<std::remove_cvref_t<F>>;
    using R = typename traits::ret;
    using wire = detail::wire_args<typename traits::args>;
    using args_tuple = typename wire::type;
    method_def m;
    m.name = std::string(name.str());
    m.in_signature = std::string(detail::tuple_signature<args_tuple>());
    m.out_signature = std::string(detail::out_signature<R>());
    for (auto n : in_names) m.in_names.emplace_back(n);
    for (auto n : out_names) m.out_names.emplace_back(n);
    m.invoke = [fn = std::forward<F>(fn)](method_call& call, const send_function& send) mutable {
      args_tuple args;
      const message_view& msg = call.message();
      if (error e = std::apply([&](auto&... a) { return msg.read_into(a...); }, args)) {
        return reply_error(msg, send, call_error(dbus_error::invalid_args, e.message()));
      }
      auto run = [&]() -> decltype(auto) {
        if constexpr (wire::takes_call) {
          return std::apply([&](auto&... a) -> decltype(auto) { return fn(call, std::move(a)...); }, args);
        } else {
          return std::apply([&](auto&... a) -> decltype(auto) { return fn(std::move(a)...); }, args);
        }
      };
      if constexpr (std::is_void_v<R>) {
        run();
        if (!call.deferred()) reply_values(msg, send);
      } else if constexpr (detail::is_call_result<R>::value) {
        R r = run();
        if (call.deferred()) return;
        if (!r) return reply_error(msg, send, r.error());
        if constexpr (std::is_void_v<typename detail::is_call_result<R>::value_type>) {
          reply_values(msg, send);
        } else {
          reply_values(msg, send, *r);
        }
      } else {
        R r = run();
        if (!call.deferred()) reply_values(msg, send, r);
      }
    };
    current().methods.push_back(std::move(m));
    return *this;
  }

  template <class... Args>
  object_builder& signal(member_name name, std::initializer_list<std::string_view> arg_names = {}) {
    signal_def s{std::string(name.str()), std::string(signature_of<Args...>), {}};
    for (auto n : arg_names) s.arg_names.emplace_back(n);
    current().signals.push_back(std::move(s));
    return *this;
  }

  // A read-only property.
  template <class T, class Get>
  object_builder& property(member_name name, Get&& get) {
    property_def p;
    p.name = std::string(name.str());
    p.signature = std::string(signature_of<T>);
    p.access = property_access::read;
    p.get = [get = std::forward<Get>(get)](writer& w) { w.write(static_cast<T>(get())); };
    current().properties.push_back(std::move(p));
    return *this;
  }

  // A read-write property; `set` returns void, bool (false: refused) or call_result<>.
  template <class T, class Get, class Set>
  object_builder& property(member_name name, Get&& get, Set&& set) {
    property<T>(name, std::forward<Get>(get));
    property_def& p = current().properties.back();
    p.access = property_access::readwrite;
    p.set = [set = std::forward<Set>(set)](reader& r) -> call_result<> {
      T v{};
      r.read(v);
      if (r.err()) return call_error(dbus_error::invalid_args, r.err().message());
      using SR = decltype(set(std::move(v)));
      if constexpr (std::is_void_v<SR>) {
        set(std::move(v));
        return {};
      } else if constexpr (std::is_same_v<SR, bool>) {
        if (!set(std::move(v))) return call_error(dbus_error::invalid_args, "value refused");
        return {};
      } else {
        return set(std::move(v));
      }
    };
    return *this;
  }

  // A method whose handler reads the body itself (`call.message().body()`), for a service that
  // must bound what a call holds before it allocates anything for it (a million strings in one
  // call). The registry checks the signature; the handler replies, or defers, itself.
  object_builder& raw_method(member_name name, std::string_view in_signature, std::string_view out_signature,
                             std::function<void(method_call&)> fn,
                             std::initializer_list<std::string_view> in_names = {},
                             std::initializer_list<std::string_view> out_names = {}) {
    method_def m;
    m.name = std::string(name.str());
    m.in_signature = std::string(in_signature);
    m.out_signature = std::string(out_signature);
    for (auto n : in_names) m.in_names.emplace_back(n);
    for (auto n : out_names) m.out_names.emplace_back(n);
    m.invoke = [fn = std::move(fn)](method_call& call, const send_function&) { fn(call); };
    current().methods.push_back(std::move(m));
    return *this;
  }

  // Declares the out signature of the last method, for handlers that defer their reply (their
  // return type cannot say what the reply will hold).
  object_builder& returns(std::string_view out_signature) {
    if (!current().methods.empty()) current().methods.back().out_signature = std::string(out_signature);
    return *this;
  }

  // Marks the last property as not announced through PropertiesChanged.
  object_builder& no_changed_signal() {
    if (!current().properties.empty()) current().properties.back().emits_changed = false;
    return *this;
  }

  std::vector<interface_def>& interfaces() noexcept { return interfaces_; }

 private:
  template <class... Ts>
  static void reply_values(const message_view& call, const send_function& send, const Ts&... values) {
    if (call.no_reply_expected()) return;
    message m = message::method_return(call);
    if constexpr (sizeof...(Ts) > 0) (detail::append_return(m, values), ...);
    if (m.err()) return reply_error(call, send, call_error(m.err()));
    send(std::move(m));
  }
  static void reply_error(const message_view& call, const send_function& send, const call_error& e) {
    if (call.no_reply_expected()) return;
    auto name = error_name::from(e.name());
    send(message::error_reply(call, name ? *name : error_name("org.freedesktop.DBus.Error.Failed"), e.text()));
  }

  interface_def& current() {
    if (interfaces_.empty()) interfaces_.push_back(interface_def{"org.mcbus.Unnamed", {}, {}, {}});
    return interfaces_.back();
  }

  std::vector<interface_def> interfaces_;
};

inline message deferred_reply::return_for(std::uint32_t serial, const std::string& sender) {
  // A method return built without the call's view: only REPLY_SERIAL and DESTINATION matter.
  message_header h;
  h.type = message_type::method_return;
  h.raw_type = static_cast<std::uint8_t>(message_type::method_return);
  h.reply_serial = serial;
  h.present = static_cast<std::uint16_t>(1u << static_cast<unsigned>(header_field::reply_serial));
  if (!sender.empty()) {
    h.destination = sender;
    h.present = static_cast<std::uint16_t>(h.present | (1u << static_cast<unsigned>(header_field::destination)));
  }
  return message::from_header(h);
}

class object_registry;

// Keeps an exported object registered; destroying it unregisters the object.
class object_handle {
 public:
  object_handle() = default;
  object_handle(object_handle&&) noexcept = default;
  object_handle& operator=(object_handle&& o) noexcept {
    if (this != &o) {
      reset();
      reg_ = std::move(o.reg_);
      path_ = std::move(o.path_);
    }
    return *this;
  }
  ~object_handle() { reset(); }

  void reset();
  const std::string& path() const noexcept { return path_; }
  explicit operator bool() const noexcept { return !reg_.expired(); }

  // Emits a signal from this object.
  template <class... Args>
  error emit(interface_name interface, member_name member, const Args&... args);
  // Emits PropertiesChanged for the named properties of `interface`, with their current values.
  error properties_changed(interface_name interface, std::initializer_list<std::string_view> names);

 private:
  friend class object_registry;
  struct shared;
  object_handle(std::weak_ptr<shared> reg, std::string path) : reg_(std::move(reg)), path_(std::move(path)) {}
  std::weak_ptr<shared> reg_;
  std::string path_;
};

struct object_handle::shared {
  std::map<std::string, std::vector<interface_def>, std::less<>> objects;
  send_function send;

  const interface_def* find_interface(std::string_view path, std::string_view iface) const {
    auto it = objects.find(path);
    if (it == objects.end()) return nullptr;
    for (const interface_def& i : it->second) {
      if (i.name == iface) return &i;
    }
    return nullptr;
  }

  // Object paths registered directly under `path` (one level), for introspection.
  std::vector<std::string> children(std::string_view path) const {
    std::vector<std::string> out;
    std::string prefix(path);
    if (prefix != "/") prefix += '/';
    for (auto it = objects.lower_bound(prefix); it != objects.end(); ++it) {
      const std::string& p = it->first;
      if (p.compare(0, prefix.size(), prefix) != 0) break;
      const std::string_view rest = std::string_view(p).substr(prefix.size());
      const std::string child(rest.substr(0, rest.find('/')));
      if (!child.empty() && (out.empty() || out.back() != child)) out.push_back(child);
    }
    return out;
  }

  void dispatch(const message_view& m, const send_function& send) {
    const std::string_view path = m.header().path;
    const std::string_view iface = m.header().interface;
    const std::string_view member = m.header().member;
    auto error_reply = [&](std::string_view name, std::string text) {
      if (m.no_reply_expected()) return;
      send(message::error_reply(m, error_name::from_unchecked(name), text));
    };
    auto reply = [&](message&& r) {
      if (!m.no_reply_expected() && !r.err()) send(std::move(r));
    };

    if (iface == "org.freedesktop.DBus.Peer" || (iface.empty() && (member == "Ping" || member == "GetMachineId"))) {
      if (member == "Ping") return reply(message::method_return(m));
      if (member == "GetMachineId") {
        std::string id = machine_id();
        if (id.empty()) return error_reply(dbus_error::failed, "no machine id on this system");
        message r = message::method_return(m);
        r.append(id);
        return reply(std::move(r));
      }
      return error_reply(dbus_error::unknown_method,
                         "no method " + std::string(member) + " in org.freedesktop.DBus.Peer");
    }

    const auto obj = objects.find(path);
    const bool exists = obj != objects.end();
    if (iface == "org.freedesktop.DBus.Introspectable" || (iface.empty() && member == "Introspect")) {
      if (member != "Introspect") return error_reply(dbus_error::unknown_method, "no such method");
      const auto kids = children(path);
      if (!exists && kids.empty()) return error_reply(dbus_error::unknown_object, "no object at " + std::string(path));
      message r = message::method_return(m);
      r.append(introspection_xml(exists ? obj->second : std::vector<interface_def>{}, kids));
      return reply(std::move(r));
    }
    if (!exists) return error_reply(dbus_error::unknown_object, "no object at " + std::string(path));
    if (iface == "org.freedesktop.DBus.Properties") return properties(m, obj->second, send);

    for (const interface_def& i : obj->second) {
      if (!iface.empty() && i.name != iface) continue;
      for (const method_def& md : i.methods) {
        if (md.name != member) continue;
        if (m.header().signature != md.in_signature) {
          return error_reply(dbus_error::invalid_args, "method " + md.name + " takes '" + md.in_signature + "', not '" +
                                                           std::string(m.header().signature) + "'");
        }
        method_call call(m, send);
        md.invoke(call, send);
        return;
      }
    }
    if (!iface.empty() && !find_interface(path, iface)) {
      return error_reply(dbus_error::unknown_interface,
                         "no interface " + std::string(iface) + " at " + std::string(path));
    }
    error_reply(dbus_error::unknown_method, "no method " + std::string(member) + " at " + std::string(path));
  }

  void properties(const message_view& m, const std::vector<interface_def>& ifaces, const send_function& send) {
    const std::string_view member = m.header().member;
    auto error_reply = [&](std::string_view name, std::string text) {
      if (!m.no_reply_expected()) send(message::error_reply(m, error_name::from_unchecked(name), text));
    };
    auto find = [&](std::string_view iface) -> const interface_def* {
      for (const interface_def& i : ifaces)
        if (i.name == iface) return &i;
      return nullptr;
    };
    if (member == "Get") {
      auto args = m.read<std::string_view, std::string_view>();
      if (!args) return error_reply(dbus_error::invalid_args, "Get takes (ss)");
      const interface_def* i = find(std::get<0>(*args));
      if (!i) return error_reply(dbus_error::unknown_interface, "no interface " + std::string(std::get<0>(*args)));
      for (const property_def& p : i->properties) {
        if (p.name != std::get<1>(*args)) continue;
        if (p.access == property_access::write) return error_reply(dbus_error::access_denied, "property is write-only");
        message r = message::method_return(m);
        r.append_with("v", [&](writer& w) {
          w.open_variant(p.signature);
          p.get(w);
          w.close_variant();
        });
        if (r.err()) return error_reply(dbus_error::failed, r.err().message());
        if (!m.no_reply_expected()) send(std::move(r));
        return;
      }
      return error_reply(dbus_error::unknown_property, "no property " + std::string(std::get<1>(*args)));
    }
    if (member == "GetAll") {
      auto args = m.read<std::string_view>();
      if (!args) return error_reply(dbus_error::invalid_args, "GetAll takes (s)");
      const std::string_view want = std::get<0>(*args);
      const interface_def* i = want.empty() ? nullptr : find(want);
      if (!want.empty() && !i) return error_reply(dbus_error::unknown_interface, "no interface " + std::string(want));
      message r = message::method_return(m);
      r.append_with("a{sv}", [&](writer& w) {
        const auto a = w.open_array("{sv}");
        for (const interface_def& each : ifaces) {
          if (i && &each != i) continue;
          for (const property_def& p : each.properties) {
            if (p.access == property_access::write) continue;
            w.open_struct();
            w.put_string(p.name);
            w.open_variant(p.signature);
            p.get(w);
            w.close_variant();
            w.close_struct();
          }
        }
        w.close_array(a);
      });
      if (r.err()) return error_reply(dbus_error::failed, r.err().message());
      if (!m.no_reply_expected()) send(std::move(r));
      return;
    }
    if (member == "Set") {
      if (m.header().signature != "ssv") return error_reply(dbus_error::invalid_args, "Set takes (ssv)");
      reader r = m.body();
      const std::string_view iface = r.get_string();
      const std::string_view name = r.get_string();
      const interface_def* i = find(iface);
      if (!i) return error_reply(dbus_error::unknown_interface, "no interface " + std::string(iface));
      for (const property_def& p : i->properties) {
        if (p.name != name) continue;
        if (p.access == property_access::read || !p.set) {
          return error_reply(dbus_error::property_read_only, "property " + p.name + " is read-only");
        }
        const signature_view sig = r.open_variant();
        if (sig.str() != p.signature) {
          return error_reply(dbus_error::invalid_args, "property " + p.name + " has type '" + p.signature + "', not '" +
                                                           std::string(sig.str()) + "'");
        }
        call_result<> done = p.set(r);
        if (!done) return error_reply(done.error().name(), done.error().text());
        if (!m.no_reply_expected()) send(message::method_return(m));
        if (p.emits_changed) announce(m.header().path, *i, {&p});
        return;
      }
      return error_reply(dbus_error::unknown_property, "no property " + std::string(name));
    }
    error_reply(dbus_error::unknown_method, "no method " + std::string(member) + " in org.freedesktop.DBus.Properties");
  }

  // PropertiesChanged(s interface, a{sv} changed, as invalidated).
  void announce(std::string_view path, const interface_def& iface, const std::vector<const property_def*>& props) {
    if (!send) return;
    message sig =
        message::signal(object_path_view::from_unchecked(path), "org.freedesktop.DBus.Properties", "PropertiesChanged");
    sig.append(iface.name);
    sig.append_with("a{sv}", [&](writer& w) {
      const auto a = w.open_array("{sv}");
      for (const property_def* p : props) {
        w.open_struct();
        w.put_string(p->name);
        w.open_variant(p->signature);
        p->get(w);
        w.close_variant();
        w.close_struct();
      }
      w.close_array(a);
    });
    sig.append(std::vector<std::string>{});
    if (!sig.err()) send(std::move(sig));
  }

  // open/read, not std::ifstream: <fstream> pulls the iostream and locale machinery into every
  // program with a connection, 450 KB of a statically linked libstdc++ (docs/embedded.md).
  static std::string machine_id() {
    for (const char* f : {"/etc/machine-id", "/var/lib/dbus/machine-id"}) {
      const int fd = ::open(f, O_RDONLY | O_CLOEXEC);
      if (fd < 0) continue;
      char buf[33];
      const ssize_t n = ::read(fd, buf, sizeof(buf));
      ::close(fd);
      // 32 hex digits, then a newline or the end of the file.
      if (n == 32 || (n == 33 && buf[32] == '\n')) return std::string(buf, 32);
    }
    return {};
  }
};

class object_registry {
 public:
  object_registry() : shared_(std::make_shared<object_handle::shared>()) {}

  object_handle add(object_path_view path, object_builder builder, send_function send) {
    auto& obj = shared_->objects[std::string(path.str())];
    for (interface_def& i : builder.interfaces()) obj.push_back(std::move(i));
    shared_->send = std::move(send);
    return object_handle(shared_, std::string(path.str()));
  }

  bool has_object(std::string_view path) const { return shared_->objects.count(std::string(path)) > 0; }

  // Answers a method call (or replies with the standard error).
  void dispatch(const message_view& m, const send_function& send) { shared_->dispatch(m, send); }

 private:
  std::shared_ptr<object_handle::shared> shared_;
};

inline void object_handle::reset() {
  if (auto s = reg_.lock()) s->objects.erase(path_);
  reg_.reset();
}

template <class... Args>
error object_handle::emit(interface_name interface, member_name member, const Args&... args) {
  auto s = reg_.lock();
  if (!s || !s->send) return {errc::not_connected, error::no_offset, "object is not exported"};
  message m = message::signal(object_path_view::from_unchecked(path_), interface, member);
  if constexpr (sizeof...(Args) > 0) m.append(args...);
  if (m.err()) return m.err();
  s->send(std::move(m));
  return {};
}

inline error object_handle::properties_changed(interface_name interface,
                                               std::initializer_list<std::string_view> names) {
  auto s = reg_.lock();
  if (!s) return {errc::not_connected, error::no_offset, "object is not exported"};
  const interface_def* i = s->find_interface(path_, interface.str());
  if (!i) return {errc::invalid_argument, error::no_offset, "no such interface on this object"};
  std::vector<const property_def*> props;
  for (std::string_view n : names) {
    for (const property_def& p : i->properties) {
      if (p.name == n) props.push_back(&p);
    }
  }
  if (props.size() != names.size()) return {errc::invalid_argument, error::no_offset, "no such property"};
  s->announce(path_, *i, props);
  return {};
}

MCBUS_NAMESPACE_END
