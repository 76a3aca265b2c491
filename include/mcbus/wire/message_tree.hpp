// mcbus/wire: a whole message as a value tree: the fixed header, every header field (unknown ones
// included, in their order on the wire) and the body.
//
// message_header keeps only the fields mcbus knows, and message::from_header() writes them in its
// own order, so neither can rebuild a received message byte for byte. Tools that show a message
// (mcbus-msg dump) or re-encode it in the other byte order (mcbus-msg convert), and bridges that
// forward messages they do not understand, need everything; this is that.
#pragma once

#include <mcbus/error.hpp>
#include <mcbus/wire/detail/buffer.hpp>
#include <mcbus/wire/detail/endian.hpp>
#include <mcbus/wire/limits.hpp>
#include <mcbus/wire/message.hpp>
#include <mcbus/wire/reader.hpp>
#include <mcbus/wire/value.hpp>
#include <mcbus/wire/writer.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

MCBUS_NAMESPACE_BEGIN

struct message_tree {
  std::uint8_t type = 0;  // as received: types above 4 are kept, not mapped to invalid
  std::uint8_t flags = 0;
  std::uint32_t serial = 0;
  // Each field is a (yv) struct: its code and its value, as on the wire.
  std::vector<value> fields;
  std::string signature;  // of the body; also in the SIGNATURE field, when there is a body
  std::vector<value> body;

  // Decodes a message that message_view::parse() accepted.
  static result<message_tree> decode(const message_view& m) {
    message_tree t;
    const message_header& h = m.header();
    t.type = h.raw_type;
    t.flags = h.flags;
    t.serial = h.serial;
    t.signature = std::string(h.signature);
    // The header bytes were validated as a whole, so the readers need only their bounds checks.
    const reader::options trusted{.trusted = true, .check_fd_indexes = false};
    const std::span<const std::byte> hb = m.header_bytes();
    const std::size_t fields_end =
        fixed_header_length + detail::load<std::uint32_t>(reinterpret_cast<const unsigned char*>(hb.data()) + 12,
                                                          h.order != native_byte_order);
    reader fr(hb.subspan(12, fields_end - 12), h.order, 12, trusted);
    value all = value::read(fr, "a(yv)");
    if (fr.err()) return fr.err().in("header fields");
    t.fields = std::move(all.items());
    reader br = m.body();
    t.body = value::read_all(br, t.signature);
    if (br.err()) return br.err().in("body");
    return t;
  }

  // The field with this code, or nullptr.
  const value* field(std::uint8_t code) const noexcept {
    for (const value& f : fields) {
      if (f.items().size() == 2 && f.items()[0].bits() == code) return &f.items()[1].items()[0];
    }
    return nullptr;
  }

  // Encodes the message in the given byte order. The result is the canonical encoding: for a
  // message that came off the wire in the same byte order, it is the same bytes.
  result<std::vector<std::byte>> encode(byte_order order) const {
    detail::byte_buffer buf(256);
    unsigned char* p = buf.extend(12);
    p[0] = static_cast<unsigned char>(order);
    p[1] = type;
    p[2] = flags;
    p[3] = 1;
    const bool swap = order != native_byte_order;
    detail::store<std::uint32_t>(p + 8, serial, swap);
    {
      writer w(buf, order, buf.size());
      const writer::array_mark m = w.open_array("(yv)");
      for (const value& f : fields) f.write(w);
      w.close_array(m);
      w.pad_to(8);
      if (w.err()) return w.err().in("header fields");
    }
    const std::size_t header_len = buf.size();
    {
      writer w(buf, order, buf.size());
      for (const value& v : body) v.write(w);
      if (w.err()) return w.err().in("body");
    }
    const std::size_t body_len = buf.size() - header_len;
    if (buf.size() > max_message_length) return error(errc::message_too_long, 0);
    detail::store<std::uint32_t>(buf.data() + 4, static_cast<std::uint32_t>(body_len), swap);
    std::vector<std::byte> out(buf.size());
    std::memcpy(out.data(), buf.data(), buf.size());
    return out;
  }

  friend bool operator==(const message_tree&, const message_tree&) = default;
};

MCBUS_NAMESPACE_END
