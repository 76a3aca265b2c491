# Cross build for Debian arm64 (64-bit Arm) with Debian's g++-aarch64-linux-gnu. The tests and
# examples/embedded-minimal run under qemu-user (package qemu-user), which CMake and ctest use as
# the emulator.
#   cmake -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake -DMCBUS_CORE_ONLY=ON \
#         -DMCBUS_GTEST_SOURCE_DIR=/usr/src/googletest ...
# scripts/test-embedded.sh does all of it.
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(MCBUS_CROSS_TRIPLE aarch64-linux-gnu)
set(MCBUS_CROSS_QEMU qemu-aarch64)
include(${CMAKE_CURRENT_LIST_DIR}/debian-cross.cmake)
