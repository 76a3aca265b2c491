// mcbus: errors as values.
//
// Every fallible call returns result<T> (an expected-like type) whose error is an mcbus::error: a
// code, the byte offset where the problem was found (when there is one) and a short static note on
// the context ("header field MEMBER", "match key arg3"). Nothing here allocates or throws; message()
// builds a readable string on demand.
#pragma once

#include <mcbus/config.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#if MCBUS_HAS_EXCEPTIONS
#include <exception>
#endif

MCBUS_NAMESPACE_BEGIN

enum class errc : std::uint16_t {
  ok = 0,
  // Framing and the fixed header.
  truncated,
  message_too_long,
  bad_endian,
  bad_version,
  bad_message_type,
  zero_serial,
  // Header fields.
  bad_header_field_code,
  bad_header_field_type,
  duplicate_header_field,
  missing_header_field,
  local_path_forbidden,
  local_interface_forbidden,
  // Values.
  bad_padding,
  bad_utf8,
  string_has_nul,
  string_not_terminated,
  bad_boolean,
  array_too_long,
  array_length_mismatch,
  nesting_too_deep,
  bad_variant_signature,
  trailing_bytes,
  bad_fd_index,
  too_many_fds,
  // Signatures and names.
  bad_signature,
  signature_too_long,
  signature_mismatch,
  bad_object_path,
  bad_bus_name,
  bad_interface_name,
  bad_member_name,
  bad_error_name,
  // Typed access.
  type_mismatch,
  not_zero_copy,
  value_out_of_range,
  // Match rules and BPF.
  bad_match_rule,
  bpf_too_large,
  bpf_invalid,
  // Addresses, authentication, transport.
  bad_address,
  auth_rejected,
  auth_protocol,
  system,
  disconnected,
  timeout,
  would_block,
  // Bus and calls.
  method_error,
  no_reply,
  bad_reply,
  not_connected,
  invalid_argument,
  not_supported,
  over_quota,
  dropped,
};

// One line on what went wrong, without the where; the error's message() adds the where.
constexpr const char* describe(errc code) noexcept {
  switch (code) {
    case errc::ok: return "success";
    case errc::truncated: return "the data ends before the value does";
    case errc::message_too_long: return "message longer than the 128 MiB limit";
    case errc::bad_endian: return "first byte is neither 'l' nor 'B'";
    case errc::bad_version: return "unsupported protocol version (want 1)";
    case errc::bad_message_type: return "message type 0 is invalid";
    case errc::zero_serial: return "serial is 0";
    case errc::bad_header_field_code: return "header field code 0 is invalid";
    case errc::bad_header_field_type: return "header field has the wrong type";
    case errc::duplicate_header_field: return "header field appears twice";
    case errc::missing_header_field: return "required header field is missing";
    case errc::local_path_forbidden: return "path /org/freedesktop/DBus/Local is reserved";
    case errc::local_interface_forbidden: return "interface org.freedesktop.DBus.Local is reserved";
    case errc::bad_padding: return "alignment padding is not zero";
    case errc::bad_utf8: return "string is not valid UTF-8";
    case errc::string_has_nul: return "string contains a NUL byte";
    case errc::string_not_terminated: return "string is not NUL-terminated";
    case errc::bad_boolean: return "boolean is neither 0 nor 1";
    case errc::array_too_long: return "array longer than the 64 MiB limit";
    case errc::array_length_mismatch: return "array length does not match its elements";
    case errc::nesting_too_deep: return "values nested deeper than 64 levels";
    case errc::bad_variant_signature: return "variant signature is not one complete type";
    case errc::trailing_bytes: return "bytes left over after the last value";
    case errc::bad_fd_index: return "unix fd index is not below the UNIX_FDS count";
    case errc::too_many_fds: return "too many unix fds for one message";
    case errc::bad_signature: return "invalid type signature";
    case errc::signature_too_long: return "signature longer than 255 bytes";
    case errc::signature_mismatch: return "value types do not match the signature";
    case errc::bad_object_path: return "invalid object path";
    case errc::bad_bus_name: return "invalid bus name";
    case errc::bad_interface_name: return "invalid interface name";
    case errc::bad_member_name: return "invalid member name";
    case errc::bad_error_name: return "invalid error name";
    case errc::type_mismatch: return "the value has a different D-Bus type than requested";
    case errc::not_zero_copy: return "cannot view this array in place (byte order or alignment)";
    case errc::value_out_of_range: return "value out of range";
    case errc::bad_match_rule: return "invalid match rule";
    case errc::bpf_too_large: return "BPF program exceeds 4096 instructions";
    case errc::bpf_invalid: return "invalid BPF program";
    case errc::bad_address: return "invalid D-Bus address";
    case errc::auth_rejected: return "authentication rejected by the server";
    case errc::auth_protocol: return "unexpected reply in the authentication protocol";
    case errc::system: return "system call failed";
    case errc::disconnected: return "connection closed";
    case errc::timeout: return "timed out";
    case errc::would_block: return "operation would block";
    case errc::method_error: return "the peer replied with a D-Bus error";
    case errc::no_reply: return "no reply";
    case errc::bad_reply: return "reply has unexpected content";
    case errc::not_connected: return "not connected";
    case errc::invalid_argument: return "invalid argument";
    case errc::not_supported: return "not supported";
    case errc::over_quota: return "subscriber over its quota";
    case errc::dropped: return "dropped by the publisher";
  }
  return "unknown mcbus error";
}

