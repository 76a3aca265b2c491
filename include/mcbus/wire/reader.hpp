// mcbus/wire: reading D-Bus values, in place.
//
// A reader walks a byte range in either byte order. Strings come back as views into that range and
// arrays of fixed-size numbers as spans when the byte order and alignment allow: nothing is copied
// unless the caller asks for an owning type (std::string, std::vector).
//
// Errors stick, as in c-dvar: after the first one every read returns a default value and the reader
// does not move; check err() once when done.
//
// An untrusted reader checks everything the specification requires (padding, UTF-8, booleans,
// lengths, nesting, fd indexes). message_view validates a whole message once on receipt and then
// hands out trusted readers, which keep only the bounds checks.
#pragma once

#include <mcbus/error.hpp>
#include <mcbus/wire/detail/endian.hpp>
#include <mcbus/wire/detail/utf8.hpp>
#include <mcbus/wire/limits.hpp>
#include <mcbus/wire/names.hpp>
#include <mcbus/wire/signature.hpp>
#include <mcbus/wire/unix_fd.hpp>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <variant>
#include <vector>

MCBUS_NAMESPACE_BEGIN

struct reader_options {
  bool trusted = false;          // the range was validated before: keep only bounds checks
  bool check_fd_indexes = true;  // 'h' values must be below fd_limit
  std::uint32_t fd_limit = 0;    // the UNIX_FDS count of the message
  unsigned depth = 0;            // containers already open around the first value
};

class reader {
 public:
  struct array_cursor {
    std::size_t end = 0;
    bool nests = false;
  };

  using options = reader_options;

  reader() noexcept = default;
  // data: the bytes to read; base_offset: the message offset of data[0], which alignment counts from.
  reader(std::span<const std::byte> data, byte_order order, std::size_t base_offset = 0, options opts = {}) noexcept
      : data_(reinterpret_cast<const unsigned char*>(data.data())),
        end_(data.size()),
        base_(base_offset),
        swap_(order != native_byte_order),
        trusted_(opts.trusted),
        check_fds_(opts.check_fd_indexes),
        fd_limit_(opts.fd_limit),
        depth_(opts.depth),
        order_(order) {}

  // The fds that arrived with the message, for reading unix_fd / borrowed_fd values.
  void set_fds(std::span<const int> fds) noexcept { fds_ = fds; }

  const error& err() const noexcept { return err_; }
  explicit operator bool() const noexcept { return !err_; }
  std::size_t position() const noexcept { return pos_; }
  std::size_t offset() const noexcept { return base_ + pos_; }
  bool at_end() const noexcept { return pos_ >= end_; }
  std::size_t remaining() const noexcept { return end_ - pos_; }
  byte_order order() const noexcept { return order_; }
  bool trusted() const noexcept { return trusted_; }

  void fail(errc code, const char* where = nullptr) noexcept { fail_at(code, pos_, where); }
  void fail_at(errc code, std::size_t pos, const char* where = nullptr) noexcept {
    if (!err_) err_ = error(code, base_ + pos, where);
  }
  void fail(const error& e) noexcept {
    if (!err_) err_ = e;
  }

  // ---- basic values -------------------------------------------------------------------------

  MCBUS_ALWAYS_INLINE bool align(std::size_t a) noexcept {
    if (MCBUS_UNLIKELY(err_)) return false;
    const std::size_t pad = (0 - (base_ + pos_)) & (a - 1);
    if (pad == 0) return true;  // most values are aligned already
    return skip_padding(pad);
  }

  template <class U>
  MCBUS_ALWAYS_INLINE U get_fixed() noexcept {
    static_assert(std::is_unsigned_v<U>);
    if (!align(sizeof(U))) return 0;
    if (MCBUS_UNLIKELY(end_ - pos_ < sizeof(U))) {
      fail(errc::truncated);
      return 0;
    }
    const U v = detail::load<U>(data_ + pos_, swap_);
    pos_ += sizeof(U);
    return v;
  }

