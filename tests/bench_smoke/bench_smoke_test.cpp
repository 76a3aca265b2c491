// mcbus-bench, each mode for a handful of messages against a private bus: the JSON lines parse,
// every reliable path delivered exactly what its rules match, and the figures are plausible.
// (Timing targets are the benchmark's business; this only checks that it measures.)
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "test_bus.hpp"

namespace {

using object = std::map<std::string, std::string>;  // values as written (strings unquoted)

// A flat JSON object of strings, numbers and booleans: what mcbus-bench prints. False if the text
// is not one.
bool parse_flat_json(const std::string& s, object& out) {
  std::size_t i = 0;
  auto ws = [&] {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n')) ++i;
  };
  auto string = [&](std::string& v) {
    if (i >= s.size() || s[i] != '"') return false;
    for (++i; i < s.size() && s[i] != '"'; ++i) {
      if (s[i] == '\\' && i + 1 < s.size()) ++i;
      v += s[i];
    }
    if (i >= s.size()) return false;
    ++i;
    return true;
  };
  ws();
  if (i >= s.size() || s[i++] != '{') return false;
  ws();
  if (i < s.size() && s[i] == '}') return ++i, true;
  while (true) {
    std::string key, value;
    ws();
    if (!string(key)) return false;
    ws();
    if (i >= s.size() || s[i++] != ':') return false;
    ws();
    if (i < s.size() && s[i] == '"') {
      if (!string(value)) return false;
    } else {
      const std::size_t start = i;
      while (i < s.size() && s[i] != ',' && s[i] != '}') ++i;
      value = s.substr(start, i - start);
      char* end = nullptr;
      if (value != "true" && value != "false" && (std::strtod(value.c_str(), &end), !end || *end)) return false;
    }
    if (!out.emplace(key, value).second) return false;  // a key twice
    ws();
    if (i >= s.size()) return false;
    if (s[i] == '}') {
      ++i;
      ws();
      return i == s.size();
    }
    if (s[i++] != ',') return false;
  }
}

struct run_result {
  int status = -1;
  std::vector<object> lines;
  std::string raw;
};

run_result run_bench(const std::string& args) {
  run_result r;
  const std::string cmd = std::string(MCBUS_BENCH_BIN) + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[8192];
  while (std::fgets(buf, sizeof buf, p)) {
    std::string line(buf);
    r.raw += line;
    object o;
    if (!line.empty() && line[0] == '{') {
      EXPECT_TRUE(parse_flat_json(line, o)) << "not a flat JSON object: " << line;
      r.lines.push_back(std::move(o));
    }
  }
  const int status = ::pclose(p);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

double num(const object& o, const std::string& key) {
  auto it = o.find(key);
  EXPECT_NE(it, o.end()) << "no " << key;
  return it == o.end() ? -1 : std::strtod(it->second.c_str(), nullptr);
}

const object* find_impl(const run_result& r, const std::string& impl) {
  for (const object& o : r.lines) {
    if (auto it = o.find("impl"); it != o.end() && it->second == impl) return &o;
  }
  return nullptr;
}

class BenchSmoke : public testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    bus_ = mcbus_test::shared_bus(mcbus_test::bus_kind::dbus_daemon, why);
    if (!bus_) GTEST_SKIP() << "dbus-daemon unavailable: " << why;
  }
  std::string address() const { return "--bus-address=" + bus_->address(); }
  mcbus_test::test_bus* bus_ = nullptr;
};

// Every implementation line of a signal run: it succeeded and delivered what it expected.
void expect_delivered(const run_result& r, const char* mode) {
  int seen = 0;
  for (const object& o : r.lines) {
    if (o.count("ratio")) continue;
    ++seen;
    EXPECT_EQ(o.at("mode"), mode);
    EXPECT_EQ(o.at("ok"), "true") << r.raw;
    EXPECT_EQ(num(o, "delivered"), num(o, "expected")) << r.raw;
    EXPECT_GT(num(o, "expected"), 0);
    EXPECT_GT(num(o, "seconds"), 0);
    EXPECT_GT(num(o, "p50_us"), 0);
    EXPECT_GE(num(o, "p99_us"), num(o, "p50_us"));
  }
  EXPECT_GE(seen, 1) << r.raw;
}

TEST_F(BenchSmoke, RoundtripPrintsItsLine) {
  const run_result r = run_bench("roundtrip " + address() + " --calls=50");
  ASSERT_EQ(r.status, 0) << r.raw;
  const object* mine = find_impl(r, "mcbus");
  ASSERT_NE(mine, nullptr) << r.raw;
  EXPECT_EQ(mine->at("mode"), "roundtrip");
  EXPECT_EQ(num(*mine, "calls"), 50);
  EXPECT_GT(num(*mine, "p50_us"), 0);
  EXPECT_GE(num(*mine, "p99_us"), num(*mine, "p50_us"));
  EXPECT_GT(num(*mine, "calls_per_s"), 0);
  if (const object* theirs = find_impl(r, "sd-bus")) {
    EXPECT_GT(num(*theirs, "calls_per_s"), 0);
  }
}

