// D-Bus address grammar, escapes, client checks, sockaddr conversion and bus lookup.
#include <mcbus/io/address.hpp>

#include <gtest/gtest.h>

#include <sys/un.h>

#include <cstring>
#include <string>
#include <string_view>

namespace {

using mcbus::address_kind;
using mcbus::errc;

// Escape vectors from dbus 1.14.10 test/internals/address.c (AFL-2.1 or GPL-2.0+).
struct escape_case {
  const char* escaped;
  std::string_view unescaped;
};
const escape_case escape_cases[] = {
    {"abcde", "abcde"}, {"", ""},
    {"%20%20", "  "},   {"%24", "$"},
    {"%25", "%"},       {"abc%24", "abc$"},
    {"%24abc", "$abc"}, {"abc%24abc", "abc$abc"},
    {"/", "/"},         {"-", "-"},
    {"_", "_"},         {"A", "A"},
    {"I", "I"},         {"Z", "Z"},
    {"a", "a"},         {"i", "i"},
    {"z", "z"},         {"%c3%b6", "\xc3\xb6"},
};
const char* const invalid_escapes[] = {"%a", "%q", "%az", "%%", "%$$", "abc%a", "%axyz", "%", "$", " "};

TEST(AddressEscape, LibdbusVectorsRoundTrip) {
  for (const auto& c : escape_cases) {
    EXPECT_EQ(mcbus::escape_address_value(c.unescaped), c.escaped) << c.escaped;
    auto back = mcbus::unescape_address_value(c.escaped);
    ASSERT_TRUE(back) << c.escaped << ": " << back.error().message();
    EXPECT_EQ(*back, c.unescaped);
  }
}

TEST(AddressEscape, LibdbusInvalidVectorsAreRejected) {
  for (const char* bad : invalid_escapes) {
    auto r = mcbus::unescape_address_value(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().code(), errc::bad_address);
    }
  }
}

TEST(AddressEscape, EveryByteRoundTrips) {
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  const std::string escaped = mcbus::escape_address_value(all);
  for (char c : escaped) EXPECT_TRUE(mcbus::detail::address_optionally_escaped(c) || c == '%') << int(c);
  auto back = mcbus::unescape_address_value(escaped);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, all);
}

TEST(AddressEscape, UppercaseHexAndOptionalEscapesAreAccepted) {
  auto r = mcbus::unescape_address_value("%2F%2fa%41");
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, "//aA");
}

TEST(AddressList, LibdbusExampleParses) {
  // From dbus test/internals/address.c: a trailing ';' is allowed.
  auto list = mcbus::parse_address_list("unix:path=/tmp/foo;debug:name=test,sliff=sloff;");
  ASSERT_TRUE(list) << list.error().message();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].kind(), address_kind::unix_path);
  EXPECT_EQ((*list)[0].path(), "/tmp/foo");
  EXPECT_EQ((*list)[1].transport(), "debug");
  EXPECT_EQ((*list)[1].kind(), address_kind::unsupported);
  EXPECT_EQ((*list)[1].get("name"), "test");
  EXPECT_EQ((*list)[1].get("sliff"), "sloff");
  EXPECT_FALSE((*list)[1].get("nope"));
  EXPECT_EQ((*list)[1].offset(), std::strlen("unix:path=/tmp/foo;"));
}

TEST(AddressList, LibdbusInvalidAddressesAreRejected) {
  for (const char* bad : {"", "foo", "foo:bar", "foo:bar,baz", "foo:bar=foo,baz", "foo:bar=foo;baz", "foo:=foo",
                          "foo:foo=", "foo:foo,bar=baz"}) {
    auto r = mcbus::parse_address_list(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().code(), errc::bad_address) << bad;
    }
  }
}

