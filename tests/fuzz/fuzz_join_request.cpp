// Fuzz target: a Join request as a publisher receives it (multicast/join_request.hpp), then what
// the publisher does with an admitted caller's rules.
//
// The first byte picks the input's form. Odd: the rest is a whole D-Bus message, which must parse
// first (the reader's robustness on the wire). Even: the rest is a Join built from the input, one
// rule per line, with the first four bytes as the flags (the limits and the rule parser).
// Whatever comes in, read_join_request() either refuses with InvalidRules or UnsupportedFlags, or
// returns between one and max_rules rules whose text is at most max_bytes in all, and flags with
// no unknown bit. Each rule that parses is restricted by a fixed policy rule; the conjunction
// must be no wider than the restriction on the keys it states.
#include <mcbus/multicast/admission.hpp>
#include <mcbus/multicast/join_request.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "fuzz_join_request: %s\n", what);
  std::abort();
}

void check(const mcbus::message_view& m) {
  using namespace mcbus;
  const multicast::join_limits limits{8, 512};
  auto request = multicast::read_join_request(m, limits);
  if (!request) {
    const std::string& name = request.error().name();
    if (name != multicast::errors::invalid_rules && name != multicast::errors::unsupported_flags)
      die("a refusal with another error name");
    if (request.error().text().size() > 256) die("a refusal that says too much");
    return;
  }
  if (request->rules.empty() || request->rules.size() > limits.max_rules) die("a rule count outside the limits");
  std::size_t bytes = 0;
  for (const std::string& r : request->rules) bytes += r.size();
  if (bytes > limits.max_bytes) die("more rule bytes than the limit");
  if (request->flags & ~multicast::known_join_flags) die("an unknown flag let through");
  static const match_rule allowed =
      match_rule::parse("type='signal',interface='org.example.Allowed',path_namespace='/org/example'").value();
  for (const std::string& t : request->rules) {
    auto rule = match_rule::parse(t);
    if (!rule) continue;
    auto both = multicast::detail::restrict_rule(*rule, allowed);
    if (!both) continue;
    if (both->interface() != allowed.interface()) die("the restriction's interface was widened");
    if (!both->type() || *both->type() != *allowed.type()) die("the restriction's type was widened");
    const auto inside = [](std::optional<std::string_view> p) {
      return p && (*p == "/org/example" || p->starts_with("/org/example/"));
    };
    if (!inside(both->path()) && !inside(both->path_namespace())) die("the restriction's path was widened");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace mcbus;
  if (size == 0) return 0;
  const auto* bytes = reinterpret_cast<const std::byte*>(data + 1);
  if (data[0] & 1) {
    auto m = message_view::parse(std::span<const std::byte>(bytes, size - 1));
    if (m) check(*m);
    return 0;
  }
  std::uint32_t flags = 0;
  std::size_t at = 1;
  if (size >= 5) {
    std::memcpy(&flags, data + 1, 4);
    at = 5;
  }
  std::vector<std::string> rules;
  const std::string_view text(reinterpret_cast<const char*>(data + at), size - at);
  for (std::size_t start = 0; start <= text.size();) {
    const std::size_t nl = std::min(text.find('\n', start), text.size());
    rules.emplace_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  message join = message::method_call(bus_name::from_unchecked(":1.1"), multicast::path, multicast::interface,
                                      multicast::join_method);
  join.append(rules, flags);
  if (join.err()) return 0;  // a rule that is not valid UTF-8 cannot be sent at all
  join.set_serial(1);
  auto wire = join.to_bytes();
  if (!wire) return 0;
  auto m = message_view::parse(*wire);
  if (!m) die("a Join built by mcbus does not parse");
  check(*m);
  return 0;
}
