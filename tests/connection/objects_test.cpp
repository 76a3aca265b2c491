// Exported objects: typed methods, properties, introspection, Peer, and the standard errors.
#include <mcbus/connection.hpp>

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "fixture.hpp"

using namespace mcbus;
using mcbus_test::bus_test;

namespace {

class Objects : public bus_test {
 protected:
  // Runs the server's loop until the client's call returns: the call is async on the client,
  // and both loops turn until the reply is in.
  call_result<received_message> call(connection& server, connection& client, message&& m) {
    std::optional<call_result<received_message>> out;
    const error e = client.call_async(std::move(m), [&](call_result<message_view> r) {
      if (r) {
        out = received_message::copy_of(*r);
      } else {
        out = r.error();
      }
    });
    if (e) return call_error(e);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!out && std::chrono::steady_clock::now() < deadline) {
      if (server.process() || client.run_for(std::chrono::milliseconds(2))) break;
    }
    if (!out) return call_error(errc::timeout);
    return std::move(*out);
  }

  message to(connection& server, object_path_view path, interface_name iface, member_name member) {
    return message::method_call(bus_name::from_unchecked(server.unique_name()), path, iface, member);
  }
};
MCBUS_ALL_BUSES_AND_TRANSPORTS(Objects);

struct point {
  std::int32_t x;
  std::int32_t y;
};

}  // namespace

MCBUS_STRUCT(point, x, y);

namespace {

TEST_P(Objects, TypedMethodsTakeAndReturnCppTypes) {
  MCBUS_TEST_CONNECT(server);
  MCBUS_TEST_CONNECT(client);
  auto obj = server.add_object(
      "/org/example/Obj",
      object_builder()
          .interface("org.example.Obj1")
          .method("Concat", [](std::string_view a, std::string_view b) { return std::string(a) + std::string(b); })
          .method("Sum",
                  [](const std::vector<std::int32_t>& v) {
                    std::int64_t s = 0;
                    for (auto x : v) s += x;
                    return s;
                  })
          .method("Swap",
                  [](point p) {
                    return point{p.y, p.x};
                  })
          .method("Split",
                  [](std::string_view s) { return std::tuple<std::string, std::uint32_t>(std::string(s), s.size()); })
          .method("Nothing", [] {})
          .method("Refuse",
                  []() -> call_result<std::int32_t> { return call_error("org.example.Error.No", "refused"); }));
  {
    message m = to(server, "/org/example/Obj", "org.example.Obj1", "Concat");
    m.append(std::string_view("ab"), std::string_view("cd"));
    auto r = call(server, client, std::move(m));
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(*r->read_first<std::string_view>(), "abcd");
  }
  {
    message m = to(server, "/org/example/Obj", "org.example.Obj1", "Sum");
    m.append(std::vector<std::int32_t>{1, 2, 3, -10});
    auto r = call(server, client, std::move(m));
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->header().signature, "x");
    EXPECT_EQ(*r->read_first<std::int64_t>(), -4);
  }
  {
    message m = to(server, "/org/example/Obj", "org.example.Obj1", "Swap");
    m.append(point{1, 2});
    auto r = call(server, client, std::move(m));
    ASSERT_TRUE(r) << r.error().message();
    auto p = r->read_first<point>();
    ASSERT_TRUE(p);
    EXPECT_EQ(p->x, 2);
    EXPECT_EQ(p->y, 1);
  }
  {
    message m = to(server, "/org/example/Obj", "org.example.Obj1", "Split");
    m.append(std::string_view("hello"));
    auto r = call(server, client, std::move(m));
    ASSERT_TRUE(r) << r.error().message();
    auto v = r->read<std::string_view, std::uint32_t>();
    ASSERT_TRUE(v);
    EXPECT_EQ(std::get<0>(*v), "hello");
    EXPECT_EQ(std::get<1>(*v), 5u);
  }
  {
    auto r = call(server, client, to(server, "/org/example/Obj", "org.example.Obj1", "Nothing"));
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->header().signature, "");
  }
  {
    auto r = call(server, client, to(server, "/org/example/Obj", "org.example.Obj1", "Refuse"));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().name(), "org.example.Error.No");
    EXPECT_EQ(r.error().text(), "refused");
  }
}

