// The `busctl call` argument syntax of mcbus-call: what it accepts, and that bad input fails with
// a reason instead of recursing or looping. Equality with busctl's own output is checked against
// real peers in tests/integration.
#include "../../tools/common/busctl_syntax.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

struct parsed {
  bool ok;
  std::vector<mcbus::value> values;
  std::string error;
};

parsed parse(std::string_view signature, std::vector<std::string> tokens) {
  mcbus_tools::busctl_parser p(std::move(tokens));
  parsed out;
  out.ok = p.parse_all(signature, out.values);
  out.error = p.error();
  return out;
}

TEST(BusctlSyntax, IntegersTakeSystemdsPrefixesAndRanges) {
  auto r = parse("yqnut", {"0x10", "0o17", "-5", "0b101", "-0"});
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.values[0].as_int(), 16);
  EXPECT_EQ(r.values[1].as_int(), 15);
  EXPECT_EQ(r.values[2].as_int(), -5);
  EXPECT_EQ(r.values[3].as_int(), 5);
  EXPECT_EQ(r.values[4].as_int(), 0);

  EXPECT_FALSE(parse("y", {"256"}).ok);
  EXPECT_FALSE(parse("u", {"-1"}).ok);
  EXPECT_FALSE(parse("i", {"12abc"}).ok);
}

TEST(BusctlSyntax, BooleansAreSystemdsWordsInAnyCase) {
  auto r = parse("bbbb", {"YES", "off", "t", "0"});
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_TRUE(r.values[0].as_bool());
  EXPECT_FALSE(r.values[1].as_bool());
  EXPECT_TRUE(r.values[2].as_bool());
  EXPECT_FALSE(r.values[3].as_bool());
  EXPECT_FALSE(parse("b", {"maybe"}).ok);
}

TEST(BusctlSyntax, ContainersTakeCountsSignaturesAndFields) {
  auto r = parse("a{sv}(io)", {"2", "a", "i", "7", "b", "s", "x", "-1", "/a/b"});
  ASSERT_TRUE(r.ok) << r.error;
  ASSERT_EQ(r.values.size(), 2u);
  EXPECT_EQ(r.values[0].type(), "a{sv}");
  EXPECT_EQ(r.values[0].items().size(), 2u);
  EXPECT_EQ(r.values[1].type(), "(io)");
  EXPECT_EQ(r.values[1].items()[1].str(), "/a/b");
}

TEST(BusctlSyntax, MissingAndExtraArgumentsAreNamed) {
  auto missing = parse("si", {"x"});
  EXPECT_FALSE(missing.ok);
  EXPECT_NE(missing.error.find("missing argument for type 'i'"), std::string::npos) << missing.error;
  auto extra = parse("s", {"x", "y"});
  EXPECT_FALSE(extra.ok);
  EXPECT_NE(extra.error.find("too many arguments"), std::string::npos) << extra.error;
}

// An element count is only a promise: the elements must follow, so a huge count ends at the end
// of the arguments instead of looping or allocating for it.
TEST(BusctlSyntax, HugeArrayCountEndsWithTheArguments) {
  auto r = parse("ai", {"4294967295", "1", "2"});
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("missing argument"), std::string::npos) << r.error;
}

// "v v v ... v" on a command line must not recurse without bound (a stack overflow before this
// limit existed); 64 levels, as the specification allows, still parse.
TEST(BusctlSyntax, VariantNestingIsLimitedTo64) {
  std::vector<std::string> deep(100000, "v");
  deep.push_back("i");
  deep.push_back("1");
  auto r = parse("v", deep);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("nested more than 64"), std::string::npos) << r.error;

  std::vector<std::string> ok(63, "v");
  ok.push_back("i");
  ok.push_back("1");
  auto within = parse("v", ok);
  EXPECT_TRUE(within.ok) << within.error;
}

TEST(BusctlSyntax, InvalidPathsSignaturesAndFdsAreRefused) {
  EXPECT_FALSE(parse("o", {"not/a/path"}).ok);
  EXPECT_FALSE(parse("g", {"a{"}).ok);
  EXPECT_FALSE(parse("v", {"ii", "1", "2"}).ok);
  auto fd = parse("h", {"3"});
  EXPECT_FALSE(fd.ok);
  EXPECT_NE(fd.error.find("unix fds"), std::string::npos) << fd.error;
}

}  // namespace
