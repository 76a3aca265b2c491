// Round trips over random types and values: encode, decode (validating), encode again gives the
// same bytes, in both byte orders and at any base offset; via mcbus::value and via typed C++
// values. The seed is printed; MCBUS_TEST_SEED replays a run.
#include <mcbus/wire/message.hpp>
#include <mcbus/wire/value.hpp>

#include <gtest/gtest.h>

#include <array>
#include <map>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "test_support.hpp"
#include "wire_test_util.hpp"

using namespace mcbus;
using wire_test::bytes;
using wire_test::rng;

namespace {

byte_order random_order(rng& r) { return r.chance(50) ? byte_order::little : byte_order::big; }

bytes encode_values(const std::vector<value>& vs, byte_order order, std::size_t base) {
  detail::byte_buffer buf;
  writer w(buf, order, base);
  for (const auto& v : vs) v.write(w);
  EXPECT_FALSE(w.err()) << w.err().message();
  return wire_test::to_vector(buf);
}

TEST(RoundTrip, RandomSignaturesAndValues) {
  rng r(wire_test::test_seed());
  int deep = 0;
  for (int iter = 0; iter < 1500; ++iter) {
    wire_test::type_limits lim;
    lim.max_depth = static_cast<unsigned>(r.range(1, iter % 10 == 0 ? 40 : 6));
    lim.max_elements = lim.max_depth > 8 ? 1 : 4;
    lim.max_struct_fields = lim.max_depth > 8 ? 2 : 4;
    std::string sig;
    const std::size_t n = r.range(1, 4);
    for (std::size_t i = 0; i < n; ++i) {
      const std::string t = wire_test::random_type(r, lim);
      if (sig.size() + t.size() > max_signature_length) break;
      sig += t;
    }
    if (sig.empty()) sig = "i";
    ASSERT_TRUE(is_valid_signature(sig)) << sig << ": " << validate_signature(sig).message();
    if (lim.max_depth > 8) ++deep;
    SCOPED_TRACE("iteration " + std::to_string(iter) + " signature " + sig);

    const auto values = wire_test::random_values(r, sig, lim);
    const byte_order order = random_order(r);
    const std::size_t base = r.chance(50) ? 0 : r.range(0, 15);
    detail::byte_buffer buf;
    writer w(buf, order, base);
    for (const auto& v : values) v.write(w);
    if (w.err()) {
      // Only the 64-level limit can stop a valid signature's values (variants add levels).
      ASSERT_EQ(w.err().code(), errc::nesting_too_deep) << w.err().message();
      continue;
    }
    const bytes first = wire_test::to_vector(buf);

    // Decode with full validation; everything is consumed.
    reader check(first, order, base, reader_options{.check_fd_indexes = false});
    check.skip_all(sig);
    ASSERT_FALSE(check.err()) << check.err().message() << "\n" << mcbus_test::to_hex(first);
    ASSERT_TRUE(check.at_end());
    reader rd(first, order, base, reader_options{.check_fd_indexes = false});
    const auto decoded = value::read_all(rd, sig);
    ASSERT_FALSE(rd.err()) << rd.err().message();
    ASSERT_EQ(decoded, values);
    EXPECT_EQ(encode_values(decoded, order, base), first);

    // The other byte order holds the same values, and has the same length.
    const byte_order other = order == byte_order::little ? byte_order::big : byte_order::little;
    const bytes swapped = encode_values(decoded, other, base);
    EXPECT_EQ(swapped.size(), first.size());
    reader rs(swapped, other, base, reader_options{.check_fd_indexes = false});
    EXPECT_EQ(value::read_all(rs, sig), values);
    EXPECT_FALSE(rs.err()) << rs.err().message();
  }
  EXPECT_GT(deep, 50);
}

// Whole messages: build from a random header and body, parse, rebuild from what was parsed: the
// bytes are identical.
TEST(RoundTrip, RandomMessages) {
  rng r(wire_test::test_seed() ^ 0x9e3779b97f4a7c15ULL);
  for (int iter = 0; iter < 500; ++iter) {
    SCOPED_TRACE("iteration " + std::to_string(iter));
    message_header h;
    h.order = random_order(r);
    h.raw_type = static_cast<std::uint8_t>(r.range(1, 4));
    h.type = static_cast<message_type>(h.raw_type);
    h.flags = static_cast<std::uint8_t>(r.range(0, 7));
    h.serial = static_cast<std::uint32_t>(r.range(1, 0xffffffff));
    const std::string path = wire_test::random_path(r);
    h.path = path;
    h.interface = "org.example.Iface";
    h.member = "Member_1";
    h.error_name = "org.example.Error.Bad";
    h.destination = r.chance(50) ? std::string_view(":1.42") : std::string_view("org.example.Dest");
    h.sender = ":1.7";
    h.reply_serial = static_cast<std::uint32_t>(r.range(1, 100));
    auto set = [&](header_field f) { h.present = static_cast<std::uint16_t>(h.present | (1u << unsigned(f))); };
    switch (h.type) {
      case message_type::signal: set(header_field::interface); [[fallthrough]];
      case message_type::method_call:
        set(header_field::path);
        set(header_field::member);
        if (r.chance(50)) set(header_field::interface);
        break;
      case message_type::error: set(header_field::error_name); [[fallthrough]];
      default: set(header_field::reply_serial); break;
    }
    if (r.chance(50)) set(header_field::destination);
    if (r.chance(50)) set(header_field::sender);

    wire_test::type_limits lim;
    lim.allow_fd = false;
    std::string sig;
    const std::size_t n = r.range(0, 3);
    for (std::size_t i = 0; i < n; ++i) sig += wire_test::random_type(r, lim);
    const auto values = wire_test::random_values(r, sig, lim);

    message m = message::from_header(h);
    m.append_with(sig, [&](writer& w) {
      for (const auto& v : values) v.write(w);
    });
    auto b1 = m.to_bytes();
    ASSERT_TRUE(b1) << b1.error().message();
    auto v1 = message_view::parse(*b1);
    ASSERT_TRUE(v1) << v1.error().message() << "\n" << mcbus_test::to_hex(*b1);
    EXPECT_EQ(v1->order(), h.order);
    EXPECT_EQ(v1->serial(), h.serial);
    EXPECT_EQ(v1->header().present & ~(3u << 8), h.present);
    EXPECT_EQ(v1->body_signature(), sig);
    reader body = v1->body();
    const auto decoded = value::read_all(body, sig);
    ASSERT_EQ(decoded, values);

    message again = message::from_header(v1->header());
    again.append_with(sig, [&](writer& w) {
      for (const auto& v : decoded) v.write(w);
    });
    auto b2 = again.to_bytes();
    ASSERT_TRUE(b2);
    EXPECT_EQ(*b2, *b1);
  }
}

// Whatever parse() accepts can be re-encoded (as mcbus-msg convert does) into a message that parses
// to the same header and values, in either byte order; and parsing the header and body apart gives
// the same verdict as parsing them together. Inputs: random messages with random bytes changed.
TEST(RoundTrip, AcceptedCorruptMessagesReencode) {
  rng r(wire_test::test_seed() ^ 0xfeedbeefULL);
  int accepted = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    SCOPED_TRACE("iteration " + std::to_string(iter));
    message m = message::signal(object_path_view::from(wire_test::random_path(r)).value(), "org.example.I", "S",
                                random_order(r));
    wire_test::type_limits lim;
    lim.max_depth = static_cast<unsigned>(r.range(1, 6));
    std::string sig;
    for (std::size_t i = 0, n = r.range(0, 3); i < n; ++i) sig += wire_test::random_type(r, lim);
    const auto values = wire_test::random_values(r, sig, lim);
    m.append_with(sig, [&](writer& w) {
      for (const auto& v : values) v.write(w);
    });
    auto built = m.to_bytes();
    ASSERT_TRUE(built) << built.error().message();
    bytes b = std::move(*built);
    for (std::size_t k = 0, n = r.range(1, 2); k < n; ++k) {
      b[r.range(0, b.size() - 1)] = static_cast<std::byte>(r.chance(50) ? r.range(0, 3) : r.bits());
    }
    const parse_options opts{.check_fd_indexes = r.chance(50)};
    const auto whole = message_view::parse(b, opts);
    if (auto len = message_length(b); len && *len == b.size()) {
      const std::size_t fields = detail::load<std::uint32_t>(reinterpret_cast<const unsigned char*>(b.data()) + 12,
                                                             static_cast<byte_order>(b[0]) != native_byte_order);
      const std::size_t header_len = detail::align_up(16 + fields, 8);
      const auto split = message_view::parse(std::span(b).first(header_len), std::span(b).subspan(header_len), opts);
      ASSERT_EQ(static_cast<bool>(split), static_cast<bool>(whole));
      if (!split) {
        EXPECT_EQ(split.error().code(), whole.error().code());
        EXPECT_EQ(split.error().offset(), whole.error().offset());
      }
    }
    if (!whole) continue;
    ++accepted;
    const std::string body_sig(whole->body_signature().str());
    reader rd = whole->body();
    const auto decoded = value::read_all(rd, body_sig);
    ASSERT_FALSE(rd.err()) << rd.err().message();
    for (byte_order o : {byte_order::little, byte_order::big}) {
      message_header h = whole->header();
      h.order = o;
      message again = message::from_header(h);
      again.append_with(body_sig, [&](writer& w) {
        for (const auto& v : decoded) v.write(w);
      });
      auto b2 = again.to_bytes();
      ASSERT_TRUE(b2) << b2.error().message() << "\n" << mcbus_test::to_hex(b);
      auto v2 = message_view::parse(*b2, {.check_fd_indexes = false});
      ASSERT_TRUE(v2) << v2.error().message();
      EXPECT_EQ(v2->header().raw_type, whole->header().raw_type);
      EXPECT_EQ(v2->flags(), whole->flags());
      EXPECT_EQ(v2->serial(), whole->serial());
      EXPECT_EQ(v2->header().path, whole->header().path);
      EXPECT_EQ(v2->header().member, whole->header().member);
      EXPECT_EQ(v2->body_signature(), whole->body_signature());
      reader rd2 = v2->body();
      EXPECT_EQ(value::read_all(rd2, body_sig), decoded);
    }
  }
  EXPECT_GT(accepted, 300);
}

