// What a compiled match filter costs per message, in mcbus's interpreter and in the kernel, for 1,
// 8 and 64 rules; what compiling 64 rules costs; and how many messages the filter lets through
// that the rules do not match (its false positives).
//
// The rules use header keys and string arguments among the first four (the class the filter is
// exact for); the messages are random signals, method calls and replies in both byte orders with
// arguments the filter's walk can step over. Kernel figures come from a real AF_UNIX SOCK_SEQPACKET
// pair: one send (the filter runs inside it) and, when the message passed, one receive; the
// baseline pair has no filter.
//
//   build/bench/mcbus_bench_match_bpf --benchmark_counters_tabular=true
#include <mcbus/match.hpp>

#include <benchmark/benchmark.h>

#include <cstdio>
#include <string>
#include <vector>

#include "../tests/match/kernel_filter.hpp"
#include "../tests/match/random_gen.hpp"

namespace {

using namespace mcbus;

std::size_t optmem_max() {
  std::FILE* f = std::fopen("/proc/sys/net/core/optmem_max", "r");
  unsigned long v = bpf::optmem_max_default;
  if (f) {
    if (std::fscanf(f, "%lu", &v) != 1) v = bpf::optmem_max_default;
    std::fclose(f);
  }
  return v;
}

// Rules as subscribers write them: a signal's interface and member, often a path or a sender, and
// sometimes string arguments among the first four. Header keys and string arguments only.
std::vector<match_rule> rules_for(std::size_t n, std::uint64_t seed) {
  using namespace mcbus_test;
  prng r(seed);
  std::vector<match_rule> out;
  while (out.size() < n) {
    match_rule rule;
    (void)rule.set_type(message_type::signal);
    (void)rule.set_interface(pick(r, pools::interfaces));
    (void)rule.set_member(pick(r, pools::members));
    if (r.below(2)) (void)rule.set_path(pick(r, pools::paths));
    if (r.below(3) == 0) (void)rule.set_sender(pick(r, pools::senders));
    const unsigned nargs = r.below(3);
    for (unsigned i = 0; i < nargs; ++i) (void)rule.add_arg(r.below(4), random_string(r));
    out.push_back(rule);
  }
  return out;
}

struct corpus {
  std::vector<std::vector<std::byte>> messages;
  explicit corpus(std::size_t n) {
    mcbus_test::prng r(4242);
    for (std::size_t i = 0; i < n; ++i) messages.push_back(mcbus_test::random_message(r, {.simple_args = true}));
  }
};
const corpus& messages() {
  static const corpus c(4096);
  return c;
}

bpf_options options_for(std::size_t kernel_bytes) {
  return {.receiver = mcbus_test::world::receiver,
          .owners = mcbus_test::world::owners(),
          .owners_complete = true,
          .max_kernel_bytes = kernel_bytes};
}

// Counters every benchmark reports: the program and how often it passes non-matching messages.
void describe(benchmark::State& state, const std::vector<match_rule>& rules, const bpf_program& prog) {
  const match_context ctx{mcbus_test::world::receiver, mcbus_test::world::owners()};
  long matching = 0;
  long fp = 0;
  for (const auto& m : messages().messages) {
    const auto view = message_view::parse(m).value();
    bool expect = false;
    for (const match_rule& r : rules) expect = expect || r.matches(view, ctx);
    const bool pass = run_bpf(prog.insns(), m) != 0;
    matching += expect;
    fp += pass && !expect;
  }
  const long non_matching = static_cast<long>(messages().messages.size()) - matching;
  state.counters["insns"] = static_cast<double>(prog.size());
  state.counters["kbytes"] = static_cast<double>(prog.kernel_bytes()) / 1024.0;
  state.counters["exact"] = prog.exact() ? 1 : 0;
  state.counters["match%"] = 100.0 * double(matching) / double(messages().messages.size());
  state.counters["FP%"] = non_matching ? 100.0 * double(fp) / double(non_matching) : 0.0;
}

void BM_Exact(benchmark::State& state) {
  const auto rules = rules_for(static_cast<std::size_t>(state.range(0)), 1);
  std::vector<message_view> views;
  for (const auto& m : messages().messages) views.push_back(message_view::parse(m).value());
  const match_context ctx{mcbus_test::world::receiver, mcbus_test::world::owners()};
  std::size_t i = 0;
  for (auto _ : state) {
    bool any = false;
    for (const match_rule& r : rules) any = any || r.matches(views[i], ctx);
    benchmark::DoNotOptimize(any);
    i = (i + 1) % views.size();
  }
}

void BM_Interpreter(benchmark::State& state) {
  const auto rules = rules_for(static_cast<std::size_t>(state.range(0)), 1);
  const auto prog = compile_bpf(rules, options_for(static_cast<std::size_t>(state.range(1)))).value();
  const auto filter = bpf_filter::load(prog.insns()).value();
  describe(state, rules, prog);
  const auto& msgs = messages().messages;
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(filter.run(msgs[i]));
    i = (i + 1) % msgs.size();
  }
}

