// mcbus-monitor: print the messages on a bus, in dbus-monitor's format.
//
//   mcbus-monitor [--address=ADDR|--system|--session] [RULE...]
//
// Uses org.freedesktop.DBus.Monitoring.BecomeMonitor where the bus allows it (dbus-daemon and
// dbus-broker do for the owner of the bus), and falls back to eavesdropping match rules otherwise,
// then to plain match rules (broadcasts and messages addressed to it) where eavesdropping is refused.
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
    "allows it, and eavesdrops with match rules otherwise; where eavesdropping is refused too, it\n"
    "sees only broadcast signals and messages addressed to it. Stops on SIGINT or SIGTERM.\n"
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
    std::vector<std::string> plain = rules;
    if (plain.empty()) {
      for (const char* t : {"method_call", "method_return", "error", "signal"}) {
        plain.push_back(std::string("type='") + t + "'");
      }
    }
    // dbus-daemon 1.14 refuses eavesdrop='true' to unprivileged users (AccessDenied) and
    // dbus-broker refuses the key to everyone (MatchRuleInvalid); the plain rule still shows
    // broadcasts and messages addressed to us, which is what dbus-monitor settles for too.
    bool eavesdropping = true;
    for (const std::string& r : plain) {
      if (!eavesdropping) {
        if (auto added = conn->add_match(r); !added) {
          std::fprintf(stderr, "mcbus-monitor: AddMatch(%s) failed: %s\n", r.c_str(), added.error().message().c_str());
          return 1;
        }
        continue;
      }
      const std::string e = with_eavesdrop(r);
      auto added = conn->add_match(e);
      if (added) continue;
      // Not retried: a lost connection (local error), or a rule whose eavesdrop key the user wrote.
      if (!added.error().is_remote() || e == r) {
        std::fprintf(stderr, "mcbus-monitor: AddMatch(%s) failed: %s\n", e.c_str(), added.error().message().c_str());
        return 1;
      }
      if (auto retried = conn->add_match(r); !retried) {
        std::fprintf(stderr, "mcbus-monitor: AddMatch(%s) failed: %s (and with eavesdrop: %s)\n", r.c_str(),
                     retried.error().message().c_str(), added.error().name().c_str());
        return 1;
      }
      eavesdropping = false;
      std::fprintf(stderr,
                   "mcbus-monitor: eavesdropping refused (%s); showing only broadcasts and messages addressed to "
                   "this monitor\n",
                   added.error().name().c_str());
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
