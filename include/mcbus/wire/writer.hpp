// mcbus/wire: marshalling C++ values into the D-Bus wire format.
//
// A writer appends to a byte buffer in either byte order. Alignment is counted from the start of
// the message: a writer that starts at a message's body (always 8-aligned) or in the middle of
// something else says so with base_offset. The first error sticks: later writes do nothing, and
// the caller checks err() once at the end.
#pragma once

#include <mcbus/error.hpp>
#include <mcbus/wire/detail/buffer.hpp>
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
#include <string_view>
#include <tuple>
#include <variant>
#include <vector>

MCBUS_NAMESPACE_BEGIN

// Bytes of a message body that stay in the caller's memory (see borrowed_array): they lie, in the
// body, just before byte `at` of the body's own buffer.
struct body_segment {
  std::size_t at;
  std::span<const std::byte> bytes;
};

class writer {
 public:
  // Where an array's length goes and where its elements start; close_array() fills the length in.
  struct array_mark {
    std::size_t length_at;  // message offsets, as in errors
    std::size_t elements_at;
    bool nests;                        // elements are containers, so they count toward the nesting limit
    std::size_t length_in_buffer = 0;  // where the length is in the buffer (borrowed bytes are not)
  };

  // base_offset is the message offset at which the buffer's current end lies. With `borrowed`, a
  // borrowed_array is recorded there instead of being copied into the buffer.
  explicit writer(detail::byte_buffer& out, byte_order order = native_byte_order, std::size_t base_offset = 0,
                  std::vector<unix_fd>* fds = nullptr, std::vector<body_segment>* borrowed = nullptr) noexcept
      : out_(out),
        base_(base_offset - out.size()),
        swap_(order != native_byte_order),
        order_(order),
        fds_(fds),
        borrowed_(borrowed) {}

  writer(const writer&) = delete;
  writer& operator=(const writer&) = delete;

  const error& err() const noexcept { return err_; }
  explicit operator bool() const noexcept { return !err_; }
  byte_order order() const noexcept { return order_; }
  // Offset from the start of the message (or from wherever base_offset was counted).
  std::size_t position() const noexcept { return base_ + out_.size(); }

  void fail(error e) noexcept {
    if (!err_) err_ = e;
  }

  template <class T>
  writer& operator<<(const T& v) {
    write(v);
    return *this;
  }

  template <class... Ts>
  writer& write_all(const Ts&... vs) {
    (write(vs), ...);
    return *this;
  }

  // ---- basic values -------------------------------------------------------------------------

  void pad_to(std::size_t alignment) {
    const std::size_t pad = detail::align_up(position(), alignment) - position();
    out_.append_zeros(pad);
  }

  template <class U>
  MCBUS_ALWAYS_INLINE void put_fixed(U bits) {
    static_assert(std::is_unsigned_v<U>);
    if (MCBUS_UNLIKELY(err_)) return;
    const std::size_t pos = position();
    const std::size_t pad = (sizeof(U) - (pos & (sizeof(U) - 1))) & (sizeof(U) - 1);
    unsigned char* p = out_.extend(pad + sizeof(U));
    detail::store<U>(p, U{0}, false);  // the padding (shorter than U), and what the value overwrites
    detail::store<U>(p + pad, bits, swap_);
  }

  void put_byte(std::uint8_t v) { put_fixed<std::uint8_t>(v); }
  void put_bool(bool v) { put_fixed<std::uint32_t>(v ? 1u : 0u); }
  void put_double(double v) { put_fixed<std::uint64_t>(std::bit_cast<std::uint64_t>(v)); }

