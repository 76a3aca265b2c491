// mcbus/wire: D-Bus names and object paths, validated exactly as the specification states.
//
// The validators are constexpr, and the name types check string literals at compile time:
//   mcbus::interface_name i = "org.example.Foo";      // checked by the compiler
//   auto j = mcbus::interface_name::from(runtime_sv); // result<interface_name>, checked at run time
// A name type is a view, like std::string_view: it does not own its characters.
//
// Where libdbus is looser than the specification (it accepts ":" and ":0" as unique names), mcbus
// follows the specification: every bus name has at least two elements.
#pragma once

#include <mcbus/error.hpp>
#include <mcbus/wire/limits.hpp>

#include <compare>
#include <cstddef>
#include <string>
#include <string_view>

MCBUS_NAMESPACE_BEGIN

namespace detail {
constexpr bool is_alpha_(char c) noexcept { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// Dotted names: interface, error and bus names. Elements are separated by single dots, at least two
// of them. `allow_dash` permits '-' (bus names); `allow_leading_digit` permits elements that start
// with a digit (unique bus names).
constexpr error validate_dotted(std::string_view s, errc code, bool allow_dash, bool allow_leading_digit,
                                std::size_t start = 0) noexcept {
  if (s.size() > max_name_length) return {code, max_name_length, "longer than 255 bytes"};
  if (s.size() <= start) return {code, s.size(), "empty"};
  std::size_t elements = 0;
  bool element_start = true;
  for (std::size_t i = start; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '.') {
      if (element_start) return {code, i, "empty element"};
      element_start = true;
      continue;
    }
    const bool ok_first = is_alpha_(c) || (allow_dash && c == '-') || (allow_leading_digit && is_digit(c));
    const bool ok_rest = is_alpha_(c) || is_digit(c) || (allow_dash && c == '-');
    if (element_start) {
      if (!ok_first) return {code, i, is_digit(c) ? "element starts with a digit" : "character not allowed"};
      ++elements;
      element_start = false;
    } else if (!ok_rest) {
      return {code, i, "character not allowed"};
    }
  }
  if (element_start) return {code, s.size(), "ends with '.'"};
  if (elements < 2) return {code, s.size(), "needs at least two elements"};
  return {};
}
}  // namespace detail

constexpr error validate_object_path(std::string_view s) noexcept {
  constexpr errc code = errc::bad_object_path;
  if (s.empty()) return {code, 0, "empty"};
  if (s[0] != '/') return {code, 0, "does not start with '/'"};
  if (s.size() == 1) return {};
  bool element_start = true;
  for (std::size_t i = 1; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '/') {
      if (element_start) return {code, i, "empty element"};
      element_start = true;
    } else if (detail::is_alpha_(c) || detail::is_digit(c)) {
      element_start = false;
    } else {
      return {code, i, "character not allowed"};
    }
  }
  if (element_start) return {code, s.size() - 1, "ends with '/'"};
  return {};
}

constexpr error validate_interface_name(std::string_view s) noexcept {
  return detail::validate_dotted(s, errc::bad_interface_name, false, false);
}

constexpr error validate_error_name(std::string_view s) noexcept {
  return detail::validate_dotted(s, errc::bad_error_name, false, false);
}

constexpr error validate_member_name(std::string_view s) noexcept {
  constexpr errc code = errc::bad_member_name;
  if (s.empty()) return {code, 0, "empty"};
  if (s.size() > max_name_length) return {code, max_name_length, "longer than 255 bytes"};
  if (detail::is_digit(s[0])) return {code, 0, "starts with a digit"};
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (!detail::is_alpha_(s[i]) && !detail::is_digit(s[i])) return {code, i, "character not allowed"};
  }
  return {};
}

constexpr error validate_unique_name(std::string_view s) noexcept {
  if (s.empty() || s[0] != ':') return {errc::bad_bus_name, 0, "unique name does not start with ':'"};
  return detail::validate_dotted(s, errc::bad_bus_name, true, true, 1);
}

constexpr error validate_well_known_name(std::string_view s) noexcept {
  if (!s.empty() && s[0] == ':') return {errc::bad_bus_name, 0, "well-known name starts with ':'"};
  return detail::validate_dotted(s, errc::bad_bus_name, true, false);
}

constexpr error validate_bus_name(std::string_view s) noexcept {
  return !s.empty() && s[0] == ':' ? validate_unique_name(s) : validate_well_known_name(s);
}

