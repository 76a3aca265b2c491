// mcbus/io: what a transport is, and the pieces both transports share.
//
// A transport moves bytes and fds between a connected stream socket and the connection. It never
// parses messages. The connection hands it sealed messages to send and receives chunks of bytes
// (with the fds that arrived beside them) through a callback. Two transports implement this:
// uring_transport (io_uring: batched sends, multishot receives into a provided buffer ring) and
// poll_transport (poll(2), sendmsg(2), recvmsg(2)), used where io_uring is absent or forbidden.
//
//   concept transport:
//     int socket() const;              the connected socket
//     int poll_fd() const;             what a foreign event loop polls (readable = work to do)
//     bool can_pass_fds() const;
//     void enqueue(message&&);         queue a sealed message; nothing is sent until flush()
//     void pause_receiving(bool);      while on, wait() reads nothing from the socket (the peer is
//                                      pushed back); sends go on
//     bool has_pending_output() const;
//     error flush();                   start sending what is queued (never blocks)
//     error wait(int timeout_ms, Sink&& sink);
//         waits up to timeout_ms (0: do not wait, -1: forever) for I/O, makes progress on sends,
//         and calls sink(std::span<const std::byte> bytes, received_fds& fds) for each chunk
//         received. Returns errc::disconnected once the peer has closed the stream.
#pragma once

#include <mcbus/error.hpp>
#include <mcbus/wire/message.hpp>
#include <mcbus/wire/unix_fd.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <deque>
#include <span>
#include <vector>

MCBUS_NAMESPACE_BEGIN

// Fds that arrived with received bytes, in arrival order. The connection takes as many as each
// message's UNIX_FDS field says, which is how libdbus and the buses pair them up.
class received_fds {
 public:
  void push(int fd) { fds_.emplace_back(fd); }
  std::size_t size() const noexcept { return fds_.size(); }
  bool empty() const noexcept { return fds_.empty(); }
  // Moves the first n fds out; fewer if fewer arrived.
  std::vector<unix_fd> take(std::size_t n) {
    std::vector<unix_fd> out;
    n = n < fds_.size() ? n : fds_.size();
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      out.push_back(std::move(fds_.front()));
      fds_.pop_front();
    }
    return out;
  }
  void clear() noexcept { fds_.clear(); }

 private:
  std::deque<unix_fd> fds_;
};

