// mcbus/wire: D-Bus messages.
//
// message_view borrows a received buffer, validates all of it once (header, fields, body, every
// rule of the specification) and then exposes flat, pre-parsed metadata (message_header) plus
// zero-copy typed access to the body.
//
// message builds one: a header buffer and a body buffer, kept apart so that the body never moves
// and both go out with a single sendmsg() of two iovecs.
#pragma once

#include <mcbus/error.hpp>
#include <mcbus/wire/detail/buffer.hpp>
#include <mcbus/wire/detail/endian.hpp>
#include <mcbus/wire/limits.hpp>
#include <mcbus/wire/names.hpp>
#include <mcbus/wire/reader.hpp>
#include <mcbus/wire/signature.hpp>
#include <mcbus/wire/unix_fd.hpp>
#include <mcbus/wire/writer.hpp>

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

MCBUS_NAMESPACE_BEGIN

enum class message_type : std::uint8_t {
  invalid = 0,
  method_call = 1,
  method_return = 2,
  error = 3,
  signal = 4,
};

constexpr const char* to_string(message_type t) noexcept {
  switch (t) {
    case message_type::method_call: return "method_call";
    case message_type::method_return: return "method_return";
    case message_type::error: return "error";
    case message_type::signal: return "signal";
    default: return "unknown";
  }
}

namespace message_flags {
inline constexpr std::uint8_t no_reply_expected = 0x1;
inline constexpr std::uint8_t no_auto_start = 0x2;
inline constexpr std::uint8_t allow_interactive_authorization = 0x4;
}  // namespace message_flags

enum class header_field : std::uint8_t {
  path = 1,
  interface = 2,
  member = 3,
  error_name = 4,
  reply_serial = 5,
  destination = 6,
  sender = 7,
  signature = 8,
  unix_fds = 9,
};

constexpr const char* to_string(header_field f) noexcept {
  switch (f) {
    case header_field::path: return "PATH";
    case header_field::interface: return "INTERFACE";
    case header_field::member: return "MEMBER";
    case header_field::error_name: return "ERROR_NAME";
    case header_field::reply_serial: return "REPLY_SERIAL";
    case header_field::destination: return "DESTINATION";
    case header_field::sender: return "SENDER";
    case header_field::signature: return "SIGNATURE";
    case header_field::unix_fds: return "UNIX_FDS";
  }
  return "unknown";
}

// The type code every known header field must carry.
constexpr char header_field_type(header_field f) noexcept {
  switch (f) {
    case header_field::path: return 'o';
    case header_field::reply_serial:
    case header_field::unix_fds: return 'u';
    case header_field::signature: return 'g';
    default: return 's';
  }
}

// Flat, pre-parsed metadata of a message: what routing and matching need, with no further parsing.
struct message_header {
  byte_order order = native_byte_order;
  message_type type = message_type::invalid;
  std::uint8_t raw_type = 0;  // the type byte as received; unknown types are kept, then ignored
  std::uint8_t flags = 0;
  std::uint32_t body_length = 0;
  std::uint32_t serial = 0;
  std::uint32_t reply_serial = 0;
  std::uint32_t unix_fds = 0;
  std::string_view path;
  std::string_view interface;
  std::string_view member;
  std::string_view error_name;
  std::string_view destination;
  std::string_view sender;
  std::string_view signature;
  std::uint16_t present = 0;  // bit n set: header field n was in the message

  constexpr bool has(header_field f) const noexcept { return (present >> static_cast<unsigned>(f)) & 1u; }
};

struct parse_options {
  // Reject 'h' values at or above the UNIX_FDS count. libdbus leaves this check to the moment the fd
  // is taken out, and its valid-messages corpus holds one such message; turn this off to match it.
  bool check_fd_indexes = true;
};