// Each bad address names the bad part and where it is.
struct bad_case {
  const char* text;
  std::size_t offset;
  const char* where_contains;
};
const bad_case bad_cases[] = {
    {"", 0, "empty address"},
    {"unix:path=/a;;unix:path=/b", 13, "empty address"},
    {";unix:path=/a", 0, "empty address"},
    {"unixpath=/a", 0, "no ':'"},
    {":path=/a", 0, "empty transport"},
    {"un ix:path=/a", 2, "transport name"},
    {"unix:path=/a,", 13, "empty key=value"},
    {"unix:path=/a,,abstract=b", 13, "empty key=value"},
    {"unix:path", 5, "without '="},
    {"unix:=x", 5, "empty key"},
    {"unix:path=", 9, "empty value"},
    {"unix:pa th=/a", 7, "key has a byte"},
    {"unix:path=/a b", 12, "must be %-escaped"},
    {"unix:path=/a=b", 12, "must be %-escaped"},
    {"unix:path=/a%4", 12, "two hex digits"},
    {"unix:path=/a%zz", 12, "two hex digits"},
    {"unix:path=/a,path=/b", 13, "appears twice"},
    {"unix:tmpdir=/tmp", 5, "for servers"},
    {"unix:dir=/tmp", 5, "for servers"},
    {"unix:runtime=yes", 5, "for servers"},
    {"unix:path=/a,tmpdir=/tmp", 13, "for servers"},
    {"unix:guid=0123456789abcdef0123456789abcdef", 0, "needs path= or abstract="},
    {"unix:path=/a,abstract=b", 13, "both path= and abstract="},
    {"unix:path=/a%00b", 5, "NUL"},
    {"tcp:port=1", 0, "needs host="},
    {"tcp:host=localhost", 0, "needs port="},
    {"tcp:host=localhost,port=0", 19, "port"},
    {"tcp:host=localhost,port=65536", 19, "port"},
    {"tcp:host=localhost,port=-1", 19, "port"},
    {"tcp:host=localhost,port=12a", 19, "port"},
    {"tcp:host=localhost,port=000001", 19, "port"},
    {"tcp:host=localhost,port=1,family=ipv5", 26, "family"},
    {"unix:path=/a,guid=xyz", 13, "guid"},
    {"unix:path=/a,guid=0123456789abcdef0123456789abcdeg", 13, "guid"},
    {"unix:path=/a;tcp:host=h", 13, "needs port="},
};

TEST(AddressList, BadAddressesNameThePartAndItsOffset) {
  for (const auto& c : bad_cases) {
    auto r = mcbus::parse_address_list(c.text);
    ASSERT_FALSE(r) << c.text;
    EXPECT_EQ(r.error().code(), errc::bad_address) << c.text;
    EXPECT_EQ(r.error().offset(), c.offset) << c.text << ": " << r.error().message();
    ASSERT_NE(r.error().where(), nullptr) << c.text;
    EXPECT_NE(std::string(r.error().where()).find(c.where_contains), std::string::npos)
        << c.text << ": " << r.error().message();
  }
}

TEST(AddressList, LongUnixPathsAreRejected) {
  const std::string ok = "unix:path=/" + std::string(106, 'a');  // 107 bytes + NUL fills sun_path
  EXPECT_TRUE(mcbus::parse_address_list(ok));
  EXPECT_FALSE(mcbus::parse_address_list(ok + "a"));
  const std::string abs_ok = "unix:abstract=" + std::string(107, 'a');  // leading NUL + 107
  EXPECT_TRUE(mcbus::parse_address_list(abs_ok));
  EXPECT_FALSE(mcbus::parse_address_list(abs_ok + "a"));
}

