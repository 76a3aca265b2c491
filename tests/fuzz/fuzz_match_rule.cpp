// Fuzz target: match rule text.
//
// Any input either parses or fails with bad_match_rule at an offset inside the input (or at the
// 1024-byte limit), and the key its message names is a piece of the input. A parsed rule formats
// to canonical text that parses back, in both syntaxes, to an equal rule and formats to the same
// text again; a rule that parses within the length limit parses the same without it. Every parsed
// rule is also judged against a few fixed messages, to run the evaluator over what the parser lets
// through.
#include <mcbus/match.hpp>
#include <mcbus/wire.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

[[noreturn]] void die(const char* what, std::string_view text, const mcbus::error& e = {}) {
  std::fprintf(stderr, "fuzz_match_rule: %s for \"%.*s\"%s%s\n", what, static_cast<int>(text.size()), text.data(),
               e ? ": " : "", e ? e.message().c_str() : "");
  std::abort();
}

const std::vector<std::vector<std::byte>>& messages() {
  static const std::vector<std::vector<std::byte>> all = [] {
    using namespace mcbus;
    std::vector<std::vector<std::byte>> out;
    for (byte_order o : {byte_order::little, byte_order::big}) {
      auto m = message::signal("/org/example/foo", "org.example.Foo", "Changed", o);
      m.set_sender(":1.7");
      m.append(std::string("com.example.backend"), object_path_view::from("/aa/bb/cc").value(), std::string("/aa/"));
      out.push_back(m.to_bytes().value());
      auto u = message::signal("/", "a.b", "X", o);
      u.set_destination(":1.5");
      u.set_sender("org.freedesktop.DBus");
      out.push_back(u.to_bytes().value());
    }
    return out;
  }();
  return all;
}

void check(const mcbus::match_rule& r, std::string_view text, mcbus::match_syntax syntax) {
  using namespace mcbus;
  const std::string canonical = r.to_string();
  for (match_syntax s : {match_syntax::dbus_daemon, match_syntax::specification}) {
    auto back = match_rule::parse(canonical, {.syntax = s, .limit_length = false});
    if (!back) die("canonical text does not parse", canonical, back.error());
    if (!(*back == r)) die("canonical text parses to another rule", canonical);
    if (back->to_string() != canonical) die("canonical text is not stable", canonical);
  }
  if (canonical.size() <= match_rule::max_length && !match_rule::parse(canonical)) {
    die("canonical text within the limit is refused", canonical);
  }
  auto unlimited = match_rule::parse(text, {.syntax = syntax, .limit_length = false});
  if (!unlimited || !(*unlimited == r)) die("the length limit changed the result", text);
  static const name_owner owners[] = {{"org.example.Pub", ":1.7"}};
  for (const auto& bytes : messages()) {
    const auto view = message_view::parse(bytes).value();
    (void)r.matches(view);
    (void)r.matches(view, {":1.5", owners});
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace mcbus;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (match_syntax syntax : {match_syntax::dbus_daemon, match_syntax::specification}) {
    auto r = match_rule::parse(text, {.syntax = syntax});
    if (!r) {
      const error& e = r.error();
      if (e.code() != errc::bad_match_rule) die("error other than bad_match_rule", text, e);
      if (!e.has_offset() || e.offset() > (size > match_rule::max_length ? size : match_rule::max_length)) {
        die("error offset outside the input", text, e);
      }
      if (!e.where()) die("error without a note", text, e);
      // The key named in the message is a piece of the input itself, with no separator in it.
      const std::string_view key = match_rule_error_key(text, e);
      if (!key.empty() && (key.data() < text.data() || key.data() + key.size() > text.data() + text.size())) {
        die("error key outside the input", text, e);
      }
      if (key.find_first_of("=,'") != std::string_view::npos) die("error key holds a separator", text, e);
      continue;
    }
    check(*r, text, syntax);
  }
  return 0;
}
