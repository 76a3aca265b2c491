# Cross build for Debian armhf (32-bit Armv7, hard float) with Debian's g++-arm-linux-gnueabihf.
# The tests and examples/embedded-minimal run under qemu-user (package qemu-user), which CMake and
# ctest use as the emulator.
#   cmake -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/arm-linux-gnueabihf.cmake -DMCBUS_CORE_ONLY=ON \
#         -DMCBUS_GTEST_SOURCE_DIR=/usr/src/googletest ...
# scripts/test-embedded.sh does all of it.
set(CMAKE_SYSTEM_PROCESSOR arm)
set(MCBUS_CROSS_TRIPLE arm-linux-gnueabihf)
set(MCBUS_CROSS_QEMU qemu-arm)
include(${CMAKE_CURRENT_LIST_DIR}/debian-cross.cmake)

# GCC notes on every std::vector/std::map iterator passed by value that its ABI for these changed
# in GCC 7.1. mcbus is header-only and compiled by one compiler with its user: nothing to act on.
string(APPEND CMAKE_CXX_FLAGS_INIT " -Wno-psabi")
