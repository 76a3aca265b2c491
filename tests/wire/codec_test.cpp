// The writer and the reader: exact bytes in both byte orders, alignment counted from the message
// start (base offsets), every value rule with its error code and byte offset, sticky errors, and
// zero-copy access.
#include <mcbus/wire/reader.hpp>
#include <mcbus/wire/value.hpp>
#include <mcbus/wire/writer.hpp>

#include <gtest/gtest.h>

#include <sys/mman.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <map>
#include <span>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "test_support.hpp"
#include "wire_test_util.hpp"

using namespace mcbus;
using wire_test::bytes;

namespace {

constexpr byte_order both_orders[] = {byte_order::little, byte_order::big};

std::string order_name(byte_order o) { return o == byte_order::little ? "little" : "big"; }

template <class... Ts>
bytes encode(byte_order order, std::size_t base, const Ts&... vs) {
  detail::byte_buffer buf;
  writer w(buf, order, base);
  w.write_all(vs...);
  EXPECT_FALSE(w.err()) << w.err().message();
  return wire_test::to_vector(buf);
}

bytes hex(std::string_view h) { return mcbus_test::from_hex(h); }
std::string hex(const bytes& b) { return mcbus_test::to_hex(b); }
// Hex as written in the tests (spaces between fields) in the form hex() prints.
std::string canon(std::string_view h) { return hex(hex(h)); }

// Expects reading `sig` from `data` to fail with `code` at message offset `offset`.
void expect_read_error(const bytes& data, std::string_view sig, errc code, std::size_t offset,
                       byte_order order = byte_order::little, std::size_t base = 0, reader_options opts = {}) {
  reader r(data, order, base, opts);
  r.skip_all(sig);
  EXPECT_EQ(r.err().code(), code) << sig << " " << hex(data) << ": " << r.err().message();
  EXPECT_EQ(r.err().offset(), offset) << sig << " " << hex(data) << ": " << r.err().message();
  // The dynamic reader must agree with the skipping one.
  reader r2(data, order, base, opts);
  (void)value::read_all(r2, sig);
  EXPECT_EQ(r2.err().code(), code) << "value::read_all " << sig;
  EXPECT_EQ(r2.err().offset(), offset) << "value::read_all " << sig;
}

TEST(Writer, BasicValuesLittleAndBigEndian) {
  struct vec {
    bytes le, be;
  };
  auto both = [](auto v) { return vec{encode(byte_order::little, 0, v), encode(byte_order::big, 0, v)}; };
  auto check = [](const vec& got, std::string_view le, std::string_view be) {
    EXPECT_EQ(hex(got.le), le);
    EXPECT_EQ(hex(got.be), be);
  };
  check(both(std::uint8_t{0xab}), "ab", "ab");
  check(both(true), "01000000", "00000001");
  check(both(std::int16_t{-2}), "feff", "fffe");
  check(both(std::uint16_t{0x1234}), "3412", "1234");
  check(both(std::int32_t{-1}), "ffffffff", "ffffffff");
  check(both(std::uint32_t{0x01020304}), "04030201", "01020304");
  check(both(std::int64_t{0x0102030405060708}), "0807060504030201", "0102030405060708");
  check(both(std::uint64_t{1}), "0100000000000000", "0000000000000001");
  check(both(1.0), "000000000000f03f", "3ff0000000000000");
  check(both(std::string("ab")), "02000000616200", "00000002616200");
}

TEST(Writer, ExactContainerBytes) {
  // a(yv) with one entry, as in a header field: array length, padding to 8, the struct, the
  // variant's signature, padding to 4, the string.
  const auto fields = std::vector<std::tuple<std::uint8_t, std::variant<std::string>>>{{3, std::string("M")}};
  EXPECT_EQ(hex(encode(byte_order::little, 0, fields)), canon("0a000000 00000000 03 017300 01000000 4d00"));
  EXPECT_EQ(hex(encode(byte_order::big, 0, fields)), canon("0000000a 00000000 03 017300 00000001 4d00"));
  // a{sv} with an int32 inside the variant.
  const std::map<std::string, std::variant<std::int32_t>> dict{{"k", 5}};
  EXPECT_EQ(hex(encode(byte_order::little, 0, dict)), canon("10000000 00000000 01000000 6b00 016900 000000 05000000"));
}

TEST(Writer, AlignmentCountsFromTheMessageStart) {
  for (byte_order o : both_orders) {
    SCOPED_TRACE(order_name(o));
    // At base offset 1, a uint32 needs three bytes of padding; at 4 none; at 6 two.
    EXPECT_EQ(encode(o, 1, std::uint32_t{0}).size(), 7u);
    EXPECT_EQ(encode(o, 4, std::uint32_t{0}).size(), 4u);
    EXPECT_EQ(encode(o, 6, std::uint32_t{0}).size(), 6u);
    // A struct at base offset 1 pads to 8; a double inside it needs no more.
    EXPECT_EQ(encode(o, 1, std::tuple<double>{0.0}).size(), 15u);
    // An empty array of structs still pads to the element alignment.
    EXPECT_EQ(hex(encode(o, 5, std::vector<std::tuple<std::uint8_t>>{})), canon("000000 00000000 00000000"));
    // y then q at base 1: y lands at 1, q at 2.
    EXPECT_EQ(encode(o, 1, std::uint8_t{1}, std::uint16_t{2}).size(), 3u);
    // Signatures and variants are 1-aligned.
    EXPECT_EQ(encode(o, 3, signature::from("i").value()).size(), 3u);
  }
  // The padding itself is zero and the value lands on the aligned message offset.
  const bytes b = encode(byte_order::big, 1, std::uint8_t{0xff}, std::uint64_t{0x1122334455667788});
  EXPECT_EQ(hex(b), canon("ff000000000000 1122334455667788"));
}

TEST(Writer, WritesAtBaseOffsetOneAndReadsBack) {
  const auto v = std::make_tuple(std::uint8_t{7}, std::string("x"), std::vector<std::int64_t>{1, -2},
                                 std::map<std::string, std::uint16_t>{{"k", 3}});
  for (byte_order o : both_orders) {
    const bytes b = encode(o, 1, v);
    reader r(b, o, 1);
    std::remove_const_t<decltype(v)> out;
    r.read(out);
    EXPECT_FALSE(r.err()) << r.err().message();
    EXPECT_TRUE(r.at_end());
    EXPECT_EQ(out, v);
    // Read at the wrong base, the padding no longer lines up with the data.
    reader wrong(b, o, 0);
    std::remove_const_t<decltype(v)> junk;
    wrong.read(junk);
    EXPECT_TRUE(wrong.err());
  }
}

TEST(Writer, RefusesInvalidStrings) {
  detail::byte_buffer buf;
  writer w(buf, byte_order::little, 1);
  w.write(std::string("ok"));
  const std::size_t before = buf.size();
  // "ok" took message offsets 4..10; the next length is at 12, its data at 16, the bad byte at 17.
  w.write(std::string("a\xff"));
  EXPECT_EQ(w.err().code(), errc::bad_utf8);
  EXPECT_EQ(w.err().offset(), 17u) << w.err().message();
  EXPECT_EQ(buf.size(), before);  // nothing written for the bad value

  detail::byte_buffer buf2;
  writer w2(buf2);
  w2.write(std::string_view("a\0b", 3));
  EXPECT_EQ(w2.err().code(), errc::string_has_nul);
  EXPECT_EQ(w2.err().offset(), 5u);

  detail::byte_buffer buf3;
  writer w3(buf3);
  w3.put_object_path("/a/");
  EXPECT_EQ(w3.err().code(), errc::bad_object_path);
  EXPECT_EQ(w3.err().offset(), 6u);  // the trailing '/' at data offset 4 + 2

  detail::byte_buffer buf4;
  writer w4(buf4);
  w4.put_signature("a{vs}");
  EXPECT_EQ(w4.err().code(), errc::bad_signature);
  EXPECT_EQ(w4.err().offset(), 3u);  // the 'v' at data offset 1 + 2

  detail::byte_buffer buf5;
  writer w5(buf5);
  w5.open_variant("ii");
  EXPECT_EQ(w5.err().code(), errc::bad_signature);
}

TEST(Writer, EmptyViews) {
  // Default-constructed views hold nullptr; writing them must not pass it to memcpy (UBSan checks).
  // "" at 0..4, signature "" at 5..6, nullptr as "" at 8..12, then a one-string array at 16.
  for (byte_order o : both_orders) {
    const bytes b = encode(o, 0, std::string_view{}, signature_view{}, static_cast<const char*>(nullptr),
                           std::vector<std::string_view>{std::string_view{}});
    EXPECT_EQ(hex(b), o == byte_order::little ? canon("00000000 00 0000 00 00000000 00 000000 05000000 00000000 00")
                                              : canon("00000000 00 0000 00 00000000 00 000000 00000005 00000000 00"));
  }
  // An empty object path is not a path: a default object_path_view cannot be written.
  detail::byte_buffer buf;
  writer w(buf, byte_order::little, 2);
  w.write(object_path_view{});
  EXPECT_EQ(w.err().code(), errc::bad_object_path);
  EXPECT_EQ(w.err().offset(), 2u);
  EXPECT_EQ(hex(encode(byte_order::little, 0, object_path{})), canon("01000000 2f00"));  // "/" by default
}

TEST(Writer, ErrorsAreSticky) {
  detail::byte_buffer buf;
  writer w(buf);
  w.write(std::string("\xc0\x80"));  // overlong NUL
  ASSERT_EQ(w.err().code(), errc::bad_utf8);
  const error first = w.err();
  const std::size_t size = buf.size();
  w.write(std::uint32_t{1});
  w.write(std::string("fine"));
  w.write(std::vector<std::int32_t>{1, 2});
  w.put_signature("(");
  EXPECT_EQ(buf.size(), size);
  EXPECT_EQ(w.err().code(), first.code());
  EXPECT_EQ(w.err().offset(), first.offset());
}

TEST(Writer, NestingLimitCountsVariants) {
  auto nest = [](unsigned variants) {
    detail::byte_buffer buf;
    writer w(buf);
    for (unsigned i = 0; i < variants; ++i) w.open_variant("v");
    w.open_variant("y");
    w.put_byte(1);
    w.close_variant();
    for (unsigned i = 0; i < variants; ++i) w.close_variant();
    return w.err();
  };
  EXPECT_FALSE(nest(63));  // 64 variants in all
  const error e = nest(64);
  EXPECT_EQ(e.code(), errc::nesting_too_deep);
  EXPECT_EQ(e.offset(), 64u * 3);  // the 65th variant, after 64 signatures of 3 bytes
}

TEST(Writer, EmptyArraysDoNotCountTowardNesting) {
  // What the reader (and libdbus) accept must be writable again: an empty array of containers
  // adds no nesting level.
  detail::byte_buffer buf;
  writer w(buf);
  for (int i = 0; i < 64; ++i) w.open_variant("v");
  const auto m = w.open_array("(i)");
  w.close_array(m);
  EXPECT_FALSE(w.err()) << w.err().message();
  const auto m2 = w.open_array("s");
  w.put_string("x");
  w.close_array(m2);
  EXPECT_EQ(w.err().code(), errc::nesting_too_deep);
  EXPECT_EQ(w.err().offset(), 200u);  // the second array's length: 64 * 3, then 4 + 4 for the first
}

// ---- reader ---------------------------------------------------------------------------------

TEST(Reader, BasicValuesBothOrders) {
  for (byte_order o : both_orders) {
    SCOPED_TRACE(order_name(o));
    const bytes b = encode(o, 0, std::uint8_t{1}, true, std::int16_t{-3}, std::uint16_t{4}, std::int32_t{-5},
                           std::uint32_t{6}, std::int64_t{-7}, std::uint64_t{8}, 9.5, std::string("ten"),
                           object_path::from("/el/even").value(), signature::from("a{sv}").value());
    reader r(b, o);
    EXPECT_EQ(r.get<std::uint8_t>(), 1);
    EXPECT_EQ(r.get<bool>(), true);
    EXPECT_EQ(r.get<std::int16_t>(), -3);
    EXPECT_EQ(r.get<std::uint16_t>(), 4);
    EXPECT_EQ(r.get<std::int32_t>(), -5);
    EXPECT_EQ(r.get<std::uint32_t>(), 6u);
    EXPECT_EQ(r.get<std::int64_t>(), -7);
    EXPECT_EQ(r.get<std::uint64_t>(), 8u);
    EXPECT_EQ(r.get<double>(), 9.5);
    EXPECT_EQ(r.get<std::string>(), "ten");
    EXPECT_EQ(r.get<object_path>().str(), "/el/even");
    EXPECT_EQ(r.get<signature>().str(), "a{sv}");
    EXPECT_FALSE(r.err()) << r.err().message();
    EXPECT_TRUE(r.at_end());
  }
}

TEST(Reader, PaddingMustBeZero) {
  // y then u: three bytes of padding at 1..3; a non-zero byte at 2 is reported at 2.
  bytes b = hex("01 000100 05000000");
  expect_read_error(b, "yu", errc::bad_padding, 2);
  // At base offset 5 the padding before the u is 5..7; the message offset is reported.
  expect_read_error(hex("01 0009 05000000"), "yu", errc::bad_padding, 7, byte_order::little, 5);
  // Padding between an array length and its 8-aligned elements.
  expect_read_error(hex("08000000 00000001 0100000000000000"), "at", errc::bad_padding, 7);
  // Padding before a struct, and inside a variant before its value.
  expect_read_error(hex("01 00000000000002 0300000000000000"), "y(t)", errc::bad_padding, 7);
  expect_read_error(hex("017400 0000ff0000 0100000000000000"), "v", errc::bad_padding, 5);
  // The end of the data inside padding is truncation, not a padding error.
  expect_read_error(hex("01 00"), "yu", errc::truncated, 1);
}

TEST(Reader, BooleansAreZeroOrOne) {
  expect_read_error(hex("02000000"), "b", errc::bad_boolean, 0);
  expect_read_error(hex("00000000 00000100"), "bb", errc::bad_boolean, 4, byte_order::big);
  // Inside an array of booleans, the bad element's offset.
  expect_read_error(hex("0c000000 01000000 00000000 ffffffff"), "ab", errc::bad_boolean, 12);
  // At base offset 3 the boolean starts at message offset 4.
  expect_read_error(hex("00 03000000"), "b", errc::bad_boolean, 4, byte_order::little, 3);
}

TEST(Reader, StringsAreUtf8WithoutNul) {
  expect_read_error(hex("03000000 61ff62 00"), "s", errc::bad_utf8, 5);
  expect_read_error(hex("03000000 610062 00"), "s", errc::string_has_nul, 5);
  expect_read_error(hex("03000000 616263 01"), "s", errc::string_not_terminated, 7);
  expect_read_error(hex("03000000 6162"), "s", errc::truncated, 4);
  expect_read_error(hex("ffffffff 6162"), "s", errc::truncated, 4);
  // Overlong forms, surrogates, code points past U+10FFFF, truncated sequences, stray continuation
  // bytes and 5-byte forms are all invalid.
  for (std::string_view bad : {"\xc0\xaf", "\xe0\x80\xaf", "\xf0\x80\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                               "\xe2\x82", "\x80", "\xf8\x88\x80\x80\x80", "\xfe", "ab\xc3"}) {
    detail::byte_buffer buf;
    writer w(buf, byte_order::little);
    w.put_counted_string(bad);  // unchecked on purpose
    const bytes b = wire_test::to_vector(buf);
    const std::size_t first_bad = bad.substr(0, 2) == "ab" ? 2 : 0;
    expect_read_error(b, "s", errc::bad_utf8, 4 + first_bad);
  }
  // Valid multi-byte forms at every length, and the largest code point.
  detail::byte_buffer buf;
  writer w(buf);
  w.write(std::string("\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf"));
  ASSERT_FALSE(w.err()) << w.err().message();
  reader r(buf.bytes(), native_byte_order);
  r.skip("s");
  EXPECT_FALSE(r.err()) << r.err().message();
}

TEST(Reader, ObjectPathsAndSignaturesAreValidated) {
  // "/a/" : the trailing '/' at data offset 4 + 2.
  expect_read_error(hex("03000000 2f612f 00"), "o", errc::bad_object_path, 6);
  expect_read_error(hex("00000000 00"), "o", errc::bad_object_path, 4);
  // "a{vs}": 'v' at data offset 1 + 2.
  expect_read_error(hex("05 617b76737d 00"), "g", errc::bad_signature, 3);
  expect_read_error(hex("02 6978"), "g", errc::truncated, 1);
  expect_read_error(hex("01 69 20"), "g", errc::string_not_terminated, 2);
  // A variant must name exactly one complete type.
  expect_read_error(hex("02 6969 00"), "v", errc::bad_variant_signature, 0);
  expect_read_error(hex("00 00"), "v", errc::bad_variant_signature, 0);
  expect_read_error(hex("01 28 00"), "v", errc::bad_variant_signature, 0);
}

TEST(Reader, FixedArraysMustDivideByTheElementSize) {
  expect_read_error(hex("03000000 010002 00"), "an", errc::array_length_mismatch, 0);
  expect_read_error(hex("06000000 000000000000"), "ai", errc::array_length_mismatch, 0);
  expect_read_error(hex("00 000000 0c000000 00000000 0000000000000000 00000000"), "yat", errc::array_length_mismatch,
                    4);
  // Typed reads see the same error.
  const bytes b = hex("03000000 010002 00");
  reader r(b, byte_order::little);
  std::vector<std::uint16_t> v;
  r.read(v);
  EXPECT_EQ(r.err().code(), errc::array_length_mismatch);
}

TEST(Reader, ArrayLengths) {
  // Longer than the data: truncated, reported at the length.
  expect_read_error(hex("00 000000 10000000 01020304"), "yay", errc::truncated, 4);
  // 64 MiB + 1 claimed: rejected from the length alone, before any data is needed.
  detail::byte_buffer buf;
  writer w(buf, byte_order::big);
  w.put_fixed<std::uint32_t>(static_cast<std::uint32_t>(max_array_length + 1));
  expect_read_error(wire_test::to_vector(buf), "ay", errc::array_too_long, 0, byte_order::big);
  // Elements that run past the array's end.
  expect_read_error(hex("06000000 03000000 616263 00"), "as", errc::array_length_mismatch, 12);
}

TEST(Reader, SixtyFourMiBArrayIsAccepted) {
  // The largest legal array, backed by the kernel's shared zero page: nothing is allocated.
  const std::size_t n = 8 + max_array_length;
  void* mem = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  auto* p = static_cast<unsigned char*>(mem);
  detail::store<std::uint32_t>(p, static_cast<std::uint32_t>(max_array_length), false);
  const std::span<const std::byte> data(static_cast<const std::byte*>(mem), 4 + max_array_length);
  reader r(data, native_byte_order);
  r.skip("ay");
  EXPECT_FALSE(r.err()) << r.err().message();
  EXPECT_TRUE(r.at_end());
  detail::store<std::uint32_t>(p, static_cast<std::uint32_t>(max_array_length + 8), false);
  reader r2(std::span<const std::byte>(static_cast<const std::byte*>(mem), n), native_byte_order);
  r2.skip("at");
  EXPECT_EQ(r2.err().code(), errc::array_too_long);
  ::munmap(mem, n);
}

TEST(Reader, WriterRefusesArraysOverSixtyFourMiB) {
  const std::size_t n = max_array_length + 1;
  void* mem = ::mmap(nullptr, n, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  detail::byte_buffer buf;
  writer w(buf, native_byte_order, 4);
  w.write(std::span<const std::uint8_t>(static_cast<const std::uint8_t*>(mem), n));
  EXPECT_EQ(w.err().code(), errc::array_too_long);
  EXPECT_EQ(w.err().offset(), 4u);
  ::munmap(mem, n);
}

// Builds n nested variants around a byte.
bytes nested_variants(unsigned n) {
  detail::byte_buffer buf;
  for (unsigned i = 1; i < n; ++i) buf.append("\x01v", 3);
  buf.append("\x01y\0\x2a", 4);
  return wire_test::to_vector(buf);
}

TEST(Reader, SixtyFourLevelsOfNestingVariantsIncluded) {
  {
    const bytes b = nested_variants(64);
    reader r(b, byte_order::little);
    r.skip("v");
    EXPECT_FALSE(r.err()) << r.err().message();
  }
  {
    const bytes b = nested_variants(65);
    // Reported at the variant that goes one level too deep.
    expect_read_error(b, "v", errc::nesting_too_deep, 64 * 3);
  }
  // 32 arrays of 32 structs... of a byte: 64 containers, accepted; one variant around it: 65.
  std::string sig;
  for (int i = 0; i < 32; ++i) sig += "a(";
  sig += "y";
  for (int i = 0; i < 32; ++i) sig += ")";
  // Written at base offset 4, so that the same bytes fit after the variant's signature below.
  detail::byte_buffer buf;
  writer w(buf, native_byte_order, 4);
  std::vector<writer::array_mark> marks;
  for (int i = 0; i < 32; ++i) {
    marks.push_back(w.open_array("("));
    w.open_struct();
  }
  w.put_byte(9);
  for (int i = 31; i >= 0; --i) {
    w.close_struct();
    w.close_array(marks[static_cast<std::size_t>(i)]);
  }
  ASSERT_FALSE(w.err()) << w.err().message();
  const bytes deep = wire_test::to_vector(buf);
  reader r(deep, native_byte_order, 4);
  r.skip(sig);
  EXPECT_FALSE(r.err()) << r.err().message();
  EXPECT_TRUE(r.at_end());

  // The same value inside a variant: its signature ends at 99, the array starts at 100, which is
  // 4 mod 8 as above, so the inner padding still lines up.
  detail::byte_buffer vbuf;
  writer vw(vbuf);
  vw.open_variant(sig);
  ASSERT_EQ(vw.position(), 99u);
  vbuf.append_zeros(1);
  vbuf.append(deep.data(), deep.size());
  const bytes wrapped = wire_test::to_vector(vbuf);
  reader rv(wrapped, native_byte_order);
  rv.skip("v");
  // The 65th container is the innermost struct, which starts with the last byte.
  ASSERT_EQ(deep.back(), std::byte{9});
  EXPECT_EQ(rv.err().code(), errc::nesting_too_deep);
  const std::size_t innermost = 100 + deep.size() - 1;
  EXPECT_EQ(rv.err().offset(), innermost);
  EXPECT_EQ(rv.err().code(), errc::nesting_too_deep);
}

TEST(Reader, ErrorsAreSticky) {
  const bytes b = hex("02000000 05000000 03000000 61626300");
  reader r(b, byte_order::little);
  EXPECT_FALSE(r.get<bool>());
  ASSERT_EQ(r.err().code(), errc::bad_boolean);
  const std::size_t pos = r.position();
  // Every later read returns a default value and does not move.
  EXPECT_EQ(r.get<std::uint32_t>(), 0u);
  EXPECT_EQ(r.get<std::string>(), "");
  EXPECT_EQ(r.get_string().size(), 0u);
  EXPECT_EQ(r.get<std::vector<std::int32_t>>().size(), 0u);
  r.skip("a{sv}");
  r.open_struct();
  (void)r.open_variant();
  EXPECT_EQ(r.position(), pos);
  EXPECT_EQ(r.err().code(), errc::bad_boolean);
  EXPECT_EQ(r.err().offset(), 0u);
}

TEST(Reader, StringsAreViewsIntoTheBuffer) {
  const bytes b = encode(byte_order::big, 0, std::string("hello"), std::vector<std::string>{"a", "bc"},
                         object_path::from("/p").value(), signature::from("(ii)").value());
  reader r(b, byte_order::big);
  const std::string_view s = r.get<std::string_view>();
  EXPECT_EQ(s, "hello");
  EXPECT_EQ(static_cast<const void*>(s.data()), static_cast<const void*>(b.data() + 4));
  const auto list = r.get<std::vector<std::string_view>>();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(static_cast<const void*>(list[1].data()), static_cast<const void*>(b.data() + 28));
  const object_path_view p = r.get<object_path_view>();
  EXPECT_EQ(static_cast<const void*>(p.data()), static_cast<const void*>(b.data() + 36));
  const signature_view g = r.get<signature_view>();
  EXPECT_EQ(g.str(), "(ii)");
  EXPECT_EQ(static_cast<const void*>(g.data()), static_cast<const void*>(b.data() + 40));
  const char* c = nullptr;
  reader r2(b, byte_order::big);
  r2.read(c);
  EXPECT_EQ(static_cast<const void*>(c), static_cast<const void*>(b.data() + 4));
  EXPECT_STREQ(c, "hello");
}

TEST(Reader, FixedArraysAsSpansWhenAlignedAndNative) {
  const std::vector<std::uint32_t> values{1, 2, 0xdeadbeef};
  const bytes b = encode(native_byte_order, 0, std::uint8_t{0}, values, std::vector<double>{0.5});
  reader r(b, native_byte_order);
  r.get<std::uint8_t>();
  const auto s = r.get<std::span<const std::uint32_t>>();
  ASSERT_FALSE(r.err()) << r.err().message();
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(static_cast<const void*>(s.data()), static_cast<const void*>(b.data() + 8));
  EXPECT_EQ(s[2], 0xdeadbeefu);
  const auto d = r.get<std::span<const double>>();
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0], 0.5);
  EXPECT_TRUE(r.at_end());

  // The other byte order cannot be viewed in place.
  constexpr byte_order other = native_byte_order == byte_order::little ? byte_order::big : byte_order::little;
  const bytes swapped = encode(other, 0, values);
  reader rs(swapped, other);
  (void)rs.get<std::span<const std::uint32_t>>();
  EXPECT_EQ(rs.err().code(), errc::not_zero_copy);
  // ... but reads into a vector fine.
  reader rv(swapped, other);
  EXPECT_EQ(rv.get<std::vector<std::uint32_t>>(), values);

  // Nor can a buffer whose elements are misaligned in memory.
  std::vector<unsigned char> raw(b.size() + 1);
  std::memcpy(raw.data() + 1, b.data(), b.size());
  reader rm(std::span<const std::byte>(reinterpret_cast<const std::byte*>(raw.data() + 1), b.size()),
            native_byte_order);
  rm.get<std::uint8_t>();
  (void)rm.get<std::span<const std::uint32_t>>();
  EXPECT_EQ(rm.err().code(), errc::not_zero_copy);
  // Bytes are always aligned.
  const bytes yb = encode(other, 0, std::vector<std::uint8_t>{1, 2, 3});
  reader ry(yb, other);
  EXPECT_EQ(ry.get<std::span<const std::uint8_t>>().size(), 3u);
  EXPECT_FALSE(ry.err());
}

TEST(Reader, FdIndexesBelowTheLimit) {
  const bytes b = hex("01000000");
  reader ok(b, byte_order::little, 0, reader_options{.fd_limit = 2});
  EXPECT_EQ(ok.get_fd_index(), 1u);
  EXPECT_FALSE(ok.err());
  expect_read_error(b, "h", errc::bad_fd_index, 0, byte_order::little, 0, reader_options{.fd_limit = 1});
  expect_read_error(hex("00 000000 01000000"), "yh", errc::bad_fd_index, 4, byte_order::little, 0,
                    reader_options{.fd_limit = 0});
  expect_read_error(hex("08000000 00000000 02000000"), "ah", errc::bad_fd_index, 8, byte_order::little, 0,
                    reader_options{.fd_limit = 2});
  reader off(b, byte_order::little, 0, reader_options{.check_fd_indexes = false});
  off.skip("h");
  EXPECT_FALSE(off.err());
  // A typed read needs the fd itself.
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  const int fds[2] = {pipefd[0], pipefd[1]};
  reader typed(b, byte_order::little, 0, reader_options{.fd_limit = 2});
  typed.set_fds(fds);
  const unix_fd got = typed.get<unix_fd>();
  EXPECT_TRUE(got.valid());
  EXPECT_NE(got.get(), pipefd[1]);  // a duplicate the caller owns
  reader borrowed(b, byte_order::little, 0, reader_options{.fd_limit = 2});
  borrowed.set_fds(fds);
  EXPECT_EQ(borrowed.get<borrowed_fd>().fd, pipefd[1]);
  reader missing(b, byte_order::little, 0, reader_options{.fd_limit = 2});
  (void)missing.get<borrowed_fd>();
  EXPECT_EQ(missing.err().code(), errc::bad_fd_index);
  ::close(pipefd[0]);
  ::close(pipefd[1]);
}

TEST(Reader, TypedContainersRoundTrip) {
  const std::map<std::string, variant> props = {{"a", variant::from(std::int32_t{1}).value()},
                                                {"b", variant::from(std::vector<std::string>{"x"}).value()}};
  const std::vector<dict_entry<std::string, std::uint8_t>> ordered = {{"z", 1}, {"a", 2}};
  const std::array<std::int16_t, 3> arr{1, -1, 7};
  const std::variant<std::int32_t, std::string> alt = std::string("s");
  for (byte_order o : both_orders) {
    const bytes b = encode(o, 0, props, ordered, arr, alt, std::pair<bool, double>{true, 2.0});
    reader r(b, o);
    EXPECT_EQ((r.get<std::map<std::string, variant>>()), props);
    EXPECT_EQ((r.get<std::vector<dict_entry<std::string, std::uint8_t>>>()), ordered);
    const auto arr2 = r.get<std::array<std::int16_t, 3>>();
    EXPECT_EQ(arr2, arr);
    const auto alt2 = r.get<std::variant<std::int32_t, std::string>>();
    EXPECT_EQ(alt2, alt);
    const auto pr = r.get<std::pair<bool, double>>();
    EXPECT_EQ(pr, (std::pair<bool, double>{true, 2.0}));
    EXPECT_FALSE(r.err()) << r.err().message();
    EXPECT_TRUE(r.at_end());
  }
  // A std::array of the wrong size, and a std::variant with none of the alternatives.
  const bytes b = encode(native_byte_order, 0, std::vector<std::int16_t>{1, 2});
  reader r(b, native_byte_order);
  (void)r.get<std::array<std::int16_t, 3>>();
  EXPECT_EQ(r.err().code(), errc::value_out_of_range);
  const bytes v = encode(native_byte_order, 0, std::variant<double>{1.0});
  reader rv(v, native_byte_order);
  (void)rv.get<std::variant<std::int32_t, std::string>>();
  EXPECT_EQ(rv.err().code(), errc::type_mismatch);
}

}  // namespace

