# The part of a Debian cross toolchain file that is the same for every target: the cross g++
# named by MCBUS_CROSS_TRIPLE, the target's files under /usr/<triple>, and qemu-user as the
# emulator. A toolchain file sets CMAKE_SYSTEM_PROCESSOR, MCBUS_CROSS_TRIPLE and MCBUS_CROSS_QEMU,
# then includes this.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_C_COMPILER ${MCBUS_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${MCBUS_CROSS_TRIPLE}-g++)

# Debian installs the target's libraries and headers here.
set(CMAKE_FIND_ROOT_PATH /usr/${MCBUS_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# -L points qemu at the target's dynamic loader and libraries.
set(CMAKE_CROSSCOMPILING_EMULATOR ${MCBUS_CROSS_QEMU} -L /usr/${MCBUS_CROSS_TRIPLE})