TEST_P(Objects, UnknownThingsGetTheStandardErrors) {
  MCBUS_TEST_CONNECT(server);
  MCBUS_TEST_CONNECT(client);
  auto obj = server.add_object("/a/b", object_builder().interface("org.example.I").method("M", [](std::int32_t) {}));
  auto expect_error = [&](message m, std::string_view name) {
    auto r = call(server, client, std::move(m));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().name(), name) << r.error().message();
  };
  expect_error(to(server, "/nowhere", "org.example.I", "M"), dbus_error::unknown_object);
  expect_error(to(server, "/a/b", "org.example.Nope", "M"), dbus_error::unknown_interface);
  expect_error(to(server, "/a/b", "org.example.I", "Nope"), dbus_error::unknown_method);
  expect_error(to(server, "/a/b", "org.example.I", "M"), dbus_error::invalid_args);  // no argument
  message wrong = to(server, "/a/b", "org.example.I", "M");
  wrong.append(std::string_view("not an int"));
  expect_error(std::move(wrong), dbus_error::invalid_args);
  expect_error(to(server, "/a/b", "org.freedesktop.DBus.Properties", "Frob"), dbus_error::unknown_method);
}

TEST_P(Objects, PropertiesGetSetGetAllAndChangedSignal) {
  MCBUS_TEST_CONNECT(server);
  MCBUS_TEST_CONNECT(client);
  std::uint32_t count = 7;
  std::string label = "start";
  auto obj = server.add_object("/p", object_builder()
                                         .interface("org.example.P")
                                         .property<std::uint32_t>("Count", [&] { return count; })
                                         .property<std::string>(
                                             "Label", [&] { return label; },
                                             [&](std::string v) {
                                               if (v.empty()) return false;
                                               label = std::move(v);
                                               return true;
                                             }));
  const interface_name props = "org.freedesktop.DBus.Properties";
  {
    message m = to(server, "/p", props, "Get");
    m.append(std::string_view("org.example.P"), std::string_view("Count"));
    auto r = call(server, client, std::move(m));
    ASSERT_TRUE(r) << r.error().message();
    auto v = r->read_first<variant>();
    ASSERT_TRUE(v);
    EXPECT_EQ(*v->to<std::uint32_t>(), 7u);
  }
  {
    message m = to(server, "/p", props, "Set");
    m.append(std::string_view("org.example.P"), std::string_view("Label"), *variant::from(std::string("changed")));
    auto r = call(server, client, std::move(m));
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(label, "changed");
  }
  {
    message m = to(server, "/p", props, "Set");
    m.append(std::string_view("org.example.P"), std::string_view("Count"), *variant::from(std::uint32_t{1}));
    auto r = call(server, client, std::move(m));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().name(), dbus_error::property_read_only);
  }
  {
    message m = to(server, "/p", props, "Set");
    m.append(std::string_view("org.example.P"), std::string_view("Label"), *variant::from(std::int32_t{1}));
    auto r = call(server, client, std::move(m));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().name(), dbus_error::invalid_args);
  }
  {
    message m = to(server, "/p", props, "GetAll");
    m.append(std::string_view("org.example.P"));
    auto r = call(server, client, std::move(m));
    ASSERT_TRUE(r) << r.error().message();
    auto all = r->read_first<std::map<std::string, variant>>();
    ASSERT_TRUE(all);
    ASSERT_EQ(all->size(), 2u);
    EXPECT_EQ(*all->at("Count").to<std::uint32_t>(), 7u);
    EXPECT_EQ(*all->at("Label").to<std::string>(), "changed");
  }
  {
    message m = to(server, "/p", props, "Get");
    m.append(std::string_view("org.example.P"), std::string_view("Missing"));
    auto r = call(server, client, std::move(m));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().name(), dbus_error::unknown_property);
  }
}

