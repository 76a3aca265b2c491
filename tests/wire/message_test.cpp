// Messages: building, parsing, and every header and body rule with its error code and offset.
// Bad messages are built byte by byte (wire_test::raw_message), since the codec refuses to write
// them.
#include <mcbus/wire/message.hpp>
#include <mcbus/wire/value.hpp>

#include <gtest/gtest.h>

#include <sys/mman.h>

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "test_support.hpp"
#include "wire_test_util.hpp"

using namespace mcbus;
using wire_test::bytes;
using wire_test::raw_message;

namespace {

constexpr byte_order both_orders[] = {byte_order::little, byte_order::big};

void expect_parse_error(const bytes& b, errc code, std::size_t offset, parse_options opts = {}) {
  auto m = message_view::parse(b, opts);
  ASSERT_FALSE(m) << "accepted " << mcbus_test::to_hex(b);
  EXPECT_EQ(m.error().code(), code) << m.error().message() << "\n" << mcbus_test::to_hex(b);
  EXPECT_EQ(m.error().offset(), offset) << m.error().message() << "\n" << mcbus_test::to_hex(b);
}

void expect_parse_ok(const bytes& b, parse_options opts = {}) {
  auto m = message_view::parse(b, opts);
  EXPECT_TRUE(m) << m.error().message() << "\n" << mcbus_test::to_hex(b);
}

// A valid signal built byte by byte. The fields take offsets 16..65 (PATH at 16, INTERFACE at 32,
// MEMBER at 56), the header ends at 72.
raw_message valid_signal() {
  raw_message m;
  m.type = 4;
  m.fields = wire_test::call_fields;
  return m;
}

// The rules hold in both byte orders, at the same offsets: these tests run once for each.
class MessageRules : public ::testing::TestWithParam<byte_order> {
 protected:
  void SetUp() override { wire_test::raw_order() = GetParam(); }
  void TearDown() override { wire_test::raw_order() = native_byte_order; }
};
INSTANTIATE_TEST_SUITE_P(BothOrders, MessageRules, ::testing::Values(byte_order::little, byte_order::big),
                         [](const auto& info) { return info.param == byte_order::little ? "little" : "big"; });

TEST(Message, BuildsAndParsesEveryType) {
  for (byte_order o : both_orders) {
    SCOPED_TRACE(o == byte_order::little ? "little" : "big");
    message call = message::method_call("org.example.Dest", "/org/example/obj", "org.example.Iface", "Do", o);
    call.append(std::string("arg"), std::uint32_t{7}, std::vector<std::string>{"x", "y"});
    call.set_serial(42).set_no_reply_expected();
    auto bytes = call.to_bytes();
    ASSERT_TRUE(bytes) << bytes.error().message();
    auto v = message_view::parse(*bytes);
    ASSERT_TRUE(v) << v.error().message();
    EXPECT_EQ(v->type(), message_type::method_call);
    EXPECT_EQ(v->order(), o);
    EXPECT_EQ(v->serial(), 42u);
    EXPECT_TRUE(v->no_reply_expected());
    EXPECT_EQ(v->destination(), "org.example.Dest");
    EXPECT_EQ(v->path(), "/org/example/obj");
    EXPECT_EQ(v->interface(), "org.example.Iface");
    EXPECT_EQ(v->member(), "Do");
    EXPECT_EQ(v->body_signature(), "suas");
    auto body = v->read<std::string, std::uint32_t, std::vector<std::string>>();
    ASSERT_TRUE(body) << body.error().message();
    EXPECT_EQ(std::get<0>(*body), "arg");
    EXPECT_EQ(std::get<1>(*body), 7u);
    EXPECT_EQ(std::get<2>(*body), (std::vector<std::string>{"x", "y"}));
    auto first = v->read_first<std::string>();
    ASSERT_TRUE(first);
    EXPECT_EQ(*first, "arg");
    EXPECT_FALSE(v->read_first<std::uint32_t>());
    std::string s;
    EXPECT_EQ(v->read_into(s).code(), errc::signature_mismatch);

    message sig = message::signal("/p", "org.example.I", "Changed", o);
    sig.append(std::map<std::string, variant>{{"k", variant::from(true).value()}});
    auto sb = sig.to_bytes();
    ASSERT_TRUE(sb);
    auto sv = message_view::parse(*sb);
    ASSERT_TRUE(sv) << sv.error().message();
    EXPECT_EQ(sv->type(), message_type::signal);
    EXPECT_EQ(sv->body_signature(), "a{sv}");
    EXPECT_FALSE(sv->header().has(header_field::destination));
  }
  message call = message::method_call(":1.5", "/", interface_name{}, "Ping");
  call.set_serial(9);
  auto cb = call.to_bytes();
  ASSERT_TRUE(cb);
  auto cv = message_view::parse(*cb);
  ASSERT_TRUE(cv);
  EXPECT_FALSE(cv->header().has(header_field::interface));
  // Replies need the call's sender; a view of a sealed message stands in for a received one.
  message with_sender = message::method_call("org.x.Y", "/", interface_name{}, "Ping");
  with_sender.set_sender(":1.7");
  auto call_view = with_sender.view();
  ASSERT_TRUE(call_view) << call_view.error().message();

  message ret = message::method_return(*call_view);
  ret.append(std::int32_t{1});
  auto rb = ret.to_bytes();
  ASSERT_TRUE(rb);
  auto rv = message_view::parse(*rb);
  ASSERT_TRUE(rv) << rv.error().message();
  EXPECT_EQ(rv->type(), message_type::method_return);
  EXPECT_EQ(rv->reply_serial(), call_view->serial());
  EXPECT_EQ(rv->destination(), ":1.7");

  message err = message::error_reply(*call_view, "org.example.Error.Failed", "it broke");
  auto eb = err.to_bytes();
  ASSERT_TRUE(eb);
  auto ev = message_view::parse(*eb);
  ASSERT_TRUE(ev) << ev.error().message();
  EXPECT_EQ(ev->type(), message_type::error);
  EXPECT_EQ(ev->error_name(), "org.example.Error.Failed");
  EXPECT_EQ(ev->destination(), ":1.7");
  EXPECT_EQ(ev->read_first<std::string>().value(), "it broke");
}

TEST(Message, HeaderAndBodyInSeparateBuffers) {
  message m = message::signal("/p", "org.example.I", "S", byte_order::big);
  m.append(std::string("x"));
  ASSERT_FALSE(m.seal());
  auto v = message_view::parse(m.header_bytes(), m.body_bytes());
  ASSERT_TRUE(v) << v.error().message();
  EXPECT_EQ(v->read_first<std::string>().value(), "x");
  // The body must be exactly as long as the header says.
  const bytes longer = [&] {
    bytes b(m.body_bytes().begin(), m.body_bytes().end());
    b.push_back(std::byte{0});
    return b;
  }();
  auto bad = message_view::parse(m.header_bytes(), longer);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), errc::trailing_bytes);
}

