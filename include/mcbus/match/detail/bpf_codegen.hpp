// mcbus/match: emitting the classic BPF program for a plan (see bpf_plan.hpp).
//
// The program, in order (M[] are scratch cells, allocated per program):
//
//   prologue     byte order from byte 0; end of the header fields from bytes 12..15; clear cells
//   header walk  an unrolled loop over the header fields: for each one the rules test, remember
//                where it starts; skip the others. An unknown field code, a field list longer than
//                the loop, or (little-endian) a length of 64 KiB or more accepts the message
//   field ids    for each tested field: its class id (a decision tree on the length, then on
//                4-, 2- and 1-byte chunks of the text) and the bits of its namespace predicates
//   rules        per rule, its header tests; a rule that needs no arguments accepts at once,
//                one that does marks itself alive
//   arguments    only if some rule is alive: an unrolled walk over the first K body arguments,
//                driven by the SIGNATURE field, that gives each argument a class id and bits.
//                A type it cannot step over (struct, variant, array of containers) leaves the
//                remaining arguments "wild", which every test accepts
//   final        per alive rule, its argument tests; else reject
//
// Every load reads inside the message for a valid message: a field's bytes are read only after
// its length has matched, and the walks stay inside the field array and the body. A load past the
// end would make the kernel drop the message whatever the other rules say.
//
// Little-endian lengths are byte-swapped with arithmetic: for W the big-endian load of bytes
// b0 b1 b2 b3 with b2 = b3 = 0, ((W >> 16) * 0x10001 >> 8) & 0xffff is b1 << 8 | b0.
#pragma once

#include <mcbus/match/bpf_insn.hpp>
#include <mcbus/match/detail/bpf_assembler.hpp>
#include <mcbus/match/detail/bpf_plan.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

