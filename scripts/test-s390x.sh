#!/usr/bin/env bash
# The core tests (wire/, match/ and the no-exceptions build) on big-endian s390x: cross-compiled
# with Debian's g++-s390x-linux-gnu, GoogleTest built from /usr/src/googletest, run under
# qemu-user. Only the core test programs are built, to stay quick on CI's two cores. The last lines
# printed are ctest's summary.
#
# Usage: scripts/test-s390x.sh [BUILD_DIR]   (default: build-s390x)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${1:-$root/build-s390x}
jobs=$(nproc)

for tool in s390x-linux-gnu-g++ qemu-s390x; do
  if ! command -v "$tool" >/dev/null; then
    echo "mcbus: $tool is missing (scripts/deps.sh installs g++-s390x-linux-gnu and qemu-user)" >&2
    exit 1
  fi
done
if [[ ! -f /usr/src/googletest/CMakeLists.txt ]]; then
  echo "mcbus: /usr/src/googletest is missing (package googletest)" >&2
  exit 1
fi

# -O1: the tests run under emulation, and -O1 builds much faster than -O2 while running several
# times faster than -O0.
cmake -S "$root" -B "$build" -G Ninja -Wno-dev -DMCBUS_WERROR=ON \
  -DCMAKE_TOOLCHAIN_FILE="$root/cmake/toolchains/s390x-linux-gnu.cmake" \
  -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1" -DCMAKE_C_FLAGS="-O1" \
  -DMCBUS_CORE_ONLY=ON -DMCBUS_GTEST_SOURCE_DIR=/usr/src/googletest \
  -DMCBUS_BUILD_TOOLS=OFF -DMCBUS_BUILD_EXAMPLES=OFF -DMCBUS_BUILD_BENCH=OFF -DMCBUS_INSTALL=OFF >/dev/null

# Only the core programs: every target that exists of these.
targets=()
for t in mcbus_wire_tests mcbus_match_tests mcbus_core_noexcept; do
  if ninja -C "$build" -t query "$t" >/dev/null 2>&1; then targets+=("$t"); fi
done
ninja -C "$build" -j"$jobs" "${targets[@]}" >/dev/null

# Prove that the programs really are big-endian s390x binaries before trusting the results.
if ! file -L "$build/tests/mcbus_wire_tests" 2>/dev/null | grep -q "IBM S/390"; then
  if command -v file >/dev/null; then
    echo "mcbus: $build/tests/mcbus_wire_tests is not an s390x binary" >&2
    exit 1
  fi
fi

ctest --test-dir "$build" -j"$jobs" --timeout 900 --output-on-failure -R '^(wire|match|core)/'