namespace {
struct with_view {
  std::string_view name;
};
struct with_string {
  std::string name;
  std::vector<std::map<std::string, std::int32_t>> nested;
};
}  // namespace
MCBUS_STRUCT(with_view, name);
MCBUS_STRUCT(with_string, name, nested);

namespace {
// value::to<T>() reads from a buffer of its own that is gone when it returns: types that would
// point into it are refused at compile time (the static_assert in to() uses this trait).
TEST(Value, ToRefusesTypesThatWouldDangle) {
  using detail::borrows;
  static_assert(borrows<std::string_view>::value);
  static_assert(borrows<const char*>::value);
  static_assert(borrows<object_path_view>::value);
  static_assert(borrows<signature_view>::value);
  static_assert(borrows<borrowed_fd>::value);
  static_assert(borrows<std::span<const std::uint32_t>>::value);
  static_assert(borrows<std::vector<std::string_view>>::value);
  static_assert(borrows<std::map<std::string, std::string_view>>::value);
  static_assert(borrows<std::vector<dict_entry<std::string_view, variant>>>::value);
  static_assert(borrows<std::tuple<std::int32_t, std::pair<bool, object_path_view>>>::value);
  static_assert(borrows<std::variant<std::int32_t, std::string_view>>::value);
  static_assert(borrows<with_view>::value);
  static_assert(!borrows<std::string>::value);
  static_assert(!borrows<std::map<std::string, variant>>::value);
  static_assert(!borrows<std::tuple<object_path, signature, std::vector<std::uint8_t>>>::value);
  static_assert(!borrows<with_string>::value);
  // The owning forms convert.
  const auto v = value::from(with_string{"n", {{{"k", 1}}}});
  ASSERT_TRUE(v) << v.error().message();
  const auto back = v->to<with_string>();
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->name, "n");
  EXPECT_EQ(back->nested.at(0).at("k"), 1);
  EXPECT_EQ((v->to<std::tuple<std::string, std::int32_t>>().error().code()), errc::type_mismatch);
}
}  // namespace
