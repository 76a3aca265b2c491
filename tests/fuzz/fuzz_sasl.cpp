// Fuzz target: the SASL client state machine fed arbitrary server bytes.
//
// The first byte picks the options (fd negotiation, EXTERNAL form, ANONYMOUS, DBUS_COOKIE_SHA1);
// the rest is the server's stream, cut into reads at lengths taken from the input itself. Whatever
// arrives, the client never sends a command dbus-broker does not know (it would drop us), never
// sends a NUL after the first byte, ends within sasl_max_lines lines, keeps its output
// proportional to its input, reports failures with an offset inside the stream, and only has
// leftover bytes once authenticated. Feeding the same stream in one piece gives the same result.
#include <mcbus/io/sasl.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

namespace {

[[noreturn]] void die(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "fuzz_sasl: %s: \"%.*s\"\n", what, static_cast<int>(detail.size()), detail.data());
  std::abort();
}

mcbus::sasl_options options_from(std::uint8_t bits) {
  mcbus::sasl_options o;
  o.uid = 1000;
  o.negotiate_unix_fd = bits & 1;
  o.external_empty_response = bits & 2;
  o.anonymous = bits & 4;
  o.external = !(bits & 8) || !(bits & 4);
  if (bits & 16)
    o.cookies = [](std::string_view context, std::string_view id) -> std::optional<std::string> {
      if (context == "c" && id == "1") return std::string("0badc0ffee");
      return std::nullopt;
    };
  o.random = [](std::span<unsigned char> out) {
    for (auto& b : out) b = 0x5a;
    return true;
  };
  return o;
}

// Checks the lines the client sent and returns how many there were.
std::size_t check_output(std::string_view out, bool first) {
  if (first) {
    if (out.empty() || out[0] != '\0') die("first byte is not the credentials NUL", out);
    out.remove_prefix(1);
  }
  std::size_t lines = 0;
  while (!out.empty()) {
    const std::size_t eol = out.find("\r\n");
    if (eol == std::string_view::npos) die("output does not end in CRLF", out);
    const std::string_view line = out.substr(0, eol);
    const std::string_view cmd = line.substr(0, line.find(' '));
    if (cmd != "AUTH" && cmd != "DATA" && cmd != "BEGIN" && cmd != "CANCEL" && cmd != "ERROR" &&
        cmd != "NEGOTIATE_UNIX_FD")
      die("client sent a command dbus-broker does not know", line);
    for (char c : line)
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) die("non-printable byte", line);
    out.remove_prefix(eol + 2);
    ++lines;
  }
  return lines;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const mcbus::sasl_options opts = options_from(data[0]);
  const std::string_view stream(reinterpret_cast<const char*>(data + 1), size - 1);

  mcbus::sasl_client c(opts);
  std::size_t sent_lines = 0;
  bool first = true;
  std::string all_output;
  auto drain = [&] {
    const std::string out(c.output_text());
    sent_lines += check_output(out, first && !out.empty());
    if (!out.empty()) first = false;
    all_output += out;
    c.consume(out.size());
  };
  drain();
  std::size_t pos = 0;
  auto previous = c.status();
  // Cut the stream into reads of 1..16 bytes, lengths from the stream's own bytes.
  while (pos < stream.size()) {
    const std::size_t n = 1 + static_cast<unsigned char>(stream[pos]) % 16;
    c.feed(stream.substr(pos, n));
    pos += n < stream.size() - pos ? n : stream.size() - pos;
    drain();
    if (previous != mcbus::sasl_status::in_progress && c.status() != previous) die("status changed after the end");
    previous = c.status();
  }
  if (sent_lines > 2 * mcbus::sasl_max_lines + 4) die("client sent too many lines");
  if (c.status() == mcbus::sasl_status::failed) {
    const auto& e = c.failure();
    if (e.code() != mcbus::errc::auth_rejected && e.code() != mcbus::errc::auth_protocol &&
        e.code() != mcbus::errc::invalid_argument)
      die("failure with an unexpected code");
    if (e.has_offset() && e.offset() > stream.size()) die("failure offset outside the stream");
    if (!c.leftover().empty()) die("leftover bytes after a failure");
  }
  if (c.authenticated() && c.server_guid().empty()) die("authenticated without a GUID");
  if (!c.authenticated() && !c.leftover().empty()) die("leftover bytes before authentication");

  // The same stream in one read ends the same way.
  mcbus::sasl_client whole(opts);
  whole.feed(stream);
  if (whole.status() != c.status()) die("one read and many reads disagree on the status");
  std::string whole_output(whole.output_text());
  if (whole_output != all_output) die("one read and many reads sent different bytes", whole_output);
  if (whole.take_leftover() != c.take_leftover()) die("one read and many reads left different bytes");
  return 0;
}
