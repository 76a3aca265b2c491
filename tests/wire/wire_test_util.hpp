// Helpers for the wire tests: raw message construction (so that tests can build messages the
// codec itself would refuse to write), a seeded random source and a random value generator shared
// by the round-trip tests.
#pragma once

#include <mcbus/wire/message.hpp>
#include <mcbus/wire/value.hpp>
#include <mcbus/wire/writer.hpp>

#include <gtest/gtest.h>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace wire_test {

using bytes = std::vector<std::byte>;

inline bytes to_vector(const mcbus::detail::byte_buffer& b) { return bytes(b.bytes().begin(), b.bytes().end()); }

inline std::span<const std::byte> as_bytes(const std::vector<unsigned char>& v) {
  return {reinterpret_cast<const std::byte*>(v.data()), v.size()};
}

// The byte order raw_message uses unless told otherwise; byte-order-parametrized tests set it.
inline mcbus::byte_order& raw_order() {
  static mcbus::byte_order order = mcbus::native_byte_order;
  return order;
}

// Builds a message byte by byte. fields() writes the content of the header field array (the
// structs, without the array length), body() the body; the fixed header is filled in from the
// other members. Offsets recorded by the callbacks are message offsets.
struct raw_message {
  mcbus::byte_order order = raw_order();
  std::uint8_t endian_byte = 0;  // 0: from `order`
  std::uint8_t type = 1;
  std::uint8_t flags = 0;
  std::uint8_t version = 1;
  std::uint32_t serial = 1;
  std::function<void(mcbus::writer&)> fields;
  std::function<void(mcbus::writer&)> body;
  bool pad_header = true;
  // Lengths written into the fixed header; by default the real ones.
  std::int64_t body_length_override = -1;
  std::int64_t fields_length_override = -1;

  bytes build() const {
    mcbus::detail::byte_buffer buf;
    buf.append_zeros(16);
    mcbus::writer w(buf, order, 16);
    if (fields) fields(w);
    EXPECT_FALSE(w.err()) << w.err().message();
    const std::size_t fields_len = buf.size() - 16;
    if (pad_header) buf.append_zeros(mcbus::detail::align_up(buf.size(), 8) - buf.size());
    const std::size_t body_start = buf.size();
    if (body) {
      mcbus::writer wb(buf, order, body_start);
      body(wb);
      EXPECT_FALSE(wb.err()) << wb.err().message();
    }
    const std::size_t body_len = buf.size() - body_start;
    unsigned char* p = buf.data();
    const bool swap = order != mcbus::native_byte_order;
    p[0] = endian_byte ? endian_byte : static_cast<unsigned char>(order);
    p[1] = type;
    p[2] = flags;
    p[3] = version;
    mcbus::detail::store<std::uint32_t>(
        p + 4, static_cast<std::uint32_t>(body_length_override >= 0 ? body_length_override : body_len), swap);
    mcbus::detail::store<std::uint32_t>(p + 8, serial, swap);
    mcbus::detail::store<std::uint32_t>(
        p + 12, static_cast<std::uint32_t>(fields_length_override >= 0 ? fields_length_override : fields_len), swap);
    return to_vector(buf);
  }
};

// Writes one header field struct (code, variant of `sig`, value from fn).
inline void field(mcbus::writer& w, std::uint8_t code, std::string_view sig,
                  const std::function<void(mcbus::writer&)>& fn) {
  w.open_struct();
  w.put_byte(code);
  w.put_short_string(sig);  // unchecked on purpose: tests write bad variant signatures too
  fn(w);
  w.close_struct();
}
inline void string_field(mcbus::writer& w, std::uint8_t code, std::string_view s) {
  field(w, code, "s", [&](mcbus::writer& x) { x.put_counted_string(s); });
}
inline void path_field(mcbus::writer& w, std::string_view s) {
  field(w, 1, "o", [&](mcbus::writer& x) { x.put_counted_string(s); });
}
inline void u32_field(mcbus::writer& w, std::uint8_t code, std::uint32_t v) {
  field(w, code, "u", [&](mcbus::writer& x) { x.put_fixed<std::uint32_t>(v); });
}
inline void sig_field(mcbus::writer& w, std::string_view s) {
  field(w, 8, "g", [&](mcbus::writer& x) { x.put_short_string(s); });
}
// PATH, INTERFACE and MEMBER: enough for a signal or a method call.
inline void call_fields(mcbus::writer& w) {
  path_field(w, "/a/b");
  string_field(w, 2, "org.example.I");
  string_field(w, 3, "M");
}

