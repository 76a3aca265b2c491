#!/bin/bash
# Runs the full mcbus-bench set (docs/performance.md) and prints its tables. Not part of CI: it
# takes minutes, and its figures depend on the machine and on what else runs on it.
#
#   scripts/bench.sh [BUILD_DIR] [REPEATS]      (defaults: build-bench2, 3)
#   scripts/bench.sh --tables FILE...           tables of earlier runs' JSON lines, pooled
#
# Environment: MESSAGES (fan-out load phase, default 30000), SIGNALS (signals-bus, default
# 100000), CALLS (roundtrip, default 20000), SUBSCRIBERS (fan-out sizes, default "1 8 64 256"),
# ONLY=fanout (only the multicast fan-out runs), OUT (the JSON lines, default
# BUILD_DIR/bench.jsonl). Fan-out runs mcbus and sd-bus with both rule shapes (member,
# arg0namespace); see docs/tools/mcbus-bench.md.
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
  if [ "${ONLY:-}" != fanout ]; then
    run rt roundtrip --calls="$calls"
    run sig signals-bus --messages="$signals"
  fi
  for n in ${SUBSCRIBERS:-1 8 64 256}; do
    run "mc-$n" fanout --subscribers="$n" --selectivity=0.1 --messages="$messages" --via=multicast
    [ "${ONLY:-}" = fanout ] && continue
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

def okall(tag):
    return all(r.get("ok", True) for r in rows if r["tag"] == tag)

n_rep = len({r["repeat"] for r in rows})
print(f"\nmedians of {n_rep} repeat(s)\n")
if pick("rt") or pick("sig"):
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

sizes = sorted({r["subscribers"] for r in rows if r.get("mode") == "fanout"})
fmt = lambda x, d=0: "-" if x != x else f"{x:.{d}f}"
print("### fanout over the multicast group, S=0.1, per rule shape: mcbus, sd-bus via dbus-broker, and the floor\n")
print("| N | rules | emitted/s mcbus | sd-bus | floor | delivered/s mcbus | CPU µs per delivered: mcbus | sd-bus | floor | switches per delivered: mcbus | sd-bus | floor | vs sd-bus (/s) | vs floor (/s) | p50 µs mcbus | p50 µs sd-bus | ok |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for n in sizes:
    tag = f"mc-{n}"
    fl = lambda k: med(tag, k, impl="raw-seqpacket")
    for shape in ("member", "arg0namespace"):
        if not pick(tag, impl="mcbus", rules=shape):
            continue
        mine = lambda k: med(tag, k, impl="mcbus", rules=shape)
        sd = lambda k: med(tag, k, impl="sd-bus", rules=shape)
        rat = lambda k: med(tag, k, ratio="mcbus/baseline", rules=shape)
        print(f"| {n} | {shape} | {fmt(mine('emitted_per_s'))} | {fmt(sd('emitted_per_s'))} | {fmt(fl('emitted_per_s'))} | "
              f"{fmt(mine('delivered_per_s'))} | {fmt(mine('cpu_us_per_delivered'),2)} | {fmt(sd('cpu_us_per_delivered'),2)} | "
              f"{fmt(fl('cpu_us_per_delivered'),2)} | {fmt(mine('switches_per_delivered'),2)} | {fmt(sd('switches_per_delivered'),2)} | "
              f"{fmt(fl('switches_per_delivered'),2)} | {fmt(rat('emitted_per_s_vs_sdbus'),2)} | {fmt(rat('emitted_per_s_vs_floor'),2)} | "
              f"{fmt(mine('p50_us'),1)} | {fmt(sd('p50_us'),1)} | {'yes' if okall(tag) else 'NO'} |")

other = [t for t in ("bus-broker", "bus-daemon", "udp") if any(r["tag"].startswith(t) for r in rows)]
if other:
    print("\n### fanout over the bus (mcbus and sd-bus) and over UDP, S=0.1\n")
    print("| N | via | bus | rules | mcbus /s | sd-bus /s | vs sd-bus | mcbus CPU µs per delivered | sd-bus | p50 us mcbus | p50 us sd-bus | lost | ok |")
    print("|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for n in sizes:
        for t, via, bus in (("bus-broker", "bus", "dbus-broker"), ("bus-daemon", "bus", "dbus-daemon"), ("udp", "udp", "-")):
            tag = f"{t}-{n}"
            for shape in ("member", "arg0namespace"):
                if not pick(tag, impl="mcbus", rules=shape):
                    continue
                mine = lambda k: med(tag, k, impl="mcbus", rules=shape)
                sd = lambda k: med(tag, k, impl="sd-bus", rules=shape)
                print(f"| {n} | {via} | {bus} | {shape} | {fmt(mine('emitted_per_s'))} | {fmt(sd('emitted_per_s'))} | "
                      f"{fmt(med(tag,'emitted_per_s_vs_sdbus',ratio='mcbus/baseline',rules=shape),2)} | "
                      f"{fmt(mine('cpu_us_per_delivered'),2)} | {fmt(sd('cpu_us_per_delivered'),2)} | "
                      f"{fmt(mine('p50_us'),1)} | {fmt(sd('p50_us'),1)} | {fmt(mine('lost'))} | {'yes' if okall(tag) else 'NO'} |")

print("\n### targets (issue 12), medians of per-run ratios, member-name rules\n")
print("| target | measured | met |")
print("|---|---:|---|")
def target(name, value, ok):
    print(f"| {name} | {fmt(value,2)} | {'yes' if value == value and ok(value) else 'no'} |")
for n, want_sd, want_floor in ((8, 4.0, 0.8), (64, 2.0, 0.8), (256, 1.0, None)):
    if not pick(f"mc-{n}"):
        continue
    v = med(f"mc-{n}", "emitted_per_s_vs_sdbus", ratio="mcbus/baseline", rules="member")
    target(f"N={n}: multicast signals/s vs sd-bus via dbus-broker >= {want_sd}x", v, lambda x, w=want_sd: x >= w)
    if want_floor:
        f = med(f"mc-{n}", "emitted_per_s_vs_floor", ratio="mcbus/baseline", rules="member")
        target(f"N={n}: multicast signals/s vs the floor >= {want_floor}x", f, lambda x, w=want_floor: x >= w)
if pick("mc-8"):
    v = med("mc-8", "p50_vs_sdbus", ratio="mcbus/baseline", rules="member")
    target("N=8: multicast p50 latency / sd-bus via dbus-broker p50 <= 0.5x", v, lambda x: x <= 0.5)
EOF