// Framing for stream sockets: from the first 16 bytes, the total length of the message (header,
// padding and body), or an error if those bytes already rule the message out.
inline result<std::size_t> message_length(std::span<const std::byte> prefix) noexcept {
  if (prefix.size() < fixed_header_length) return error(errc::truncated, prefix.size(), "fixed header");
  const auto* p = reinterpret_cast<const unsigned char*>(prefix.data());
  if (p[0] != 'l' && p[0] != 'B') return error(errc::bad_endian, 0);
  if (p[3] != 1) return error(errc::bad_version, 3);
  const bool swap = static_cast<byte_order>(p[0]) != native_byte_order;
  const std::uint32_t body = detail::load<std::uint32_t>(p + 4, swap);
  const std::uint32_t fields = detail::load<std::uint32_t>(p + 12, swap);
  if (fields > max_array_length) return error(errc::array_too_long, 12, "header field array");
  const std::size_t total = detail::align_up(fixed_header_length + fields, 8) + body;
  if (total > max_message_length) return error(errc::message_too_long, 4);
  return total;
}

class message;

class message_view {
 public:
  message_view() noexcept = default;

  // Validates a complete message in one buffer. The view borrows the buffer.
  static result<message_view> parse(std::span<const std::byte> bytes, parse_options opts = {}) noexcept {
    auto len = message_length(bytes);
    if (!len) return len.error();
    if (bytes.size() < *len) return error(errc::truncated, bytes.size(), "message shorter than its header says");
    if (bytes.size() > *len) return error(errc::trailing_bytes, *len, "bytes after the end of the message");
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    const bool swap = static_cast<byte_order>(p[0]) != native_byte_order;
    const std::size_t header_len = detail::align_up(fixed_header_length + detail::load<std::uint32_t>(p + 12, swap), 8);
    return parse(bytes.first(header_len), bytes.subspan(header_len), opts);
  }

  // Validates a message whose header (with its padding) and body lie in separate buffers.
  static result<message_view> parse(std::span<const std::byte> header_bytes, std::span<const std::byte> body,
                                    parse_options opts = {}) noexcept {
    message_view m;
    if (error e = m.load_header(header_bytes, body.size())) return e;
    m.header_bytes_ = header_bytes;
    m.body_ = body;
    if (error e = m.check_body(opts)) return e;
    return m;
  }

  // Rebuilds a view over bytes that were validated before, e.g. a copy of another view's bytes:
  // the header is read again (cheap), the body is not re-validated.
  static result<message_view> from_validated(std::span<const std::byte> header_bytes,
                                             std::span<const std::byte> body) noexcept {
    message_view m;
    if (error e = m.load_header(header_bytes, body.size())) return e;
    m.header_bytes_ = header_bytes;
    m.body_ = body;
    return m;
  }

  const message_header& header() const noexcept { return h_; }
  message_type type() const noexcept { return h_.type; }
  std::uint8_t flags() const noexcept { return h_.flags; }
  std::uint32_t serial() const noexcept { return h_.serial; }
  std::uint32_t reply_serial() const noexcept { return h_.reply_serial; }
  byte_order order() const noexcept { return h_.order; }
  object_path_view path() const noexcept { return object_path_view::from_unchecked(h_.path); }
  interface_name interface() const noexcept { return interface_name::from_unchecked(h_.interface); }
  member_name member() const noexcept { return member_name::from_unchecked(h_.member); }
  ::mcbus::error_name error_name() const noexcept { return ::mcbus::error_name::from_unchecked(h_.error_name); }
  bus_name destination() const noexcept { return bus_name::from_unchecked(h_.destination); }
  bus_name sender() const noexcept { return bus_name::from_unchecked(h_.sender); }
  signature_view body_signature() const noexcept { return signature_view::from_unchecked(h_.signature); }
  bool no_reply_expected() const noexcept { return h_.flags & message_flags::no_reply_expected; }

  std::span<const std::byte> header_bytes() const noexcept { return header_bytes_; }
  std::span<const std::byte> body_bytes() const noexcept { return body_; }
  std::size_t size() const noexcept { return header_bytes_.size() + body_.size(); }

