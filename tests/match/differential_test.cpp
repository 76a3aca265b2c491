// Differential test of the BPF compiler: random rule sets against random messages in both byte
// orders, each pair judged by match_rule::matches() (exact), by the interpreter and by the kernel
// running the same program on a real SEQPACKET socket. The filter must pass every message that
// matches (soundness); the interpreter and the kernel must agree on every message; where the
// program says it is exact for a message, the filter must also drop every message that does not
// match. False-positive rates are printed.
#include <mcbus/match.hpp>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernel_filter.hpp"
#include "random_gen.hpp"
#include "test_support.hpp"

using namespace mcbus;

namespace {

struct tally {
  long pairs = 0;
  long matches = 0;
  long kernel_pairs = 0;
  long false_positives = 0;  // filter passed, matches() said no
  long exact_pairs = 0;      // pairs the program claims to decide exactly
  long exact_nonmatches = 0;
  long simple_nonmatches = 0;  // non-matches for header keys and leading string arguments, decided exactly
  long simple_false_positives = 0;
  std::size_t max_insns = 0;
  long widened_programs = 0;
};

std::uint64_t seed_from_env() {
  if (const char* s = std::getenv("MCBUS_MATCH_SEED")) return std::strtoull(s, nullptr, 10);
  return 20240611;
}

// A rule set uses only header keys and string arguments among the first four.
bool simple_rules(const std::vector<match_rule>& rules) {
  for (const match_rule& r : rules) {
    for (std::size_t i = 0; i < r.arg_count(); ++i) {
      if (r.arg(i).index >= 4 || r.arg(i).kind != match_arg_kind::string) return false;
    }
  }
  return true;
}

std::size_t optmem_max() {
  const std::string text = mcbus_test::read_text("/proc/sys/net/core/optmem_max");
  return text.empty() ? bpf::optmem_max_default : std::stoul(text);
}

void run(tally& t, std::uint64_t seed, int sets, int messages_per_set, unsigned rules_max, bool kernel,
         std::size_t kernel_bytes = bpf::optmem_max_default - 512) {
  mcbus_test::prng r(seed);
  mcbus_test::kernel_filter k;
  if (kernel) {
    ASSERT_TRUE(k.ok());
  }
  for (int set = 0; set < sets; ++set) {
    const unsigned nrules = 1 + r.below(rules_max);
    std::vector<match_rule> rules;
    for (unsigned i = 0; i < nrules; ++i) rules.push_back(mcbus_test::random_rule(r));
    // Who judges: a receiver (or a bystander) and the same knowledge of owners for both sides.
    const bool with_receiver = r.below(4) != 0;
    const bool complete = r.below(2) != 0;
    const bpf_options opts{.receiver = with_receiver ? mcbus_test::world::receiver : std::string_view(),
                           .owners = mcbus_test::world::owners(),
                           .owners_complete = complete,
                           .max_kernel_bytes = kernel_bytes};
    const match_context ctx{opts.receiver, mcbus_test::world::owners()};
    auto prog = compile_bpf(rules, opts);
    ASSERT_TRUE(prog);
    ASSERT_FALSE(validate_bpf(prog->insns())) << validate_bpf(prog->insns()).message();
    auto filter = bpf_filter::load(prog->insns()).value();
    t.max_insns = std::max(t.max_insns, prog->size());
    if (!prog->exact()) ++t.widened_programs;
    if (kernel) {
      ASSERT_EQ(k.attach(prog->insns()), 0) << "kernel refused a program of " << prog->size();
    }
    const bool simple = simple_rules(rules);
    for (int i = 0; i < messages_per_set; ++i) {
      mcbus_test::random_message_options mo;
      mo.simple_args = r.below(2) != 0;
      std::vector<std::byte> bytes = mcbus_test::random_message(r, mo);
      if (r.below(50) == 0)
        bytes =
            mcbus_test::with_unknown_field(bytes, static_cast<std::uint8_t>(10 + r.below(200)), r.below(2) ? 's' : 'u');
      auto view = message_view::parse(bytes);
      ASSERT_TRUE(view) << view.error().message();
      bool expect = false;
      for (const match_rule& rule : rules) expect = expect || rule.matches(*view, ctx);
      const bool vm = filter.accepts(bytes);
      ++t.pairs;
      t.matches += expect;
      auto describe = [&] {
        std::string s =
            "seed " + std::to_string(seed) + " set " + std::to_string(set) + " msg " + std::to_string(i) + "\nrules:";
        for (const match_rule& rule : rules) s += "\n  " + rule.to_string();
        s += "\nreceiver '" + std::string(opts.receiver) + "' complete " + std::to_string(complete);
        s += "\nmessage: " + mcbus_test::to_hex(bytes);
        return s;
      };
      if (expect) {
        ASSERT_TRUE(vm) << "UNSOUND (interpreter): " << describe();
      }
      if (kernel) {
        const long got = k.pass(bytes);
        ASSERT_GE(got, 0);
        ++t.kernel_pairs;
        ASSERT_EQ(got != 0, vm) << "kernel and interpreter disagree: " << describe();
        if (got) {
          ASSERT_EQ(static_cast<std::size_t>(got), bytes.size());
        }
      }
      if (!expect) {
        t.false_positives += vm;
        if (prog->exact_for(*view)) {
          ++t.exact_nonmatches;
          ASSERT_FALSE(vm) << "false positive where the program claims exactness: " << describe();
        }
        if (simple && prog->exact() && prog->exact_for(*view)) {
          ++t.simple_nonmatches;
          t.simple_false_positives += vm;
        }
      }
      if (prog->exact_for(*view)) ++t.exact_pairs;
    }
  }
}

void report(const char* name, const tally& t) {
  std::printf(
      "[ %s ] pairs %ld (kernel %ld), matching %ld; false positives %ld of %ld non-matching (%.3f%%); "
      "exact-claimed pairs %ld; header keys and leading string arguments, exact program: %ld FP of %ld; "
      "largest program %zu insns; %ld programs widened at compile time\n",
      name, t.pairs, t.kernel_pairs, t.matches, t.false_positives, t.pairs - t.matches,
      t.pairs > t.matches ? 100.0 * double(t.false_positives) / double(t.pairs - t.matches) : 0.0, t.exact_pairs,
      t.simple_false_positives, t.simple_nonmatches, t.max_insns, t.widened_programs);
}

TEST(BpfDifferential, SmallRuleSetsInterpreterAndKernel) {
  tally t;
  run(t, seed_from_env(), 2500, 40, 4, true);
  report("1-4 rules", t);
  EXPECT_GE(t.kernel_pairs, 100000);
  EXPECT_EQ(t.simple_false_positives, 0);
  EXPECT_GT(t.simple_nonmatches, 1000);
  EXPECT_GT(t.matches, t.pairs / 20) << "random rules and messages should meet more often";
}

TEST(BpfDifferential, LargeRuleSetsInterpreterAndKernel) {
  tally t;
  run(t, seed_from_env() + 1, 100, 200, 64, true, optmem_max() - 512);
  report("up to 64 rules", t);
  EXPECT_GE(t.kernel_pairs, 20000);
}

}  // namespace