TEST_P(Objects, IntrospectionListsMembersAndChildren) {
  MCBUS_TEST_CONNECT(server);
  MCBUS_TEST_CONNECT(client);
  auto obj = server.add_object("/org/example/Tree/Leaf",
                               object_builder()
                                   .interface("org.example.Leaf")
                                   .method("Grow", [](std::uint32_t) { return std::string(); }, {"by"}, {"report"})
                                   .signal<std::string, double>("Grown", {"what", "size"})
                                   .property<bool>("Green", [] { return true; }));
  auto leaf =
      call(server, client, to(server, "/org/example/Tree/Leaf", "org.freedesktop.DBus.Introspectable", "Introspect"));
  ASSERT_TRUE(leaf) << leaf.error().message();
  const std::string xml(*leaf->read_first<std::string_view>());
  EXPECT_NE(xml.find("<interface name=\"org.example.Leaf\">"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<method name=\"Grow\">"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<arg type=\"u\" name=\"by\" direction=\"in\"/>"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<arg type=\"s\" name=\"report\" direction=\"out\"/>"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<signal name=\"Grown\">"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<arg type=\"d\" name=\"size\"/>"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<property name=\"Green\" type=\"b\" access=\"read\"/>"), std::string::npos) << xml;
  EXPECT_NE(xml.find("org.freedesktop.DBus.Properties"), std::string::npos) << xml;
  auto root = call(server, client, to(server, "/", "org.freedesktop.DBus.Introspectable", "Introspect"));
  ASSERT_TRUE(root) << root.error().message();
  EXPECT_NE(std::string(*root->read_first<std::string_view>()).find("<node name=\"org\"/>"), std::string::npos);
  auto mid = call(server, client, to(server, "/org/example", "org.freedesktop.DBus.Introspectable", "Introspect"));
  ASSERT_TRUE(mid) << mid.error().message();
  EXPECT_NE(std::string(*mid->read_first<std::string_view>()).find("<node name=\"Tree\"/>"), std::string::npos);
}

TEST_P(Objects, PeerPingAndMachineId) {
  MCBUS_TEST_CONNECT(server);
  MCBUS_TEST_CONNECT(client);
  auto ping = call(server, client, to(server, "/any/path", "org.freedesktop.DBus.Peer", "Ping"));
  EXPECT_TRUE(ping) << ping.error().message();
  auto id = call(server, client, to(server, "/", "org.freedesktop.DBus.Peer", "GetMachineId"));
  if (!id && id.error().text().find("no machine id") != std::string::npos) GTEST_SKIP() << "no /etc/machine-id here";
  ASSERT_TRUE(id) << id.error().message();
  EXPECT_EQ(id->read_first<std::string_view>()->size(), 32u);
}

TEST_P(Objects, DeferredRepliesArriveLater) {
  MCBUS_TEST_CONNECT(server);
  MCBUS_TEST_CONNECT(client);
  std::vector<deferred_reply> later;
  auto obj = server.add_object(
      "/d", object_builder().interface("org.example.D").method("Slow", [&](method_call& c, std::int32_t) {
        later.push_back(c.defer());
        return std::int32_t{0};  // ignored: the call was deferred
      }));
  message m = to(server, "/d", "org.example.D", "Slow");
  m.append(std::int32_t{5});
  std::optional<std::int32_t> got;
  ASSERT_FALSE(client.call_async(std::move(m), [&](call_result<message_view> r) {
    ASSERT_TRUE(r);
    got = *r->read_first<std::int32_t>();
  }));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (later.empty() && std::chrono::steady_clock::now() < deadline) {
    ASSERT_FALSE(server.run_for(std::chrono::milliseconds(2)));
    ASSERT_FALSE(client.process());
  }
  ASSERT_EQ(later.size(), 1u);
  EXPECT_FALSE(got);
  later[0].reply(std::int32_t{42});
  while (!got && std::chrono::steady_clock::now() < deadline) {
    ASSERT_FALSE(server.process());
    ASSERT_FALSE(client.run_for(std::chrono::milliseconds(2)));
  }
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, 42);
}

}  // namespace
