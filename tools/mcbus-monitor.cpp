// mcbus-monitor: print the messages on a bus, in dbus-monitor's format.
//
//   mcbus-monitor [--address=ADDR|--system|--session] [RULE...]
//
// Uses org.freedesktop.DBus.Monitoring.BecomeMonitor where the bus allows it (dbus-daemon and
// dbus-broker do for the owner of the bus), and falls back to eavesdropping match rules otherwise.
// Only messages matching at least one RULE are shown; no rule shows everything.
#include <mcbus/connection.hpp>

#include <signal.h>

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "bus_option.hpp"
#include "monitor_format.hpp"

namespace {

constexpr const char* usage =
    "usage: mcbus-monitor [--address=ADDR|--system|--session] [RULE...]\n"
    "\n"
    "Prints every message on the bus that matches one of the match RULEs (all messages when no\n"
    "rule is given), in dbus-monitor's format. Becomes a monitor (BecomeMonitor) where the bus\n"
    "allows it, and eavesdrops with match rules otherwise. Stops on SIGINT or SIGTERM.\n"
    "\n"
    "  --address=ADDR   connect to this D-Bus address\n"
    "  --system         the system bus\n"
    "  --session        the session bus (the default, as for dbus-monitor)\n"
    "  -h, --help       this text\n"
    "\n"
    "Exit status: 0 when stopped by a signal, 1 on connection errors, 2 on bad usage.\n";

mcbus::connection* running = nullptr;
extern "C" void on_signal(int) {
  if (running) running->stop();
}

// dbus-daemon wants eavesdrop='true' in a rule to see messages addressed to others.
std::string with_eavesdrop(const std::string& rule) {
  if (rule.find("eavesdrop") != std::string::npos) return rule;
  return rule.empty() ? "eavesdrop='true'" : rule + ",eavesdrop='true'";
}

}  // namespace

int main(int argc, char** argv) {
  mcbus_tools::bus_option bus(mcbus_tools::bus_option::kind::session);  // dbus-monitor's default
  std::vector<std::string> rules;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(usage, stdout);
      return 0;
    } else if (bus.parse(arg)) {
      continue;
    } else if (arg.starts_with("-")) {
      std::fprintf(stderr, "mcbus-monitor: unknown option %s\n%s", argv[i], usage);
      return 2;
    } else {
      auto rule = mcbus::match_rule::parse(arg);
      if (!rule) {
        std::fprintf(stderr, "mcbus-monitor: invalid match rule '%s': %s\n", argv[i],
                     mcbus::match_rule_error_text(argv[i], rule.error()).c_str());
        return 2;
      }
      rules.emplace_back(arg);
    }
  }

  auto conn = bus.connect();
  if (!conn) {
    std::fprintf(stderr, "mcbus-monitor: cannot connect to the bus: %s\n", conn.error().message().c_str());
    return 1;
  }

  conn->set_filter([](const mcbus::message_view& m) {
    std::fputs(mcbus_tools::monitor_format(m).c_str(), stdout);
    std::fflush(stdout);
    return true;  // a monitor only watches: nothing is dispatched, nothing is answered
  });

  mcbus::message become = mcbus::message::method_call(mcbus::bus_service, mcbus::bus_path,
                                                      "org.freedesktop.DBus.Monitoring", "BecomeMonitor");
  become.append(rules, std::uint32_t{0});
  auto monitoring = conn->call(std::move(become));
  if (!monitoring) {
    std::fprintf(stderr, "mcbus-monitor: BecomeMonitor refused (%s); eavesdropping instead\n",
                 monitoring.error().name().c_str());
    std::vector<std::string> eavesdrop;
    if (rules.empty()) {
      for (const char* t : {"method_call", "method_return", "error", "signal"}) {
        eavesdrop.push_back(with_eavesdrop(std::string("type='") + t + "'"));
      }
    }
    for (const std::string& r : rules) eavesdrop.push_back(with_eavesdrop(r));
    for (const std::string& r : eavesdrop) {
      if (auto added = conn->add_match(r); !added) {
        std::fprintf(stderr, "mcbus-monitor: AddMatch(%s) failed: %s\n", r.c_str(), added.error().message().c_str());
        return 1;
      }
    }
  }

  running = &*conn;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  const mcbus::error e = conn->run();
  running = nullptr;
  if (e) {
    std::fprintf(stderr, "mcbus-monitor: %s\n", e.message().c_str());
    return 1;
  }
  return 0;
}
