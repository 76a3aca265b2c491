// Fuzz target: rule set -> BPF program -> kernel and interpreter.
//
// The input is rule texts, one per line, then a NUL byte, then bytes that drive a generator of
// more rules, of the compiler's options and of messages (tests/match/random_gen.hpp). The compiled
// program must pass validate_bpf() and attach to a real SEQPACKET socket; on every message the
// interpreter must pass what match_rule::matches() accepts, agree with the kernel, and where the
// program claims exactness for the message, drop what matches() rejects.
#include <mcbus/match.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "../match/kernel_filter.hpp"
#include "../match/random_gen.hpp"

namespace {

// Randomness read from the input; zeros once it runs out.
struct input_source {
  const std::uint8_t* p;
  std::size_t n;
  std::size_t i = 0;
  unsigned below(unsigned k) {
    if (k == 0) return 0;
    unsigned v = 0;
    for (int b = 0; b < 2; ++b) v = (v << 8) | (i < n ? p[i++] : 0u);
    return v % k;
  }
};

[[noreturn]] void die(const char* what, const std::vector<mcbus::match_rule>& rules,
                      const std::vector<std::byte>& msg) {
  std::fprintf(stderr, "fuzz_bpf_compile: %s\n", what);
  for (const auto& r : rules) std::fprintf(stderr, "  rule: %s\n", r.to_string().c_str());
  std::fprintf(stderr, "  message:");
  for (std::byte b : msg) std::fprintf(stderr, " %02x", static_cast<unsigned>(b));
  std::fprintf(stderr, "\n");
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace mcbus;
  std::size_t split = 0;
  while (split < size && data[split] != 0) ++split;
  const std::string_view texts(reinterpret_cast<const char*>(data), split);
  input_source src{data + (split < size ? split + 1 : size), split < size ? size - split - 1 : 0};

  std::vector<match_rule> rules;
  for (std::size_t at = 0; at <= texts.size() && rules.size() < 64;) {
    const std::size_t nl = texts.find('\n', at);
    const std::string_view line = texts.substr(at, nl == std::string_view::npos ? std::string_view::npos : nl - at);
    if (auto r = match_rule::parse(line)) rules.push_back(*r);
    if (nl == std::string_view::npos) break;
    at = nl + 1;
  }
  const unsigned extra = src.below(6);
  for (unsigned i = 0; i < extra; ++i) rules.push_back(mcbus_test::random_rule(src));

  const bool with_receiver = src.below(3) != 0;
  const bool complete = src.below(2) != 0;
  static const std::size_t optmem = [] {
    std::FILE* f = std::fopen("/proc/sys/net/core/optmem_max", "r");
    unsigned long v = bpf::optmem_max_default;
    if (f) {
      if (std::fscanf(f, "%lu", &v) != 1) v = bpf::optmem_max_default;
      std::fclose(f);
    }
    return static_cast<std::size_t>(v);
  }();
  const std::size_t budgets[] = {bpf::optmem_max_default - 512, optmem - 512, 4000};
  const bpf_options opts{.receiver = with_receiver ? mcbus_test::world::receiver : std::string_view(),
                         .owners = mcbus_test::world::owners(),
                         .owners_complete = complete,
                         .max_instructions = src.below(8) == 0 ? 200 + src.below(3000) : bpf::max_insns,
                         .max_kernel_bytes = budgets[src.below(3)],
                         .max_args = 1 + src.below(8)};
  const match_context ctx{opts.receiver, mcbus_test::world::owners()};
  auto prog = compile_bpf(rules, opts);
  if (!prog) die("compile failed", rules, {});
  if (prog->size() > opts.max_instructions) die("program over the instruction budget", rules, {});
  if (prog->kernel_bytes() > opts.max_kernel_bytes) die("program over the kernel budget", rules, {});
  if (error e = validate_bpf(prog->insns())) die(e.where(), rules, {});
  static mcbus_test::kernel_filter kernel;
  if (kernel.attach(prog->insns()) != 0) die("the kernel refused the program", rules, {});

  const unsigned n = 1 + src.below(8);
  for (unsigned i = 0; i < n; ++i) {
    mcbus_test::random_message_options mo;
    mo.simple_args = src.below(2) != 0;
    std::vector<std::byte> msg = mcbus_test::random_message(src, mo);
    if (src.below(16) == 0) {
      msg =
          mcbus_test::with_unknown_field(msg, static_cast<std::uint8_t>(10 + src.below(240)), src.below(2) ? 's' : 'u');
    }
    auto view = message_view::parse(msg);
    if (!view) die("generator made an invalid message", rules, msg);
    bool expect = false;
    for (const match_rule& r : rules) expect = expect || r.matches(*view, ctx);
    const bool vm = run_bpf(prog->insns(), msg) != 0;
    if (expect && !vm) die("UNSOUND: the filter drops a matching message", rules, msg);
    if (!expect && vm && prog->exact_for(*view)) die("false positive where the program claims exactness", rules, msg);
    const long got = kernel.pass(msg);
    if (got < 0) die("send through the socket pair failed", rules, msg);
    if ((got != 0) != vm) die("kernel and interpreter disagree", rules, msg);
  }
  return 0;
}