  // The fds that arrived with the message; a view does not own them.
  void set_fds(std::span<const int> fds) noexcept { fds_ = fds; }
  std::span<const int> fds() const noexcept { return fds_; }

  // A reader at the start of the body. The body was validated, so the reader is trusted.
  reader body() const noexcept {
    reader r(body_, h_.order, header_bytes_.size(),
             reader::options{.trusted = true, .check_fd_indexes = false, .fd_limit = h_.unix_fds, .depth = 0});
    r.set_fds(fds_);
    return r;
  }

  // Reads the whole body into typed values; the signature must match exactly.
  template <class... Ts>
  error read_into(Ts&... out) const {
    if (signature_of<Ts...> != h_.signature) return {errc::signature_mismatch, header_bytes_.size(), "body"};
    reader r = body();
    (r.read(out), ...);
    return r.err();
  }

  template <class... Ts>
  result<std::tuple<Ts...>> read() const {
    std::tuple<Ts...> values;
    if (error e = std::apply([&](auto&... v) { return read_into(v...); }, values)) return e;
    return values;
  }

  // The first body argument if it has type T, else an error: convenient for replies.
  template <class T>
  result<T> read_first() const {
    if (h_.signature.empty() || signature_of<T> != h_.signature.substr(0, complete_type_length(h_.signature, 0))) {
      return error(errc::signature_mismatch, header_bytes_.size(), "first body argument");
    }
    reader r = body();
    T v{};
    r.read(v);
    if (r.err()) return r.err();
    return v;
  }

 private:
  friend class message;

  error load_header(std::span<const std::byte> bytes, std::size_t body_size) noexcept {
    auto len = message_length(bytes);
    if (!len) return len.error();
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    h_.order = static_cast<byte_order>(p[0]);
    const bool swap = h_.order != native_byte_order;
    h_.raw_type = p[1];
    if (p[1] == 0) return {errc::bad_message_type, 1};
    h_.type = p[1] <= 4 ? static_cast<message_type>(p[1]) : message_type::invalid;
    h_.flags = p[2];
    h_.body_length = detail::load<std::uint32_t>(p + 4, swap);
    h_.serial = detail::load<std::uint32_t>(p + 8, swap);
    if (h_.serial == 0) return {errc::zero_serial, 8};
    const std::uint32_t fields_len = detail::load<std::uint32_t>(p + 12, swap);
    const std::size_t fields_end = fixed_header_length + fields_len;
    const std::size_t header_len = detail::align_up(fields_end, 8);
    if (bytes.size() != header_len) {
      return {bytes.size() < header_len ? errc::truncated : errc::trailing_bytes, bytes.size(), "header"};
    }
    if (body_size != h_.body_length) {
      return {body_size < h_.body_length ? errc::truncated : errc::trailing_bytes, header_len + body_size, "body"};
    }
    for (std::size_t i = fields_end; i < header_len; ++i) {
      if (p[i] != 0) return {errc::bad_padding, i, "after the header fields"};
    }
    // The field array is validated as the value a(yv) that it is, starting at offset 12. An 'h' can
    // only be in an unknown field, which is ignored; and UNIX_FDS may come after it, so its index
    // could not be checked here anyway (libdbus does not check it either).
    reader r(bytes.subspan(12, fields_end - 12), h_.order, 12, reader::options{.check_fd_indexes = false});
    const reader::array_cursor fields = r.open_array("(yv)");
    while (r.in_array(fields)) {
      r.open_struct();
      const std::size_t field_at = r.offset();
      const std::uint8_t code = r.get_byte();
      const std::size_t sig_at = r.offset();
      const signature_view sig = r.open_variant();
      if (r.err()) break;
      if (code == 0) return {errc::bad_header_field_code, field_at};
      if (code > 9) {
        r.skip(sig.str());  // unknown: ignored, but must be well-formed
      } else if (error e = load_field(r, static_cast<header_field>(code), sig.str(), sig_at)) {
        return e;
      }
      r.close_variant();
      r.close_struct();
    }
    r.close_array(fields);
    if (r.err()) return r.err();
    return check_required_fields(fields_end);
  }

