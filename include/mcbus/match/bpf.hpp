// mcbus/match: a set of match rules (OR'ed) compiled into one classic BPF socket filter.
//
// The filter runs in the kernel on each message sent to a subscriber's socket: SO_ATTACH_FILTER on
// the receiving end of an AF_UNIX SOCK_SEQPACKET pair, where it sees the whole D-Bus message (offset
// 0 is the byte-order byte). It is
//  - sound: it never drops a message that match_rule::matches() accepts (with the same receiver
//    and the same knowledge of name owners), in either byte order;
//  - tight: it decides type, sender, interface, member, path, path_namespace, destination and the
//    string, path and namespace keys of the first walked arguments exactly, and where exactness
//    does not fit it accepts more (it widens), never less. bpf_program::exact() says whether the
//    compiler had to drop tests; exact_for() whether a given message is decided exactly;
//  - kernel-ready: at most 4096 instructions, forward jumps only, every scratch cell written before
//    it is read (validate_bpf() in bpf_vm.hpp checks what the kernel checks).
//
// The compiler is constexpr: static_bpf<"rule", ...> is a std::array built by the C++ compiler.
#pragma once

#include <mcbus/error.hpp>
#include <mcbus/match/bpf_insn.hpp>
#include <mcbus/match/context.hpp>
#include <mcbus/match/detail/bpf_codegen.hpp>
#include <mcbus/match/rule.hpp>
#include <mcbus/wire/message.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

MCBUS_NAMESPACE_BEGIN

struct bpf_options {
  // Unique name of the connection the filter is for: messages addressed to it pass as
  // match_rule::matches() lets them pass for it. Empty: judge as a bystander.
  std::string_view receiver = {};
  // The well-known names the compiler may resolve (for sender= and destination= keys).
  std::span<const name_owner> owners = {};
  // owners lists every well-known name that matters. If not, a sender= well-known name missing
  // from it passes any sender, and a DESTINATION that is a well-known name outside the rules'
  // names is widened; otherwise both are decided as matches() decides them with this same table.
  bool owners_complete = false;
  // Instructions at most. The kernel refuses programs longer than bpf::max_insns, so a larger
  // budget counts as bpf::max_insns.
  std::size_t max_instructions = bpf::max_insns;
  // What the kernel may charge the socket for the program (bpf_kernel_bytes): keep it below the
  // receiving socket's net.core.optmem_max, or SO_ATTACH_FILTER fails with ENOMEM. The default
  // fits every kernel; read /proc/sys/net/core/optmem_max to allow more. 0: no limit.
  std::size_t max_kernel_bytes = bpf::optmem_max_default - 512;
  // Body arguments walked at most (up to 8); keys on later arguments are widened away.
  unsigned max_args = 8;
};