TEST(Address, UnixPathAbstractTcpAccessors) {
  auto list = mcbus::parse_address_list(
      "unix:path=/run/user/1000/bus,guid=0123456789abcdef0123456789ABCDEF;unix:abstract=/tmp/dbus-x%20y;"
      "tcp:host=%3a%3a1,port=4242,family=ipv6;nonce-tcp:host=h,port=1,noncefile=/f");
  ASSERT_TRUE(list) << list.error().message();
  ASSERT_EQ(list->size(), 4u);
  const auto& u = (*list)[0];
  EXPECT_EQ(u.kind(), address_kind::unix_path);
  EXPECT_EQ(u.path(), "/run/user/1000/bus");
  EXPECT_EQ(u.guid(), "0123456789abcdef0123456789ABCDEF");
  EXPECT_TRUE(u.can_pass_fds());
  EXPECT_EQ(u.host(), "");
  const auto& a = (*list)[1];
  EXPECT_EQ(a.kind(), address_kind::unix_abstract);
  EXPECT_EQ(a.abstract_name(), "/tmp/dbus-x y");
  EXPECT_EQ(a.path(), "");
  EXPECT_TRUE(a.can_pass_fds());
  EXPECT_EQ(a.guid(), "");
  const auto& t = (*list)[2];
  EXPECT_EQ(t.kind(), address_kind::tcp);
  EXPECT_EQ(t.host(), "::1");
  EXPECT_EQ(t.port(), 4242);
  EXPECT_EQ(t.family(), mcbus::address_family::ipv6);
  EXPECT_FALSE(t.can_pass_fds());
  const auto& n = (*list)[3];
  EXPECT_EQ(n.kind(), address_kind::unsupported);
  EXPECT_EQ(n.transport(), "nonce-tcp");
  auto sa = mcbus::to_socket_address(n);
  ASSERT_FALSE(sa);
  EXPECT_EQ(sa.error().code(), errc::not_supported);
  EXPECT_EQ(sa.error().offset(), n.offset());
}

TEST(Address, ToStringRoundTrips) {
  for (const char* text : {"unix:path=/tmp/a%20b,guid=0123456789abcdef0123456789abcdef", "unix:abstract=%01%ff",
                           "tcp:host=127.0.0.1,port=1,family=ipv4", "foo:", "x-y_z:k=%2a"}) {
    auto a = mcbus::parse_address_list(text);
    ASSERT_TRUE(a) << text << ": " << a.error().message();
    ASSERT_EQ(a->size(), 1u);
    const std::string s = a->front().to_string();
    auto b = mcbus::parse_address_list(s);
    ASSERT_TRUE(b) << s;
    EXPECT_TRUE(a->front() == b->front()) << text << " -> " << s;
  }
  // Optional escapes are undone and '*' is escaped, as the specification's set lacks it.
  auto a = mcbus::parse_address_list("tcp:host=%31%32%37.0.0.1,port=1,bind=*");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->front().to_string(), "tcp:host=127.0.0.1,port=1,bind=%2a");
}

TEST(SocketAddress, UnixPathIncludesTheNulAbstractDoesNot) {
  auto list = mcbus::parse_address_list("unix:path=/tmp/sock;unix:abstract=name");
  ASSERT_TRUE(list);
  auto p = mcbus::to_socket_address((*list)[0]);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->domain, AF_UNIX);
  const auto* sun = reinterpret_cast<const sockaddr_un*>(&p->storage);
  EXPECT_EQ(sun->sun_family, AF_UNIX);
  EXPECT_STREQ(sun->sun_path, "/tmp/sock");
  EXPECT_EQ(p->length, offsetof(sockaddr_un, sun_path) + 10);
  auto a = mcbus::to_socket_address((*list)[1]);
  ASSERT_TRUE(a);
  const auto* sua = reinterpret_cast<const sockaddr_un*>(&a->storage);
  EXPECT_EQ(sua->sun_path[0], '\0');
  EXPECT_EQ(std::string_view(sua->sun_path + 1, 4), "name");
  EXPECT_EQ(a->length, offsetof(sockaddr_un, sun_path) + 5);
}

TEST(SocketAddress, TcpLiteralsAndFamilies) {
  auto list = mcbus::parse_address_list(
      "tcp:host=127.0.0.1,port=4242;tcp:host=%3A%3A1,port=80;tcp:host=127.0.0.1,port=1,family=ipv6;"
      "tcp:host=localhost,port=1");
  ASSERT_TRUE(list) << list.error().message();
  auto v4 = mcbus::to_socket_address((*list)[0]);
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->domain, AF_INET);
  EXPECT_EQ(v4->length, sizeof(sockaddr_in));
  const auto* sin = reinterpret_cast<const sockaddr_in*>(&v4->storage);
  EXPECT_EQ(ntohs(sin->sin_port), 4242);
  EXPECT_EQ(ntohl(sin->sin_addr.s_addr), 0x7f000001u);
  auto v6 = mcbus::to_socket_address((*list)[1]);
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->domain, AF_INET6);
  EXPECT_EQ(ntohs(reinterpret_cast<const sockaddr_in6*>(&v6->storage)->sin6_port), 80);
  // An IPv4 literal with family=ipv6 is not a literal of that family.
  auto wrong = mcbus::to_socket_address((*list)[2]);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code(), errc::not_supported);
  // Names need resolve().
  auto name = mcbus::to_socket_address((*list)[3]);
  ASSERT_FALSE(name);
  EXPECT_EQ(name.error().code(), errc::not_supported);
  EXPECT_EQ(name.error().offset(), (*list)[3].offset() + 4);
}