  error load_field(reader& r, header_field f, std::string_view sig, std::size_t sig_at) noexcept {
    const unsigned bit = 1u << static_cast<unsigned>(f);
    const char* name = to_string(f);
    if (sig.size() != 1 || sig[0] != header_field_type(f)) return {errc::bad_header_field_type, sig_at, name};
    if (h_.present & bit) return {errc::duplicate_header_field, sig_at, name};
    h_.present = static_cast<std::uint16_t>(h_.present | bit);
    const std::size_t value_at = sig[0] == 'g' ? r.offset() : detail::align_up(r.offset(), 4);
    // A bad name is reported at its offending character (past the string's 4-byte length).
    auto check = [&](error e) -> error { return e ? error(e.code(), value_at + 4 + e.offset(), name) : error(); };
    switch (f) {
      case header_field::path:
        h_.path = r.get_object_path().str();
        // libdbus refuses every path and interface that merely starts with the local ones (it
        // compares a prefix); mcbus does the same, so that it is never looser than libdbus.
        if (!r.err() && h_.path.starts_with(local_path)) return {errc::local_path_forbidden, value_at, name};
        return r.err();
      case header_field::interface:
        h_.interface = r.get_string();
        if (r.err()) return r.err();
        if (h_.interface.starts_with(local_interface)) return {errc::local_interface_forbidden, value_at, name};
        return check(validate_interface_name(h_.interface));
      case header_field::member:
        h_.member = r.get_string();
        return r.err() ? r.err() : check(validate_member_name(h_.member));
      case header_field::error_name:
        h_.error_name = r.get_string();
        return r.err() ? r.err() : check(validate_error_name(h_.error_name));
      case header_field::destination:
        h_.destination = r.get_string();
        return r.err() ? r.err() : check(validate_bus_name(h_.destination));
      case header_field::sender:
        h_.sender = r.get_string();
        return r.err() ? r.err() : check(validate_bus_name(h_.sender));
      case header_field::reply_serial:
        h_.reply_serial = r.get_fixed<std::uint32_t>();
        if (!r.err() && h_.reply_serial == 0) return {errc::zero_serial, value_at, name};
        return r.err();
      case header_field::signature: h_.signature = r.get_signature().str(); return r.err();
      case header_field::unix_fds: h_.unix_fds = r.get_fixed<std::uint32_t>(); return r.err();
    }
    return {};
  }

  error check_required_fields(std::size_t at) const noexcept {
    auto need = [&](header_field f) -> error {
      return h_.has(f) ? error() : error(errc::missing_header_field, at, to_string(f));
    };
    switch (h_.type) {
      case message_type::signal:
        if (error e = need(header_field::interface)) return e;
        [[fallthrough]];
      case message_type::method_call:
        if (error e = need(header_field::path)) return e;
        return need(header_field::member);
      case message_type::error:
        if (error e = need(header_field::error_name)) return e;
        return need(header_field::reply_serial);
      case message_type::method_return: return need(header_field::reply_serial);
      default: return {};  // unknown types carry no required fields; receivers ignore them
    }
  }

  error check_body(parse_options opts) const noexcept {
    const std::size_t base = header_bytes_.size();
    if (h_.signature.empty()) {
      return body_.empty() ? error() : error(errc::trailing_bytes, base, "body without a SIGNATURE field");
    }
    reader r(body_, h_.order, base,
             reader::options{.trusted = false, .check_fd_indexes = opts.check_fd_indexes, .fd_limit = h_.unix_fds});
    r.skip_all(h_.signature);
    if (r.err()) return r.err().in("body");
    if (!r.at_end()) return {errc::trailing_bytes, r.offset(), "body longer than its signature"};
    return {};
  }

