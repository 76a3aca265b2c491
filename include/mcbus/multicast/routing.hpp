// mcbus/multicast: the publisher's routing index.
//
// A publisher must send each signal only to the members whose rules can match it; testing every
// rule of every member on every signal costs O(members). The index files each rule under its most
// selective key (arg0, an arg0namespace prefix, the path, the member name, or the interface) so
// that a signal looks up only the rules that could match it, and then tests those exactly. Rules
// with none of those keys are tested for every signal: at most publisher_options::
// max_unkeyed_rules_per_member of them per member (bench/routing.cpp measures what they cost).
#pragma once

#include <mcbus/match.hpp>
#include <mcbus/wire/message.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

MCBUS_NAMESPACE_BEGIN
namespace multicast::detail {

struct route {
  std::uint32_t member;
  std::uint32_t rule;  // index into the member's rules
};

class routing_index {
 public:
  void clear() {
    arg0_.clear();
    arg0_namespace_.clear();
    path_.clear();
    member_.clear();
    interface_.clear();
    any_.clear();
  }

  // The table a rule is filed under, most selective first. The publisher's limit on unkeyed
  // rules and the index must agree on which rules are unkeyed, so both ask this one function.
  enum class key_kind : std::uint8_t { arg0, arg0_namespace, path, member, interface, none };
  struct routing_key {
    key_kind kind = key_kind::none;
    std::string_view value;
  };

  static routing_key key_of(const match_rule& rule) {
    if (auto a = rule.find_arg(0)) {
      if (a->kind == match_arg_kind::string) return {key_kind::arg0, a->value};
      if (a->kind == match_arg_kind::arg0namespace) return {key_kind::arg0_namespace, a->value};
    }
    if (auto p = rule.path()) return {key_kind::path, *p};
    if (auto m = rule.member()) return {key_kind::member, *m};
    if (auto i = rule.interface()) return {key_kind::interface, *i};
    return {};
  }

  static bool keyed(const match_rule& rule) { return key_of(rule).kind != key_kind::none; }

  void add(route r, const match_rule& rule) {
    const routing_key key = key_of(rule);
    if (key.kind == key_kind::none) return any_.push_back(r);
    table_for(key.kind)[std::string(key.value)].push_back(r);
  }

  // Calls fn(route) for every rule that may match `m`; each rule at most once.
  template <class Fn>
  void candidates(const message_view& m, Fn&& fn) const {
    for (const route& r : any_) fn(r);
    const message_header& h = m.header();
    visit(member_, h.member, fn);
    visit(interface_, h.interface, fn);
    visit(path_, h.path, fn);
    if (arg0_.empty() && arg0_namespace_.empty()) return;
    if (h.signature.empty() || h.signature[0] != 's') return;
    reader body = m.body();
    const std::string_view arg0 = body.get_string();
    if (body.err()) return;
    visit(arg0_, arg0, fn);
    if (arg0_namespace_.empty()) return;
    // arg0namespace='a.b' matches "a.b" and "a.b.anything": look up every dotted prefix.
    for (std::size_t dot = arg0.find('.'); dot != std::string_view::npos; dot = arg0.find('.', dot + 1)) {
      visit(arg0_namespace_, arg0.substr(0, dot), fn);
    }
    visit(arg0_namespace_, arg0, fn);
  }

 private:
  using table = std::unordered_map<std::string, std::vector<route>>;

  table& table_for(key_kind kind) {
    switch (kind) {
      case key_kind::arg0: return arg0_;
      case key_kind::arg0_namespace: return arg0_namespace_;
      case key_kind::path: return path_;
      case key_kind::member: return member_;
      case key_kind::interface:
      case key_kind::none: break;  // add() files unkeyed rules in any_, never here
    }
    return interface_;
  }

  // Heterogeneous lookup needs C++20's transparent hashing; a short key copy is cheaper to write.
  template <class Fn>
  static void visit(const table& t, std::string_view key, Fn& fn) {
    if (t.empty()) return;
    thread_local std::string scratch;
    scratch.assign(key);
    auto it = t.find(scratch);
    if (it == t.end()) return;
    for (const route& r : it->second) fn(r);
  }

  table arg0_;
  table arg0_namespace_;
  table path_;
  table member_;
  table interface_;
  std::vector<route> any_;
};

}  // namespace multicast::detail
MCBUS_NAMESPACE_END
