// sensor-publisher: a multicast publisher. Copy it as a template for a service that emits signals.
//
// Owns org.mcbus.Sensor and emits org.mcbus.Sensor1.Reading(s name, d value, t usec) from
// /org/mcbus/Sensor for sensors temp0..temp<N-1>, each at the given rate. Subscribers that name
// org.mcbus.Sensor as sender join its multicast group and get their readings without the bus;
// everyone else (gdbus, busctl, sd-bus) gets them through the bus as usual.
//
//   sensor-publisher [--address=ADDR] [--sensors=N] [--rate=HZ] [--count=ROUNDS] [--no-bus-copy]
#include <mcbus/multicast.hpp>

#include <signal.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

mcbus::connection* running = nullptr;
volatile std::sig_atomic_t stop_requested = 0;
extern "C" void on_signal(int) {
  stop_requested = 1;
  if (running) running->stop();  // wakes run_for() now
}

std::uint64_t now_usec() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int usage() {
  std::fprintf(stderr,
               "usage: sensor-publisher [--address=ADDR] [--sensors=N] [--rate=HZ] [--count=ROUNDS] [--no-bus-copy]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string address;
  unsigned sensors = 4;
  double rate = 10;
  long count = -1;  // rounds; -1: until SIGTERM
  mcbus::multicast::publisher_options opts;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with("--address=")) {
      address = arg.substr(10);
    } else if (arg.starts_with("--sensors=")) {
      sensors = static_cast<unsigned>(std::strtoul(argv[i] + 10, nullptr, 10));
    } else if (arg.starts_with("--rate=")) {
      rate = std::strtod(argv[i] + 7, nullptr);
    } else if (arg.starts_with("--count=")) {
      count = std::strtol(argv[i] + 8, nullptr, 10);
    } else if (arg == "--no-bus-copy") {
      opts.bus_copy = false;
    } else {
      return usage();
    }
  }
  if (sensors == 0 || !(rate > 0)) return usage();

  auto conn = address.empty() ? mcbus::connection::session() : mcbus::connection::open(address);
  if (!conn) {
    std::fprintf(stderr, "sensor-publisher: cannot connect: %s\n", conn.error().message().c_str());
    return 1;
  }
  auto owned = conn->request_name("org.mcbus.Sensor", mcbus::name_flags::do_not_queue);
  if (!owned || *owned != mcbus::request_name_reply::primary_owner) {
    std::fprintf(stderr, "sensor-publisher: cannot own org.mcbus.Sensor\n");
    return 1;
  }
  auto pub = mcbus::multicast::publisher::create(*conn, opts);
  if (!pub) {
    std::fprintf(stderr, "sensor-publisher: %s\n", pub.error().message().c_str());
    return 1;
  }

  running = &*conn;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::printf("sensor-publisher: %u sensors at %g Hz as org.mcbus.Sensor (%s)\n", sensors, rate,
              conn->unique_name().c_str());
  std::fflush(stdout);

  const auto period =
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(1.0 / rate));
  auto next = std::chrono::steady_clock::now();
  for (long round = 0; (count < 0 || round < count) && !stop_requested; ++round) {
    {
      mcbus::multicast::publisher::batch burst(**pub);  // one submission for the round
      for (unsigned s = 0; s < sensors; ++s) {
        mcbus::message m = mcbus::message::signal("/org/mcbus/Sensor", "org.mcbus.Sensor1", "Reading");
        m.append("temp" + std::to_string(s), 20.0 + 5.0 * std::sin(0.1 * static_cast<double>(round + s)), now_usec());
        if (mcbus::error e = (*pub)->emit(std::move(m))) {
          std::fprintf(stderr, "sensor-publisher: emit: %s\n", e.message().c_str());
          return 1;
        }
      }
    }
    next += period;
    // Serve joins and leaves until the next round is due.
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - std::chrono::steady_clock::now());
    if (mcbus::error e = conn->run_for(wait.count() > 0 ? wait : std::chrono::milliseconds(0))) {
      std::fprintf(stderr, "sensor-publisher: %s\n", e.message().c_str());
      return 1;
    }
    if (!conn->connected()) break;
  }
  (void)conn->flush();
  const auto& st = (*pub)->stats();
  std::printf("sensor-publisher: %llu readings, %llu packets to %zu members, %llu bus copies\n",
              static_cast<unsigned long long>(st.emitted), static_cast<unsigned long long>(st.packets),
              (*pub)->member_count(), static_cast<unsigned long long>(st.bus_copies));
  running = nullptr;
  return 0;
}