  message_header h_;
  std::span<const std::byte> header_bytes_;
  std::span<const std::byte> body_;
  std::span<const int> fds_;
};

// An outgoing message. Build it with one of the factories, append the body, then send it (the
// connection seals it and sets the serial) or call seal() to get its bytes.
class message {
 public:
  message() = default;
  message(message&&) noexcept = default;
  message& operator=(message&&) noexcept = default;
  message(const message&) = delete;  // fds are owned; use clone()
  message& operator=(const message&) = delete;

  static message method_call(bus_name destination, object_path_view path, interface_name interface, member_name member,
                             byte_order order = native_byte_order) {
    message m(message_type::method_call, order);
    if (!destination.empty()) m.add_string_field(header_field::destination, destination);
    m.add_string_field(header_field::path, path);
    if (!interface.empty()) m.add_string_field(header_field::interface, interface);
    m.add_string_field(header_field::member, member);
    return m;
  }

  static message signal(object_path_view path, interface_name interface, member_name member,
                        byte_order order = native_byte_order) {
    message m(message_type::signal, order);
    m.add_string_field(header_field::path, path);
    m.add_string_field(header_field::interface, interface);
    m.add_string_field(header_field::member, member);
    return m;
  }

  static message method_return(const message_view& call) {
    message m(message_type::method_return, native_byte_order);
    m.add_u32_field(header_field::reply_serial, call.serial());
    if (!call.header().sender.empty()) m.add_string_field(header_field::destination, call.header().sender);
    return m;
  }

  static message error_reply(const message_view& call, error_name name, std::string_view text = {}) {
    message m(message_type::error, native_byte_order);
    m.add_string_field(header_field::error_name, name);
    m.add_u32_field(header_field::reply_serial, call.serial());
    if (!call.header().sender.empty()) m.add_string_field(header_field::destination, call.header().sender);
    if (!text.empty()) m.append(text);
    return m;
  }

  // An error reply to a call known only by serial and sender (the call's buffer may be gone).
  static message error_reply(std::uint32_t reply_serial, bus_name destination, error_name name,
                             std::string_view text = {}) {
    message m(message_type::error, native_byte_order);
    m.add_string_field(header_field::error_name, name);
    m.add_u32_field(header_field::reply_serial, reply_serial);
    if (!destination.empty()) m.add_string_field(header_field::destination, destination);
    if (!text.empty()) m.append(text);
    return m;
  }

  // A message with any header, for tools and tests that re-encode what they received. Every field
  // of `h` that is present is written (SIGNATURE and UNIX_FDS come from the body and fds instead).
  static message from_header(const message_header& h) {
    message m(h.raw_type ? static_cast<message_type>(h.raw_type) : h.type, h.order);
    m.flags_ = h.flags;
    m.serial_ = h.serial;
    for (unsigned f = 1; f <= 7; ++f) {
      const auto field = static_cast<header_field>(f);
      if (!h.has(field)) continue;
      if (field == header_field::reply_serial) {
        m.add_u32_field(field, h.reply_serial);
      } else {
        m.add_string_field(field, field_value(h, field));
      }
    }
    return m;
  }

  // ---- header -------------------------------------------------------------------------------

  message& set_destination(bus_name name) { return replace_string_field(header_field::destination, name); }
  message& set_sender(bus_name name) { return replace_string_field(header_field::sender, name); }
  message& set_flags(std::uint8_t flags) noexcept {
    flags_ = flags;
    if (sealed_) header_.data()[2] = flags;
    return *this;
  }
  message& set_no_reply_expected(bool on = true) noexcept {
    return set_flags(on ? flags_ | message_flags::no_reply_expected : flags_ & ~message_flags::no_reply_expected);
  }
  message& set_no_auto_start(bool on = true) noexcept {
    return set_flags(on ? flags_ | message_flags::no_auto_start : flags_ & ~message_flags::no_auto_start);
  }
  // Serials are assigned by the connection; this patches the header in place when sealed.
  message& set_serial(std::uint32_t serial) noexcept {
    serial_ = serial;
    if (sealed_) detail::store<std::uint32_t>(header_.data() + 8, serial, swap());
    return *this;
  }

