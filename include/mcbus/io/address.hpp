// mcbus/io: D-Bus server addresses (specification, "Server Addresses" and "Transports").
//
//   auto list = mcbus::parse_address_list("unix:path=/run/bus;tcp:host=127.0.0.1,port=4242");
//   for (const mcbus::address& a : *list) { auto sa = mcbus::to_socket_address(a); ... }
//
// A list is tried in order by the caller. Parsing checks the grammar of every entry, and for the
// transports mcbus can connect to (unix:, tcp:) also that the entry is a *client* address: keys that
// only a server can use (unix:dir=, tmpdir=, runtime=) and missing or malformed keys are errors.
// Entries of other transports (launchd:, systemd:, nonce-tcp:, unixexec:, autolaunch:) are kept, so
// that a list mixing them still parses, and fail later in to_socket_address() with not_supported.
//
// Every error is errc::bad_address with the byte offset in the parsed text and a note naming the
// bad part. Nothing here opens a socket; resolve() calls getaddrinfo() for tcp host names only.
#pragma once

#include <mcbus/config.hpp>
#include <mcbus/error.hpp>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

MCBUS_NAMESPACE_BEGIN

// The system bus when DBUS_SYSTEM_BUS_ADDRESS is unset (specification, "Well-known Message Bus
// Instances"). /var/run is a symlink to /run on current distributions; the spec names /var/run.
inline constexpr std::string_view default_system_bus_address = "unix:path=/var/run/dbus/system_bus_socket";

enum class address_kind : std::uint8_t { unix_path, unix_abstract, tcp, unsupported };
enum class address_family : std::uint8_t { any, ipv4, ipv6 };

struct address_param {
  std::string key;
  std::string value;       // unescaped: any bytes
  std::size_t offset = 0;  // of the key, in the text the address was parsed from
};

namespace detail {
// The bytes a value may carry unescaped. The specification lists [-0-9A-Za-z_/.\]; libdbus also
// lets '*' through (tcp:bind=*), and so do we, so that what libdbus writes we can read.
constexpr bool address_optionally_escaped(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
         c == '/' || c == '\\' || c == '.' || c == '*';
}
// Transport names and keys are never escaped; the specification does not define their alphabet,
// and every transport and key in use fits this one.
constexpr bool address_name_char(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}
constexpr int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
// sun_path holds 108 bytes on Linux: a path needs its NUL, an abstract name its leading NUL.
inline constexpr std::size_t sun_path_size = sizeof(sockaddr_un{}.sun_path);
}  // namespace detail

// %xx-escapes every byte outside the optionally-escaped set.
inline std::string escape_address_value(std::string_view raw) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(raw.size());
  for (char c : raw) {
    if (detail::address_optionally_escaped(c) && c != '*') {
      out += c;
    } else {
      const auto b = static_cast<unsigned char>(c);
      out += '%';
      out += digits[b >> 4];
      out += digits[b & 15];
    }
  }
  return out;
}

// Undoes the escaping of one value; `base` is the value's offset, for the error.
inline result<std::string> unescape_address_value(std::string_view escaped, std::size_t base = 0) {
  std::string out;
  out.reserve(escaped.size());
  for (std::size_t i = 0; i < escaped.size(); ++i) {
    const char c = escaped[i];
    if (detail::address_optionally_escaped(c)) {
      out += c;
    } else if (c == '%') {
      const int hi = i + 1 < escaped.size() ? detail::hex_value(escaped[i + 1]) : -1;
      const int lo = i + 2 < escaped.size() ? detail::hex_value(escaped[i + 2]) : -1;
      if (hi < 0 || lo < 0) return error(errc::bad_address, base + i, "'%' not followed by two hex digits");
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      return error(errc::bad_address, base + i, "byte in a value that must be %-escaped");
    }
  }
  return out;
}

// One entry of an address list.
class address {
 public:
  std::string_view transport() const noexcept { return transport_; }
  address_kind kind() const noexcept { return kind_; }
  const std::vector<address_param>& params() const noexcept { return params_; }
  // Where this entry starts in the text it was parsed from.
  std::size_t offset() const noexcept { return offset_; }

  // The unescaped value of `key`, if present.
  std::optional<std::string_view> get(std::string_view key) const noexcept {
    for (const auto& p : params_)
      if (p.key == key) return std::string_view(p.value);
    return std::nullopt;
  }
  // The server's GUID (32 hex digits) if the address names one, else empty. A connection compares
  // it with the GUID the server sends in the SASL OK line.
  std::string_view guid() const noexcept { return get("guid").value_or(std::string_view{}); }

