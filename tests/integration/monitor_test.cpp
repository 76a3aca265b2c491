// mcbus-monitor against dbus-monitor: both watch the same bus at the same time, busctl and
// python3-dbus make traffic to the echo-service, and the two must print the same thing for it, time
// stamps and serials aside. Signals from the test itself mark where the compared part starts and
// ends, so that nothing depends on timing.
#include <unistd.h>

#include <regex>
#include <string>

#include "integration.hpp"

namespace mcbus_integration {
namespace {

constexpr mcbus::object_path_view marker_path = "/org/mcbus/Marker";
constexpr mcbus::interface_name marker_iface = "org.mcbus.Test.Marker";
constexpr const char* marker_rule = "type='signal',interface='org.mcbus.Test.Marker'";

class Monitor : public integration_test {
 protected:
  void SetUp() override {
    integration_test::SetUp();
    if (IsSkipped()) return;
    MCBUS_NEED_PROGRAM(dbus_monitor_bin);
    MCBUS_NEED_PROGRAM(busctl_bin);
  }

  std::unique_ptr<child> start_monitor(bool mcbus, const std::vector<std::string>& rules) {
    std::vector<std::string> argv;
    if (mcbus) {
      argv = {monitor_bin, "--address=" + address()};
    } else {
      argv = {dbus_monitor_bin, "--address", address()};
    }
    argv.insert(argv.end(), rules.begin(), rules.end());
    std::string why;
    auto c = child::start(argv, mcbus ? mcbus_env() : spawn_options{}, why);
    EXPECT_TRUE(c) << why;
    return c;
  }

  void mark(const std::string& member, const std::string& token) {
    mcbus::connection* conn = own_connection();
    ASSERT_TRUE(conn);
    mcbus::message m = mcbus::message::signal(marker_path, marker_iface, *mcbus::member_name::from(member));
    m.append(token);
    auto sent = conn->send(std::move(m));
    ASSERT_TRUE(sent) << sent.error().message();
  }

  // Sends marker signals until every monitor has printed one: then all of them are monitoring.
  void wait_until_monitoring(const std::vector<child*>& monitors) {
    const auto deadline = clock::now() + 20s;
    for (int k = 0; clock::now() < deadline; ++k) {
      const std::string token = "probe " + std::to_string(k);
      mark("Probe", token);
      bool all = true;
      for (child* m : monitors) all = all && m->wait_for_output("   string \"" + token + "\"\n", 250ms);
      if (all) return;
    }
    for (child* m : monitors) ADD_FAILURE() << "a monitor did not start:\n" << m->out() << m->err();
  }

  // What a monitor printed between the Begin and End markers, without times and serials.
  static std::string between_markers(const std::string& out, const std::string& token) {
    const std::string arg = "\n   string \"" + token + "\"\n";
    const auto begin = out.find("member=Begin" + arg);
    const auto end = out.find("member=End" + arg);
    if (begin == std::string::npos || end == std::string::npos || end < begin) return "(markers missing)";
    const auto from = begin + std::string("member=Begin").size() + arg.size();
    const auto to = out.rfind('\n', end) + 1;
    std::string s = out.substr(from, to - from);
    s = std::regex_replace(s, std::regex(" time=[0-9]+\\.[0-9]+"), "");
    return std::regex_replace(s, std::regex("serial=[0-9]+"), "serial=*");
  }

  // Marks the start, makes the traffic, marks the end, and returns both monitors' view of it.
  std::pair<std::string, std::string> observe(child& dbus_mon, child& mcbus_mon, const std::function<void()>& traffic) {
    const std::string token = "run of " + std::string(testing::UnitTest::GetInstance()->current_test_info()->name());
    mark("Begin", token);
    traffic();
    mark("End", token);
    const std::string end = "member=End\n   string \"" + token + "\"\n";
    EXPECT_TRUE(dbus_mon.wait_for_output(end, 20s)) << dbus_mon.out() << dbus_mon.err();
    EXPECT_TRUE(mcbus_mon.wait_for_output(end, 20s)) << mcbus_mon.out() << mcbus_mon.err();
    return {between_markers(dbus_mon.out(), token), between_markers(mcbus_mon.out(), token)};
  }

  void stop(child& mcbus_mon) {
    const exit_status s = mcbus_mon.terminate(SIGTERM, 10s);
    EXPECT_TRUE(s.exited(0)) << "mcbus-monitor on SIGTERM: " << s.describe() << "\n" << mcbus_mon.err();
  }

