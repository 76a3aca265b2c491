// mcbus-bench: mcbus against sd-bus and against the kernel's floor, one JSON line per figure set.
//
//   mcbus-bench roundtrip   [--bus-address=A] [--calls=N]
//   mcbus-bench signals-bus [--bus-address=A] [--messages=M]
//   mcbus-bench fanout --subscribers=N --selectivity=S --messages=M --via=multicast|bus|udp
//                      [--bus-address=A]
//
// Without --bus-address a private bus is started (--bus=broker, the default, or --bus=daemon).
// See docs/tools/mcbus-bench.md for what each figure means and how it is measured.
#include <sys/prctl.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "fanout.hpp"

namespace mcbus_bench {
namespace {

constexpr const char* usage =
    "usage: mcbus-bench roundtrip   [--bus-address=A] [--calls=N]\n"
    "       mcbus-bench signals-bus [--bus-address=A] [--messages=M]\n"
    "       mcbus-bench fanout --subscribers=N --selectivity=S --messages=M --via=multicast|bus|udp\n"
    "                          [--bus-address=A]\n"
    "\n"
    "  --bus-address=A   use this bus (default: start a private one)\n"
    "  --bus=broker|daemon  which private bus to start (default broker: dbus-broker)\n"
    "  --window=W        messages in flight at most in the load phase (default 1024)\n"
    "  --paced=P         messages in the paced latency phase (default 500)\n"
    "  --no-sdbus        skip the sd-bus baseline\n"
    "  --no-floor        skip the raw SEQPACKET floor (fanout)\n"
    "  --rules=member|arg0namespace|both  the rule shapes to run mcbus and sd-bus with (fanout;\n"
    "                    default both)\n"
    "  --timeout=S       fail a run that takes longer (default 120)\n"
    "\n"
    "Prints one JSON line per implementation, then one with the ratios. Exits 1 if a run failed\n"
    "(delivered != expected on a reliable path), 2 on bad usage.\n";

int bad_usage(const std::string& why) {
  std::fprintf(stderr, "mcbus-bench: %s\n%s", why.c_str(), usage);
  return 2;
}

bool number(std::string_view text, double& out) {
  const std::string s(text);
  char* end = nullptr;
  out = std::strtod(s.c_str(), &end);
  return !s.empty() && end && *end == 0;
}

bool parse(int argc, char** argv, options& o, std::string& why) {
  if (argc < 2) {
    why = "no mode";
    return false;
  }
  o.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const auto eq = arg.find('=');
    const std::string_view key = arg.substr(0, eq);
    const std::string_view val = eq == std::string_view::npos ? std::string_view() : arg.substr(eq + 1);
    double n = 0;
    auto count = [&](unsigned& field) {
      if (!number(val, n) || n < 0 || n > 1e9) return false;
      field = static_cast<unsigned>(n);
      return true;
    };
    bool ok = true;
    if (key == "--bus-address") {
      o.address = val;
    } else if (key == "--bus") {
      o.bus = val;
      ok = o.bus == "broker" || o.bus == "daemon";
    } else if (key == "--via") {
      o.via = val;
      ok = o.via == "multicast" || o.via == "bus" || o.via == "udp";
    } else if (key == "--calls") {
      ok = count(o.calls) && o.calls > 0;
    } else if (key == "--subscribers") {
      ok = count(o.subscribers) && o.subscribers > 0 && o.subscribers <= 1024;
    } else if (key == "--messages") {
      ok = count(o.messages) && o.messages > 0;
    } else if (key == "--window") {
      ok = count(o.window) && o.window > 0;
    } else if (key == "--paced") {
      ok = count(o.paced);
    } else if (key == "--selectivity") {
      ok = number(val, o.selectivity) && o.selectivity > 0 && o.selectivity <= 1;
    } else if (key == "--timeout") {
      ok = number(val, o.timeout_s) && o.timeout_s > 0;
    } else if (key == "--rules") {
      if (val == "both") {
        o.rules = {"member", "arg0namespace"};
      } else {
        o.rules = {std::string(val)};
        ok = val == "member" || val == "arg0namespace";
      }
    } else if (arg == "--no-sdbus") {
      o.sdbus = false;
    } else if (arg == "--no-floor") {
      o.floor = false;
    } else {
      why = "unknown option " + std::string(arg);
      return false;
    }
    if (!ok) {
      why = "bad value in " + std::string(arg);
      return false;
    }
  }
  return true;
}

// Each path gets its own sender name: the previous emitter's name may still be on its way out.
plan plan_for(const plan& base, int run) {
  plan p = base;
  p.sender += ".r" + std::to_string(run);
  return p;
}

}  // namespace