  // unix_path: the file system path. unix_abstract: the name without its leading NUL.
  std::string_view path() const noexcept {
    return kind_ == address_kind::unix_path ? main_value() : std::string_view{};
  }
  std::string_view abstract_name() const noexcept {
    return kind_ == address_kind::unix_abstract ? main_value() : std::string_view{};
  }
  std::string_view host() const noexcept { return kind_ == address_kind::tcp ? main_value() : std::string_view{}; }
  std::uint16_t port() const noexcept { return port_; }
  address_family family() const noexcept { return family_; }
  // Unix fds can be passed only over AF_UNIX: the SASL client offers NEGOTIATE_UNIX_FD only then.
  bool can_pass_fds() const noexcept {
    return kind_ == address_kind::unix_path || kind_ == address_kind::unix_abstract;
  }

  // The address in canonical form (values escaped minimally); parses back to an equal address.
  std::string to_string() const {
    std::string out = transport_;
    out += ':';
    for (std::size_t i = 0; i < params_.size(); ++i) {
      if (i) out += ',';
      out += params_[i].key;
      out += '=';
      out += escape_address_value(params_[i].value);
    }
    return out;
  }

  friend bool operator==(const address& a, const address& b) noexcept {
    if (a.transport_ != b.transport_ || a.params_.size() != b.params_.size()) return false;
    for (std::size_t i = 0; i < a.params_.size(); ++i)
      if (a.params_[i].key != b.params_[i].key || a.params_[i].value != b.params_[i].value) return false;
    return true;
  }

 private:
  friend result<address> parse_address(std::string_view, std::size_t);

  std::string_view main_value() const noexcept {
    return main_ < params_.size() ? params_[main_].value : std::string_view{};
  }

  // Checks a unix: or tcp: entry as a client address and fills kind_, main_, port_, family_.
  error classify() {
    const auto find = [this](std::string_view key) -> const address_param* {
      for (const auto& p : params_)
        if (p.key == key) return &p;
      return nullptr;
    };
    const auto index = [this](const address_param* p) { return static_cast<std::size_t>(p - params_.data()); };
    if (const auto* g = find("guid")) {
      bool ok = g->value.size() == 32;
      for (char c : g->value) ok = ok && detail::hex_value(c) >= 0;
      if (!ok) return {errc::bad_address, g->offset, "guid is not 32 hex digits"};
    }
    if (transport_ == "unix") {
      for (const char* key : {"dir", "tmpdir", "runtime"})
        if (const auto* p = find(key))
          return {errc::bad_address, p->offset, "unix: dir=, tmpdir= and runtime= are for servers, not clients"};
      const auto* path = find("path");
      const auto* abstract = find("abstract");
      if (path && abstract) return {errc::bad_address, abstract->offset, "unix: both path= and abstract= given"};
      if (!path && !abstract) return {errc::bad_address, offset_, "unix: needs path= or abstract="};
      const auto* p = path ? path : abstract;
      if (p->value.find('\0') != std::string::npos)
        return {errc::bad_address, p->offset, "unix: socket name contains a NUL byte"};
      // A path needs room for its NUL; an abstract name starts with one.
      if (p->value.size() + 1 > detail::sun_path_size)
        return {errc::bad_address, p->offset, "unix: socket name longer than sun_path (107 bytes)"};
      kind_ = path ? address_kind::unix_path : address_kind::unix_abstract;
      main_ = index(p);
      return {};
    }
    if (transport_ == "tcp") {
      const auto* host = find("host");
      const auto* port = find("port");
      if (!host) return {errc::bad_address, offset_, "tcp: needs host= (to connect)"};
      if (!port) return {errc::bad_address, offset_, "tcp: needs port= (to connect)"};
      unsigned long n = 0;
      bool ok = !port->value.empty() && port->value.size() <= 5;
      for (char c : port->value) {
        ok = ok && c >= '0' && c <= '9';
        n = n * 10 + static_cast<unsigned long>(c - '0');
      }
      if (!ok || n == 0 || n > 65535)
        return {errc::bad_address, port->offset, "tcp: port is not a number from 1 to 65535"};
      if (host->value.find('\0') != std::string::npos)
        return {errc::bad_address, host->offset, "tcp: host contains a NUL byte"};
      if (const auto* family = find("family")) {
        if (family->value == "ipv4")
          family_ = address_family::ipv4;
        else if (family->value == "ipv6")
          family_ = address_family::ipv6;
        else
          return {errc::bad_address, family->offset, "tcp: family is neither ipv4 nor ipv6"};
      }
      kind_ = address_kind::tcp;
      main_ = index(host);
      port_ = static_cast<std::uint16_t>(n);
      return {};
    }
    kind_ = address_kind::unsupported;
    return {};
  }

  std::string transport_;
  std::vector<address_param> params_;
  std::size_t offset_ = 0;
  address_kind kind_ = address_kind::unsupported;
  std::size_t main_ = static_cast<std::size_t>(-1);
  std::uint16_t port_ = 0;
  address_family family_ = address_family::any;
};

