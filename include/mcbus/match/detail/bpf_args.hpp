// mcbus/match: the part of the BPF program that walks body arguments. Included by bpf_codegen.hpp.
//
// The walk follows the SIGNATURE field one complete type per step, keeping the signature position
// in M[s] and the body offset in M[o] (offsets count from the start of the message, which is what
// D-Bus alignment counts from). It steps over every basic type, strings, object paths, signatures,
// arrays of single-character element types and dicts a{KV} with a single-character V. A struct, a
// variant or an array of containers before the last tested argument stops it: the arguments from
// there on stay "wild" and pass every test (the program widens; it never narrows).
#pragma once

#include <mcbus/match/detail/bpf_codegen.hpp>

MCBUS_NAMESPACE_BEGIN
namespace detail::bpfgen {

constexpr std::uint32_t emitter::arg_bits_mask(unsigned i, std::uint32_t word) const {
  std::uint32_t mask = 0;
  for (std::size_t b = word * 32; b < p_.bits.size() && b < (word + 1) * 32; ++b) {
    if (p_.bits[b].kind != bit_kind::path_namespace && p_.bits[b].arg == i) mask |= 1u << (b % 32);
  }
  return mask;
}

constexpr void emitter::clear_arg_bits(unsigned i) {
  for (std::uint32_t w = 0; w < 4 && s_.bits[w] != slots::none; ++w) {
    if (const std::uint32_t mask = arg_bits_mask(i, w)) {
      ld(s_.bits[w]);
      a.op(op::and_k, ~mask);
      st(s_.bits[w]);
    }
  }
}

constexpr void emitter::arguments() {
  a.bind(args_);
  const int end = a.label();
  const int fin = a.label();
  // Until a step reaches an argument, it is wild: its id says so and its bits are set.
  a.op(op::ld_imm, id_wild);
  for (unsigned i = 0; i < p_.walked_args; ++i) {
    if (s_.arg_id[i] != slots::none) st(s_.arg_id[i]);
  }
  for (std::uint32_t w = 0; w < 4 && s_.bits[w] != slots::none; ++w) {
    std::uint32_t mask = 0;
    for (unsigned i = 0; i < p_.walked_args; ++i) mask |= arg_bits_mask(i, w);
    if (!mask) continue;
    ld(s_.bits[w]);
    a.op(op::or_k, mask);
    st(s_.bits[w]);
  }
  // No SIGNATURE field: no arguments at all.
  ld(s_.sig);
  a.jump(op::jeq_k, 0, end, bpf_assembler::next);
  a.op(op::tax_, 0);
  a.op(op::ldb_ind, 4);
  a.op(op::add_x, 0);
  a.op(op::add_k, 5);
  st(s_.send);
  a.op(op::txa_, 0);
  a.op(op::add_k, 5);
  st(s_.s);
  ld(s_.fend);
  align(8);
  st(s_.o);
  // As in the header walk, the end of the signature exits through the next step's test.
  int exit = a.label();
  for (unsigned i = 0; i < p_.walked_args; ++i) {
    const int next = a.label();
    exit = arg_step(i, next, exit, fin);
    a.bind(next);
  }
  a.ja(fin);
  a.bind(exit);
  a.ja(end);
  // The signature ended: the arguments not reached do not exist.
  a.bind(end);
  for (unsigned i = 0; i < p_.walked_args; ++i) {
    if (s_.arg_id[i] == slots::none) continue;
    const int skip = a.label();
    ld(s_.arg_id[i]);
    a.jump(op::jeq_k, id_wild, bpf_assembler::next, skip);
    a.op(op::ld_imm, id_absent);
    st(s_.arg_id[i]);
    clear_arg_bits(i);
    a.bind(skip);
  }
  a.bind(fin);
}

// An array at M[o]: its byte count into M[al]; A = the offset just past the count.
constexpr void emitter::array_length() {
  ld(s_.o);
  align(4);
  st(s_.o);
  a.op(op::tax_, 0);
  load_len32(0, s_.al);
  st(s_.al);
  ld(s_.o);
  a.op(op::add_k, 4);
}

// Returns the label its end-of-signature test jumps to, which the caller binds at the next test.
constexpr int emitter::arg_step(unsigned i, int next, int entry, int final_stop) {
  const bool last = i + 1 == p_.walked_args;
  const bool tested = s_.arg_id[i] != slots::none;
  const int strl = a.label();
  const int nonstr = a.label();
  const int end = a.label();
  const int stop = a.label();  // one long jump per step, shared by its tests
  ldx(s_.send);
  ld(s_.s);
  a.bind(entry);
  a.jump(op::jge_x, 0, end, bpf_assembler::next);
  a.op(op::tax_, 0);
  a.op(op::add_k, 1);
  st(s_.s);
  a.op(op::ldb_ind, 0);  // the type code, at X = the old signature position
  st(s_.c);
  a.jump(op::jeq_k, 's', strl, bpf_assembler::next);
  a.jump(op::jeq_k, 'o', strl, bpf_assembler::next);
  if (last) {
    a.ja(nonstr);
  } else {
    const int g = a.label(), y = a.label(), w2 = a.label(), w4 = a.label(), w8 = a.label(), arr = a.label();
    const int dict = a.label(), a8 = a.label(), a4 = a.label(), a2 = a.label(), a1 = a.label(), addn = a.label();
    a.jump(op::jeq_k, 'g', g, bpf_assembler::next);
    a.jump(op::jeq_k, 'y', y, bpf_assembler::next);
    for (char c : {'b', 'i', 'u', 'h'}) a.jump(op::jeq_k, static_cast<std::uint32_t>(c), w4, bpf_assembler::next);
    for (char c : {'n', 'q'}) a.jump(op::jeq_k, static_cast<std::uint32_t>(c), w2, bpf_assembler::next);
    for (char c : {'x', 't', 'd'}) a.jump(op::jeq_k, static_cast<std::uint32_t>(c), w8, bpf_assembler::next);
    a.jump(op::jeq_k, 'a', arr, stop);  // a struct or a variant: stop here
    // SIGNATURE: u8 length, text, NUL.
    a.bind(g);
    ldx(s_.o);
    a.op(op::ldb_ind, 0);
    a.op(op::add_x, 0);
    a.op(op::add_k, 2);
    st(s_.o);
    a.ja(nonstr);
    // Fixed sizes.
    a.bind(y);
    ld(s_.o);
    a.op(op::add_k, 1);
    st(s_.o);
    a.ja(nonstr);
    a.bind(w2);
    ld(s_.o);
    align(2);
    a.op(op::add_k, 2);
    st(s_.o);
    a.ja(nonstr);
    a.bind(w4);
    ld(s_.o);
    align(4);
    a.op(op::add_k, 4);
    st(s_.o);
    a.ja(nonstr);
    a.bind(w8);
    ld(s_.o);
    align(8);
    a.op(op::add_k, 8);
    st(s_.o);
    a.ja(nonstr);
    // An array: u32 byte count, padding to the element's alignment (even when empty), elements.
    a.bind(arr);
    a.op(op::ldb_ind, 1);  // the element type
    a.jump(op::jeq_k, '{', dict, bpf_assembler::next);
    a.jump(op::jeq_k, '(', stop, bpf_assembler::next);
    a.jump(op::jeq_k, 'a', stop, bpf_assembler::next);
    st(s_.c);
    ld(s_.s);
    a.op(op::add_k, 1);
    st(s_.s);
    array_length();
    st(s_.o);
    ld(s_.c);
    for (char c : {'x', 't', 'd'}) a.jump(op::jeq_k, static_cast<std::uint32_t>(c), a8, bpf_assembler::next);
    for (char c : {'b', 'i', 'u', 'h', 's', 'o'}) {
      a.jump(op::jeq_k, static_cast<std::uint32_t>(c), a4, bpf_assembler::next);
    }
    for (char c : {'n', 'q'}) a.jump(op::jeq_k, static_cast<std::uint32_t>(c), a2, bpf_assembler::next);
    a.ja(a1);  // y, g, v
    a.bind(a8);
    ld(s_.o);
    align(8);
    a.ja(addn);
    a.bind(a4);
    ld(s_.o);
    align(4);
    a.ja(addn);
    a.bind(a2);
    ld(s_.o);
    align(2);
    a.ja(addn);
    a.bind(a1);
    ld(s_.o);
    a.bind(addn);
    ldx(s_.al);
    a.op(op::add_x, 0);
    st(s_.o);
    a.ja(nonstr);
    // A dict a{KV}: the key is basic; a single-character value makes the signature 5 long.
    a.bind(dict);
    a.op(op::ldb_ind, 3);
    a.jump(op::jeq_k, '(', stop, bpf_assembler::next);
    a.jump(op::jeq_k, 'a', stop, bpf_assembler::next);
    ld(s_.s);
    a.op(op::add_k, 4);
    st(s_.s);
    array_length();
    align(8);
    ldx(s_.al);
    a.op(op::add_x, 0);
    st(s_.o);
    a.ja(nonstr);
  }
  // A string or an object path: u32 length, text, NUL.
  a.bind(strl);
  ld(s_.o);
  align(4);
  st(s_.o);
  a.op(op::tax_, 0);
  if (tested) {
    load_len16(0, stop, s_.al);  // 64 KiB or more (little-endian): stop, this argument stays wild
    st(s_.al);
    arg_string_tests(i);
  } else {
    load_len32(0, s_.al);
    st(s_.al);
  }
  if (!last) {
    ldx(s_.al);
    ld(s_.o);
    a.op(op::add_x, 0);
    a.op(op::add_k, 4 + 1);
    st(s_.o);
  }
  a.ja(next);
  // Any other type: present, and no string.
  a.bind(nonstr);
  if (tested) {
    a.op(op::ld_imm, id_other);
    st(s_.arg_id[i]);
    clear_arg_bits(i);
  }
  a.ja(next);
  a.bind(stop);
  a.ja(final_stop);
  return end;
}

// X = the argument's length word, its text at X + 4, its length in M[al], its type code in M[c].
constexpr void emitter::arg_string_tests(unsigned i) {
  const int obj = a.label();
  const int paths = a.label();
  clear_arg_bits(i);
  ld(s_.c);
  a.jump(op::jeq_k, 'o', obj, bpf_assembler::next);
  for (std::size_t b = 0; b < p_.bits.size(); ++b) {
    if (p_.bits[b].kind == bit_kind::arg0namespace && p_.bits[b].arg == i) {
      namespace_bit(p_.bits[b].value, '.', 4, s_.al, static_cast<std::uint32_t>(b));
    }
  }
  if (!p_.args[i].empty()) {
    const int done = a.label();
    const int other = a.label();
    ld(s_.al);
    string_switch(p_.args[i], 4, s_.arg_id[i], done, other, arg_leaf_[i], p_.chunks);
    a.bind(other);
    a.op(op::ld_imm, id_other);
    st(s_.arg_id[i]);
    a.bind(done);
  } else {
    a.op(op::ld_imm, id_other);
    st(s_.arg_id[i]);
  }
  a.ja(paths);
  // An object path: argNpath tests only; argN and arg0namespace want a STRING.
  a.bind(obj);
  a.op(op::ld_imm, id_other);
  st(s_.arg_id[i]);
  a.bind(paths);
  for (std::size_t b = 0; b < p_.bits.size(); ++b) {
    if (p_.bits[b].kind == bit_kind::arg_path && p_.bits[b].arg == i) {
      arg_path_bit(p_.bits[b].value, static_cast<std::uint32_t>(b));
    }
  }
}

// argNpath: equal, or the argument is a prefix of the value ending in '/', or the value ends in
// '/' and is a prefix of the argument. The candidates are the value's prefixes that end in '/',
// each of one exact length, and the value itself.
constexpr void emitter::arg_path_bit(std::string_view expected, std::uint32_t bit) {
  const int set = a.label();
  const int skip = a.label();
  const std::size_t n = expected.size();
  auto candidate = [&](std::size_t len, bool or_longer) {
    const int next = a.label();
    ld(s_.al);
    a.jump(or_longer ? op::jge_k : op::jeq_k, static_cast<std::uint32_t>(len), bpf_assembler::next, next);
    compare(expected, len, 4, next);
    a.ja(set);
    a.bind(next);
  };
  for (std::size_t k = 1; k < n; ++k) {
    if (expected[k - 1] == '/') candidate(k, false);
  }
  candidate(n, n > 0 && expected[n - 1] == '/');
  a.ja(skip);
  a.bind(set);
  set_bit(bit);
  a.bind(skip);
}

constexpr void emitter::final_rules() {
  for (const rule_plan& r : p_.rules) {
    if (!r.live || r.args.empty()) continue;
    const int fail = a.label();
    ld(s_.alive[r.alive_bit / 32]);
    a.jump(op::jset_k, 1u << (r.alive_bit % 32), bpf_assembler::next, fail);
    for (const arg_check& c : r.args) {
      if (c.exact) {
        const int ok = a.label();
        ld(s_.arg_id[c.index]);
        a.jump(op::jeq_k, leaf_id(arg_leaf_[c.index], c.id), ok, bpf_assembler::next);
        a.jump(op::jeq_k, id_wild, ok, fail);
        a.bind(ok);
      } else {
        ld(s_.bits[c.bit / 32]);
        a.jump(op::jset_k, 1u << (c.bit % 32), bpf_assembler::next, fail);
      }
    }
    a.op(op::ret_k, bpf::accept);
    a.bind(fail);
  }
  a.op(op::ret_k, bpf::reject);
}

}  // namespace detail::bpfgen
MCBUS_NAMESPACE_END
