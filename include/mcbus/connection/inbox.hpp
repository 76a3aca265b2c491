// mcbus: the receive side of a connection: bytes in, framed and validated messages out.
//
// Bytes from the transport are appended to one buffer (the only copy after the kernel's). As soon
// as a message is complete it is validated once, given its fds, and queued as an entry that
// records where its bytes are. Handlers then get message_views into the buffer: nothing is copied.
//
// A handler may block in a method call, which reads more bytes while an outer view is still in
// use. The buffer therefore never moves while a dispatch is running: if it must grow, the bytes
// still needed go to a new buffer and the old one is kept alive until the outermost dispatch ends.
#pragma once

#include <mcbus/error.hpp>
#include <mcbus/io/transport.hpp>
#include <mcbus/wire/detail/buffer.hpp>
#include <mcbus/wire/message.hpp>

#include <cstring>
#include <deque>
#include <span>
#include <string>
#include <vector>

MCBUS_NAMESPACE_BEGIN
namespace detail {

struct inbox_entry {
  std::size_t offset = 0;
  std::size_t length = 0;
  std::size_t header_length = 0;
  error invalid;  // set when the message failed validation; it is reported, never dispatched
  // Of a refused message too, as far as its header could be read: a refused reply still ends the
  // call it answers, rather than leaving it to time out.
  message_type type = message_type::invalid;
  std::uint32_t reply_serial = 0;
  std::vector<unix_fd> fds;
  std::vector<int> fd_ints;
  // A refused method call with a valid header that wants a reply: what an error reply needs.
  std::uint32_t call_serial = 0;
  std::string call_sender;
  std::string call_destination;
};

class inbox {
 public:
  explicit inbox(std::size_t max_fds = max_fds_per_message) : max_fds_(max_fds) {}

  // Appends received bytes and frames every message they complete. A framing error (a fixed
  // header that makes no sense) is returned: the stream cannot be resynchronised after it.
  //
  // Fds travel with the first byte of their message (the kernel hands them to the read that
  // takes that byte; buses and mcbus send them so), so a message may take only the fds that came
  // with the chunk it starts in: `fds` holds first those kept for the message that was incomplete
  // at the end of the last chunk (`carried_`), then this chunk's. Fds that no message can take
  // are closed at once and counted, rather than kept to be handed to a later message.
  error feed(std::span<const std::byte> bytes, received_fds& fds) {
    if (fatal_) return fatal_;
    make_room(bytes.size());
    const std::size_t chunk_start = buf_.size();
    buf_.append(bytes.data(), bytes.size());
    while (buf_.size() - frame_pos_ >= fixed_header_length) {
      const std::span<const std::byte> rest(reinterpret_cast<const std::byte*>(buf_.data()) + frame_pos_,
                                            buf_.size() - frame_pos_);
      auto len = message_length(rest);
      if (!len) return fatal_ = len.error().shifted(frame_pos_).in("framing a received message");
      if (rest.size() < *len) break;
      if (frame_pos_ >= chunk_start) drop_carried(fds);  // it starts here: the carried fds are nobody's
      frame(rest.first(*len), fds, frame_pos_ < chunk_start ? carried_ : fds.size());
      frame_pos_ += *len;
    }
    if (frame_pos_ == buf_.size()) {
      drop(fds, fds.size());  // no message is waiting for more bytes: nobody's
      carried_ = 0;
    } else if (frame_pos_ < chunk_start) {
      // The incomplete message started in an earlier chunk: this chunk's fds are not its.
      std::vector<unix_fd> keep = fds.take(carried_);
      drop(fds, fds.size());
      for (unix_fd& fd : keep) fds.push(fd.release());
    } else {
      drop_carried(fds);
      carried_ = fds.size();
      if (carried_ > max_fds_) drop_carried(fds);  // more than any message may take
    }
    return {};
  }

  // Fds closed because no message could take them: they came with no message's first byte, or
  // beyond the count its UNIX_FDS field gave.
  std::size_t discarded_fds() const noexcept { return discarded_fds_; }
  // Bytes received and not yet handed on: queued messages, and the incomplete one.
  std::size_t queued_bytes() const noexcept {
    return buf_.size() - (entries_.empty() ? frame_pos_ : entries_.front().offset);
  }

  bool empty() const noexcept { return entries_.empty(); }
  std::size_t size() const noexcept { return entries_.size(); }
  std::deque<inbox_entry>& entries() noexcept { return entries_; }

  // The view of an entry; valid until the entry is popped and the dispatch depth returns to 0.
  message_view view(const inbox_entry& e) const noexcept {
    const auto* base = reinterpret_cast<const std::byte*>(buf_.data()) + e.offset;
    auto v =
        message_view::from_validated({base, e.header_length}, {base + e.header_length, e.length - e.header_length});
    message_view out = v ? *v : message_view();
    out.set_fds(e.fd_ints);
    return out;
  }

  // Dispatch bracketing: while depth > 0, the buffer never moves.
  void enter() noexcept { ++depth_; }
  void leave() noexcept {
    if (--depth_ == 0) retired_.clear();
  }

  void reset() {
    entries_.clear();
    buf_.clear();
    frame_pos_ = 0;
  }