// Parses one address (no ';'); `base` is its offset in the enclosing list, for errors.
inline result<address> parse_address(std::string_view text, std::size_t base = 0) {
  address a;
  a.offset_ = base;
  if (text.empty()) return error(errc::bad_address, base, "empty address");
  const std::size_t colon = text.find(':');
  if (colon == std::string_view::npos) return error(errc::bad_address, base, "no ':' after the transport name");
  if (colon == 0) return error(errc::bad_address, base, "empty transport name");
  for (std::size_t i = 0; i < colon; ++i)
    if (!detail::address_name_char(text[i]))
      return error(errc::bad_address, base + i, "transport name has a byte outside [A-Za-z0-9_-]");
  a.transport_ = std::string(text.substr(0, colon));
  std::size_t pos = colon + 1;
  while (pos < text.size()) {
    std::size_t end = text.find(',', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view pair = text.substr(pos, end - pos);
    const std::size_t eq = pair.find('=');
    if (pair.empty()) return error(errc::bad_address, base + pos, "empty key=value pair");
    if (eq == std::string_view::npos) return error(errc::bad_address, base + pos, "key without '=value'");
    if (eq == 0) return error(errc::bad_address, base + pos, "empty key");
    if (eq + 1 == pair.size()) return error(errc::bad_address, base + pos + eq, "empty value");
    for (std::size_t i = 0; i < eq; ++i)
      if (!detail::address_name_char(pair[i]))
        return error(errc::bad_address, base + pos + i, "key has a byte outside [A-Za-z0-9_-]");
    const std::string_view key = pair.substr(0, eq);
    for (const auto& p : a.params_)
      if (p.key == key) return error(errc::bad_address, base + pos, "key appears twice");
    MCBUS_TRY(value, unescape_address_value(pair.substr(eq + 1), base + pos + eq + 1));
    a.params_.push_back(address_param{std::string(key), std::move(value), base + pos});
    if (end == text.size()) break;
    pos = end + 1;
    if (pos == text.size()) return error(errc::bad_address, base + pos, "empty key=value pair after ','");
  }
  if (error e = a.classify()) return e;
  return a;
}

// Parses a ';'-separated list. One trailing ';' is allowed, as libdbus allows it; empty entries
// elsewhere are errors.
inline result<std::vector<address>> parse_address_list(std::string_view text) {
  std::vector<address> out;
  if (text.empty()) return error(errc::bad_address, 0, "empty address");
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find(';', pos);
    if (end == std::string_view::npos) end = text.size();
    MCBUS_TRY(a, parse_address(text.substr(pos, end - pos), pos));
    out.push_back(std::move(a));
    pos = end + 1;
  }
  return out;
}

// ---- from an address to a sockaddr ------------------------------------------------------------

struct socket_address {
  sockaddr_storage storage{};
  socklen_t length = 0;
  int domain = AF_UNSPEC;  // AF_UNIX, AF_INET or AF_INET6; the type is always SOCK_STREAM
  const sockaddr* get() const noexcept { return reinterpret_cast<const sockaddr*>(&storage); }
};

namespace detail {
inline socket_address unix_sockaddr(std::string_view name, bool abstract) noexcept {
  socket_address out;
  auto* sun = reinterpret_cast<sockaddr_un*>(&out.storage);
  sun->sun_family = AF_UNIX;
  const std::size_t at = abstract ? 1 : 0;  // abstract names start with a NUL byte, not counted in the name
  std::memcpy(sun->sun_path + at, name.data(), name.size());
  // Paths include their NUL; abstract names are exactly as long as they are, as libdbus and sd-bus
  // bind them (the kernel compares the length too).
  out.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + at + name.size() + (abstract ? 0 : 1));
  out.domain = AF_UNIX;
  return out;
}

inline bool ip_literal(std::string_view host, std::uint16_t port, address_family family, socket_address& out) noexcept {
  char buf[INET6_ADDRSTRLEN + 1];
  if (host.size() >= sizeof(buf)) return false;
  std::memcpy(buf, host.data(), host.size());
  buf[host.size()] = '\0';
  if (family != address_family::ipv6) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&out.storage);
    if (inet_pton(AF_INET, buf, &sin->sin_addr) == 1) {
      sin->sin_family = AF_INET;
      sin->sin_port = htons(port);
      out.length = sizeof(sockaddr_in);
      out.domain = AF_INET;
      return true;
    }
  }
  if (family != address_family::ipv4) {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
    if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) == 1) {
      sin6->sin6_family = AF_INET6;
      sin6->sin6_port = htons(port);
      out.length = sizeof(sockaddr_in6);
      out.domain = AF_INET6;
      return true;
    }
  }
  out = socket_address{};
  return false;
}

