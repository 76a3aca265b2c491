// mcbus/match: the part of the BPF program that turns header fields (and argument strings) into
// class ids and namespace bits. Included by bpf_codegen.hpp.
//
// A field's text is compared with the rules' constants by a decision tree: first on its length,
// then on successive 4-, 2- and 1-byte chunks, each load read once and branched on every value the
// remaining constants have there. A leaf stores the constant's id.
#pragma once

#include <mcbus/match/detail/bpf_codegen.hpp>

MCBUS_NAMESPACE_BEGIN
namespace detail::bpfgen {

// A = the text's length, X its field's start, text at X + base. Stores the class id in `cell`.
// `leaf` maps each constant to the id the program stores for it: itself, or, where `cap` stops
// the comparison early, the first constant of its leaf (which then stands for all of them).
constexpr void emitter::string_switch(const dict& d, std::uint32_t base, std::uint32_t cell, int done, int other,
                                      cvec<std::uint32_t>& leaf, unsigned cap) {
  leaf.clear();
  for (std::size_t i = 0; i < d.values.size(); ++i) leaf.push_back(first_const + static_cast<std::uint32_t>(i));
  cvec<std::size_t> lengths;
  for (std::string_view v : d.values) {
    bool seen = false;
    for (std::size_t l : lengths) seen = seen || l == v.size();
    if (!seen) lengths.push_back(v.size());
  }
  cvec<int> groups;
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    groups.push_back(a.label());
    a.jump(op::jeq_k, static_cast<std::uint32_t>(lengths[i]), groups[i],
           i + 1 == lengths.size() ? other : bpf_assembler::next);
  }
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    a.bind(groups[i]);
    cvec<std::size_t> members;
    for (std::size_t k = 0; k < d.values.size(); ++k) {
      if (d.values[k].size() == lengths[i]) members.push_back(k);
    }
    trie(d, members, 0, 0, base, cell, done, other, leaf, cap);
  }
}

constexpr void emitter::trie(const dict& d, const cvec<std::size_t>& members, std::size_t at, unsigned depth,
                             std::uint32_t base, std::uint32_t cell, int done, int other, cvec<std::uint32_t>& leaf,
                             unsigned cap) {
  const std::string_view first = d.values[members[0]];
  if (at >= first.size() || depth >= cap) {
    const std::uint32_t id = first_const + static_cast<std::uint32_t>(members[0]);
    for (std::size_t m : members) leaf[m] = id;
    a.op(op::ld_imm, id);
    st(cell);
    a.ja(done);
    return;
  }
  const std::size_t size = chunk_size(first.size() - at);
  a.op(chunk_load(size), base + static_cast<std::uint32_t>(at));
  cvec<std::uint32_t> values;
  for (std::size_t m : members) {
    const std::uint32_t v = chunk_value(d.values[m], at, size);
    bool seen = false;
    for (std::uint32_t u : values) seen = seen || u == v;
    if (!seen) values.push_back(v);
  }
  cvec<int> branches;
  for (std::size_t i = 0; i < values.size(); ++i) {
    branches.push_back(a.label());
    a.jump(op::jeq_k, values[i], branches[i], i + 1 == values.size() ? other : bpf_assembler::next);
  }
  for (std::size_t i = 0; i < values.size(); ++i) {
    a.bind(branches[i]);
    cvec<std::size_t> sub;
    for (std::size_t m : members) {
      if (chunk_value(d.values[m], at, size) == values[i]) sub.push_back(m);
    }
    trie(d, sub, at + size, depth + 1, base, cell, done, other, leaf, cap);
  }
}

// The id the program stores for constant `id` of a field (see string_switch).
constexpr std::uint32_t emitter::leaf_id(const cvec<std::uint32_t>& leaf, std::uint32_t id) const {
  return id >= first_const && id - first_const < leaf.size() ? leaf[id - first_const] : id;
}

// A namespace test: the text at X + base, of length M[len_cell], equals ns or starts with ns
// and then `sep`. Sets `bit` when it holds.
constexpr void emitter::namespace_bit(std::string_view ns, char sep, std::uint32_t base, std::uint32_t len_cell,
                                      std::uint32_t bit) {
  const int skip = a.label();
  const int set = a.label();
  ld(len_cell);
  a.jump(op::jge_k, static_cast<std::uint32_t>(ns.size()), bpf_assembler::next, skip);
  compare(ns, ns.size(), base, skip);
  ld(len_cell);
  a.jump(op::jeq_k, static_cast<std::uint32_t>(ns.size()), set, bpf_assembler::next);
  a.op(op::ldb_ind, base + static_cast<std::uint32_t>(ns.size()));
  a.jump(op::jeq_k, static_cast<unsigned char>(sep), set, skip);
  a.bind(set);
  set_bit(bit);
  a.bind(skip);
}

constexpr const dict& emitter::field_dict(unsigned f) const {
  switch (f) {
    case f_path: return p_.path;
    case f_interface: return p_.interface;
    case f_member: return p_.member;
    case f_destination: return p_.destination;
    default: return p_.sender;
  }
}

constexpr void emitter::field_ids(unsigned f) {
  const std::uint32_t cell = s_.field[f];
  if (cell == slots::none) return;
  const dict& d = field_dict(f);
  const bool has_bits = f == f_path && [&] {
    for (const bit_pred& b : p_.bits) {
      if (b.kind == bit_kind::path_namespace) return true;
    }
    return false;
  }();
  const bool split = f == f_destination && p_.wk_split;
  if (d.empty() && !has_bits && !split) return;  // the cell's start offset already says "present"
  const int done = a.label();
  const int other = a.label();
  ld(cell);
  a.jump(op::jeq_k, 0, done, bpf_assembler::next);
  a.op(op::tax_, 0);
  load_len16(4, bpf_assembler::next, s_.tmp);  // the walk has already accepted anything longer
  if (has_bits) {
    st(s_.tmp);
    for (std::size_t i = 0; i < p_.bits.size(); ++i) {
      if (p_.bits[i].kind == bit_kind::path_namespace) {
        namespace_bit(p_.bits[i].value, '/', 8, s_.tmp, static_cast<std::uint32_t>(i));
      }
    }
    ld(s_.tmp);
  }
  if (!d.empty()) {
    // DESTINATION and SENDER constants decide classes: compare them whole.
    const unsigned cap = f == f_destination || f == f_sender ? 1024u : p_.chunks;
    string_switch(d, 8, cell, done, other, leaf_[f], cap);
  } else {
    a.ja(other);
  }
  a.bind(other);
  if (split) {
    const int unique = a.label();
    a.op(op::ldb_ind, 8);
    a.jump(op::jeq_k, ':', unique, bpf_assembler::next);
    a.op(op::ld_imm, id_well_known);
    st(cell);
    a.ja(done);
    a.bind(unique);
  }
  a.op(op::ld_imm, id_other);
  st(cell);
  a.bind(done);
}

}  // namespace detail::bpfgen
MCBUS_NAMESPACE_END
