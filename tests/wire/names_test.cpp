// Names and object paths: the specification's rules, and dbus's validation table
// (tests/conformance/dbus-1.14.10/names.tsv), with the spec winning where libdbus is looser.
#include <mcbus/wire/names.hpp>

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "test_support.hpp"

using namespace mcbus;

namespace {

// libdbus accepts these unique names; the specification requires at least two elements.
const std::set<std::string> spec_rejects_unique = {":", ":0", ":a", ":.a", ":.1", ":.blah"};

TEST(Names, ConformanceTable) {
  const auto rows = mcbus_test::read_tsv(mcbus_test::conformance_dir() / "dbus-1.14.10/names.tsv");
  ASSERT_GT(rows.size(), 80u);
  int checked = 0;
  for (const auto& row : rows) {
    ASSERT_EQ(row.size(), 3u);
    const std::string& kind = row[0];
    const std::string& name = row[2];
    bool expect = row[1] == "valid";
    if (kind == "unique_bus_name" && spec_rejects_unique.count(name)) expect = false;
    bool got = false;
    if (kind == "path")
      got = is_valid_object_path(name);
    else if (kind == "interface") {
      got = is_valid_interface_name(name);
      // libdbus: every valid interface is also a valid bus name and error name.
      EXPECT_EQ(is_valid_error_name(name), expect) << name;
      if (expect) {
        EXPECT_TRUE(is_valid_bus_name(name)) << name;
      }
    } else if (kind == "unique_bus_name") {
      got = is_valid_unique_name(name);
      EXPECT_EQ(is_valid_bus_name(name), expect) << name;
    } else if (kind == "member")
      got = is_valid_member_name(name);
    else
      FAIL() << "unknown kind " << kind;
    EXPECT_EQ(got, expect) << kind << " '" << name << "'";
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(rows.size()));
}

TEST(Names, ObjectPathRules) {
  EXPECT_TRUE(is_valid_object_path("/"));
  EXPECT_TRUE(is_valid_object_path("/a_b/C9"));
  EXPECT_FALSE(is_valid_object_path(""));
  EXPECT_FALSE(is_valid_object_path("/a/"));
  EXPECT_FALSE(is_valid_object_path("/a//b"));
  EXPECT_FALSE(is_valid_object_path("/a-b"));
  EXPECT_FALSE(is_valid_object_path("a"));
  EXPECT_FALSE(is_valid_object_path("/\xc3\xa9"));
  const error e = validate_object_path("/ok/b@d");
  EXPECT_EQ(e.code(), errc::bad_object_path);
  EXPECT_EQ(e.offset(), 5u);
}

TEST(Names, BusNameRules) {
  EXPECT_TRUE(is_valid_bus_name("org.freedesktop.DBus"));
  EXPECT_TRUE(is_valid_bus_name("a-b.c-d"));
  EXPECT_TRUE(is_valid_bus_name(":1.42"));
  EXPECT_TRUE(is_valid_bus_name(":1.42.7-x"));
  EXPECT_FALSE(is_valid_bus_name("org"));       // one element
  EXPECT_FALSE(is_valid_bus_name("org.1abc"));  // digit-led element in a well-known name
  EXPECT_FALSE(is_valid_bus_name(".org.a"));
  EXPECT_FALSE(is_valid_bus_name("org.a."));
  EXPECT_FALSE(is_valid_bus_name("org..a"));
  EXPECT_FALSE(is_valid_bus_name("org.a b"));
  EXPECT_TRUE(is_valid_well_known_name("org._a"));
  EXPECT_FALSE(is_valid_well_known_name(":1.2"));
  EXPECT_FALSE(is_valid_unique_name("org.a"));
  const std::string long_name = "a." + std::string(254, 'b');
  EXPECT_EQ(long_name.size(), 256u);
  EXPECT_FALSE(is_valid_bus_name(long_name));
  EXPECT_TRUE(is_valid_bus_name(long_name.substr(0, 255)));
}

TEST(Names, InterfaceMemberErrorRules) {
  EXPECT_TRUE(is_valid_interface_name("org.example.Foo_2"));
  EXPECT_FALSE(is_valid_interface_name("org.example-x.Foo"));  // '-' only in bus names
  EXPECT_FALSE(is_valid_interface_name("org.2x"));
  EXPECT_TRUE(is_valid_member_name("_Do9"));
  EXPECT_FALSE(is_valid_member_name("9Do"));
  EXPECT_FALSE(is_valid_member_name("a.b"));
  EXPECT_FALSE(is_valid_member_name(std::string(256, 'a')));
  EXPECT_TRUE(is_valid_member_name(std::string(255, 'a')));
  EXPECT_TRUE(is_valid_error_name("org.freedesktop.DBus.Error.Failed"));
  EXPECT_FALSE(is_valid_error_name("Failed"));
}

TEST(Names, CompileTimeLiteralsAndRuntimeFrom) {
  constexpr interface_name i = "org.example.Iface";
  static_assert(i.str() == "org.example.Iface");
  constexpr member_name m = "Frob";
  static_assert(m.size() == 4);
  static_assert(is_valid_object_path("/compile/time"));
  static_assert(!is_valid_interface_name("nodots"));
  auto ok = bus_name::from(":1.7");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->str(), ":1.7");
  auto bad = interface_name::from("bad");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), errc::bad_interface_name);
  EXPECT_NE(bad.error().message().find("two elements"), std::string::npos) << bad.error().message();
  auto path = object_path::from("/x/y");
  ASSERT_TRUE(path);
  EXPECT_EQ(path->view(), object_path_view("/x/y"));
  EXPECT_FALSE(object_path::from("/x/"));
}

}  // namespace
