#!/usr/bin/env bash
# Installs everything the demo and the test suite need on Debian 12, from Debian's packages only.
# Safe to run again: apt-get skips what is already there.
set -euo pipefail

packages=(
  # build
  g++ cmake ninja-build pkg-config meson clang libclang-rt-14-dev make file
  # the FetchContent consumer test clones this repository
  git ca-certificates
  # libraries: liburing for the io_uring transport, fmt for the tools, GoogleTest and Google Benchmark
  liburing-dev libfmt-dev libgtest-dev googletest libbenchmark-dev
  # peers for differential tests and benchmarks
  libdbus-1-dev libsystemd-dev
  # real buses and real clients for the integration tests
  dbus-daemon dbus-bin dbus-broker systemd libglib2.0-bin python3-dbus python3-gi util-linux
  # big-endian and embedded cross builds, run under qemu-user
  g++-s390x-linux-gnu g++-aarch64-linux-gnu g++-arm-linux-gnueabihf qemu-user
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "mcbus: installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "mcbus: installing packages needs root (run this as root or with sudo)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
