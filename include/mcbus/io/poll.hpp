// mcbus/io: the poll(2) transport. Used where io_uring is missing or forbidden (ENOSYS, EPERM,
// seccomp, kernel.io_uring_disabled) or when MCBUS_TRANSPORT=poll. Same behaviour as the io_uring
// transport: sends are queued and written in batches by flush(); receives read until EAGAIN.
#pragma once

#include <mcbus/io/transport.hpp>

#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>

MCBUS_NAMESPACE_BEGIN

class poll_transport {
 public:
  static constexpr const char* name = "poll";
  static constexpr std::size_t chunk_size = 64 * 1024;

  poll_transport() = default;
  // Takes ownership of a connected stream socket.
  explicit poll_transport(unix_fd socket, bool can_pass_fds) : fd_(std::move(socket)), can_pass_fds_(can_pass_fds) {}
  poll_transport(poll_transport&&) noexcept = default;
  poll_transport& operator=(poll_transport&&) noexcept = default;

  static result<poll_transport> open(unix_fd& socket, bool can_pass_fds) {
    if (error e = detail::set_nonblocking(socket.get())) return e;
    return poll_transport(std::move(socket), can_pass_fds);
  }

  int socket() const noexcept { return fd_.get(); }
  int poll_fd() const noexcept { return fd_.get(); }
  bool can_pass_fds() const noexcept { return can_pass_fds_; }
  bool has_pending_output() const noexcept { return !out_.empty(); }
  void enqueue(message&& m) { out_.push(std::move(m)); }

  error flush() {
    while (!out_.empty()) {
      msghdr mh;
      out_.prepare(mh);
      const ssize_t n = ::sendmsg(fd_.get(), &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return {};
        return errno == EPIPE || errno == ECONNRESET ? error(errc::disconnected, error::no_offset, "send")
                                                     : error::from_errno(errno, "sendmsg");
      }
      out_.consume(static_cast<std::size_t>(n));
    }
    return {};
  }

  template <class Sink>
  error wait(int timeout_ms, Sink&& sink) {
    if (error e = flush()) return e;
    pollfd p{fd_.get(), static_cast<short>(POLLIN | (out_.empty() ? 0 : POLLOUT)), 0};
    const int r = ::poll(&p, 1, timeout_ms);
    if (r < 0) return errno == EINTR ? error() : error::from_errno(errno, "poll");
    if (r == 0) return {};
    if (p.revents & POLLOUT) {
      if (error e = flush()) return e;
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) return receive(sink);
    return {};
  }

 private:
  // Reads until the socket is drained, or a bounded number of chunks so that a flood cannot
  // starve the caller's other work.
  template <class Sink>
  error receive(Sink& sink) {
    for (int round = 0; round < 16; ++round) {
      iovec iov{buf_.data(), buf_.size()};
      alignas(cmsghdr) unsigned char control[detail::fd_cmsg_space];
      msghdr mh{};
      mh.msg_iov = &iov;
      mh.msg_iovlen = 1;
      if (can_pass_fds_) {
        mh.msg_control = control;
        mh.msg_controllen = sizeof(control);
      }
      const ssize_t n = ::recvmsg(fd_.get(), &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return {};
        return errno == ECONNRESET ? error(errc::disconnected, error::no_offset, "recv")
                                   : error::from_errno(errno, "recvmsg");
      }
      error fd_error = detail::collect_fds(mh, fds_);
      if (n == 0) return {errc::disconnected, error::no_offset, "peer closed the connection"};
      sink(std::span<const std::byte>(buf_.data(), static_cast<std::size_t>(n)), fds_);
      if (fd_error) return fd_error;
    }
    return {};
  }

  unix_fd fd_;
  bool can_pass_fds_ = false;
  detail::send_queue out_;
  received_fds fds_;
  std::vector<std::byte> buf_ = std::vector<std::byte>(chunk_size);
};

MCBUS_NAMESPACE_END