  // A UTF-8 string without NUL; anything else is refused, since every receiver would reject it.
  void put_string(std::string_view s) {
    if (err_) return;
    bool nul = false;
    // The caller's string may end anywhere, so the fast path loads nothing past it.
    if (const std::size_t bad =
            detail::find_invalid_utf8_fast(reinterpret_cast<const unsigned char*>(s.data()), s.size(), s.size(), &nul);
        MCBUS_UNLIKELY(bad != detail::utf8_ok)) {
      return fail({nul ? errc::string_has_nul : errc::bad_utf8, string_data_at() + bad, "string being written"});
    }
    put_counted_string(s);
  }
  void put_object_path(std::string_view s) {
    if (error e = validate_object_path(s)) return fail(e.shifted(string_data_at()).in("object path being written"));
    put_counted_string(s);
  }
  void put_signature(std::string_view s) {
    if (error e = validate_signature(s)) return fail(e.shifted(position() + 1).in("signature being written"));
    put_short_string(s);
  }
  // Strings whose validity the caller already knows (validated names, earlier-checked input).
  void put_counted_string(std::string_view s) {
    if (err_) return;
    if (s.size() > 0xFFFFFFFFu) return fail({errc::value_out_of_range, position(), "string too long"});
    // Padding, length, text and NUL in one extend().
    const std::size_t pad = (0 - position()) & 3;
    unsigned char* p = out_.extend(pad + 4 + s.size() + 1);
    detail::store<std::uint32_t>(p, 0, false);  // the padding (at most 3 bytes)
    detail::store<std::uint32_t>(p + pad, static_cast<std::uint32_t>(s.size()), swap_);
    if (!s.empty()) std::memcpy(p + pad + 4, s.data(), s.size());  // an empty view may hold nullptr
    p[pad + 4 + s.size()] = 0;
  }
  void put_short_string(std::string_view s) {
    if (err_) return;
    unsigned char* p = out_.extend(s.size() + 2);
    if (s.size() == 1) {  // most variant and header field signatures: no memcpy call
      p[0] = 1;
      p[1] = static_cast<unsigned char>(s[0]);
      p[2] = 0;
      return;
    }
    p[0] = static_cast<unsigned char>(s.size());
    if (!s.empty()) std::memcpy(p + 1, s.data(), s.size());  // an empty view may hold nullptr
    p[s.size() + 1] = 0;
  }

  // An fd is duplicated into the message's fd list; the 'h' on the wire is its index there.
  void put_fd(borrowed_fd fd) {
    if (err_) return;
    if (!fds_) return fail({errc::not_supported, position(), "this writer has no fd list"});
    if (fds_->size() >= max_fds_per_message) return fail({errc::too_many_fds, position()});
    unix_fd copy(unix_fd::dup_cloexec(fd.fd));
    if (!copy) return fail(error::from_errno(errno, "dup of an fd being written"));
    const auto index = static_cast<std::uint32_t>(fds_->size());
    fds_->push_back(std::move(copy));
    put_fixed<std::uint32_t>(index);
  }
  // Bytes that are already marshalled for this position (a body copied from another message
  // whose body also started 8-aligned, in the same byte order).
  void put_raw(std::span<const std::byte> bytes) {
    if (!err_) out_.append(bytes.data(), bytes.size());
  }

  // An fd index as is, for re-encoding a message whose fds travel separately.
  void put_fd_index(std::uint32_t index) { put_fixed<std::uint32_t>(index); }

  // ---- containers ---------------------------------------------------------------------------

  // element_type is the element's signature (only its first code matters for alignment).
  // As in the reader (and libdbus), only an array that holds containers and is not empty adds a
  // nesting level, so the check waits for close_array(), when the length is known.
  array_mark open_array(std::string_view element_type) {
    put_fixed<std::uint32_t>(0);
    const std::size_t length_at = position() - 4;
    pad_to(alignment_of_code(element_type.empty() ? 'y' : element_type[0]));
    const bool nests = element_type.empty() || !is_fixed_type_code(element_type[0]);
    if (nests) ++depth_;
    return {length_at, position(), nests, out_.size() - (position() - length_at)};
  }
  void close_array(array_mark m) {
    const std::size_t len = position() - m.elements_at;
    if (m.nests) {
      if (len > 0 && depth_ > max_total_depth) fail({errc::nesting_too_deep, m.length_at});
      leave();
    }
    if (err_) return;
    if (len > max_array_length) return fail({errc::array_too_long, m.length_at});
    detail::store<std::uint32_t>(out_.data() + m.length_in_buffer, static_cast<std::uint32_t>(len), swap_);
  }
  void open_struct() {
    pad_to(8);
    enter(position());
  }
  void close_struct() { leave(); }
  void open_variant(std::string_view type) {
    // Most variants hold one basic value, which needs no parsing.
    const bool simple = type.size() == 1 && (is_basic_type_code(type[0]) || type[0] == 'v');
    if (error e = simple ? error() : validate_single_type(type)) return fail(e.in("variant signature being written"));
    const std::size_t at = position();
    put_short_string(type);
    enter(at);
  }
  void close_variant() { leave(); }

