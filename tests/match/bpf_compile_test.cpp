// The BPF compiler on chosen cases: compile-time programs, the widening ladder, what the program
// does with messages it cannot decide exactly, and the tcpdump-style listing.
#include <mcbus/match.hpp>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernel_filter.hpp"
#include "random_gen.hpp"

using namespace mcbus;

namespace {

std::vector<std::byte> signal_bytes(std::string_view path, std::string_view member, byte_order order,
                                    const std::function<void(message&)>& body = {}) {
  auto m = message::signal(object_path_view::from(path).value(), "org.example.Foo", member_name::from(member).value(),
                           order);
  m.set_sender(":1.7");
  if (body) body(m);
  return m.to_bytes().value();
}

bool passes(const bpf_program& p, const std::vector<std::byte>& msg) { return run_bpf(p.insns(), msg) != 0; }

// A program built by the C++ compiler is the one the run-time compiler builds.
constexpr auto static_program = static_bpf<"type='signal',interface='org.example.Foo',member='Changed'",
                                           "type='signal',path_namespace='/org/example',arg0='on'">;

TEST(BpfCompile, CompileTimeProgramEqualsRunTime) {
  const match_rule rules[] = {*match_rule::parse("type='signal',interface='org.example.Foo',member='Changed'"),
                              *match_rule::parse("type='signal',path_namespace='/org/example',arg0='on'")};
  auto p = compile_bpf(rules);
  ASSERT_TRUE(p);
  ASSERT_EQ(p->size(), static_program.size());
  for (std::size_t i = 0; i < p->size(); ++i) EXPECT_EQ(p->insns()[i], static_program[i]) << i;
  EXPECT_FALSE(validate_bpf(static_program));
  const auto on =
      signal_bytes("/org/example/x", "Other", byte_order::big, [](message& m) { m.append(std::string("on")); });
  const auto off =
      signal_bytes("/org/examplex", "Other", byte_order::little, [](message& m) { m.append(std::string("on")); });
  EXPECT_NE(run_bpf(static_program, on), 0u);
  EXPECT_EQ(run_bpf(static_program, off), 0u);
}

TEST(BpfCompile, TrivialRuleSets) {
  auto none = compile_bpf(std::span<const match_rule>{});
  ASSERT_TRUE(none);
  EXPECT_EQ(none->size(), 1u);
  EXPECT_EQ(none->insns()[0], bpf::stmt(bpf::ret | bpf::k, bpf::reject));
  // An empty rule with eavesdrop='true' takes everything.
  auto all = compile_bpf(*match_rule::parse("eavesdrop='true'"));
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 1u);
  EXPECT_EQ(all->insns()[0], bpf::stmt(bpf::ret | bpf::k, bpf::accept));
  // A destination key nobody can satisfy for this receiver without eavesdropping takes nothing.
  auto never = compile_bpf(*match_rule::parse("destination=':1.9'"), {.receiver = ":1.5"});
  ASSERT_TRUE(never);
  EXPECT_EQ(never->size(), 1u);
  EXPECT_EQ(never->insns()[0].k, bpf::reject);
  EXPECT_FALSE(compile_bpf(*match_rule::parse(""), {.max_instructions = 0}));
}

// A budget above the kernel's limit must not produce a program the kernel refuses: 64 random
// rules need more than 4096 instructions when nothing else limits them.
TEST(BpfCompile, BudgetAboveKernelLimitIsCapped) {
  mcbus_test::prng r(11);
  std::vector<match_rule> rules;
  for (int i = 0; i < 64; ++i) rules.push_back(mcbus_test::random_rule(r));
  auto p =
      compile_bpf(rules, {.owners = mcbus_test::world::owners(), .max_instructions = 20000, .max_kernel_bytes = 0});
  ASSERT_TRUE(p);
  EXPECT_LE(p->size(), bpf::max_insns);
  EXPECT_FALSE(validate_bpf(p->insns()));
}

TEST(BpfCompile, WideningLadderStaysSound) {
  mcbus_test::prng r(5);
  std::vector<match_rule> rules;
  for (int i = 0; i < 40; ++i) rules.push_back(mcbus_test::random_rule(r));
  std::size_t last = 0;
  for (std::size_t budget :
       {std::size_t{4096}, std::size_t{1500}, std::size_t{600}, std::size_t{120}, std::size_t{1}}) {
    auto p =
        compile_bpf(rules, {.owners = mcbus_test::world::owners(), .max_instructions = budget, .max_kernel_bytes = 0});
    ASSERT_TRUE(p);
    EXPECT_LE(p->size(), budget);
    EXPECT_FALSE(validate_bpf(p->insns()));
    if (budget < 4096) {
      EXPECT_FALSE(p->exact());
    }
    for (int i = 0; i < 300; ++i) {
      const auto msg = mcbus_test::random_message(r);
      const auto view = message_view::parse(msg).value();
      bool expect = false;
      for (const match_rule& rule : rules) expect = expect || rule.matches(view, {{}, mcbus_test::world::owners()});
      if (expect) {
        ASSERT_TRUE(passes(*p, msg)) << "budget " << budget;
      }
    }
    last = p->size();
  }
  EXPECT_EQ(last, 1u);  // the last rung: accept everything
}