namespace detail::bpfgen {

struct output {
  cvec<bpf_insn> insns;
  bool exact = true;
  unsigned walked_args = 0;
  unsigned header_fields = 9;
  std::uint8_t tested_args = 0;  // bit i: argument i has tests
  bool wk_split = false;
  bool dest_tested = false;
  cvec<std::string_view> dest_consts;
};

constexpr void single(output& out, std::uint32_t verdict, bool exact) {
  out.insns.clear();
  out.insns.push_back(bpf::stmt(bpf::ret | bpf::k, verdict));
  out.exact = exact;
}

// The rungs of the widening ladder, each dropping more than the one before: a shorter field walk
// (nothing is lost for messages of up to 7 header fields), shorter comparisons of constants, fewer
// body arguments, then whole keys. Past the last rung the program accepts everything.
constexpr level ladder_rung(unsigned rung, unsigned args) {
  level lv;
  lv.max_args = args;
  if (rung == 0) return lv;
  lv.header_fields = 7;
  constexpr unsigned chunk_caps[] = {1024, 16, 8, 4, 2, 1, 0};
  if (rung < 1 + std::size(chunk_caps)) {
    lv.chunks = chunk_caps[rung - 1];
    return lv;
  }
  lv.chunks = 0;
  rung -= 1 + static_cast<unsigned>(std::size(chunk_caps));
  if (rung < args) {
    lv.max_args = args - 1 - rung;
    return lv;
  }
  lv.max_args = 0;
  rung -= args;
  bool* keys[] = {&lv.bits, &lv.path, &lv.member, &lv.sender, &lv.interface, &lv.destination};
  for (unsigned k = 0; k <= rung && k < std::size(keys); ++k) *keys[k] = false;
  return lv;
}
constexpr unsigned ladder_rungs(unsigned args) { return 1 + 7 + args + 6; }

enum class attempt { fits, too_big, done };

// Compiles at one rung: `done` when the program is trivial (no rule can match, or one takes all).
constexpr attempt compile_at(std::span<const match_rule> rules, const plan_options& po, const level& lv,
                             std::size_t limit, std::size_t kernel_limit, output& out) {
  plan p;
  build_plan(p, rules, po, lv);
  bool any_live = false;
  for (const rule_plan& r : p.rules) any_live = any_live || r.live;
  if (!any_live || p.accept_all) {
    single(out, any_live ? bpf::accept : bpf::reject, p.exact);
    return attempt::done;
  }
  emitter e(p);
  if (!e.emit() || !e.a.finish(out.insns, limit)) return attempt::too_big;
  if (kernel_limit && bpf_kernel_bytes(std::span<const bpf_insn>(out.insns.data(), out.insns.size())) > kernel_limit) {
    return attempt::too_big;
  }
  out.exact = p.exact;
  out.walked_args = p.walked_args;
  out.header_fields = p.header_fields;
  out.wk_split = p.wk_split;
  out.tested_args = 0;
  for (unsigned i = 0; i < p.walked_args; ++i) {
    if (p.arg_has_checks(i)) out.tested_args = static_cast<std::uint8_t>(out.tested_args | (1u << i));
  }
  out.dest_tested = false;
  for (const rule_plan& r : p.rules) out.dest_tested = out.dest_tested || (r.live && r.check_dest);
  out.dest_consts = p.destination.values;
  return attempt::fits;
}

// The first rung whose program fits: rung 0 first (most rule sets fit whole), then a binary search
// over the rest, which shrink as they go, so that a large rule set costs a handful of compiles.
constexpr bool compile(std::span<const match_rule> rules, const plan_options& po, std::size_t limit,
                       std::size_t kernel_limit, unsigned max_args, output& out) {
  if (limit == 0) return false;
  if (rules.empty()) {
    single(out, bpf::reject, true);
    return true;
  }
  unsigned args = max_args < 8 ? max_args : 8;
  unsigned wanted = 0;
  for (const match_rule& r : rules) {
    for (std::size_t i = 0; i < r.arg_count(); ++i) wanted = r.arg(i).index + 1 > wanted ? r.arg(i).index + 1 : wanted;
  }
  if (args > wanted) args = wanted;
  if (compile_at(rules, po, ladder_rung(0, args), limit, kernel_limit, out) != attempt::too_big) return true;
  unsigned lo = 1;                   // every rung below lo is too big
  unsigned hi = ladder_rungs(args);  // rung hi is "accept everything", which always fits
  while (lo < hi) {
    const unsigned mid = lo + (hi - lo) / 2;
    output trial;
    if (compile_at(rules, po, ladder_rung(mid, args), limit, kernel_limit, trial) == attempt::too_big) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  if (hi < ladder_rungs(args) &&
      compile_at(rules, po, ladder_rung(hi, args), limit, kernel_limit, out) != attempt::too_big) {
    return true;
  }
  single(out, bpf::accept, false);
  return true;
}

}  // namespace detail::bpfgen

// A compiled filter, and what is known about how exact it is.
class bpf_program {
 public:
  bpf_program() = default;

  std::span<const bpf_insn> insns() const noexcept { return insns_; }
  std::size_t size() const noexcept { return insns_.size(); }
  const bpf_insn* data() const noexcept { return insns_.data(); }

  // No test of any rule was dropped to make the program fit.
  bool exact() const noexcept { return exact_; }
  // What the kernel will charge the socket for it (see bpf_kernel_bytes).
  std::size_t kernel_bytes() const noexcept { return bpf_kernel_bytes(insns_); }
  // Body arguments the program walks; tests on later arguments were dropped.
  unsigned walked_args() const noexcept { return walked_args_; }

  // Whether the program decides this message exactly as matches() does: true unless the compiler
  // dropped tests, or the message has something the program widens on (an unknown or a tenth
  // header field, a little-endian header of 64 KiB or more, a DESTINATION well-known name outside
  // the rules' names when owners are incomplete, or a struct, variant or array of containers
  // before a tested argument).
  bool exact_for(const message_view& m) const noexcept {
    if (!exact_) return false;
    if (!header_exact(m)) return false;
    if (dest_tested_ && wk_split_ && m.header().has(header_field::destination)) {
      const std::string_view d = m.header().destination;
      bool known = false;
      for (const std::string& c : dest_consts_) known = known || c == d;
      if (!known && !detail::match::is_unique_name(d)) return false;
    }
    return args_exact(m);
  }

 private:
  friend result<bpf_program> compile_bpf(std::span<const match_rule>, const bpf_options&);

  bool header_exact(const message_view& m) const noexcept {
    const auto* p = reinterpret_cast<const unsigned char*>(m.header_bytes().data());
    const bool little = p[0] == 'l';
    auto u32 = [&](std::size_t at) {
      return little ? std::uint32_t{p[at]} | std::uint32_t{p[at + 1]} << 8 | std::uint32_t{p[at + 2]} << 16 |
                          std::uint32_t{p[at + 3]} << 24
                    : std::uint32_t{p[at]} << 24 | std::uint32_t{p[at + 1]} << 16 | std::uint32_t{p[at + 2]} << 8 |
                          std::uint32_t{p[at + 3]};
    };
    const std::uint32_t fields = u32(12);
    if (little && fields >= 0x10000) return false;
    const std::size_t end = 16 + std::size_t{fields};
    unsigned count = 0;
    for (std::size_t at = 16; at < end;) {
      if (++count > header_fields_) return false;
      const unsigned code = p[at];
      if (code > 9) return false;
      if (code == 5 || code == 9) {
        at += 8;
      } else if (code == 8) {
        at = detail::align_up(at + 4 + 1 + p[at + 4] + 1, 8);
      } else {
        const std::uint32_t len = u32(at + 4);
        if (little && len >= 0x10000) return false;
        at = detail::align_up(at + 8 + len + 1, 8);
      }
    }
    return true;
  }