TEST(Message, RawBuilderMakesValidMessages) {
  for (byte_order o : both_orders) {
    raw_message m = valid_signal();
    m.order = o;
    const bytes b = m.build();
    ASSERT_EQ(b.size(), 72u);
    expect_parse_ok(b);
  }
}

TEST_P(MessageRules, FixedHeader) {
  raw_message m = valid_signal();
  m.endian_byte = 'X';
  expect_parse_error(m.build(), errc::bad_endian, 0);
  m = valid_signal();
  m.version = 2;
  expect_parse_error(m.build(), errc::bad_version, 3);
  m.version = 0;
  expect_parse_error(m.build(), errc::bad_version, 3);
  m = valid_signal();
  m.type = 0;
  expect_parse_error(m.build(), errc::bad_message_type, 1);
  m = valid_signal();
  m.serial = 0;
  expect_parse_error(m.build(), errc::zero_serial, 8);
  // Unknown types and flags are accepted (and ignored).
  m = raw_message();
  m.type = 200;
  expect_parse_ok(m.build());
  m = valid_signal();
  m.flags = 0xff;
  expect_parse_ok(m.build());
}

TEST_P(MessageRules, Framing) {
  const bytes b = valid_signal().build();
  auto len = message_length(std::span(b).first(16));
  ASSERT_TRUE(len);
  EXPECT_EQ(*len, b.size());
  auto short_prefix = message_length(std::span(b).first(15));
  EXPECT_EQ(short_prefix.error().code(), errc::truncated);
  EXPECT_EQ(short_prefix.error().offset(), 15u);
  // The message is one byte shorter / longer than the header says.
  expect_parse_error(bytes(b.begin(), b.end() - 1), errc::truncated, 71);
  bytes longer = b;
  longer.push_back(std::byte{0});
  expect_parse_error(longer, errc::trailing_bytes, 72);
  expect_parse_error(bytes(b.begin(), b.begin() + 10), errc::truncated, 10);
}

