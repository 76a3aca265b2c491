#!/usr/bin/env bash
# Size and memory of examples/embedded-minimal against the same service written with sd-bus
# (bench/embedded/sdbus-sensor.c), on this machine (x86-64). Prints a table; docs/embedded.md
# quotes it.
#
# Programs, all built with -Os, sections per function and --gc-sections:
#   mcbus, static runtime   embedded-minimal as its CMakeLists.txt builds it (-static-libstdc++
#                           -static-libgcc, -fno-exceptions -fno-rtti)
#   mcbus, shared runtime   the same with MCBUS_EMBEDDED_STATIC_RUNTIME=OFF (shared libstdc++)
#   sd-bus                  sdbus-sensor.c (C), linked with the shared libsystemd
# For each: the stripped size, the shared libraries it needs, and its resident memory on a
# private dbus-daemon, with the sensor sampling every 10 ms: VmHWM after start-up ("idle"), and
# VmHWM after a burst of CALLS Read() calls, WINDOW in flight at a time, from
# bench/embedded/sensor-burst.c ("peak"). Shared libraries count in full, since they are mapped.
# Each program is measured RUNS times (interleaved); the table shows the median peak and the
# range, and splits the last run's resident memory by mapping.
#
# Usage: scripts/measure-embedded.sh   (env: CALLS=20000 WINDOW=64 RUNS=5)
#        MCBUS_INCLUDE_DIR=/a/changed/copy/include scripts/measure-embedded.sh   (before/after)
# Build folder: build-embedded-measure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=$root/build-embedded-measure
calls=${CALLS:-20000}
window=${WINDOW:-64}
runs=${RUNS:-5}
include_dir=${MCBUS_INCLUDE_DIR:-$root/include}

for tool in dbus-daemon pkg-config gcc strip; do
  command -v "$tool" >/dev/null || {
    echo "mcbus: $tool is missing (scripts/deps.sh)" >&2
    exit 1
  }
done
pkg-config --exists libsystemd || {
  echo "mcbus: libsystemd-dev is missing (scripts/deps.sh)" >&2
  exit 1
}

mkdir -p "$build"
log=$build/build.log
: >"$log"
build_example() {  # build_example DIR STATIC(ON|OFF)
  cmake -S "$root/examples/embedded-minimal" -B "$1" -G Ninja -Wno-dev -DCMAKE_BUILD_TYPE=MinSizeRel \
    -DMCBUS_EMBEDDED_STATIC_RUNTIME="$2" -DMCBUS_INCLUDE_DIR="$include_dir" >>"$log" 2>&1
  ninja -C "$1" >>"$log" 2>&1
}
if ! build_example "$build/static" ON || ! build_example "$build/shared" OFF ||
  ! gcc -std=c11 -D_GNU_SOURCE -Os -ffunction-sections -fdata-sections -Wl,--gc-sections -Wall -Wextra -Werror \
    "$root/bench/embedded/sdbus-sensor.c" -o "$build/sdbus-sensor" $(pkg-config --cflags --libs libsystemd) >>"$log" 2>&1 ||
  ! gcc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror "$root/bench/embedded/sensor-burst.c" \
    -o "$build/sensor-burst" $(pkg-config --cflags --libs libsystemd) >>"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "mcbus: build failed (log: $log)" >&2
  exit 1
fi

names=("mcbus, static runtime" "mcbus, shared runtime" "sd-bus (C)")
bins=("$build/static/embedded-minimal" "$build/shared/embedded-minimal" "$build/sdbus-sensor")

source "$root/scripts/private-bus.sh"
svc=""
cleanup() {
  [[ -n $svc ]] && kill "$svc" 2>/dev/null
  stop_private_bus
}
trap cleanup EXIT
start_private_bus "$build/bus"

kb() { awk '{print $2}' <<<"$(grep "^$1:" "/proc/$2/status")"; }
# Resident kB of a process by kind of mapping: program, heap+stack+anonymous, libc+ld.so, others.
split_rss() {  # split_rss PID BINARY
  awk -v bin="$2" '
    /^[0-9a-f]+-[0-9a-f]+ / { name = NF >= 6 ? $6 : "[anon]"; next }
    /^Rss:/ {
      if (name == bin) p += $2
      else if (name ~ /^\[/) a += $2
      else if (name ~ /\/(libc\.so|ld-linux)/) c += $2
      else o += $2
    }
    END { printf "%d %d %d %d", p, a, c, o }' "/proc/$1/smaps"
}

declare -A idle peaks split
fifo=$build/service.out
rm -f "$fifo"
mkfifo "$fifo"
exec {out}<>"$fifo"
for ((run = 1; run <= runs; ++run)); do
  for i in "${!bins[@]}"; do
    "${bins[$i]}" --address="$bus_address" --interval=10 >&"$out" 2>>"$build/service.err" &
    svc=$!
    line=""
    if ! IFS= read -r -t 20 -u "$out" line || [[ $line != *"org.mcbus.Sensor is :"* ]]; then
      echo "mcbus: ${names[$i]} did not start: $line $(tail -n 3 "$build/service.err")" >&2
      exit 1
    fi
    idle[$i]="${idle[$i]:-} $(kb VmHWM "$svc")"
    if ! "$build/sensor-burst" "$bus_address" "$calls" "$window" >"$build/burst.out" 2>&1; then
      echo "mcbus: the burst against ${names[$i]} failed: $(cat "$build/burst.out")" >&2
      exit 1
    fi
    peaks[$i]="${peaks[$i]:-} $(kb VmHWM "$svc")"
    split[$i]=$(split_rss "$svc" "$(readlink -f "${bins[$i]}")")
    kill -TERM "$svc"
    wait "$svc" || {
      echo "mcbus: ${names[$i]} did not exit cleanly" >&2
      exit 1
    }
    svc=""
  done
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{v[NR] = $1} END { print v[int((NR + 1) / 2)] }'; }
range() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "-" hi }'; }

printf '\nembedded-minimal vs sd-bus on %s: %d Read() calls, %d in flight, %d runs each\n' "$(uname -m)" "$calls" \
  "$window" "$runs"
printf '(sizes in KiB; RSS in kB from /proc/PID/status; shared libraries counted in full)\n\n'
printf '%-22s %9s  %-44s %9s %10s %11s  %s\n' "program" "stripped" "shared libraries" "idle RSS" "peak RSS" "peak range" \
  "last run: program / heap+stack / libc+ld.so / other libraries"
for i in "${!bins[@]}"; do
  strip -o "$build/stripped" "${bins[$i]}"
  size=$(awk -v b="$(stat -c %s "$build/stripped")" 'BEGIN { printf "%.1f", b / 1024 }')
  libs=$(readelf -d "${bins[$i]}" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sed 's/\.so.*//' | tr '\n' ' ')
  read -r p a c o <<<"${split[$i]}"
  printf '%-22s %9s  %-44s %9s %10s %11s  %d / %d / %d / %d\n' "${names[$i]}" "$size" "$libs" \
    "$(median "${idle[$i]}")" "$(median "${peaks[$i]}")" "$(range "${peaks[$i]}")" "$p" "$a" "$c" "$o"
done
rm -f "$build/stripped"
