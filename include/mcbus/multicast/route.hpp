// mcbus/multicast: one member's stream on the publisher side, as pure logic (no I/O).
//
// Everything a publisher sends a member is one stream in serial order: the signals that match its
// rules, and the messages addressed to it over the bus (replies, signals too large for a packet).
// member_route decides how each entry travels:
//
//   group     packets are written to the member's socket in linked chains; a bus message waits
//             until a marker with its serial has been written, so the member knows its place.
//   overflow  the socket was full. Under overflow_policy::bus (the default) every entry goes over
//             the bus, addressed to the member, in order, until the socket can take packets again;
//             then a marker for the last one goes first. Nothing waits in the publisher and nothing
//             is lost: the bus buffers for the member exactly as it would for a plain subscriber.
//             Under overflow_policy::drop the packets are discarded instead, counted, and a loss
//             notice tells the member which serials it missed.
//
// The publisher drives it with real sockets (publisher.hpp), the simulation test with simulated
// ones. The sink does the I/O: `Entry marker(serial)`, `Entry lost_notice(first, last, count)`,
// `write(std::deque<Entry>&)` (a chain, reported back through on_sent() in order),
// `send_bus(Entry&)` (a packet as a unicast copy, or the bus message itself),
// `watch_writable()`, and `discarded(const Entry&)` (a packet lost under the drop policy).
#pragma once

#include <mcbus/config.hpp>
#include <mcbus/multicast/protocol.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <utility>
#include <vector>

MCBUS_NAMESPACE_BEGIN
namespace multicast {

enum class overflow_policy {
  bus,    // a member whose socket is full is served over the bus until it drains: nothing is lost
  drop,   // its packets are discarded while its socket is full; it is told exactly which
  block,  // emit() waits for it up to block_timeout, then it is served over the bus
};

enum class entry_kind : std::uint8_t {
  packet,  // a signal to write on the socket
  bus,     // a message for the bus (addressed to the member), announced by a marker
  marker,  // written by the route itself
  lost,    // written by the route itself
};

// Serials lost by a member under overflow_policy::drop since its last notice.
struct loss {
  std::uint32_t first = 0;
  std::uint32_t last = 0;
  std::uint32_t count = 0;
};

template <class Entry>  // has `std::uint32_t serial` and `entry_kind kind`
class member_route {
 public:
  static constexpr std::size_t chain_max = 32;  // entries per linked chain

  explicit member_route(overflow_policy policy = overflow_policy::bus) : policy_(policy) {}

  // Adds an entry at the end of the stream.
  template <class Sink>
  void push(Entry e, Sink& sink) {
    if (!full_ || (policy_ == overflow_policy::block && !spilled_)) {
      queue_.push_back(std::move(e));
      return;
    }
    travel_while_full(std::move(e), sink);
  }

  // Starts the next chain, if none is in flight and the socket can take one.
  template <class Sink>
  void flush(Sink& sink) {
    if (!inflight_.empty() || full_) return;
    std::deque<Entry> chain;
    // What happened while the socket was full is announced first, in serial order. A loss notice
    // carries the serial of the last packet lost.
    std::optional<Entry> notice;
    if (lost_.count) {
      notice = sink.lost_notice(lost_.first, lost_.last, lost_.count);
      notice_in_flight_ = lost_;
      lost_ = {};
    }
    if (bus_tail_ && notice && serial_before(notice->serial, *bus_tail_)) {
      chain.push_back(std::move(*notice));
      notice.reset();
    }
    if (bus_tail_) chain.push_back(sink.marker(*bus_tail_));
    if (notice) chain.push_back(std::move(*notice));
    bus_tail_.reset();
    while (!queue_.empty() && chain.size() < chain_max) {
      Entry e = std::move(queue_.front());
      queue_.pop_front();
      if (e.kind == entry_kind::bus) {
        chain.push_back(sink.marker(e.serial));
        after_marker_.push_back(std::move(e));
      } else {
        chain.push_back(std::move(e));
      }
    }
    if (chain.empty()) return;
    inflight_ = std::move(chain);
    status_.assign(inflight_.size(), sent::pending);
    reported_ = 0;
    sink.write(inflight_);
  }

  // Entry `index` of the chain in flight was written (ok) or not (the socket was full, or an
  // earlier entry of the chain was not written). Any other failure means the member closed its
  // end: the caller removes it instead. Once the whole chain has reported, the bus messages whose
  // markers were written go out, and what was not written travels on.
  template <class Sink>
  void on_sent(std::size_t index, bool ok, Sink& sink) {
    if (index >= status_.size() || status_[index] != sent::pending) return;
    status_[index] = ok ? sent::ok : sent::failed;
    if (++reported_ < inflight_.size()) return;
    std::deque<Entry> unsent;
    for (std::size_t i = 0; i < inflight_.size(); ++i) {
      Entry& e = inflight_[i];
      if (status_[i] == sent::failed) {
        unsent.push_back(std::move(e));
      } else if (e.kind == entry_kind::marker && !after_marker_.empty() && after_marker_.front().serial == e.serial) {
        sink.send_bus(after_marker_.front());
        after_marker_.pop_front();
      }
    }
    inflight_.clear();
    status_.clear();
    const std::optional<loss> notice = std::exchange(notice_in_flight_, std::nullopt);
    if (unsent.empty()) return flush(sink);
    full_ = true;
    sink.watch_writable();
    for (auto it = queue_.begin(); it != queue_.end(); ++it) unsent.push_back(std::move(*it));
    queue_.clear();
    // A notice that was not written is announced again, its range before any later loss.
    for (const Entry& u : unsent) {
      if (u.kind == entry_kind::lost && notice) {
        lost_ = lost_.count ? loss{notice->first, lost_.last, notice->count + lost_.count} : *notice;
      }
    }
    if (policy_ == overflow_policy::block) {
      requeue(std::move(unsent));
      return;
    }
    for (Entry& u : unsent) resend_while_full(std::move(u), sink);
  }

