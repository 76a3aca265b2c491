// Trial subscriber: an ordinary mcbus subscriber of org.example.Trial1.Tick, as a user writes it.
//
// Subscribes to a rule (by default the publisher's Ticks), writes each received seq on its own
// line to --out, and on exit prints one summary line: how many it received, duplicates, inversions
// (a seq lower than the one before), how many came through the multicast group
// (conn.handling_packet()), and bodies it could not read.
//
//   subscriber (--sender=NAME | RULE) --out=FILE [--via=auto|bus|multicast] [--loop=own|poll]
//              [--expect=N] [--linger=MS] [--idle-exit=MS] [--max-time=MS] [--never-read] [--ready=FILE]
//              [--paths=FILE] [--expect-file=FILE]
//
//   --loop=own    the connection's own loop (run_for)
//   --loop=poll   a foreign ::poll() loop on conn.fd()/events()/timeout(), then process(),
//                 as docs/event-loops.md shows
//   --expect=N    exit once N signals arrived; --idle-exit=MS: exit when nothing came for MS
//                 after the first; --max-time=MS: give up after MS (default 120000)
//   --linger=MS   with --expect: go on receiving for MS after the N-th signal (to see extras)
//   --expect-file=FILE  once FILE exists, it holds N for --expect (a total known only later); the
//                 idle time of --idle-exit then also counts from when it appeared
//   --never-read  join (wait up to 5 s for the group), then sleep without ever reading: a stuck member
//   --ready=FILE  created once subscribe() returned
//   --paths=FILE  also writes "<seq> g" (came through the group) or "<seq> b" (the bus) per signal
// Connects to DBUS_SESSION_BUS_ADDRESS.
#include <mcbus/connection.hpp>

#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

static volatile sig_atomic_t stop_requested = 0;
extern "C" void on_term(int) { stop_requested = 1; }

