// sensor-subscriber: prints each reading that matches a rule, and whether it came through the
// publisher's multicast group or through the bus.
//
//   sensor-subscriber [--address=ADDR] [--count=N] [--via=auto|bus|multicast] RULE
//
// A rule that names org.mcbus.Sensor as sender joins its group automatically, e.g.
//   sensor-subscriber "type='signal',sender='org.mcbus.Sensor',member='Reading',arg0='temp1'"
#include <mcbus/connection.hpp>

#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

mcbus::connection* running = nullptr;
extern "C" void on_signal(int) {
  if (running) running->stop();
}

}  // namespace

int main(int argc, char** argv) {
  std::string address, rule;
  long count = -1;
  mcbus::subscribe_via via = mcbus::subscribe_via::automatic;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with("--address=")) {
      address = arg.substr(10);
    } else if (arg.starts_with("--count=")) {
      count = std::strtol(argv[i] + 8, nullptr, 10);
    } else if (arg == "--via=bus") {
      via = mcbus::subscribe_via::bus;
    } else if (arg == "--via=multicast") {
      via = mcbus::subscribe_via::multicast;
    } else if (arg == "--via=auto") {
      via = mcbus::subscribe_via::automatic;
    } else if (!arg.starts_with("-") && rule.empty()) {
      rule = arg;
    } else {
      std::fprintf(stderr, "usage: sensor-subscriber [--address=ADDR] [--count=N] [--via=auto|bus|multicast] RULE\n");
      return 2;
    }
  }
  if (rule.empty()) rule = "type='signal',sender='org.mcbus.Sensor',interface='org.mcbus.Sensor1',member='Reading'";

  auto conn = address.empty() ? mcbus::connection::session() : mcbus::connection::open(address);
  if (!conn) {
    std::fprintf(stderr, "sensor-subscriber: cannot connect: %s\n", conn.error().message().c_str());
    return 1;
  }
  conn->on_multicast_fallback([](std::string_view sender, const mcbus::call_error& why) {
    std::printf("(%s offers no multicast group to us: %s; using the bus)\n", std::string(sender).c_str(),
                why.message().c_str());
  });
  conn->on_multicast_lost([](std::string_view publisher, const mcbus::error& why) {
    std::printf("(left %s's group: %s; using the bus)\n", std::string(publisher).c_str(), why.message().c_str());
  });

  long seen = 0;
  mcbus::connection& c = *conn;
  auto sub = c.subscribe(
      rule,
      [&](const mcbus::message_view& m) {
        auto r = m.read<std::string_view, double, std::uint64_t>();
        if (!r) return;
        std::printf("%-8s %7.3f  via %s\n", std::string(std::get<0>(*r)).c_str(), std::get<1>(*r),
                    c.handling_packet() ? "multicast" : "bus");
        std::fflush(stdout);
        if (++seen == count) c.stop();
      },
      via);
  if (!sub) {
    std::fprintf(stderr, "sensor-subscriber: %s\n", sub.error().message().c_str());
    return 1;
  }
  std::printf("subscribed (%s): %s\n", c.multicast_groups().empty() ? "bus" : "multicast", rule.c_str());
  std::fflush(stdout);

  running = &c;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  const mcbus::error e = c.run();
  running = nullptr;
  if (e) {
    std::fprintf(stderr, "sensor-subscriber: %s\n", e.message().c_str());
    return 1;
  }
  return 0;
}
