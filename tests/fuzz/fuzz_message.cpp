// Fuzz target: message parsing and the value-tree round trip.
//
// Any input either parses, or fails with an error whose offset lies within the input. A message that
// parses is decoded into a value tree and encoded again in both byte orders (what mcbus-msg convert
// does). Each encoding must parse to the same header and values, encoding in the input's own byte
// order must give back the input byte for byte (the D-Bus encoding of a value is unique), and
// converting to the other order and back must too.
#include <mcbus/wire.hpp>
#include <mcbus/wire/message_tree.hpp>

// mcbus-msg dump prints messages through mcbus/fmt.hpp; format every valid message the same way.
// Header-only fmt needs no link flags, and builds without fmt (MCBUS_CORE_ONLY) skip this part.
#if __has_include(<fmt/format.h>)
#define FMT_HEADER_ONLY 1
#include <mcbus/fmt.hpp>
#define MCBUS_FUZZ_HAVE_FMT 1
#endif

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <span>
#include <vector>

namespace {

[[noreturn]] void die(const char* what, const mcbus::error& e = {}) {
  std::fprintf(stderr, "fuzz_message: %s%s%s\n", what, e ? ": " : "", e ? e.message().c_str() : "");
  std::abort();
}

void check(bool ok, const char* what) {
  if (!ok) die(what);
}

void same_header(const mcbus::message_header& a, const mcbus::message_header& b) {
  check(a.raw_type == b.raw_type && a.type == b.type, "type changed");
  check(a.flags == b.flags, "flags changed");
  check(a.serial == b.serial, "serial changed");
  check(a.body_length == b.body_length, "body length changed");
  check(a.reply_serial == b.reply_serial, "reply serial changed");
  check(a.unix_fds == b.unix_fds, "unix fds changed");
  check(a.present == b.present, "set of header fields changed");
  check(a.path == b.path && a.interface == b.interface && a.member == b.member, "path/interface/member changed");
  check(a.error_name == b.error_name && a.destination == b.destination && a.sender == b.sender,
        "error name/destination/sender changed");
  check(a.signature == b.signature, "signature changed");
}

// Encodes t in the given order, parses it back and checks it against the original.
std::vector<std::byte> reencode(const mcbus::message_tree& t, const mcbus::message_view& original,
                                mcbus::byte_order order, mcbus::parse_options opts) {
  auto bytes = t.encode(order);
  if (!bytes) die("encode failed", bytes.error());
  auto again = mcbus::message_view::parse(*bytes, opts);
  if (!again) die("re-encoded message does not parse", again.error());
  check(again->order() == order, "byte order not applied");
  same_header(original.header(), again->header());
  auto t2 = mcbus::message_tree::decode(*again);
  if (!t2) die("re-encoded message does not decode", t2.error());
  check(*t2 == t, "values changed in the round trip");
  return std::move(*bytes);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data), size);

  // The framing helper must agree with the parser on what it can already tell from 16 bytes.
  auto framed = mcbus::message_length(input);
  if (!framed && size >= mcbus::fixed_header_length) {
    check(framed.error().has_offset() && framed.error().offset() < mcbus::fixed_header_length,
          "framing error outside the fixed header");
  }

  mcbus::parse_options opts;
  auto m = mcbus::message_view::parse(input, opts);
  if (!m) {
    const mcbus::error& e = m.error();
    if (!e.has_offset() || e.offset() > size) die("error without an offset inside the input", e);
    (void)e.message();
    if (e.code() != mcbus::errc::bad_fd_index) return 0;
    // The fd-index rule is the only optional one. Without it, parsing goes on past that fd, and
    // either fails later in the message or accepts it.
    opts.check_fd_indexes = false;
    const std::size_t fd_at = e.offset();
    m = mcbus::message_view::parse(input, opts);
    if (!m) {
      if (m.error().offset() <= fd_at) die("the fd-index check hid an earlier error", m.error());
      return 0;
    }
  }
  if (framed) check(*framed == size, "framing length differs from the parsed length");

  auto tree = mcbus::message_tree::decode(*m);
  if (!tree) die("valid message does not decode", tree.error());
#ifdef MCBUS_FUZZ_HAVE_FMT
  fmt::memory_buffer text;
  fmt::format_to(std::back_inserter(text), "{}\n{}\n{}", m->header(), *m, *tree);
  check(text.size() > 0, "nothing formatted");
#endif

  const mcbus::byte_order own = m->order();
  const mcbus::byte_order other = own == mcbus::byte_order::little ? mcbus::byte_order::big : mcbus::byte_order::little;
  const std::vector<std::byte> same = reencode(*tree, *m, own, opts);
  check(same.size() == size && std::memcmp(same.data(), data, size) == 0, "same-order encoding differs from input");
  const std::vector<std::byte> swapped = reencode(*tree, *m, other, opts);
  auto back_view = mcbus::message_view::parse(swapped, opts);
  auto back_tree = mcbus::message_tree::decode(*back_view);
  if (!back_tree) die("converted message does not decode", back_tree.error());
  const std::vector<std::byte> back = reencode(*back_tree, *m, own, opts);
  check(back.size() == size && std::memcmp(back.data(), data, size) == 0, "converting twice changed the bytes");
  return 0;
}
