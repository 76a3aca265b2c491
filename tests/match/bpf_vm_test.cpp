// The classic BPF interpreter against the kernel: the same checks (validate_bpf vs SO_ATTACH_FILTER)
// and the same results (run_bpf vs what arrives through a filtered SEQPACKET socket), on chosen
// programs and on thousands of random ones.
#include <mcbus/match.hpp>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

#include "kernel_filter.hpp"
#include "random_gen.hpp"
#include "test_support.hpp"

using namespace mcbus;
using namespace mcbus::bpf;

namespace {

std::vector<std::byte> packet(std::initializer_list<unsigned> bytes) {
  std::vector<std::byte> out;
  for (unsigned b : bytes) out.push_back(static_cast<std::byte>(b));
  return out;
}

std::uint32_t run(const std::vector<bpf_insn>& p, const std::vector<std::byte>& pkt) {
  EXPECT_FALSE(validate_bpf(p)) << validate_bpf(p).message();
  return run_bpf(p, pkt);
}

TEST(BpfVm, LoadsAreBigEndianAndBounded) {
  const auto pkt = packet({1, 2, 3, 4, 5});
  EXPECT_EQ(run({stmt(ld | w | bpf::abs_, 0), stmt(ret | a)}, pkt), 0x01020304u);
  EXPECT_EQ(run({stmt(ld | h | bpf::abs_, 3), stmt(ret | a)}, pkt), 0x0405u);
  EXPECT_EQ(run({stmt(ld | b | bpf::abs_, 4), stmt(ret | a)}, pkt), 5u);
  // A load past the end ends the program with 0, whatever follows.
  EXPECT_EQ(run({stmt(ld | w | bpf::abs_, 2), stmt(ret | k, 7)}, pkt), 0u);
  EXPECT_EQ(run({stmt(ldx | imm, 4), stmt(ld | h | ind, 0), stmt(ret | k, 7)}, pkt), 0u);
  EXPECT_EQ(run({stmt(ldx | imm, 3), stmt(ld | h | ind, 0), stmt(ret | a)}, pkt), 0x0405u);
  EXPECT_EQ(run({stmt(ld | w | len), stmt(ret | a)}, pkt), 5u);
  EXPECT_EQ(run({stmt(ldx | b | msh, 0), stmt(misc | txa), stmt(ret | a)}, pkt), 4u);
}

TEST(BpfVm, ArithmeticAndJumps) {
  const auto pkt = packet({0});
  EXPECT_EQ(run({stmt(ld | imm, 7), stmt(ldx | imm, 0), stmt(alu | div_ | x), stmt(ret | k, 9)}, pkt), 0u);
  EXPECT_EQ(run({stmt(ld | imm, 7), stmt(ldx | imm, 0), stmt(alu | mod | x), stmt(ret | k, 9)}, pkt), 0u);
  EXPECT_EQ(run({stmt(ld | imm, 1), stmt(ldx | imm, 33), stmt(alu | lsh | x), stmt(ret | a)}, pkt), 2u);
  EXPECT_EQ(run({stmt(ld | imm, 5), stmt(alu | neg), stmt(ret | a)}, pkt), 0xfffffffbu);
  EXPECT_EQ(run({stmt(ld | imm, 6), stmt(alu | xor_ | k, 3), stmt(ret | a)}, pkt), 5u);
  EXPECT_EQ(run({stmt(ld | imm, 6), jump(jmp | jset | k, 2, 0, 1), stmt(ret | k, 1), stmt(ret | k, 2)}, pkt), 1u);
  EXPECT_EQ(run({stmt(ld | imm, 6), stmt(st, 15), stmt(ld | imm, 0), stmt(ldx | mem, 15), stmt(misc | txa),
                 stmt(jmp | ja, 1), stmt(ret | k, 0), stmt(ret | a)},
                pkt),
            6u);
}

TEST(BpfVm, ValidationMatchesTheKernelsRules) {
  struct {
    std::vector<bpf_insn> prog;
    const char* why;
  } bad[] = {
      {{}, "empty"},
      {{stmt(0xffff), stmt(ret | k)}, "opcode"},
      {{stmt(alu | div_ | k, 0), stmt(ret | k)}, "division"},
      {{stmt(alu | lsh | k, 32), stmt(ret | k)}, "shift"},
      {{stmt(st, 16), stmt(ret | k)}, "cell"},
      {{stmt(jmp | ja, 1), stmt(ret | k)}, "jump"},
      {{jump(jmp | jeq | k, 0, 0, 1), stmt(ret | k)}, "jump"},
      {{stmt(ld | imm)}, "return"},
      {{stmt(ld | mem, 3), stmt(ret | k)}, "read before"},
      // Written on one path only.
      {{stmt(ld | w | len), jump(jmp | jeq | k, 1, 0, 1), stmt(st, 2), stmt(ld | mem, 2), stmt(ret | a)},
       "read before"},
      // The kernel does not forget, after a return, what the path into the return had written: the
      // load at 6 is reached only from 3, after the store, yet the dead code after the return at 4
      // (which had not written M[4]) makes the kernel refuse it. So must validate_bpf().
      {{stmt(ld | w | len), jump(jmp | jeq | k, 1, 0, 2), stmt(st, 4), jump(jmp | jeq | k, 2, 2, 0), stmt(ret | k),
        stmt(ld | imm, 7), stmt(ld | mem, 4), stmt(ret | a)},
       "kernel quirk"},
  };
  mcbus_test::kernel_filter kf;
  ASSERT_TRUE(kf.ok());
  for (auto& c : bad) {
    const error e = validate_bpf(c.prog);
    const int kernel = kf.attach(c.prog);
    EXPECT_EQ(static_cast<bool>(e), kernel != 0)
        << c.why << ": mcbus says '" << e.message() << "', kernel errno " << kernel;
  }
  std::vector<bpf_insn> too_long(4097, stmt(ret | k));
  EXPECT_TRUE(validate_bpf(too_long));
  EXPECT_EQ(kf.attach(too_long), EINVAL);
  EXPECT_EQ(validate_bpf(std::vector<bpf_insn>{stmt(ld | w | bpf::abs_, ad_off), stmt(ret | a)}).code(),
            errc::not_supported);
}

// A random program of classic BPF: every opcode the kernel allows except ancillary loads, forward
// jumps only, X kept small so that indirect loads never reach the negative offsets where the
// kernel reads socket state the interpreter does not have.
std::vector<bpf_insn> random_program(mcbus_test::prng& r) {
  const unsigned n = 2 + r.below(40);
  std::vector<bpf_insn> p;
  auto small = [&] { return r.below(4) == 0 ? r.below(0x10000) : r.below(40); };
  for (unsigned i = 0; i + 1 < n; ++i) {
    const unsigned left = n - 1 - i;  // instructions after this one
    switch (r.below(20)) {
      case 0: p.push_back(stmt(ld | (r.below(3) << 3) | bpf::abs_, small())); break;
      case 1: p.push_back(stmt(ld | (r.below(3) << 3) | ind, small())); break;
      case 2: p.push_back(stmt(ld | imm, r.below(2) ? small() : static_cast<std::uint32_t>(r.g()))); break;
      case 3: p.push_back(stmt(ldx | imm, small())); break;
      case 4: p.push_back(stmt(r.below(2) ? (ld | w | len) : (ldx | w | len))); break;
      case 5: p.push_back(stmt(ldx | b | msh, small())); break;
      case 6: p.push_back(stmt(r.below(2) ? ld | mem : ldx | mem, r.below(16))); break;
      case 7: p.push_back(stmt(r.below(2) ? st : stx, r.below(16))); break;
      case 8:
        p.push_back(stmt(alu | and_ | k, 0xffff));  // keeps X small
        p.push_back(stmt(misc | tax));
        ++i;
        break;
      case 9: p.push_back(stmt(misc | txa)); break;
      case 10:
      case 11: {
        static constexpr std::uint16_t ops[] = {add, sub, mul, div_, or_, and_, lsh, rsh, mod, xor_};
        const std::uint16_t o = ops[r.below(10)];
        const bool by_x = r.below(2) == 1;
        std::uint32_t kk = small();
        if ((o == lsh || o == rsh) && !by_x) kk %= 32;
        if ((o == div_ || o == mod) && !by_x && kk == 0) kk = 3;
        p.push_back(stmt(alu | o | (by_x ? x : k), kk));
        break;
      }
      case 12: p.push_back(stmt(alu | neg)); break;
      case 13: p.push_back(stmt(ret | (r.below(2) ? a : k), r.below(3) == 0 ? 0 : small())); break;
      case 14: p.push_back(stmt(jmp | ja, r.below(left))); break;
      default: {
        static constexpr std::uint16_t ops[] = {jeq, jgt, jge, jset};
        const std::uint16_t o = ops[r.below(4)];
        p.push_back(jump(jmp | o | (r.below(3) == 0 ? x : k), r.below(2) ? small() : r.below(300),
                         static_cast<std::uint8_t>(r.below(left)), static_cast<std::uint8_t>(r.below(left))));
        break;
      }
    }
  }
  // Jumps may now point past the end if case 8 added an instruction: clamp them.
  p.resize(n - 1);
  for (std::size_t i = 0; i < p.size(); ++i) {
    const unsigned left = static_cast<unsigned>(n - 1 - i);
    if (p[i].code == (jmp | ja)) p[i].k %= left;
    if (cls(p[i].code) == jmp && op(p[i].code) != ja) {
      p[i].jt = static_cast<std::uint8_t>(p[i].jt % left);
      p[i].jf = static_cast<std::uint8_t>(p[i].jf % left);
    }
  }
  p.push_back(stmt(ret | (r.below(2) ? a : k), small()));
  return p;
}

TEST(BpfVm, RandomProgramsAgreeWithTheKernel) {
  mcbus_test::prng r(99);
  mcbus_test::kernel_filter kf;
  ASSERT_TRUE(kf.ok());
  int accepted = 0;
  int runs = 0;
  int dropped = 0;
  for (int t = 0; t < 6000; ++t) {
    const std::vector<bpf_insn> prog = random_program(r);
    const error e = validate_bpf(prog);
    const int kernel = kf.attach(prog);
    ASSERT_NE(kernel, ENOMEM);
    ASSERT_EQ(static_cast<bool>(e), kernel != 0)
        << "program " << t << ": mcbus '" << e.message() << "', kernel errno " << kernel << "\n"
        << bpf_to_string(prog);
    if (e) continue;
    ++accepted;
    const auto fast = bpf_filter::load(prog).value();
    for (int i = 0; i < 6; ++i) {
      std::vector<std::byte> pkt(1 + r.below(60));
      for (auto& b : pkt) b = static_cast<std::byte>(r.below(256));
      const std::uint32_t vm = run_bpf(prog, pkt);
      ASSERT_EQ(fast.run(pkt), vm) << "threaded and reference interpreters differ, program " << t;
      const long got = kf.pass(pkt);
      ASSERT_GE(got, 0);
      // The kernel keeps min(len, max(1, result)) bytes, and drops the packet on 0.
      const long want = vm == 0 ? 0 : static_cast<long>(std::min<std::uint64_t>(pkt.size(), std::max(1u, vm)));
      ASSERT_EQ(got, want) << "program " << t << " packet " << i << "\n" << bpf_to_string(prog);
      ++runs;
      dropped += got == 0;
    }
  }
  std::printf("[ random programs ] %d accepted by both, %d runs agree (%d dropped)\n", accepted, runs, dropped);
  EXPECT_GT(accepted, 1000);
}

TEST(BpfVm, KernelByteModelMatchesTheKernel) {
  // The kernel refuses a filter its socket cannot pay for; bpf_kernel_bytes predicts the charge.
  const std::string text = mcbus_test::read_text("/proc/sys/net/core/optmem_max");
  if (text.empty()) GTEST_SKIP() << "no /proc/sys/net/core/optmem_max";
  const std::size_t limit = std::stoul(text);
  mcbus_test::kernel_filter kf;
  ASSERT_TRUE(kf.ok());
  for (std::uint16_t code : {std::uint16_t(ld | b | ind), std::uint16_t(ld | w | bpf::abs_), std::uint16_t(ld | imm)}) {
    auto program = [&](std::size_t n) {
      std::vector<bpf_insn> p{stmt(ldx | imm, 0)};
      p.insert(p.end(), n, stmt(code, 1));
      p.push_back(stmt(ret | k));
      return p;
    };
    std::size_t n = 1;
    while (n + 2 < max_insns && bpf_kernel_bytes(program(n + 1)) < limit - 200) ++n;
    EXPECT_EQ(kf.attach(program(n)), 0) << "model " << bpf_kernel_bytes(program(n)) << " limit " << limit;
    std::size_t m = n;
    while (m + 2 < max_insns && bpf_kernel_bytes(program(m)) < limit + 200) ++m;
    if (bpf_kernel_bytes(program(m)) >= limit + 200) {
      EXPECT_EQ(kf.attach(program(m)), ENOMEM) << "model " << bpf_kernel_bytes(program(m)) << " limit " << limit;
    }
  }
}

}  // namespace
