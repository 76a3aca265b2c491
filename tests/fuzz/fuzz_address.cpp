// Fuzz target: D-Bus address lists.
//
// Any input either parses or fails with bad_address at an offset inside the input. A parsed list
// prints back (to_string) to text that parses to equal addresses, and each address converts to a
// sockaddr or fails with not_supported, without DNS. Escaping any bytes and unescaping the result
// gives the bytes back.
#include <mcbus/io/address.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

[[noreturn]] void die(const char* what, std::string_view text, const mcbus::error& e = {}) {
  std::fprintf(stderr, "fuzz_address: %s for \"%.*s\"%s%s\n", what, static_cast<int>(text.size()), text.data(),
               e ? ": " : "", e ? e.message().c_str() : "");
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  const std::string escaped = mcbus::escape_address_value(text);
  auto unescaped = mcbus::unescape_address_value(escaped);
  if (!unescaped || *unescaped != text) die("escape/unescape round trip failed", text);

  auto list = mcbus::parse_address_list(text);
  if (!list) {
    const auto& e = list.error();
    if (e.code() != mcbus::errc::bad_address) die("error other than bad_address", text, e);
    if (!e.has_offset() || e.offset() > size) die("error offset outside the input", text, e);
    if (!e.where()) die("error without a note", text, e);
    return 0;
  }
  if (list->empty()) die("empty list parsed", text);
  std::string joined;
  for (const auto& a : *list) {
    if (a.offset() >= size) die("address offset outside the input", text);
    if (!joined.empty()) joined += ';';
    joined += a.to_string();
    auto sa = mcbus::to_socket_address(a);
    if (sa) {
      if (sa->length == 0 || sa->length > sizeof(sockaddr_storage)) die("bad sockaddr length", text);
      if (a.kind() == mcbus::address_kind::unsupported) die("sockaddr for an unsupported transport", text);
    } else if (sa.error().code() != mcbus::errc::not_supported) {
      die("to_socket_address failed other than not_supported", text, sa.error());
    }
  }
  auto again = mcbus::parse_address_list(joined);
  if (!again) die("printed list does not parse", joined, again.error());
  if (again->size() != list->size()) die("printed list has another length", joined);
  for (std::size_t i = 0; i < list->size(); ++i) {
    if (!((*list)[i] == (*again)[i])) die("printed address parses to another address", joined);
    if ((*list)[i].kind() != (*again)[i].kind() || (*list)[i].port() != (*again)[i].port())
      die("printed address classifies differently", joined);
  }
  return 0;
}
