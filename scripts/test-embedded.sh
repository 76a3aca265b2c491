#!/usr/bin/env bash
# The embedded targets: examples/embedded-minimal (-Os -fno-exceptions -fno-rtti, poll transport,
# no liburing) and the core tests (wire/, match/, the no-exceptions build), cross-compiled for
# arm64 and armhf and run under qemu-user.
#
# For each target the script
#   - builds embedded-minimal and serves it on a private dbus-daemon (on the host's bus even when
#     the service runs under qemu): busctl calls Read() (and mcbus-call too on the host), a
#     dbus-monitor waits for the Changed signal after the sensor's value changes, and SIGTERM must
#     stop it with exit status 0;
#   - cross builds only: builds GoogleTest from /usr/src/googletest and the core test programs
#     with the cross compiler, and runs them with ctest under qemu-user.
# Only the core programs are built, to stay quick on CI's two cores. Build output goes to logs;
# the script ends with one line per check and the ctest summary of each target.
#
# Usage: scripts/test-embedded.sh [TARGET...]   targets: host arm64 armhf (default: all three)
# Build folders: build-embedded (host), build-embedded-arm64, build-embedded-armhf.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
jobs=$(nproc)
((jobs > 2)) && jobs=2
targets=("$@")
((${#targets[@]})) || targets=(host arm64 armhf)

source "$root/scripts/private-bus.sh"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  stop_private_bus
}
trap cleanup EXIT

summary=()
failed=0
say() { summary+=("$*"); }
fail() {
  say "FAILED $*"
  failed=1
}
# Runs a command with its output in a log; on failure shows the end of the log.
quiet() {  # quiet LOG CMD...
  local log=$1
  shift
  mkdir -p "$(dirname "$log")"
  if ! "$@" >"$log" 2>&1; then
    echo "mcbus: failed: $*" >&2
    tail -n 40 "$log" >&2
    return 1
  fi
}

for tool in dbus-daemon dbus-monitor busctl; do
  command -v "$tool" >/dev/null || {
    echo "mcbus: $tool is missing (scripts/deps.sh installs it)" >&2
    exit 1
  }
done
start_private_bus "$root/build-embedded/bus"

# Reads lines from fd $1 until one matches the regex $2, for at most $3 seconds.
wait_line() {  # wait_line FD REGEX SECONDS
  local line deadline=$((SECONDS + $3))
  while ((SECONDS < deadline)); do
    IFS= read -r -t $((deadline - SECONDS)) -u "$1" line || return 1
    [[ $line =~ $2 ]] && return 0
  done
  return 1
}

# Serves embedded-minimal on the private bus and talks to it with real D-Bus clients.
check_service() {  # check_service LABEL WORKDIR [RUNNER...] BINARY
  local label=$1 dir=$2
  shift 2
  local value=$dir/sensor-value out_fifo=$dir/service.out mon_fifo=$dir/monitor.out svc mon reply
  mkdir -p "$dir"
  rm -f "$out_fifo" "$mon_fifo"
  mkfifo "$out_fifo" "$mon_fifo"
  echo 21.5 >"$value"
  # Opened read-write so that neither side blocks on open; read with a deadline.
  exec {svc_fd}<>"$out_fifo" {mon_fd}<>"$mon_fifo"
  "$@" --address="$bus_address" --source="$value" --interval=20 >&"$svc_fd" 2>"$dir/service.err" &
  svc=$!
  pids+=("$svc")
  # qemu-user start-up is slow: allow 30 s for the service to own its name.
  if ! wait_line "$svc_fd" '^embedded-minimal: org.mcbus.Sensor is :' 30; then
    fail "$label: the service did not start ($(tail -n 3 "$dir/service.err"))"
    kill "$svc" 2>/dev/null || true
    return
  fi
  reply=$(busctl --address="$bus_address" call org.mcbus.Sensor /org/mcbus/Sensor org.mcbus.Sensor1 Read 2>&1)
  if [[ $reply != "d 21.5" ]]; then
    fail "$label: busctl Read() returned '$reply', expected 'd 21.5'"
  else
    say "ok     $label: busctl Read() -> $reply"
  fi
  if [[ -x $root/build-embedded/tools/mcbus-call && $label == host ]]; then
    reply=$("$root/build-embedded/tools/mcbus-call" --address="$bus_address" org.mcbus.Sensor /org/mcbus/Sensor \
      org.mcbus.Sensor1 Read 2>&1)
    if [[ $reply != "d 21.5" ]]; then fail "$label: mcbus-call Read() returned '$reply'"; else say "ok     $label: mcbus-call Read() -> $reply"; fi
  fi
  # The monitor is listening once it reports losing its own unique name (BecomeMonitor does that).
  dbus-monitor --address "$bus_address" "type='signal',interface='org.mcbus.Sensor1',member='Changed'" >&"$mon_fd" 2>&1 &
  mon=$!
  pids+=("$mon")
  if ! wait_line "$mon_fd" 'member=NameLost' 10; then
    fail "$label: dbus-monitor did not start"
  else
    echo 22.25 >"$value"
    if wait_line "$mon_fd" '^ *double 22\.25$' 10; then
      say "ok     $label: Changed(22.25) seen by dbus-monitor after the value changed"
    else
      fail "$label: no Changed(22.25) within 10 s"
    fi
  fi
  kill "$mon" 2>/dev/null || true
  kill -TERM "$svc"
  local rc=0
  wait "$svc" || rc=$?
  if ((rc == 0)); then say "ok     $label: SIGTERM -> exit status 0"; else fail "$label: exit status $rc after SIGTERM"; fi
  exec {svc_fd}>&- {mon_fd}>&-
}

# The size of a stripped copy, and the shared libraries a program needs.
stripped_size() {  # stripped_size STRIP BINARY
  "$1" -o "$2.stripped" "$2" && echo "$(stat -c %s "$2.stripped") bytes stripped" && rm -f "$2.stripped"
}
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ' | sed 's/ $//'; }

# ---- host: the example inside the mcbus build, with mcbus-call to call it ----------------------
host() {
  local b=$root/build-embedded
  quiet "$b/logs/configure.log" cmake -S "$root" -B "$b" -G Ninja -Wno-dev -DMCBUS_WERROR=ON -DCMAKE_BUILD_TYPE=MinSizeRel \
    -DMCBUS_BUILD_TESTS=OFF -DMCBUS_BUILD_EXAMPLES=ON -DMCBUS_BUILD_TOOLS=ON -DMCBUS_BUILD_BENCH=OFF -DMCBUS_INSTALL=OFF
  quiet "$b/logs/build.log" ninja -C "$b" -j"$jobs" embedded-minimal mcbus-call
  local bin=$b/examples/embedded-minimal/embedded-minimal
  if readelf -d "$bin" | grep -q 'NEEDED.*liburing'; then fail "host: embedded-minimal links liburing"; fi
  say "ok     host: embedded-minimal built: $(stripped_size strip "$bin"), needs $(needed "$bin")"
  check_service host "$b/run" "$bin"
}

# ---- cross targets -------------------------------------------------------------------------
cross() {  # cross NAME TRIPLE QEMU FILE_PATTERN
  local name=$1 triple=$2 qemu=$3 pattern=$4 b=$root/build-embedded-$1
  for tool in "$triple-g++" "$qemu"; do
    if ! command -v "$tool" >/dev/null; then
      fail "$name: $tool is missing (scripts/deps.sh installs g++-$triple and qemu-user)"
      return
    fi
  done
  local toolchain=$root/cmake/toolchains/$triple.cmake

  # embedded-minimal, built on its own from the include folder, as a device project would.
  quiet "$b/logs/example-configure.log" cmake -S "$root/examples/embedded-minimal" -B "$b/example" -G Ninja -DMCBUS_WERROR=ON \
    -Wno-dev -DCMAKE_TOOLCHAIN_FILE="$toolchain" -DCMAKE_BUILD_TYPE=MinSizeRel
  quiet "$b/logs/example-build.log" ninja -C "$b/example" -j"$jobs"
  local bin=$b/example/embedded-minimal
  if ! file -L "$bin" | grep -q "$pattern"; then
    fail "$name: embedded-minimal is not a $pattern binary: $(file -L "$bin")"
    return
  fi
  say "ok     $name: embedded-minimal built: $(stripped_size "$triple-strip" "$bin"), needs $(needed "$bin")"
  check_service "$name" "$b/run" "$qemu" -L "/usr/$triple" "$bin"

  # The core tests. -O1: they run under emulation, and -O1 builds much faster than -O2 while
  # running several times faster than -O0.
  quiet "$b/logs/core-configure.log" cmake -S "$root" -B "$b/core" -G Ninja -Wno-dev -DMCBUS_WERROR=ON \
    -DCMAKE_TOOLCHAIN_FILE="$toolchain" -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1" -DCMAKE_C_FLAGS="-O1" \
    -DMCBUS_CORE_ONLY=ON -DMCBUS_GTEST_SOURCE_DIR=/usr/src/googletest \
    -DMCBUS_BUILD_TOOLS=OFF -DMCBUS_BUILD_EXAMPLES=OFF -DMCBUS_BUILD_BENCH=OFF -DMCBUS_INSTALL=OFF
  local progs=()
  for t in mcbus_wire_tests mcbus_match_tests mcbus_core_noexcept; do
    if ninja -C "$b/core" -t query "$t" >/dev/null 2>&1; then progs+=("$t"); fi
  done
  quiet "$b/logs/core-build.log" ninja -C "$b/core" -j"$jobs" "${progs[@]}"
  if ! file -L "$b/core/tests/mcbus_wire_tests" | grep -q "$pattern"; then
    fail "$name: mcbus_wire_tests is not a $pattern binary"
    return
  fi
  local log=$b/logs/ctest.log
  if ctest --test-dir "$b/core" -j"$jobs" --timeout 900 --output-on-failure -R '^(wire|match|core)/' >"$log" 2>&1; then
    say "ok     $name: $(grep -E 'tests passed' "$log")"
  else
    grep -v -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed' "$log" | tail -n 100 >&2
    fail "$name: $(grep -E 'tests passed|tests failed' "$log" | tail -n 1) (log: $log)"
  fi
}

for t in "${targets[@]}"; do
  case $t in
    host) host ;;
    arm64) cross arm64 aarch64-linux-gnu qemu-aarch64 "ARM aarch64" ;;
    armhf) cross armhf arm-linux-gnueabihf qemu-arm "ARM, EABI5" ;;
    *)
      echo "mcbus: unknown target $t (host, arm64, armhf)" >&2
      exit 2
      ;;
  esac
done

printf '\n'
printf '%s\n' "${summary[@]}"
if ((failed)); then
  echo "mcbus: embedded checks failed" >&2
  exit 1
fi
