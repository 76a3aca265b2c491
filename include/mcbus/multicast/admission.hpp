// mcbus/multicast: who may join a publisher's group, and with which rules.
//
// The bus vouches for a member's credentials (GetConnectionCredentials); an admission policy
// allows, denies, or restricts it. A restriction is ANDed into each of the member's rules key by
// key, so that the kernel filter enforces it.
#pragma once

#include <mcbus/match.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

MCBUS_NAMESPACE_BEGIN
namespace multicast {

// What the bus says about a member (org.freedesktop.DBus.GetConnectionCredentials).
struct credentials {
  std::string unique_name;
  std::optional<std::uint32_t> uid;
  std::optional<std::uint32_t> pid;
  std::vector<std::uint32_t> gids;
};

// An admission policy's answer: allow, deny, or restrict (the member receives only what its rules
// AND one of the restriction rules accept).
struct admission {
  enum class verdict { allow, deny, restrict };
  verdict decision = verdict::allow;
  std::string reason;
  std::vector<std::string> restrict_rules;
  // Rules with eavesdrop='true', or a destination= other than the member itself, are refused
  // unless the policy says yes here (the bus's own policy forbids eavesdropping to most).
  bool eavesdrop = false;

  static admission allow() { return {}; }
  static admission deny(std::string why) { return {verdict::deny, std::move(why), {}, false}; }
  static admission restrict_to(std::vector<std::string> rules) {
    return {verdict::restrict, {}, std::move(rules), false};
  }
  admission& allow_eavesdropping() {
    eavesdrop = true;
    return *this;
  }
};

namespace detail {

// The conjunction of a member's rule and a restriction, key by key. Where both constrain a key
// and one test implies the other (a path inside a namespace, a namespace inside a namespace, a
// string inside an arg0namespace), the narrower one is kept; where they cannot both hold, no
// message can satisfy the pair and nothing is returned. Two tests that one rule cannot state
// together (two senders that may be a name and its owner, argNpath against another argN test)
// keep the restriction's: the filter then passes a little more than the conjunction, never more
// than the restriction allows, and the member's exact matching takes the rest away.
inline std::optional<match_rule> restrict_rule(const match_rule& wanted, const match_rule& allowed) {
  using opt = std::optional<std::string_view>;
  match_rule out;
  // Equality keys: equal or absent on one side, or no message has both values.
  bool disjoint = false;
  auto both = [&](opt a, opt b) -> opt {
    if (a && b && *a != *b) disjoint = true;
    return b ? b : a;
  };
  if (wanted.type() && allowed.type() && *wanted.type() != *allowed.type()) return std::nullopt;
  if (auto t = allowed.type() ? allowed.type() : wanted.type()) (void)out.set_type(*t);
  const opt sender = allowed.sender() ? allowed.sender() : wanted.sender();
  const opt interface = both(wanted.interface(), allowed.interface());
  const opt member = both(wanted.member(), allowed.member());
  const opt destination = both(wanted.destination(), allowed.destination());
  if (disjoint) return std::nullopt;
  if (sender) (void)out.set_sender(*sender);
  if (interface) (void)out.set_interface(*interface);
  if (member) (void)out.set_member(*member);
  if (destination) (void)out.set_destination(*destination);
  (void)out.set_eavesdrop(wanted.eavesdrop() && allowed.eavesdrop());

  // path is a point and path_namespace a subtree: keep the narrower, or nothing if they miss.
  const opt wp = wanted.path(), wn = wanted.path_namespace(), ap = allowed.path(), an = allowed.path_namespace();
  if ((wp && ap && *wp != *ap) || (wp && an && !match_rule::in_path_namespace(*wp, *an)) ||
      (ap && wn && !match_rule::in_path_namespace(*ap, *wn)) ||
      (wn && an && !match_rule::in_path_namespace(*wn, *an) && !match_rule::in_path_namespace(*an, *wn))) {
    return std::nullopt;
  }
  if (wp || ap) {
    (void)out.set_path(wp ? *wp : *ap);
  } else if (wn && an) {
    (void)out.set_path_namespace(match_rule::in_path_namespace(*wn, *an) ? *wn : *an);
  } else if (wn || an) {
    (void)out.set_path_namespace(wn ? *wn : *an);
  }

  for (unsigned index = 0; index <= match_rule::max_arg; ++index) {
    const std::optional<match_arg> w = wanted.find_arg(index), a = allowed.find_arg(index);
    if (!w && !a) continue;
    match_arg pick = a ? *a : *w;
    if (w && a) {
      using k = match_arg_kind;
      const auto within = [](const match_arg& x, const match_arg& ns) {  // x's matches all lie in ns
        return match_rule::arg_namespace_matches(x.value, ns.value);
      };
      if (w->kind == k::string && a->kind == k::string) {
        if (w->value != a->value) return std::nullopt;
      } else if (w->kind != k::path && a->kind != k::path) {  // string or namespace, one of each or both
        const bool w_in_a = a->kind == k::arg0namespace && within(*w, *a);
        const bool a_in_w = w->kind == k::arg0namespace && within(*a, *w);
        if (!w_in_a && !a_in_w) return std::nullopt;
        pick = w_in_a ? *w : *a;
      }
    }
    (void)out.add_arg(index, pick.kind, pick.value);
  }
  return out;
}

}  // namespace detail

}  // namespace multicast
MCBUS_NAMESPACE_END