  message_type type() const noexcept { return type_; }
  std::uint8_t flags() const noexcept { return flags_; }
  std::uint32_t serial() const noexcept { return serial_; }
  byte_order order() const noexcept { return order_; }
  const std::string& body_signature() const noexcept { return signature_; }
  const error& err() const noexcept { return err_; }

  // ---- body ---------------------------------------------------------------------------------

  template <class... Ts>
  message& append(const Ts&... values) {
    if (err_) return *this;
    constexpr std::string_view sig = signature_of<Ts...>;
    return append_with(sig, [&](writer& w) { (w.write(values), ...); });
  }

  // Appends values written by fn, which must write exactly the complete types in sig. This is for
  // bodies whose types are only known at run time (mcbus::value, tools).
  template <class F>
  message& append_with(std::string_view sig, F&& fn) {
    if (err_) return *this;
    if (signature_.size() + sig.size() > max_signature_length) {
      err_ = error(errc::signature_too_long, signature_.size(), "body");
      return *this;
    }
    unseal();
    if (body_.capacity() == 0) body_.reserve(512);
    flat_body_.clear();
    writer w(body_, order_, body_size(), &fds_, &borrowed_);
    fn(w);
    if (w.err()) {
      err_ = w.err().in("body being written");
      return *this;
    }
    signature_ += sig;
    return *this;
  }

  // ---- output -------------------------------------------------------------------------------

  // Completes the header: SIGNATURE and UNIX_FDS fields, lengths, serial, padding.
  error seal() {
    if (err_) return err_;
    if (sealed_) return {};
    if (serial_ == 0) serial_ = 1;  // a placeholder the connection overwrites; 0 is invalid on the wire
    unsealed_len_ = header_.size();
    if (!signature_.empty()) {
      write_field(header_field::signature, 'g', [&](writer& w) { w.put_short_string(signature_); });
    }
    if (!fds_.empty()) {
      const auto n = static_cast<std::uint32_t>(fds_.size());
      write_field(header_field::unix_fds, 'u', [&](writer& w) { w.put_fixed<std::uint32_t>(n); });
    }
    if (err_) return err_;
    const std::size_t fields_len = header_.size() - fixed_header_length;
    header_.append_zeros(detail::align_up(header_.size(), 8) - header_.size());
    unsigned char* p = header_.data();
    p[0] = static_cast<unsigned char>(order_);
    p[1] = static_cast<unsigned char>(type_);
    p[2] = flags_;
    p[3] = 1;
    detail::store<std::uint32_t>(p + 4, static_cast<std::uint32_t>(body_size()), swap());
    detail::store<std::uint32_t>(p + 8, serial_, swap());
    detail::store<std::uint32_t>(p + 12, static_cast<std::uint32_t>(fields_len), swap());
    if (size() > max_message_length) {
      unseal();
      return err_ = error(errc::message_too_long, 0);
    }
    sealed_ = true;
    return {};
  }

  bool sealed() const noexcept { return sealed_; }
  std::span<const std::byte> header_bytes() const noexcept { return header_.bytes(); }
  // The body in one piece. A body with borrowed arrays is copied together the first time (and
  // kept until the body changes); senders that can gather use for_each_body_part() instead.
  std::span<const std::byte> body_bytes() const {
    if (borrowed_.empty()) return body_.bytes();
    if (flat_body_.empty())
      for_each_body_part([&](std::span<const std::byte> b) { flat_body_.append(b.data(), b.size()); });
    return flat_body_.bytes();
  }
  // Calls f(std::span<const std::byte>) for each piece of the body in order, without copying:
  // the message's own bytes and the borrowed arrays (see borrowed_array), for writev()/sendmsg().
  template <class F>
  void for_each_body_part(F&& f) const {
    std::size_t from = 0;
    for (const body_segment& b : borrowed_) {
      if (b.at > from) f(body_.bytes().subspan(from, b.at - from));
      f(b.bytes);
      from = b.at;
    }
    if (body_.size() > from || borrowed_.empty()) f(body_.bytes().subspan(from));
  }
  std::size_t body_size() const noexcept { return body_.size() + borrowed_size(); }
  std::size_t size() const noexcept { return header_.size() + body_size(); }