// ---- randomness -------------------------------------------------------------------------------

// The seed for a test program's random tests: MCBUS_TEST_SEED if set, else a fresh one. Printed
// once, so that a failure can be replayed.
inline std::uint64_t test_seed() {
  static const std::uint64_t seed = [] {
    std::uint64_t s;
    if (const char* env = std::getenv("MCBUS_TEST_SEED"); env && *env) {
      s = std::strtoull(env, nullptr, 0);
    } else {
      s = std::random_device{}();
      s = (s << 32) ^ std::random_device{}();
    }
    std::cout << "[ seed     ] MCBUS_TEST_SEED=" << s << " (set it to replay this run)" << std::endl;
    return s;
  }();
  return seed;
}

class rng {
 public:
  explicit rng(std::uint64_t seed) : gen_(seed) {}
  std::uint64_t bits() { return gen_(); }
  // Uniform in [lo, hi].
  std::uint64_t range(std::uint64_t lo, std::uint64_t hi) { return lo + gen_() % (hi - lo + 1); }
  bool chance(unsigned percent) { return range(0, 99) < percent; }
  template <class C>
  auto pick(const C& c) -> decltype(c[0]) {
    return c[range(0, c.size() - 1)];
  }

 private:
  std::mt19937_64 gen_;
};

// ---- random types and values --------------------------------------------------------------

struct type_limits {
  unsigned max_depth = 6;  // containers in the signature
  unsigned max_struct_fields = 4;
  unsigned max_elements = 4;
  unsigned max_variant_depth = 3;  // variants nested inside values
  bool allow_fd = true;
};

// A random single complete type. arrays/structs count the signature's nesting so that the result
// stays within the specification's limits whatever max_depth says.
inline std::string random_type(rng& r, const type_limits& lim, unsigned depth = 0, unsigned arrays = 0,
                               unsigned structs = 0) {
  static const std::string basics = "ybnqiuxtdsog";
  const bool may_nest = depth < lim.max_depth;
  const unsigned choice = static_cast<unsigned>(r.range(0, may_nest ? 19 : 12));
  if (choice < 12) {
    if (lim.allow_fd && r.chance(4)) return "h";
    return std::string(1, basics[choice]);
  }
  if (choice == 12) return "v";
  if (choice <= 15 && arrays < 32) {
    if (r.chance(30)) {
      std::string key(1, basics[r.range(0, basics.size() - 1)]);
      return "a{" + key + random_type(r, lim, depth + 1, arrays + 1, structs) + "}";
    }
    return "a" + random_type(r, lim, depth + 1, arrays + 1, structs);
  }
  if (structs < 32) {
    std::string s = "(";
    const unsigned n = static_cast<unsigned>(r.range(1, lim.max_struct_fields));
    for (unsigned i = 0; i < n; ++i) s += random_type(r, lim, depth + 1, arrays, structs + 1);
    return s + ")";
  }
  return "i";
}

