// mcbus-call against `busctl call`: the same command line must give the same stdout and exit status,
// for arguments of every type sent to the echo-service (EchoAny) and to a python3-dbus service
// (EchoArgs, any signature), and for replies of every type from that python3-dbus service.
#include <regex>

#include "integration.hpp"

namespace mcbus_integration {
namespace {

using args = std::vector<std::string>;

struct both {
  run_result busctl, mcbus;
};

class CallVsBusctl : public integration_test {
 protected:
  // Runs every call (SERVICE OBJECT INTERFACE METHOD [SIGNATURE ARGUMENT...]) with both tools. A
  // "--" ends the options of both, so that negative numbers are arguments.
  std::vector<both> call_both(const std::vector<args>& calls) {
    std::vector<args> commands;
    for (const args& c : calls) {
      args b{"call", "--"}, m{"--"};
      b.insert(b.end(), c.begin(), c.end());
      m.insert(m.end(), c.begin(), c.end());
      commands.push_back(busctl(b));
      commands.push_back(mcbus_call(m));
    }
    const std::vector<run_result> r = run_all(commands, mcbus_env());
    std::vector<both> out;
    for (std::size_t i = 0; i < r.size(); i += 2) out.push_back({r[i], r[i + 1]});
    return out;
  }

  // Expects identical stdout and exit status; `accepted` says whether busctl must succeed.
  void expect_same(const std::vector<args>& calls, bool accepted = true) {
    const std::vector<both> results = call_both(calls);
    for (std::size_t i = 0; i < calls.size(); ++i) {
      std::string shown;
      for (const std::string& a : calls[i]) shown += " '" + a + "'";
      SCOPED_TRACE("call" + shown);
      const both& r = results[i];
      if (accepted) {
        EXPECT_TRUE(r.busctl.status.exited(0)) << "busctl: " << r.busctl.status.describe() << ": " << r.busctl.err;
      }
      EXPECT_EQ(r.mcbus.out, r.busctl.out) << "mcbus-call stderr: " << r.mcbus.err;
      EXPECT_EQ(r.mcbus.status.code, r.busctl.status.code)
          << "mcbus-call " << r.mcbus.status.describe() << ": " << r.mcbus.err << "\nbusctl "
          << r.busctl.status.describe() << ": " << r.busctl.err;
      EXPECT_EQ(r.mcbus.status.signal, 0);
    }
  }

  // EchoAny calls on the echo-service, one per variant argument.
  std::vector<args> echo_any(const std::vector<args>& variants) {
    std::vector<args> calls;
    for (const args& v : variants) {
      args c{echo_name, echo_path, echo_iface, "EchoAny", "v"};
      c.insert(c.end(), v.begin(), v.end());
      calls.push_back(std::move(c));
    }
    return calls;
  }

  // EchoArgs calls on the python3-dbus service, one per signature and its arguments.
  std::vector<args> echo_args(const std::vector<args>& arg_lists) {
    std::vector<args> calls;
    for (const args& a : arg_lists) {
      args c{types_name, types_path, types_iface, "EchoArgs"};
      c.insert(c.end(), a.begin(), a.end());
      calls.push_back(std::move(c));
    }
    return calls;
  }