namespace detail {
class error_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "mcbus"; }
  std::string message(int value) const override { return describe(static_cast<errc>(value)); }
};
}  // namespace detail

inline const std::error_category& error_category() noexcept {
  static const detail::error_category_impl category;
  return category;
}

inline std::error_code make_error_code(errc code) noexcept { return {static_cast<int>(code), error_category()}; }

// An error value. Cheap to copy; `where` is always a static string.
class error {
 public:
  static constexpr std::size_t no_offset = static_cast<std::size_t>(-1);

  constexpr error() noexcept = default;
  constexpr error(errc code, std::size_t offset = no_offset, const char* where = nullptr) noexcept
      : code_(code), offset_(offset), where_(where) {}

  // An error from a failed system call; keeps errno.
  static error from_errno(int err, const char* where = nullptr) noexcept {
    error e(errc::system, no_offset, where);
    e.sys_errno_ = err;
    return e;
  }

  constexpr errc code() const noexcept { return code_; }
  constexpr std::size_t offset() const noexcept { return offset_; }
  constexpr bool has_offset() const noexcept { return offset_ != no_offset; }
  constexpr const char* where() const noexcept { return where_; }
  constexpr int sys_errno() const noexcept { return sys_errno_; }
  constexpr explicit operator bool() const noexcept { return code_ != errc::ok; }

  // The same error at another place: used when a nested parser reports relative offsets.
  constexpr error shifted(std::size_t by) const noexcept {
    error e = *this;
    if (e.has_offset()) e.offset_ += by;
    return e;
  }
  constexpr error in(const char* where) const noexcept {
    error e = *this;
    if (!e.where_) e.where_ = where;
    return e;
  }

  std::error_code ec() const noexcept {
    if (code_ == errc::system) return {sys_errno_, std::generic_category()};
    return make_error_code(code_);
  }

  // "string is not valid UTF-8 at byte 42 (body argument 3)"
  std::string message() const {
    std::string out = code_ == errc::system && sys_errno_ != 0 ? std::generic_category().message(sys_errno_)
                                                               : std::string(describe(code_));
    if (has_offset()) {
      out += " at byte ";
      out += std::to_string(offset_);
    }
    if (where_ && *where_) {
      out += " (";
      out += where_;
      out += ')';
    }
    return out;
  }

  friend constexpr bool operator==(const error& a, errc b) noexcept { return a.code_ == b; }

 private:
  errc code_ = errc::ok;
  int sys_errno_ = 0;
  std::size_t offset_ = no_offset;
  const char* where_ = nullptr;
};

#if MCBUS_HAS_EXCEPTIONS
class bad_result_access : public std::exception {
 public:
  explicit bad_result_access(std::string what) : what_(std::move(what)) {}
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  std::string what_;
};
#endif

namespace detail {
template <class E>
std::string error_text(const E& e) {
  if constexpr (requires { e.message(); }) {
    return std::string(e.message());
  } else {
    return "mcbus error";
  }
}

template <class E>
[[noreturn]] void throw_bad_access(const E& e) {
#if MCBUS_HAS_EXCEPTIONS
  throw bad_result_access(error_text(e));
#else
  std::fprintf(stderr, "mcbus: value() on an error result: %s\n", error_text(e).c_str());
  std::abort();
#endif
}
}  // namespace detail

struct unexpect_t {
  explicit unexpect_t() = default;
};
inline constexpr unexpect_t unexpect{};

// result<T, E>: either a T or an E. Like std::expected (C++23), reduced to what mcbus needs, and
// usable in constant expressions so that compile-time parsers can return it.
template <class T, class E = error>
class [[nodiscard]] result {
 public:
  using value_type = T;
  using error_type = E;

