// dbus-monitor's way of printing a message (libdbus tools/dbus-print-message.c): one header line,
// then the arguments, one per line, indented by nesting. It is followed to the byte, quirks
// included, so that the output of mcbus-monitor and dbus-monitor can be compared.
#pragma once

#include <mcbus/wire/message.hpp>
#include <mcbus/wire/value.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <vector>

namespace mcbus_tools {

inline std::string monitor_header(const mcbus::message_view& m) {
  const mcbus::message_header& h = m.header();
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
  char time[48];
  std::snprintf(time, sizeof(time), "%lld.%06lld", static_cast<long long>(us / 1000000),
                static_cast<long long>(us % 1000000));
  // dbus-monitor hands absent fields to printf("%s"), which glibc prints as "(null)"; sender and
  // destination have their own words.
  auto or_null = [](std::string_view v, const char* none) { return v.empty() ? std::string(none) : std::string(v); };
  std::string out;
  switch (h.type) {
    case mcbus::message_type::method_call: out = "method call"; break;
    case mcbus::message_type::method_return: out = "method return"; break;
    case mcbus::message_type::error: out = "error"; break;
    case mcbus::message_type::signal: out = "signal"; break;
    default: out = "(unknown message type)"; break;
  }
  out += " time=" + std::string(time) + " sender=" + or_null(h.sender, "(null sender)") +
         " -> destination=" + or_null(h.destination, "(null destination)");
  switch (h.type) {
    case mcbus::message_type::method_call:
    case mcbus::message_type::signal:
      out += " serial=" + std::to_string(h.serial) + " path=" + or_null(h.path, "(null)") +
             "; interface=" + or_null(h.interface, "(null)") + "; member=" + or_null(h.member, "(null)");
      break;
    case mcbus::message_type::method_return:
      out += " serial=" + std::to_string(h.serial) + " reply_serial=" + std::to_string(h.reply_serial);
      break;
    case mcbus::message_type::error:
      out += " error_name=" + or_null(h.error_name, "(null)") + " reply_serial=" + std::to_string(h.reply_serial);
      break;
    default: break;
  }
  return out;
}

namespace detail {

inline void indent(std::string& out, int depth) { out.append(static_cast<std::size_t>(3 * depth), ' '); }

// An ay: as text when every byte is printable ASCII (the last may be a NUL), as hex otherwise,
// with as many bytes on a line as fit in 80 columns.
inline void monitor_bytes(std::string& out, const mcbus::value& v, int depth) {
  std::string bytes;
  for (const mcbus::value& b : v.items()) bytes += static_cast<char>(b.bits() & 0xff);
  bool text = true;
  for (std::size_t i = 0; i < bytes.size() && text; ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    text = (c >= 32 && c <= 126) || (i + 1 == bytes.size() && c == 0);
  }
  if (text && !bytes.empty() && bytes.back() == '\0') {
    out += "array of bytes \"" + bytes.substr(0, bytes.size() - 1) + "\" + \\0\n";
    return;
  }
  if (text) {
    out += "array of bytes \"" + bytes + "\"\n";
    return;
  }
  out += "array of bytes [\n";
  indent(out, depth + 1);
  std::size_t columns = static_cast<std::size_t>((80 - (depth + 1) * 3) / 3);
  if (columns < 8) columns = 8;
  char hex[4];
  for (std::size_t i = 0; i < bytes.size();) {
    std::snprintf(hex, sizeof(hex), "%02x", static_cast<unsigned char>(bytes[i]));
    out += hex;
    if (++i == bytes.size()) break;
    if (i % columns == 0) {
      out += '\n';
      indent(out, depth + 1);
    } else {
      out += ' ';
    }
  }
  out += '\n';
  indent(out, depth);
  out += "]\n";
}

// "name ADDRESS port N" for an IPv4 or IPv6 socket address; nothing if it cannot be shown.
inline void ip_line(std::string& out, const char* what, int family, const void* address, in_port_t port, int depth) {
  char ip[INET6_ADDRSTRLEN];
  if (!::inet_ntop(family, address, ip, sizeof(ip))) return;
  indent(out, depth + 1);
  out += what + std::string(ip) + " port " + std::to_string(ntohs(port)) + "\n";
}

// A unix fd: not its number (it differs in every process) but what it is, read with fstat() and,
// for a socket, getsockname()/getpeername(). `depth` is one deeper than the value's own, as in
// dbus-monitor, whose quirks (a missing newline for an fd of no known type, the local name printed
// again as the peer of an abstract socket) are kept.
inline void monitor_fd(std::string& out, int fd, int depth) {
  out += "file descriptor\n";
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0) return;
  indent(out, depth + 1);
  out += "inode: " + std::to_string(static_cast<int>(st.st_ino)) + "\n";
  indent(out, depth + 1);
  out += "type: ";
  if (S_ISREG(st.st_mode)) out += "file\n";
  if (S_ISDIR(st.st_mode)) out += "directory\n";
  if (S_ISCHR(st.st_mode)) out += "char\n";
  if (S_ISBLK(st.st_mode)) out += "block\n";
  if (S_ISFIFO(st.st_mode)) out += "fifo\n";
  if (S_ISLNK(st.st_mode)) out += "link\n";
  if (S_ISSOCK(st.st_mode)) out += "socket\n";