  void SetUp() override {
    integration_test::SetUp();
    if (IsSkipped()) return;
    MCBUS_NEED_PROGRAM(busctl_bin);
  }
};

// Strings that need escaping in busctl's output, or that printf-style code could mangle.
const std::vector<std::string> tricky_strings = {
    "",
    "plain",
    "double \"quotes\"",
    "single 'quotes'",
    "back\\slash \\n",
    "tab\there",
    "new\nline",
    "carriage\rreturn",
    "bell\a backspace\b formfeed\f vtab\v",
    "controls \x01\x02\x1b\x1f delete \x7f",
    "C1 \xc2\x85 nbsp \xc2\xa0",
    "h\xc3\xa9llo \xe2\x82\xac \xe2\x98\x83 \xf0\x9d\x84\x9e \xe4\xb8\xad",
    "printf %s %d %n %% {}",
    "  spaces  ",
    std::string(300, 'x'),
};

// Doubles as busctl parses them (strtod) and prints them (%g).
const std::vector<std::string> tricky_doubles = {"0",
                                                 "-0",
                                                 "1",
                                                 "-2.5",
                                                 "0.1",
                                                 "1e-7",
                                                 "1e100",
                                                 "1.7976931348623157e308",
                                                 "2.2250738585072014e-308",
                                                 "100000",
                                                 "1000000",
                                                 "123456789",
                                                 "3.141592653589793",
                                                 "nan",
                                                 "-nan",
                                                 "inf",
                                                 "-inf",
                                                 "infinity",
                                                 "0x1p-3",
                                                 "1E5",
                                                 ".5",
                                                 "5.",
                                                 "  7"};

TEST_P(CallVsBusctl, EchoAnyBasicTypes) {
  ASSERT_TRUE(echo_service());
  std::vector<args> v = {
      {"y", "0"},
      {"y", "255"},
      {"b", "true"},
      {"b", "false"},
      {"n", "-32768"},
      {"n", "32767"},
      {"q", "0"},
      {"q", "65535"},
      {"i", "-2147483648"},
      {"i", "2147483647"},
      {"u", "4294967295"},
      {"x", "-9223372036854775808"},
      {"x", "9223372036854775807"},
      {"t", "18446744073709551615"},
      {"o", "/"},
      {"o", "/org/mcbus/a_b/C9"},
      {"g", ""},
      {"g", "a{sv}(ii)aav"},
  };
  for (const std::string& d : tricky_doubles) v.push_back({"d", d});
  for (const std::string& s : tricky_strings) v.push_back({"s", s});
  expect_same(echo_any(v));
}

TEST_P(CallVsBusctl, EchoAnyContainers) {
  ASSERT_TRUE(echo_service());
  expect_same(echo_any({
      {"ay", "0"},
      {"ay", "5", "0", "1", "65", "127", "255"},
      {"aay", "3", "2", "1", "2", "0", "1", "122"},
      {"as", "0"},
      {"as", "3", "a b", "", "new\nline"},
      {"ai", "4", "-1", "0", "1", "2147483647"},
      {"aai", "2", "2", "1", "2", "0"},
      {"aaas", "1", "2", "1", "x", "0"},
      {"ad", "3", "0.5", "-0", "nan"},
      {"ab", "2", "true", "false"},
      {"av", "3", "i", "1", "s", "two", "ay", "0"},
      {"(isb)", "-1", "s", "true"},
      {"((ii)(s(d)))", "1", "2", "a", "0.25"},
      {"a(sy)", "2", "a", "1", "b", "2"},
      {"(asi)", "0", "9"},
      {"a{sv}", "0"},
      {"a{sv}", "3", "int", "i", "1", "str", "s", "v", "list", "as", "1", "x"},
      {"a{ss}", "2", "key", "value", "quote\"d", "tab\tbed"},
      {"a{ix}", "3", "-1", "-9223372036854775808", "0", "0", "2147483647", "1"},
      {"a{sa{sv}}", "1", "outer", "1", "inner", "v", "b", "true"},
      {"a{yd}", "2", "0", "1.5", "255", "-1e-5"},
      {"v", "i", "3"},
      {"v", "v", "v", "s", "deep"},
      {"v", "a{sv}", "1", "k", "v", "v", "ay", "1", "0"},
      {"a{sv}", "1", "k", "v", "(iv)", "1", "v", "ai", "0"},
  }));
}

TEST_P(CallVsBusctl, EchoArgsTopLevelSignatures) {
  MCBUS_NEED_PYTHON_DBUS();
  ASSERT_TRUE(types_service());
  std::vector<args> a = {
      {},
      {"s", "one"},
      {"sxdayv(ii)", "a", "-5", "2.5", "2", "1", "2", "v", "s", "x", "1", "2"},
      {"ybnqiuxtd", "255", "true", "-1", "1", "-2", "2", "-3", "3", "-0"},
      {"ssgo", "", "\xc3\xa9\"", "a{sv}", "/a"},
      {"asaiaa{sv}", "0", "0", "0"},
      {"a{sv}a{ss}", "1", "a", "v", "v", "v", "ay", "1", "0", "1", "k", "v"},
      {"vvv", "i", "1", "v", "s", "x", "as", "0"},
      {"(i(s(d(b))))", "1", "x", "2.5", "false"},
  };
  expect_same(echo_args(a));
}

// Spellings busctl accepts besides the plain ones (systemd's parse_boolean, safe_atoi and friends).
TEST_P(CallVsBusctl, InputSpellingsBusctlAccepts) {
  ASSERT_TRUE(echo_service());
  expect_same(echo_any({
      {"b", "TRUE"},
      {"b", "Yes"},
      {"b", "y"},
      {"b", "t"},
      {"b", "on"},
      {"b", "1"},
      {"b", "FALSE"},
      {"b", "No"},
      {"b", "n"},
      {"b", "f"},
      {"b", "OFF"},
      {"b", "0"},
      {"y", "0x10"},
      {"y", "010"},
      {"y", "0b11"},
      {"y", "0o17"},
      {"y", "0B1"},
      {"y", "0O7"},
      {"y", " 5"},
      {"y", "+5"},
      {"y", "-0"},
      {"q", "-0"},
      {"u", "-0"},
      {"t", "-0"},
      {"i", "+7"},
      {"i", "-0x10"},
      {"i", "0b101"},
      {"x", "0x7fffffffffffffff"},
      {"x", " \t-1"},
      {"t", "0xffffffffffffffff"},
      {"ai", "0x2", "1", "2"},
  }));
}

// What busctl refuses, mcbus-call refuses too: as a usage error (exit 2), with nothing on stdout.
TEST_P(CallVsBusctl, InputsBothRefuse) {
  ASSERT_TRUE(echo_service());
  const std::vector<args> refused = echo_any({
      {"y", "256"},
      {"y", "-1"},
      {"y", ""},
      {"y", "5 "},
      {"y", "x"},
      {"q", "65536"},
      {"n", "32768"},
      {"n", "-32769"},
      {"u", "-1"},
      {"u", "4294967296"},
      {"i", "2147483648"},
      {"i", "1e3"},
      {"x", "9223372036854775808"},
      {"t", "18446744073709551616"},
      {"t", "0x"},
      {"t", "-5"},
      {"b", "2"},
      {"b", ""},
      {"b", "truth"},
      {"d", ""},
      {"d", "1 "},
      {"d", "abc"},
      {"d", "1e400"},
      {"d", "-1e400"},
      {"d", "2.5e-310"},
      {"o", "no/slash"},
      {"o", "/trailing/"},
      {"g", "a"},
      {"g", "(i"},
      {"v", "ii", "1", "2"},
      {"v", "a", "0"},
      {"v"},
      {"s"},
      {"as", "2", "one"},
      {"as", "-1"},
      {"s", "a", "extra"},
      {"h", "0"},
      {"n", "-0o10"},  // the 0o prefix is looked for before the sign only
      {"i", "0b"},
  });
  const std::vector<both> results = call_both(refused);
  for (std::size_t i = 0; i < refused.size(); ++i) {
    std::string shown;
    for (const std::string& a : refused[i]) shown += " '" + a + "'";
    SCOPED_TRACE("call" + shown);
    EXPECT_NE(results[i].busctl.status.code, 0) << "busctl accepted it: " << results[i].busctl.out;
    EXPECT_TRUE(results[i].mcbus.status.exited(2))
        << results[i].mcbus.status.describe() << ": " << results[i].mcbus.out;
    EXPECT_EQ(results[i].mcbus.out, "");
    EXPECT_EQ(results[i].mcbus.err.rfind("mcbus-call: ", 0), 0u) << results[i].mcbus.err;
  }
}

// getopt ends the options at the first "--" wherever it is, and busctl uses getopt.
TEST_P(CallVsBusctl, DoubleDashAfterTheMethod) {
  ASSERT_TRUE(echo_service());
  const args tail = {echo_name, echo_path, echo_iface, "EchoAny", "v", "(xs)", "--", "-5", "--"};
  args b{"call"}, m;
  b.insert(b.end(), tail.begin(), tail.end());
  m.insert(m.end(), tail.begin(), tail.end());
  const run_result rb = run(busctl(b));
  const run_result rm = run(mcbus_call(m), mcbus_env());
  ASSERT_TRUE(rb.status.exited(0)) << rb.err;
  EXPECT_EQ(rb.out, "v (xs) -5 \"--\"\n");
  EXPECT_EQ(rm.out, rb.out) << rm.err;
  EXPECT_TRUE(rm.status.exited(0)) << rm.status.describe();
}

TEST_P(CallVsBusctl, RepliesOfEveryType) {
  MCBUS_NEED_PYTHON_DBUS();
  service* svc = types_service();
  ASSERT_TRUE(svc);
  ASSERT_GE(svc->cases.size(), 40u) << "types_service.py lists too few cases";
  std::vector<args> calls;
  for (const std::string& c : svc->cases) calls.push_back({types_name, types_path, types_iface, c});
  expect_same(calls);
}

// A reply with no body prints nothing at all.
TEST_P(CallVsBusctl, EmptyReply) {
  ASSERT_TRUE(echo_service());
  const std::vector<both> r = call_both({{echo_name, echo_path, "org.freedesktop.DBus.Peer", "Ping"}});
  EXPECT_TRUE(r[0].busctl.status.exited(0)) << r[0].busctl.err;
  EXPECT_TRUE(r[0].mcbus.status.exited(0)) << r[0].mcbus.err;
  EXPECT_EQ(r[0].busctl.out, "");
  EXPECT_EQ(r[0].mcbus.out, "");
}

// busctl prints a received fd by its number in busctl, so the numbers differ from process to
// process; mcbus-call must print its own fd number too (not the index in the message).
TEST_P(CallVsBusctl, UnixFdReply) {
  MCBUS_NEED_PYTHON_DBUS();
  ASSERT_TRUE(types_service());
  const std::vector<both> r = call_both({{types_name, types_path, types_iface, "UnixFd"}});
  const std::regex fd_line("h ([0-9]+)\n");
  std::smatch mb, mm;
  ASSERT_TRUE(std::regex_match(r[0].busctl.out, mb, fd_line)) << r[0].busctl.out << r[0].busctl.err;
  ASSERT_TRUE(std::regex_match(r[0].mcbus.out, mm, fd_line)) << r[0].mcbus.out << r[0].mcbus.err;
  EXPECT_GE(std::stoi(mm[1]), 3) << "an fd number is past stdin, stdout and stderr; 0 is the index in the message";
}

// D-Bus errors: busctl prints "Call failed: MESSAGE", mcbus-call "NAME: MESSAGE"; both exit 1.
TEST_P(CallVsBusctl, ErrorReplies) {
  ASSERT_TRUE(echo_service());
  struct error_case {
    args call;
    std::string name;  // the D-Bus error name mcbus-call must print
  };
  std::vector<error_case> cases = {
      {{echo_name, echo_path, echo_iface, "NoSuchMethod"}, "org.freedesktop.DBus.Error.UnknownMethod"},
      {{echo_name, echo_path, "org.mcbus.NoSuchInterface", "Echo", "s", "x"},
       "org.freedesktop.DBus.Error.UnknownInterface"},
      {{echo_name, echo_path, echo_iface, "Echo", "i", "1"}, "org.freedesktop.DBus.Error.InvalidArgs"},
      {{echo_name, echo_path, echo_iface, "Sum", "as", "1", "x"}, "org.freedesktop.DBus.Error.InvalidArgs"},
      {{"org.mcbus.NobodyHasThisName", "/", "org.mcbus.X", "Y"}, "org.freedesktop.DBus.Error.ServiceUnknown"},
      {{echo_name, echo_path, "org.freedesktop.DBus.Properties", "Get", "ss", echo_iface, "NoSuchProperty"},
       "org.freedesktop.DBus.Error.UnknownProperty"},
  };
  if (python_dbus_missing().empty() && types_service()) {
    cases.push_back({{types_name, types_path, types_iface, "Fail"}, "org.mcbus.Test.Error.Custom"});
    cases.push_back({{types_name, types_path, types_iface, "FailPython"}, "org.freedesktop.DBus.Python.ValueError"});
  }
  std::vector<args> calls;
  for (const error_case& c : cases) calls.push_back(c.call);
  const std::vector<both> results = call_both(calls);
  for (std::size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].call[3]);
    const both& r = results[i];
    EXPECT_TRUE(r.busctl.status.exited(1)) << r.busctl.status.describe();
    EXPECT_TRUE(r.mcbus.status.exited(1)) << r.mcbus.status.describe();
    EXPECT_EQ(r.mcbus.out, "");
    EXPECT_EQ(r.busctl.out, "");
    const std::string busctl_prefix = "Call failed: ";
    ASSERT_EQ(r.busctl.err.rfind(busctl_prefix, 0), 0u) << r.busctl.err;
    // busctl's log functions drop the newlines that end a message (a Python traceback has one).
    auto trimmed = [](std::string s) {
      while (!s.empty() && s.back() == '\n') s.pop_back();
      return s;
    };
    EXPECT_EQ(trimmed(r.mcbus.err), cases[i].name + ": " + trimmed(r.busctl.err.substr(busctl_prefix.size())));
  }
}