  // The whole message in one buffer (a copy). Seals first.
  result<std::vector<std::byte>> to_bytes() {
    if (error e = seal()) return e;
    std::vector<std::byte> out(size());
    std::memcpy(out.data(), header_.data(), header_.size());
    std::size_t at = header_.size();
    for_each_body_part([&](std::span<const std::byte> b) {
      if (!b.empty()) std::memcpy(out.data() + at, b.data(), b.size());
      at += b.size();
    });
    return out;
  }

  // A view of this message, for local matching and reading back. Seals first.
  result<message_view> view() {
    if (error e = seal()) return e;
    message_view v;
    if (error e = v.load_header(header_.bytes(), body_size())) return e;
    v.header_bytes_ = header_.bytes();
    v.body_ = body_bytes();
    fd_ints_.clear();
    for (const unix_fd& fd : fds_) fd_ints_.push_back(fd.get());
    v.fds_ = fd_ints_;
    return v;
  }

  std::vector<unix_fd>& fds() noexcept { return fds_; }
  const std::vector<unix_fd>& fds() const noexcept { return fds_; }

  // An owning copy of a received message; the fds are duplicated.
  static result<message> copy_of(const message_view& v) {
    message m(v.type(), v.order());
    m.header_.clear();
    m.header_.append(v.header_bytes().data(), v.header_bytes().size());
    m.body_.append(v.body_bytes().data(), v.body_bytes().size());
    m.signature_ = std::string(v.header().signature);
    m.flags_ = v.flags();
    m.serial_ = v.serial();
    m.type_ = static_cast<message_type>(v.header().raw_type);
    for (int fd : v.fds()) {
      unix_fd copy(unix_fd::dup_cloexec(fd));
      if (!copy) return error::from_errno(errno, "dup of a message fd");
      m.fds_.push_back(std::move(copy));
    }
    m.sealed_ = true;
    m.frozen_ = true;
    return m;
  }

 private:
  message(message_type type, byte_order order) : type_(type), order_(order) {
    header_.reserve(256);  // the header fields of most messages fit: one allocation, no regrowth
    header_.append_zeros(fixed_header_length);
  }

  bool swap() const noexcept { return order_ != native_byte_order; }

  static std::string_view field_value(const message_header& h, header_field f) noexcept {
    switch (f) {
      case header_field::path: return h.path;
      case header_field::interface: return h.interface;
      case header_field::member: return h.member;
      case header_field::error_name: return h.error_name;
      case header_field::destination: return h.destination;
      case header_field::sender: return h.sender;
      default: return {};
    }
  }

  // Undoes seal(): drops the padding and the SIGNATURE/UNIX_FDS fields that seal() added.
  void unseal() {
    if (!sealed_) return;
    if (frozen_) {
      err_ = error(errc::invalid_argument, 0, "a copied message cannot be changed");
      return;
    }
    header_.resize(unsealed_len_);
    sealed_ = false;
  }

  // Appends a field for good: it stays when the message is unsealed again.
  template <class F>
  void add_field(header_field f, char type, F&& write_value) {
    unseal();
    if (err_) return;
    write_field(f, type, write_value);
    unsealed_len_ = header_.size();
  }

