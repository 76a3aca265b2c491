// Trial publisher: a plain multicast publisher, written as a user would write one.
//
// Owns a well-known name, runs a multicast group (mcbus::multicast::publisher) and emits
// org.example.Trial1.Tick(s "tick", t seq, t mono_ns) from /org/example/Trial, seq = F..F+N-1
// (F = --first-seq, default 0). mono_ns is CLOCK_MONOTONIC at emission, so a listener can measure
// how late each signal came.
//
//   publisher NAME [--count=N] [--burst=B] [--rate=R] [--wait-members=K] [--start-delay=MS]
//             [--ready=FILE] [--go=FILE] [--first-seq=F] [--tock-every=K]
//
//   --burst=B        emit B signals at a time inside publisher::batch, answering the bus between
//   --rate=R         R signals per second (answering the bus between them); default: flat out
//   --wait-members=K wait (answering Join) until K members joined, at most 20 s
//   --start-delay=MS answer the bus for MS ms before the first signal
//   --ready=FILE     written with our unique name once the group exists
//   --go=FILE        after --wait-members and before --start-delay, wait (answering the bus) until
//                    FILE exists, at most 60 s
//   --first-seq=F    the first seq (a restarted publisher continues with a disjoint range)
//   --tock-every=K   the string is "tock" instead of "tick" when seq % K == 0 (for arg0 rules)
// Connects to DBUS_SESSION_BUS_ADDRESS. Prints its statistics on stdout and exits 0.
#include <mcbus/multicast.hpp>

#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

using namespace std::chrono_literals;

static std::uint64_t mono_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::uint64_t(ts.tv_sec) * 1000000000u + std::uint64_t(ts.tv_nsec);
}

int main(int argc, char** argv) {
  std::string name, ready, go;
  long count = 2000, burst = 1, wait_members = 0, start_delay = 0, first_seq = 0, tock_every = 0;
  double rate = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto val = [&](std::string_view key) { return a.starts_with(key) ? argv[i] + key.size() : nullptr; };
    if (auto v = val("--count="))
      count = std::atol(v);
    else if (auto v = val("--burst="))
      burst = std::atol(v);
    else if (auto v = val("--rate="))
      rate = std::atof(v);
    else if (auto v = val("--wait-members="))
      wait_members = std::atol(v);
    else if (auto v = val("--start-delay="))
      start_delay = std::atol(v);
    else if (auto v = val("--ready="))
      ready = v;
    else if (auto v = val("--go="))
      go = v;
    else if (auto v = val("--first-seq="))
      first_seq = std::atol(v);
    else if (auto v = val("--tock-every="))
      tock_every = std::atol(v);
    else if (!a.starts_with("-") && name.empty())
      name = a;
    else
      return std::fprintf(stderr, "publisher: bad argument %s\n", argv[i]), 2;
  }
  if (name.empty() || burst < 1) return std::fprintf(stderr, "usage: publisher NAME [options]\n"), 2;

  auto bus = mcbus::connection::session();
  if (!bus) return std::fprintf(stderr, "publisher: %s\n", bus.error().message().c_str()), 1;
  auto wk = mcbus::bus_name::from(name);
  if (!wk) return std::fprintf(stderr, "publisher: %s: %s\n", name.c_str(), wk.error().message().c_str()), 2;
  auto owned = bus->request_name(*wk, mcbus::name_flags::do_not_queue);
  if (!owned || *owned != mcbus::request_name_reply::primary_owner)
    return std::fprintf(stderr, "publisher: cannot own %s\n", name.c_str()), 1;
  auto pub = mcbus::multicast::publisher::create(*bus);
  if (!pub) return std::fprintf(stderr, "publisher: %s\n", pub.error().message().c_str()), 1;
  auto& p = **pub;

  if (!ready.empty()) {
    if (FILE* f = std::fopen(ready.c_str(), "w")) std::fprintf(f, "%s\n", bus->unique_name().c_str()), std::fclose(f);
  }

  if (wait_members > 0 && (bus->run_until([&] { return p.member_count() >= std::size_t(wait_members); }, 20s) ||
                           p.member_count() < std::size_t(wait_members)))
    return std::fprintf(stderr, "publisher: only %zu members after 20 s\n", p.member_count()), 1;
  if (!go.empty()) {
    const auto until = std::chrono::steady_clock::now() + 60s;
    while (::access(go.c_str(), F_OK) != 0) {
      if (std::chrono::steady_clock::now() >= until)
        return std::fprintf(stderr, "publisher: no %s after 60 s\n", go.c_str()), 1;
      if (mcbus::error e = bus->run_for(5ms)) return std::fprintf(stderr, "publisher: %s\n", e.message().c_str()), 1;
    }
  }
  if (start_delay > 0) (void)bus->run_for(std::chrono::milliseconds(start_delay));

  const auto t0 = std::chrono::steady_clock::now();
  long seq = 0;
  while (seq < count) {
    {
      mcbus::multicast::publisher::batch b(p);  // one submission for the burst
      for (long i = 0; i < burst && seq < count; ++i, ++seq) {
        const long s = first_seq + seq;
        mcbus::message m = mcbus::message::signal("/org/example/Trial", "org.example.Trial1", "Tick");
        m.append(std::string_view(tock_every > 0 && s % tock_every == 0 ? "tock" : "tick"), std::uint64_t(s),
                 mono_ns());
        if (mcbus::error e = p.emit(std::move(m)))
          return std::fprintf(stderr, "publisher: emit %ld: %s\n", s, e.message().c_str()), 1;
      }
    }
    // Answer Join/Leave (and let queues drain) between bursts.
    if (rate > 0) {
      const auto due = t0 + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                std::chrono::duration<double>(double(seq) / rate));
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(due - std::chrono::steady_clock::now());
      if (mcbus::error e = left.count() > 0 ? bus->run_for(left) : bus->process())
        return std::fprintf(stderr, "publisher: %s\n", e.message().c_str()), 1;
    } else if (mcbus::error e = burst > 1 ? bus->run_for(1ms) : bus->process()) {
      return std::fprintf(stderr, "publisher: %s\n", e.message().c_str()), 1;
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  (void)bus->run_for(1s);  // let the queues drain
  // Everything written before the process exits: what is held after this is lost with it.
  const auto flushed_at = std::chrono::steady_clock::now();
  const mcbus::error flushed = bus->flush();
  const double flush_secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - flushed_at).count();
  if (flushed || p.holds_output())
    std::fprintf(stderr, "publisher: flush: %s; output still held: %s\n", flushed ? flushed.message().c_str() : "ok",
                 p.holds_output() ? "yes" : "no");
  const auto& st = p.stats();
  std::printf(
      "publisher: emitted %llu in %.2f s (flush %.2f s), %llu packets, %llu bus copies, %zu members at end, "
      "%llu overflow unicasts, %llu markers, %llu backpressure, %llu lost, %llu joins\n",
      (unsigned long long)st.emitted, secs, flush_secs, (unsigned long long)st.packets,
      (unsigned long long)st.bus_copies, p.member_count(), (unsigned long long)st.overflow_unicasts,
      (unsigned long long)st.markers, (unsigned long long)st.backpressure, (unsigned long long)st.lost,
      (unsigned long long)st.joins);
  return 0;
}