MCBUS_INTEGRATION_INSTANTIATE(CallVsBusctl);

// ---- usage: no bus needed ------------------------------------------------------------------

run_result call_tool(const args& a) {
  args argv{call_bin};
  argv.insert(argv.end(), a.begin(), a.end());
  return run(argv);
}

TEST(McbusCallUsage, BadCommandLinesExitTwo) {
  // An address nobody listens on: a usage error must be found before connecting.
  const std::string nowhere = "--address=unix:path=/nonexistent/mcbus-integration";
  const std::vector<args> bad = {
      {},
      {nowhere},
      {nowhere, "org.a", "/", "org.a"},
      {nowhere, "--no-such-option", "org.a", "/", "org.a", "M"},
      {nowhere, "-x", "org.a", "/", "org.a", "M"},
      {nowhere, "--timeout=0", "org.a", "/", "org.a", "M"},
      {nowhere, "--timeout=-1", "org.a", "/", "org.a", "M"},
      {nowhere, "not a name", "/", "org.a", "M"},
      {nowhere, "org.a", "relative/path", "org.a", "M"},
      {nowhere, "org.a", "/", "noDots", "M"},
      {nowhere, "org.a", "/", "org.a", "Bad-Member"},
      {nowhere, "org.a", "/", "org.a", "M", "(i"},
      {nowhere, "org.a", "/", "org.a", "M", "i"},
      {nowhere, "org.a", "/", "org.a", "M", "i", "1", "2"},
      {nowhere, "org.a", "/", "org.a", "M", "i", "one"},
      {nowhere, "org.a", "/", "org.a", "M", "h", "0"},
  };
  for (const args& a : bad) {
    std::string shown;
    for (const std::string& s : a) shown += " '" + s + "'";
    SCOPED_TRACE("mcbus-call" + shown);
    const run_result r = call_tool(a);
    EXPECT_TRUE(r.status.exited(2)) << r.status.describe() << "\n" << r.err;
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(r.err.rfind("mcbus-call: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find("usage: mcbus-call"), std::string::npos) << r.err;
  }
}

TEST(McbusCallUsage, HelpGoesToStdout) {
  for (const char* opt : {"--help", "-h"}) {
    const run_result r = call_tool({opt});
    EXPECT_TRUE(r.status.exited(0)) << r.status.describe();
    EXPECT_EQ(r.out.rfind("usage: mcbus-call", 0), 0u) << r.out;
    EXPECT_EQ(r.err, "");
  }
}

// No bus at the address: a failure to connect is not a usage error (exit 1, like busctl).
TEST(McbusCallUsage, NoBusExitsOne) {
  const run_result r = call_tool({"--address=unix:path=/nonexistent/mcbus-integration", "org.a", "/", "org.a", "M"});
  EXPECT_TRUE(r.status.exited(1)) << r.status.describe();
  EXPECT_EQ(r.err.rfind("mcbus-call: cannot connect", 0), 0u) << r.err;
  if (mcbus_test::program_exists(busctl_bin)) {
    const run_result b =
        run({busctl_bin, "--address=unix:path=/nonexistent/mcbus-integration", "call", "org.a", "/", "org.a", "M"});
    EXPECT_TRUE(b.status.exited(1)) << b.status.describe();
  }
}

}  // namespace
}  // namespace mcbus_integration