MCBUS_NAMESPACE_BEGIN
namespace detail::bpfgen {

namespace op {
using namespace ::mcbus::bpf;
inline constexpr std::uint16_t ldb_abs = ld | b | abs_, ldw_abs = ld | w | abs_;
inline constexpr std::uint16_t ldw_ind = ld | w | ind, ldh_ind = ld | h | ind, ldb_ind = ld | b | ind;
inline constexpr std::uint16_t ld_imm = ld | imm, ldx_imm = ldx | imm, ld_mem = ld | mem, ldx_mem = ldx | mem;
inline constexpr std::uint16_t st_mem = st, stx_mem = stx;
inline constexpr std::uint16_t add_k = alu | add | k, add_x = alu | add | x, sub_k = alu | sub | k,
                               and_k = alu | and_ | k, or_k = alu | or_ | k, or_x = alu | or_ | x,
                               lsh_k = alu | lsh | k, rsh_k = alu | rsh | k, mul_k = alu | mul | k;
inline constexpr std::uint16_t tax_ = misc | tax, txa_ = misc | txa;
inline constexpr std::uint16_t jeq_k = jmp | jeq | k, jgt_k = jmp | jgt | k, jge_k = jmp | jge | k,
                               jset_k = jmp | jset | k, jgt_x = jmp | jgt | x, jge_x = jmp | jge | x;
inline constexpr std::uint16_t ret_k = ret | k;
}  // namespace op

// Scratch cells of one program.
struct slots {
  static constexpr std::uint32_t none = 0xff;
  std::uint32_t order = none;  // 0: little-endian message, 1: big-endian
  std::uint32_t fend = none, sig = none, tmp = none;
  std::uint32_t field[5] = {none, none, none, none, none};  // path, interface, member, destination, sender
  std::uint32_t alive[2] = {none, none};
  std::uint32_t bits[4] = {none, none, none, none};
  std::uint32_t s = none, send = none, o = none, al = none, c = none;
  std::uint32_t arg_id[8] = {none, none, none, none, none, none, none, none};
  std::uint32_t used = 0;  // cells in use (a bit each)
};

enum field_index : unsigned { f_path, f_interface, f_member, f_destination, f_sender };
inline constexpr std::uint8_t field_code[5] = {1, 2, 3, 6, 7};

constexpr std::uint32_t chunk_value(std::string_view s, std::size_t at, std::size_t size) {
  std::uint32_t v = 0;
  for (std::size_t i = 0; i < size; ++i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}
constexpr std::size_t chunk_size(std::size_t remaining) { return remaining >= 4 ? 4 : remaining >= 2 ? 2 : 1; }
constexpr std::uint16_t chunk_load(std::size_t size) {
  return size == 4 ? op::ldw_ind : size == 2 ? op::ldh_ind : op::ldb_ind;
}

class emitter {
 public:
  constexpr emitter(const plan& p) : p_(p) {}

  // Emits the whole program; false if the scratch cells do not suffice.
  constexpr bool emit() {
    if (!allocate()) return false;
    accept_ = a.label();
    reject_ = a.label();
    prologue();
    type_prefilter();
    header_walk();
    for (unsigned f = 0; f < 5; ++f) field_ids(f);
    header_rules();
    if (p_.arg_rules) {
      arguments();
      final_rules();
    }
    a.bind(reject_);
    a.op(op::ret_k, bpf::reject);
    a.bind(accept_);
    a.op(op::ret_k, bpf::accept);
    return true;
  }

  bpf_assembler a;

 private:
  // ---- scratch cells --------------------------------------------------------------------------
  constexpr bool take(std::uint32_t& cell) {
    for (std::uint32_t i = 0; i < bpf::memwords; ++i) {
      if (!(s_.used & (1u << i))) {
        s_.used |= 1u << i;
        cell = i;
        return true;
      }
    }
    return false;
  }
  constexpr bool field_needed(unsigned f) const {
    for (const rule_plan& r : p_.rules) {
      if (!r.live) continue;
      switch (f) {
        case f_path:
          if (r.path || r.path_present || r.path_bit >= 0) return true;
          break;
        case f_interface:
          if (r.interface) return true;
          break;
        case f_member:
          if (r.member) return true;
          break;
        case f_destination:
          if (r.check_dest) return true;
          break;
        case f_sender:
          if (r.n_sender) return true;
          break;
      }
    }
    return false;
  }
  constexpr bool allocate() {
    const std::size_t nbits = p_.bits.size();
    if (nbits > 128 || p_.arg_rules > 64) return false;
    for (std::size_t i = 0; i * 32 < p_.arg_rules; ++i) {
      if (!take(s_.alive[i])) return false;
    }
    for (std::size_t i = 0; i * 32 < nbits; ++i) {
      if (!take(s_.bits[i])) return false;
    }
    if (!take(s_.order) || !take(s_.fend)) return false;
    if (p_.need_sig() && !take(s_.sig)) return false;
    const std::uint32_t header_base = s_.used;
    for (unsigned f = 0; f < 5; ++f) {
      if (field_needed(f) && !take(s_.field[f])) return false;
    }
    if (!take(s_.tmp)) return false;
    init_ = s_.used;
    if (!p_.arg_rules) return true;
    // The argument walk comes after the header rules: it may reuse the field cells.
    s_.used = header_base;
    if (!take(s_.s) || !take(s_.send) || !take(s_.o) || !take(s_.al) || !take(s_.c)) return false;
    for (unsigned i = 0; i < p_.walked_args; ++i) {
      if (p_.arg_has_checks(i) && !take(s_.arg_id[i])) return false;
    }
    init_ |= s_.used;
    return true;
  }

  // ---- small pieces ---------------------------------------------------------------------------
  constexpr void ld(std::uint32_t cell) { a.op(op::ld_mem, cell); }
  constexpr void st(std::uint32_t cell) { a.op(op::st_mem, cell); }
  constexpr void ldx(std::uint32_t cell) { a.op(op::ldx_mem, cell); }
  constexpr void set_bit(std::uint32_t bit) {
    ld(s_.bits[bit / 32]);
    a.op(op::or_k, 1u << (bit % 32));
    st(s_.bits[bit / 32]);
  }
  constexpr void align(std::uint32_t to) {
    a.op(op::add_k, to - 1);
    a.op(op::and_k, ~(to - 1));
  }

  // A = the 16-bit value y in A with its two bytes swapped: ((y * 0x10001) >> 8) & 0xffff.
  constexpr void swap16() {
    a.op(op::mul_k, 0x10001);
    a.op(op::rsh_k, 8);
    a.op(op::and_k, 0xffff);
  }
  // A = the u32 whose big-endian load is in M[word], read in the message's byte order, when below
  // 64 KiB. A larger little-endian value jumps to `too_big` (when given; the caller may know it
  // cannot happen). X is kept.
  constexpr void len16_from(std::uint32_t word, int too_big) {
    const int be = a.label();
    const int done = a.label();
    ld(s_.order);
    a.jump(op::jeq_k, 0, bpf_assembler::next, be);
    ld(word);
    if (too_big != bpf_assembler::next) a.jump(op::jset_k, 0xffff, too_big, bpf_assembler::next);
    a.op(op::rsh_k, 16);
    swap16();
    a.ja(done);
    a.bind(be);
    ld(word);
    a.bind(done);
  }
  // The same for the u32 at [X + k], with `tmp` as scratch. One packet load: loads are what the
  // kernel charges most for (bpf_kernel_bytes).
  constexpr void load_len16(std::uint32_t k, int too_big, std::uint32_t tmp) {
    a.op(op::ldw_ind, k);
    st(tmp);
    len16_from(tmp, too_big);
  }
  // A = the whole u32 at [X + k]; `tmp` is a scratch cell. X is lost.
  constexpr void load_len32(std::uint32_t k, std::uint32_t tmp) {
    const int be = a.label();
    const int done = a.label();
    a.op(op::ldw_ind, k);
    st(tmp);
    ld(s_.order);
    a.jump(op::jeq_k, 0, bpf_assembler::next, be);
    ld(tmp);  // bytes 2 and 3 are the high half
    a.op(op::and_k, 0xffff);
    swap16();
    a.op(op::lsh_k, 16);
    a.op(op::tax_, 0);
    ld(tmp);
    a.op(op::rsh_k, 16);
    swap16();
    a.op(op::or_x, 0);
    a.ja(done);
    a.bind(be);
    ld(tmp);
    a.bind(done);
  }

  // Compares [X + base, X + base + n) with s[0, n); falls through on a match, else jumps to `fail`.
  constexpr void compare(std::string_view s, std::size_t n, std::uint32_t base, int fail) {
    for (std::size_t at = 0; at < n;) {
      const std::size_t size = chunk_size(n - at);
      a.op(chunk_load(size), base + static_cast<std::uint32_t>(at));
      a.jump(op::jeq_k, chunk_value(s, at, size), bpf_assembler::next, fail);
      at += size;
    }
  }

  // ---- prologue -------------------------------------------------------------------------------
  constexpr void prologue() {
    const int le = a.label();
    const int be = a.label();
    const int got = a.label();
    const int not_dbus = a.label();
    const int too_long = a.label();
    a.op(op::ldw_abs, 12);  // length of the header field array, in the message's byte order
    st(s_.fend);
    a.op(op::ldb_abs, 0);
    a.jump(op::jeq_k, 'l', le, bpf_assembler::next);
    a.jump(op::jeq_k, 'B', be, not_dbus);
    a.bind(not_dbus);
    a.op(op::ret_k, bpf::reject);
    a.bind(le);
    a.op(op::ld_imm, 0);
    st(s_.order);
    ld(s_.fend);
    a.jump(op::jset_k, 0xffff, too_long, bpf_assembler::next);
    a.op(op::rsh_k, 16);
    swap16();
    a.ja(got);
    a.bind(too_long);
    a.op(op::ret_k, bpf::accept);
    a.bind(be);
    a.op(op::ld_imm, 1);
    st(s_.order);
    ld(s_.fend);
    a.bind(got);
    a.op(op::add_k, 16);
    st(s_.fend);
    // Every cell the program reads is written here first: the kernel refuses a program that might
    // read a cell before writing it, and 0 is what "absent" and "no bits" need anyway.
    a.op(op::ld_imm, 0);
    for (std::uint32_t i = 0; i < bpf::memwords; ++i) {
      if ((init_ & (1u << i)) && i != s_.fend && i != s_.order) st(i);
    }
    a.op(op::ldx_imm, 16);
  }

  // When every rule names a message type, a message of another type is dropped before the walk.
  constexpr void type_prefilter() {
    std::uint8_t types[5] = {};
    std::size_t n = 0;
    for (const rule_plan& r : p_.rules) {
      if (!r.live) continue;
      if (!r.has_type) return;
      bool seen = false;
      for (std::size_t i = 0; i < n; ++i) seen = seen || types[i] == r.type;
      if (!seen) types[n++] = r.type;
    }
    if (n == 0) return;
    const int go = a.label();
    const int drop = a.label();
    a.op(op::ldb_abs, 1);
    for (std::size_t i = 0; i < n; ++i) a.jump(op::jeq_k, types[i], go, i + 1 == n ? drop : bpf_assembler::next);
    a.bind(drop);
    a.op(op::ret_k, bpf::reject);
    a.bind(go);
  }

  // ---- header walk ----------------------------------------------------------------------------
  constexpr void header_walk() {
    const int done = a.label();
    // The end of the fields exits the walk through the next iteration's test, which fails again
    // with the same A and X: a chain of one-instruction hops instead of a long jump per iteration.
    int exit = a.label();
    for (unsigned it = 0; it < p_.header_fields; ++it) {
      const int next = a.label();
      const int sig = a.label();
      const int u32 = a.label();
      const int str = a.label();
      const int accept = a.label();
      ld(s_.fend);
      a.bind(exit);
      exit = a.label();
      a.jump(op::jgt_x, 0, bpf_assembler::next, exit);  // X < end: another field
      // The word at +4 serves every known field: a string's length, a signature's length in its
      // top byte, a u32. Loading it once here saves a load per field.
      a.op(op::ldw_ind, 4);
      st(s_.tmp);
      a.op(op::ldb_ind, 0);  // the field code; the fields the rules test come first
      int stores[5] = {};
      for (unsigned f = 0; f < 5; ++f) {
        if (s_.field[f] == slots::none) continue;
        stores[f] = a.label();
        a.jump(op::jeq_k, field_code[f], stores[f], bpf_assembler::next);
      }
      a.jump(op::jeq_k, 8, sig, bpf_assembler::next);
      a.jump(op::jeq_k, 5, u32, bpf_assembler::next);
      a.jump(op::jeq_k, 9, u32, bpf_assembler::next);
      a.jump(op::jgt_k, 9, accept, bpf_assembler::next);  // unknown field: its type is unknown
      a.ja(str);
      for (unsigned f = 0; f < 5; ++f) {
        if (s_.field[f] == slots::none) continue;
        a.bind(stores[f]);
        a.op(op::stx_mem, s_.field[f]);
        a.ja(str);
      }
      // SIGNATURE: u8 length at +4 (the top byte of the word), text at +5, NUL; the next field
      // starts at align8(X + 5 + len + 1), which the string tail computes from len - 3.
      const int tail = a.label();
      a.bind(sig);
      if (s_.sig != slots::none) a.op(op::stx_mem, s_.sig);
      ld(s_.tmp);
      a.op(op::rsh_k, 24);
      a.op(op::sub_k, 3);
      a.ja(tail);
      // A string or object path: code, signature "s"/"o", padding, u32 length at +4, text at +8,
      // NUL; the next field starts at align8(X + 8 + len + 1).
      a.bind(str);
      len16_from(s_.tmp, accept);
      a.bind(tail);
      a.op(op::add_x, 0);
      a.op(op::add_k, 8 + 1 + 7);
      a.op(op::and_k, ~7u);
      a.op(op::tax_, 0);
      a.ja(next);
      a.bind(accept);
      a.op(op::ret_k, bpf::accept);
      // REPLY_SERIAL, UNIX_FDS: a u32 at +4.
      a.bind(u32);
      a.op(op::txa_, 0);
      a.op(op::add_k, 8);
      a.op(op::tax_, 0);
      a.bind(next);
    }
    const int more = a.label();
    ld(s_.fend);
    a.bind(exit);
    a.jump(op::jgt_x, 0, more, done);  // more fields than walked
    a.bind(more);
    a.op(op::ret_k, bpf::accept);
    a.bind(done);
  }

  // ---- field class ids ------------------------------------------------------------------------
  // (bpf_fields.hpp)
  constexpr void string_switch(const dict& d, std::uint32_t base, std::uint32_t cell, int done, int other,
                               cvec<std::uint32_t>& leaf, unsigned cap);
  constexpr void trie(const dict& d, const cvec<std::size_t>& members, std::size_t at, unsigned depth,
                      std::uint32_t base, std::uint32_t cell, int done, int other, cvec<std::uint32_t>& leaf,
                      unsigned cap);
  constexpr std::uint32_t leaf_id(const cvec<std::uint32_t>& leaf, std::uint32_t id) const;
  constexpr void namespace_bit(std::string_view ns, char sep, std::uint32_t base, std::uint32_t len_cell,
                               std::uint32_t bit);
  constexpr const dict& field_dict(unsigned f) const;
  constexpr void field_ids(unsigned f);

  // ---- rule tests -----------------------------------------------------------------------------
  // Jumps to `fail` unless M[cell] is one of ids.
  constexpr void one_of(std::uint32_t cell, const std::uint32_t* ids, std::size_t n, int fail) {
    const int ok = a.label();
    ld(cell);
    for (std::size_t i = 0; i < n; ++i) a.jump(op::jeq_k, ids[i], ok, i + 1 == n ? fail : bpf_assembler::next);
    a.bind(ok);
  }
  constexpr void dest_test(const rule_plan& r, int fail) {
    // Without the split a well-known name that is none of the constants is stored as id_other, so
    // id_well_known never occurs. The complement is often shorter: most rules deny few classes.
    cvec<std::uint32_t> allowed;
    for (std::uint32_t c : r.dest_allowed) {
      if (c != id_well_known || p_.wk_split) allowed.push_back(c);
    }
    cvec<std::uint32_t> denied;
    const std::uint32_t classes = first_const + static_cast<std::uint32_t>(p_.destination.values.size());
    for (std::uint32_t c = 0; c < classes; ++c) {
      if (c == id_well_known && !p_.wk_split) continue;
      bool ok = false;
      for (std::uint32_t x : allowed) ok = ok || x == c;
      if (!ok) denied.push_back(c);
    }
    if (allowed.size() <= denied.size()) {
      one_of(s_.field[f_destination], allowed.data(), allowed.size(), fail);
      return;
    }
    ld(s_.field[f_destination]);
    for (std::uint32_t c : denied) a.jump(op::jeq_k, c, fail, bpf_assembler::next);
  }
  constexpr void header_tests(const rule_plan& r, int fail) {
    if (r.has_type) {
      ld(s_.tmp);  // the message type, loaded once
      a.jump(op::jeq_k, r.type, bpf_assembler::next, fail);
    }
    for (auto [f, want] : {std::pair{f_interface, r.interface}, {f_member, r.member}, {f_path, r.path}}) {
      if (!want) continue;
      const std::uint32_t id = leaf_id(leaf_[f], want);
      one_of(s_.field[f], &id, 1, fail);
    }
    if (r.path_present) {
      ld(s_.field[f_path]);
      a.jump(op::jeq_k, 0, fail, bpf_assembler::next);
    }
    if (r.path_bit >= 0) {
      ld(s_.bits[r.path_bit / 32]);
      a.jump(op::jset_k, 1u << (r.path_bit % 32), bpf_assembler::next, fail);
    }
    if (r.n_sender) one_of(s_.field[f_sender], r.sender, r.n_sender, fail);
    if (r.check_dest) dest_test(r, fail);
  }
  constexpr void header_rules() {
    bool types = false;
    for (const rule_plan& r : p_.rules) types = types || (r.live && r.has_type);
    if (types) {
      a.op(op::ldb_abs, 1);
      st(s_.tmp);
    }
    for (const rule_plan& r : p_.rules) {
      if (!r.live) continue;
      const int fail = a.label();
      header_tests(r, fail);
      if (r.args.empty()) {
        a.op(op::ret_k, bpf::accept);
      } else {
        ld(s_.alive[r.alive_bit / 32]);
        a.op(op::or_k, 1u << (r.alive_bit % 32));
        st(s_.alive[r.alive_bit / 32]);
      }
      a.bind(fail);
    }
    if (!p_.arg_rules) {
      a.op(op::ret_k, bpf::reject);
      return;
    }
    args_ = a.label();
    ld(s_.alive[0]);
    a.jump(op::jgt_k, 0, args_, bpf_assembler::next);
    if (s_.alive[1] != slots::none) {
      ld(s_.alive[1]);
      a.jump(op::jgt_k, 0, args_, bpf_assembler::next);
    }
    a.op(op::ret_k, bpf::reject);
  }

  // ---- arguments (bpf_args.hpp) ---------------------------------------------------------------
  constexpr void arguments();
  constexpr void array_length();
  constexpr int arg_step(unsigned i, int next, int entry, int final_stop);
  constexpr void arg_string_tests(unsigned i);
  constexpr void arg_path_bit(std::string_view expected, std::uint32_t bit);
  constexpr std::uint32_t arg_bits_mask(unsigned i, std::uint32_t word) const;
  constexpr void clear_arg_bits(unsigned i);
  constexpr void final_rules();

  const plan& p_;
  slots s_;
  cvec<std::uint32_t> leaf_[5];
  cvec<std::uint32_t> arg_leaf_[8];
  std::uint32_t init_ = 0;
  int accept_ = 0;
  int reject_ = 0;
  int args_ = 0;
};

}  // namespace detail::bpfgen
MCBUS_NAMESPACE_END

#include <mcbus/match/detail/bpf_args.hpp>
#include <mcbus/match/detail/bpf_fields.hpp>
