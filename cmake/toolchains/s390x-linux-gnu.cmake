# Cross build for big-endian s390x with Debian's g++-s390x-linux-gnu; the tests run under
# qemu-user (package qemu-user), which CMake and ctest use as the emulator.
#   cmake -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/s390x-linux-gnu.cmake -DMCBUS_CORE_ONLY=ON \
#         -DMCBUS_GTEST_SOURCE_DIR=/usr/src/googletest ...
# scripts/test-s390x.sh does all of it.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR s390x)

set(MCBUS_CROSS_TRIPLE s390x-linux-gnu)
set(CMAKE_C_COMPILER ${MCBUS_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${MCBUS_CROSS_TRIPLE}-g++)

# Debian installs the target's libraries and headers here.
set(CMAKE_FIND_ROOT_PATH /usr/${MCBUS_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# -L points qemu at the target's dynamic loader and libraries.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-s390x -L /usr/${MCBUS_CROSS_TRIPLE})
