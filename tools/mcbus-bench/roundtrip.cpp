// mcbus-bench roundtrip: N sequential blocking calls to a method served by another process,
// mcbus then sd-bus, through the same bus.
#include <mcbus/connection.hpp>

#include <new>

#include "sdbus.hpp"

namespace mcbus_bench {

namespace {

int mcbus_rt_server(const std::string& address, const std::string& name, rt_control& ctl) {
  auto conn = mcbus::connection::open(address);
  if (!conn) {
    std::fprintf(stderr, "mcbus-bench: server: %s\n", conn.error().message().c_str());
    ctl.failed.store(1);
    return 1;
  }
  auto obj = conn->add_object(
      mcbus::object_path_view::from_unchecked(bench_path),
      mcbus::object_builder()
          .interface(mcbus::interface_name::from_unchecked(bench_interface))
          .method(mcbus::member_name::from_unchecked(rt_method), [](std::uint64_t x) { return x; }, {"x"}, {"x"}));
  auto owned = conn->request_name(mcbus::bus_name::from_unchecked(name));
  if (!owned || *owned != mcbus::request_name_reply::primary_owner) {
    std::fprintf(stderr, "mcbus-bench: server cannot own %s\n", name.c_str());
    ctl.failed.store(1);
    return 1;
  }
  ctl.ready.store(1);
  while (!ctl.stop.load() && conn->connected()) (void)conn->run_for(std::chrono::milliseconds(50));
  return 0;
}

bool mcbus_rt_client(const std::string& address, const std::string& name, unsigned warmup, unsigned calls,
                     std::vector<std::uint64_t>& lat_ns, double& seconds, std::string& why) {
  auto conn = mcbus::connection::open(address);
  if (!conn) {
    why = conn.error().message();
    return false;
  }
  const auto dest = mcbus::bus_name::from_unchecked(name);
  const auto path = mcbus::object_path_view::from_unchecked(bench_path);
  const auto iface = mcbus::interface_name::from_unchecked(bench_interface);
  std::uint64_t t0 = 0;
  for (unsigned k = 0; k < warmup + calls; ++k) {
    if (k == warmup) t0 = now_ns();
    const std::uint64_t start = now_ns();
    auto reply = conn->call_method(dest, path, iface, mcbus::member_name::from_unchecked(rt_method), std::uint64_t{k});
    if (!reply) {
      why = reply.error().message();
      return false;
    }
    auto back = reply->read_first<std::uint64_t>();
    if (!back || *back != k) {
      why = "wrong reply";
      return false;
    }
    if (k >= warmup) lat_ns.push_back(now_ns() - start);
  }
  seconds = double(now_ns() - t0) * 1e-9;
  return true;
}

struct rt_figures {
  bool ok = false;
  double p50_us = 0, p99_us = 0, calls_per_s = 0;
};

template <class Server, class Client>
rt_figures measure(const options& o, const std::string& address, const std::string& name, Server&& server,
                   Client&& client, std::string& why) {
  rt_figures f;
  shared_region mem(sizeof(rt_control));
  if (!mem) {
    why = "mmap failed";
    return f;
  }
  rt_control& ctl = *new (mem.data()) rt_control();
  const pid_t child = fork_child([&] { return server(address, name, ctl); });
  const auto deadline = now_ns() + 30'000'000'000ull;
  while (!ctl.ready.load() && !ctl.failed.load() && now_ns() < deadline) nap(1000000);
  std::vector<std::uint64_t> lat;
  double seconds = 0;
  const unsigned warmup = std::min(200u, std::max(1u, o.calls / 10));
  if (ctl.ready.load()) {
    f.ok = client(address, name, warmup, o.calls, lat, seconds, why);
  } else {
    why = "the server did not start";
  }
  ctl.stop.store(1);
  if (!reap(child) && f.ok) {
    f.ok = false;
    why = "the server failed";
  }
  f.p50_us = quantile(lat, 0.5) / 1000;
  f.p99_us = quantile(lat, 0.99) / 1000;
  f.calls_per_s = seconds > 0 ? o.calls / seconds : 0;
  return f;
}

void print_rt(const char* impl, const std::string& bus, const options& o, const rt_figures& f, const std::string& why) {
  json_line line;
  line.str("mode", "roundtrip").str("impl", impl).str("bus", bus).integer("calls", o.calls);
  line.num("p50_us", f.p50_us, 1).num("p99_us", f.p99_us, 1).num("calls_per_s", f.calls_per_s, 0);
  line.boolean("ok", f.ok);
  if (!f.ok) line.str("error", why);
  line.print();
}

}  // namespace

int run_roundtrip(const options& o) {
  auto bus = open_bus(o);
  if (!bus) return 1;
  const std::string base = "org.mcbus.Bench.rt" + std::to_string(::getpid());
  std::string why;
  const rt_figures mine = measure(o, bus->address, base + ".mcbus", mcbus_rt_server, mcbus_rt_client, why);
  print_rt("mcbus", bus->name, o, mine, why);
  bool ok = mine.ok;
#if MCBUS_BENCH_HAVE_SDBUS
  if (o.sdbus) {
    std::string why2;
    const rt_figures theirs = measure(o, bus->address, base + ".sdbus", sdbus_rt_server, sdbus_rt_client, why2);
    print_rt("sd-bus", bus->name, o, theirs, why2);
    ok = ok && theirs.ok;
    json_line r;
    r.str("mode", "roundtrip").str("ratio", "mcbus/sd-bus").str("bus", bus->name);
    r.num("p50", ratio(mine.p50_us, theirs.p50_us)).num("p99", ratio(mine.p99_us, theirs.p99_us));
    r.num("calls_per_s", ratio(mine.calls_per_s, theirs.calls_per_s));
    r.str("target", "p50 <= 1.0");
    r.boolean("met", ratio(mine.p50_us, theirs.p50_us) <= 1.0);
    r.print();
  }
#endif
  return ok ? 0 : 1;
}

}  // namespace mcbus_bench