inline const address_param* param_named(const address& a, std::string_view key) noexcept {
  for (const auto& p : a.params())
    if (p.key == key) return &p;
  return nullptr;
}
}  // namespace detail

// The sockaddr for a unix: address, or for a tcp: address whose host is an IP literal. No system
// calls. A tcp host name needs a DNS lookup: that is resolve()'s job, and here it is not_supported.
inline result<socket_address> to_socket_address(const address& a) noexcept {
  switch (a.kind()) {
    case address_kind::unix_path: return detail::unix_sockaddr(a.path(), false);
    case address_kind::unix_abstract: return detail::unix_sockaddr(a.abstract_name(), true);
    case address_kind::tcp: {
      socket_address out;
      if (detail::ip_literal(a.host(), a.port(), a.family(), out)) return out;
      const auto* host = detail::param_named(a, "host");
      return error(errc::not_supported, host ? host->offset : a.offset(),
                   "tcp: host is not an IP literal of the family; resolve() looks names up");
    }
    case address_kind::unsupported: break;
  }
  return error(errc::not_supported, a.offset(), "transport not supported (mcbus connects to unix: and tcp:)");
}

// Every sockaddr to try for an address, in order: one for unix: and IP literals, getaddrinfo()'s
// answers for a tcp host name. Blocks in getaddrinfo() for names; call it off the event loop.
inline result<std::vector<socket_address>> resolve(const address& a) {
  auto direct = to_socket_address(a);
  if (direct) return std::vector<socket_address>{*direct};
  if (a.kind() != address_kind::tcp) return direct.error();
  addrinfo hints{};
  hints.ai_family = a.family() == address_family::ipv4   ? AF_INET
                    : a.family() == address_family::ipv6 ? AF_INET6
                                                         : AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG;
  const std::string host(a.host());
  const std::string port = std::to_string(a.port());
  addrinfo* list = nullptr;
  const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &list);
  if (rc != 0) {
    const int err = rc == EAI_SYSTEM ? errno : rc == EAI_MEMORY ? ENOMEM : rc == EAI_AGAIN ? EAGAIN : EHOSTUNREACH;
    return error::from_errno(err, "getaddrinfo() found no address for the tcp host");
  }
  std::vector<socket_address> out;
  for (const addrinfo* ai = list; ai; ai = ai->ai_next) {
    if (ai->ai_addrlen > sizeof(sockaddr_storage)) continue;
    socket_address sa;
    std::memcpy(&sa.storage, ai->ai_addr, ai->ai_addrlen);
    sa.length = ai->ai_addrlen;
    sa.domain = ai->ai_family;
    out.push_back(sa);
  }
  freeaddrinfo(list);
  if (out.empty()) return error::from_errno(EHOSTUNREACH, "getaddrinfo() found no address for the tcp host");
  return out;
}

// ---- well-known buses -------------------------------------------------------------------------

// The session bus from the values of DBUS_SESSION_BUS_ADDRESS and XDG_RUNTIME_DIR (null = unset).
// Without the first, $XDG_RUNTIME_DIR/bus is used, as sd-bus does: that is where systemd's user
// bus and dbus-broker listen.
inline result<std::vector<address>> session_bus_address_from(const char* session_env, const char* runtime_dir) {
  if (session_env && *session_env) return parse_address_list(session_env);
  if (runtime_dir && *runtime_dir) {
    if (*runtime_dir != '/')
      return error(errc::bad_address, 0, "XDG_RUNTIME_DIR is not an absolute path (session bus fallback)");
    std::string text = "unix:path=";
    text += escape_address_value(std::string(runtime_dir) + "/bus");
    return parse_address_list(text);
  }
  return error(errc::bad_address, error::no_offset,
               "no session bus: DBUS_SESSION_BUS_ADDRESS and XDG_RUNTIME_DIR are both unset");
}

inline result<std::vector<address>> system_bus_address_from(const char* system_env) {
  if (system_env && *system_env) return parse_address_list(system_env);
  return parse_address_list(default_system_bus_address);
}

namespace detail {
// setuid programs must not take a bus address from their caller's environment.
inline const char* bus_getenv(const char* name) noexcept {
#if defined(__GLIBC__)
  return ::secure_getenv(name);
#else
  return std::getenv(name);
#endif
}
}  // namespace detail

inline result<std::vector<address>> session_bus_address() {
  return session_bus_address_from(detail::bus_getenv("DBUS_SESSION_BUS_ADDRESS"),
                                  detail::bus_getenv("XDG_RUNTIME_DIR"));
}

inline result<std::vector<address>> system_bus_address() {
  return system_bus_address_from(detail::bus_getenv("DBUS_SYSTEM_BUS_ADDRESS"));
}

MCBUS_NAMESPACE_END
