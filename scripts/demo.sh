#!/usr/bin/env bash
# The mcbus demo: a sensor publisher, subscribers with different rules, and an ordinary gdbus
# listener on a private bus that the demo starts and stops; then a short benchmark table.
#
# Subscribers whose rule names the publisher join its multicast group: their readings arrive on a
# kernel-filtered socket, without waking the bus daemon. gdbus knows nothing of this and gets the
# same readings through the bus.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

"$root/scripts/deps.sh"

build="$root/build/demo"
echo "==== building the examples and mcbus-bench (Release)"
cmake -S "$root" -B "$build" -G Ninja -Wno-dev -DCMAKE_BUILD_TYPE=Release -DMCBUS_BUILD_TESTS=OFF \
  -DMCBUS_BUILD_BENCH=OFF >/dev/null
ninja -C "$build" -j"$(nproc)" sensor-publisher sensor-subscriber mcbus-bench mcbus-call >/dev/null

work=$(mktemp -d /tmp/mcbus-demo-XXXXXX)
# shellcheck source=scripts/private-bus.sh
source "$root/scripts/private-bus.sh"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  stop_private_bus
  rm -rf "$work"
}
trap cleanup EXIT

start_private_bus "$work/bus"
echo "==== private dbus-daemon at $bus_address"

rounds=100
"$build/examples/sensor-publisher" --address="$bus_address" --sensors=4 --rate=25 \
  --count=$rounds >"$work/publisher.txt" 2>&1 &
publisher=$!
pids+=("$publisher")
# Subscribers can join once the publisher owns its name.
for _ in $(seq 200); do
  "$build/tools/mcbus-call" --address="$bus_address" org.freedesktop.DBus / org.freedesktop.DBus \
    NameHasOwner s org.mcbus.Sensor 2>/dev/null | grep -q true && break
  sleep 0.02
done

declare -A rules=(
  [temp0]="type='signal',sender='org.mcbus.Sensor',member='Reading',arg0='temp0'"
  [temp1-or-2]="type='signal',sender='org.mcbus.Sensor',member='Reading',arg0namespace='temp1'"
  [everything]="type='signal',sender='org.mcbus.Sensor',interface='org.mcbus.Sensor1'"
  [temp3-bus]="type='signal',sender='org.mcbus.Sensor',member='Reading',arg0='temp3'"
)
for name in "${!rules[@]}"; do
  via=auto
  [[ $name == *-bus ]] && via=bus
  "$build/examples/sensor-subscriber" --address="$bus_address" --via=$via "${rules[$name]}" \
    >"$work/$name.txt" 2>&1 &
  pids+=("$!")
done
gdbus monitor --address "$bus_address" --dest org.mcbus.Sensor >"$work/gdbus.txt" 2>&1 &
pids+=("$!")

wait "$publisher"
sleep 0.3  # let the last readings reach everyone before the listeners stop
for p in "${pids[@]:1}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true

echo
echo "==== what each listener received ($rounds rounds of 4 sensors, temp0..temp3)"
printf '%-20s %-78s %9s %9s %6s\n' "listener" "rule" "received" "multicast" "bus"
for name in temp0 temp1-or-2 everything temp3-bus; do
  f="$work/$name.txt"
  m=$(grep -c 'via multicast' "$f" || true)
  b=$(grep -c 'via bus' "$f" || true)
  printf '%-20s %-78s %9d %9d %6d\n' "sensor-subscriber" "${rules[$name]}" $((m + b)) "$m" "$b"
done
g=$(grep -c 'org.mcbus.Sensor1.Reading' "$work/gdbus.txt" || true)
printf '%-20s %-78s %9d %9s %6d\n' "gdbus monitor" "(everything from org.mcbus.Sensor, through the bus)" "$g" "-" "$g"
echo
sed 's/^/  /' "$work/publisher.txt"

echo
echo "==== a short benchmark: 8 subscriber processes, each matching 10% of the signals"
bench="$build/tools/mcbus-bench"
results="$work/bench.txt"
"$bench" fanout --subscribers=8 --selectivity=0.1 --messages=20000 --via=multicast >"$results" 2>&1 ||
  "$bench" fanout --bus=daemon --subscribers=8 --selectivity=0.1 --messages=20000 --via=multicast >"$results" 2>&1
python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print(f"{'path':<34} {'emitted/s':>10} {'p50 latency':>12} {'CPU s':>7}")
for r in rows:
    if "ratio" in r:
        continue
    name = {"mcbus": "mcbus multicast (no daemon)", "sd-bus": f"sd-bus through {r.get('bus')}",
            "raw-seqpacket": "raw SEQPACKET floor (no D-Bus)"}.get(r.get("impl"), r.get("impl"))
    print(f"{name:<34} {r['emitted_per_s']:>10.0f} {r['p50_us']:>10.1f}us {r['cpu_s']:>7.3f}")
for r in rows:
    if "ratio" in r:
        print(f"\nmcbus multicast vs sd-bus: {r['emitted_per_s_vs_sdbus']:.2f}x signals/s, "
              f"{1 / r['cpu_s_vs_sdbus']:.2f}x less CPU, p50 latency {r['p50_vs_sdbus']:.2f}x")
PY
echo
echo "Full benchmarks and their commands: docs/performance.md"
