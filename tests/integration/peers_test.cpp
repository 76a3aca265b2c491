// The real echo-service example, used by the command-line tools of other D-Bus implementations
// (busctl: sd-bus; gdbus: GLib; dbus-send: libdbus) and by python3-dbus: every method, the Count
// property through Get and GetAll, and introspection.
//
// What a peer cannot do, and so is not tested with it: busctl 252 refuses to send unix fds from
// the command line ("UNIX file descriptor not supported as type"), and dbus-send has no fd type at
// all. gdbus and python3-dbus pass one to ReadFd.
#include <map>
#include <regex>
#include <string>

#include "integration.hpp"

namespace mcbus_integration {
namespace {

class Peers : public integration_test {
 protected:
  // The first line of the file handed to ReadFd.
  static constexpr const char* fd_line = "the first line, passed as an fd";
  std::string fd_file() { return scratch_file("readfd.txt", std::string(fd_line) + "\nsecond line\n"); }

  // Count as busctl reads it (the checks below compare other reads with it).
  unsigned count_now() {
    const run_result r = run(busctl({"get-property", echo_name, echo_path, echo_iface, "Count"}));
    EXPECT_TRUE(r.status.exited(0)) << r.err;
    EXPECT_EQ(r.out.rfind("u ", 0), 0u) << r.out;
    return r.out.size() > 2 ? static_cast<unsigned>(std::stoul(r.out.substr(2))) : 0;
  }
};

TEST_P(Peers, Busctl) {
  MCBUS_NEED_PROGRAM(busctl_bin);
  ASSERT_TRUE(echo_service());
  const std::vector<run_result> r = run_all({
      busctl({"call", echo_name, echo_path, echo_iface, "EchoAny", "v", "(is)", "7", "x"}),
      busctl({"call", "--", echo_name, echo_path, echo_iface, "Sum", "ai", "4", "1", "-2", "3", "2147483647"}),
      busctl({"call", echo_name, echo_path, echo_iface, "Sum", "ai", "0"}),
      busctl({"introspect", echo_name, echo_path, echo_iface}),
  });
  EXPECT_EQ(r[0].out, "v (is) 7 \"x\"\n") << r[0].err;
  EXPECT_EQ(r[1].out, "x 2147483649\n") << r[1].err;
  EXPECT_EQ(r[2].out, "x 0\n") << r[2].err;
  for (const run_result& x : r) EXPECT_TRUE(x.status.exited(0)) << x.status.describe() << ": " << x.err;

  // `busctl introspect` lists members in a table, and fills in property values with GetAll.
  const std::string& table = r[3].out;
  for (const char* row : {R"(^\.Echo +method +s +s +- *$)", R"(^\.EchoAny +method +v +v +- *$)",
                          R"(^\.Sum +method +ai +x +- *$)", R"(^\.ReadFd +method +h +s +- *$)",
                          R"(^\.Echoed +signal +s +- +- *$)", R"(^\.Count +property +u +[0-9]+ +emits-change *$)"}) {
    bool found = false;
    for (const std::string& line : lines_of(table)) found |= std::regex_search(line, std::regex(row));
    EXPECT_TRUE(found) << "no row matching " << row << " in:\n" << table;
  }

  // Echo changes Count; Get and GetAll both see the change.
  const unsigned before = count_now();
  const run_result echo = run(busctl({"call", echo_name, echo_path, echo_iface, "Echo", "s", "busctl \"text\""}));
  EXPECT_EQ(echo.out, "s \"busctl \\\"text\\\"\"\n") << echo.err;
  EXPECT_EQ(count_now(), before + 1);
  const run_result all =
      run(busctl({"call", echo_name, echo_path, "org.freedesktop.DBus.Properties", "GetAll", "s", echo_iface}));
  EXPECT_EQ(all.out, "a{sv} 1 \"Count\" u " + std::to_string(before + 1) + "\n") << all.err;

  // busctl (systemd 252) cannot send an fd from the command line; a later busctl that can must
  // get the line back.
  spawn_options with_fd;
  with_fd.files.push_back({3, fd_file()});
  const run_result fd = run(busctl({"call", echo_name, echo_path, echo_iface, "ReadFd", "h", "3"}), with_fd);
  if (fd.status.exited(0)) {
    EXPECT_EQ(fd.out, std::string("s \"") + fd_line + "\"\n");
  } else {
    EXPECT_NE(fd.err.find("not supported"), std::string::npos) << "busctl refused the fd unexpectedly: " << fd.err;
  }
}

TEST_P(Peers, Gdbus) {
  MCBUS_NEED_PROGRAM(gdbus_bin);
  ASSERT_TRUE(echo_service());
  auto gdbus_call = [&](std::string method, std::vector<std::string> args) {
    std::vector<std::string> a{gdbus_bin, "call",          "--address", address(),  "--dest",
                               echo_name, "--object-path", echo_path,   "--method", std::move(method)};
    a.insert(a.end(), args.begin(), args.end());
    return a;
  };
  spawn_options with_fd;
  with_fd.files.push_back({3, fd_file()});
  const std::vector<run_result> r = run_all({
      gdbus_call("org.mcbus.Echo1.EchoAny", {"<(7, 'x', [<@x -5>])>"}),
      gdbus_call("org.mcbus.Echo1.Sum", {"[1, -2, 3, 2147483647]"}),
      gdbus_call("org.mcbus.Echo1.Sum", {"@ai []"}),
  });
  EXPECT_EQ(r[0].out, "(<(7, 'x', [<int64 -5>])>,)\n") << r[0].err;
  EXPECT_EQ(r[1].out, "(int64 2147483649,)\n") << r[1].err;
  EXPECT_EQ(r[2].out, "(int64 0,)\n") << r[2].err;
  // gdbus passes the fd numbered like the handle value from its own fd table.
  const run_result fd = run(gdbus_call("org.mcbus.Echo1.ReadFd", {"3"}), with_fd);
  EXPECT_EQ(fd.out, std::string("('") + fd_line + "',)\n") << fd.err;

  const unsigned before = count_now();
  const run_result echo = run(gdbus_call("org.mcbus.Echo1.Echo", {"gdbus text"}));
  EXPECT_EQ(echo.out, "('gdbus text',)\n") << echo.err;
  const std::string count = std::to_string(before + 1);
  const run_result get = run(gdbus_call("org.freedesktop.DBus.Properties.Get", {echo_iface, "Count"}));
  EXPECT_EQ(get.out, "(<uint32 " + count + ">,)\n") << get.err;
  const run_result all = run(gdbus_call("org.freedesktop.DBus.Properties.GetAll", {echo_iface}));
  EXPECT_EQ(all.out, "({'Count': <uint32 " + count + ">},)\n") << all.err;

  // The acceptance point: gdbus introspect shows the interface with its methods (and argument
  // names), its signal and its property.
  const run_result intro =
      run({gdbus_bin, "introspect", "--address", address(), "--dest", echo_name, "--object-path", echo_path});
  ASSERT_TRUE(intro.status.exited(0)) << intro.err;
  const std::string expected =
      "  interface org.mcbus.Echo1 {\n"
      "    methods:\n"
      "      Echo(in  s text,\n"
      "           out s echoed);\n"
      "      EchoAny(in  v value,\n"
      "              out v value);\n"
      "      Sum(in  ai numbers,\n"
      "          out x sum);\n"
      "      ReadFd(in  h fd,\n"
      "             out s line);\n"
      "    signals:\n"
      "      Echoed(s text);\n"
      "    properties:\n"
      "      readonly u Count = " +
      count + ";\n  };\n";
  EXPECT_NE(intro.out.find(expected), std::string::npos) << "expected:\n" << expected << "in:\n" << intro.out;
  EXPECT_EQ(intro.out.rfind("node /org/mcbus/Echo {\n", 0), 0u) << intro.out;
  for (const char* std_iface :
       {"org.freedesktop.DBus.Properties", "org.freedesktop.DBus.Introspectable", "org.freedesktop.DBus.Peer"}) {
    EXPECT_NE(intro.out.find(std::string("  interface ") + std_iface + " {"), std::string::npos) << std_iface;
  }
}

TEST_P(Peers, DbusSend) {
  MCBUS_NEED_PROGRAM(dbus_send_bin);
  ASSERT_TRUE(echo_service());
  // --bus= registers with Hello; --address= would treat the bus as a peer.
  auto send = [&](std::string method, std::vector<std::string> args, const char* print = "--print-reply") {
    std::vector<std::string> a{dbus_send_bin, "--bus=" + address(), print, std::string("--dest=") + echo_name,
                               echo_path,     std::move(method)};
    a.insert(a.end(), args.begin(), args.end());
    return a;
  };
  // The first line is the reply's header (with a time and serials); the arguments follow.
  auto body = [](const run_result& r) {
    EXPECT_EQ(r.out.rfind("method return ", 0), 0u) << r.out << r.err;
    const auto nl = r.out.find('\n');
    return nl == std::string::npos ? std::string() : r.out.substr(nl + 1);
  };
  const std::vector<run_result> r = run_all({
      send("org.mcbus.Echo1.EchoAny", {"variant:int32:-7"}),
      send("org.mcbus.Echo1.EchoAny", {"variant:string:a b"}),
      send("org.mcbus.Echo1.Sum", {"array:int32:1,-2,3,2147483647"}),
      send("org.freedesktop.DBus.Introspectable.Introspect", {}, "--print-reply=literal"),
  });
  EXPECT_EQ(body(r[0]), "   variant       int32 -7\n");
  EXPECT_EQ(body(r[1]), "   variant       string \"a b\"\n");
  EXPECT_EQ(body(r[2]), "   int64 2147483649\n");
  const std::string& xml = r[3].out;
  EXPECT_TRUE(r[3].status.exited(0)) << r[3].err;
  for (const char* part : {"<interface name=\"org.mcbus.Echo1\">", "<method name=\"Echo\">",
                           "<arg type=\"s\" name=\"text\" direction=\"in\"/>", "<method name=\"ReadFd\">",
                           "<signal name=\"Echoed\">", "<property name=\"Count\" type=\"u\" access=\"read\"/>"}) {
    EXPECT_NE(xml.find(part), std::string::npos) << part << " is not in:\n" << xml;
  }

  // dbus-send has no type for a unix fd; should one come, ReadFd must work with it.
  spawn_options with_fd;
  with_fd.files.push_back({3, fd_file()});
  const run_result fd = run(send("org.mcbus.Echo1.ReadFd", {"unix_fd:3"}), with_fd);
  if (fd.status.exited(0)) {
    EXPECT_EQ(body(fd), std::string("   string \"") + fd_line + "\"\n");
  } else {
    EXPECT_NE(fd.err.find("Unknown type"), std::string::npos) << fd.err;
  }

  const unsigned before = count_now();
  EXPECT_EQ(body(run(send("org.mcbus.Echo1.Echo", {"string:dbus-send text"}))), "   string \"dbus-send text\"\n");
  const std::string count = std::to_string(before + 1);
  EXPECT_EQ(
      body(run(send("org.freedesktop.DBus.Properties.Get", {std::string("string:") + echo_iface, "string:Count"}))),
      "   variant       uint32 " + count + "\n");
  EXPECT_EQ(body(run(send("org.freedesktop.DBus.Properties.GetAll", {std::string("string:") + echo_iface}))),
            "   array [\n"
            "      dict entry(\n"
            "         string \"Count\"\n"
            "         variant             uint32 " +
                count +
                "\n"
                "      )\n"
                "   ]\n");
}

// python3-dbus calls everything and receives both signals (python_peer.py); this checks its report.
TEST_P(Peers, Python) {
  MCBUS_NEED_PYTHON_DBUS();
  service* svc = echo_service();
  ASSERT_TRUE(svc);
  const run_result r =
      run({python_bin, std::string(script_dir) + "/python_peer.py", address(), fd_file(), "py \"text\""});
  ASSERT_TRUE(r.status.exited(0)) << r.status.describe() << "\n" << r.out << r.err;
  std::map<std::string, std::vector<std::vector<std::string>>> rows;
  for (const std::string& line : lines_of(r.out)) {
    std::vector<std::string> fields;
    std::size_t start = 0;
    for (std::size_t tab; (tab = line.find('\t', start)) != std::string::npos; start = tab + 1) {
      fields.push_back(line.substr(start, tab - start));
    }
    fields.push_back(line.substr(start));
    rows[fields[0]].push_back(std::vector<std::string>(fields.begin() + 1, fields.end()));
  }
  using row = std::vector<std::string>;
  using table = std::vector<row>;
  ASSERT_EQ(rows["CountBefore"].size(), 1u) << r.out;
  const unsigned before = static_cast<unsigned>(std::stoul(rows["CountBefore"][0][1]));
  const std::string after = std::to_string(before + 1);
  EXPECT_EQ(rows["CountBefore"][0][0], "UInt32");
  EXPECT_EQ(rows["Echo"], (table{{"String", "py \"text\""}}));
  EXPECT_EQ(rows["EchoAny"], (table{{"Int32", "same"},
                                    {"String", "same"},
                                    {"Array", "same"},
                                    {"Struct", "same"},
                                    {"Dictionary", "same"},
                                    {"Boolean", "same"}}));
  EXPECT_EQ(rows["Sum"], (table{{"Int64", "2147483653"}}));
  EXPECT_EQ(rows["ReadFd"], (table{{"String", fd_line}}));
  EXPECT_EQ(rows["CountAfter"], (table{{"UInt32", after}}));
  EXPECT_EQ(rows["GetAll"], (table{{"Count=UInt32:" + after}}));
  EXPECT_EQ(rows["Introspect"], (table{{"method", "Echo", "s", "s"},
                                       {"method", "EchoAny", "v", "v"},
                                       {"method", "Sum", "ai", "x"},
                                       {"method", "ReadFd", "h", "s"},
                                       {"signal", "Echoed", "s"},
                                       {"property", "Count", "u", "read"}}));
  // Both signals come from the echo-service's connection, in the order it sent them.
  EXPECT_EQ(rows["Signal"],
            (table{{"Echoed", "py \"text\"", svc->unique_name},
                   {"PropertiesChanged", "org.mcbus.Echo1|Count=UInt32:" + after + "|", svc->unique_name}}));
}

MCBUS_INTEGRATION_INSTANTIATE(Peers);

}  // namespace
}  // namespace mcbus_integration
