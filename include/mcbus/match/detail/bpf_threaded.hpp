// mcbus/match: the fast path of the classic BPF interpreter (bpf_filter).
//
// A validated program is decoded once into dense operation numbers. With GCC and clang, running it
// dispatches through `goto *` from the end of every operation (direct threading): each operation
// then has its own indirect jump, which the CPU predicts far better than the single jump of a
// switch, and a filter runs about twice as fast. Elsewhere the same code runs as a switch. The
// semantics are run_bpf()'s, which tests compare it with.
#pragma once

#include <mcbus/match/bpf_insn.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

MCBUS_NAMESPACE_BEGIN
namespace detail::bpfvm {

enum op_id : std::uint8_t {
  o_ldw_abs,
  o_ldh_abs,
  o_ldb_abs,
  o_ldw_ind,
  o_ldh_ind,
  o_ldb_ind,
  o_ld_len,
  o_ldx_len,
  o_ld_imm,
  o_ldx_imm,
  o_ld_mem,
  o_ldx_mem,
  o_ldx_msh,
  o_st,
  o_stx,
  o_add_k,
  o_add_x,
  o_sub_k,
  o_sub_x,
  o_mul_k,
  o_mul_x,
  o_div_k,
  o_div_x,
  o_mod_k,
  o_mod_x,
  o_and_k,
  o_and_x,
  o_or_k,
  o_or_x,
  o_xor_k,
  o_xor_x,
  o_lsh_k,
  o_lsh_x,
  o_rsh_k,
  o_rsh_x,
  o_neg,
  o_tax,
  o_txa,
  o_ret_k,
  o_ret_a,
  o_ja,
  o_jeq_k,
  o_jeq_x,
  o_jgt_k,
  o_jgt_x,
  o_jge_k,
  o_jge_x,
  o_jset_k,
  o_jset_x,
  o_op_count
};

struct decoded {
  std::uint32_t k = 0;
  std::uint8_t op = o_ret_k;
  std::uint8_t jt = 0;
  std::uint8_t jf = 0;
};

constexpr op_id op_of(std::uint16_t code) noexcept {
  using namespace bpf;
  switch (code) {
    case ld | w | abs_: return o_ldw_abs;
    case ld | h | abs_: return o_ldh_abs;
    case ld | b | abs_: return o_ldb_abs;
    case ld | w | ind: return o_ldw_ind;
    case ld | h | ind: return o_ldh_ind;
    case ld | b | ind: return o_ldb_ind;
    case ld | w | len: return o_ld_len;
    case ldx | w | len: return o_ldx_len;
    case ld | imm: return o_ld_imm;
    case ldx | imm: return o_ldx_imm;
    case ld | mem: return o_ld_mem;
    case ldx | mem: return o_ldx_mem;
    case ldx | b | msh: return o_ldx_msh;
    case bpf::st: return o_st;
    case bpf::stx: return o_stx;
    case alu | add | k: return o_add_k;
    case alu | add | x: return o_add_x;
    case alu | sub | k: return o_sub_k;
    case alu | sub | x: return o_sub_x;
    case alu | mul | k: return o_mul_k;
    case alu | mul | x: return o_mul_x;
    case alu | div_ | k: return o_div_k;
    case alu | div_ | x: return o_div_x;
    case alu | mod | k: return o_mod_k;
    case alu | mod | x: return o_mod_x;
    case alu | and_ | k: return o_and_k;
    case alu | and_ | x: return o_and_x;
    case alu | or_ | k: return o_or_k;
    case alu | or_ | x: return o_or_x;
    case alu | xor_ | k: return o_xor_k;
    case alu | xor_ | x: return o_xor_x;
    case alu | lsh | k: return o_lsh_k;
    case alu | lsh | x: return o_lsh_x;
    case alu | rsh | k: return o_rsh_k;
    case alu | rsh | x: return o_rsh_x;
    case alu | bpf::neg: return o_neg;
    case misc | bpf::tax: return o_tax;
    case misc | bpf::txa: return o_txa;
    case ret | k: return o_ret_k;
    case ret | a: return o_ret_a;
    case jmp | bpf::ja: return o_ja;
    case jmp | jeq | k: return o_jeq_k;
    case jmp | jeq | x: return o_jeq_x;
    case jmp | jgt | k: return o_jgt_k;
    case jmp | jgt | x: return o_jgt_x;
    case jmp | jge | k: return o_jge_k;
    case jmp | jge | x: return o_jge_x;
    case jmp | jset | k: return o_jset_k;
    case jmp | jset | x: return o_jset_x;
    default: return o_op_count;
  }
}

// Only for programs validate_bpf() accepted.
inline std::vector<decoded> decode(std::span<const bpf_insn> prog) {
  std::vector<decoded> out;
  out.reserve(prog.size());
  for (const bpf_insn& i : prog) out.push_back(decoded{i.k, static_cast<std::uint8_t>(op_of(i.code)), i.jt, i.jf});
  return out;
}

// Big-endian loads; compilers turn these into a load and a byte swap.
MCBUS_ALWAYS_INLINE std::uint32_t be32(const unsigned char* p) noexcept {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}
MCBUS_ALWAYS_INLINE std::uint32_t be16(const unsigned char* p) noexcept {
  return static_cast<std::uint32_t>(p[0] << 8 | p[1]);
}

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wgnu-label-as-value"
#endif
#define MCBUS_BPF_CASE(name) l_##name:
#define MCBUS_BPF_NEXT   \
  do {                   \
    i = pc++;            \
    goto* labels[i->op]; \
  } while (0)
#else
#define MCBUS_BPF_CASE(name) case name:
#define MCBUS_BPF_NEXT \
  do {                 \
    i = pc++;          \
    goto dispatch;     \
  } while (0)
#endif

inline std::uint32_t run_decoded(const decoded* prog, std::span<const std::byte> packet) noexcept {
  const auto* data = reinterpret_cast<const unsigned char*>(packet.data());
  const std::uint64_t plen = packet.size();
  std::uint32_t A = 0;
  std::uint32_t X = 0;
  std::uint32_t M[bpf::memwords];  // validated: never read before written
  const decoded* pc = prog;
  const decoded* i = nullptr;
#if defined(__GNUC__)
  static void* const labels[o_op_count] = {
      &&l_o_ldw_abs, &&l_o_ldh_abs, &&l_o_ldb_abs, &&l_o_ldw_ind, &&l_o_ldh_ind, &&l_o_ldb_ind, &&l_o_ld_len,
      &&l_o_ldx_len, &&l_o_ld_imm,  &&l_o_ldx_imm, &&l_o_ld_mem,  &&l_o_ldx_mem, &&l_o_ldx_msh, &&l_o_st,
      &&l_o_stx,     &&l_o_add_k,   &&l_o_add_x,   &&l_o_sub_k,   &&l_o_sub_x,   &&l_o_mul_k,   &&l_o_mul_x,
      &&l_o_div_k,   &&l_o_div_x,   &&l_o_mod_k,   &&l_o_mod_x,   &&l_o_and_k,   &&l_o_and_x,   &&l_o_or_k,
      &&l_o_or_x,    &&l_o_xor_k,   &&l_o_xor_x,   &&l_o_lsh_k,   &&l_o_lsh_x,   &&l_o_rsh_k,   &&l_o_rsh_x,
      &&l_o_neg,     &&l_o_tax,     &&l_o_txa,     &&l_o_ret_k,   &&l_o_ret_a,   &&l_o_ja,      &&l_o_jeq_k,
      &&l_o_jeq_x,   &&l_o_jgt_k,   &&l_o_jgt_x,   &&l_o_jge_k,   &&l_o_jge_x,   &&l_o_jset_k,  &&l_o_jset_x};
  MCBUS_BPF_NEXT;
#else
  i = pc++;
dispatch:
  switch (i->op) {
#endif
  MCBUS_BPF_CASE(o_ldw_abs) if (i->k + 4ull > plen) return 0;
  A = be32(data + i->k);
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_ldh_abs) if (i->k + 2ull > plen) return 0;
  A = be16(data + i->k);
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_ldb_abs) if (i->k + 1ull > plen) return 0;
  A = data[i->k];
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_ldw_ind) {
    const std::uint32_t off = X + i->k;
    if (off >= bpf::ll_off || off + 4ull > plen) return 0;
    A = be32(data + off);
  }
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_ldh_ind) {
    const std::uint32_t off = X + i->k;
    if (off >= bpf::ll_off || off + 2ull > plen) return 0;
    A = be16(data + off);
  }
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_ldb_ind) {
    const std::uint32_t off = X + i->k;
    if (off >= bpf::ll_off || off + 1ull > plen) return 0;
    A = data[off];
  }
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_ld_len) A = static_cast<std::uint32_t>(plen);
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_ldx_len) X = static_cast<std::uint32_t>(plen);
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_ld_imm) A = i->k;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_ldx_imm) X = i->k;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_ld_mem) A = M[i->k];
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_ldx_mem) X = M[i->k];
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_ldx_msh) if (i->k + 1ull > plen) return 0;
  X = 4u * (data[i->k] & 0xfu);
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_st) M[i->k] = A;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_stx) M[i->k] = X;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_add_k) A += i->k;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_add_x) A += X;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_sub_k) A -= i->k;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_sub_x) A -= X;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_mul_k) A *= i->k;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_mul_x) A *= X;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_div_k) A /= i->k;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_div_x) if (X == 0) return 0;
  A /= X;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_mod_k) A %= i->k;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_mod_x) if (X == 0) return 0;
  A %= X;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_and_k) A &= i->k;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_and_x) A &= X;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_or_k) A |= i->k;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_or_x) A |= X;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_xor_k) A ^= i->k;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_xor_x) A ^= X;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_lsh_k) A <<= i->k;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_lsh_x) A <<= (X & 31u);
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_rsh_k) A >>= i->k;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_rsh_x) A >>= (X & 31u);
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_neg) A = 0u - A;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_tax) X = A;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_txa) A = X;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_ret_k) return i->k;
  MCBUS_BPF_CASE(o_ret_a) return A;
  MCBUS_BPF_CASE(o_ja) pc += i->k;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_jeq_k) pc += A == i->k ? i->jt : i->jf;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_jeq_x) pc += A == X ? i->jt : i->jf;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_jgt_k) pc += A > i->k ? i->jt : i->jf;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_jgt_x) pc += A > X ? i->jt : i->jf;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_jge_k) pc += A >= i->k ? i->jt : i->jf;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_jge_x) pc += A >= X ? i->jt : i->jf;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_jset_k) pc += (A & i->k) ? i->jt : i->jf;
  MCBUS_BPF_NEXT;
  MCBUS_BPF_CASE(o_jset_x) pc += (A & X) ? i->jt : i->jf;
  MCBUS_BPF_NEXT;
#if !defined(__GNUC__)
  default: return 0;
}
#endif
}

#undef MCBUS_BPF_CASE
#undef MCBUS_BPF_NEXT
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

}  // namespace detail::bpfvm
MCBUS_NAMESPACE_END
