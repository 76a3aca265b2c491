// mcbus/match: what the BPF program has to decide, worked out from the rules before any code is
// emitted.
//
// Each header field the rules test gets a dictionary of the constants they compare it with; the
// program turns the field into a class id (0 absent, 1 some other value, 3+ one of the constants)
// and each rule then tests ids. Predicates that are not exclusive (path_namespace, argNpath,
// arg0namespace) get a bit each instead. DESTINATION and SENDER keys are decided per class here,
// at compile time, through the same functions match_rule::matches() uses.
#pragma once

#include <mcbus/match/context.hpp>
#include <mcbus/match/detail/cvec.hpp>
#include <mcbus/match/rule.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

MCBUS_NAMESPACE_BEGIN
namespace detail::bpfgen {

// Class ids a field's scratch cell holds once the program has looked at the field.
inline constexpr std::uint32_t id_absent = 0;
inline constexpr std::uint32_t id_other = 1;       // present, none of the constants (unique name for DESTINATION)
inline constexpr std::uint32_t id_wild = 2;        // arguments: not reached, so unknown (widened)
inline constexpr std::uint32_t id_well_known = 2;  // DESTINATION: a well-known name, none of the constants
inline constexpr std::uint32_t first_const = 3;

struct dict {
  cvec<std::string_view> values;

  constexpr std::uint32_t add(std::string_view s) {
    if (std::uint32_t id = find(s)) return id;
    values.push_back(s);
    return first_const + static_cast<std::uint32_t>(values.size() - 1);
  }
  constexpr std::uint32_t find(std::string_view s) const {
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (values[i] == s) return first_const + static_cast<std::uint32_t>(i);
    }
    return 0;
  }
  constexpr bool empty() const { return values.empty(); }
};

enum class bit_kind : std::uint8_t { path_namespace, arg_path, arg0namespace };

struct bit_pred {
  bit_kind kind = bit_kind::path_namespace;
  std::uint8_t arg = 0;
  std::string_view value;
};

struct arg_check {
  std::uint8_t index = 0;
  bool exact = false;  // an id test; else a bit test
  std::uint32_t id = 0;
  std::uint32_t bit = 0;
};

struct rule_plan {
  bool live = true;  // false: no message can match (an empty set of allowed destinations)
  bool has_type = false;
  std::uint8_t type = 0;
  std::uint32_t interface = 0;  // required id, 0 for none
  std::uint32_t member = 0;
  std::uint32_t path = 0;
  bool path_present = false;  // path_namespace='/'
  std::int32_t path_bit = -1;
  std::uint8_t n_sender = 0;
  std::uint32_t sender[2] = {};
  bool check_dest = false;
  cvec<std::uint32_t> dest_allowed;  // ids, when check_dest
  cvec<arg_check> args;
  std::uint32_t alive_bit = 0;  // index among the rules that test arguments
};

// How far the compiler may go; the ladder in bpf.hpp lowers these until the program fits.
struct level {
  unsigned max_args = 8;
  unsigned header_fields = 9;
  // Chunks (4, 2 or 1 bytes) of a constant the program compares, after its length: fewer make a
  // smaller program that takes any text of the same length and the same first chunks.
  unsigned chunks = 1024;
  bool bits = true;
  bool path = true;
  bool member = true;
  bool sender = true;
  bool interface = true;
  bool destination = true;
};

struct plan_options {
  std::string_view receiver;
  std::span<const name_owner> owners;
  bool owners_complete = false;
};

struct plan {
  cvec<rule_plan> rules;
  dict interface, member, path, sender, destination;
  dict args[8];
  cvec<bit_pred> bits;
  unsigned walked_args = 0;    // K: body arguments the program walks
  unsigned chunks = 1024;      // level::chunks, for interface, member, path and argument constants
  unsigned header_fields = 9;  // fields walked before widening
  bool wk_split = false;       // a well-known DESTINATION not among the constants is widened
  bool exact = true;           // nothing dropped at compile time
  bool accept_all = false;     // some rule accepts everything: the program is one `ret`
  std::size_t arg_rules = 0;

  constexpr bool need_sig() const { return arg_rules > 0; }
  constexpr bool arg_has_checks(unsigned i) const {
    if (!args[i].empty()) return true;
    for (const bit_pred& b : bits) {
      if (b.kind != bit_kind::path_namespace && b.arg == i) return true;
    }
    return false;
  }
};

constexpr std::uint32_t add_bit(plan& p, bit_kind kind, std::uint8_t arg, std::string_view value) {
  for (std::size_t i = 0; i < p.bits.size(); ++i) {
    if (p.bits[i].kind == kind && p.bits[i].arg == arg && p.bits[i].value == value)
      return static_cast<std::uint32_t>(i);
  }
  p.bits.push_back(bit_pred{kind, arg, value});
  return static_cast<std::uint32_t>(p.bits.size() - 1);
}

constexpr std::string_view table_owner(std::span<const name_owner> t, std::string_view name) {
  for (const name_owner& e : t) {
    if (e.name == name) return e.owner;
  }
  return {};
}