  // ---- typed values -------------------------------------------------------------------------

  template <class T>
  void write(const T& v) {
    using I = detail::type_info<T>;
    using detail::kind;
    if constexpr (I::category == kind::integer) {
      if constexpr (std::is_enum_v<T>) {
        write(static_cast<std::underlying_type_t<T>>(v));
      } else {
        put_fixed<std::make_unsigned_t<T>>(static_cast<std::make_unsigned_t<T>>(v));
      }
    } else if constexpr (I::category == kind::boolean) {
      put_bool(v);
    } else if constexpr (I::category == kind::floating) {
      put_double(v);
    } else if constexpr (I::category == kind::string) {
      if constexpr (std::is_same_v<T, const char*>) {
        put_string(v ? std::string_view(v) : std::string_view());
      } else {
        put_string(v);
      }
    } else if constexpr (I::category == kind::object_path) {
      // The type guarantees validity, except a default-constructed object_path_view, which is empty.
      if (v.str().empty()) return fail({errc::bad_object_path, position(), "empty object path being written"});
      put_counted_string(std::string_view(v.str()));
    } else if constexpr (I::category == kind::signature) {
      put_short_string(std::string_view(v.str()));
    } else if constexpr (I::category == kind::fd) {
      if constexpr (std::is_same_v<T, unix_fd>) {
        put_fd(v.borrow());
      } else {
        put_fd(v);
      }
    } else if constexpr (I::category == kind::array) {
      write_array(v);
    } else if constexpr (I::category == kind::dict) {
      const array_mark m = open_array("{");
      for (const auto& [key, value] : v) {
        open_struct();
        write(key);
        write(value);
        close_struct();
      }
      close_array(m);
    } else if constexpr (I::category == kind::dict_entry) {
      open_struct();
      write(v.key);
      write(v.value);
      close_struct();
    } else if constexpr (I::category == kind::tuple) {
      open_struct();
      std::apply([&](const auto&... fields) { (write(fields), ...); }, v);
      close_struct();
    } else if constexpr (I::category == kind::user_struct) {
      open_struct();
      std::apply([&](auto... members) { (write(v.*members), ...); }, dbus_struct<T>::members);
      close_struct();
    } else if constexpr (I::category == kind::std_variant) {
      if (v.valueless_by_exception()) return fail({errc::invalid_argument, position(), "valueless std::variant"});
      std::visit(
          [this](const auto& alt) {
            open_variant(signature_of<decltype(alt)>);
            write(alt);
            close_variant();
          },
          v);
    } else if constexpr (I::category == kind::any_variant) {
      v.write_to(*this);
    }
  }

 private:
  // `at` is where the container that would go too deep starts.
  void enter(std::size_t at) {
    if (++depth_ > max_total_depth) fail({errc::nesting_too_deep, at});
  }
  // Where the characters of a counted string written now would start.
  std::size_t string_data_at() const noexcept { return detail::align_up(position(), 4) + 4; }
  void leave() { --depth_; }

  template <class A>
  void write_array(const A& v) {
    using E = typename detail::type_info<A>::element;
    const array_mark m = open_array(detail::type_info<E>::sig.view());
    if constexpr (std::is_same_v<A, borrowed_array<E>>) {
      if (borrowed_ && !err_ && (sizeof(E) == 1 || !swap_)) {
        const std::span<const std::byte> bytes = std::as_bytes(v.items);
        if (!bytes.empty()) borrowed_->push_back({out_.size(), bytes});
        base_ += bytes.size();  // the message offsets go on as if the bytes were here
        close_array(m);
        return;
      }
    }
    if constexpr (detail::trivially_wire<E> && requires { v.data(); }) {
      // Fixed-size elements in native order are a single copy.
      if (!swap_ && !err_) {
        const std::size_t n = std::size(v) * sizeof(E);
        out_.append(std::data(v), n);
        close_array(m);
        return;
      }
    }
    for (const auto& e : v) write(static_cast<const E&>(e));
    close_array(m);
  }

  detail::byte_buffer& out_;
  std::size_t base_;
  bool swap_;
  byte_order order_;
  unsigned depth_ = 0;
  std::vector<unix_fd>* fds_;
  std::vector<body_segment>* borrowed_;
  error err_;
};

MCBUS_NAMESPACE_END