TEST_F(BenchSmoke, SignalsBusDeliversEverything) {
  const run_result r = run_bench("signals-bus " + address() + " --messages=300 --paced=20");
  ASSERT_EQ(r.status, 0) << r.raw;
  expect_delivered(r, "signals-bus");
  const object* mine = find_impl(r, "mcbus");
  ASSERT_NE(mine, nullptr);
  EXPECT_EQ(num(*mine, "expected"), 320);
  EXPECT_GT(num(*mine, "per_s"), 0);
}

TEST_F(BenchSmoke, FanoutOverMulticastDeliversExactlyTheMatches) {
  // 3 subscribers at S=0.5 are in groups 0, 1, 0: 100 load messages each, and 5 of the 10 paced ones
  // (which alternate between the groups).
  const run_result r =
      run_bench("fanout " + address() + " --subscribers=3 --selectivity=0.5 --messages=200 --paced=10 --via=multicast");
  ASSERT_EQ(r.status, 0) << r.raw;
  expect_delivered(r, "fanout");
  const object* mine = find_impl(r, "mcbus");
  ASSERT_NE(mine, nullptr);
  EXPECT_EQ(mine->at("via"), "multicast");
  EXPECT_EQ(num(*mine, "expected"), 315);
  EXPECT_EQ(num(*mine, "packets"), 315) << "every delivery came over the group";
  EXPECT_GT(num(*mine, "cpu_s"), 0);
  ASSERT_NE(find_impl(r, "raw-seqpacket"), nullptr) << "the floor runs in the same invocation";
}

// Issue 12: the sd-bus baseline runs with both rule shapes, each with its own ratio line, and the
// floor batches its sends as the publisher does, with a filter on every member socket.
TEST_F(BenchSmoke, FanoutRunsBothRuleShapesAgainstABatchedFloor) {
  const run_result r =
      run_bench("fanout " + address() + " --subscribers=2 --selectivity=0.5 --messages=640 --paced=4 --via=multicast");
  ASSERT_EQ(r.status, 0) << r.raw;
  expect_delivered(r, "fanout");
  std::vector<std::string> mcbus_shapes, ratio_shapes;
  for (const object& o : r.lines) {
    if (o.count("ratio")) {
      ratio_shapes.push_back(o.at("rules"));
      continue;
    }
    EXPECT_GT(num(o, "delivered_per_s"), 0) << r.raw;
    EXPECT_GT(num(o, "cpu_us_per_delivered"), 0) << r.raw;
    EXPECT_GE(num(o, "switches_per_delivered"), 0) << r.raw;
    if (o.at("impl") == "mcbus") mcbus_shapes.push_back(o.at("rules"));
  }
  const std::vector<std::string> both{"member", "arg0namespace"};
  EXPECT_EQ(mcbus_shapes, both);
  const object* floor = find_impl(r, "raw-seqpacket");
  ASSERT_NE(floor, nullptr);
  // 640 load signals in bursts of 32 (plus the paced ones, one each): far fewer submissions than
  // signals, which is what "batches as the publisher does" means.
  EXPECT_LE(num(*floor, "submissions"), 640 / 32 + 4) << r.raw;
  EXPECT_EQ(ratio_shapes, both) << "one ratio line per shape, against the floor at least";
}

TEST_F(BenchSmoke, FanoutOverTheBusDeliversExactlyTheMatches) {
  const run_result r = run_bench("fanout " + address() +
                                 " --subscribers=2 --selectivity=0.5 --messages=100 --paced=10 --via=bus --no-floor");
  ASSERT_EQ(r.status, 0) << r.raw;
  expect_delivered(r, "fanout");
  const object* mine = find_impl(r, "mcbus");
  ASSERT_NE(mine, nullptr);
  EXPECT_EQ(mine->at("via"), "bus");
  EXPECT_GT(num(*mine, "cpu_bus_s"), -1);
}

TEST_F(BenchSmoke, FanoutOverUdpReportsLosses) {
  const run_result r = run_bench("fanout " + address() +
                                 " --subscribers=2 --selectivity=0.5 --messages=100 --paced=4 --via=udp --no-sdbus "
                                 "--no-floor --rules=member");
  ASSERT_EQ(r.status, 0) << r.raw;
  ASSERT_EQ(r.lines.size(), 1u) << r.raw;
  const object& o = r.lines[0];
  EXPECT_EQ(o.at("via"), "udp");
  EXPECT_EQ(num(o, "delivered") + num(o, "lost"), num(o, "expected"));
  // Loopback with 8 MiB buffers loses nothing at this size; the filter let the matches through.
  EXPECT_GT(num(o, "delivered"), 0) << "the relocated BPF filter passed nothing";
}

TEST_F(BenchSmoke, BadUsageExitsWithTwo) {
  EXPECT_EQ(run_bench("fanout --via=carrier-pigeon").status, 2);
  EXPECT_EQ(run_bench("nonsense").status, 2);
}

}  // namespace