  bool args_exact(const message_view& m) const noexcept {
    if (!tested_args_) return true;
    const std::string_view sig = m.header().signature;
    reader r = m.body();
    std::size_t si = 0;
    for (unsigned i = 0; i < walked_args_ && si < sig.size(); ++i) {
      const bool last = i + 1 == walked_args_;
      const bool tested = tested_args_ & (1u << i);
      const char c = sig[si];
      const std::size_t len = complete_type_length(sig, si);
      if (c == 's' || c == 'o') {
        const std::string_view s = r.get_string();
        if (tested && m.order() == byte_order::little && s.size() >= 0x10000) return false;
      } else {
        if (!last && (c == 'v' || c == '(')) return false;
        if (!last && c == 'a' && (sig[si + 1] == '(' || sig[si + 1] == 'a')) return false;
        if (!last && c == 'a' && sig[si + 1] == '{' && (sig[si + 3] == '(' || sig[si + 3] == 'a')) return false;
        r.skip(sig.substr(si, len));
      }
      si += len;
    }
    return true;
  }

  std::vector<bpf_insn> insns_;
  bool exact_ = true;
  unsigned walked_args_ = 0;
  unsigned header_fields_ = 9;
  std::uint8_t tested_args_ = 0;
  bool wk_split_ = false;
  bool dest_tested_ = false;
  std::vector<std::string> dest_consts_;
};

// Compiles rules (OR'ed) into a filter. Fails only for a zero instruction budget: a rule set too
// large for the budget is widened until it fits, down to "accept everything".
inline result<bpf_program> compile_bpf(std::span<const match_rule> rules, const bpf_options& opts = {}) {
  detail::bpfgen::output out;
  const detail::bpfgen::plan_options po{opts.receiver, opts.owners, opts.owners_complete};
  const std::size_t budget = std::min(opts.max_instructions, bpf::max_insns);
  if (!detail::bpfgen::compile(rules, po, budget, opts.max_kernel_bytes, opts.max_args, out)) {
    return error(errc::bpf_too_large, budget, "instruction budget");
  }
  bpf_program prog;
  prog.insns_.assign(out.insns.begin(), out.insns.end());
  prog.exact_ = out.exact;
  prog.walked_args_ = out.walked_args;
  prog.header_fields_ = out.header_fields;
  prog.tested_args_ = out.tested_args;
  prog.wk_split_ = out.wk_split;
  prog.dest_tested_ = out.dest_tested;
  for (std::string_view c : out.dest_consts) prog.dest_consts_.emplace_back(c);
  return prog;
}

inline result<bpf_program> compile_bpf(const match_rule& rule, const bpf_options& opts = {}) {
  return compile_bpf(std::span<const match_rule>(&rule, 1), opts);
}

// ---- compile time ------------------------------------------------------------------------------

namespace detail::bpfgen {
template <std::size_t N>
struct rule_text {
  char text[N]{};
  constexpr rule_text(const char (&s)[N]) {  // NOLINT: literals only
    for (std::size_t i = 0; i < N; ++i) text[i] = s[i];
  }
  constexpr std::string_view view() const { return {text, N - 1}; }
};

// Reaching invalid_match_rule_in_string_literal() (not constexpr) makes an invalid rule a compile
// error that names the problem.
constexpr match_rule checked_rule(std::string_view text) {
  auto r = match_rule::parse(text);
  if (!r) detail::invalid_match_rule_in_string_literal();
  return *r;
}

template <rule_text... R>
constexpr output compile_static() {
  const std::array<match_rule, sizeof...(R)> rules{checked_rule(R.view())...};
  output out;
  (void)compile(rules, plan_options{}, bpf::max_insns, bpf::optmem_max_default - 512, 8, out);
  return out;
}

template <rule_text... R>
constexpr auto static_program() {
  constexpr std::size_t n = compile_static<R...>().insns.size();
  std::array<bpf_insn, n> prog{};
  const output out = compile_static<R...>();
  for (std::size_t i = 0; i < n; ++i) prog[i] = out.insns[i];
  return prog;
}
}  // namespace detail::bpfgen

// The filter for rules known when the program is built, as a constant: an invalid rule is a
// compile error. (No receiver and no name owners: destination= keys and well-known sender= names
// are judged as by a bystander.)
template <detail::bpfgen::rule_text... R>
inline constexpr auto static_bpf = detail::bpfgen::static_program<R...>();

MCBUS_NAMESPACE_END
