// The echo-service as a process: other programs receive its signals (gdbus monitor, dbus-monitor;
// python3-dbus in peers_test.cpp), the echo-client example works against it, and it exits cleanly
// on SIGTERM.
#include <string>

#include "integration.hpp"

namespace mcbus_integration {
namespace {

class EchoService : public integration_test {
 protected:
  unsigned count_now() {
    const run_result r = run(busctl({"get-property", echo_name, echo_path, echo_iface, "Count"}));
    EXPECT_TRUE(r.status.exited(0)) << r.err;
    return r.out.size() > 2 ? static_cast<unsigned>(std::stoul(r.out.substr(2))) : 0;
  }
  run_result echo(const std::string& text) {
    return run(busctl({"call", echo_name, echo_path, echo_iface, "Echo", "s", text}));
  }
};

TEST_P(EchoService, SignalsSeenByGdbusMonitor) {
  MCBUS_NEED_PROGRAM(gdbus_bin);
  MCBUS_NEED_PROGRAM(busctl_bin);
  ASSERT_TRUE(echo_service());
  std::string why;
  auto mon = child::start({gdbus_bin, "monitor", "--address", address(), "--dest", echo_name}, {}, why);
  ASSERT_TRUE(mon) << why;
  // gdbus subscribes before it asks who owns the name, so once it says, its match rule is in place.
  ASSERT_TRUE(mon->wait_for_output(std::string("The name ") + echo_name + " is owned by ", 20s))
      << mon->out() << mon->err();
  const unsigned count = count_now() + 1;
  ASSERT_TRUE(echo("to gdbus").status.exited(0));
  const std::string echoed = "/org/mcbus/Echo: org.mcbus.Echo1.Echoed ('to gdbus',)\n";
  const std::string changed =
      "/org/mcbus/Echo: org.freedesktop.DBus.Properties.PropertiesChanged "
      "('org.mcbus.Echo1', {'Count': <uint32 " +
      std::to_string(count) + ">}, @as [])\n";
  EXPECT_TRUE(mon->wait_for_output(changed, 20s)) << "gdbus monitor printed:\n" << mon->out() << mon->err();
  const auto at_echoed = mon->out().find(echoed);
  EXPECT_NE(at_echoed, std::string::npos) << mon->out();
  EXPECT_LT(at_echoed, mon->out().find(changed)) << "Echoed is sent before PropertiesChanged";
}

TEST_P(EchoService, SignalsSeenByDbusMonitor) {
  MCBUS_NEED_PROGRAM(dbus_monitor_bin);
  MCBUS_NEED_PROGRAM(busctl_bin);
  service* svc = echo_service();
  ASSERT_TRUE(svc);
  std::string why;
  auto mon = child::start({dbus_monitor_bin, "--address", address(), "type='signal',sender='org.mcbus.Echo'"}, {}, why);
  ASSERT_TRUE(mon) << why;
  // Becoming a monitor takes its unique name away, which the bus announces to it last.
  ASSERT_TRUE(mon->wait_for_output("member=NameLost\n", 20s)) << mon->out() << mon->err();
  const unsigned count = count_now() + 1;
  ASSERT_TRUE(echo("to dbus-monitor").status.exited(0));
  const std::string header = "sender=" + svc->unique_name + " -> destination=(null destination) serial=";
  const std::string changed_args =
      "   string \"org.mcbus.Echo1\"\n"
      "   array [\n"
      "      dict entry(\n"
      "         string \"Count\"\n"
      "         variant             uint32 " +
      std::to_string(count) +
      "\n"
      "      )\n"
      "   ]\n"
      "   array [\n"
      "   ]\n";
  EXPECT_TRUE(mon->wait_for_output(changed_args, 20s)) << "dbus-monitor printed:\n" << mon->out() << mon->err();
  const std::string& o = mon->out();
  EXPECT_NE(o.find(header), std::string::npos) << o;
  EXPECT_NE(o.find(" path=/org/mcbus/Echo; interface=org.mcbus.Echo1; member=Echoed\n   string \"to dbus-monitor\"\n"),
            std::string::npos)
      << o;
  EXPECT_NE(o.find(" path=/org/mcbus/Echo; interface=org.freedesktop.DBus.Properties; member=PropertiesChanged\n" +
                   changed_args),
            std::string::npos)
      << o;
  EXPECT_EQ(o.find("method call"), std::string::npos) << "the rule lets only signals through:\n" << o;
}

TEST_P(EchoService, EchoClientPasses) {
  ASSERT_TRUE(echo_service());
  const run_result r = run({echo_client_bin, "--address=" + address(), "from echo-client"}, mcbus_env());
  EXPECT_TRUE(r.status.exited(0)) << r.status.describe() << "\n" << r.out << r.err;
  EXPECT_NE(r.out.find("Echo(\"from echo-client\") -> \"from echo-client\"\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("EchoAny(<int32 42>) -> <i 42>\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Sum([1, 2, 3, 2147483647]) -> 2147483653\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ReadFd(<pipe>) -> \"a line through a pipe\"\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Echoed signal: \"from echo-client\"\n"), std::string::npos) << r.out;
}

TEST_P(EchoService, ExitsCleanlyOnSigterm) {
  MCBUS_NEED_PROGRAM(busctl_bin);
  service* svc = echo_service();
  ASSERT_TRUE(svc);
  const unsigned count = count_now();
  ASSERT_EQ(echo("one more").out, "s \"one more\"\n");
  const run_result stopped = stop_echo_service();
  EXPECT_TRUE(stopped.status.exited(0)) << stopped.status.describe() << "\n" << stopped.out << stopped.err;
  // It left its loop and returned from main: the last thing it does is to say so.
  EXPECT_NE(stopped.out.find("echo-service: stopped after " + std::to_string(count + 1) + " echoes\n"),
            std::string::npos)
      << stopped.out;
  EXPECT_EQ(stopped.err, "");
  // A new instance starts from zero on the next use; this one is gone.
  ASSERT_TRUE(echo_service());
  EXPECT_EQ(count_now(), 0u) << "the restarted service still counts from " << count + 1;
}

MCBUS_INTEGRATION_INSTANTIATE(EchoService);

}  // namespace
}  // namespace mcbus_integration
