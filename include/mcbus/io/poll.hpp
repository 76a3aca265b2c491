// mcbus/io: the poll(2) transport. Used where io_uring is missing or forbidden (ENOSYS, EPERM,
// seccomp, kernel.io_uring_disabled) or when MCBUS_TRANSPORT=poll. Same behaviour as the io_uring
// transport: sends are queued and written in batches by flush(); receives read until EAGAIN;
// packet sockets (multicast groups) are read in batches with recvmmsg().
#pragma once

#include <mcbus/io/packets.hpp>
#include <mcbus/io/transport.hpp>

#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <deque>
#include <memory>
#include <utility>

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
  // With packet sources, a foreign loop polls an epoll fd that covers every socket.
  int poll_fd() const noexcept { return epoll_ ? epoll_.get() : fd_.get(); }
  short poll_events() const noexcept {
    if (epoll_) {
      sync_epoll();
      return POLLIN;
    }
    return static_cast<short>(POLLIN | (out_.empty() ? 0 : POLLOUT));
  }
  bool can_pass_fds() const noexcept { return can_pass_fds_; }
  bool has_pending_output() const noexcept { return !out_.empty(); }
  void enqueue(message&& m) { out_.push(std::move(m)); }
  // While paused, wait() reads nothing from the bus socket (the connection's inbox is full): the
  // socket fills and the peer is pushed back. Sends and packet sockets go on.
  void pause_receiving(bool on) noexcept { receiving_paused_ = on; }

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
    if (!completed_.empty()) timeout_ms = 0;
    // Sources and watches may change inside handlers, deliver_sends() included: act on copies of
    // what was polled, taken with the pollfds. A handler may also wait() again (a blocking call
    // from a signal handler), so each nesting level has its own buffers, reused from turn to turn:
    // a loop turn allocates nothing.
    if (scratch_.size() <= depth_) scratch_.emplace_back();
    poll_scratch& sc = scratch_[depth_];
    struct nesting {
      std::size_t& depth;
      ~nesting() { --depth; }
    } level{++depth_};
    sc.sources.assign(sources_.begin(), sources_.end());
    sc.watches.assign(watches_.begin(), watches_.end());
    sc.pollfds.clear();
    sc.pollfds.push_back(
        {fd_.get(), static_cast<short>((receiving_paused_ ? 0 : POLLIN) | (out_.empty() ? 0 : POLLOUT)), 0});
    for (const source& src : sc.sources) sc.pollfds.push_back({src.fd, POLLIN, 0});
    for (const watch& w : sc.watches) sc.pollfds.push_back({w.fd, POLLOUT, 0});
    const int r = ::poll(sc.pollfds.data(), sc.pollfds.size(), timeout_ms);
    if (r < 0 && errno != EINTR) return error::from_errno(errno, "poll");
    deliver_sends();
    if (r <= 0) return {};
    const std::vector<pollfd>& ready = sc.pollfds;
    // One removed by a handler meanwhile is skipped: its fd may already belong to another.
    const auto registered = [](const auto& now, const auto& polled) {
      return std::any_of(now.begin(), now.end(), [&](const auto& x) { return x.id == polled.id && x.fd == polled.fd; });
    };
    const std::vector<source>& polled_sources = sc.sources;
    const std::vector<watch>& polled_watches = sc.watches;
    for (std::size_t i = 0; i < polled_sources.size(); ++i) {
      if (ready[1 + i].revents && registered(sources_, polled_sources[i])) receive_packets(polled_sources[i]);
    }
    for (std::size_t i = 0; i < polled_watches.size(); ++i) {
      if (!ready[1 + polled_sources.size() + i].revents || !registered(watches_, polled_watches[i])) continue;
      const std::uint32_t id = polled_watches[i].id;
      watches_.erase(std::remove_if(watches_.begin(), watches_.end(), [&](const watch& w) { return w.id == id; }),
                     watches_.end());
      sync_packet_fd(polled_watches[i].fd);
      if (packets_.writable) packets_.writable(id);
    }
    const short bus = ready[0].revents;
    if (bus & POLLOUT) {
      if (error e = flush()) return e;
    }
    if (bus & (POLLIN | POLLHUP | POLLERR)) return receive(sink);
    return {};
  }

  // ---- packet sockets -------------------------------------------------------------------------

  void set_packet_handler(packet_handler h) { packets_ = std::move(h); }

  error add_packet_source(std::uint32_t id, int fd) {
    if (error e = detail::set_nonblocking(fd)) return e;
    sources_.push_back({id, fd});
    if (!packet_buf_) packet_buf_ = std::make_unique_for_overwrite<std::byte[]>(batch * packet_buffer_size);
    ensure_epoll();
    sync_packet_fd(fd);
    return {};
  }

  void remove_packet_source(std::uint32_t id) {
    for (auto it = sources_.begin(); it != sources_.end(); ++it) {
      if (it->id != id) continue;
      const int fd = it->fd;
      sources_.erase(it);
      sync_packet_fd(fd);
      return;
    }
  }

  // Sends a chain of packets to one socket, in order, without blocking. Results arrive through
  // packet_handler::sent on the next wait().
  void send_packets(std::span<packet_send* const> chain) {
    int failed = 0;
    for (packet_send* p : chain) {
      if (failed) {
        completed_.emplace_back(p->token, -ECANCELED);
        continue;
      }
      ssize_t n;
      do {
        n = ::sendmsg(p->fd, &p->mh, MSG_DONTWAIT | MSG_NOSIGNAL);
      } while (n < 0 && errno == EINTR);
      if (n < 0) failed = errno;
      completed_.emplace_back(p->token, n < 0 ? -failed : static_cast<int>(n));
    }
  }

  // Reports the results of packet sends made so far, now.
  void reap_packet_sends() { deliver_sends(); }

  // Reports through packet_handler::writable once `fd` can take packets again.
  void watch_writable(std::uint32_t id, int fd) {
    watches_.push_back({id, fd});
    ensure_epoll();
    sync_packet_fd(fd);
  }

  // Hands every packet already waiting on a source to fn, now (the subscriber's ordering step).
  template <class Fn>
  void drain_packets(std::uint32_t id, Fn&& fn) {
    for (const source& src : sources_) {
      if (src.id != id) continue;
      if (!packet_buf_) return;
      while (true) {
        const ssize_t n = ::recv(src.fd, packet_buf_.get(), packet_buffer_size, MSG_DONTWAIT);
        if (n <= 0) return;  // nothing more, or EOF (reported by the next wait)
        fn(std::span<const std::byte>(packet_buf_.get(), static_cast<std::size_t>(n)));
      }
    }
  }

 private:
  // Reads until the socket is drained, or a bounded number of chunks so that a flood cannot
  // starve the caller's other work.
  template <class Sink>
  error receive(Sink& sink) {
    for (int round = 0; round < 16 && !receiving_paused_; ++round) {
      iovec iov{buf_.get(), chunk_size};
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
      sink(std::span<const std::byte>(buf_.get(), static_cast<std::size_t>(n)), fds_);
      if (fd_error) return fd_error;
    }
    return {};
  }

  static constexpr std::size_t batch = 16;                      // packets per recvmmsg()
  static constexpr std::size_t packet_buffer_size = 64 * 1024;  // > max_packet_size: no truncation

  struct source {
    std::uint32_t id;
    int fd;
  };
  struct watch {
    std::uint32_t id;
    int fd;
  };

  void deliver_sends() {
    auto done = std::move(completed_);
    completed_.clear();
    for (const auto& [token, res] : done) {
      if (packets_.sent) packets_.sent(token, res);
    }
  }

  void receive_packets(const source& src) {
    mmsghdr msgs[batch];
    iovec iov[batch];
    for (int round = 0; round < 4; ++round) {  // bounded: other sources get their turn
      for (std::size_t i = 0; i < batch; ++i) {
        iov[i] = {packet_buf_.get() + i * packet_buffer_size, packet_buffer_size};
        msgs[i] = {};
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
      }
      const int n = ::recvmmsg(src.fd, msgs, batch, MSG_DONTWAIT, nullptr);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        return close_source(src.id, error::from_errno(errno, "recvmmsg on a packet socket"));
      }
      for (int i = 0; i < n; ++i) {
        if (msgs[i].msg_len == 0)
          return close_source(src.id, error(errc::disconnected, error::no_offset, "group closed"));
        if (packets_.packet)
          packets_.packet(src.id,
                          std::span<const std::byte>(packet_buf_.get() + i * packet_buffer_size, msgs[i].msg_len));
      }
      if (n == 0) return close_source(src.id, error(errc::disconnected, error::no_offset, "group closed"));
      if (static_cast<std::size_t>(n) < batch) return;
    }
  }

  void close_source(std::uint32_t id, const error& why) {
    remove_packet_source(id);
    if (packets_.closed) packets_.closed(id, why);
  }

  void ensure_epoll() {
    if (epoll_) return;
    epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    epoll_add(fd_.get(), EPOLLIN);
  }
  void epoll_add(int fd, std::uint32_t events) const {
    if (!epoll_) return;
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0 && errno == EEXIST) {
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev);
    }
  }
  // One epoll entry per packet socket, asking for what its source and its watches need together:
  // a publisher both watches a member's socket for room and reads it for hang-up.
  void sync_packet_fd(int fd) const {
    if (!epoll_) return;
    std::uint32_t events = 0;
    for (const source& src : sources_) events |= src.fd == fd ? EPOLLIN : 0u;
    for (const watch& w : watches_) events |= w.fd == fd ? EPOLLOUT : 0u;
    if (events == 0) {
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
      return;
    }
    epoll_add(fd, events);
  }
  // The bus socket's entry asks for EPOLLOUT only while output is pending.
  void sync_epoll() const {
    const bool want_out = !out_.empty();
    if (want_out == epoll_wants_out_) return;
    epoll_wants_out_ = want_out;
    epoll_event ev{};
    ev.events = want_out ? (EPOLLIN | EPOLLOUT) : static_cast<std::uint32_t>(EPOLLIN);
    ev.data.fd = fd_.get();
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd_.get(), &ev);
  }

  bool receiving_paused_ = false;
  unix_fd fd_;
  bool can_pass_fds_ = false;
  detail::send_queue out_;
  received_fds fds_;
  // Not value-initialized: recvmsg overwrites what it uses, and pages never written stay out of
  // the process's resident memory (a zeroed vector made all 64 KiB resident in every connection,
  // and in the poll_transport that auto_transport default-constructs). docs/embedded.md.
  std::unique_ptr<std::byte[]> buf_ = std::make_unique_for_overwrite<std::byte[]>(chunk_size);
  packet_handler packets_;
  std::vector<source> sources_;
  std::vector<watch> watches_;
  std::vector<std::pair<std::uint64_t, int>> completed_;
  struct poll_scratch {
    std::vector<source> sources;
    std::vector<watch> watches;
    std::vector<pollfd> pollfds;
  };
  std::deque<poll_scratch> scratch_;  // one per nesting level of wait(); a deque keeps them in place
  std::size_t depth_ = 0;
  std::unique_ptr<std::byte[]> packet_buf_;
  unix_fd epoll_;
  mutable bool epoll_wants_out_ = false;
};

MCBUS_NAMESPACE_END
