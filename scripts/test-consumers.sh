#!/usr/bin/env bash
# Builds and runs the out-of-tree consumers in tests/consumers/, one for each way of consuming
# mcbus, and prints a summary table:
#   - cmake --install into a temporary prefix, then find_package(mcbus) and mcbus::mcbus
#   - add_subdirectory() of the checkout
#   - FetchContent from the checkout's folder (SOURCE_DIR) and from a file:// git URL (the last
#     commit: this also proves that everything a consumer needs is committed)
#   - pkg-config --cflags --libs mcbus, from the installed .pc file
#   - meson dependency('mcbus') through pkg-config, and mcbus as a meson subproject
#   - the core alone: wire/ and match/ compiled with only the installed include folder, with
#     -fno-exceptions -fno-rtti, and no -luring or -lfmt; the headers it read and the libraries it
#     needs are checked
# Each consumer builds two programs (tests/consumers/src): core_consumer (wire + match, no
# exceptions, no RTTI) and connection_consumer (mcbus/connection.hpp), and runs them; the
# connection consumer talks to a private dbus-daemon when one can be started.
#
# Usage: scripts/test-consumers.sh [BUILD_DIR]   (default: build-consumers)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${1:-$root/build-consumers}
src=$root/tests/consumers
jobs=2
cxx=${CXX:-c++}

rm -rf "$build"
mkdir -p "$build"
prefix=$build/prefix
log=$build/log

results=()  # "name|status|seconds|detail"
failed=0
now() { date +%s.%N; }
record() {  # record NAME STATUS START DETAIL
  results+=("$1|$2|$(awk -v a="$3" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')|$4")
  [[ $2 == ok ]] || failed=1
}
# Runs a command with its output in the log; on failure shows the end of the log.
quiet() {  # quiet LOGFILE CMD...
  local out=$1
  shift
  if ! "$@" >"$out" 2>&1; then
    echo "mcbus: failed: $*" >&2
    tail -n 40 "$out" >&2
    return 1
  fi
}
# Runs both consumer programs from a folder; prints what the connection consumer said.
run_pair() {  # run_pair DIR
  "$1/core_consumer" >/dev/null && MCBUS_CONSUMER_ADDRESS=$bus_address "$1/connection_consumer"
}
mkdir -p "$log"

# ---- a private bus for the connection consumer ---------------------------------------------
source "$root/scripts/private-bus.sh"
trap stop_private_bus EXIT
if ! command -v dbus-daemon >/dev/null || ! start_private_bus "$build/bus"; then
  echo "mcbus: no private dbus-daemon; the connection consumers only check a failing connect" >&2
fi

# ---- install into a prefix -----------------------------------------------------------------
t=$(now)
quiet "$log/install.log" cmake -S "$root" -B "$build/mcbus" -G Ninja -Wno-dev -DCMAKE_INSTALL_PREFIX="$prefix" \
  -DMCBUS_BUILD_TESTS=OFF -DMCBUS_BUILD_TOOLS=OFF -DMCBUS_BUILD_EXAMPLES=OFF -DMCBUS_BUILD_BENCH=OFF -DMCBUS_INSTALL=ON
quiet "$log/install2.log" cmake --install "$build/mcbus"
if [[ -f $prefix/include/mcbus/connection.hpp && -f $prefix/share/pkgconfig/mcbus.pc ]] &&
  ls "$prefix"/lib*/cmake/mcbus/mcbusConfig.cmake >/dev/null 2>&1; then
  record "cmake --install" ok "$t" "$(find "$prefix/include" -name '*.hpp' | wc -l) headers, mcbus.pc, mcbusConfig.cmake"
else
  record "cmake --install" FAILED "$t" "headers, mcbus.pc or mcbusConfig.cmake missing in $prefix"
fi

# ---- CMake consumers ----------------------------------------------------------------------
slug() { tr -c 'a-zA-Z0-9_\n-' '-' <<<"$1" | tr -s '-' | sed 's/-$//'; }
cmake_consumer() {  # cmake_consumer NAME SOURCE_SUBDIR [cmake args...]
  local name=$1 dir=$2 bdir t out
  bdir=$build/$(slug "$1")
  shift 2
  t=$(now)
  if quiet "$log/${bdir##*/}.configure.log" cmake -S "$src/$dir" -B "$bdir" -G Ninja -Wno-dev -DCMAKE_BUILD_TYPE=Debug "$@" &&
    quiet "$log/${bdir##*/}.build.log" ninja -C "$bdir" -j"$jobs" && out=$(run_pair "$bdir" 2>&1); then
    record "$name" ok "$t" "${out#connection consumer: }"
  else
    record "$name" FAILED "$t" "see $log/${bdir##*/}.*.log ${out:-}"
  fi
}
cmake_consumer find_package find-package -DCMAKE_PREFIX_PATH="$prefix"
cmake_consumer add_subdirectory add-subdirectory -DMCBUS_DIR="$root"
cmake_consumer "FetchContent (SOURCE_DIR)" fetchcontent -DMCBUS_SOURCE_DIR="$root"
cmake_consumer "FetchContent (git file://)" fetchcontent -DMCBUS_GIT_URL="file://$root" \
  -DMCBUS_GIT_TAG="$(git -C "$root" rev-parse HEAD)"

