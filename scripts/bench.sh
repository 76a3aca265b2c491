#!/bin/bash
# Runs the full mcbus-bench set (docs/performance.md) and prints its tables. Not part of CI: it
# takes minutes, and its figures depend on the machine and on what else runs on it.
#
#   scripts/bench.sh [BUILD_DIR] [REPEATS]      (defaults: build-bench2, 3)
#   scripts/bench.sh --tables FILE...           tables of earlier runs' JSON lines, pooled
#
# Environment: MESSAGES (fan-out load phase, default 30000), SIGNALS (signals-bus, default
# 100000), CALLS (roundtrip, default 20000), OUT (the JSON lines, default BUILD_DIR/bench.jsonl).
# Each configuration runs REPEATS times; the tables show medians, and ratios are taken within a run
# (mcbus and its baseline measured one after the other) before the median is taken.
set -euo pipefail
cd "$(dirname "$0")/.."
tables_only=0
if [ "${1:-}" = "--tables" ]; then
  tables_only=1
  shift
  files=("$@")
fi
build=${1:-build-bench2}
repeats=${2:-3}
messages=${MESSAGES:-30000}
signals=${SIGNALS:-100000}
calls=${CALLS:-20000}
out=${OUT:-$build/bench.jsonl}
bench=$build/tools/mcbus-bench