constexpr bool is_valid_object_path(std::string_view s) noexcept { return !validate_object_path(s); }
constexpr bool is_valid_interface_name(std::string_view s) noexcept { return !validate_interface_name(s); }
constexpr bool is_valid_error_name(std::string_view s) noexcept { return !validate_error_name(s); }
constexpr bool is_valid_member_name(std::string_view s) noexcept { return !validate_member_name(s); }
constexpr bool is_valid_bus_name(std::string_view s) noexcept { return !validate_bus_name(s); }
constexpr bool is_valid_unique_name(std::string_view s) noexcept { return !validate_unique_name(s); }
constexpr bool is_valid_well_known_name(std::string_view s) noexcept { return !validate_well_known_name(s); }

namespace detail {
// Not constexpr on purpose: reaching it during constant evaluation makes the compiler reject the
// literal, and the function's name is what the diagnostic shows.
inline void invalid_dbus_name_in_string_literal() {}

struct object_path_rule {
  static constexpr error validate(std::string_view s) noexcept { return validate_object_path(s); }
};
struct interface_rule {
  static constexpr error validate(std::string_view s) noexcept { return validate_interface_name(s); }
};
struct member_rule {
  static constexpr error validate(std::string_view s) noexcept { return validate_member_name(s); }
};
struct error_name_rule {
  static constexpr error validate(std::string_view s) noexcept { return validate_error_name(s); }
};
struct bus_name_rule {
  static constexpr error validate(std::string_view s) noexcept { return validate_bus_name(s); }
};
}  // namespace detail

// A validated, non-owning name. String literals are checked at compile time; run-time strings go
// through from() (checked) or from_unchecked() (the caller vouches for it).
template <class Rule>
class basic_name {
 public:
  constexpr basic_name() noexcept = default;

  template <std::size_t N>
  consteval basic_name(const char (&literal)[N]) : str_(literal, N - 1) {  // NOLINT: literals only
    if (Rule::validate(str_)) detail::invalid_dbus_name_in_string_literal();
  }

  static constexpr result<basic_name> from(std::string_view s) noexcept {
    if (error e = Rule::validate(s)) return e;
    return basic_name(s, 0);
  }
  static constexpr basic_name from_unchecked(std::string_view s) noexcept { return basic_name(s, 0); }

  constexpr std::string_view str() const noexcept { return str_; }
  constexpr operator std::string_view() const noexcept { return str_; }  // NOLINT
  constexpr const char* data() const noexcept { return str_.data(); }
  constexpr std::size_t size() const noexcept { return str_.size(); }
  constexpr bool empty() const noexcept { return str_.empty(); }

  friend constexpr bool operator==(basic_name a, basic_name b) noexcept { return a.str_ == b.str_; }
  friend constexpr bool operator==(basic_name a, std::string_view b) noexcept { return a.str_ == b; }
  // Without this, `name == "literal"` is ambiguous between the two overloads above.
  template <std::size_t N>
  friend constexpr bool operator==(basic_name a, const char (&b)[N]) noexcept {
    return a.str_ == std::string_view(b, N - 1);
  }
  friend constexpr auto operator<=>(basic_name a, basic_name b) noexcept { return a.str_ <=> b.str_; }

 private:
  constexpr basic_name(std::string_view s, int) noexcept : str_(s) {}
  std::string_view str_;
};

using interface_name = basic_name<detail::interface_rule>;
using member_name = basic_name<detail::member_rule>;
using error_name = basic_name<detail::error_name_rule>;
using bus_name = basic_name<detail::bus_name_rule>;
// An object path as a view; marshals as D-Bus type 'o'.
using object_path_view = basic_name<detail::object_path_rule>;

// An owning object path; marshals as D-Bus type 'o'.
class object_path {
 public:
  object_path() : str_("/") {}
  object_path(object_path_view v) : str_(v.str()) {}  // NOLINT: a view is already valid

  static result<object_path> from(std::string_view s) {
    if (error e = validate_object_path(s)) return e;
    return object_path(std::string(s), 0);
  }
  static object_path from_unchecked(std::string_view s) { return object_path(std::string(s), 0); }

  const std::string& str() const noexcept { return str_; }
  object_path_view view() const noexcept { return object_path_view::from_unchecked(str_); }
  operator object_path_view() const noexcept { return view(); }  // NOLINT

  friend bool operator==(const object_path& a, const object_path& b) noexcept { return a.str_ == b.str_; }
  friend auto operator<=>(const object_path& a, const object_path& b) noexcept { return a.str_ <=> b.str_; }

 private:
  object_path(std::string s, int) : str_(std::move(s)) {}
  std::string str_;
};

// Paths of the local pseudo-object, which libdbus refuses in received messages.
inline constexpr std::string_view local_path = "/org/freedesktop/DBus/Local";
inline constexpr std::string_view local_interface = "org.freedesktop.DBus.Local";

MCBUS_NAMESPACE_END
