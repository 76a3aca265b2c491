// mcbus/match: a classic BPF assembler with labels.
//
// Code is emitted with symbolic forward jumps; finish() lays it out. A conditional jump reaches at
// most 255 instructions ahead, so one that must go further is relaxed: it jumps to an inserted
// `ja` (whose 32-bit offset reaches anywhere) right behind it. Insertions move later code, which
// can push other jumps out of range, so layout repeats until nothing changes; jumps only ever grow,
// which bounds the number of rounds.
#pragma once

#include <mcbus/match/bpf_insn.hpp>
#include <mcbus/match/detail/cvec.hpp>

#include <cstddef>
#include <cstdint>

MCBUS_NAMESPACE_BEGIN
namespace detail {

class bpf_assembler {
 public:
  static constexpr int next = -1;  // a jump target meaning "the following instruction"

  constexpr int label() {
    labels_.push_back(unbound);
    return static_cast<int>(labels_.size() - 1);
  }
  constexpr void bind(int l) { labels_[static_cast<std::size_t>(l)] = static_cast<std::int32_t>(ops_.size()); }

  constexpr void op(std::uint16_t code, std::uint32_t k = 0) { ops_.push_back(item{code, k, next, next}); }
  // A conditional jump: to jt when the condition holds, else to jf (labels, or `next`).
  constexpr void jump(std::uint16_t code, std::uint32_t k, int jt, int jf) { ops_.push_back(item{code, k, jt, jf}); }
  constexpr void ja(int target) { ops_.push_back(item{bpf::jmp | bpf::ja, 0, target, next}); }

  constexpr std::size_t size() const noexcept { return ops_.size(); }

  // Lays the program out. Fails (returns false) when it would exceed `limit` instructions or when
  // a jump goes backwards or to an unbound label, which would be a bug in the code generator.
  constexpr bool finish(cvec<bpf_insn>& out, std::size_t limit) const {
    const std::size_t n = ops_.size();
    cvec<std::uint8_t> extra(n);     // trampolines after each op: 0, 1 or 2
    cvec<std::uint8_t> far_true(n);  // with one trampoline: whether it serves jt (else jf)
    cvec<std::size_t> pos(n + 1);
    for (int round = 0;; ++round) {
      std::size_t p = 0;
      for (std::size_t i = 0; i < n; ++i) {
        pos[i] = p;
        p += 1 + extra[i];
      }
      pos[n] = p;
      if (p > limit) return false;
      bool changed = false;
      for (std::size_t i = 0; i < n; ++i) {
        const item& it = ops_[i];
        if (!conditional(it.code)) continue;
        std::size_t t = 0;
        std::size_t f = 0;
        if (!target(it.jt, i, pos, t) || !target(it.jf, i, pos, f)) return false;
        const std::size_t from = pos[i] + 1;
        const bool t_far = t - from > 255;
        const bool f_far = f - from > 255;
        std::uint8_t need = extra[i];
        if (t_far && f_far) {
          need = 2;
        } else if (t_far || f_far) {
          if (need == 0) {
            need = 1;
            far_true[i] = t_far;
          } else if (need == 1 && static_cast<bool>(far_true[i]) != t_far) {
            need = 2;
          }
        }
        if (need != extra[i]) {
          extra[i] = need;
          changed = true;
        }
      }
      if (!changed) break;
      if (round > 64) return false;
    }
    out.clear();
    out.reserve(pos[n]);
    for (std::size_t i = 0; i < n; ++i) {
      const item& it = ops_[i];
      if (it.code == (bpf::jmp | bpf::ja)) {
        std::size_t t = 0;
        if (!target(it.jt, i, pos, t)) return false;
        out.push_back(bpf::stmt(it.code, static_cast<std::uint32_t>(t - (pos[i] + 1))));
        continue;
      }
      if (!conditional(it.code)) {
        out.push_back(bpf::stmt(it.code, it.k));
        continue;
      }
      std::size_t t = 0;
      std::size_t f = 0;
      (void)target(it.jt, i, pos, t);
      (void)target(it.jf, i, pos, f);
      const std::size_t from = pos[i] + 1;
      if (extra[i] == 0) {
        out.push_back(
            bpf::jump(it.code, it.k, static_cast<std::uint8_t>(t - from), static_cast<std::uint8_t>(f - from)));
      } else if (extra[i] == 1 && far_true[i]) {
        out.push_back(bpf::jump(it.code, it.k, 0, static_cast<std::uint8_t>(f - from)));
        out.push_back(bpf::stmt(bpf::jmp | bpf::ja, static_cast<std::uint32_t>(t - (from + 1))));
      } else if (extra[i] == 1) {
        out.push_back(bpf::jump(it.code, it.k, static_cast<std::uint8_t>(t - from), 0));
        out.push_back(bpf::stmt(bpf::jmp | bpf::ja, static_cast<std::uint32_t>(f - (from + 1))));
      } else {
        out.push_back(bpf::jump(it.code, it.k, 0, 1));
        out.push_back(bpf::stmt(bpf::jmp | bpf::ja, static_cast<std::uint32_t>(t - (from + 1))));
        out.push_back(bpf::stmt(bpf::jmp | bpf::ja, static_cast<std::uint32_t>(f - (from + 2))));
      }
    }
    return true;
  }

 private:
  static constexpr std::int32_t unbound = -1;

  struct item {
    std::uint16_t code = 0;
    std::uint32_t k = 0;
    int jt = next;
    int jf = next;
  };

  static constexpr bool conditional(std::uint16_t code) noexcept {
    return bpf::cls(code) == bpf::jmp && bpf::op(code) != bpf::ja;
  }

  // Where a jump from op i to `label` lands, given the current layout. Only forward jumps exist.
  constexpr bool target(int label, std::size_t i, const cvec<std::size_t>& pos, std::size_t& out) const {
    std::size_t to = i + 1;
    if (label != next) {
      const std::int32_t at = labels_[static_cast<std::size_t>(label)];
      if (at == unbound || static_cast<std::size_t>(at) <= i) return false;
      to = static_cast<std::size_t>(at);
    }
    out = pos[to];
    return true;
  }

  cvec<item> ops_;
  cvec<std::int32_t> labels_;
};

}  // namespace detail
MCBUS_NAMESPACE_END