  std::uint8_t get_byte() noexcept { return get_fixed<std::uint8_t>(); }
  bool get_bool() noexcept {
    const std::size_t at = detail::align_up(base_ + pos_, 4) - base_;
    const std::uint32_t v = get_fixed<std::uint32_t>();
    if (v > 1 && !err_) fail_at(errc::bad_boolean, at);
    return v == 1;
  }
  double get_double() noexcept { return std::bit_cast<double>(get_fixed<std::uint64_t>()); }

  std::string_view get_string() noexcept {
    const std::uint32_t len = get_fixed<std::uint32_t>();
    return take_string(len);
  }
  // Errors in a path or signature point at the offending byte, as UTF-8 errors do.
  // A valid path or signature is ASCII without NUL, so validating it makes the UTF-8 check
  // redundant; that check runs only when validation fails, to report what it always reported.
  object_path_view get_object_path() noexcept {
    const std::uint32_t len = get_fixed<std::uint32_t>();
    const std::size_t data_at = pos_;
    const std::string_view s = take_string(len, false);
    if (!trusted_ && !err_) {
      if (error e = validate_object_path(s)) {
        if (check_utf8(s, data_at)) fail_at(e.code(), data_at + e.offset(), "object path value");
        return {};
      }
    }
    return object_path_view::from_unchecked(s);
  }
  signature_view get_signature() noexcept {
    if (err_) return {};
    if (pos_ >= end_) {
      fail(errc::truncated);
      return {};
    }
    const std::size_t at = pos_;
    const std::size_t len = data_[pos_++];
    const std::string_view s = take_string(len, false);
    if (!trusted_ && !err_) {
      if (error e = validate_signature(s)) {
        if (check_utf8(s, at + 1)) fail_at(e.code(), at + 1 + e.offset(), "signature value");
        return {};
      }
    }
    return signature_view::from_unchecked(s);
  }
  std::uint32_t get_fd_index() noexcept {
    const std::size_t at = detail::align_up(base_ + pos_, 4) - base_;
    const std::uint32_t index = get_fixed<std::uint32_t>();
    if (!err_ && !trusted_ && check_fds_ && index >= fd_limit_) fail_at(errc::bad_fd_index, at);
    return index;
  }

  // ---- containers ---------------------------------------------------------------------------

  array_cursor open_array(std::string_view element_type) noexcept {
    const std::uint32_t len = get_fixed<std::uint32_t>();
    if (err_) return {pos_, false};
    const std::size_t length_at = pos_ - 4;
    if (len > max_array_length) {
      fail_at(errc::array_too_long, length_at);
      return {pos_, false};
    }
    if (!align(alignment_of_code(element_type[0]))) return {pos_, false};
    if (len > end_ - pos_) {
      fail_at(errc::truncated, length_at, "array length beyond the data");
      return {pos_, false};
    }
    const char code = element_type[0];
    if (is_fixed_type_code(code) && !trusted_) {
      const std::size_t size = alignment_of_code(code);
      if (len % size != 0) {
        fail_at(errc::array_length_mismatch, length_at, "not a multiple of the element size");
        return {pos_, false};
      }
    }
    // As in libdbus, only arrays that hold containers and are not empty add a nesting level.
    const bool nests = len > 0 && !is_fixed_type_code(code);
    if (nests) enter(length_at);
    return {pos_ + len, nests};
  }
  bool in_array(const array_cursor& c) const noexcept { return !err_ && pos_ < c.end; }
  void close_array(const array_cursor& c) noexcept {
    if (c.nests) leave();
    if (!err_ && pos_ != c.end) fail(errc::array_length_mismatch, "elements overrun the array");
  }
  void open_struct() noexcept {
    align(8);
    enter(pos_);
  }
  void close_struct() noexcept { leave(); }
  signature_view open_variant() noexcept {
    if (err_) return {};
    if (pos_ >= end_) {
      fail(errc::truncated);
      return {};
    }
    const std::size_t at = pos_;
    const std::size_t len = data_[pos_++];
    const std::string_view s = take_string(len, false);
    if (err_) return {};
    // Most variants hold one basic value; validate_single_type() decides everything else, and a
    // signature it accepts is ASCII without NUL, so no UTF-8 check is needed.
    const bool simple = len == 1 && (is_basic_type_code(s[0]) || s[0] == 'v');
    if (!simple && (!trusted_ || s.empty())) {
      if (error e = validate_single_type(s)) {
        if (trusted_ || check_utf8(s, at + 1)) fail_at(errc::bad_variant_signature, at);
        return {};
      }
    }
    enter(at);
    return signature_view::from_unchecked(s);
  }
  void close_variant() noexcept { leave(); }

