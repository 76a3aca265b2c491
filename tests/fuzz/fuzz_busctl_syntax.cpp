// Fuzz target: the `busctl call` argument syntax that mcbus-call reads (tools/common/busctl_syntax.hpp).
//
// The input is a signature on the first line and one argument per following line. An invalid
// signature is skipped, as mcbus-call refuses it before parsing. Otherwise the arguments either
// fail with a reason, or give one value per complete type whose types spell the signature. Values
// that the writer accepts make a method call that parses back, with the same values; the writer
// may refuse only strings that are not UTF-8 or hold a NUL, which the parser passes on as given.
#include "../../tools/common/busctl_syntax.hpp"

#include <mcbus/wire/message.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

[[noreturn]] void die(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "fuzz_busctl_syntax: %s%s%s\n", what, detail.empty() ? "" : ": ", detail.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::size_t eol = text.find('\n');
  const std::string signature(text.substr(0, eol));
  if (mcbus::validate_signature(signature)) return 0;

  std::vector<std::string> tokens;
  for (std::size_t at = eol; at != std::string_view::npos && at < text.size();) {
    const std::size_t next = text.find('\n', at + 1);
    tokens.emplace_back(text.substr(at + 1, next == std::string_view::npos ? std::string_view::npos : next - at - 1));
    at = next;
  }

  mcbus_tools::busctl_parser parser(tokens);
  std::vector<mcbus::value> values;
  if (!parser.parse_all(signature, values)) {
    if (parser.error().empty()) die("failure without a reason");
    return 0;
  }
  std::string types;
  for (const mcbus::value& v : values) types += v.type();
  if (types != signature) die("values spell another signature", types + " for " + signature);

  static const auto path = mcbus::object_path_view::from("/org/mcbus/Fuzz");
  static const auto iface = mcbus::interface_name::from("org.mcbus.Fuzz");
  static const auto member = mcbus::member_name::from("Call");
  mcbus::message call = mcbus::message::method_call(mcbus::bus_name{}, *path, *iface, *member);
  call.append_with(signature, [&](mcbus::writer& w) {
    for (const mcbus::value& v : values) v.write(w);
  });
  if (call.err()) {
    const mcbus::errc c = call.err().code();
    if (c != mcbus::errc::bad_utf8 && c != mcbus::errc::string_has_nul)
      die("the writer refused parsed values", call.err().message());
    return 0;
  }
  auto view = call.view();
  if (!view) die("the call does not parse back", view.error().message());
  mcbus::reader body = view->body();
  const std::vector<mcbus::value> back = mcbus::value::read_all(body, signature);
  if (body.err()) die("the body does not read back", body.err().message());
  if (back != values) die("the body reads back other values");
  return 0;
}