// Kernel: send through a pair with the filter attached (state.range(0) rules) or with none (0).
void BM_Kernel(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  mcbus_test::kernel_filter pair;
  if (!pair.ok()) return state.SkipWithError("socketpair failed");
  if (n > 0) {
    const auto rules = rules_for(n, 1);
    const auto prog = compile_bpf(rules, options_for(static_cast<std::size_t>(state.range(1)))).value();
    if (pair.attach(prog.insns()) != 0) return state.SkipWithError("SO_ATTACH_FILTER failed");
    describe(state, rules, prog);
  }
  const auto& msgs = messages().messages;
  std::size_t i = 0;
  long passed = 0;
  for (auto _ : state) {
    const long got = pair.pass(msgs[i]);
    if (got < 0) return state.SkipWithError("send failed");
    passed += got > 0;
    i = (i + 1) % msgs.size();
  }
  state.counters["passed%"] = 100.0 * double(passed) / double(state.iterations());
}

// The filter's own cost in the kernel: messages it drops, so that a send is the whole of the work,
// against a baseline filter that drops everything at its first instruction (N = 0).
void BM_KernelDrop(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  mcbus_test::kernel_filter pair;
  if (!pair.ok()) return state.SkipWithError("socketpair failed");
  std::vector<bpf_insn> insns{bpf::stmt(bpf::ret | bpf::k, bpf::reject)};
  std::vector<const std::vector<std::byte>*> dropped;
  if (n > 0) {
    const auto rules = rules_for(n, 1);
    const auto prog = compile_bpf(rules, options_for(static_cast<std::size_t>(state.range(1)))).value();
    insns.assign(prog.insns().begin(), prog.insns().end());
    describe(state, rules, prog);
  }
  for (const auto& m : messages().messages) {
    if (run_bpf(insns, m) == 0) dropped.push_back(&m);
  }
  if (pair.attach(insns) != 0) return state.SkipWithError("SO_ATTACH_FILTER failed");
  std::size_t i = 0;
  for (auto _ : state) {
    if (pair.pass(*dropped[i]) != 0) return state.SkipWithError("a dropped message arrived");
    i = (i + 1) % dropped.size();
  }
}

void BM_Compile(benchmark::State& state) {
  const auto rules = rules_for(static_cast<std::size_t>(state.range(0)), 1);
  const bpf_options opts = options_for(static_cast<std::size_t>(state.range(1)));
  for (auto _ : state) benchmark::DoNotOptimize(compile_bpf(rules, opts));
  describe(state, rules, compile_bpf(rules, opts).value());
}

const std::int64_t small_budget = static_cast<std::int64_t>(bpf::optmem_max_default - 512);
const std::int64_t machine_budget = static_cast<std::int64_t>(optmem_max() - 512);

BENCHMARK(BM_Exact)->Arg(1)->Arg(8)->Arg(64);
BENCHMARK(BM_Interpreter)->ArgsProduct({{1, 8, 64}, {small_budget, machine_budget}});
BENCHMARK(BM_Kernel)->Args({0, 0})->ArgsProduct({{1, 8, 64}, {small_budget, machine_budget}});
BENCHMARK(BM_KernelDrop)->Args({0, 0})->ArgsProduct({{1, 8, 64}, {small_budget, machine_budget}});
BENCHMARK(BM_Compile)->ArgsProduct({{1, 8, 64}, {small_budget, machine_budget}})->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
