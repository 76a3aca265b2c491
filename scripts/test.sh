#!/usr/bin/env bash
# The whole mcbus test suite. README's Quick start runs this, and so does CI (.ci/run).
#
# Stages: dependencies; an ASan+UBSan build of every test; the wire/match tests on big-endian s390x
# under qemu-user; the meson build's tests; a short smoke run of every fuzzer; and last the main
# build's ctest, so that the final line printed is ctest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

"$root/scripts/deps.sh"

jobs=$(nproc)
started=$SECONDS
stage() { printf '\n==== %s  [%dm%02ds]\n' "$*" $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)); }
# Runs ctest quietly; prints its summary, or the whole log when something failed.
run_ctest() {  # run_ctest BUILD_DIR
  local log="$1/ctest.log"
  if ! ctest --test-dir "$1" -j"$jobs" --output-on-failure --timeout 600 --output-junit "$root/$1/junit.xml" \
    >"$log" 2>&1; then
    grep -v -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed' "$log" | tail -n 300
    echo "mcbus: tests failed in $1 (full log: $log)" >&2
    grep -E '^[0-9]+% tests passed' "$log" || true
    exit 1
  fi
  # What did not run, and why (from each test's own skip message), then ctest's summary line, last.
  sed -n '/^The following tests did not run:/,/^$/p' "$log"
  python3 "$root/scripts/skip-summary.py" "$root/$1/junit.xml"
  grep -E '^[0-9]+% tests passed' "$log"
}
configure() {  # configure BUILD_DIR [cmake args...]
  local dir=$1
  shift
  cmake -S "$root" -B "$dir" -G Ninja -Wno-dev -DMCBUS_WERROR=ON "$@" >/dev/null
}

stage "ASan+UBSan build of the tests"
configure build/asan -DCMAKE_BUILD_TYPE=Debug -DMCBUS_SANITIZE=address,undefined \
  -DMCBUS_BUILD_EXAMPLES=ON -DMCBUS_BUILD_TOOLS=ON -DMCBUS_BUILD_BENCH=OFF
ninja -C build/asan -j"$jobs" >/dev/null
# The million-signal sequence and the million simulated schedules run at full length in the main
# build; a tenth and a fiftieth of them here.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  MCBUS_SEQUENCE_MESSAGES=100000 MCBUS_SIM_SCHEDULES=20000 run_ctest build/asan

if [[ -x "$root/scripts/test-s390x.sh" ]]; then
  stage "big-endian: wire and match tests on s390x under qemu-user"
  "$root/scripts/test-s390x.sh" | tail -n 3
fi

if [[ -f "$root/meson.build" ]]; then
  stage "meson build and tests"
  meson setup build/meson "$root" -Dwerror=true --wipe >/dev/null 2>&1 || meson setup build/meson "$root" -Dwerror=true >/dev/null
  meson test -C build/meson --num-processes "$jobs" --print-errorlogs | tail -n 8
fi

if [[ -x "$root/scripts/fuzz-smoke.sh" ]]; then
  stage "fuzzer smoke runs (clang, libFuzzer)"
  export MCBUS_FUZZ_SECONDS=${MCBUS_FUZZ_SECONDS:-10}
  "$root/scripts/fuzz-smoke.sh"
fi

if [[ -x "$root/scripts/test-consumers.sh" ]]; then
  stage "consumers: find_package, add_subdirectory, FetchContent, pkg-config, meson"
  "$root/scripts/test-consumers.sh"
fi

if [[ -x "$root/scripts/test-embedded.sh" ]]; then
  stage "embedded: embedded-minimal served on a bus; core tests on arm64 and armhf under qemu-user"
  "$root/scripts/test-embedded.sh"
fi

stage "main build (-O2) and the full test suite"
# -O2 without debug info: the suite's budget on 2 cores is 30 minutes and -g costs a fifth of it.
configure build/main -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -DNDEBUG"
ninja -C build/main -j"$jobs" >/dev/null
run_ctest build/main