  // Skips one complete value of the given type, validating it when the reader is untrusted.
  void skip(std::string_view type) noexcept {
    std::size_t i = 0;
    skip_one(type, i);
  }
  // Skips a sequence of complete types (a whole signature).
  void skip_all(std::string_view sig) noexcept {
    std::size_t i = 0;
    while (i < sig.size() && !err_) skip_one(sig, i);
  }

  // ---- typed values -------------------------------------------------------------------------

  template <class T>
  reader& operator>>(T& v) {
    read(v);
    return *this;
  }

  template <class T>
  T get() {
    T v{};
    read(v);
    return v;
  }

  template <class T>
  void read(T& v) {
    using I = detail::type_info<T>;
    using detail::kind;
    if constexpr (I::category == kind::integer) {
      if constexpr (std::is_enum_v<T>) {
        std::underlying_type_t<T> u{};
        read(u);
        v = static_cast<T>(u);
      } else {
        v = static_cast<T>(get_fixed<std::make_unsigned_t<T>>());
      }
    } else if constexpr (I::category == kind::boolean) {
      v = get_bool();
    } else if constexpr (I::category == kind::floating) {
      v = get_double();
    } else if constexpr (I::category == kind::string) {
      const std::string_view s = get_string();
      if constexpr (std::is_same_v<T, const char*>) {
        v = err_ ? "" : s.data();  // NUL-terminated in the buffer
      } else {
        v = T(s);
      }
    } else if constexpr (I::category == kind::object_path) {
      const object_path_view p = get_object_path();
      if constexpr (std::is_same_v<T, object_path>) {
        v = err_ ? object_path() : object_path(p);
      } else {
        v = p;
      }
    } else if constexpr (I::category == kind::signature) {
      v = T(get_signature());
    } else if constexpr (I::category == kind::fd) {
      const std::uint32_t index = get_fd_index();
      if (err_) return;
      if (index >= fds_.size()) return fail(errc::bad_fd_index, "no such fd arrived with the message");
      if constexpr (std::is_same_v<T, unix_fd>) {
        v = unix_fd(unix_fd::dup_cloexec(fds_[index]));
        if (!v) fail(error::from_errno(errno, "dup of a received fd"));
      } else {
        v = borrowed_fd{fds_[index]};
      }
    } else if constexpr (I::category == kind::array) {
      read_array(v);
    } else if constexpr (I::category == kind::dict) {
      using K = typename I::key;
      using V = typename I::mapped;
      v.clear();
      const array_cursor c = open_array("{");
      while (in_array(c)) {
        open_struct();
        K key{};
        read(key);
        V value{};
        read(value);
        close_struct();
        if (!err_) v.insert_or_assign(std::move(key), std::move(value));
      }
      close_array(c);
    } else if constexpr (I::category == kind::dict_entry) {
      open_struct();
      read(v.key);
      read(v.value);
      close_struct();
    } else if constexpr (I::category == kind::tuple) {
      open_struct();
      std::apply([&](auto&... fields) { (read(fields), ...); }, v);
      close_struct();
    } else if constexpr (I::category == kind::user_struct) {
      open_struct();
      std::apply([&](auto... members) { (read(v.*members), ...); }, dbus_struct<T>::members);
      close_struct();
    } else if constexpr (I::category == kind::std_variant) {
      const signature_view sig = open_variant();
      if (err_) return;
      if (!read_alternative<0>(v, sig.str())) fail(errc::type_mismatch, "variant holds none of the alternatives");
      close_variant();
    } else if constexpr (I::category == kind::any_variant) {
      v.read_from(*this);
    }
  }

 private:
  // `at` is where the container that would go too deep starts.
  void enter(std::size_t at) noexcept {
    if (++depth_ > max_total_depth) fail_at(errc::nesting_too_deep, at);
  }
  void leave() noexcept { --depth_; }

