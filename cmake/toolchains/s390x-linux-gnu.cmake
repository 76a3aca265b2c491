# Cross build for big-endian s390x with Debian's g++-s390x-linux-gnu; the tests run under
# qemu-user (package qemu-user), which CMake and ctest use as the emulator.
#   cmake -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/s390x-linux-gnu.cmake -DMCBUS_CORE_ONLY=ON \
#         -DMCBUS_GTEST_SOURCE_DIR=/usr/src/googletest ...
# scripts/test-s390x.sh does all of it.
set(CMAKE_SYSTEM_PROCESSOR s390x)
set(MCBUS_CROSS_TRIPLE s390x-linux-gnu)
set(MCBUS_CROSS_QEMU qemu-s390x)
include(${CMAKE_CURRENT_LIST_DIR}/debian-cross.cmake)