  template <class F>
  void write_field(header_field f, char type, F&& write_value) {
    writer w(header_, order_, header_.size());
    w.open_struct();
    w.put_byte(static_cast<std::uint8_t>(f));
    const char sig[1] = {type};
    w.put_short_string({sig, 1});
    write_value(w);
    w.close_struct();
    if (w.err()) err_ = w.err();
    present_ = static_cast<std::uint16_t>(present_ | (1u << static_cast<unsigned>(f)));
  }
  void add_string_field(header_field f, std::string_view s) {
    const char type = header_field_type(f);
    add_field(f, type, [&](writer& w) { type == 'g' ? w.put_short_string(s) : w.put_counted_string(s); });
  }
  void add_u32_field(header_field f, std::uint32_t v) {
    add_field(f, 'u', [&](writer& w) { w.put_fixed<std::uint32_t>(v); });
  }

  // Setting a field that is already there rebuilds the field list without it.
  message& replace_string_field(header_field f, std::string_view s) {
    unseal();
    if (err_) return *this;
    if (present_ & (1u << static_cast<unsigned>(f))) {
      message_header h;
      if (error e = parse_own_fields(h)) {
        err_ = e;
        return *this;
      }
      h.present = static_cast<std::uint16_t>(h.present & ~(1u << static_cast<unsigned>(f)));
      message fresh = from_header(h);
      header_ = std::move(fresh.header_);
      present_ = fresh.present_;
      unsealed_len_ = header_.size();
    }
    add_string_field(f, s);
    return *this;
  }

  error parse_own_fields(message_header& h) {
    own_fields_copy_.assign(reinterpret_cast<const char*>(header_.data()), header_.size());
    const auto* data = reinterpret_cast<const std::byte*>(own_fields_copy_.data());
    reader r({data + fixed_header_length, own_fields_copy_.size() - fixed_header_length}, order_, fixed_header_length,
             reader::options{.trusted = true});
    h.order = order_;
    h.raw_type = static_cast<std::uint8_t>(type_);
    h.type = type_;
    h.flags = flags_;
    h.serial = serial_;
    while (!r.at_end() && !r.err()) {
      r.open_struct();
      const auto f = static_cast<header_field>(r.get_byte());
      const signature_view sig = r.open_variant();
      h.present = static_cast<std::uint16_t>(h.present | (1u << static_cast<unsigned>(f)));
      if (f == header_field::reply_serial) {
        h.reply_serial = r.get_fixed<std::uint32_t>();
      } else if (sig.str() == "g") {
        r.get_signature();
      } else if (sig.str() == "u") {
        r.get_fixed<std::uint32_t>();
      } else {
        const std::string_view s = r.get_string();
        switch (f) {
          case header_field::path: h.path = s; break;
          case header_field::interface: h.interface = s; break;
          case header_field::member: h.member = s; break;
          case header_field::error_name: h.error_name = s; break;
          case header_field::destination: h.destination = s; break;
          case header_field::sender: h.sender = s; break;
          default: break;
        }
      }
      r.close_variant();
      r.close_struct();
    }
    return r.err();
  }

  std::size_t borrowed_size() const noexcept {
    std::size_t n = 0;
    for (const body_segment& b : borrowed_) n += b.bytes.size();
    return n;
  }

  detail::byte_buffer header_;
  detail::byte_buffer body_;
  std::vector<body_segment> borrowed_;     // arrays the body references (borrowed_array)
  mutable detail::byte_buffer flat_body_;  // body_bytes() of a body with borrowed arrays
  std::string signature_;
  std::vector<unix_fd> fds_;
  std::vector<int> fd_ints_;
  std::string own_fields_copy_;
  error err_;
  message_type type_ = message_type::invalid;
  byte_order order_ = native_byte_order;
  std::uint8_t flags_ = 0;
  std::uint32_t serial_ = 0;
  std::uint16_t present_ = 0;
  std::size_t unsealed_len_ = fixed_header_length;
  bool sealed_ = false;
  bool frozen_ = false;
};

MCBUS_NAMESPACE_END