  // utf8: check the content (untrusted readers only); callers that validate the string more
  // strictly afterwards pass false and call check_utf8() only when that validation fails.
  MCBUS_ALWAYS_INLINE std::string_view take_string(std::size_t len, bool utf8 = true) noexcept {
    if (err_) return {};
    if (MCBUS_UNLIKELY(len >= end_ - pos_)) {  // needs len bytes plus the NUL
      fail(errc::truncated, "string runs past the end");
      return {};
    }
    const unsigned char* s = data_ + pos_;
    if (MCBUS_UNLIKELY(s[len] != 0)) {
      fail_at(errc::string_not_terminated, pos_ + len);
      return {};
    }
    if (utf8 && !trusted_) {
      bool nul = false;
      if (const std::size_t bad = detail::find_invalid_utf8_fast(s, len, end_ - pos_, &nul);
          MCBUS_UNLIKELY(bad != detail::utf8_ok)) {
        fail_at(nul ? errc::string_has_nul : errc::bad_utf8, pos_ + bad);
        return {};
      }
    }
    pos_ += len + 1;
    return {reinterpret_cast<const char*>(s), len};
  }
  // Fails as take_string() would have for bad UTF-8 in s, which starts at data_at, and leaves the
  // reader where take_string() would have; false if it failed.
  bool check_utf8(std::string_view s, std::size_t data_at) noexcept {
    bool nul = false;
    const std::size_t bad = detail::find_invalid_utf8(reinterpret_cast<const unsigned char*>(s.data()), s.size(), &nul);
    if (bad == detail::utf8_ok) return true;
    pos_ = data_at;
    fail_at(nul ? errc::string_has_nul : errc::bad_utf8, data_at + bad);
    return false;
  }
  // The padding before a value: pad bytes (1 to 7), which must exist and, untrusted, be zero.
  bool skip_padding(std::size_t pad) noexcept {
    if (MCBUS_UNLIKELY(pad > end_ - pos_)) {
      fail(errc::truncated);
      return false;
    }
    if (!trusted_ && !padding_is_zero(pad)) {
      for (std::size_t i = pos_; i < pos_ + pad; ++i) {
        if (data_[i] != 0) {
          fail_at(errc::bad_padding, i);
          return false;
        }
      }
    }
    pos_ += pad;
    return true;
  }
  // Whether the pad bytes at pos_ are zero: one masked word when 8 bytes may be loaded.
  bool padding_is_zero(std::size_t pad) const noexcept {
    if (end_ - pos_ < 8) {
      for (std::size_t i = pos_; i < pos_ + pad; ++i) {
        if (data_[i] != 0) return false;
      }
      return true;
    }
    std::uint64_t w;
    std::memcpy(&w, data_ + pos_, 8);
    const std::uint64_t mask = std::endian::native == std::endian::little ? ~std::uint64_t{0} >> (8 * (8 - pad))
                                                                          : ~std::uint64_t{0} << (8 * (8 - pad));
    return (w & mask) == 0;
  }

  // One complete value. Basic types are handled here; containers go to functions of their own, so
  // that this one stays small and its calls cheap: it runs for every value of an untrusted body.
  void skip_one(std::string_view sig, std::size_t& i) noexcept {
    if (MCBUS_UNLIKELY(err_)) return;
    switch (sig[i++]) {
      case 'y': get_fixed<std::uint8_t>(); return;
      case 'b': get_bool(); return;
      case 'n':
      case 'q': get_fixed<std::uint16_t>(); return;
      case 'i':
      case 'u': get_fixed<std::uint32_t>(); return;
      case 'h': get_fd_index(); return;
      case 'x':
      case 't':
      case 'd': get_fixed<std::uint64_t>(); return;
      case 's': get_string(); return;
      case 'o': get_object_path(); return;
      case 'g': get_signature(); return;
      case 'v': skip_variant(); return;
      case 'a': skip_array(sig, i); return;
      case '(':
      case '{': skip_struct(sig, i); return;
      default: fail(errc::bad_signature, "reader met an invalid type code"); return;
    }
  }
  void skip_variant() noexcept {
    const signature_view inner = open_variant();
    if (!err_) skip(inner.str());
    close_variant();
  }
  // i is just past the 'a'.
  void skip_array(std::string_view sig, std::size_t& i) noexcept {
    const std::size_t elem_len = complete_type_length(sig, i);
    const std::string_view elem = sig.substr(i, elem_len);
    const array_cursor a = open_array(elem);
    i += elem_len;
    if (err_) return;
    if (is_fixed_type_code(elem[0])) {
      if (elem[0] == 'b' && !trusted_) {
        while (in_array(a)) get_bool();
      } else if (elem[0] == 'h' && !trusted_ && check_fds_) {
        while (in_array(a)) get_fd_index();
      } else {
        pos_ = a.end;
      }
    } else if (elem.size() == 1 && elem[0] == 's') {
      while (in_array(a)) get_string();  // as: common enough for its own loop
    } else {
      while (in_array(a)) {
        std::size_t k = 0;
        skip_one(elem, k);
      }
    }
    close_array(a);
  }
  // i is just past the '(' or '{'.
  void skip_struct(std::string_view sig, std::size_t& i) noexcept {
    open_struct();
    while (!err_ && sig[i] != ')' && sig[i] != '}') skip_one(sig, i);
    ++i;
    close_struct();
  }

