// mcbus/multicast: the member side's ordering rules, as pure logic (no I/O, no message parsing).
//
// A publisher's messages reach a member on two paths: packets on the group socket, and messages
// over the bus addressed to the member (replies, unicast fallbacks, everything while the member's
// socket is full). Each path is in serial order on its own; stream_merge puts them back into one.
// delivery_gate then decides, per subscription, which path serves it, so that a handler sees each
// signal once and in serial order across a join, an overflow, or a group lost.
//
// Both are driven by the connection and, with the same code, by the simulation test
// (tests/multicast/simulation_test.cpp), which checks the contract on millions of schedules.
#pragma once

#include <mcbus/config.hpp>
#include <mcbus/error.hpp>
#include <mcbus/multicast/protocol.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>

MCBUS_NAMESPACE_BEGIN
namespace multicast {

// What a packet on the group socket is. Markers and loss notices are the protocol's own packets
// (docs/multicast-protocol.md); everything else is a signal for the subscriptions.
enum class packet_kind : std::uint8_t {
  signal,  // a signal for the subscriptions
  marker,  // "the message with my serial comes to you over the bus; wait for it"
  lost,    // "I discarded packets for you" (only under overflow_policy::drop)
};

// Where a message reached the member from.
enum class origin : std::uint8_t {
  packet,     // the group socket
  unicast,    // over the bus, addressed to this connection
  broadcast,  // over the bus, addressed to nobody (a bus copy, or any ordinary signal)
  // A bus copy that only `last` judges:
  //  - from a publisher whose group socket has reached its end while a re-join is under way. The
  //    socket gave all it ever will, so a serial after the last one handed on came only this way:
  //    the publisher died with it unwritten, its bus copy already out;
  //  - held from a new owner of a name until its replay was in: the replay handed on what it
  //    had, and a held copy after that is one the replay did not have.
  backfill,
};

// How much a member holds behind a Unicast marker, and for how long, before it gives the marker up.
struct hold_limits {
  std::chrono::steady_clock::duration wait;
  std::size_t packets;
  std::size_t bytes;
};

// Merges one publisher's group socket with its bus messages to us. `Held` is what a packet that
// must wait keeps: it has `serial` and `kind` members (the connection keeps the bytes, the
// simulation an index). Serials are checked here: a packet whose serial is not after the previous
// packet's is refused, so that a broken or hostile publisher cannot replay or reorder.
template <class Held>
class stream_merge {
 public:
  using clock = std::chrono::steady_clock;

  // A packet arrived. Sink: `Held hold()` copies the current packet; `deliver_current()` hands it
  // on now; `deliver(Held&)` hands on a held one; `problem(error)` reports a refusal.
  template <class Sink>
  void on_packet(std::uint32_t serial, packet_kind kind, Sink& sink) {
    if (!accept_serial(serial, sink)) return;
    if (awaiting_ || !held_.empty()) {
      push(sink.hold());
      release(nullptr, sink);
      return;
    }
    if (kind == packet_kind::marker) return on_marker(serial);
    sink.deliver_current();
  }

  // A packet taken from the socket ahead of a bus message (see before_unicast): it waits its turn.
  template <class Sink>
  void on_drained(std::uint32_t serial, Sink& sink) {
    if (accept_serial(serial, sink)) push(sink.hold());
  }

  // A message addressed to us from the publisher, with `serial`, is about to be handled. The
  // caller has first passed every packet already on the socket to on_drained(): those older than
  // it are handled now, newer ones wait until after_unicast().
  template <class Sink>
  void before_unicast(std::uint32_t serial, Sink& sink) {
    release(&serial, sink);
  }

  // That message was handled: a marker waiting for it is satisfied, and held packets go on.
  template <class Sink>
  void after_unicast(std::uint32_t serial, Sink& sink) {
    last_unicast_ = serial;
    if (awaiting_ && *awaiting_ == serial) awaiting_.reset();
    release(nullptr, sink);
  }

  // A marker waited longer than `limits.wait`, or more packets or bytes than the limits allow
  // piled up behind it: the bus message it announced is not coming (the bus refused it, the
  // publisher died, or the publisher is hostile). Reported, and the packets go on rather than wait
  // forever or without bound.
  template <class Sink>
  bool expire(clock::time_point now, const hold_limits& limits, Sink& sink) {
    if (!awaiting_) return false;
    const bool late = now - awaiting_since_ >= limits.wait;
    if (!late && !over(limits)) return false;
    sink.problem(error(errc::timeout, error::no_offset,
                       late ? "a message announced by a Unicast marker never came over the bus"
                            : "too much held behind a Unicast marker whose message has not come over the bus"));
    // Markers held behind it are given up too while the limits are still passed: a publisher that
    // sends many markers before its flood gets no more held than one.
    do {
      awaiting_.reset();
      release(nullptr, sink);
    } while (over(limits));
    return true;
  }
  // Checked after each packet, so that a publisher cannot make the member hold more than the
  // limits between two timer turns.
  bool over(const hold_limits& limits) const noexcept {
    return awaiting_ && (held_.size() > limits.packets || held_bytes_ > limits.bytes);
  }

  // The publisher is gone: no message it announced can still come. Everything held goes on.
  template <class Sink>
  void release_all(Sink& sink) {
    awaiting_.reset();
    release(nullptr, sink);
  }