inline std::string random_string(rng& r, std::size_t max_len = 12) {
  static const char* const pieces[] = {
      "a", "Z", "0", " ", "_", "-", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\x7f", "\x01", "/", "."};
  std::string s;
  const std::size_t n = r.range(0, max_len);
  for (std::size_t i = 0; i < n; ++i) s += pieces[r.range(0, std::size(pieces) - 1)];
  return s;
}

inline std::string random_path(rng& r) {
  if (r.chance(20)) return "/";
  std::string p;
  const std::size_t n = r.range(1, 4);
  static const std::string chars = "abcXYZ019_";
  for (std::size_t i = 0; i < n; ++i) {
    p += '/';
    const std::size_t len = r.range(1, 6);
    for (std::size_t k = 0; k < len; ++k) p += chars[r.range(0, chars.size() - 1)];
  }
  return p;
}

inline double random_double(rng& r) {
  switch (r.range(0, 3)) {
    case 0: return static_cast<double>(static_cast<std::int64_t>(r.bits())) / 1024.0;
    case 1: return 0.0;
    case 2: return -1.5e300;
    default: {
      // Any bit pattern but NaN, so that values compare equal after a round trip.
      double d = std::bit_cast<double>(r.bits());
      return d != d ? 1.0 : d;
    }
  }
}

// A random value of a single complete type.
inline mcbus::value random_value(rng& r, std::string_view type, const type_limits& lim, unsigned variant_depth = 0);

inline std::vector<mcbus::value> random_values(rng& r, std::string_view sig, const type_limits& lim,
                                               unsigned variant_depth = 0) {
  std::vector<mcbus::value> out;
  for (std::size_t i = 0; i < sig.size();) {
    const std::size_t len = mcbus::complete_type_length(sig, i);
    out.push_back(random_value(r, sig.substr(i, len), lim, variant_depth));
    i += len;
  }
  return out;
}

inline mcbus::value random_value(rng& r, std::string_view type, const type_limits& lim, unsigned variant_depth) {
  using mcbus::value;
  switch (type[0]) {
    case 'y': return value::byte(static_cast<std::uint8_t>(r.bits()));
    case 'b': return value::boolean(r.chance(50));
    case 'n': return value::int16(static_cast<std::int16_t>(r.bits()));
    case 'q': return value::uint16(static_cast<std::uint16_t>(r.bits()));
    case 'i': return value::int32(static_cast<std::int32_t>(r.bits()));
    case 'u': return value::uint32(static_cast<std::uint32_t>(r.bits()));
    case 'x': return value::int64(static_cast<std::int64_t>(r.bits()));
    case 't': return value::uint64(r.bits());
    case 'd': return value::double_(random_double(r));
    case 'h': return value::fd_index(static_cast<std::uint32_t>(r.range(0, 3)));
    case 's': return value::string(random_string(r));
    case 'o': return *value::object_path(random_path(r));
    case 'g': {
      type_limits small = lim;
      small.max_depth = 2;
      std::string sig;
      const std::size_t n = r.range(0, 3);
      for (std::size_t i = 0; i < n; ++i) sig += random_type(r, small);
      return *value::signature(sig);
    }
    case 'v': {
      type_limits inner = lim;
      inner.max_depth = lim.max_depth > 2 ? 2 : lim.max_depth;
      const std::string t =
          variant_depth + 1 < lim.max_variant_depth ? random_type(r, inner) : std::string(1, "ysu"[r.range(0, 2)]);
      return value::variant(random_value(r, t, lim, variant_depth + 1));
    }
    case 'a': {
      const std::string_view elem = type.substr(1, mcbus::complete_type_length(type, 1));
      std::vector<value> items;
      const std::size_t n = r.chance(20) ? 0 : r.range(1, lim.max_elements);
      for (std::size_t i = 0; i < n; ++i) items.push_back(random_value(r, elem, lim, variant_depth));
      return *value::array(elem, std::move(items));
    }
    case '{': {
      const std::string_view inner = type.substr(1, type.size() - 2);
      const std::size_t klen = mcbus::complete_type_length(inner, 0);
      auto k = random_value(r, inner.substr(0, klen), lim, variant_depth);
      auto v = random_value(r, inner.substr(klen), lim, variant_depth);
      return *value::dict_entry(std::move(k), std::move(v));
    }
    case '(': {
      auto fields = random_values(r, type.substr(1, type.size() - 2), lim, variant_depth);
      return *value::structure(std::move(fields));
    }
    default: ADD_FAILURE() << "random_value: bad type " << type; return {};
  }
}

}  // namespace wire_test