  union {
    sockaddr sa;
    sockaddr_storage storage;
    sockaddr_un un;
    sockaddr_in ipv4;
    sockaddr_in6 ipv6;
  } addr{}, peer{};
  socklen_t addrlen = sizeof(addr), peerlen = sizeof(peer);
  if (::getsockname(fd, &addr.sa, &addrlen) != 0) return;
  const bool has_peer = ::getpeername(fd, &peer.sa, &peerlen) == 0;
  indent(out, depth + 1);
  out += "address family: ";
  switch (addr.sa.sa_family) {
    case AF_UNIX:
      out += "unix\n";
      if (addr.un.sun_path[0] == '\0') {
        // printf("%.*s") with a negative precision (an unnamed socket) prints up to the NUL.
        const long len = static_cast<long>(addrlen) - static_cast<long>(sizeof(sa_family_t)) - 1;
        const char* name = &addr.un.sun_path[1];
        const std::string shown = len < 0 ? std::string(name, ::strnlen(name, sizeof(addr.un.sun_path) - 1))
                                          : std::string(name, static_cast<std::size_t>(len));
        indent(out, depth + 1);
        out += "name @" + shown + "\n";
        if (has_peer) {
          indent(out, depth + 1);
          out += "peer @" + shown + "\n";
        }
      } else {
        indent(out, depth + 1);
        out += "name " + std::string(addr.un.sun_path, ::strnlen(addr.un.sun_path, sizeof(addr.un.sun_path))) + "\n";
        if (has_peer) {
          indent(out, depth + 1);
          out += "peer " + std::string(peer.un.sun_path, ::strnlen(peer.un.sun_path, sizeof(peer.un.sun_path))) + "\n";
        }
      }
      break;
    case AF_INET:
      out += "inet\n";
      ip_line(out, "name ", AF_INET, &addr.ipv4.sin_addr, addr.ipv4.sin_port, depth);
      if (has_peer) ip_line(out, "peer ", AF_INET, &peer.ipv4.sin_addr, peer.ipv4.sin_port, depth);
      break;
    case AF_INET6:
      out += "inet6\n";
      ip_line(out, "name ", AF_INET6, &addr.ipv6.sin6_addr, addr.ipv6.sin6_port, depth);
      if (has_peer) ip_line(out, "peer ", AF_INET6, &peer.ipv6.sin6_addr, peer.ipv6.sin6_port, depth);
      break;
#ifdef AF_BLUETOOTH
    case AF_BLUETOOTH: out += "bluetooth\n"; break;
#endif
    default: out += "unknown (" + std::to_string(addr.sa.sa_family) + ")\n"; break;
  }
}

}  // namespace detail

// One value at dbus-monitor's `depth` (the message's arguments are at depth 1). `fds` are the
// message's fds, which an 'h' value indexes.
inline void monitor_value(std::string& out, const mcbus::value& v, int depth, std::span<const int> fds = {}) {
  detail::indent(out, depth);
  char buf[64];
  switch (v.code()) {
    case 'y': out += "byte " + std::to_string(v.bits() & 0xff) + "\n"; break;
    case 'b': out += v.as_bool() ? "boolean true\n" : "boolean false\n"; break;
    case 'n': out += "int16 " + std::to_string(v.as_int()) + "\n"; break;
    case 'q': out += "uint16 " + std::to_string(v.bits()) + "\n"; break;
    case 'i': out += "int32 " + std::to_string(v.as_int()) + "\n"; break;
    case 'u': out += "uint32 " + std::to_string(v.bits()) + "\n"; break;
    case 'x': out += "int64 " + std::to_string(v.as_int()) + "\n"; break;
    case 't': out += "uint64 " + std::to_string(v.bits()) + "\n"; break;
    case 'h': detail::monitor_fd(out, v.bits() < fds.size() ? fds[v.bits()] : -1, depth + 1); break;
    case 'd':
      std::snprintf(buf, sizeof(buf), "%g", v.as_double());
      out += "double " + std::string(buf) + "\n";
      break;
    // Strings are printed as they are, newlines and quotes included.
    case 's': out += "string \"" + v.str() + "\"\n"; break;
    case 'o': out += "object path \"" + v.str() + "\"\n"; break;
    case 'g': out += "signature \"" + v.str() + "\"\n"; break;
    case 'v':
      out += "variant ";
      monitor_value(out, v.items()[0], depth + 1, fds);
      break;
    case 'a':
      // dbus-monitor looks at the first element's type, so an empty ay is a plain empty array.
      if (v.type() == "ay" && !v.items().empty()) {
        detail::monitor_bytes(out, v, depth);
        break;
      }
      out += "array [\n";
      for (const mcbus::value& e : v.items()) monitor_value(out, e, depth + 1, fds);
      detail::indent(out, depth);
      out += "]\n";
      break;
    case '(':
      out += "struct {\n";
      for (const mcbus::value& f : v.items()) monitor_value(out, f, depth + 1, fds);
      detail::indent(out, depth);
      out += "}\n";
      break;
    case '{':
      out += "dict entry(\n";
      for (const mcbus::value& f : v.items()) monitor_value(out, f, depth + 1, fds);
      detail::indent(out, depth);
      out += ")\n";
      break;
    default: break;
  }
}

// The whole message in dbus-monitor's format, ending with a newline.
inline std::string monitor_format(const mcbus::message_view& m) {
  std::string out = monitor_header(m) + "\n";
  mcbus::reader r = m.body();
  for (const mcbus::value& v : mcbus::value::read_all(r, m.header().signature)) monitor_value(out, v, 1, m.fds());
  return out;
}

}  // namespace mcbus_tools