TEST(SocketAddress, ResolveLooksUpLocalhost) {
  auto list = mcbus::parse_address_list("tcp:host=localhost,port=4242,family=ipv4;unix:path=/x");
  ASSERT_TRUE(list);
  auto r = mcbus::resolve((*list)[0]);
  if (!r) GTEST_SKIP() << "localhost does not resolve here: " << r.error().message();
  ASSERT_FALSE(r->empty());
  for (const auto& sa : *r) {
    EXPECT_EQ(sa.domain, AF_INET);
    EXPECT_EQ(ntohs(reinterpret_cast<const sockaddr_in*>(&sa.storage)->sin_port), 4242);
  }
  auto u = mcbus::resolve((*list)[1]);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->size(), 1u);
}

TEST(WellKnownBus, SessionFromEnvironmentValues) {
  auto s = mcbus::session_bus_address_from("unix:path=/tmp/s;tcp:host=h,port=1", "/run/user/1");
  ASSERT_TRUE(s);
  ASSERT_EQ(s->size(), 2u);
  EXPECT_EQ((*s)[0].path(), "/tmp/s");
  // The runtime-dir fallback, escaped on the way.
  auto f = mcbus::session_bus_address_from(nullptr, "/run/user/1 000");
  ASSERT_TRUE(f) << f.error().message();
  EXPECT_EQ(f->front().path(), "/run/user/1 000/bus");
  auto e = mcbus::session_bus_address_from("", "/run/user/7");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->front().path(), "/run/user/7/bus");
  auto none = mcbus::session_bus_address_from(nullptr, nullptr);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code(), errc::bad_address);
  EXPECT_NE(std::string(none.error().where()).find("DBUS_SESSION_BUS_ADDRESS"), std::string::npos);
  EXPECT_FALSE(mcbus::session_bus_address_from(nullptr, "relative/dir"));
  auto bad = mcbus::session_bus_address_from("unix:tmpdir=/tmp", "/run/user/1");
  ASSERT_FALSE(bad);  // a bad session address is reported, not replaced by the fallback
  EXPECT_EQ(bad.error().offset(), 5u);
}

TEST(WellKnownBus, SystemDefaultAndOverride) {
  auto d = mcbus::system_bus_address_from(nullptr);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->front().path(), "/var/run/dbus/system_bus_socket");
  auto o = mcbus::system_bus_address_from("unix:abstract=sys");
  ASSERT_TRUE(o);
  EXPECT_EQ(o->front().abstract_name(), "sys");
}

TEST(WellKnownBus, ReadsTheEnvironment) {
  ::setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/tmp/from-env", 1);
  ::setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/tmp/system-from-env", 1);
  auto s = mcbus::session_bus_address();
  auto y = mcbus::system_bus_address();
  ::unsetenv("DBUS_SESSION_BUS_ADDRESS");
  ::unsetenv("DBUS_SYSTEM_BUS_ADDRESS");
  ::setenv("XDG_RUNTIME_DIR", "/run/user/4242", 1);
  auto fallback = mcbus::session_bus_address();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->front().path(), "/tmp/from-env");
  ASSERT_TRUE(y);
  EXPECT_EQ(y->front().path(), "/tmp/system-from-env");
  ASSERT_TRUE(fallback);
  EXPECT_EQ(fallback->front().path(), "/run/user/4242/bus");
}

}  // namespace
