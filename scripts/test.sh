#!/usr/bin/env bash
# The whole mcbus test suite. README's Quick start runs this, and so does CI (.ci/run).
#
# Stages: dependencies; an ASan+UBSan build of every test; the wire/match tests on big-endian s390x
# under qemu-user; the meson build's tests; a short smoke run of every fuzzer; the consumers; the
# embedded targets; and last the main build's ctest. A stage that fails does not stop the ones
# after it. When every stage passed, the final line printed is the main build's ctest summary;
# otherwise it is "N passed, M failed", counting stages, after the list of those that failed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

"$root/scripts/deps.sh"

jobs=$(nproc)
started=$SECONDS
failed_stages=()
passed_stages=0
stage() { printf '\n==== %s  [%dm%02ds]\n' "$*" $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)); }
# run_stage "TITLE" COMMAND...: runs one stage in a subshell that stops at its first failing
# command, and notes how it ended. (Not as an `if` condition: bash ignores -e inside one.)
run_stage() {
  local title=$1 rc
  shift
  stage "$title"
  set +e
  (
    set -e
    "$@"
  )
  rc=$?
  set -e
  if ((rc == 0)); then
    passed_stages=$((passed_stages + 1))
  else
    echo "mcbus: stage failed: $title" >&2
    failed_stages+=("$title")
  fi
}
# Runs ctest quietly; prints its summary, or the whole log when something failed.
run_ctest() {  # run_ctest BUILD_DIR
  local log="$1/ctest.log"
  if ! ctest --test-dir "$1" -j"$jobs" --output-on-failure --timeout 600 --output-junit "$root/$1/junit.xml" \
    >"$log" 2>&1; then
    grep -v -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed' "$log" | tail -n 300
    echo "mcbus: tests failed in $1 (full log: $log)" >&2
    grep -E '^[0-9]+% tests passed' "$log" || true
    return 1
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

asan() {
  configure build/asan -DCMAKE_BUILD_TYPE=Debug -DMCBUS_SANITIZE=address,undefined \
    -DMCBUS_BUILD_EXAMPLES=ON -DMCBUS_BUILD_TOOLS=ON -DMCBUS_BUILD_BENCH=OFF
  ninja -C build/asan -j"$jobs" >/dev/null
  # The million-signal sequence and the million simulated schedules run at full length in the main
  # build; a tenth and a fiftieth of them here.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    MCBUS_SEQUENCE_MESSAGES=100000 MCBUS_SIM_SCHEDULES=20000 run_ctest build/asan
}
meson_tests() {
  meson setup build/meson "$root" -Dwerror=true --wipe >/dev/null 2>&1 || meson setup build/meson "$root" -Dwerror=true >/dev/null
  meson test -C build/meson --num-processes "$jobs" --print-errorlogs | tail -n 8
}
s390x() { "$root/scripts/test-s390x.sh" | tail -n 3; }
main_tests() {
  # -O2 without debug info: the suite's budget on 2 cores is 30 minutes and -g costs a fifth of it.
  configure build/main -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -DNDEBUG"
  ninja -C build/main -j"$jobs" >/dev/null
  run_ctest build/main
}

run_stage "ASan+UBSan build of the tests" asan
if [[ -x "$root/scripts/test-s390x.sh" ]]; then
  run_stage "big-endian: wire and match tests on s390x under qemu-user" s390x
fi
if [[ -f "$root/meson.build" ]]; then
  run_stage "meson build and tests" meson_tests
fi
if [[ -x "$root/scripts/fuzz-smoke.sh" ]]; then
  export MCBUS_FUZZ_SECONDS=${MCBUS_FUZZ_SECONDS:-10}
  run_stage "fuzzer smoke runs (clang, libFuzzer)" "$root/scripts/fuzz-smoke.sh"
fi
if [[ -x "$root/scripts/test-consumers.sh" ]]; then
  run_stage "consumers: find_package, add_subdirectory, FetchContent, pkg-config, meson" "$root/scripts/test-consumers.sh"
fi
if [[ -x "$root/scripts/test-embedded.sh" ]]; then
  run_stage "embedded: embedded-minimal served on a bus; core tests on arm64 and armhf under qemu-user" \
    "$root/scripts/test-embedded.sh"
fi
run_stage "main build (-O2) and the full test suite" main_tests

if ((${#failed_stages[@]})); then
  printf '\nmcbus: stages that failed:\n' >&2
  printf '  - %s\n' "${failed_stages[@]}" >&2
  echo "${passed_stages} passed, ${#failed_stages[@]} failed"
  exit 1
fi
