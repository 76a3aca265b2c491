// mcbus/match: classic BPF instructions, laid out exactly as the kernel's struct sock_filter, so a
// program can be handed to SO_ATTACH_FILTER as it is without this header needing <linux/filter.h>.
#pragma once

#include <mcbus/config.hpp>

#include <cstddef>
#include <cstdint>
#include <span>

MCBUS_NAMESPACE_BEGIN

struct bpf_insn {
  std::uint16_t code = 0;
  std::uint8_t jt = 0;
  std::uint8_t jf = 0;
  std::uint32_t k = 0;

  friend constexpr bool operator==(const bpf_insn&, const bpf_insn&) noexcept = default;
};
static_assert(sizeof(bpf_insn) == 8 && offsetof(bpf_insn, jt) == 2 && offsetof(bpf_insn, k) == 4,
              "bpf_insn must have the layout of struct sock_filter");

// The opcode fields of <linux/filter.h> (BPF_LD, BPF_W, ...), under mcbus names.
namespace bpf {
// classes
inline constexpr std::uint16_t ld = 0x00, ldx = 0x01, st = 0x02, stx = 0x03, alu = 0x04, jmp = 0x05, ret = 0x06,
                               misc = 0x07;
// load sizes
inline constexpr std::uint16_t w = 0x00, h = 0x08, b = 0x10;
// load modes
inline constexpr std::uint16_t imm = 0x00, abs_ = 0x20, ind = 0x40, mem = 0x60, len = 0x80, msh = 0xa0;
// ALU operations
inline constexpr std::uint16_t add = 0x00, sub = 0x10, mul = 0x20, div_ = 0x30, or_ = 0x40, and_ = 0x50, lsh = 0x60,
                               rsh = 0x70, neg = 0x80, mod = 0x90, xor_ = 0xa0;
// jumps
inline constexpr std::uint16_t ja = 0x00, jeq = 0x10, jgt = 0x20, jge = 0x30, jset = 0x40;
// operand source: the constant k or the X register; for ret, the A register
inline constexpr std::uint16_t k = 0x00, x = 0x08, a = 0x10;
// misc
inline constexpr std::uint16_t tax = 0x00, txa = 0x80;

inline constexpr std::size_t max_insns = 4096;        // BPF_MAXINSNS
inline constexpr std::uint32_t memwords = 16;         // BPF_MEMWORDS: scratch cells M[0..15]
inline constexpr std::uint32_t ad_off = 0xfffff000u;  // SKF_AD_OFF: ancillary loads start here
inline constexpr std::uint32_t ll_off = 0xffe00000u;  // SKF_LL_OFF: negative packet offsets start here

constexpr std::uint16_t cls(std::uint16_t code) noexcept { return code & 0x07; }
constexpr std::uint16_t size(std::uint16_t code) noexcept { return code & 0x18; }
constexpr std::uint16_t mode(std::uint16_t code) noexcept { return code & 0xe0; }
constexpr std::uint16_t op(std::uint16_t code) noexcept { return code & 0xf0; }
constexpr unsigned op_index(std::uint16_t code) noexcept { return (code & 0xf0u) >> 4; }
constexpr std::uint16_t src(std::uint16_t code) noexcept { return code & 0x08; }
constexpr std::uint16_t rval(std::uint16_t code) noexcept { return code & 0x18; }
constexpr std::uint16_t miscop(std::uint16_t code) noexcept { return code & 0xf8; }

constexpr bpf_insn stmt(std::uint16_t code, std::uint32_t kk = 0) noexcept { return {code, 0, 0, kk}; }
constexpr bpf_insn jump(std::uint16_t code, std::uint32_t kk, std::uint8_t jt, std::uint8_t jf) noexcept {
  return {code, jt, jf, kk};
}

// What a filter returns: 0 drops the message, anything at least its length keeps all of it.
inline constexpr std::uint32_t accept = 0xffffffffu;
inline constexpr std::uint32_t reject = 0;

// The smallest net.core.optmem_max in common use, the memory a socket may spend on options such as
// its filter: the default of Linux 6.1 (Debian 12). Recent kernels default to 131072.
inline constexpr std::size_t optmem_max_default = 20480;
}  // namespace bpf

// What the kernel charges a socket for a classic program, which must stay below
// net.core.optmem_max or SO_ATTACH_FILTER fails with ENOMEM. The kernel converts the program to
// eBPF first, and that is what it charges: 8 bytes an instruction plus the bpf_prog header. This
// follows bpf_convert_filter() of Linux 6.x on a 64-bit CPU with efficient unaligned loads (x86-64,
// arm64); a packet load becomes 8 to 16 instructions, most others one.
constexpr std::size_t bpf_kernel_bytes(std::span<const bpf_insn> prog) noexcept {
  using namespace bpf;
  std::size_t n = 3;  // A = 0, X = 0, ctx
  bool loads = false;
  for (const bpf_insn& i : prog) {
    const std::uint16_t c = i.code;
    if (cls(c) == ld && (mode(c) == abs_ || mode(c) == ind)) {
      loads = true;
      const bool indirect = mode(c) == ind;
      n += 8;  // helper call: 3 argument moves, the offset, call, check, clear, exit
      if (indirect) {
        n += i.k ? 1 : 0;
      } else {
        // fast path: copy, subtract, bound check, load (3 if the offset is past 32767), swap, jump
        n += 1 + (i.k ? 1 : 0) + 1 + (i.k <= 32767 ? 1 : 3) + (size(c) == b ? 0 : 1) + 1;
      }
    } else if (c == (ldx | b | msh)) {
      loads = true;
      n += 6 + 8 + 1 + (i.k ? 1 : 0) + 1 + (i.k <= 32767 ? 1 : 3) + 1;
    } else if (cls(c) == jmp && op(c) != ja) {
      n += (src(c) == k && static_cast<std::int32_t>(i.k) < 0) ? 1 : 0;
      const bool one = i.jf == 0 || (i.jt == 0 && (op(c) == jeq || op(c) == jgt || op(c) == jge));
      n += one ? 1 : 2;
    } else if (c == (ret | k)) {
      n += 2;
    } else if (c == (alu | div_ | x) || c == (alu | mod | x)) {
      n += 5;
    } else {
      n += 1;
    }
  }
  if (loads) n += 4;  // cache skb->data and the head length
  return 128 + 8 * n;
}

MCBUS_NAMESPACE_END
