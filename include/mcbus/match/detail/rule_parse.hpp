// mcbus/match: match_rule::parse, following bus/signals.c of dbus-daemon 1.14 step by step
// (find_key, find_value, tokenize_rule, bus_match_rule_parse, bus_match_rule_parse_arg_match).
// Included by rule.hpp; not meant to be included on its own.
#pragma once

#include <mcbus/match/rule.hpp>

MCBUS_NAMESPACE_BEGIN

struct match_rule_parser {
  static constexpr error fail(std::size_t at, const char* why) noexcept { return {errc::bad_match_rule, at, why}; }

  static constexpr bool starts_with(std::string_view s, std::string_view p) noexcept {
    return s.substr(0, p.size()) == p;
  }

  // bus_match_rule_parse_arg_match: the key starts with "arg".
  static constexpr error arg_key(match_rule& r, std::string_view key, std::string_view value, std::size_t at) noexcept {
    if (key.size() < 4) return fail(at, "argN: no argument number");
    std::uint64_t n = 0;
    const std::size_t used = detail::match::parse_strtoul(key.substr(3), n);
    if (used == 0) return fail(at, "argN: no argument number");
    const std::size_t end = 3 + used;
    match_arg_kind kind = match_arg_kind::string;
    if (end != key.size()) {
      if (end + 4 == key.size() && key.substr(end) == "path") {
        kind = match_arg_kind::path;
      } else if (key == "arg0namespace") {
        kind = match_arg_kind::arg0namespace;
        if (!detail::match::valid_bus_name(value, true))
          return fail(at, "arg0namespace: not a valid bus name namespace");
      } else {
        return fail(at, "argN: junk after the argument number (only argNpath and arg0namespace exist)");
      }
    }
    if (n > match_rule::max_arg) return fail(at, "argN: argument number above 63");
    for (std::size_t i = 0; i < r.nargs_; ++i) {
      if (r.args_[i].index == n) return fail(at, "argN: argument specified twice");
    }
    if (error e = r.add_arg(static_cast<unsigned>(n), kind, value)) return fail(at, e.where());
    return {};
  }

  static constexpr error key_value(match_rule& r, std::string_view key, std::string_view value,
                                   std::size_t at) noexcept {
    using detail::match::valid_bus_name;
    if (key == "type") {
      if (r.keys_ & match_rule::k_type) return fail(at, "type: specified twice");
      message_type t = message_type::invalid;
      if (value == "method_call") t = message_type::method_call;
      if (value == "method_return") t = message_type::method_return;
      if (value == "signal") t = message_type::signal;
      if (value == "error") t = message_type::error;
      if (t == message_type::invalid) return fail(at, "type: not signal, method_call, method_return or error");
      return r.set_type(t);
    }
    if (key == "sender") {
      if (r.keys_ & match_rule::k_sender) return fail(at, "sender: specified twice");
      if (!valid_bus_name(value)) return fail(at, "sender: not a valid bus name");
      return r.set_sender(value);
    }
    if (key == "interface") {
      if (r.keys_ & match_rule::k_interface) return fail(at, "interface: specified twice");
      if (!is_valid_interface_name(value)) return fail(at, "interface: not a valid interface name");
      return r.set_interface(value);
    }
    if (key == "member") {
      if (r.keys_ & match_rule::k_member) return fail(at, "member: specified twice");
      if (!is_valid_member_name(value)) return fail(at, "member: not a valid member name");
      return r.set_member(value);
    }
    if (key == "path" || key == "path_namespace") {
      if (r.keys_ & (match_rule::k_path | match_rule::k_path_namespace)) {
        return fail(at, "path: path or path_namespace specified twice");
      }
      if (!is_valid_object_path(value)) {
        return fail(at, key == "path" ? "path: not a valid object path" : "path_namespace: not a valid object path");
      }
      return key == "path" ? r.set_path(value) : r.set_path_namespace(value);
    }
    if (key == "destination") {
      if (r.keys_ & match_rule::k_destination) return fail(at, "destination: specified twice");
      if (!valid_bus_name(value)) return fail(at, "destination: not a valid bus name");
      return r.set_destination(value);
    }
    if (key == "eavesdrop") {
      // dbus-daemon lets eavesdrop appear more than once: the last one wins.
      if (value == "true") return r.set_eavesdrop(true);
      if (value == "false") return r.set_eavesdrop(false);
      return fail(at, "eavesdrop: neither 'true' nor 'false'");
    }
    if (starts_with(key, "arg")) return arg_key(r, key, value, at);
    return fail(at, "unknown key");
  }

  static constexpr result<match_rule> parse(std::string_view text, match_parse_options opts) noexcept {
    using detail::match::is_white;
    if (opts.limit_length && text.size() > match_rule::max_length) {
      return fail(match_rule::max_length, "match rule longer than 1024 bytes");
    }
    if (const std::size_t bad = detail::match::find_bad_utf8(text); bad != static_cast<std::size_t>(-1)) {
      return fail(bad, text[bad] == 0 ? "match rule contains a NUL byte" : "match rule is not valid UTF-8");
    }
    match_rule r;
    char scratch[match_rule::capacity]{};
    std::size_t pos = 0;
    for (std::size_t token = 0; token < match_rule::max_keys && pos < text.size(); ++token) {
      // find_key
      std::size_t p = pos;
      while (p < text.size() && is_white(text[p])) ++p;
      const std::size_t key_start = p;
      while (p < text.size() && text[p] != '=' && !is_white(text[p])) ++p;
      const std::size_t key_end = p;
      while (p < text.size() && is_white(text[p])) ++p;
      if (key_start == key_end) {
        // Trailing whitespace ends the rule. An '=' here makes dbus-daemon spin on the same spot
        // until its 16 tokens are used up, so the rest of the text is ignored.
        break;
      }
      if (p == text.size() || text[p] != '=') return fail(key_start, "key without '='");
      ++p;
      std::size_t len = 0;
      const std::size_t next = detail::match::decode_value(text, p, opts.syntax, scratch, sizeof scratch, len);
      if (next == detail::match::unbalanced) return fail(p, "unbalanced quotes in value");
      if (next == detail::match::overflow) return fail(p, "values longer than 1024 bytes in all");
      const std::string_view key = text.substr(key_start, key_end - key_start);
      if (error e = key_value(r, key, std::string_view(scratch, len), key_start)) return fail(key_start, e.where());
      pos = next;
    }
    return r;
  }
};

constexpr result<match_rule> match_rule::parse(std::string_view text, match_parse_options opts) noexcept {
  return match_rule_parser::parse(text, opts);
}

namespace detail {
// Not constexpr on purpose: reaching it while evaluating a literal makes the compiler reject it,
// and its name is what the diagnostic shows.
inline void invalid_match_rule_in_string_literal() {}
}  // namespace detail

inline namespace literals {
// "type='signal',member='Changed'"_match: a rule checked by the compiler.
consteval match_rule operator""_match(const char* s, std::size_t n) {
  auto r = match_rule::parse(std::string_view(s, n));
  if (!r) detail::invalid_match_rule_in_string_literal();
  return *r;
}
}  // namespace literals

MCBUS_NAMESPACE_END