  bool waiting() const noexcept { return awaiting_.has_value(); }
  // When expire() gives up the marker now awaited, if any: for the loop's timeout.
  std::optional<clock::time_point> gives_up_at(clock::duration limit) const {
    if (!awaiting_) return std::nullopt;
    return awaiting_since_ + limit;
  }
  std::size_t held() const noexcept { return held_.size(); }
  std::size_t held_bytes() const noexcept { return held_bytes_; }
  std::optional<std::uint32_t> last_packet() const noexcept { return last_packet_; }

 private:
  template <class Sink>
  bool accept_serial(std::uint32_t serial, Sink& sink) {
    if (last_packet_ && !serial_before(*last_packet_, serial)) {
      sink.problem(error(errc::invalid_argument, error::no_offset,
                         serial == *last_packet_ ? "multicast packet repeats a serial"
                                                 : "multicast packet's serial is older than the previous one"));
      return false;
    }
    last_packet_ = serial;
    return true;
  }

  // Bytes count where `Held` keeps them (the connection); the simulation's Held keeps none.
  static std::size_t size_of(const Held& h) noexcept {
    if constexpr (requires { h.bytes.size(); }) {
      return h.bytes.size();
    } else {
      return 0;
    }
  }
  void push(Held&& h) {
    held_bytes_ += size_of(h);
    held_.push_back(std::move(h));
  }
  Held pop() {
    Held h = std::move(held_.front());
    held_.pop_front();
    held_bytes_ -= size_of(h);
    return h;
  }

  void on_marker(std::uint32_t serial) {
    // Its message may have come first (it went over the bus before the marker was written).
    if (last_unicast_ && !serial_before(*last_unicast_, serial)) return;
    awaiting_ = serial;
    awaiting_since_ = clock::now();
  }

  // Handles held packets in order, stopping at a marker whose message has not come yet or (with
  // `before`) at the first packet that is not older than the bus message about to be handled.
  template <class Sink>
  void release(const std::uint32_t* before, Sink& sink) {
    while (!held_.empty() && !awaiting_) {
      Held& h = held_.front();
      if (before && !serial_before(h.serial, *before)) {
        if (h.kind == packet_kind::marker && h.serial == *before) {
          pop();  // the marker of the very message about to be handled
          continue;
        }
        break;
      }
      Held next = pop();
      if (next.kind == packet_kind::marker) {
        on_marker(next.serial);
      } else {
        sink.deliver(next);
      }
    }
  }

  std::deque<Held> held_;
  std::size_t held_bytes_ = 0;
  std::optional<std::uint32_t> last_packet_;
  std::optional<std::uint32_t> last_unicast_;
  std::optional<std::uint32_t> awaiting_;
  clock::time_point awaiting_since_{};
};

// Per subscription: which path serves it, and the serial boundary between the paths.
//
// A subscription always starts on the bus (AddMatch), so that a signal emitted after subscribe()
// returns is delivered whatever the group does. When the Join that carries its rule is answered
// with serial R, the publisher has installed the rule before emitting anything after R: from then
// on packets with serials after R serve it, and bus copies after R are left to the group. Copies
// before R came on the bus, before the reply. If the group is lost the subscription goes back to
// the bus. `last` makes duplicates and inversions impossible whatever a path does: a message from
// the publisher is handed on only if its serial is after the last one handed on.
struct delivery_gate {
  std::string publisher;  // the unique name whose group serves (or is to serve) the subscription
  bool in_group = false;
  std::uint32_t joined_at = 0;  // serial of the Join reply that put the rule in place
  bool replayed = false;        // that Join asked for a replay (join_replay)
  std::optional<std::uint32_t> last;

  // Serves the subscription from `name`'s group (from serial `reply` on); a new publisher starts
  // a new sequence. `replayed`: the Join asked for a replay, so packets from before the reply
  // serve it too, and every bus copy is left to the group (those before the reply were held, and
  // come back as origin::backfill).
  void join(std::string_view name, std::uint32_t reply, bool replay = false) {
    follow(name);
    in_group = true;
    replayed = replay;
    joined_at = reply;
  }
  // Back to the bus (the group was lost, or the rule's sender now names someone else).
  void leave() noexcept { in_group = replayed = false; }
  // The publisher-to-be, before its group serves us: its bus messages count for `last`.
  void follow(std::string_view name) {
    if (publisher != name) {
      publisher.assign(name);
      last.reset();
      in_group = replayed = false;
    }
  }

  bool accept(origin from, std::string_view sender, std::uint32_t serial) {
    if (sender != publisher || publisher.empty()) return from != origin::packet;
    if (from == origin::packet && (!in_group || (!replayed && !serial_before(joined_at, serial)))) return false;
    // (origin::backfill passes here: only `last` decides.)
    if (from == origin::broadcast && in_group && (replayed || !serial_before(serial, joined_at))) return false;
    // A message in the group's stream from before the reply (a replay sent over the bus) is for
    // the subscriptions the replay serves: the others had their rule on the bus then.
    if (from == origin::unicast && in_group && !replayed && !serial_before(joined_at, serial)) return false;
    if (last && !serial_before(*last, serial)) return false;
    last = serial;
    return true;
  }
};

}  // namespace multicast
MCBUS_NAMESPACE_END