  // Like EXPECT_EQ, but a long text is shown from its first differing line, not whole.
  static void expect_same_text(const std::string& mcbus_text, const std::string& dbus_text) {
    if (mcbus_text == dbus_text) return;
    const std::vector<std::string> a = lines_of(mcbus_text), b = lines_of(dbus_text);
    std::size_t i = 0;
    while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
    auto around = [&](const std::vector<std::string>& l) {
      std::string s;
      for (std::size_t k = i >= 3 ? i - 3 : 0; k < l.size() && k < i + 4; ++k) {
        s += (k == i ? "> " : "  ") + l[k] + "\n";
      }
      return s;
    };
    ADD_FAILURE() << "mcbus-monitor and dbus-monitor differ at line " << i + 1 << " of " << b.size()
                  << "\nmcbus-monitor:\n"
                  << around(a) << "dbus-monitor:\n"
                  << around(b);
  }

  static std::size_t count(const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  }
};

TEST_P(Monitor, PrintsWhatDbusMonitorPrints) {
  ASSERT_TRUE(echo_service());
  auto dmon = start_monitor(false, {});
  ASSERT_TRUE(dmon);
  // dbus-monitor is monitoring once it has lost its unique name; started after it, mcbus-monitor
  // becomes a monitor in front of it.
  ASSERT_TRUE(dmon->wait_for_output("member=NameLost\n", 20s)) << dmon->out() << dmon->err();
  auto mmon = start_monitor(true, {});
  ASSERT_TRUE(mmon);
  wait_until_monitoring({dmon.get(), mmon.get()});

  // mcbus-monitor used BecomeMonitor, the bus said yes, and took its unique name away.
  std::smatch call;
  const std::regex become(
      "method call time=[0-9.]+ sender=(:[0-9.]+) -> destination=org.freedesktop.DBus serial=([0-9]+) "
      "path=/org/freedesktop/DBus; interface=org.freedesktop.DBus.Monitoring; member=BecomeMonitor\n");
  const std::string& seen = dmon->out();
  ASSERT_TRUE(std::regex_search(seen, call, become)) << "dbus-monitor did not see mcbus-monitor's BecomeMonitor:\n"
                                                     << seen;
  const std::string me = call[1], serial = call[2];
  EXPECT_TRUE(
      std::regex_search(seen, std::regex("method return time=[0-9.]+ sender=org.freedesktop.DBus -> destination=" + me +
                                         " serial=[0-9]+ reply_serial=" + serial + "\n")))
      << seen;
  EXPECT_EQ(seen.find("error_name=org.freedesktop.DBus.Error.AccessDenied"), std::string::npos) << seen;
  EXPECT_NE(mmon->out().find("destination=" + me + " serial="), std::string::npos) << mmon->out();
  EXPECT_NE(mmon->out().find("member=NameLost\n   string \"" + me + "\"\n"), std::string::npos) << mmon->out();
  EXPECT_EQ(mmon->err(), "") << "mcbus-monitor fell back to eavesdropping?";

  const std::string fd_file = scratch_file("monitor-fd.txt", "through the monitor\n");
  auto [dbus_view, mcbus_view] = observe(*dmon, *mmon, [&] {
    std::vector<std::vector<std::string>> calls;
    auto any = [&](std::vector<std::string> v) {
      std::vector<std::string> c{"call", "--", echo_name, echo_path, echo_iface, "EchoAny", "v"};
      c.insert(c.end(), v.begin(), v.end());
      calls.push_back(busctl(c));
    };
    calls.push_back(busctl({"call", echo_name, echo_path, echo_iface, "Echo", "s", "quote\" tab\t back\\ \xc3\xa9"}));
    calls.push_back(busctl({"call", echo_name, echo_path, echo_iface, "Sum", "ai", "3", "1", "2", "3"}));
    calls.push_back(busctl({"call", echo_name, echo_path, echo_iface, "NoSuchMethod"}));
    calls.push_back(busctl({"get-property", echo_name, echo_path, echo_iface, "Count"}));
    any({"y", "255"});
    any({"b", "false"});
    any({"n", "-32768"});
    any({"q", "65535"});
    any({"u", "4294967295"});
    any({"x", "-9223372036854775808"});
    any({"t", "18446744073709551615"});
    for (const char* d : {"0", "-0", "1e-7", "1e100", "nan", "-inf", "0.1"}) any({"d", d});
    any({"s", "new\nline"});
    any({"o", "/a/b"});
    any({"g", "a{sv}"});
    any({"ay", "3", "65", "66", "67"});
    any({"ay", "4", "65", "66", "67", "0"});
    any({"ay", "0"});
    std::vector<std::string> bytes{"ay", "70"};
    for (int i = 0; i < 70; ++i) bytes.push_back(std::to_string(i * 3));
    any(bytes);
    any({"as", "0"});
    any({"as", "2", "a", "b"});
    any({"a{ix}", "2", "-1", "1", "2", "-2"});
    any({"(ia{sv})", "5", "1", "k", "v", "v", "ay", "2", "1", "2"});
    any({"a{sv}", "2", "deep", "v", "v", "v", "(yv)", "1", "as", "1", "x", "bytes", "ay", "2", "72", "105"});
    any({"aay", "2", "1", "0", "0"});
    run_all(calls, {}, 2);
    // Fds (a file, a pipe, a socket: each is described its own way), and a call without an
    // interface: what busctl cannot send.
    if (python_dbus_missing().empty()) {
      const run_result py = run({python_bin, "-c",
                                 "import os, socket, sys, dbus\n"
                                 "b = dbus.bus.BusConnection(sys.argv[1])\n"
                                 "o = b.get_object('org.mcbus.Echo', '/org/mcbus/Echo', introspect=False)\n"
                                 "read = lambda f: o.ReadFd(dbus.types.UnixFd(f), dbus_interface='org.mcbus.Echo1')\n"
                                 "print(read(open(sys.argv[2])))\n"
                                 "r, w = os.pipe()\n"
                                 "os.write(w, b'through a pipe\\n')\n"
                                 "print(read(r))\n"
                                 "s1, s2 = socket.socketpair()\n"
                                 "s2.sendall(b'through a socket\\n')\n"
                                 "print(read(s1))\n"
                                 "print(len(o.Introspect()) > 0)\n",
                                 address(), fd_file});
      EXPECT_TRUE(py.status.exited(0)) << py.err;
    }
  });
  expect_same_text(mcbus_view, dbus_view);
  // The comparison covered what it should.
  for (const char* part :
       {"member=EchoAny", "member=Echoed", "member=PropertiesChanged", "\nmethod return ", "\nerror ",
        "array of bytes \"ABC\"\n", "array of bytes \"ABC\" + \\0\n", "array of bytes [\n", "variant       "}) {
    EXPECT_NE(dbus_view.find(part), std::string::npos) << part << " is not in:\n" << dbus_view;
  }
  if (python_dbus_missing().empty()) {
    for (const char* part : {"type: file\n", "type: fifo\n", "type: socket\n", "address family: unix\n"}) {
      EXPECT_NE(dbus_view.find(part), std::string::npos) << part << " is not in:\n" << dbus_view;
    }
    EXPECT_NE(dbus_view.find("; interface=(null); member=Introspect\n"), std::string::npos) << dbus_view;
  }
  stop(*mmon);
}

TEST_P(Monitor, RulesRestrictWhatIsPrinted) {
  ASSERT_TRUE(echo_service());
  const std::vector<std::string> rules = {"type='signal',interface='org.mcbus.Echo1'",
                                          "type='method_call',member='Sum'", marker_rule};
  auto dmon = start_monitor(false, rules);
  auto mmon = start_monitor(true, rules);
  ASSERT_TRUE(dmon && mmon);
  wait_until_monitoring({dmon.get(), mmon.get()});
  auto [dbus_view, mcbus_view] = observe(*dmon, *mmon, [&] {
    for (const auto& c : {busctl({"call", echo_name, echo_path, echo_iface, "Echo", "s", "ruled"}),
                          busctl({"call", echo_name, echo_path, echo_iface, "Sum", "ai", "1", "5"}),
                          busctl({"call", echo_name, echo_path, echo_iface, "EchoAny", "v", "i", "1"})}) {
      EXPECT_TRUE(run(c).status.exited(0));
    }
  });
  expect_same_text(mcbus_view, dbus_view);
  // Exactly the Echoed signal and the Sum call got through; no reply, no PropertiesChanged.
  std::vector<std::string> headers;
  for (const std::string& line : lines_of(mcbus_view)) {
    if (!line.empty() && line[0] != ' ') headers.push_back(line);
  }
  ASSERT_EQ(headers.size(), 2u) << mcbus_view;
  EXPECT_NE(headers[0].find("; interface=org.mcbus.Echo1; member=Echoed"), std::string::npos) << headers[0];
  EXPECT_EQ(headers[0].rfind("signal ", 0), 0u) << headers[0];
  EXPECT_NE(headers[1].find("; interface=org.mcbus.Echo1; member=Sum"), std::string::npos) << headers[1];
  EXPECT_EQ(headers[1].rfind("method call ", 0), 0u) << headers[1];
  EXPECT_EQ(count(mcbus_view, "PropertiesChanged"), 0u);
  EXPECT_EQ(mmon->err(), "");
  stop(*mmon);
}

// As any user but root and the bus's own, BecomeMonitor is refused, and so may be eavesdropping
// (dbus-daemon 1.14 answers AccessDenied, dbus-broker MatchRuleInvalid): mcbus-monitor must then
// carry on with plain rules, and still print the broadcasts that they match.
TEST_P(Monitor, AsAnotherUserFallsBackToBroadcasts) {
  if (::geteuid() != 0) GTEST_SKIP() << "running mcbus-monitor as nobody needs root";
  MCBUS_NEED_PROGRAM(setpriv_bin);
  // --pdeathsig again, after the switch: the kernel clears the one the outer setpriv set when the
  // user changes.
  const std::vector<std::string> as_nobody = {
      setpriv_bin, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--pdeathsig", "KILL", "--", monitor_bin};
  std::vector<std::string> argv = as_nobody;
  argv.push_back("--help");
  const run_result help = run(argv);
  if (!help.status.exited(0)) {
    GTEST_SKIP() << "cannot run " << monitor_bin << " as nobody (" << help.status.describe() << "): " << help.err;
  }

  const std::string ping_rule = "type='signal',interface='org.mcbus.Test.Ping'";
  argv = as_nobody;
  argv.insert(argv.end(), {"--address=" + address(), marker_rule, ping_rule});
  std::string why;
  auto mmon = child::start(argv, mcbus_env(), why);
  ASSERT_TRUE(mmon) << why;
  wait_until_monitoring({mmon.get()});

  // The second rule works too: after a refusal, the rules that follow are added plain at once.
  mcbus::connection* conn = own_connection();
  ASSERT_TRUE(conn);
  const std::string token = "ping for nobody";
  mcbus::message ping = mcbus::message::signal(marker_path, "org.mcbus.Test.Ping", "Ping");
  ping.append(token);
  auto sent = conn->send(std::move(ping));
  ASSERT_TRUE(sent) << sent.error().message();
  ASSERT_TRUE(mmon->wait_for_output("member=Ping\n   string \"" + token + "\"\n", 20s)) << mmon->out() << mmon->err();
  EXPECT_TRUE(std::regex_search(mmon->out(), std::regex("\nsignal time=[0-9.]+ sender=" + conn->unique_name() +
                                                        " -> destination=\\(null destination\\) serial=[0-9]+ "
                                                        "path=/org/mcbus/Marker; interface=org.mcbus.Test.Ping; "
                                                        "member=Ping\n")))
      << mmon->out();

  // Either the bus let nobody eavesdrop, or mcbus-monitor said in one line that it does without.
  const std::vector<std::string> err = lines_of(mmon->err());
  ASSERT_GE(err.size(), 1u) << mmon->err();
  EXPECT_EQ(err[0],
            "mcbus-monitor: BecomeMonitor refused (org.freedesktop.DBus.Error.AccessDenied); eavesdropping instead");
  if (err.size() > 1) {
    EXPECT_EQ(err.size(), 2u) << mmon->err();
    EXPECT_TRUE(std::regex_match(
        err[1], std::regex("mcbus-monitor: eavesdropping refused \\(org\\.freedesktop\\.DBus\\.Error\\."
                           "[A-Za-z]+\\); showing only broadcasts and messages "
                           "addressed to this monitor")))
        << err[1];
  }
  stop(*mmon);
}

// An invalid rule is a usage error, found before anything is printed.
TEST_P(Monitor, InvalidRuleIsAUsageError) {
  const run_result r = run({monitor_bin, "--address=" + address(), "type='nonsense'"}, mcbus_env());
  EXPECT_TRUE(r.status.exited(2)) << r.status.describe();
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("invalid match rule"), std::string::npos) << r.err;
}

MCBUS_INTEGRATION_INSTANTIATE(Monitor);

}  // namespace
}  // namespace mcbus_integration