  template <class A>
  void read_array(A& v) {
    using E = typename detail::type_info<A>::element;
    static_assert(!std::is_same_v<A, borrowed_array<E>>,
                  "mcbus: borrowed_array is for writing; read a std::span<const T> (no copy) instead");
    constexpr auto elem_sig = detail::type_info<E>::sig;
    const array_cursor c = open_array(elem_sig.view());
    if (err_) return;
    if constexpr (std::is_same_v<A, std::span<const E>>) {
      static_assert(detail::trivially_wire<E>,
                    "mcbus: only arrays of fixed-size numbers can be read as a span; use std::vector");
      const std::size_t bytes = c.end - pos_;
      if ((sizeof(E) > 1 && swap_) || reinterpret_cast<std::uintptr_t>(data_ + pos_) % alignof(E) != 0) {
        return fail(errc::not_zero_copy, "read this array into a std::vector instead");
      }
      if (bytes % sizeof(E) != 0) return fail(errc::array_length_mismatch);
      v = std::span<const E>(reinterpret_cast<const E*>(data_ + pos_), bytes / sizeof(E));
      pos_ = c.end;
    } else if constexpr (detail::is_std_vector<A>::value) {
      v.clear();
      if constexpr (detail::trivially_wire<E>) {
        if (!swap_) {
          const std::size_t bytes = c.end - pos_;
          if (bytes % sizeof(E) != 0) return fail(errc::array_length_mismatch);
          v.resize(bytes / sizeof(E));
          if (bytes) std::memcpy(v.data(), data_ + pos_, bytes);
          pos_ = c.end;
          close_array(c);
          return;
        }
      }
      while (in_array(c)) {
        E e{};
        read(e);
        v.push_back(std::move(e));
      }
    } else {  // std::array<E, N>
      std::size_t n = 0;
      while (in_array(c)) {
        if (n == v.size()) return fail(errc::value_out_of_range, "array has more elements than std::array holds");
        read(v[n++]);
      }
      if (!err_ && n != v.size())
        return fail(errc::value_out_of_range, "array has fewer elements than std::array holds");
    }
    close_array(c);
  }

  template <std::size_t I, class... Ts>
  bool read_alternative(std::variant<Ts...>& v, std::string_view sig) {
    if constexpr (I == sizeof...(Ts)) {
      return false;
    } else {
      using Alt = std::variant_alternative_t<I, std::variant<Ts...>>;
      if (signature_of<Alt> == sig) {
        read(v.template emplace<I>());
        return true;
      }
      return read_alternative<I + 1>(v, sig);
    }
  }

  const unsigned char* data_ = nullptr;
  std::size_t pos_ = 0;
  std::size_t end_ = 0;
  std::size_t base_ = 0;
  bool swap_ = false;
  bool trusted_ = false;
  bool check_fds_ = true;
  std::uint32_t fd_limit_ = 0;
  unsigned depth_ = 0;
  byte_order order_ = native_byte_order;
  std::span<const int> fds_;
  error err_;
};

MCBUS_NAMESPACE_END
