// mcbus/io: run-time choice between the io_uring and poll transports.
//
// io_uring is tried first; if io_uring_setup() fails (ENOSYS, EPERM, seccomp,
// kernel.io_uring_disabled) the poll transport takes over with the same behaviour.
// MCBUS_TRANSPORT=poll or MCBUS_TRANSPORT=uring forces one (uring then fails instead of falling back).
#pragma once

#include <mcbus/io/poll.hpp>
#include <mcbus/io/uring.hpp>

#include <cstdlib>
#include <string_view>
#include <variant>

MCBUS_NAMESPACE_BEGIN

enum class transport_choice { automatic, uring, poll };

inline result<transport_choice> transport_choice_from_env() {
  const char* v = std::getenv("MCBUS_TRANSPORT");
  if (!v || !*v) return transport_choice::automatic;
  const std::string_view s(v);
  if (s == "poll") return transport_choice::poll;
  if (s == "uring" || s == "io_uring") return transport_choice::uring;
  return error(errc::invalid_argument, error::no_offset, "MCBUS_TRANSPORT must be poll or uring");
}

class auto_transport {
 public:
  auto_transport() = default;

  static result<auto_transport> open(unix_fd& socket, bool can_pass_fds,
                                     transport_choice choice = transport_choice::automatic) {
    if (choice == transport_choice::automatic) {
      auto env = transport_choice_from_env();
      if (!env) return env.error();
      choice = *env;
    }
    auto_transport t;
    if (choice != transport_choice::poll) {
      auto u = uring_transport::open(socket, can_pass_fds);
      if (u) {
        t.impl_.emplace<uring_transport>(std::move(*u));
        return t;
      }
      if (choice == transport_choice::uring) return u.error();
    }
    auto p = poll_transport::open(socket, can_pass_fds);
    if (!p) return p.error();
    t.impl_.emplace<poll_transport>(std::move(*p));
    return t;
  }

  const char* name() const noexcept {
    return std::visit([](const auto& t) -> const char* { return t.name; }, impl_);
  }
  bool is_uring() const noexcept { return std::holds_alternative<uring_transport>(impl_); }
  int socket() const noexcept {
    return std::visit([](const auto& t) { return t.socket(); }, impl_);
  }
  int poll_fd() const noexcept {
    return std::visit([](const auto& t) { return t.poll_fd(); }, impl_);
  }
  bool can_pass_fds() const noexcept {
    return std::visit([](const auto& t) { return t.can_pass_fds(); }, impl_);
  }
  bool has_pending_output() const noexcept {
    return std::visit([](const auto& t) { return t.has_pending_output(); }, impl_);
  }
  void enqueue(message&& m) {
    std::visit([&](auto& t) { t.enqueue(std::move(m)); }, impl_);
  }
  void pause_receiving(bool on) noexcept {
    std::visit([&](auto& t) { t.pause_receiving(on); }, impl_);
  }
  error flush() {
    return std::visit([](auto& t) { return t.flush(); }, impl_);
  }
  template <class Sink>
  error wait(int timeout_ms, Sink&& sink) {
    return std::visit([&](auto& t) { return t.wait(timeout_ms, sink); }, impl_);
  }
  // Work in hand that makes no fd readable (see uring_transport::has_work): poll again at once.
  bool has_work() const noexcept {
    return std::visit(
        [](const auto& t) {
          if constexpr (requires { t.has_work(); }) {
            return t.has_work();
          } else {
            return false;
          }
        },
        impl_);
  }
  short poll_events() const noexcept {
    return std::visit([](const auto& t) { return t.poll_events(); }, impl_);
  }

  void set_packet_handler(packet_handler h) {
    std::visit([&](auto& t) { t.set_packet_handler(std::move(h)); }, impl_);
  }
  error add_packet_source(std::uint32_t id, int fd) {
    return std::visit([&](auto& t) { return t.add_packet_source(id, fd); }, impl_);
  }
  void remove_packet_source(std::uint32_t id) {
    std::visit([&](auto& t) { t.remove_packet_source(id); }, impl_);
  }
  void send_packets(std::span<packet_send* const> chain) {
    std::visit([&](auto& t) { t.send_packets(chain); }, impl_);
  }
  void reap_packet_sends() {
    std::visit([](auto& t) { t.reap_packet_sends(); }, impl_);
  }
  void watch_writable(std::uint32_t id, int fd) {
    std::visit([&](auto& t) { t.watch_writable(id, fd); }, impl_);
  }
  template <class Fn>
  void drain_packets(std::uint32_t id, Fn&& fn) {
    std::visit([&](auto& t) { t.drain_packets(id, fn); }, impl_);
  }

 private:
  std::variant<poll_transport, uring_transport> impl_;
};

MCBUS_NAMESPACE_END