  constexpr result() requires std::is_default_constructible_v<T> : has_(true) { std::construct_at(&value_); }
  template <class U = T>
  requires(std::is_constructible_v<T, U&&> && !std::is_same_v<std::remove_cvref_t<U>, result> &&
           !std::is_same_v<std::remove_cvref_t<U>, E> &&
           !std::is_same_v<std::remove_cvref_t<U>, unexpect_t>) constexpr result(U&& v)
      : has_(true) {  // NOLINT(google-explicit-constructor)
    std::construct_at(&value_, std::forward<U>(v));
  }
  constexpr result(const E& e) : has_(false) { std::construct_at(&error_, e); }        // NOLINT
  constexpr result(E&& e) : has_(false) { std::construct_at(&error_, std::move(e)); }  // NOLINT
  template <class... A>
  constexpr result(unexpect_t, A&&... a) : has_(false) {
    std::construct_at(&error_, std::forward<A>(a)...);
  }
  constexpr result(errc code)  // NOLINT: lets `return errc::x;` read naturally
      requires std::is_constructible_v<E, errc> : has_(false) {
    std::construct_at(&error_, code);
  }

  constexpr result(const result& o) : has_(o.has_) {
    if (has_)
      std::construct_at(&value_, o.value_);
    else
      std::construct_at(&error_, o.error_);
  }
  constexpr result(result&& o) noexcept(std::is_nothrow_move_constructible_v<T>) : has_(o.has_) {
    if (has_)
      std::construct_at(&value_, std::move(o.value_));
    else
      std::construct_at(&error_, std::move(o.error_));
  }
  constexpr result& operator=(const result& o) {
    if (this != &o) {
      destroy();
      has_ = o.has_;
      if (has_)
        std::construct_at(&value_, o.value_);
      else
        std::construct_at(&error_, o.error_);
    }
    return *this;
  }
  constexpr result& operator=(result&& o) noexcept(std::is_nothrow_move_constructible_v<T>) {
    if (this != &o) {
      destroy();
      has_ = o.has_;
      if (has_)
        std::construct_at(&value_, std::move(o.value_));
      else
        std::construct_at(&error_, std::move(o.error_));
    }
    return *this;
  }
  constexpr ~result() { destroy(); }

  constexpr bool has_value() const noexcept { return has_; }
  constexpr explicit operator bool() const noexcept { return has_; }

  constexpr T& value() & {
    if (!has_) detail::throw_bad_access(error_);
    return value_;
  }
  constexpr const T& value() const& {
    if (!has_) detail::throw_bad_access(error_);
    return value_;
  }
  constexpr T&& value() && {
    if (!has_) detail::throw_bad_access(error_);
    return std::move(value_);
  }
  constexpr T& operator*() & noexcept { return value_; }
  constexpr const T& operator*() const& noexcept { return value_; }
  constexpr T&& operator*() && noexcept { return std::move(value_); }
  constexpr T* operator->() noexcept { return &value_; }
  constexpr const T* operator->() const noexcept { return &value_; }

  constexpr const E& error() const& noexcept { return error_; }
  constexpr E&& error() && noexcept { return std::move(error_); }

  template <class U>
  constexpr T value_or(U&& fallback) const& {
    return has_ ? value_ : static_cast<T>(std::forward<U>(fallback));
  }

 private:
  constexpr void destroy() {
    if (has_)
      std::destroy_at(&value_);
    else
      std::destroy_at(&error_);
  }

  union {
    T value_;
    E error_;
  };
  bool has_;
};

template <class E>
class [[nodiscard]] result<void, E> {
 public:
  using value_type = void;
  using error_type = E;

  constexpr result() noexcept = default;
  constexpr result(const E& e) : error_(e), has_(false) {}  // NOLINT
  constexpr result(errc code)                               // NOLINT
      requires std::is_constructible_v<E, errc> : error_(code),
                                                  has_(false) {}

  constexpr bool has_value() const noexcept { return has_; }
  constexpr explicit operator bool() const noexcept { return has_; }
  constexpr void value() const {
    if (!has_) detail::throw_bad_access(error_);
  }
  constexpr const E& error() const& noexcept { return error_; }

 private:
  E error_{};
  bool has_ = true;
};

// Propagates an error result out of the calling function: MCBUS_TRY(x, parse(...));
#define MCBUS_TRY(var, expr)                                   \
  auto var##_result_ = (expr);                                 \
  if (!var##_result_) return std::move(var##_result_).error(); \
  auto var = std::move(*var##_result_)

MCBUS_NAMESPACE_END

namespace std {
template <>
struct is_error_code_enum<mcbus::errc> : true_type {};
}  // namespace std
