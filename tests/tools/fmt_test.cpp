// include/mcbus/fmt.hpp: the text each formatter produces.
#include <mcbus/fmt.hpp>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace {

mcbus::value must(mcbus::result<mcbus::value> v) {
  EXPECT_TRUE(v) << v.error().message();
  return v ? std::move(*v) : mcbus::value();
}

}  // namespace

TEST(Fmt, SmallTypes) {
  EXPECT_EQ(fmt::format("{}", mcbus::byte_order::big), "big");
  EXPECT_EQ(fmt::format("{}", mcbus::byte_order::little), "little");
  EXPECT_EQ(fmt::format("{}", mcbus::message_type::method_call), "method_call");
  EXPECT_EQ(fmt::format("{}", mcbus::message_type::signal), "signal");
  EXPECT_EQ(fmt::format("{}", mcbus::header_field::reply_serial), "REPLY_SERIAL");
  const mcbus::error e(mcbus::errc::bad_utf8, 42, "body");
  EXPECT_EQ(fmt::format("{}", e), "string is not valid UTF-8 at byte 42 (body)");
  // The string_view formatter's spec still works for these.
  EXPECT_EQ(fmt::format("[{:>6}]", mcbus::byte_order::big), "[   big]");
}

TEST(Fmt, BasicValues) {
  using mcbus::value;
  EXPECT_EQ(fmt::format("{}", value::byte(42)), "0x2a");
  EXPECT_EQ(fmt::format("{}", value::boolean(true)), "true");
  EXPECT_EQ(fmt::format("{}", value::int16(-3)), "-3");
  EXPECT_EQ(fmt::format("{}", value::uint16(65535)), "65535");
  EXPECT_EQ(fmt::format("{}", value::int32(-2147483647 - 1)), "-2147483648");
  EXPECT_EQ(fmt::format("{}", value::uint32(4294967295u)), "4294967295");
  EXPECT_EQ(fmt::format("{}", value::int64(-1)), "-1");
  EXPECT_EQ(fmt::format("{}", value::uint64(18446744073709551615ull)), "18446744073709551615");
  EXPECT_EQ(fmt::format("{}", value::double_(0.1)), "0.1");
  EXPECT_EQ(fmt::format("{}", value::fd_index(3)), "handle 3");
  EXPECT_EQ(fmt::format("{}", value::string("a\"b\\c\n\t\x01 é")), "\"a\\\"b\\\\c\\n\\t\\x01 é\"");
  EXPECT_EQ(fmt::format("{}", must(value::object_path("/org/x"))), "objectpath \"/org/x\"");
  EXPECT_EQ(fmt::format("{}", must(value::signature("a{sv}"))), "signature \"a{sv}\"");
  EXPECT_EQ(fmt::format("{}", value()), "<empty>");
}

TEST(Fmt, Containers) {
  using mcbus::value;
  EXPECT_EQ(fmt::format("{}", must(value::array("i", {value::int32(1), value::int32(2)}))), "[1, 2]");
  EXPECT_EQ(fmt::format("{}", must(value::array("s", {}))), "[]");
  EXPECT_EQ(fmt::format("{}", must(value::structure({value::byte(1), value::string("x")}))), "(0x01, \"x\")");
  EXPECT_EQ(fmt::format("{}", must(value::structure({value::uint32(7)}))), "(7,)");  // as GVariant writes it
  EXPECT_EQ(fmt::format("{}", value::variant(value::variant(value::int16(-3)))), "<<-3>>");
  const value entry = must(value::dict_entry(value::string("k"), value::variant(value::uint32(1))));
  EXPECT_EQ(fmt::format("{}", must(value::array("{sv}", {entry, entry}))), "{\"k\": <1>, \"k\": <1>}");
  EXPECT_EQ(fmt::format("{}", entry), "(\"k\", <1>)");
}

TEST(Fmt, Messages) {
  auto m = mcbus::message::method_call("org.example.S", "/org/example", "org.example.I", "Do");
  m.append(std::string("hi"), std::vector<std::uint8_t>{1, 2});
  m.set_no_reply_expected();
  m.set_serial(9);
  auto view = m.view();
  ASSERT_TRUE(view);
  const std::string order = fmt::format("{}", mcbus::native_byte_order);
  EXPECT_EQ(fmt::format("{}", view->header()),
            "method_call serial=9 path=/org/example interface=org.example.I member=Do destination=org.example.S "
            "signature=\"say\" flags=no_reply_expected order=" +
                order);
  EXPECT_EQ(fmt::format("{}", *view), fmt::format("{}", view->header()) + "\n  [0] s: \"hi\"\n  [1] ay: [0x01, 0x02]");

  auto tree = mcbus::message_tree::decode(*view);
  ASSERT_TRUE(tree);
  EXPECT_EQ(fmt::format("{}", *tree),
            "method_call serial=9 flags=no_reply_expected\n"
            "  DESTINATION: \"org.example.S\"\n"
            "  PATH: objectpath \"/org/example\"\n"
            "  INTERFACE: \"org.example.I\"\n"
            "  MEMBER: \"Do\"\n"
            "  SIGNATURE: signature \"say\"\n"
            "  [0] s: \"hi\"\n"
            "  [1] ay: [0x01, 0x02]");
}

TEST(Fmt, UnknownTypesAndFlags) {
  mcbus::message_header h;
  h.raw_type = 9;
  h.serial = 1;
  h.flags = 0x1 | 0x2 | 0x4 | 0x80;
  h.order = mcbus::byte_order::big;
  EXPECT_EQ(fmt::format("{}", h),
            "type_9 serial=1 flags=no_reply_expected|no_auto_start|allow_interactive_authorization|0x80 order=big");
}
