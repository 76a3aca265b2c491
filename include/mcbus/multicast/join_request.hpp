// mcbus/multicast: a Join request as it arrives, read with bounds before anything is kept.
//
// The publisher reads a Join body (as rules, u flags) twice: first to count the rules and their
// bytes on the wire, refusing a caller that sends more than the limits before anything is
// allocated for them (or the caller's credentials are asked for); then, within the limits, to copy
// the rules' text. Parsing the rules waits until the admission policy has let the caller in.
#pragma once

#include <mcbus/connection/call_error.hpp>
#include <mcbus/multicast/protocol.hpp>
#include <mcbus/wire/message.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

MCBUS_NAMESPACE_BEGIN
namespace multicast {

struct join_limits {
  std::size_t max_rules = 512;
  std::size_t max_bytes = 64 * 1024;  // the rules' text, all together
};

struct join_request {
  std::vector<std::string> rules;
  std::uint32_t flags = 0;
};

inline call_result<join_request> read_join_request(const message_view& m, const join_limits& limits) {
  reader r = m.body();
  std::size_t count = 0, bytes = 0;
  const reader::array_cursor all = r.open_array("s");
  while (r.in_array(all)) {
    const std::string_view t = r.get_string();
    bytes += t.size();
    if (++count > limits.max_rules || bytes > limits.max_bytes) {
      return call_error(errors::invalid_rules, "Join carries more than " + std::to_string(limits.max_rules) +
                                                   " rules or " + std::to_string(limits.max_bytes) + " bytes of them");
    }
  }
  r.close_array(all);
  join_request out;
  out.flags = r.get_fixed<std::uint32_t>();
  if (!r) return call_error(errors::invalid_rules, "a bad Join body: " + r.err().message());
  if (count == 0) return call_error(errors::invalid_rules, "Join needs at least one rule");
  if (out.flags & ~known_join_flags) return call_error(errors::unsupported_flags, "unknown Join flags");
  reader again = m.body();
  const reader::array_cursor list = again.open_array("s");
  out.rules.reserve(count);
  while (again.in_array(list)) out.rules.emplace_back(again.get_string());
  return out;
}

}  // namespace multicast
MCBUS_NAMESPACE_END
