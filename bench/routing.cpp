// What the publisher's routing costs per emitted signal when members bring many rules: the same
// lookup and exact test that basic_publisher::emit() runs (multicast/routing.hpp), without the
// sends. Rules come in three shapes:
//   keyed     member='M<k>': filed under the member name, only matching ones are tested
//   interface interface='org.example.I<k>': filed under the interface since issue 11
//   unkeyed   path_namespace='/org/example/p<k>': no routing key, tested on every signal
// `members` × `rules` per member, all distinct, none matching the signal, so every candidate is
// tested to the end (the worst case: a member that matched is skipped for the rest of the emit).
// A member may bring publisher_options::max_unkeyed_rules_per_member (16) unkeyed rules and up
// to max_rules_per_member (512) keyed ones: the unkeyed row at 16 is the most one member can make
// every emit cost (the rows at 512 show what it cost before that limit).
//
//   build/bench/mcbus_bench_routing --benchmark_counters_tabular=true
#include <mcbus/multicast/routing.hpp>

#include <benchmark/benchmark.h>

#include <string>
#include <vector>

namespace {

using namespace mcbus;
using multicast::detail::route;
using multicast::detail::routing_index;

enum shape : int { keyed, by_interface, unkeyed };

std::string rule_text(int s, int member, int k) {
  const std::string id = std::to_string(member) + "x" + std::to_string(k);
  switch (s) {
    case keyed: return "type='signal',member='M" + id + "'";
    case by_interface: return "type='signal',interface='org.example.I" + id + "'";
    default: return "type='signal',path_namespace='/org/example/p" + id + "'";
  }
}

void BM_Route(benchmark::State& state) {
  const int s = static_cast<int>(state.range(0));
  const int members = static_cast<int>(state.range(1));
  const int rules = static_cast<int>(state.range(2));
  std::vector<std::vector<match_rule>> all(static_cast<std::size_t>(members));
  routing_index index;
  for (int m = 0; m < members; ++m) {
    for (int k = 0; k < rules; ++k) {
      auto r = match_rule::parse(rule_text(s, m, k));
      if (!r) return state.SkipWithError("bad rule");
      all[static_cast<std::size_t>(m)].push_back(std::move(*r));
      index.add({static_cast<std::uint32_t>(m), static_cast<std::uint32_t>(k)},
                all[static_cast<std::size_t>(m)].back());
    }
  }
  message sig = message::signal("/org/example/Sensor", "org.example.Sensor1", "Reading");
  sig.append(std::string_view("kitchen"), 21.5);
  sig.set_sender(bus_name::from_unchecked(":1.7"));
  sig.set_serial(1);
  if (sig.seal()) return state.SkipWithError("seal");
  auto bytes = sig.to_bytes();
  auto view = message_view::parse(*bytes);
  std::vector<std::uint64_t> last(static_cast<std::size_t>(members), 0);
  std::uint64_t seq = 0, tested = 0, matched = 0;
  for (auto _ : state) {
    ++seq;
    index.candidates(*view, [&](route r) {
      if (last[r.member] == seq) return;
      ++tested;
      if (!all[r.member][r.rule].matches(*view)) return;
      last[r.member] = seq;
      ++matched;
    });
  }
  benchmark::DoNotOptimize(matched);
  state.counters["tested/emit"] = static_cast<double>(tested) / static_cast<double>(state.iterations());
  state.SetLabel(s == keyed ? "keyed" : s == by_interface ? "interface" : "unkeyed");
}

BENCHMARK(BM_Route)
    ->ArgNames({"shape", "members", "rules"})
    ->ArgsProduct({{keyed, by_interface, unkeyed}, {64, 256, 4096}, {1, 16, 512}})
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
