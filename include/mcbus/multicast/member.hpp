// mcbus/multicast: the member side of a group: the sockets a connection joined, and the rule that
// keeps a publisher's messages in serial order across its two paths.
//
// A publisher's messages reach a member on the group socket (in order) and over the bus (in
// order): replies, unicast fallbacks, and broadcast copies that other subscriptions see. Before
// a message from the bus is handled, the packets that arrived before it are taken from the socket
// and handled first, and any later ones are held back. A Unicast marker in the packet stream says
// that the message with that serial comes over the bus: packets after it wait until it has.
#pragma once

#include <mcbus/error.hpp>
#include <mcbus/multicast/protocol.hpp>
#include <mcbus/wire/message.hpp>
#include <mcbus/wire/unix_fd.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

MCBUS_NAMESPACE_BEGIN
namespace multicast {

struct membership {
  std::string publisher;  // the publisher's unique name: the SENDER of every packet
  std::string joined_as;  // the name Join was called on (well-known or unique)
  unix_fd socket;
  std::uint32_t source = 0;
  std::uint32_t max_packet = 0;
  std::vector<std::string> rules;
  // A marker announced this serial over the bus; packets wait until it has been handled.
  std::uint32_t awaiting = 0;
  bool awaiting_set = false;
  std::chrono::steady_clock::time_point awaiting_since;
  std::deque<std::vector<std::byte>> held;  // packets waiting their turn (copies)
  std::uint64_t packets = 0;
  std::uint64_t markers = 0;
};

// Delivers a valid packet's message; the view lives only during the call.
using packet_delivery = std::function<void(membership&, const message_view&)>;
using packet_problem = std::function<void(membership&, const error&)>;

class membership_set {
 public:
  membership& add(std::string publisher, std::string joined_as, unix_fd socket, std::uint32_t max_packet) {
    const std::uint32_t id = ++next_source_;
    membership& m = by_publisher_[publisher];
    m = membership{};
    m.publisher = std::move(publisher);
    m.joined_as = std::move(joined_as);
    m.socket = std::move(socket);
    m.source = id;
    m.max_packet = max_packet;
    return m;
  }

  void remove(std::string_view publisher) {
    auto it = by_publisher_.find(publisher);
    if (it != by_publisher_.end()) by_publisher_.erase(it);
  }

  membership* find(std::string_view publisher) {
    auto it = by_publisher_.find(publisher);
    return it == by_publisher_.end() ? nullptr : &it->second;
  }
  const membership* find(std::string_view publisher) const {
    auto it = by_publisher_.find(publisher);
    return it == by_publisher_.end() ? nullptr : &it->second;
  }
  membership* by_source(std::uint32_t source) {
    for (auto& [name, m] : by_publisher_) {
      if (m.source == source) return &m;
    }
    return nullptr;
  }
  bool empty() const noexcept { return by_publisher_.empty(); }
  std::map<std::string, membership, std::less<>>& all() noexcept { return by_publisher_; }

  // A packet arrived on the group socket.
  void on_packet(membership& m, std::span<const std::byte> bytes, const packet_delivery& deliver,
                 const packet_problem& problem) {
    ++m.packets;
    if (m.awaiting_set || !m.held.empty()) {
      m.held.emplace_back(bytes.begin(), bytes.end());
      release(m, nullptr, deliver, problem);
      return;
    }
    handle(m, bytes, deliver, problem);
  }

  // A message from the publisher came over the bus with `serial`: first handle the packets that
  // are older. `drain(fn)` must hand every packet already received on the socket to fn.
  template <class Drain>
  void before_bus_message(membership& m, std::uint32_t serial, Drain&& drain, const packet_delivery& deliver,
                          const packet_problem& problem) {
    drain([&](std::span<const std::byte> bytes) { m.held.emplace_back(bytes.begin(), bytes.end()); });
    release(m, &serial, deliver, problem);
  }

  // The bus message with `serial` was handled: packets held back for it go on.
  void after_bus_message(membership& m, std::uint32_t serial, const packet_delivery& deliver,
                         const packet_problem& problem) {
    if (m.awaiting_set && m.awaiting == serial) m.awaiting_set = false;
    release(m, nullptr, deliver, problem);
  }

  // A marker has waited too long for its bus message (the bus refused it, or the publisher died):
  // report it and let the packets go on rather than hold them forever.
  void expire(std::chrono::steady_clock::duration limit, const packet_delivery& deliver,
              const packet_problem& problem) {
    const auto now = std::chrono::steady_clock::now();
    for (auto& [name, m] : by_publisher_) {
      if (!m.awaiting_set || now - m.awaiting_since < limit) continue;
      m.awaiting_set = false;
      problem(
          m, error(errc::timeout, error::no_offset, "a message announced by a Unicast marker never came over the bus"));
      release(m, nullptr, deliver, problem);
    }
  }

 private:
  // Handles held packets in order, stopping at a marker whose message has not come yet, or (with
  // `before`) at the first packet that is not older than the bus message about to be handled.
  void release(membership& m, const std::uint32_t* before, const packet_delivery& deliver,
               const packet_problem& problem) {
    while (!m.held.empty() && !m.awaiting_set) {
      auto v = message_view::parse(m.held.front());
      if (v && before && !serial_before(v->serial(), *before)) {
        // The marker announcing this very bus message has done its job; anything else is newer.
        if (is_marker(*v) && v->serial() == *before) {
          m.held.pop_front();
          ++m.markers;
          continue;
        }
        break;
      }
      std::vector<std::byte> bytes = std::move(m.held.front());
      m.held.pop_front();
      handle(m, bytes, deliver, problem);
    }
  }

  void handle(membership& m, std::span<const std::byte> bytes, const packet_delivery& deliver,
              const packet_problem& problem) {
    auto v = message_view::parse(bytes);
    if (!v) return problem(m, v.error().in("multicast packet"));
    if (v->header().sender != m.publisher) {
      return problem(m, error(errc::invalid_argument, error::no_offset, "packet does not carry the publisher's name"));
    }
    if (is_marker(*v)) {
      ++m.markers;
      m.awaiting = v->serial();
      m.awaiting_set = true;
      m.awaiting_since = std::chrono::steady_clock::now();
      return;
    }
    deliver(m, *v);
  }

  std::map<std::string, membership, std::less<>> by_publisher_;
  std::uint32_t next_source_ = 0;
};

}  // namespace multicast
MCBUS_NAMESPACE_END
