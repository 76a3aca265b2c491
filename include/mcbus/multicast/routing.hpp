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

  // Whether `rule` is filed under a key, or tested on every signal.
  static bool keyed(const match_rule& rule) {
    if (auto a = rule.find_arg(0)) {
      if (a->kind == match_arg_kind::string || a->kind == match_arg_kind::arg0namespace) return true;
    }
    return rule.path() || rule.member() || rule.interface();
  }

  void add(route r, const match_rule& rule) {
    if (auto a = rule.find_arg(0)) {
      if (a->kind == match_arg_kind::string) return arg0_[std::string(a->value)].push_back(r);
      if (a->kind == match_arg_kind::arg0namespace) return arg0_namespace_[std::string(a->value)].push_back(r);
    }
    if (auto p = rule.path()) return path_[std::string(*p)].push_back(r);
    if (auto m = rule.member()) return member_[std::string(*m)].push_back(r);
    if (auto i = rule.interface()) return interface_[std::string(*i)].push_back(r);
    any_.push_back(r);
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
