// dbus-monitor's way of printing a message: one header line, then the arguments, one per line,
// indented by nesting.
#pragma once

#include <mcbus/wire/message.hpp>
#include <mcbus/wire/value.hpp>

#include <chrono>
#include <cinttypes>
#include <cstdio>
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
  auto or_null = [](std::string_view v, const char* none) { return v.empty() ? std::string(none) : std::string(v); };
  std::string out;
  switch (h.type) {
    case mcbus::message_type::method_call: out = "method call"; break;
    case mcbus::message_type::method_return: out = "method return"; break;
    case mcbus::message_type::error: out = "error"; break;
    case mcbus::message_type::signal: out = "signal"; break;
    default: out = "unknown type " + std::to_string(h.raw_type); break;
  }
  out += " time=" + std::string(time) + " sender=" + or_null(h.sender, "(null sender)") +
         " -> destination=" + or_null(h.destination, "(null destination)");
  if (h.type == mcbus::message_type::error) {
    out += " error_name=" + std::string(h.error_name) + " reply_serial=" + std::to_string(h.reply_serial);
  } else if (h.type == mcbus::message_type::method_return) {
    out += " serial=" + std::to_string(h.serial) + " reply_serial=" + std::to_string(h.reply_serial);
  } else {
    out += " serial=" + std::to_string(h.serial) + " path=" + std::string(h.path) +
           "; interface=" + or_null(h.interface, "(null interface)") + "; member=" + std::string(h.member);
  }
  return out;
}

inline void monitor_value(std::string& out, const mcbus::value& v, int depth, bool inline_first = false) {
  const std::string pad = inline_first ? "" : std::string(static_cast<std::size_t>(3 * (depth + 1)), ' ');
  const std::string close_pad(static_cast<std::size_t>(3 * (depth + 1)), ' ');
  char buf[64];
  switch (v.code()) {
    case 'y': out += pad + "byte " + std::to_string(v.bits() & 0xff) + "\n"; break;
    case 'b': out += pad + (v.as_bool() ? "boolean true\n" : "boolean false\n"); break;
    case 'n': out += pad + "int16 " + std::to_string(v.as_int()) + "\n"; break;
    case 'q': out += pad + "uint16 " + std::to_string(v.bits()) + "\n"; break;
    case 'i': out += pad + "int32 " + std::to_string(v.as_int()) + "\n"; break;
    case 'u': out += pad + "uint32 " + std::to_string(v.bits()) + "\n"; break;
    case 'x': out += pad + "int64 " + std::to_string(v.as_int()) + "\n"; break;
    case 't': out += pad + "uint64 " + std::to_string(v.bits()) + "\n"; break;
    case 'h': out += pad + "file descriptor " + std::to_string(v.bits()) + "\n"; break;
    case 'd':
      std::snprintf(buf, sizeof(buf), "%g", v.as_double());
      out += pad + "double " + buf + "\n";
      break;
    case 's': out += pad + "string \"" + v.str() + "\"\n"; break;
    case 'o': out += pad + "object path \"" + v.str() + "\"\n"; break;
    case 'g': out += pad + "signature \"" + v.str() + "\"\n"; break;
    case 'v':
      out += pad + "variant       ";
      monitor_value(out, v.items()[0], depth + 1, true);
      break;
    case 'a':
      if (v.type() == "ay") {
        out += pad + "array of bytes [\n";
        for (std::size_t i = 0; i < v.items().size(); i += 16) {
          out += close_pad + "   ";
          for (std::size_t k = i; k < v.items().size() && k < i + 16; ++k) {
            std::snprintf(buf, sizeof(buf), "%s%02x", k == i ? "" : " ",
                          static_cast<unsigned>(v.items()[k].bits() & 0xff));
            out += buf;
          }
          out += "\n";
        }
        out += close_pad + "]\n";
        break;
      }
      out += pad + "array [\n";
      for (const mcbus::value& e : v.items()) monitor_value(out, e, depth + 1);
      out += close_pad + "]\n";
      break;
    case '(':
      out += pad + "struct {\n";
      for (const mcbus::value& f : v.items()) monitor_value(out, f, depth + 1);
      out += close_pad + "}\n";
      break;
    case '{':
      out += pad + "dict entry(\n";
      for (const mcbus::value& f : v.items()) monitor_value(out, f, depth + 1);
      out += close_pad + ")\n";
      break;
    default: break;
  }
}

// The whole message in dbus-monitor's format, ending with a newline.
inline std::string monitor_format(const mcbus::message_view& m) {
  std::string out = monitor_header(m) + "\n";
  mcbus::reader r = m.body();
  for (const mcbus::value& v : mcbus::value::read_all(r, m.header().signature)) monitor_value(out, v, 0);
  return out;
}

}  // namespace mcbus_tools