  // The socket can take packets again.
  template <class Sink>
  void on_writable(Sink& sink) {
    full_ = false;
    spilled_ = false;
    flush(sink);
  }

  // Under overflow_policy::block, after block_timeout: what waits goes over the bus after all,
  // and so does what follows, until the socket can take packets again.
  template <class Sink>
  void spill(Sink& sink) {
    std::deque<Entry> waiting = std::move(queue_);
    queue_.clear();
    spilled_ = true;
    for (Entry& e : waiting) resend_while_full(std::move(e), sink);
  }

  // The member is gone: the bus messages it was sent still go out (over the bus nothing is lost).
  template <class Sink>
  void close(Sink& sink) {
    for (Entry& e : after_marker_) sink.send_bus(e);
    after_marker_.clear();
    for (Entry& e : queue_) {
      if (e.kind == entry_kind::bus) sink.send_bus(e);
    }
    queue_.clear();
  }

  bool full() const noexcept { return full_; }
  bool busy() const noexcept { return !inflight_.empty(); }
  bool markers_in_flight() const noexcept { return !after_marker_.empty(); }
  std::size_t queued() const noexcept { return queue_.size() + inflight_.size(); }
  const std::deque<Entry>& queue() const noexcept { return queue_; }
  std::deque<Entry>& inflight() noexcept { return inflight_; }
  overflow_policy policy() const noexcept { return policy_; }

 private:
  // While the socket is full: bus messages go at once; packets go as unicast copies (bus policy)
  // or are counted as lost (drop policy).
  template <class Sink>
  void travel_while_full(Entry e, Sink& sink) {
    if (e.kind == entry_kind::packet && policy_ == overflow_policy::drop) {
      if (lost_.count == 0) lost_.first = e.serial;
      lost_.last = e.serial;
      ++lost_.count;
      sink.discarded(e);
      return;
    }
    bus_tail_ = e.serial;
    sink.send_bus(e);
  }

  // An entry that was not written: markers and notices are remade later; a marker's bus message
  // goes out now.
  template <class Sink>
  void resend_while_full(Entry e, Sink& sink) {
    switch (e.kind) {
      case entry_kind::marker:
        if (!after_marker_.empty() && after_marker_.front().serial == e.serial) {
          Entry bus = std::move(after_marker_.front());
          after_marker_.pop_front();
          travel_while_full(std::move(bus), sink);
        } else if (!bus_tail_ || serial_before(*bus_tail_, e.serial)) {
          bus_tail_ = e.serial;  // it announced a message already sent: announce it again later
        }
        return;
      case entry_kind::lost: return;  // on_sent() puts its range back
      case entry_kind::bus:
        bus_tail_ = e.serial;
        sink.send_bus(e);
        return;
      case entry_kind::packet: travel_while_full(std::move(e), sink); return;
    }
  }

  // Under block policy the unsent entries wait in order; a marker's bus message goes back behind
  // it as a bus entry, so that the next chain remakes the marker.
  void requeue(std::deque<Entry> unsent) {
    for (auto it = unsent.rbegin(); it != unsent.rend(); ++it) {
      if (it->kind == entry_kind::marker && !after_marker_.empty() && after_marker_.back().serial == it->serial) {
        queue_.push_front(std::move(after_marker_.back()));
        after_marker_.pop_back();
      } else if (it->kind == entry_kind::packet || it->kind == entry_kind::bus) {
        queue_.push_front(std::move(*it));
      } else if (it->kind == entry_kind::marker) {
        if (!bus_tail_ || serial_before(*bus_tail_, it->serial)) bus_tail_ = it->serial;
      }
    }
  }

 private:
  overflow_policy policy_;
  bool full_ = false;
  bool spilled_ = false;            // block policy: waited long enough, the bus serves until writable
  std::deque<Entry> queue_;         // not yet written
  std::deque<Entry> inflight_;      // the chain being written
  std::deque<Entry> after_marker_;  // bus messages whose marker is in the chain
  enum class sent : std::uint8_t { pending, ok, failed };
  std::vector<sent> status_;  // of each entry in flight
  std::size_t reported_ = 0;
  std::optional<std::uint32_t> bus_tail_;  // the last entry sent over the bus since the last marker
  loss lost_;
  std::optional<loss> notice_in_flight_;
};

}  // namespace multicast
MCBUS_NAMESPACE_END