# ---- pkg-config ---------------------------------------------------------------------------
t=$(now)
mkdir -p "$build/pkg-config"
export PKG_CONFIG_PATH=$prefix/share/pkgconfig
if flags=$(pkg-config --cflags --libs mcbus) &&
  quiet "$log/pkg-config.log" make -f "$src/pkg-config/Makefile" OUT="$build/pkg-config" CXX="$cxx" &&
  out=$(run_pair "$build/pkg-config" 2>&1); then
  record "pkg-config" ok "$t" "flags: $flags"
else
  record "pkg-config" FAILED "$t" "see $log/pkg-config.log"
fi

# ---- meson --------------------------------------------------------------------------------
meson_consumer() {  # meson_consumer NAME SOURCE_DIR
  local name=$1 dir=$2 bdir t out
  bdir=$build/$(slug "$1")
  t=$(now)
  if quiet "$log/${bdir##*/}.setup.log" meson setup "$bdir" "$dir" &&
    quiet "$log/${bdir##*/}.build.log" meson compile -C "$bdir" -j "$jobs" && out=$(run_pair "$bdir" 2>&1); then
    record "$name" ok "$t" "${out#connection consumer: }"
  else
    record "$name" FAILED "$t" "see $log/${bdir##*/}.*.log ${out:-}"
  fi
}
if command -v meson >/dev/null; then
  meson_consumer "meson dependency()" "$src/meson-dependency"
  unset PKG_CONFIG_PATH  # the subproject must not need an installed mcbus
  # A subproject lives inside the consuming project: copy the consumer, link mcbus in.
  sub=$build/meson-subproject-src
  mkdir -p "$sub/subprojects"
  cp "$src/meson-subproject/meson.build" "$sub/"
  cp -r "$src/src" "$sub/src"
  ln -s "$root" "$sub/subprojects/mcbus"
  meson_consumer "meson subproject" "$sub"
else
  record "meson" FAILED "$(now)" "meson is missing (scripts/deps.sh installs it)"
fi

# ---- the core alone: only the include folder, no exceptions, no RTTI, no libraries ----------
t=$(now)
core_bin=$build/core-only/core_consumer
mkdir -p "$build/core-only"
# -H lists every header read; none may come from liburing or fmt.
if quiet "$log/core-only.log" "$cxx" -std=c++20 -Os -fno-exceptions -fno-rtti -Wall -Wextra -Wpedantic -Werror \
  -H -I"$prefix/include" "$src/src/core_consumer.cpp" -o "$core_bin"; then
  bad_headers=$(grep -E '^\.+ ' "$log/core-only.log" | grep -E 'liburing|/fmt/' || true)
  needed=$(readelf -d "$core_bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
  if [[ -n $bad_headers ]]; then
    record "core only (-I only)" FAILED "$t" "read $bad_headers"
  elif grep -qE 'liburing|libfmt' <<<"$needed"; then
    record "core only (-I only)" FAILED "$t" "needs $needed"
  elif out=$("$core_bin"); then
    record "core only (-I only)" ok "$t" "$(grep -cE '^\.+ ' "$log/core-only.log") headers read, none from liburing/fmt; needs: $needed"
  else
    record "core only (-I only)" FAILED "$t" "$out"
  fi
else
  record "core only (-I only)" FAILED "$t" "see $log/core-only.log"
fi

# ---- summary ------------------------------------------------------------------------------
printf '\n%-28s %-7s %6s  %s\n' "consumer" "result" "secs" "detail"
for r in "${results[@]}"; do
  IFS='|' read -r name status secs detail <<<"$r"
  printf '%-28s %-7s %6s  %s\n' "$name" "$status" "$secs" "$detail"
done
if ((failed)); then
  echo "mcbus: some consumers failed (logs in $log)" >&2
  exit 1
fi
echo "all ${#results[@]} consumer checks passed"
