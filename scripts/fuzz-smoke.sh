#!/usr/bin/env bash
# Smoke run of every fuzz target: builds tests/fuzz/fuzz_*.cpp with clang, libFuzzer, ASan and
# UBSan, then runs each one for a short time from its checked-in corpus (tests/fuzz/corpus/NAME/).
# Fails on the first finding (crash, sanitizer report, leak, timeout or out-of-memory) and keeps the
# input that caused it.
#
# scripts/test.sh calls this. Environment:
#   MCBUS_FUZZ_SECONDS   run time per target (default 30)
#   MCBUS_FUZZ_BUILD     build directory (default build/fuzz)
#   MCBUS_FUZZ_TARGETS   space-separated target names to run instead of all (e.g. "fuzz_message")
# New inputs the runs find go to a scratch directory; the checked-in corpus is never modified.
# Long runs for a release go through the same binaries, e.g.
#   build/fuzz/tests/fuzz/fuzz_message -max_total_time=600 /tmp/new tests/fuzz/corpus/message
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${MCBUS_FUZZ_SECONDS:-30}
build=${MCBUS_FUZZ_BUILD:-$root/build/fuzz}

for tool in clang++ cmake ninja; do
  command -v "$tool" >/dev/null || { echo "fuzz-smoke: $tool is missing (scripts/deps.sh installs it)" >&2; exit 2; }
done

# Only the fuzz targets: they bring their own sanitizers, and the rest is built elsewhere.
CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -Wno-dev -DMCBUS_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMCBUS_BUILD_FUZZERS=ON -DMCBUS_BUILD_TESTS=OFF -DMCBUS_BUILD_TOOLS=OFF -DMCBUS_BUILD_EXAMPLES=OFF \
  -DMCBUS_BUILD_BENCH=OFF -DMCBUS_INSTALL=OFF >/dev/null
ninja -C "$build" -j"$(nproc)" >/dev/null

if [[ -n ${MCBUS_FUZZ_TARGETS:-} ]]; then
  read -r -a targets <<<"$MCBUS_FUZZ_TARGETS"
else
  targets=()
  for src in "$root"/tests/fuzz/fuzz_*.cpp; do
    [[ -e $src ]] && targets+=("$(basename "$src" .cpp)")
  done
fi
if ((${#targets[@]} == 0)); then
  echo "fuzz-smoke: no fuzz targets in tests/fuzz" >&2
  exit 1
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/mcbus-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
findings="$build/findings"
mkdir -p "$findings"

failed=0
for name in "${targets[@]}"; do
  bin="$build/tests/fuzz/$name"
  short=${name#fuzz_}
  corpus="$root/tests/fuzz/corpus/$short"
  log="$build/$name.log"
  if [[ ! -x $bin ]]; then
    echo "fuzz-smoke: $name was not built" >&2
    failed=1
    continue
  fi
  mkdir -p "$scratch/$short"
  seeds=()
  [[ -d $corpus ]] && seeds+=("$corpus")
  # -timeout: an input that takes a second is a hang for a parser; -error_exitcode makes every kind
  # of finding fail the run the same way.
  if "$bin" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -error_exitcode=77 -print_final_stats=1 \
    -artifact_prefix="$findings/$name-" "$scratch/$short" "${seeds[@]}" >"$log" 2>&1; then
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
    printf 'fuzz-smoke: %-22s ok  %s\n' "$name" "${done_line:-$(tail -n 1 "$log")}"
  else
    echo "fuzz-smoke: $name FAILED; the input is in $findings, the log in $log:" >&2
    grep -E -A 30 'ERROR|SUMMARY|deadly signal|fuzz_[a-z_]+:' "$log" | head -n 60 >&2 || tail -n 60 "$log" >&2
    failed=1
  fi
done
exit "$failed"