 private:
  void drop(received_fds& fds, std::size_t n) {
    discarded_fds_ += fds.take(n).size();  // closed as they go
  }
  void drop_carried(received_fds& fds) {
    drop(fds, carried_);
    carried_ = 0;
  }

  // `available`: how many of the fds at the front of `fds` may be its.
  void frame(std::span<const std::byte> bytes, received_fds& fds, std::size_t available) {
    inbox_entry e;
    e.offset = frame_pos_;
    e.length = bytes.size();
    auto v = message_view::parse(bytes);
    if (v) {
      e.header_length = v->header_bytes().size();
      e.type = v->type();
      e.reply_serial = v->reply_serial();
      const std::uint32_t want = v->header().unix_fds;
      if (want > max_fds_) {
        e.invalid = error(errc::too_many_fds, error::no_offset, "more than connection_options::max_fds_per_message");
      } else if (want > available) {
        e.invalid = error(errc::bad_fd_index, error::no_offset, "message announces more fds than came with it");
      }
      if (e.invalid) {
        drop(fds, available);  // a refused message hands on no fd, and leaves none to another
        note_refused_call(*v, e);
      } else {
        e.fds = fds.take(want);
      }
      carried_ -= std::min(carried_, e.invalid ? available : std::size_t{want});
    } else {
      e.invalid = v.error();
      // Its fds cannot be told apart from the next message's; those that arrived with it go.
      drop(fds, available);
      carried_ -= std::min(carried_, available);
      read_refused_header(bytes, e);
    }
    for (const unix_fd& fd : e.fds) e.fd_ints.push_back(fd.get());
    entries_.push_back(std::move(e));
  }

  // What the header of a message that failed validation still says. A valid header (the body was
  // at fault) tells everything; otherwise the fields are read up to the first bad one, which is
  // enough when REPLY_SERIAL comes before it.
  static void read_refused_header(std::span<const std::byte> bytes, inbox_entry& e) {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    const auto order = static_cast<byte_order>(p[0]);
    const std::size_t fields_end =
        fixed_header_length + detail::load<std::uint32_t>(p + 12, order != native_byte_order);
    const std::size_t header_len = detail::align_up(fields_end, 8);
    if (auto h = message_view::from_validated(bytes.first(header_len), bytes.subspan(header_len))) {
      e.type = h->type();
      e.reply_serial = h->reply_serial();
      note_refused_call(*h, e);
      return;
    }
    const auto type = static_cast<message_type>(p[1]);
    if (type != message_type::method_return && type != message_type::error) return;
    reader r(bytes.subspan(12, fields_end - 12), order, 12, reader::options{.check_fd_indexes = false});
    const reader::array_cursor fields = r.open_array("(yv)");
    std::uint32_t reply_serial = 0;
    while (r.in_array(fields)) {
      r.open_struct();
      const std::uint8_t code = r.get_byte();
      const signature_view sig = r.open_variant();
      if (r.err()) break;
      if (code == static_cast<std::uint8_t>(header_field::reply_serial)) {
        // Two of them, or one of another type, leave no answer to trust.
        if (reply_serial != 0 || sig.str() != "u") return;
        reply_serial = r.get_fixed<std::uint32_t>();
        if (r.err()) return;
      } else {
        r.skip(sig.str());
      }
      r.close_variant();
      r.close_struct();
    }
    if (reply_serial == 0) return;
    e.type = type;
    e.reply_serial = reply_serial;
  }

  static void note_refused_call(const message_view& m, inbox_entry& e) {
    if (m.type() != message_type::method_call || m.no_reply_expected()) return;
    e.call_serial = m.serial();
    e.call_sender = m.header().sender;
    e.call_destination = m.header().destination;
  }

  // Keeps from the first byte still needed: the oldest entry, or the partial message at the end.
  void make_room(std::size_t incoming) {
    const std::size_t keep_from = entries_.empty() ? frame_pos_ : entries_.front().offset;
    if (depth_ == 0) {
      if (keep_from > 0 && (keep_from == buf_.size() || buf_.size() + incoming > buf_.capacity())) {
        const std::size_t n = buf_.size() - keep_from;
        if (n) std::memmove(buf_.data(), buf_.data() + keep_from, n);
        buf_.resize(n);
        shift(keep_from);
      }
      return;  // growing by realloc is fine: no view is alive
    }
    if (buf_.size() + incoming <= buf_.capacity()) return;
    // A view into buf_ may be alive: move what is needed to a new buffer, retire the old one.
    byte_buffer fresh(2 * (buf_.size() - keep_from + incoming) + 4096);
    fresh.append(buf_.data() + keep_from, buf_.size() - keep_from);
    retired_.push_back(std::move(buf_));
    buf_ = std::move(fresh);
    shift(keep_from);
  }

  void shift(std::size_t by) noexcept {
    for (inbox_entry& e : entries_) e.offset -= by;
    frame_pos_ -= by;
  }

  byte_buffer buf_;
  std::size_t frame_pos_ = 0;  // first byte not yet framed
  std::deque<inbox_entry> entries_;
  std::vector<byte_buffer> retired_;
  unsigned depth_ = 0;
  std::size_t max_fds_;
  std::size_t carried_ = 0;  // fds at the front of received_fds kept for the incomplete message
  std::size_t discarded_fds_ = 0;
  error fatal_;
};

}  // namespace detail
MCBUS_NAMESPACE_END