if [ $tables_only = 0 ]; then
if [ ! -x "$bench" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  ninja -C "$build" -j2 mcbus-bench
fi

: >"$out"
run() {  # run TAG ARGS...: one invocation; its lines go to $out tagged with the repeat and the tag
  local tag=$1
  shift
  echo "== $tag: mcbus-bench $*" >&2
  "$bench" "$@" | while IFS= read -r line; do
    echo "$line" >&2
    echo "{\"repeat\":$r,\"tag\":\"$tag\",${line#\{}" >>"$out"
  done || echo "!! failed: $tag" >&2
}

echo "load before: $(uptime)" >&2
for r in $(seq 1 "$repeats"); do
  run rt roundtrip --calls="$calls"
  run sig signals-bus --messages="$signals"
  for n in 1 8 64; do
    run "mc-$n" fanout --subscribers="$n" --selectivity=0.1 --messages="$messages" --via=multicast
    run "bus-broker-$n" fanout --subscribers="$n" --selectivity=0.1 --messages="$messages" --via=bus --no-floor
    run "bus-daemon-$n" fanout --bus=daemon --subscribers="$n" --selectivity=0.1 --messages="$messages" --via=bus \
      --no-floor
    run "udp-$n" fanout --subscribers="$n" --selectivity=0.1 --messages="$messages" --via=udp --no-sdbus --no-floor
  done
done
echo "load after: $(uptime)" >&2
files=("$out")
fi

/usr/bin/python3 - "${files[@]}" <<'EOF'
import json, statistics, sys
rows = []
for k, name in enumerate(sys.argv[1:]):  # repeats of different files stay apart
    for l in open(name):
        if l.strip():
            r = json.loads(l)
            r["repeat"] += 1000 * k
            rows.append(r)

def pick(tag, **kv):
    return [r for r in rows if r["tag"] == tag and all(r.get(k) == v for k, v in kv.items())]

def med(tag, key, **kv):
    v = [r[key] for r in pick(tag, **kv) if key in r]
    return statistics.median(v) if v else float("nan")

def paired(tag_a, tag_b, key, impl_a="mcbus", impl_b="mcbus"):
    """median over repeats of a[key]/b[key], pairing runs by repeat"""
    v = []
    for a in pick(tag_a, impl=impl_a):
        for b in pick(tag_b, impl=impl_b):
            if a["repeat"] == b["repeat"] and b.get(key):
                v.append(a[key] / b[key])
    return statistics.median(v) if v else float("nan")

def okall(tag):
    return all(r.get("ok", True) for r in rows if r["tag"] == tag)

n_rep = len({r["repeat"] for r in rows})
print(f"\nmedians of {n_rep} repeat(s)\n")
print("### roundtrip (dbus-broker)\n")
print("| impl | p50 us | p99 us | calls/s |")
print("|---|---:|---:|---:|")
for impl in ("mcbus", "sd-bus"):
    print(f"| {impl} | {med('rt','p50_us',impl=impl):.1f} | {med('rt','p99_us',impl=impl):.1f} | {med('rt','calls_per_s',impl=impl):.0f} |")
rt = [r["p50"] for r in pick("rt", ratio="mcbus/sd-bus")]
print(f"\nmcbus/sd-bus p50: {statistics.median(rt) if rt else float('nan'):.2f} (target <= 1.0)\n")

print("### signals-bus (dbus-broker)\n")
print("| impl | signals/s | signals per CPU-s | p50 us | p99 us | cpu_s |")
print("|---|---:|---:|---:|---:|---:|")
for impl in ("mcbus", "sd-bus"):
    print(f"| {impl} | {med('sig','per_s',impl=impl):.0f} | {med('sig','per_cpu_s',impl=impl):.0f} | {med('sig','p50_us',impl=impl):.1f} | {med('sig','p99_us',impl=impl):.1f} | {med('sig','cpu_s',impl=impl):.3f} |")
sg = [r["per_s"] for r in pick("sig", ratio="mcbus/sd-bus")]
sc = [r["per_cpu_s"] for r in pick("sig", ratio="mcbus/sd-bus")]
print(f"\nmcbus/sd-bus signals/s: {statistics.median(sg) if sg else float('nan'):.2f} (target >= 1.0); per CPU-s: {statistics.median(sc) if sc else float('nan'):.2f}\n")

print("### fanout, S=0.1: emitted signals/s (wall clock), and signals per CPU-second of every process involved\n")
print("| N | via | bus | mcbus /s | sd-bus /s | floor /s | vs sd-bus | vs floor | mcbus /CPU-s | sd-bus /CPU-s | floor /CPU-s | CPU vs sd-bus | p50 us mcbus | p50 us sd-bus | p99 us mcbus | lost | ok |")
print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for n in (1, 8, 64):
    for via, tag, bus in (("multicast", f"mc-{n}", "dbus-broker"), ("bus", f"bus-broker-{n}", "dbus-broker"),
                          ("bus", f"bus-daemon-{n}", "dbus-daemon"), ("udp", f"udp-{n}", "-")):
        mine = lambda k: med(tag, k, impl="mcbus")
        sd = lambda k: med(tag, k, impl="sd-bus")
        fl = lambda k: med(tag, k, impl="raw-seqpacket")
        fmt = lambda x, d=0: "-" if x != x else f"{x:.{d}f}"
        lost = med(tag, "lost", impl="mcbus")
        print(f"| {n} | {via} | {bus} | {fmt(mine('emitted_per_s'))} | {fmt(sd('emitted_per_s'))} | {fmt(fl('emitted_per_s'))} | "
              f"{fmt(med(tag,'emitted_per_s_vs_sdbus',ratio='mcbus/baseline'),2)} | "
              f"{fmt(med(tag,'emitted_per_s_vs_floor',ratio='mcbus/baseline'),2)} | "
              f"{fmt(mine('per_cpu_s'))} | {fmt(sd('per_cpu_s'))} | {fmt(fl('per_cpu_s'))} | "
              f"{fmt(med(tag,'per_cpu_s_vs_sdbus',ratio='mcbus/baseline'),2)} | "
              f"{fmt(mine('p50_us'),1)} | {fmt(sd('p50_us'),1)} | {fmt(mine('p99_us'),1)} | {fmt(lost)} | {'yes' if okall(tag) else 'NO'} |")

print("\n### targets (issue 5), medians of per-run ratios\n")
print("| target | measured | met |")
print("|---|---:|---|")
def target(name, value, ok):
    print(f"| {name} | {value:.2f} | {'yes' if ok(value) else 'no'} |")
for n, want in ((8, 4.0), (64, 1.5)):
    v = med(f"mc-{n}", "emitted_per_s_vs_sdbus", ratio="mcbus/baseline")
    target(f"multicast signals/s vs sd-bus on dbus-broker, N={n}: >= {want}x", v, lambda x, w=want: x >= w)
    c = med(f"mc-{n}", "per_cpu_s_vs_sdbus", ratio="mcbus/baseline")
    target(f"(same, per CPU-second) N={n}", c, lambda x, w=want: x >= w)
for n in (1, 8, 64):
    v = med(f"mc-{n}", "emitted_per_s_vs_floor", ratio="mcbus/baseline")
    target(f"multicast vs raw floor, N={n}: >= 0.8x", v, lambda x: x >= 0.8)
for n in (1, 8, 64):
    v = paired(f"mc-{n}", f"bus-broker-{n}", "p50_us")
    target(f"multicast p50 latency / mcbus via=bus (dbus-broker) p50, N={n}: <= 0.5x", v, lambda x: x <= 0.5)
EOF
