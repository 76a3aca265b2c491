// mcbus/match: classic BPF programs as text, one instruction per line in the style of
// `tcpdump -d` (libpcap's bpf_image), so that the two can be compared side by side.
#pragma once

#include <mcbus/match/bpf_insn.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

MCBUS_NAMESPACE_BEGIN

namespace detail::bpfdis {
inline std::string hex(std::uint32_t v) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  do {
    out.insert(out.begin(), digits[v & 15]);
    v >>= 4;
  } while (v);
  return "0x" + out;
}
inline std::string dec(std::uint32_t v) { return std::to_string(static_cast<std::int32_t>(v)); }
inline std::string index3(std::size_t n) {
  std::string s = std::to_string(n);
  while (s.size() < 3) s.insert(s.begin(), '0');
  return s;
}
inline void pad(std::string& s, std::size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
}
}  // namespace detail::bpfdis

// One instruction; n is its index, which jump targets are counted from.
inline std::string bpf_insn_to_string(const bpf_insn& i, std::size_t n) {
  using namespace bpf;
  using detail::bpfdis::dec;
  using detail::bpfdis::hex;
  std::string op;
  std::string arg;
  const std::string xk = src(i.code) == x ? std::string("x") : "#" + hex(i.k);
  const std::string xd = src(i.code) == x ? std::string("x") : "#" + dec(i.k);
  const char* sizes[] = {"", "h", "b", "?"};
  const char* sz = sizes[size(i.code) >> 3];
  switch (cls(i.code)) {
    case ld:
    case ldx: {
      const bool is_x = cls(i.code) == ldx;
      op = is_x ? "ldx" : "ld";
      switch (mode(i.code)) {
        case abs_: op += sz, arg = "[" + dec(i.k) + "]"; break;
        case ind: op += sz, arg = "[x + " + dec(i.k) + "]"; break;
        case len: arg = "#pktlen"; break;
        case imm: arg = "#" + hex(i.k); break;
        case mem: arg = "M[" + dec(i.k) + "]"; break;
        case msh: op = "ldxb", arg = "4*([" + dec(i.k) + "]&0xf)"; break;
        default: op = "unimp", arg = hex(i.code); break;
      }
      break;
    }
    case st: op = "st", arg = "M[" + dec(i.k) + "]"; break;
    case stx: op = "stx", arg = "M[" + dec(i.k) + "]"; break;
    case alu: {
      static const char* names[] = {"add", "sub", "mul", "div", "or", "and", "lsh", "rsh", "neg", "mod", "xor"};
      const unsigned o = bpf::op_index(i.code);
      op = o < 11 ? names[o] : "unimp";
      if (bpf::op(i.code) == neg) break;
      const bool logical = bpf::op(i.code) == and_ || bpf::op(i.code) == or_ || bpf::op(i.code) == xor_;
      arg = logical ? xk : xd;
      break;
    }
    case jmp: {
      static const char* names[] = {"ja", "jeq", "jgt", "jge", "jset"};
      const unsigned o = bpf::op_index(i.code);
      op = o < 5 ? names[o] : "unimp";
      if (bpf::op(i.code) == ja) {
        arg = std::to_string(n + 1 + i.k);
        break;
      }
      arg = xk;
      std::string line = "(" + detail::bpfdis::index3(n) + ") ";
      detail::bpfdis::pad(op, 8);
      detail::bpfdis::pad(arg, 16);
      return line + op + " " + arg + " jt " + std::to_string(n + 1 + i.jt) + "\tjf " + std::to_string(n + 1 + i.jf);
    }
    case ret: op = "ret", arg = rval(i.code) == a ? std::string() : "#" + dec(i.k); break;
    case misc: op = miscop(i.code) == txa ? "txa" : "tax"; break;
  }
  detail::bpfdis::pad(op, 8);
  return "(" + detail::bpfdis::index3(n) + ") " + op + " " + arg;
}

// The whole program, one line per instruction, each ending in '\n'.
inline std::string bpf_to_string(std::span<const bpf_insn> prog) {
  std::string out;
  for (std::size_t n = 0; n < prog.size(); ++n) {
    out += bpf_insn_to_string(prog[n], n);
    out += '\n';
  }
  return out;
}

MCBUS_NAMESPACE_END