// Builds the plan for one level of the widening ladder.
constexpr void build_plan(plan& p, std::span<const match_rule> rules, const plan_options& o, const level& lv) {
  const name_lookup owners(o.owners);
  const match_context ctx{o.receiver, owners};
  p.header_fields = lv.header_fields < 9 ? lv.header_fields : 9;
  p.chunks = lv.chunks;

  // How many body arguments are worth walking.
  unsigned wanted = 0;
  for (const match_rule& r : rules) {
    for (std::size_t i = 0; i < r.arg_count(); ++i) {
      if (r.arg(i).index + 1 > wanted) wanted = r.arg(i).index + 1;
    }
  }
  p.walked_args = wanted < lv.max_args ? wanted : lv.max_args;
  if (p.walked_args > 8) p.walked_args = 8;

  // The destination constants first: each rule's allowed set refers to all of them.
  if (lv.destination) {
    if (!o.receiver.empty()) p.destination.add(o.receiver);
    for (const name_owner& e : o.owners) {
      if (!o.receiver.empty() && e.owner == o.receiver) p.destination.add(e.name);
    }
    for (const match_rule& r : rules) {
      const auto d = r.destination();
      if (!d) continue;
      p.destination.add(*d);
      const std::string_view res = match::is_unique_name(*d) ? *d : table_owner(o.owners, *d);
      if (res.empty()) continue;
      p.destination.add(res);
      if (!r.eavesdrop()) continue;
      for (const name_owner& e : o.owners) {
        if (e.owner == res) p.destination.add(e.name);
      }
    }
  }

  for (const match_rule& r : rules) {
    rule_plan rp;
    if (auto t = r.type()) {
      rp.has_type = true;
      rp.type = static_cast<std::uint8_t>(*t);
    }
    if (auto v = r.interface()) {
      if (lv.interface) {
        rp.interface = p.interface.add(*v);
      } else {
        p.exact = false;
      }
    }
    if (auto v = r.member()) {
      if (lv.member) {
        rp.member = p.member.add(*v);
      } else {
        p.exact = false;
      }
    }
    if (auto v = r.path()) {
      if (lv.path) {
        rp.path = p.path.add(*v);
      } else {
        p.exact = false;
      }
    }
    if (auto v = r.path_namespace()) {
      if (*v == "/") {
        rp.path_present = true;
      } else if (lv.bits) {
        rp.path_bit = static_cast<std::int32_t>(add_bit(p, bit_kind::path_namespace, 0, *v));
      } else {
        p.exact = false;
      }
    }
    if (auto s = r.sender()) {
      const std::string_view owner = match::is_unique_name(*s) ? std::string_view() : table_owner(o.owners, *s);
      if (!lv.sender || (!match::is_unique_name(*s) && owner.empty() && !o.owners_complete)) {
        p.exact = false;  // who owns it is not known here: any sender passes
      } else {
        rp.sender[rp.n_sender++] = p.sender.add(*s);
        if (!owner.empty()) rp.sender[rp.n_sender++] = p.sender.add(owner);
      }
    }
    if (lv.destination) {
      // Allowed classes: absent, other unique, other well-known, then each constant.
      const bool no_dest = r.destination_allows(std::nullopt, ctx);
      const bool other_unique = r.eavesdrop() && !r.destination();
      bool other_wk = other_unique;
      if (!o.owners_complete) {
        const bool may_be_addressed =
            !o.receiver.empty() && (!r.destination() || r.destination_allows(o.receiver, ctx));
        other_wk = may_be_addressed || r.eavesdrop();
        if (other_wk != other_unique) p.wk_split = true;
      }
      bool all = no_dest && other_unique && other_wk;
      cvec<std::uint32_t> allowed;
      if (no_dest) allowed.push_back(id_absent);
      if (other_unique) allowed.push_back(id_other);
      if (other_wk) allowed.push_back(id_well_known);
      for (std::size_t i = 0; i < p.destination.values.size(); ++i) {
        if (r.destination_allows(p.destination.values[i], ctx)) {
          allowed.push_back(first_const + static_cast<std::uint32_t>(i));
        } else {
          all = false;
        }
      }
      if (allowed.empty()) rp.live = false;
      if (!all) {
        rp.check_dest = true;
        rp.dest_allowed = allowed;
      }
    } else if (r.destination() || !r.eavesdrop()) {
      p.exact = false;
    }
    for (std::size_t i = 0; i < r.arg_count(); ++i) {
      const match_arg a = r.arg(i);
      if (a.index >= p.walked_args) {
        p.exact = false;
        continue;
      }
      arg_check c;
      c.index = static_cast<std::uint8_t>(a.index);
      if (a.kind == match_arg_kind::string) {
        c.exact = true;
        c.id = p.args[a.index].add(a.value);
      } else if (!lv.bits) {
        p.exact = false;
        continue;
      } else {
        const bit_kind k = a.kind == match_arg_kind::path ? bit_kind::arg_path : bit_kind::arg0namespace;
        c.bit = add_bit(p, k, c.index, a.value);
      }
      rp.args.push_back(c);
    }
    if (!rp.args.empty()) rp.alive_bit = static_cast<std::uint32_t>(p.arg_rules++);
    // A rule with nothing left to test takes every message.
    if (rp.live && !rp.has_type && !rp.interface && !rp.member && !rp.path && !rp.path_present && rp.path_bit < 0 &&
        !rp.n_sender && !rp.check_dest && rp.args.empty()) {
      p.accept_all = true;
    }
    p.rules.push_back(rp);
  }
  auto chunks_of = [](std::size_t n) {
    std::size_t c = 0;
    for (std::size_t at = 0; at < n; at += n - at >= 4 ? 4 : n - at >= 2 ? 2 : 1) ++c;
    return c;
  };
  auto capped = [&](const dict& d) {
    for (std::string_view v : d.values) {
      if (chunks_of(v.size()) > p.chunks) return true;
    }
    return false;
  };
  bool any = capped(p.interface) || capped(p.member) || capped(p.path);
  for (const dict& d : p.args) any = any || capped(d);
  if (any) p.exact = false;
}

}  // namespace detail::bpfgen
MCBUS_NAMESPACE_END