// ---- signals-bus -------------------------------------------------------------------------------------

int run_signals_bus(const options& o) {
  auto bus = open_bus(o);
  if (!bus) return 1;
  const plan base = plan::make(1, 1.0, o.messages, o.paced, o.window);
  auto report = [&](const std::string& impl, const plan& p, const path& route) {
    json_line extras;
    const result_figures r = run_path(p, route, o, extras);
    json_line line;
    line.str("mode", "signals-bus").str("impl", impl).str("bus", bus->name).integer("messages", p.messages);
    line.num("seconds", r.seconds, 4).num("per_s", r.emitted_per_s, 0).num("per_cpu_s", ratio(p.messages, r.cpu_s), 0);
    line.integer("delivered", r.delivered).integer("expected", r.expected);
    line.num("cpu_s", r.cpu_s, 3).num("p50_us", r.p50_us, 1).num("p99_us", r.p99_us, 1);
    line.num("load_p50_us", r.load_p50_us, 1).num("load_p99_us", r.load_p99_us, 1);
    line.num("cpu_emitter_s", r.cpu_emitter_s, 3).num("cpu_subscribers_s", r.cpu_subscribers_s, 3);
    line.num("cpu_bus_s", r.cpu_bus_s, 2).merge(extras).boolean("ok", r.ok);
    if (!r.ok) line.str("error", r.why);
    line.print();
    return r;
  };
  const result_figures mine = report("mcbus", plan_for(base, 0), mcbus_path("bus", bus->address, 0));
  bool ok = mine.ok;
#if MCBUS_BENCH_HAVE_SDBUS
  if (o.sdbus) {
    const result_figures theirs = report("sd-bus", plan_for(base, 1), sdbus_path(bus->address, 0));
    ok = ok && theirs.ok;
    json_line r;
    r.str("mode", "signals-bus").str("ratio", "mcbus/sd-bus").str("bus", bus->name);
    r.num("per_s", ratio(mine.emitted_per_s, theirs.emitted_per_s));
    r.num("cpu_s", ratio(mine.cpu_s, theirs.cpu_s));
    r.num("per_cpu_s", ratio(theirs.cpu_s, mine.cpu_s));
    r.num("p50", ratio(mine.p50_us, theirs.p50_us));
    r.str("target", "per_s >= 1.0").boolean("met", ratio(mine.emitted_per_s, theirs.emitted_per_s) >= 1.0);
    r.print();
  }
#endif
  return ok ? 0 : 1;
}

// ---- fanout -----------------------------------------------------------------------------------------

namespace {

// Per delivered signal of the load phase: what a subscriber pays for one signal it wanted, with
// the emitter's and the bus's share spread over every delivery.
void put_per_delivered(json_line& line, const result_figures& r) {
  const double d = static_cast<double>(r.delivered_load);
  line.num("delivered_per_s", ratio(d, r.seconds), 0);
  line.num("cpu_us_per_delivered", ratio(r.cpu_s * 1e6, d), 2);
  line.num("switches_per_delivered",
           ratio(static_cast<double>(r.switches_emitter + r.switches_subscribers + r.switches_bus), d), 3);
}

rule_shape shape_named(const std::string& name) {
  return name == "member" ? rule_shape::member : rule_shape::arg0namespace;
}

}  // namespace

