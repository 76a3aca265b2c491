// mcbus/fmt: fmt formatters for the codec's types. Optional: nothing else in mcbus includes fmt.
//
//   fmt::print("{}\n", view);   // header line, then one line per body argument
//
// Values print in GVariant's text notation, which gdbus users already read: strings in double
// quotes with C escapes, [arrays], {"dict": <variant>}, (structs), objectpath "/p", signature "s",
// handle 3 (an fd index) and bytes as 0x2a. Match rules and BPF programs have their own
// to_string() in mcbus/match/.
#pragma once

#include <mcbus/error.hpp>
#include <mcbus/wire/detail/endian.hpp>
#include <mcbus/wire/message.hpp>
#include <mcbus/wire/message_tree.hpp>
#include <mcbus/wire/value.hpp>

#include <fmt/format.h>

#include <cstdint>
#include <iterator>
#include <string_view>

MCBUS_NAMESPACE_BEGIN
namespace detail::fmt_impl {

template <class Out>
Out quoted(Out out, std::string_view s) {
  *out++ = '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out = fmt::format_to(out, "\\\""); break;
      case '\\': out = fmt::format_to(out, "\\\\"); break;
      case '\n': out = fmt::format_to(out, "\\n"); break;
      case '\t': out = fmt::format_to(out, "\\t"); break;
      case '\r': out = fmt::format_to(out, "\\r"); break;
      default:
        // Control characters would garble a terminal; everything else is valid UTF-8 already.
        if (c < 0x20 || c == 0x7f) {
          out = fmt::format_to(out, "\\x{:02x}", c);
        } else {
          *out++ = ch;
        }
    }
  }
  *out++ = '"';
  return out;
}

template <class Out>
Out format_value(Out out, const value& v) {
  switch (v.code()) {
    case 'y': return fmt::format_to(out, "0x{:02x}", v.bits());
    case 'b': return fmt::format_to(out, "{}", v.as_bool());
    case 'n':
    case 'i':
    case 'x': return fmt::format_to(out, "{}", v.as_int());
    case 'q':
    case 'u':
    case 't': return fmt::format_to(out, "{}", v.bits());
    case 'd': return fmt::format_to(out, "{}", v.as_double());
    case 'h': return fmt::format_to(out, "handle {}", v.bits());
    case 's': return quoted(out, v.str());
    case 'o': return quoted(fmt::format_to(out, "objectpath "), v.str());
    case 'g': return quoted(fmt::format_to(out, "signature "), v.str());
    case 'v':
      *out++ = '<';
      if (!v.items().empty()) out = format_value(out, v.items()[0]);
      *out++ = '>';
      return out;
    case 'a': {
      const bool dict = v.type().size() > 1 && v.type()[1] == '{';
      *out++ = dict ? '{' : '[';
      bool first = true;
      for (const value& e : v.items()) {
        if (!first) out = fmt::format_to(out, ", ");
        first = false;
        if (dict && e.items().size() == 2) {
          out = format_value(out, e.items()[0]);
          out = fmt::format_to(out, ": ");
          out = format_value(out, e.items()[1]);
        } else {
          out = format_value(out, e);
        }
      }
      *out++ = dict ? '}' : ']';
      return out;
    }
    case '(':
    case '{': {  // a lone dict entry prints as the pair it is
      *out++ = '(';
      bool first = true;
      for (const value& f : v.items()) {
        if (!first) out = fmt::format_to(out, ", ");
        first = false;
        out = format_value(out, f);
      }
      if (v.items().size() == 1) *out++ = ',';
      *out++ = ')';
      return out;
    }
    default: return fmt::format_to(out, "<empty>");
  }
}

template <class Out>
Out format_flags(Out out, std::uint8_t flags) {
  if (flags == 0) return fmt::format_to(out, "0");
  static constexpr struct {
    std::uint8_t bit;
    const char* name;
  } known[] = {{message_flags::no_reply_expected, "no_reply_expected"},
               {message_flags::no_auto_start, "no_auto_start"},
               {message_flags::allow_interactive_authorization, "allow_interactive_authorization"}};
  bool first = true;
  for (const auto& k : known) {
    if (!(flags & k.bit)) continue;
    out = fmt::format_to(out, "{}{}", first ? "" : "|", k.name);
    first = false;
    flags = static_cast<std::uint8_t>(flags & ~k.bit);
  }
  if (flags) out = fmt::format_to(out, "{}0x{:02x}", first ? "" : "|", flags);
  return out;
}

template <class Out>
Out format_type(Out out, std::uint8_t raw_type) {
  if (raw_type >= 1 && raw_type <= 4) return fmt::format_to(out, "{}", to_string(static_cast<message_type>(raw_type)));
  return fmt::format_to(out, "type_{}", raw_type);
}