// ---- typed C++ values -----------------------------------------------------------------------

struct sample {
  std::string name;
  std::vector<std::uint16_t> counts;
  std::map<std::uint8_t, std::tuple<double, bool>> table;
  friend bool operator==(const sample&, const sample&) = default;
};

}  // namespace

MCBUS_STRUCT(sample, name, counts, table);

namespace {

template <class T>
struct gen;

template <class T>
T random_typed(rng& r) {
  return gen<T>::make(r);
}

template <class T>
requires detail::plain_integer<T>
struct gen<T> {
  static T make(rng& r) { return static_cast<T>(r.bits()); }
};
template <>
struct gen<bool> {
  static bool make(rng& r) { return r.chance(50); }
};
template <>
struct gen<double> {
  static double make(rng& r) { return wire_test::random_double(r); }
};
template <>
struct gen<std::string> {
  static std::string make(rng& r) { return wire_test::random_string(r); }
};
template <>
struct gen<object_path> {
  static object_path make(rng& r) { return object_path::from(wire_test::random_path(r)).value(); }
};
template <>
struct gen<signature> {
  static signature make(rng& r) {
    wire_test::type_limits lim;
    lim.max_depth = 3;
    return signature::from(wire_test::random_type(r, lim)).value();
  }
};
template <>
struct gen<variant> {
  static variant make(rng& r) {
    wire_test::type_limits lim;
    lim.max_depth = 3;
    lim.allow_fd = false;
    return variant(wire_test::random_value(r, wire_test::random_type(r, lim), lim));
  }
};
template <class T>
struct gen<std::vector<T>> {
  static std::vector<T> make(rng& r) {
    std::vector<T> v;
    const std::size_t n = r.range(0, 5);
    for (std::size_t i = 0; i < n; ++i) v.push_back(random_typed<T>(r));
    return v;
  }
};
template <class T, std::size_t N>
struct gen<std::array<T, N>> {
  static std::array<T, N> make(rng& r) {
    std::array<T, N> a{};
    for (auto& e : a) e = random_typed<T>(r);
    return a;
  }
};
template <class K, class V>
struct gen<std::map<K, V>> {
  static std::map<K, V> make(rng& r) {
    std::map<K, V> m;
    const std::size_t n = r.range(0, 4);
    for (std::size_t i = 0; i < n; ++i) m.insert_or_assign(random_typed<K>(r), random_typed<V>(r));
    return m;
  }
};
template <class K, class V>
struct gen<std::unordered_map<K, V>> {
  static std::unordered_map<K, V> make(rng& r) {
    std::unordered_map<K, V> m;
    const std::size_t n = r.range(0, 4);
    for (std::size_t i = 0; i < n; ++i) m.insert_or_assign(random_typed<K>(r), random_typed<V>(r));
    return m;
  }
};
template <class K, class V>
struct gen<dict_entry<K, V>> {
  static dict_entry<K, V> make(rng& r) { return {random_typed<K>(r), random_typed<V>(r)}; }
};
template <class... Ts>
struct gen<std::tuple<Ts...>> {
  static std::tuple<Ts...> make(rng& r) { return std::tuple<Ts...>{random_typed<Ts>(r)...}; }
};
template <class A, class B>
struct gen<std::pair<A, B>> {
  static std::pair<A, B> make(rng& r) {
    A a = random_typed<A>(r);
    return {std::move(a), random_typed<B>(r)};
  }
};
template <class... Ts>
struct gen<std::variant<Ts...>> {
  template <std::size_t I>
  static std::variant<Ts...> pick(rng& r, std::size_t which) {
    if constexpr (I + 1 == sizeof...(Ts)) {
      return std::variant<Ts...>(std::in_place_index<I>,
                                 random_typed<std::variant_alternative_t<I, std::variant<Ts...>>>(r));
    } else {
      if (which == I) {
        return std::variant<Ts...>(std::in_place_index<I>,
                                   random_typed<std::variant_alternative_t<I, std::variant<Ts...>>>(r));
      }
      return pick<I + 1>(r, which);
    }
  }
  static std::variant<Ts...> make(rng& r) { return pick<0>(r, r.range(0, sizeof...(Ts) - 1)); }
};
template <>
struct gen<sample> {
  static sample make(rng& r) {
    return {random_typed<std::string>(r), random_typed<std::vector<std::uint16_t>>(r),
            random_typed<std::map<std::uint8_t, std::tuple<double, bool>>>(r)};
  }
};

template <class T>
struct is_unordered : std::false_type {};
template <class K, class V>
struct is_unordered<std::unordered_map<K, V>> : std::true_type {};

template <class T>
void typed_round_trip(rng& r, int iterations) {
  SCOPED_TRACE(std::string(signature_of<T>));
  for (int i = 0; i < iterations; ++i) {
    const T original = random_typed<T>(r);
    const byte_order order = random_order(r);
    const std::size_t base = r.range(0, 9);
    detail::byte_buffer buf;
    writer w(buf, order, base);
    w.write(original);
    ASSERT_FALSE(w.err()) << w.err().message();
    const bytes first = wire_test::to_vector(buf);
    // Typed decode gives the original back.
    reader rt(first, order, base);
    T back{};
    rt.read(back);
    ASSERT_FALSE(rt.err()) << rt.err().message() << "\n" << mcbus_test::to_hex(first);
    EXPECT_TRUE(rt.at_end());
    EXPECT_TRUE(back == original);
    // The dynamic tree re-encodes to the same bytes, and so does the typed value read back.
    reader rv(first, order, base);
    const value tree = value::read(rv, signature_of<T>);
    ASSERT_FALSE(rv.err()) << rv.err().message();
    EXPECT_EQ(tree.type(), signature_of<T>);
    detail::byte_buffer again;
    writer w2(again, order, base);
    tree.write(w2);
    ASSERT_FALSE(w2.err()) << w2.err().message();
    EXPECT_EQ(mcbus_test::to_hex(again.bytes()), mcbus_test::to_hex(first));
    detail::byte_buffer typed_again;
    writer w3(typed_again, order, base);
    w3.write(back);
    ASSERT_FALSE(w3.err()) << w3.err().message();
    // An unordered_map read back may iterate in another order: same map, other bytes.
    if constexpr (!is_unordered<T>::value) {
      EXPECT_EQ(mcbus_test::to_hex(typed_again.bytes()), mcbus_test::to_hex(first));
    }
    // value::to converts back to the C++ type.
    auto converted = tree.to<T>();
    ASSERT_TRUE(converted) << converted.error().message();
    EXPECT_TRUE(*converted == original);
  }
}

TEST(RoundTrip, TypedValues) {
  rng r(wire_test::test_seed() ^ 0x1234567ULL);
  constexpr int n = 150;
  typed_round_trip<std::uint8_t>(r, n);
  typed_round_trip<bool>(r, n);
  typed_round_trip<std::int16_t>(r, n);
  typed_round_trip<std::uint16_t>(r, n);
  typed_round_trip<std::int32_t>(r, n);
  typed_round_trip<std::uint32_t>(r, n);
  typed_round_trip<std::int64_t>(r, n);
  typed_round_trip<std::uint64_t>(r, n);
  typed_round_trip<double>(r, n);
  typed_round_trip<std::string>(r, n);
  typed_round_trip<object_path>(r, n);
  typed_round_trip<signature>(r, n);
  typed_round_trip<variant>(r, n);
  typed_round_trip<std::vector<std::int32_t>>(r, n);
  typed_round_trip<std::vector<bool>>(r, n);
  typed_round_trip<std::vector<std::vector<std::string>>>(r, n);
  typed_round_trip<std::array<double, 3>>(r, n);
  typed_round_trip<std::map<std::string, variant>>(r, n);
  typed_round_trip<std::unordered_map<std::int64_t, std::vector<std::uint8_t>>>(r, n);
  typed_round_trip<std::vector<dict_entry<object_path, std::int16_t>>>(r, n);
  typed_round_trip<std::tuple<std::uint8_t, std::tuple<std::string, double>, std::vector<bool>>>(r, n);
  typed_round_trip<std::pair<signature, std::uint64_t>>(r, n);
  typed_round_trip<std::variant<std::int32_t, std::string, std::vector<double>>>(r, n);
  typed_round_trip<sample>(r, n);
  typed_round_trip<std::vector<sample>>(r, n);
}

}  // namespace