int run_fanout(const options& o) {
  const bool need_bus = o.via != "udp" || o.sdbus;
  std::optional<bus_handle> bus;
  if (need_bus) {
    bus = open_bus(o);
    if (!bus) return 1;
  }
  const std::string bus_name = bus ? bus->name : "none";
  auto report = [&](const std::string& impl, const std::string& via, const plan& p, const path& route) {
    json_line extras;
    const result_figures r = run_path(p, route, o, extras);
    json_line line;
    line.str("mode", "fanout").str("via", via).integer("subscribers", p.subscribers);
    if (via != "floor") line.str("rules", to_string(p.shape));
    line.num("selectivity", p.selectivity(), 4).integer("messages", p.messages);
    line.num("seconds", r.seconds, 4).num("emitted_per_s", r.emitted_per_s, 0);
    put_per_delivered(line, r);
    line.integer("delivered", r.delivered).integer("expected", r.expected);
    line.num("cpu_s", r.cpu_s, 3).num("p50_us", r.p50_us, 1).num("p99_us", r.p99_us, 1);
    line.num("per_cpu_s", ratio(p.messages, r.cpu_s), 0);
    line.str("impl", impl).str("bus", via == "multicast" || via == "bus" ? bus_name : std::string("none"));
    if (p.lossy) line.integer("lost", r.expected - std::min(r.expected, r.delivered));
    line.num("load_p50_us", r.load_p50_us, 1).num("load_p99_us", r.load_p99_us, 1);
    line.num("cpu_emitter_s", r.cpu_emitter_s, 3).num("cpu_subscribers_s", r.cpu_subscribers_s, 3);
    line.num("cpu_bus_s", r.cpu_bus_s, 2).integer("window", p.lossy ? 0 : p.window).integer("paced", p.paced);
    line.integer("switches_emitter", r.switches_emitter).integer("switches_subscribers", r.switches_subscribers);
    line.integer("switches_bus", r.switches_bus);
    line.merge(extras);
    if (r.reordered || r.extra) line.integer("reordered", r.reordered).integer("extra", r.extra);
    line.boolean("ok", r.ok);
    if (!r.ok) line.str("error", r.why);
    line.print();
    return r;
  };

  int run = 0;
  bool ok = true;
  // The floor has no rules: it runs once, first, and every shape's ratios use it.
  std::optional<result_figures> floor;
  if (o.floor) {
    plan fp = plan_for(plan::make(o.subscribers, o.selectivity, o.messages, o.paced, o.window), run++);
    floor = report("raw-seqpacket", "floor", fp, floor_path(fp, signal_size(fp)));
    ok = ok && floor->ok;
  }
  for (const std::string& shape : o.rules) {
    plan base = plan::make(o.subscribers, o.selectivity, o.messages, o.paced, o.window);
    base.shape = shape_named(shape);
    plan main_plan = plan_for(base, run++);
    path main_path;
    if (o.via == "udp") {
      main_plan.lossy = true;
      main_path = udp_path(main_plan);
    } else {
      main_path = mcbus_path(o.via, bus->address, 0);
    }
    const result_figures mine = report("mcbus", o.via, main_plan, main_path);
    // UDP may lose messages (reported as "lost"); every other path must deliver everything.
    ok = ok && (o.via == "udp" ? mine.why.empty() : mine.ok);

    std::optional<result_figures> sdbus;
#if MCBUS_BENCH_HAVE_SDBUS
    if (o.sdbus) {
      sdbus = report("sd-bus", "bus", plan_for(base, run++), sdbus_path(bus->address, 0));
      ok = ok && sdbus->ok;
    }
#endif
    if (!sdbus && !floor) continue;
    json_line r;
    r.str("mode", "fanout").str("ratio", "mcbus/baseline").str("via", o.via).integer("subscribers", base.subscribers);
    r.str("rules", shape).num("selectivity", base.selectivity(), 4).str("bus", bus_name);
    const double mine_cpu_per = ratio(mine.cpu_s, static_cast<double>(mine.delivered_load));
    if (sdbus) {
      r.num("emitted_per_s_vs_sdbus", ratio(mine.emitted_per_s, sdbus->emitted_per_s));
      r.num("cpu_s_vs_sdbus", ratio(mine.cpu_s, sdbus->cpu_s));
      r.num("per_cpu_s_vs_sdbus", ratio(sdbus->cpu_s, mine.cpu_s));
      r.num("cpu_per_delivered_vs_sdbus",
            ratio(mine_cpu_per, ratio(sdbus->cpu_s, static_cast<double>(sdbus->delivered_load))));
      r.num("p50_vs_sdbus", ratio(mine.p50_us, sdbus->p50_us));
    }
    if (floor) {
      r.num("emitted_per_s_vs_floor", ratio(mine.emitted_per_s, floor->emitted_per_s));
      r.num("cpu_s_vs_floor", ratio(mine.cpu_s, floor->cpu_s));
      r.num("per_cpu_s_vs_floor", ratio(floor->cpu_s, mine.cpu_s));
      r.num("cpu_per_delivered_vs_floor",
            ratio(mine_cpu_per, ratio(floor->cpu_s, static_cast<double>(floor->delivered_load))));
    }
    r.print();
  }
  return ok ? 0 : 1;
}

}  // namespace mcbus_bench

int main(int argc, char** argv) {
  using namespace mcbus_bench;
  if (argc >= 2 && (std::strcmp(argv[1], "-h") == 0 || std::strcmp(argv[1], "--help") == 0)) {
    std::fputs(usage, stdout);
    return 0;
  }
  options o;
  std::string why;
  if (!parse(argc, argv, o, why)) return bad_usage(why);
  // Sub-millisecond naps while waiting on the other processes.
  ::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  if (o.mode == "roundtrip") return run_roundtrip(o);
  if (o.mode == "signals-bus") return run_signals_bus(o);
  if (o.mode == "fanout") return run_fanout(o);
  return bad_usage("unknown mode " + o.mode);
}