static double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char** argv) {
  std::string rule, sender, out_path, ready, paths_path, expect_file, loop = "own";
  mcbus::subscribe_via via = mcbus::subscribe_via::automatic;
  long expect = -1, idle_ms = -1, max_ms = 120000, linger_ms = 0;
  bool never_read = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto val = [&](std::string_view key) { return a.starts_with(key) ? argv[i] + key.size() : nullptr; };
    if (auto v = val("--sender="))
      sender = v;
    else if (auto v = val("--out="))
      out_path = v;
    else if (auto v = val("--ready="))
      ready = v;
    else if (auto v = val("--paths="))
      paths_path = v;
    else if (auto v = val("--expect-file="))
      expect_file = v;
    else if (auto v = val("--loop="))
      loop = v;
    else if (auto v = val("--expect="))
      expect = std::atol(v);
    else if (auto v = val("--idle-exit="))
      idle_ms = std::atol(v);
    else if (auto v = val("--linger="))
      linger_ms = std::atol(v);
    else if (auto v = val("--max-time="))
      max_ms = std::atol(v);
    else if (a == "--via=auto")
      via = mcbus::subscribe_via::automatic;
    else if (a == "--via=bus")
      via = mcbus::subscribe_via::bus;
    else if (a == "--via=multicast")
      via = mcbus::subscribe_via::multicast;
    else if (a == "--never-read")
      never_read = true;
    else if (!a.starts_with("-") && rule.empty())
      rule = a;
    else
      return std::fprintf(stderr, "subscriber: bad argument %s\n", argv[i]), 2;
  }
  if (rule.empty() && !sender.empty())
    rule = "type='signal',sender='" + sender + "',interface='org.example.Trial1',member='Tick'";
  if (rule.empty() || out_path.empty() || (loop != "own" && loop != "poll"))
    return std::fprintf(stderr, "usage: subscriber (--sender=NAME | RULE) --out=FILE [options]\n"), 2;
  FILE* out = std::fopen(out_path.c_str(), "w");
  if (!out) return std::perror(out_path.c_str()), 1;
  FILE* paths = paths_path.empty() ? nullptr : std::fopen(paths_path.c_str(), "w");
  if (!paths_path.empty() && !paths) return std::perror(paths_path.c_str()), 1;

  auto bus = mcbus::connection::session();
  if (!bus) return std::fprintf(stderr, "subscriber: %s\n", bus.error().message().c_str()), 1;
  mcbus::connection& conn = *bus;
  long lost = 0, fallbacks = 0, invalid = 0;
  conn.on_multicast_fallback([&](std::string_view from, const mcbus::call_error& why) {
    ++fallbacks;
    std::fprintf(stderr, "subscriber: no group from %.*s: %s (using the bus)\n", int(from.size()), from.data(),
                 why.message().c_str());
  });
  conn.on_multicast_lost([&](std::string_view from, const mcbus::error& why) {
    ++lost;
    std::fprintf(stderr, "subscriber: left %.*s's group: %s\n", int(from.size()), from.data(), why.message().c_str());
  });
  conn.on_invalid_message([&](const mcbus::error& why) {
    ++invalid;
    std::fprintf(stderr, "subscriber: invalid message: %s\n", why.message().c_str());
  });

  long received = 0, duplicates = 0, inversions = 0, via_multicast = 0, read_failures = 0;
  std::uint64_t last = 0;
  std::unordered_set<std::uint64_t> seen;
  auto last_arrival = steady::now();
  const auto t_sub = steady::now();
  auto sub = conn.subscribe(
      rule,
      [&](const mcbus::message_view& m) {
        auto body = m.read<std::string_view, std::uint64_t, std::uint64_t>();  // ("tick", seq, mono_ns)
        if (!body) {
          ++read_failures;
          std::fprintf(stderr, "subscriber: unreadable Tick: %s\n", body.error().message().c_str());
          return;
        }
        const std::uint64_t seq = std::get<1>(*body);
        std::fprintf(out, "%llu\n", (unsigned long long)seq);
        if (paths) std::fprintf(paths, "%llu %c\n", (unsigned long long)seq, conn.handling_packet() ? 'g' : 'b');
        if (!seen.insert(seq).second) ++duplicates;
        if (received > 0 && seq < last) ++inversions;
        if (conn.handling_packet()) ++via_multicast;
        last = seq;
        ++received;
        last_arrival = steady::now();
      },
      via);
  const double subscribe_ms = std::chrono::duration<double, std::milli>(steady::now() - t_sub).count();
  if (!sub) return std::fprintf(stderr, "subscriber: subscribe: %s\n", sub.error().message().c_str()), 1;
  // A stuck member must be in the group before it stops reading (Join may finish in the loop).
  if (never_read) (void)conn.run_until([&] { return !conn.multicast_groups().empty(); }, 5s);
  const std::size_t groups_at_start = conn.multicast_groups().size();
  if (!ready.empty()) {
    if (FILE* f = std::fopen(ready.c_str(), "w")) std::fclose(f);
  }

  struct sigaction sa {};
  sa.sa_handler = on_term;  // no SA_RESTART: interrupts poll()/sleep
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  const auto deadline = steady::now() + std::chrono::milliseconds(max_ms);
  std::optional<steady::time_point> expected_at;  // when the --expect-th signal arrived (for --linger)
  auto next_look = steady::now();
  bool idle_from_file = false;
  auto done = [&](bool quiet) {  // quiet: the last wait found nothing to read
    if (stop_requested || steady::now() >= deadline || !conn.connected()) return true;
    if (expect < 0 && !expect_file.empty() && steady::now() >= next_look) {
      next_look = steady::now() + 100ms;
      if (FILE* f = std::fopen(expect_file.c_str(), "r")) {
        long n = -1;
        if (std::fscanf(f, "%ld", &n) == 1 && n >= 0) {
          expect = n;
          idle_from_file = true;
          last_arrival = std::max(last_arrival, steady::now());
        }
        std::fclose(f);
      }
    }
    if (expect >= 0 && received >= expect) {
      if (linger_ms <= 0) return true;
      if (!expected_at) expected_at = steady::now();
      if (steady::now() - *expected_at >= std::chrono::milliseconds(linger_ms)) return true;
    }
    return quiet && idle_ms >= 0 && (received > 0 || idle_from_file) &&
           steady::now() - last_arrival >= std::chrono::milliseconds(idle_ms);
  };
  mcbus::error failed;
  if (never_read) {
    while (!stop_requested && steady::now() < deadline) ::usleep(50000);  // joined, never reads
  } else if (loop == "own") {
    while (!done(true) && !failed) failed = conn.run_for(50ms);
  } else {
    for (bool quiet = false; !done(quiet) && !failed;) {
      pollfd fds[] = {{conn.fd(), conn.events(), 0}};
      const int t = conn.timeout();
      quiet = ::poll(fds, 1, t >= 0 && t < 50 ? t : 50) == 0;  // 50 ms: our own idle timer
      failed = conn.process();
    }
  }
  std::fclose(out);
  if (paths) std::fclose(paths);
  if (failed) std::fprintf(stderr, "subscriber: %s\n", failed.message().c_str());
  std::printf(
      "subscriber: received %ld, duplicates %ld, inversions %ld, via multicast %ld, read failures %ld, "
      "groups %zu then %zu, subscribe %.1f ms, lost %ld, fallbacks %ld, invalid %ld, cpu %.2f s\n",
      received, duplicates, inversions, via_multicast, read_failures, groups_at_start, conn.multicast_groups().size(),
      subscribe_ms, lost, fallbacks, invalid, cpu_seconds());
  return failed ? 1 : 0;
}