TEST(BpfCompile, KernelBudgetIsHonoured) {
  mcbus_test::prng r(6);
  std::vector<match_rule> rules;
  for (int i = 0; i < 64; ++i) rules.push_back(mcbus_test::random_rule(r));
  mcbus_test::kernel_filter kf;
  for (std::size_t bytes : {bpf::optmem_max_default - 512, std::size_t{8000}}) {
    auto p = compile_bpf(rules, {.max_kernel_bytes = bytes});
    ASSERT_TRUE(p);
    EXPECT_LE(p->kernel_bytes(), bytes);
    EXPECT_EQ(kf.attach(p->insns()), 0);
  }
}

// What the program widens on, and what it does not.
TEST(BpfCompile, WideningOnUndecidableMessages) {
  auto p = compile_bpf(*match_rule::parse("member='Wanted'")).value();
  ASSERT_TRUE(p.exact());
  for (byte_order o : {byte_order::little, byte_order::big}) {
    const auto other = signal_bytes("/a", "Other", o);
    EXPECT_FALSE(passes(p, other));
    EXPECT_TRUE(p.exact_for(message_view::parse(other).value()));
    // An unknown header field: its type is beyond the walk; accept.
    const auto unknown = mcbus_test::with_unknown_field(other, 42, 's');
    ASSERT_TRUE(message_view::parse(unknown));
    EXPECT_TRUE(passes(p, unknown));
    EXPECT_FALSE(p.exact_for(message_view::parse(unknown).value()));
    // A path of 64 KiB: exact in big-endian, widened in little-endian.
    std::string path = "/";
    path += std::string(70000, 'p');
    const auto long_path = signal_bytes(path, "Other", o);
    EXPECT_EQ(passes(p, long_path), o == byte_order::little);
    EXPECT_EQ(p.exact_for(message_view::parse(long_path).value()), o == byte_order::big);
  }
  // A variant before the tested argument stops the walk: the argument is wild.
  auto q = compile_bpf(*match_rule::parse("arg1='x'")).value();
  const auto with_variant = signal_bytes(
      "/a", "M", byte_order::little, [](message& m) { m.append(*variant::from(std::uint32_t{1}), std::string("y")); });
  EXPECT_TRUE(passes(q, with_variant));
  EXPECT_FALSE(q.exact_for(message_view::parse(with_variant).value()));
  const auto with_dict = signal_bytes("/a", "M", byte_order::big, [](message& m) {
    std::map<std::string, variant> props;
    props["k"] = *variant::from(std::uint32_t{1});
    m.append(props, std::string("y"));
  });
  EXPECT_FALSE(passes(q, with_dict));
  EXPECT_TRUE(q.exact_for(message_view::parse(with_dict).value()));
}

TEST(BpfCompile, ReceiverAndOwners) {
  const name_owner owners[] = {{"org.example.Sub", ":1.5"}, {"org.example.Pub", ":1.7"}};
  auto p = compile_bpf(*match_rule::parse("member='X'"), {.receiver = ":1.5", .owners = owners}).value();
  auto to = [](std::string_view dest) {
    auto m = message::signal("/a", "org.example.Foo", "X");
    m.set_sender(":1.7");
    if (!dest.empty()) m.set_destination(bus_name::from(dest).value());
    return m.to_bytes().value();
  };
  EXPECT_TRUE(passes(p, to("")));
  EXPECT_TRUE(passes(p, to(":1.5")));
  EXPECT_TRUE(passes(p, to("org.example.Sub")));
  EXPECT_FALSE(passes(p, to(":1.9")));
  // A well-known name nobody listed might belong to the receiver: widened unless owners are complete.
  EXPECT_TRUE(passes(p, to("org.other.Name")));
  auto complete =
      compile_bpf(*match_rule::parse("member='X'"), {.receiver = ":1.5", .owners = owners, .owners_complete = true})
          .value();
  EXPECT_FALSE(passes(complete, to("org.other.Name")));
  // sender= a well-known name goes through the owners.
  auto s = compile_bpf(*match_rule::parse("sender='org.example.Pub'"), {.owners = owners}).value();
  EXPECT_TRUE(s.exact());
  EXPECT_TRUE(passes(s, to("")));  // sent by :1.7
  auto unknown = compile_bpf(*match_rule::parse("sender='org.other.Name'"), {.owners = owners}).value();
  EXPECT_FALSE(unknown.exact());
}

TEST(BpfCompile, ListingLooksLikeTcpdump) {
  const bpf_insn prog[] = {bpf::stmt(bpf::ld | bpf::h | bpf::abs_, 12),
                           bpf::jump(bpf::jmp | bpf::jeq | bpf::k, 0x800, 0, 1), bpf::stmt(bpf::ld | bpf::mem, 3),
                           bpf::stmt(bpf::ldx | bpf::b | bpf::msh, 14), bpf::stmt(bpf::ret | bpf::k, 262144)};
  EXPECT_EQ(bpf_to_string(prog),
            "(000) ldh      [12]\n"
            "(001) jeq      #0x800           jt 2\tjf 3\n"
            "(002) ld       M[3]\n"
            "(003) ldxb     4*([14]&0xf)\n"
            "(004) ret      #262144\n");
}

}  // namespace