TEST(Message, LengthLimitsFromTheFixedHeaderAlone) {
  // No allocation: the fixed header alone rules these out.
  for (byte_order o : both_orders) {
    raw_message m = valid_signal();
    m.order = o;
    m.body_length_override = static_cast<std::int64_t>(max_message_length);
    bytes b = m.build();
    auto len = message_length(std::span(b).first(16));
    ASSERT_FALSE(len);
    EXPECT_EQ(len.error().code(), errc::message_too_long);
    EXPECT_EQ(len.error().offset(), 4u);
    expect_parse_error(b, errc::message_too_long, 4);
    // The largest body that still fits.
    m.body_length_override = static_cast<std::int64_t>(max_message_length - 72);
    const bytes largest = m.build();
    EXPECT_EQ(message_length(std::span(largest).first(16)).value(), max_message_length);
    // A header field array over 64 MiB.
    m = valid_signal();
    m.order = o;
    m.fields_length_override = static_cast<std::int64_t>(max_array_length + 1);
    b = m.build();
    len = message_length(std::span(b).first(16));
    ASSERT_FALSE(len);
    EXPECT_EQ(len.error().code(), errc::array_too_long);
    EXPECT_EQ(len.error().offset(), 12u);
  }
}

TEST(Message, SealRefusesMessagesOver128MiB) {
  // Two arrays of just under 64 MiB each, copied from the kernel's zero page.
  const std::size_t n = max_array_length;
  void* mem = ::mmap(nullptr, n, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  const std::span<const std::uint8_t> big(static_cast<const std::uint8_t*>(mem), n);
  message m = message::signal("/p", "org.example.I", "Big");
  m.append(big);
  ASSERT_FALSE(m.err()) << m.err().message();
  EXPECT_FALSE(m.seal());  // 64 MiB plus a header: fine
  m.append(big);
  ASSERT_FALSE(m.err()) << m.err().message();
  const error e = m.seal();
  EXPECT_EQ(e.code(), errc::message_too_long);
  ::munmap(mem, n);
}

TEST_P(MessageRules, HeaderFieldCodesAndTypes) {
  raw_message m = valid_signal();
  // Field code 0 is invalid (reported at the field's struct).
  m.fields = [](writer& w) {
    wire_test::call_fields(w);
    wire_test::string_field(w, 0, "x");  // at 72
  };
  expect_parse_error(m.build(), errc::bad_header_field_code, 72);
  // Every known field with a wrong type: reported at the variant signature.
  for (std::uint8_t code = 1; code <= 9; ++code) {
    SCOPED_TRACE(static_cast<int>(code));
    m.fields = [code](writer& w) {
      wire_test::call_fields(w);
      if (code == 5 || code == 9) {
        wire_test::string_field(w, code, "x");
      } else {
        wire_test::u32_field(w, code, 1);
      }
    };
    expect_parse_error(m.build(), errc::bad_header_field_type, 73);
  }
  // A variant that holds more than one type.
  m.fields = [](writer& w) {
    wire_test::call_fields(w);
    wire_test::field(w, 3, "ss", [](writer& x) {
      x.put_string("a");
      x.put_string("b");
    });
  };
  expect_parse_error(m.build(), errc::bad_variant_signature, 73);
  // Duplicates: reported at the second one's variant signature.
  m.fields = [](writer& w) {
    wire_test::call_fields(w);
    wire_test::string_field(w, 3, "Again");  // at 72
  };
  expect_parse_error(m.build(), errc::duplicate_header_field, 73);
  // Unknown fields are skipped, whatever their type...
  m.fields = [](writer& w) {
    wire_test::call_fields(w);
    wire_test::field(w, 10, "a{sv}", [](writer& x) {
      x.write(std::map<std::string, variant>{{"k", variant::from(std::int32_t{1}).value()}});
    });
    wire_test::field(w, 255, "(yd)", [](writer& x) { x.write(std::tuple<std::uint8_t, double>{1, 2.0}); });
  };
  expect_parse_ok(m.build());
  // ...but must be well-formed: a bad string in one is found (its data at 72 + 8).
  m.fields = [](writer& w) {
    wire_test::call_fields(w);
    wire_test::field(w, 77, "s", [](writer& x) { x.put_counted_string("\xff"); });
  };
  expect_parse_error(m.build(), errc::bad_utf8, 80);
}

TEST_P(MessageRules, RequiredFieldsPerType) {
  struct required_case {
    std::uint8_t type;
    std::vector<std::uint8_t> fields;  // the fields present
    bool ok;
  };
  const std::vector<required_case> cases = {
      {1, {1, 3}, true},  {1, {1, 2, 3}, true}, {1, {3}, false},    {1, {1}, false}, {4, {1, 2, 3}, true},
      {4, {1, 3}, false}, {4, {2, 3}, false},   {4, {1, 2}, false}, {2, {5}, true},  {2, {}, false},
      {3, {4, 5}, true},  {3, {4}, false},      {3, {5}, false},    {5, {}, true},   {9, {7}, true},
  };
  for (const auto& c : cases) {
    raw_message m;
    m.type = c.type;
    m.fields = [&](writer& w) {
      for (std::uint8_t f : c.fields) {
        switch (f) {
          case 1: wire_test::path_field(w, "/a"); break;
          case 2: wire_test::string_field(w, 2, "a.b"); break;
          case 3: wire_test::string_field(w, 3, "m"); break;
          case 4: wire_test::string_field(w, 4, "a.Err"); break;
          case 5: wire_test::u32_field(w, 5, 3); break;
          case 7: wire_test::string_field(w, 7, ":1.1"); break;
        }
      }
    };
    const bytes b = m.build();
    auto v = message_view::parse(b);
    EXPECT_EQ(static_cast<bool>(v), c.ok) << "type " << int(c.type) << " fields " << c.fields.size();
    if (!c.ok && !v) {
      EXPECT_EQ(v.error().code(), errc::missing_header_field);
      // Reported at the end of the field array.
      const std::uint32_t fields_len = detail::load<std::uint32_t>(
          reinterpret_cast<const unsigned char*>(b.data()) + 12, GetParam() != native_byte_order);
      EXPECT_EQ(v.error().offset(), 16u + fields_len);
    }
  }
}

TEST_P(MessageRules, HeaderFieldValues) {
  struct value_case {
    std::uint8_t code;
    std::string text;
    errc expect;
    std::size_t bad_char;  // offset of the offending character in `text`
  };
  const std::vector<value_case> cases = {
      {1, "/a//b", errc::bad_object_path, 3},     {1, "a", errc::bad_object_path, 0},
      {2, "org..x", errc::bad_interface_name, 4}, {2, "org", errc::bad_interface_name, 3},
      {2, "org.1x", errc::bad_interface_name, 4}, {3, "1m", errc::bad_member_name, 0},
      {3, "a.b", errc::bad_member_name, 1},       {3, "", errc::bad_member_name, 0},
      {4, "Err", errc::bad_error_name, 3},        {6, "org.", errc::bad_bus_name, 4},
      {6, ":1", errc::bad_bus_name, 2},  // the specification wants two elements; libdbus does not
      {7, "a b.c", errc::bad_bus_name, 1},        {7, "org.x-y.1a", errc::bad_bus_name, 8},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    raw_message m;
    m.type = 4;
    // The field under test comes first, at 16: its string data starts at 24.
    m.fields = [&](writer& w) {
      if (c.code == 1)
        wire_test::path_field(w, c.text);
      else
        wire_test::string_field(w, c.code, c.text);
      if (c.code != 1) wire_test::path_field(w, "/a");
      if (c.code != 2) wire_test::string_field(w, 2, "a.b");
      if (c.code != 3) wire_test::string_field(w, 3, "m");
    };
    expect_parse_error(m.build(), c.expect, 24 + c.bad_char);
  }
  // The local path and interface are reserved (reported at the value).
  raw_message m;
  m.type = 1;
  m.fields = [](writer& w) {
    wire_test::path_field(w, "/org/freedesktop/DBus/Local");
    wire_test::string_field(w, 3, "m");
  };
  expect_parse_error(m.build(), errc::local_path_forbidden, 20);
  m.fields = [](writer& w) {
    wire_test::string_field(w, 2, "org.freedesktop.DBus.Local");
    wire_test::path_field(w, "/a");
    wire_test::string_field(w, 3, "m");
  };
  expect_parse_error(m.build(), errc::local_interface_forbidden, 20);
  // As in libdbus, which compares a prefix, names that merely start with them are refused too.
  for (std::string_view p : {"/org/freedesktop/DBus/LocalX", "/org/freedesktop/DBus/Local/x"}) {
    m.type = 1;
    m.fields = [p](writer& w) {
      wire_test::path_field(w, p);
      wire_test::string_field(w, 3, "m");
    };
    expect_parse_error(m.build(), errc::local_path_forbidden, 20);
  }
  m.fields = [](writer& w) {
    wire_test::string_field(w, 2, "org.freedesktop.DBus.Local.Sub");
    wire_test::path_field(w, "/a");
    wire_test::string_field(w, 3, "m");
  };
  expect_parse_error(m.build(), errc::local_interface_forbidden, 20);
  m.fields = [](writer& w) {
    wire_test::path_field(w, "/org/freedesktop/DBus/Loca");
    wire_test::string_field(w, 2, "org.freedesktop.DBus.Loca");
    wire_test::string_field(w, 3, "m");
  };
  expect_parse_ok(m.build());
  // REPLY_SERIAL 0 is invalid.
  m.type = 2;
  m.fields = [](writer& w) { wire_test::u32_field(w, 5, 0); };
  expect_parse_error(m.build(), errc::zero_serial, 20);
  // A bad SIGNATURE field: struct at 24, its signature length byte at 28, the offending 'v' (a dict
  // key must be basic) at 31.
  m.fields = [](writer& w) {
    wire_test::u32_field(w, 5, 1);  // 16..23
    wire_test::sig_field(w, "a{vs}");
  };
  expect_parse_error(m.build(), errc::bad_signature, 31);
  // Header strings follow the value rules too: UTF-8, no NUL, terminated.
  m.type = 4;
  m.fields = [](writer& w) {
    wire_test::call_fields(w);
    wire_test::string_field(w, 7, std::string_view(":1.\0", 4));
  };
  expect_parse_error(m.build(), errc::string_has_nul, 80 + 3);
}

TEST_P(MessageRules, PaddingAfterTheHeaderFields) {
  bytes b = valid_signal().build();
  ASSERT_EQ(b.size(), 72u);
  b[68] = std::byte{1};  // fields end at 66; 66..71 is padding
  expect_parse_error(b, errc::bad_padding, 68);
  // Padding inside the field array.
  b = valid_signal().build();
  b[30] = std::byte{1};  // between PATH (ends at 29) and INTERFACE (at 32)
  expect_parse_error(b, errc::bad_padding, 30);
}

TEST_P(MessageRules, BodyRules) {
  auto with_body = [](std::string sig, std::function<void(writer&)> body) {
    raw_message m = valid_signal();
    m.fields = [sig](writer& w) {
      wire_test::call_fields(w);
      if (!sig.empty()) wire_test::sig_field(w, sig);  // 72..
    };
    m.body = std::move(body);
    return m.build();
  };
  // The header is 72 + signature field (1 + 3 + 1 + len + 1) rounded up to 8.
  const bytes ok = with_body("su", [](writer& w) {
    w.put_string("x");
    w.put_fixed<std::uint32_t>(1);
  });
  expect_parse_ok(ok);
  // A body without a SIGNATURE field.
  expect_parse_error(with_body("", [](writer& w) { w.put_byte(1); }), errc::trailing_bytes, 72);
  // A body longer than its signature: the header is 80 bytes, the string takes 80..85, the u
  // 88..91, and the extra byte is at 92.
  expect_parse_error(with_body("su",
                               [](writer& w) {
                                 w.put_string("x");
                                 w.put_fixed<std::uint32_t>(1);
                                 w.put_byte(0);
                               }),
                     errc::trailing_bytes, 92);
  // A body shorter than its signature.
  expect_parse_error(with_body("su", [](writer& w) { w.put_string("x"); }), errc::truncated, 86);
  // Booleans, UTF-8 and padding in the body, with message offsets.
  expect_parse_error(with_body("yb",
                               [](writer& w) {
                                 w.put_byte(1);
                                 w.put_fixed<std::uint32_t>(2);
                               }),
                     errc::bad_boolean, 84);
  expect_parse_error(with_body("s", [](writer& w) { w.put_counted_string("ok\xe9"); }), errc::bad_utf8, 86);
  const bytes padded = with_body("yu", [](writer& w) {
    w.put_byte(1);
    w.put_fixed<std::uint32_t>(1);
  });
  bytes bad = padded;
  bad[82] = std::byte{7};
  expect_parse_error(bad, errc::bad_padding, 82);
  // Fixed arrays divisible by the element size.
  expect_parse_error(with_body("at",
                               [](writer& w) {
                                 w.put_fixed<std::uint32_t>(12);
                                 w.put_fixed<std::uint32_t>(0);
                                 w.put_fixed<std::uint64_t>(0);
                                 w.put_fixed<std::uint32_t>(0);
                               }),
                     errc::array_length_mismatch, 80);
}

TEST_P(MessageRules, BodyNestingIncludesVariants) {
  auto variants = [](unsigned n) {
    raw_message m = valid_signal();
    m.fields = [](writer& w) {
      wire_test::call_fields(w);
      wire_test::sig_field(w, "v");
    };
    m.body = [n](writer& w) {
      for (unsigned i = 1; i < n; ++i) w.put_short_string("v");
      w.put_short_string("y");
      w.put_byte(1);
    };
    return m.build();
  };
  expect_parse_ok(variants(64));
  // The header is 80 bytes; the 65th variant starts 64 * 3 bytes into the body.
  expect_parse_error(variants(65), errc::nesting_too_deep, 80 + 64 * 3);
}

TEST_P(MessageRules, HeaderNestingIncludesTheFieldArray) {
  // a(yv): the array, the struct and the variant are three levels; 61 more variants fit.
  auto deep_field = [](unsigned inner_variants) {
    raw_message m = valid_signal();
    m.fields = [inner_variants](writer& w) {
      wire_test::call_fields(w);
      wire_test::field(w, 100, "v", [inner_variants](writer& x) {
        for (unsigned i = 1; i < inner_variants; ++i) x.put_short_string("v");
        x.put_short_string("y");
        x.put_byte(1);
      });
    };
    return m.build();
  };
  expect_parse_ok(deep_field(61));
  // The field struct is at 72, its variant signature at 73..75: 3 levels, then 62 more.
  expect_parse_error(deep_field(62), errc::nesting_too_deep, 76 + 61 * 3);
}

TEST_P(MessageRules, FdIndexes) {
  auto with_fd = [](std::int64_t unix_fds, std::uint32_t index) {
    raw_message m = valid_signal();
    m.fields = [unix_fds](writer& w) {
      wire_test::call_fields(w);
      wire_test::sig_field(w, "h");
      if (unix_fds >= 0) wire_test::u32_field(w, 9, static_cast<std::uint32_t>(unix_fds));
    };
    m.body = [index](writer& w) { w.put_fixed<std::uint32_t>(index); };
    return m.build();
  };
  expect_parse_ok(with_fd(1, 0));
  expect_parse_ok(with_fd(3, 2));
  // Header: 72 + SIGNATURE (72..76) + UNIX_FDS (80..87) = 88.
  expect_parse_error(with_fd(1, 1), errc::bad_fd_index, 88);
  expect_parse_error(with_fd(0, 0), errc::bad_fd_index, 88);
  // Without UNIX_FDS every index is out of range (the header is 80 bytes then).
  expect_parse_error(with_fd(-1, 0), errc::bad_fd_index, 80);
  // ... unless the check is turned off, as libdbus does.
  expect_parse_ok(with_fd(-1, 0), parse_options{.check_fd_indexes = false});
  expect_parse_ok(with_fd(1, 5), parse_options{.check_fd_indexes = false});
}

TEST(Message, FdsTravelBesideTheMessage) {
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  for (byte_order o : both_orders) {
    message m = message::signal("/p", "a.b", "c", o);
    m.append(borrowed_fd{pipefd[0]}, std::uint8_t{1}, borrowed_fd{pipefd[1]});
    ASSERT_FALSE(m.err()) << m.err().message();
    ASSERT_EQ(m.fds().size(), 2u);
    EXPECT_NE(m.fds()[0].get(), pipefd[0]);  // duplicates, owned by the message
    auto b = m.to_bytes();
    ASSERT_TRUE(b);
    auto v = message_view::parse(*b);
    ASSERT_TRUE(v) << v.error().message();
    EXPECT_EQ(v->header().unix_fds, 2u);
    EXPECT_EQ(v->body_signature(), "hyh");
    reader r = v->body();
    const auto values = value::read_all(r, "hyh");
    ASSERT_EQ(values.size(), 3u);
    EXPECT_EQ(values[0].bits(), 0u);
    EXPECT_EQ(values[2].bits(), 1u);
    // With the fds attached, typed reads hand them out.
    auto view = m.view();
    ASSERT_TRUE(view);
    auto typed = view->read<borrowed_fd, std::uint8_t, unix_fd>();
    ASSERT_TRUE(typed) << typed.error().message();
    EXPECT_EQ(std::get<0>(*typed).fd, m.fds()[0].get());
    EXPECT_TRUE(std::get<2>(*typed).valid());
  }
  // A writer without an fd list cannot write one.
  detail::byte_buffer buf;
  writer w(buf);
  w.write(borrowed_fd{pipefd[0]});
  EXPECT_EQ(w.err().code(), errc::not_supported);
  ::close(pipefd[0]);
  ::close(pipefd[1]);
}

TEST(Message, MessagesRoundTripThroughFromHeader) {
  for (byte_order o : both_orders) {
    message m = message::method_call(":1.9", "/x/y", "org.a.B", "C", o);
    m.set_sender(":1.10").set_flags(message_flags::no_auto_start);
    m.set_serial(77);
    m.append(std::vector<std::int16_t>{1, 2, 3}, std::string("s"));
    auto b1 = m.to_bytes();
    ASSERT_TRUE(b1);
    auto v = message_view::parse(*b1);
    ASSERT_TRUE(v) << v.error().message();
    // Re-encode from the parsed header and the raw body values.
    message again = message::from_header(v->header());
    reader body = v->body();
    const auto values = value::read_all(body, v->body_signature().str());
    again.append_with(v->body_signature().str(), [&](writer& w) {
      for (const auto& x : values) x.write(w);
    });
    auto b2 = again.to_bytes();
    ASSERT_TRUE(b2) << b2.error().message();
    auto v2 = message_view::parse(*b2);
    ASSERT_TRUE(v2) << v2.error().message();
    EXPECT_EQ(v2->serial(), 77u);
    EXPECT_EQ(v2->flags(), message_flags::no_auto_start);
    EXPECT_EQ(v2->sender(), ":1.10");
    EXPECT_EQ(v2->destination(), ":1.9");
    EXPECT_EQ(v2->path(), "/x/y");
    EXPECT_EQ(v2->body_signature(), "ans");
    // Replacing a field rebuilds the list without the old one.
    again.set_destination(":1.11");
    auto b3 = again.to_bytes();
    ASSERT_TRUE(b3);
    auto v3 = message_view::parse(*b3);
    ASSERT_TRUE(v3) << v3.error().message();
    EXPECT_EQ(v3->destination(), ":1.11");
    EXPECT_EQ(v3->sender(), ":1.10");
    EXPECT_EQ(v3->read_first<std::vector<std::int16_t>>().value(), (std::vector<std::int16_t>{1, 2, 3}));
    // An owning copy keeps the bytes as they were.
    auto copy = message::copy_of(*v3);
    ASSERT_TRUE(copy);
    auto b4 = copy->to_bytes();
    ASSERT_TRUE(b4);
    EXPECT_EQ(*b4, *b3);
  }
}

TEST(Message, BodySignatureLimit) {
  message m = message::signal("/p", "a.b", "c");
  for (int i = 0; i < 255; ++i) m.append(std::uint8_t{1});
  EXPECT_FALSE(m.err());
  m.append(std::uint8_t{1});
  EXPECT_EQ(m.err().code(), errc::signature_too_long);
}

}  // namespace
