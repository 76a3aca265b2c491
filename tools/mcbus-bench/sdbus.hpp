// mcbus-bench: the sd-bus baselines (built when libsystemd is there).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "fanout.hpp"

namespace mcbus_bench {

// What the round-trip server and client share.
struct rt_control {
  std::atomic<std::uint32_t> ready{0};
  std::atomic<std::uint32_t> stop{0};
  std::atomic<std::uint32_t> failed{0};
};

inline constexpr const char* rt_method = "Ping";

#if MCBUS_BENCH_HAVE_SDBUS
// Serves Ping(t) -> t on bench_path until ctl.stop.
int sdbus_rt_server(const std::string& address, const std::string& name, rt_control& ctl);
// Makes `warmup` then `calls` blocking calls; fills lat_ns for the timed ones.
bool sdbus_rt_client(const std::string& address, const std::string& name, unsigned warmup, unsigned calls,
                     std::vector<std::uint64_t>& lat_ns, double& seconds, std::string& why);
#endif

}  // namespace mcbus_bench