namespace detail {

// Control-message space for max_fds_per_message fds.
inline constexpr std::size_t fd_cmsg_space = CMSG_SPACE(sizeof(int) * max_fds_per_message);

// Collects the SCM_RIGHTS fds of a received msghdr. Anything else in the control data is ignored,
// and truncated control data (MSG_CTRUNC) is reported: fds would have been lost.
inline error collect_fds(const msghdr& mh, received_fds& out) {
  for (cmsghdr* c = CMSG_FIRSTHDR(const_cast<msghdr*>(&mh)); c; c = CMSG_NXTHDR(const_cast<msghdr*>(&mh), c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* data = CMSG_DATA(c);
    for (std::size_t i = 0; i < n; ++i) {
      int fd;
      std::memcpy(&fd, data + i * sizeof(int), sizeof(int));
      out.push(fd);
    }
  }
  if (mh.msg_flags & MSG_CTRUNC) return {errc::too_many_fds, error::no_offset, "fds were truncated on receive"};
  return {};
}

// The queue of messages waiting to be written to a stream socket. It hands out batches for one
// sendmsg(): fd-less messages are batched, up to max_iov iovecs; a message that carries fds goes
// alone, so that its fds travel with its first byte and with nothing after it (dbus-broker
// closes the connection otherwise).
class send_queue {
 public:
  static constexpr std::size_t max_iov = 64;

  bool empty() const noexcept { return queue_.empty(); }
  std::size_t size() const noexcept { return queue_.size(); }
  void push(message&& m) { queue_.push_back(std::move(m)); }

  // Fills mh (and the iovec/control storage this object owns) with the next batch.
  // Returns the batch's byte count; 0 if the queue is empty.
  std::size_t prepare(msghdr& mh) {
    iov_count_ = 0;
    std::size_t bytes = 0;
    std::memset(&mh, 0, sizeof(mh));
    for (std::size_t i = 0; i < queue_.size() && iov_count_ + 2 <= max_iov; ++i) {
      message& m = queue_[i];
      if (i > 0 && (!m.fds().empty() || !queue_[0].fds().empty())) break;
      const std::size_t skip = i == 0 ? front_sent_ : 0;
      bytes += add_span(m.header_bytes(), skip);
      bytes += add_span(m.body_bytes(), skip > m.header_bytes().size() ? skip - m.header_bytes().size() : 0);
    }
    mh.msg_iov = iov_;
    mh.msg_iovlen = iov_count_;
    message& first = queue_.front();
    if (front_sent_ == 0 && !first.fds().empty()) {
      const std::size_t n = first.fds().size();
      std::memset(control_, 0, sizeof(control_));
      mh.msg_control = control_;
      mh.msg_controllen = CMSG_SPACE(sizeof(int) * n);
      cmsghdr* c = CMSG_FIRSTHDR(&mh);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * n);
      for (std::size_t k = 0; k < n; ++k) {
        const int fd = first.fds()[k].get();
        std::memcpy(CMSG_DATA(c) + k * sizeof(int), &fd, sizeof(int));
      }
    }
    return bytes;
  }

  // Records that n bytes of the prepared batch went out; drops messages sent completely.
  void consume(std::size_t n) {
    while (n > 0 && !queue_.empty()) {
      const std::size_t left = queue_.front().size() - front_sent_;
      if (n < left) {
        front_sent_ += n;
        return;
      }
      n -= left;
      queue_.pop_front();
      front_sent_ = 0;
    }
  }

  void clear() {
    queue_.clear();
    front_sent_ = 0;
  }

 private:
  std::size_t add_span(std::span<const std::byte> s, std::size_t skip) {
    if (skip >= s.size()) return 0;
    iov_[iov_count_].iov_base = const_cast<std::byte*>(s.data() + skip);
    iov_[iov_count_].iov_len = s.size() - skip;
    ++iov_count_;
    return s.size() - skip;
  }

  std::deque<message> queue_;
  std::size_t front_sent_ = 0;  // bytes of the front message already written
  iovec iov_[max_iov];
  std::size_t iov_count_ = 0;
  alignas(cmsghdr) unsigned char control_[fd_cmsg_space];
};

inline int to_poll_timeout(std::chrono::steady_clock::time_point deadline) {
  const auto now = std::chrono::steady_clock::now();
  if (deadline <= now) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
  return ms > 0x7fffffff ? 0x7fffffff : static_cast<int>(ms);
}

// Blocking helpers for the authentication phase, which runs before the transport takes over.
inline error write_all(int fd, std::span<const std::byte> data, std::chrono::steady_clock::time_point deadline) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return error::from_errno(errno, "send during authentication");
    pollfd p{fd, POLLOUT, 0};
    const int r = ::poll(&p, 1, to_poll_timeout(deadline));
    if (r == 0) return {errc::timeout, error::no_offset, "authentication"};
    if (r < 0 && errno != EINTR) return error::from_errno(errno, "poll during authentication");
  }
  return {};
}

inline result<std::size_t> read_some(int fd, std::span<std::byte> into,
                                     std::chrono::steady_clock::time_point deadline) {
  while (true) {
    const ssize_t n = ::recv(fd, into.data(), into.size(), MSG_DONTWAIT);
    if (n > 0) return static_cast<std::size_t>(n);
    if (n == 0) return error(errc::disconnected, error::no_offset, "closed during authentication");
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return error::from_errno(errno, "recv during authentication");
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, to_poll_timeout(deadline));
    if (r == 0) return error(errc::timeout, error::no_offset, "authentication");
    if (r < 0 && errno != EINTR) return error::from_errno(errno, "poll during authentication");
  }
}

inline error set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return error::from_errno(errno, "fcntl O_NONBLOCK");
  return {};
}

}  // namespace detail

MCBUS_NAMESPACE_END