// One line: the type, then each field that is present, then the flags and the byte order.
template <class Out>
Out format_header(Out out, const message_header& h) {
  out = format_type(out, h.raw_type);
  out = fmt::format_to(out, " serial={}", h.serial);
  if (h.has(header_field::reply_serial)) out = fmt::format_to(out, " reply_serial={}", h.reply_serial);
  const struct {
    header_field f;
    const char* key;
    std::string_view text;
  } strings[] = {{header_field::path, "path", h.path},
                 {header_field::interface, "interface", h.interface},
                 {header_field::member, "member", h.member},
                 {header_field::error_name, "error_name", h.error_name},
                 {header_field::destination, "destination", h.destination},
                 {header_field::sender, "sender", h.sender}};
  for (const auto& s : strings) {
    if (h.has(s.f)) out = fmt::format_to(out, " {}={}", s.key, s.text);
  }
  if (h.has(header_field::signature)) out = quoted(fmt::format_to(out, " signature="), h.signature);
  if (h.has(header_field::unix_fds)) out = fmt::format_to(out, " unix_fds={}", h.unix_fds);
  out = format_flags(fmt::format_to(out, " flags="), h.flags);
  return fmt::format_to(out, " order={}", h.order == byte_order::big ? "big" : "little");
}

template <class Out>
Out format_body(Out out, const std::vector<value>& body) {
  for (std::size_t i = 0; i < body.size(); ++i) {
    out = fmt::format_to(out, "\n  [{}] {}: ", i, body[i].type());
    out = format_value(out, body[i]);
  }
  return out;
}

// A formatter that takes no format spec: anything between ':' and '}' is an error.
struct no_spec {
  constexpr auto parse(fmt::format_parse_context& ctx) {
    auto it = ctx.begin();
    if (it != ctx.end() && *it != '}') throw fmt::format_error("mcbus formatters take no format spec");
    return it;
  }
};

}  // namespace detail::fmt_impl
MCBUS_NAMESPACE_END

template <>
struct fmt::formatter<mcbus::byte_order> : fmt::formatter<std::string_view> {
  template <class Ctx>
  auto format(mcbus::byte_order o, Ctx& ctx) const {
    return fmt::formatter<std::string_view>::format(o == mcbus::byte_order::big ? "big" : "little", ctx);
  }
};

template <>
struct fmt::formatter<mcbus::message_type> : fmt::formatter<std::string_view> {
  template <class Ctx>
  auto format(mcbus::message_type t, Ctx& ctx) const {
    return fmt::formatter<std::string_view>::format(mcbus::to_string(t), ctx);
  }
};

template <>
struct fmt::formatter<mcbus::header_field> : fmt::formatter<std::string_view> {
  template <class Ctx>
  auto format(mcbus::header_field f, Ctx& ctx) const {
    return fmt::formatter<std::string_view>::format(mcbus::to_string(f), ctx);
  }
};

// "string is not valid UTF-8 at byte 42 (body)"
template <>
struct fmt::formatter<mcbus::error> : fmt::formatter<std::string_view> {
  template <class Ctx>
  auto format(const mcbus::error& e, Ctx& ctx) const {
    return fmt::formatter<std::string_view>::format(e.message(), ctx);
  }
};

template <>
struct fmt::formatter<mcbus::value> : mcbus::detail::fmt_impl::no_spec {
  template <class Ctx>
  auto format(const mcbus::value& v, Ctx& ctx) const {
    return mcbus::detail::fmt_impl::format_value(ctx.out(), v);
  }
};

template <>
struct fmt::formatter<mcbus::message_header> : mcbus::detail::fmt_impl::no_spec {
  template <class Ctx>
  auto format(const mcbus::message_header& h, Ctx& ctx) const {
    return mcbus::detail::fmt_impl::format_header(ctx.out(), h);
  }
};

// The header line, then one line per body argument: "  [0] s: "hello"".
template <>
struct fmt::formatter<mcbus::message_view> : mcbus::detail::fmt_impl::no_spec {
  template <class Ctx>
  auto format(const mcbus::message_view& m, Ctx& ctx) const {
    auto out = mcbus::detail::fmt_impl::format_header(ctx.out(), m.header());
    mcbus::reader r = m.body();
    const std::vector<mcbus::value> body = mcbus::value::read_all(r, m.header().signature);
    out = mcbus::detail::fmt_impl::format_body(out, body);
    if (r.err()) out = fmt::format_to(out, "\n  <{}>", r.err().message());
    return out;
  }
};

// Everything, one item a line: the fixed header, each header field in wire order (unknown ones by
// their code), and the body. A tree has no byte order (encode() chooses one); print the
// message_header for that.
template <>
struct fmt::formatter<mcbus::message_tree> : mcbus::detail::fmt_impl::no_spec {
  template <class Ctx>
  auto format(const mcbus::message_tree& t, Ctx& ctx) const {
    namespace impl = mcbus::detail::fmt_impl;
    auto out = impl::format_type(ctx.out(), t.type);
    out = fmt::format_to(out, " serial={} flags=", t.serial);
    out = impl::format_flags(out, t.flags);
    for (const mcbus::value& f : t.fields) {
      if (f.items().size() != 2 || f.items()[1].items().empty()) continue;
      const auto code = static_cast<unsigned>(f.items()[0].bits());
      const mcbus::value& v = f.items()[1].items()[0];
      if (code >= 1 && code <= 9) {
        out = fmt::format_to(out, "\n  {}: ", mcbus::to_string(static_cast<mcbus::header_field>(code)));
      } else {
        out = fmt::format_to(out, "\n  field {} (unknown) {}: ", code, v.type());
      }
      out = impl::format_value(out, v);
    }
    return impl::format_body(out, t.body);
  }
};
