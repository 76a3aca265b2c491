// The argument and output syntax of `busctl call`, for mcbus-call.
//
// Input: a signature, then one token per basic value; an array is its element count followed by
// the elements, a variant its signature followed by its value, a struct or dict entry its fields
// in order. Numbers, booleans and doubles are read as systemd's parse-util does for busctl (see
// integer() and boolean() below). Output: the signature, then the values the same way, strings
// quoted and C-escaped, booleans as true/false, doubles as %g, fds by their number in this
// process. Matching busctl byte for byte lets the two be compared (tests/integration does).
#pragma once

#include <mcbus/wire/limits.hpp>
#include <mcbus/wire/value.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mcbus_tools {

// ---- output ---------------------------------------------------------------------------------

inline void busctl_escape(std::string& out, std::string_view s) {
  for (unsigned char c : s) {
    switch (c) {
      case '\a': out += "\\a"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\v': out += "\\v"; break;
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\'': out += "\\'"; break;
      default:
        if (c < ' ' || c >= 127) {
          char buf[5];
          std::snprintf(buf, sizeof(buf), "\\%03o", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
}

// `fds` are the reply's fds: busctl prints a received fd by its number in its own process, not by
// its index in the message.
inline void busctl_format_value(std::string& out, const mcbus::value& v, std::span<const int> fds = {}) {
  char buf[64];
  auto sep = [&] {
    if (!out.empty()) out += ' ';
  };
  switch (v.code()) {
    case 'y':
      sep();
      out += std::to_string(v.bits() & 0xff);
      break;
    case 'b':
      sep();
      out += v.as_bool() ? "true" : "false";
      break;
    case 'n':
    case 'i':
    case 'x':
      sep();
      out += std::to_string(v.as_int());
      break;
    case 'q':
    case 'u':
    case 't':
      sep();
      out += std::to_string(v.bits());
      break;
    case 'h':
      sep();
      out += std::to_string(v.bits() < fds.size() ? fds[v.bits()] : -1);
      break;
    case 'd':
      sep();
      std::snprintf(buf, sizeof(buf), "%g", v.as_double());
      out += buf;
      break;
    case 's':
    case 'o':
    case 'g':
      sep();
      out += '"';
      busctl_escape(out, v.str());
      out += '"';
      break;
    case 'v':
      sep();
      out += v.items()[0].type();
      busctl_format_value(out, v.items()[0], fds);
      break;
    case 'a':
      sep();
      out += std::to_string(v.items().size());
      for (const mcbus::value& e : v.items()) busctl_format_value(out, e, fds);
      break;
    case '(':
    case '{':
      for (const mcbus::value& f : v.items()) busctl_format_value(out, f, fds);
      break;
    default: break;
  }
}

// "SIG V1 V2 ..." exactly as busctl call prints a reply body; empty for an empty body.
inline std::string busctl_format(std::string_view signature, const std::vector<mcbus::value>& values,
                                 std::span<const int> fds = {}) {
  if (signature.empty()) return {};
  std::string out(signature);
  for (const mcbus::value& v : values) busctl_format_value(out, v, fds);
  return out;
}

// ---- input ----------------------------------------------------------------------------------

class busctl_parser {
 public:
  explicit busctl_parser(std::vector<std::string> tokens) : tokens_(std::move(tokens)) {}

  // Parses values for every complete type of `sig`; on failure, `error()` says what went wrong.
  bool parse_all(std::string_view sig, std::vector<mcbus::value>& out) {
    for (std::size_t i = 0; i < sig.size();) {
      const std::size_t len = mcbus::complete_type_length(sig, i);
      mcbus::value v;
      if (!parse(sig.substr(i, len), v)) return false;
      out.push_back(std::move(v));
      i += len;
    }
    if (pos_ != tokens_.size()) return fail("too many arguments for the signature");
    return true;
  }

  const std::string& error() const noexcept { return error_; }

 private:
  bool next(std::string& tok, std::string_view type) {
    if (pos_ >= tokens_.size()) return fail("missing argument for type '" + std::string(type) + "'");
    tok = tokens_[pos_++];
    return true;
  }
  bool fail(std::string why) {
    error_ = std::move(why);
    return false;
  }

  // Integers as systemd's safe_atoi()/safe_atou() family reads them: leading white space is
  // skipped; 0x and 0 (strtol's base 0), 0b and 0o prefixes choose the base; the whole token must
  // be used; an unsigned type takes "-0" but no other negative number.
  template <class T>
  bool integer(std::string_view tok, T& out) {
    const std::string whole(tok);
    const char* s = whole.c_str() + std::strspn(whole.c_str(), " \t\n\r");
    int base = 0;
    if (s[0] == '0' && (s[1] == 'b' || s[1] == 'B')) {
      base = 2;
      s += 2;
    } else if (s[0] == '0' && (s[1] == 'o' || s[1] == 'O')) {
      base = 8;
      s += 2;
    }
    char* end = nullptr;
    errno = 0;
    bool ok;
    if constexpr (std::is_signed_v<T>) {
      const long long v = std::strtoll(s, &end, base);
      ok = !errno && end != s && *end == '\0' && v >= std::numeric_limits<T>::min() &&
           v <= std::numeric_limits<T>::max();
      out = static_cast<T>(v);
    } else {
      const unsigned long long v = std::strtoull(s, &end, base);
      ok = !errno && end != s && *end == '\0' && (v == 0 || s[0] != '-') && v <= std::numeric_limits<T>::max();
      out = static_cast<T>(v);
    }
    if (!ok) return fail("not a valid number for its type: " + whole);
    return true;
  }

  // parse_boolean() in systemd: these words in any case.
  static int boolean(std::string_view tok) {
    auto is = [&](std::initializer_list<std::string_view> words) {
      for (std::string_view w : words) {
        if (w.size() == tok.size() && std::equal(w.begin(), w.end(), tok.begin(), [](char a, char b) {
              return a == std::tolower(static_cast<unsigned char>(b));
            })) {
          return true;
        }
      }
      return false;
    };
    if (is({"1", "yes", "y", "true", "t", "on"})) return 1;
    if (is({"0", "no", "n", "false", "f", "off"})) return 0;
    return -1;
  }

  // depth counts the containers around this value, variants included: a command line of
  // "v v v …" must not recurse without bound, and the specification allows 64 levels.
  bool parse(std::string_view type, mcbus::value& out, unsigned depth = 0) {
    if (depth > mcbus::max_total_depth) return fail("values nested more than 64 deep");
    std::string tok;
    switch (type[0]) {
      case 'y': {
        std::uint8_t v;
        if (!next(tok, type) || !integer(tok, v)) return false;
        out = mcbus::value::byte(v);
        return true;
      }
      case 'n': {
        std::int16_t v;
        if (!next(tok, type) || !integer(tok, v)) return false;
        out = mcbus::value::int16(v);
        return true;
      }
      case 'q': {
        std::uint16_t v;
        if (!next(tok, type) || !integer(tok, v)) return false;
        out = mcbus::value::uint16(v);
        return true;
      }
      case 'i': {
        std::int32_t v;
        if (!next(tok, type) || !integer(tok, v)) return false;
        out = mcbus::value::int32(v);
        return true;
      }
      case 'u': {
        std::uint32_t v;
        if (!next(tok, type) || !integer(tok, v)) return false;
        out = mcbus::value::uint32(v);
        return true;
      }
      case 'x': {
        std::int64_t v;
        if (!next(tok, type) || !integer(tok, v)) return false;
        out = mcbus::value::int64(v);
        return true;
      }
      case 't': {
        std::uint64_t v;
        if (!next(tok, type) || !integer(tok, v)) return false;
        out = mcbus::value::uint64(v);
        return true;
      }
      case 'h': return fail("unix fds cannot be given on the command line");
      case 'b': {
        if (!next(tok, type)) return false;
        const int b = boolean(tok);
        if (b < 0) return fail("not a boolean: " + tok);
        out = mcbus::value::boolean(b == 1);
        return true;
      }
      case 'd': {
        // strtod in the C locale, and out of range (overflow, or a result too small to be
        // normal) is an error, as in systemd's safe_atod().
        if (!next(tok, type)) return false;
        char* end = nullptr;
        errno = 0;
        const double d = std::strtod(tok.c_str(), &end);
        if (errno || end == tok.c_str() || *end) return fail("not a valid double: " + tok);
        out = mcbus::value::double_(d);
        return true;
      }
      case 's':
        if (!next(tok, type)) return false;
        out = mcbus::value::string(tok);
        return true;
      case 'o':
      case 'g': {
        if (!next(tok, type)) return false;
        auto v = type[0] == 'o' ? mcbus::value::object_path(tok) : mcbus::value::signature(tok);
        if (!v) return fail((type[0] == 'o' ? "not an object path: " : "not a signature: ") + tok);
        out = std::move(*v);
        return true;
      }
      case 'v': {
        if (!next(tok, type)) return false;
        if (mcbus::validate_single_type(tok)) return fail("not a single complete type: " + tok);
        mcbus::value inner;
        if (!parse(tok, inner, depth + 1)) return false;
        out = mcbus::value::variant(std::move(inner));
        return true;
      }
      case 'a': {
        std::uint32_t n;
        if (!next(tok, type) || !integer(tok, n)) return false;
        const std::string_view elem = type.substr(1);
        std::vector<mcbus::value> items;
        for (std::uint32_t k = 0; k < n; ++k) {
          mcbus::value e;
          if (!parse(elem, e, depth + 1)) return false;
          items.push_back(std::move(e));
        }
        auto a = mcbus::value::array(elem, std::move(items));
        if (!a) return fail(a.error().message());
        out = std::move(*a);
        return true;
      }
      case '(':
      case '{': {
        std::vector<mcbus::value> fields;
        for (std::size_t i = 1; i + 1 < type.size();) {
          const std::size_t len = mcbus::complete_type_length(type, i);
          mcbus::value f;
          if (!parse(type.substr(i, len), f, depth + 1)) return false;
          fields.push_back(std::move(f));
          i += len;
        }
        if (type[0] == '{') {
          auto e = mcbus::value::dict_entry(std::move(fields[0]), std::move(fields[1]));
          if (!e) return fail(e.error().message());
          out = std::move(*e);
        } else {
          auto s = mcbus::value::structure(std::move(fields));
          if (!s) return fail(s.error().message());
          out = std::move(*s);
        }
        return true;
      }
      default: return fail("unknown type code in signature");
    }
  }

  std::vector<std::string> tokens_;
  std::size_t pos_ = 0;
  std::string error_;
};

}  // namespace mcbus_tools
