// mcbus/io: the io_uring transport (liburing).
//
// Receives: one multishot recvmsg into a ring of provided buffers, so the socket is read without a
// syscall per message and fds arrive in the same completion as their bytes. Kernels without
// buffer rings or multishot recvmsg (before 6.0) get a single-shot recvmsg re-armed after each
// completion. Sends: all messages queued in one loop iteration go out in one sendmsg (one SQE),
// submitted together with the wait, so a method call and the wait for its reply cost a single
// io_uring_enter().
//
// open() fails when io_uring_setup() does (ENOSYS, EPERM, seccomp, kernel.io_uring_disabled);
// the connection then falls back to poll_transport.
#pragma once

#include <mcbus/io/packets.hpp>
#include <mcbus/io/transport.hpp>

#if __has_include(<liburing.h>)
#include <liburing.h>
#define MCBUS_HAS_LIBURING 1
#else
#define MCBUS_HAS_LIBURING 0
#endif

#include <poll.h>
#include <sys/mman.h>

#include <cerrno>
#include <deque>
#include <memory>
#include <utility>
#include <vector>

MCBUS_NAMESPACE_BEGIN

#if MCBUS_HAS_LIBURING

class uring_transport {
 public:
  static constexpr const char* name = "io_uring";
  static constexpr unsigned buffer_count = 16;        // provided buffers (a power of two)
  static constexpr unsigned buffer_size = 32 * 1024;  // bytes each, control data included
  static constexpr unsigned ring_entries = 256;       // room for a chain per member between submits

  uring_transport(const uring_transport&) = delete;
  uring_transport& operator=(const uring_transport&) = delete;
  uring_transport(uring_transport&& o) noexcept { *this = std::move(o); }
  uring_transport& operator=(uring_transport&& o) noexcept {
    if (this != &o) {
      destroy();
      state_ = std::move(o.state_);
    }
    return *this;
  }
  ~uring_transport() { destroy(); }

  // Takes the socket only on success, so that a caller can fall back to another transport.
  static result<uring_transport> open(unix_fd& socket, bool can_pass_fds) {
    uring_transport t;
    t.state_ = std::make_unique<state>();
    state& s = *t.state_;
    // No IORING_SETUP_SINGLE_ISSUER: a connection may be opened on one thread and run on another.
    int r = io_uring_queue_init(ring_entries, &s.ring, IORING_SETUP_COOP_TASKRUN);
    if (r == -EINVAL) r = io_uring_queue_init(ring_entries, &s.ring, 0);  // kernels before 5.19
    if (r < 0) {
      t.state_.reset();
      return error::from_errno(-r, "io_uring_queue_init");
    }
    s.ring_ready = true;
    if (error e = detail::set_nonblocking(socket.get())) return e;
    s.fd = std::move(socket);
    s.can_pass_fds = can_pass_fds;
    s.msg_template.msg_controllen = can_pass_fds ? detail::fd_cmsg_space : 0;
    t.setup_buffer_ring();
    return t;
  }

  int socket() const noexcept { return state_->fd.get(); }
  int poll_fd() const noexcept { return state_->ring.ring_fd; }
  // The ring becomes readable when anything completes, sends included: never ask for POLLOUT.
  short poll_events() const noexcept { return POLLIN; }
  bool can_pass_fds() const noexcept { return state_->can_pass_fds; }
  bool has_pending_output() const noexcept { return !state_->out.empty(); }
  bool uses_buffer_ring() const noexcept { return state_->buf_ring != nullptr; }
  // Work that the ring's fd does not show: completions taken from the ring early (by flush(),
  // drain_packets() or reap_packet_sends()) and receives whose multishot ended (a buffer ring ran
  // dry) wait for the next wait(). A foreign loop must then call process() without polling.
  bool has_work() const noexcept {
    const state& s = *state_;
    if (!s.recv_armed && !s.eof && !s.recv_paused) return true;
    for (const stashed_cqe& c : s.stashed) {
      if (!(s.recv_paused && c.tag == tag_recv)) return true;
    }
    for (const packet_source& src : s.sources) {
      if (!src.armed) return true;
    }
    return false;
  }
  void enqueue(message&& m) { state_->out.push(std::move(m)); }
  // While paused, received chunks stay in their ring buffers, unread; once the ring runs dry the
  // multishot receive ends and is not re-armed, so the socket fills and the peer is pushed back.
  // What the ring holds meanwhile is bounded by its size. Sends and packet sockets go on.
  void pause_receiving(bool on) noexcept { state_->recv_paused = on; }

  // Starts the next send without waiting. A send that completed since the last wait is reaped
  // first, so that messages sent outside the loop still go out one after another; receive
  // completions met on the way are kept for the next wait().
  error flush() {
    if (error e = reap_sends()) return e;
    prepare_send();
    const int r = io_uring_submit(&state_->ring);
    return r < 0 && r != -EBUSY && r != -EAGAIN ? error::from_errno(-r, "io_uring_submit") : error();
  }

  template <class Sink>
  error wait(int timeout_ms, Sink&& sink) {
    state& s = *state_;
    for (std::size_t i = 0; i < s.stashed.size();) {
      const stashed_cqe c = s.stashed[i];
      if (s.recv_paused && c.tag == tag_recv) {
        ++i;
        continue;
      }
      s.stashed.erase(s.stashed.begin() + static_cast<std::ptrdiff_t>(i));
      if (error e = handle_cqe(c.tag, c.res, c.flags, sink)) return e;
      timeout_ms = 0;  // there was input: do not block before the caller has seen it
    }
    if (!s.recv_paused) arm_receive();
    arm_packet_sources();
    prepare_send();
    io_uring_cqe* cqe = nullptr;
    int r;
    if (timeout_ms == 0) {
      r = io_uring_submit(&s.ring);
    } else {
      __kernel_timespec ts{timeout_ms / 1000, static_cast<long long>(timeout_ms % 1000) * 1000000};
      r = io_uring_submit_and_wait_timeout(&s.ring, &cqe, 1, timeout_ms > 0 ? &ts : nullptr, nullptr);
    }
    if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY && r != -EAGAIN) {
      return error::from_errno(-r, "io_uring_submit_and_wait");
    }
    return reap(sink);
  }

  // ---- packet sockets -------------------------------------------------------------------------

  void set_packet_handler(packet_handler h) { state_->packets = std::move(h); }

  // Receives packets from `fd` with a multishot recv into a second provided buffer ring.
  error add_packet_source(std::uint32_t id, int fd) {
    state& s = *state_;
    if (!s.packet_ring_tried) setup_packet_ring();
    s.sources.push_back(packet_source{id, fd, false, nullptr});
    return {};
  }

  void remove_packet_source(std::uint32_t id) {
    state& s = *state_;
    for (auto it = s.sources.begin(); it != s.sources.end(); ++it) {
      if (it->id != id) continue;
      if (it->armed) {
        if (io_uring_sqe* sqe = get_sqe()) {
          io_uring_prep_cancel64(sqe, tag(kind_packet_recv, id), 0);
          io_uring_sqe_set_data64(sqe, tag(kind_cancel, id));
        }
      }
      if (it->single) s.retired_single.push_back(std::move(it->single));  // the kernel may still write it
      s.sources.erase(it);
      return;
    }
  }

  // Queues a chain of packets to one socket, linked so that they go out in order. They are
  // submitted with the next flush() or wait(); results come through packet_handler::sent.
  void send_packets(std::span<packet_send* const> chain) {
    // A chain must go into one submission: a link cannot span two, and two halves in flight
    // at once could overtake each other.
    if (io_uring_sq_space_left(&state_->ring) < chain.size()) io_uring_submit(&state_->ring);
    for (std::size_t i = 0; i < chain.size(); ++i) {
      io_uring_sqe* sqe = get_sqe();
      if (!sqe) {  // cannot happen after a submit frees the ring; fail the rest rather than lose them
        for (std::size_t k = i; k < chain.size(); ++k)
          state_->stashed.push_back({tag(kind_packet_send, chain[k]->token), -EAGAIN, 0});
        return;
      }
      io_uring_prep_sendmsg(sqe, chain[i]->fd, &chain[i]->mh, MSG_NOSIGNAL | MSG_DONTWAIT);
      io_uring_sqe_set_data64(sqe, tag(kind_packet_send, chain[i]->token));
      if (i + 1 < chain.size()) sqe->flags |= IOSQE_IO_LINK;
    }
  }

  // Handles the packet-send and writable completions that are ready, now; others wait for the
  // next wait(). A publisher calls this before it queues more, so that one emit() learns how the
  // previous one went without running the loop.
  void reap_packet_sends() {
    state& s = *state_;
    io_uring_cqe* cqe;
    std::vector<stashed_cqe> mine;
    while (io_uring_peek_cqe(&s.ring, &cqe) == 0) {
      const stashed_cqe c{io_uring_cqe_get_data64(cqe), cqe->res, cqe->flags};
      io_uring_cqe_seen(&s.ring, cqe);
      if (kind_of(c.tag) == kind_packet_send || kind_of(c.tag) == kind_writable) {
        mine.push_back(c);
      } else if (c.tag == tag_send) {
        (void)on_sent(c.res);
      } else {
        s.stashed.push_back(c);
      }
    }
    for (const stashed_cqe& c : mine) {
      if (kind_of(c.tag) == kind_packet_send) {
        if (s.packets.sent) s.packets.sent(payload_of(c.tag), c.res);
      } else if (s.packets.writable) {
        s.packets.writable(static_cast<std::uint32_t>(payload_of(c.tag)));
      }
    }
  }

  void watch_writable(std::uint32_t id, int fd) {
    if (io_uring_sqe* sqe = get_sqe()) {
      io_uring_prep_poll_add(sqe, fd, POLLOUT);
      io_uring_sqe_set_data64(sqe, tag(kind_writable, id));
    }
  }

  // Hands every packet of source `id` that has already arrived to fn, now: those the multishot
  // receive has taken (completions are collected from the kernel first), then those still in the
  // socket. Other completions met on the way are kept for the next wait().
  //
  // The multishot receive runs as task work at our own syscall boundaries, so it may take a
  // packet between two of the recv() calls here: the completions are collected once more at the
  // end. The packets handed over are then all that arrived, but not necessarily in the order they
  // were sent; the caller puts them in order (their serials tell it).
  template <class Fn>
  void drain_packets(std::uint32_t id, Fn&& fn) {
    state& s = *state_;
    // Completions already stashed come first: they are older.
    for (auto it = s.stashed.begin(); it != s.stashed.end();) {
      if (kind_of(it->tag) == kind_packet_recv && payload_of(it->tag) == id) {
        deliver_packet(id, it->res, it->flags, fn);
        it = s.stashed.erase(it);
      } else {
        ++it;
      }
    }
    collect_packet_completions(id, fn);
    for (const packet_source& src : s.sources) {
      if (src.id != id) continue;
      if (!s.drain_buf) s.drain_buf = std::make_unique_for_overwrite<std::byte[]>(packet_buffer_size);
      while (true) {
        const ssize_t n = ::recv(src.fd, s.drain_buf.get(), packet_buffer_size, MSG_DONTWAIT);
        if (n <= 0) break;
        fn(std::span<const std::byte>(s.drain_buf.get(), static_cast<std::size_t>(n)));
      }
    }
    collect_packet_completions(id, fn);
  }

 private:
  static constexpr std::size_t packet_buffer_size = 64 * 1024;  // > max_packet_size: no truncation
  static constexpr unsigned packet_buffer_count = 16;           // 1 MiB, touched only as packets arrive
  static constexpr unsigned short packet_group = 1;

  enum kind : std::uint64_t {
    kind_recv = 1,
    kind_send = 2,
    kind_packet_recv = 3,
    kind_packet_send = 4,
    kind_writable = 5,
    kind_cancel = 6,
  };
  static constexpr std::uint64_t tag(kind k, std::uint64_t payload) noexcept {
    return std::uint64_t{k} << 56 | payload;
  }
  static constexpr kind kind_of(std::uint64_t t) noexcept { return static_cast<kind>(t >> 56); }
  static constexpr std::uint64_t payload_of(std::uint64_t t) noexcept { return t & ((std::uint64_t{1} << 56) - 1); }
  static constexpr std::uint64_t tag_recv = std::uint64_t{kind_recv} << 56;
  static constexpr std::uint64_t tag_send = std::uint64_t{kind_send} << 56;

  struct stashed_cqe {
    std::uint64_t tag;
    int res;
    unsigned flags;
  };
  struct packet_source {
    std::uint32_t id;
    int fd;
    bool armed;
    std::unique_ptr<std::byte[]> single;  // single-shot buffer where there is no buffer ring
  };

  struct state {
    io_uring ring{};
    bool ring_ready = false;
    unix_fd fd;
    bool can_pass_fds = false;
    // Provided buffer ring (null when the kernel lacks it).
    io_uring_buf_ring* buf_ring = nullptr;
    std::size_t buf_ring_bytes = 0;
    std::unique_ptr<std::byte[]> buffers;
    // Single-shot fallback buffer.
    std::unique_ptr<std::byte[]> single;
    bool recv_armed = false;
    bool recv_paused = false;
    bool multishot_failed = false;
    msghdr msg_template{};  // layout of multishot completions: no name, control for fds
    msghdr single_mh{};
    iovec single_iov{};
    alignas(cmsghdr) unsigned char single_control[detail::fd_cmsg_space];
    detail::send_queue out;
    bool send_in_flight = false;
    msghdr send_mh{};
    received_fds fds;
    bool eof = false;
    std::deque<stashed_cqe> stashed;  // completions reaped early, handled by the next wait()
    // Packet sockets.
    packet_handler packets;
    std::vector<packet_source> sources;
    bool packet_ring_tried = false;
    bool packet_multishot_failed = false;
    io_uring_buf_ring* packet_ring = nullptr;
    std::unique_ptr<std::byte[]> packet_buffers;
    std::unique_ptr<std::byte[]> drain_buf;
    std::vector<std::unique_ptr<std::byte[]>> retired_single;
  };

  uring_transport() = default;

  void destroy() {
    if (!state_) return;
    if (state_->ring_ready) {
      if (state_->buf_ring) io_uring_unregister_buf_ring(&state_->ring, 0);
      if (state_->packet_ring) io_uring_unregister_buf_ring(&state_->ring, packet_group);
      io_uring_queue_exit(&state_->ring);
    }
    if (state_->buf_ring) ::munmap(state_->buf_ring, state_->buf_ring_bytes);
    if (state_->packet_ring) ::munmap(state_->packet_ring, sizeof(io_uring_buf) * packet_buffer_count);
    state_.reset();
  }

  void setup_buffer_ring() {
    state& s = *state_;
    s.buf_ring_bytes = sizeof(io_uring_buf) * buffer_count;
    void* mem = ::mmap(nullptr, s.buf_ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) return;
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<std::uintptr_t>(mem);
    reg.ring_entries = buffer_count;
    reg.bgid = 0;
    if (io_uring_register_buf_ring(&s.ring, &reg, 0) < 0) {  // before 5.19
      ::munmap(mem, s.buf_ring_bytes);
      return;
    }
    s.buf_ring = static_cast<io_uring_buf_ring*>(mem);
    s.buffers = std::make_unique_for_overwrite<std::byte[]>(std::size_t{buffer_count} * buffer_size);
    io_uring_buf_ring_init(s.buf_ring);
    for (unsigned i = 0; i < buffer_count; ++i) {
      io_uring_buf_ring_add(s.buf_ring, s.buffers.get() + std::size_t{i} * buffer_size, buffer_size,
                            static_cast<unsigned short>(i), io_uring_buf_ring_mask(buffer_count), static_cast<int>(i));
    }
    io_uring_buf_ring_advance(s.buf_ring, static_cast<int>(buffer_count));
  }

  // Gives a buffer back to the kernel once its bytes have been consumed.
  void recycle(unsigned id) {
    state& s = *state_;
    io_uring_buf_ring_add(s.buf_ring, s.buffers.get() + std::size_t{id} * buffer_size, buffer_size,
                          static_cast<unsigned short>(id), io_uring_buf_ring_mask(buffer_count), 0);
    io_uring_buf_ring_advance(s.buf_ring, 1);
  }

  io_uring_sqe* get_sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&state_->ring);
    if (!sqe) {
      io_uring_submit(&state_->ring);
      sqe = io_uring_get_sqe(&state_->ring);
    }
    return sqe;
  }

  void arm_receive() {
    state& s = *state_;
    if (s.recv_armed || s.eof) return;
    io_uring_sqe* sqe = get_sqe();
    if (!sqe) return;
    if (s.buf_ring && !s.multishot_failed) {
      io_uring_prep_recvmsg_multishot(sqe, s.fd.get(), &s.msg_template, MSG_CMSG_CLOEXEC);
      sqe->flags |= IOSQE_BUFFER_SELECT;
      sqe->buf_group = 0;
    } else {
      if (!s.single) s.single = std::make_unique_for_overwrite<std::byte[]>(buffer_size);
      s.single_iov = {s.single.get(), buffer_size};
      s.single_mh = {};
      s.single_mh.msg_iov = &s.single_iov;
      s.single_mh.msg_iovlen = 1;
      if (s.can_pass_fds) {
        s.single_mh.msg_control = s.single_control;
        s.single_mh.msg_controllen = sizeof(s.single_control);
      }
      io_uring_prep_recvmsg(sqe, s.fd.get(), &s.single_mh, MSG_CMSG_CLOEXEC);
    }
    io_uring_sqe_set_data64(sqe, tag_recv);
    s.recv_armed = true;
  }

  // One sendmsg in flight at a time keeps the stream in order; MSG_WAITALL makes the kernel finish
  // a partial send itself instead of completing short.
  void prepare_send() {
    state& s = *state_;
    if (s.send_in_flight || s.out.empty()) return;
    io_uring_sqe* sqe = get_sqe();
    if (!sqe) return;
    s.out.prepare(s.send_mh);
    io_uring_prep_sendmsg(sqe, s.fd.get(), &s.send_mh, MSG_NOSIGNAL | MSG_WAITALL);
    io_uring_sqe_set_data64(sqe, tag_send);
    s.send_in_flight = true;
  }

  template <class Sink>
  error reap(Sink& sink) {
    state& s = *state_;
    error result;
    io_uring_cqe* cqe;
    unsigned seen = 0;
    while (!result && io_uring_peek_cqe(&s.ring, &cqe) == 0) {
      const std::uint64_t t = io_uring_cqe_get_data64(cqe);
      const int res = cqe->res;
      const unsigned flags = cqe->flags;
      io_uring_cqe_seen(&s.ring, cqe);
      ++seen;
      result = handle_cqe(t, res, flags, sink);
    }
    if (!result && s.eof) result = error(errc::disconnected, error::no_offset, "peer closed the connection");
    return result;
  }

  error reap_sends() {
    state& s = *state_;
    error result;
    io_uring_cqe* cqe;
    while (s.send_in_flight && io_uring_peek_cqe(&s.ring, &cqe) == 0) {
      const std::uint64_t tag = io_uring_cqe_get_data64(cqe);
      const int res = cqe->res;
      const unsigned flags = cqe->flags;
      io_uring_cqe_seen(&s.ring, cqe);
      if (tag == tag_send) {
        if (error e = on_sent(res)) result = e;
      } else {
        s.stashed.push_back({tag, res, flags});
      }
    }
    return result;
  }

  template <class Sink>
  error handle_cqe(std::uint64_t t, int res, unsigned flags, Sink& sink) {
    state& s = *state_;
    switch (kind_of(t)) {
      case kind_send: return on_sent(res);
      case kind_recv:
        if (s.recv_paused) {  // kept, with its buffer, until receiving resumes
          if (!(flags & IORING_CQE_F_MORE)) s.recv_armed = false;
          s.stashed.push_back({t, res, flags});
          return {};
        }
        return on_received(res, flags, sink);
      case kind_packet_recv: {
        const auto id = static_cast<std::uint32_t>(payload_of(t));
        if (!(flags & IORING_CQE_F_MORE)) mark_unarmed(id);
        const bool live = find_source(id) != nullptr;
        deliver_packet(id, res, flags, [&](std::span<const std::byte> p) {
          if (live && s.packets.packet) s.packets.packet(id, p);
        });
        if (res == -EINVAL && s.packet_ring && !s.packet_multishot_failed) {
          s.packet_multishot_failed = true;  // buffer rings but no multishot recv: 5.19
          return {};
        }
        if (live &&
            (res == 0 || (res < 0 && res != -ENOBUFS && res != -EINTR && res != -EAGAIN && res != -ECANCELED))) {
          remove_packet_source(id);
          if (s.packets.closed) {
            s.packets.closed(id, res == 0 ? error(errc::disconnected, error::no_offset, "group closed")
                                          : error::from_errno(-res, "io_uring recv on a packet socket"));
          }
        }
        return {};
      }
      case kind_packet_send:
        if (s.packets.sent) s.packets.sent(payload_of(t), res);
        return {};
      case kind_writable:
        if (s.packets.writable) s.packets.writable(static_cast<std::uint32_t>(payload_of(t)));
        return {};
      default: return {};  // cancellations
    }
  }

  // Hands one packet completion's bytes to fn and gives its buffer back.
  template <class Fn>
  void deliver_packet(std::uint32_t id, int res, unsigned flags, Fn&& fn) {
    state& s = *state_;
    if (flags & IORING_CQE_F_BUFFER) {
      const unsigned buf = flags >> IORING_CQE_BUFFER_SHIFT;
      std::byte* data = s.packet_buffers.get() + std::size_t{buf} * packet_buffer_size;
      if (res > 0) fn(std::span<const std::byte>(data, static_cast<std::size_t>(res)));
      io_uring_buf_ring_add(s.packet_ring, data, packet_buffer_size, static_cast<unsigned short>(buf),
                            io_uring_buf_ring_mask(packet_buffer_count), 0);
      io_uring_buf_ring_advance(s.packet_ring, 1);
    } else if (res > 0) {
      if (packet_source* src = find_source(id); src && src->single) {
        fn(std::span<const std::byte>(src->single.get(), static_cast<std::size_t>(res)));
      }
    }
  }

  template <class Fn>
  void collect_packet_completions(std::uint32_t id, Fn& fn) {
    state& s = *state_;
    io_uring_get_events(&s.ring);
    io_uring_cqe* cqe;
    while (io_uring_peek_cqe(&s.ring, &cqe) == 0) {
      const stashed_cqe c{io_uring_cqe_get_data64(cqe), cqe->res, cqe->flags};
      io_uring_cqe_seen(&s.ring, cqe);
      if (kind_of(c.tag) == kind_packet_recv && payload_of(c.tag) == id) {
        if (!(c.flags & IORING_CQE_F_MORE)) mark_unarmed(id);
        deliver_packet(id, c.res, c.flags, fn);
      } else {
        s.stashed.push_back(c);
      }
    }
  }

  packet_source* find_source(std::uint32_t id) noexcept {
    for (packet_source& src : state_->sources) {
      if (src.id == id) return &src;
    }
    return nullptr;
  }
  void mark_unarmed(std::uint32_t id) noexcept {
    if (packet_source* src = find_source(id)) src->armed = false;
  }

  void setup_packet_ring() {
    state& s = *state_;
    s.packet_ring_tried = true;
    if (!s.buf_ring || s.multishot_failed) return;  // no buffer rings here: single-shot receives
    const std::size_t bytes = sizeof(io_uring_buf) * packet_buffer_count;
    void* mem = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) return;
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<std::uintptr_t>(mem);
    reg.ring_entries = packet_buffer_count;
    reg.bgid = packet_group;
    if (io_uring_register_buf_ring(&s.ring, &reg, 0) < 0) {
      ::munmap(mem, bytes);
      return;
    }
    s.packet_ring = static_cast<io_uring_buf_ring*>(mem);
    s.packet_buffers =
        std::make_unique_for_overwrite<std::byte[]>(std::size_t{packet_buffer_count} * packet_buffer_size);
    io_uring_buf_ring_init(s.packet_ring);
    for (unsigned i = 0; i < packet_buffer_count; ++i) {
      io_uring_buf_ring_add(s.packet_ring, s.packet_buffers.get() + std::size_t{i} * packet_buffer_size,
                            packet_buffer_size, static_cast<unsigned short>(i),
                            io_uring_buf_ring_mask(packet_buffer_count), static_cast<int>(i));
    }
    io_uring_buf_ring_advance(s.packet_ring, static_cast<int>(packet_buffer_count));
  }

  void arm_packet_sources() {
    state& s = *state_;
    for (packet_source& src : s.sources) {
      if (src.armed) continue;
      io_uring_sqe* sqe = get_sqe();
      if (!sqe) return;
      if (s.packet_ring) {
        if (s.packet_multishot_failed) {
          io_uring_prep_recv(sqe, src.fd, nullptr, 0, 0);
        } else {
          io_uring_prep_recv_multishot(sqe, src.fd, nullptr, 0, 0);
        }
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = packet_group;
      } else {
        if (!src.single) src.single = std::make_unique_for_overwrite<std::byte[]>(packet_buffer_size);
        io_uring_prep_recv(sqe, src.fd, src.single.get(), packet_buffer_size, 0);
      }
      io_uring_sqe_set_data64(sqe, tag(kind_packet_recv, src.id));
      src.armed = true;
    }
  }

  error on_sent(int res) {
    state& s = *state_;
    s.send_in_flight = false;
    if (res < 0) {
      if (res == -EINTR || res == -EAGAIN) return {};
      return res == -EPIPE || res == -ECONNRESET ? error(errc::disconnected, error::no_offset, "send")
                                                 : error::from_errno(-res, "io_uring sendmsg");
    }
    s.out.consume(static_cast<std::size_t>(res));
    return {};
  }

  template <class Sink>
  error on_received(int res, unsigned flags, Sink& sink) {
    state& s = *state_;
    if (!(flags & IORING_CQE_F_MORE)) s.recv_armed = false;
    if (res < 0) {
      if (res == -ENOBUFS || res == -EINTR || res == -EAGAIN) return {};  // re-armed on the next wait
      if (res == -EINVAL && s.buf_ring && !s.multishot_failed) {
        s.multishot_failed = true;  // no multishot recvmsg before 6.0
        return {};
      }
      return res == -ECONNRESET ? error(errc::disconnected, error::no_offset, "recv")
                                : error::from_errno(-res, "io_uring recvmsg");
    }
    if (flags & IORING_CQE_F_BUFFER) {
      const unsigned id = flags >> IORING_CQE_BUFFER_SHIFT;
      std::byte* buf = s.buffers.get() + std::size_t{id} * buffer_size;
      io_uring_recvmsg_out* out = io_uring_recvmsg_validate(buf, res, &s.msg_template);
      error fd_error;
      std::size_t len = 0;
      if (out) {
        len = io_uring_recvmsg_payload_length(out, res, &s.msg_template);
        fd_error = collect_uring_fds(out);
        if (out->flags & MSG_CTRUNC) fd_error = error(errc::too_many_fds, error::no_offset, "fds truncated on receive");
        if (len > 0) {
          sink(std::span<const std::byte>(static_cast<const std::byte*>(io_uring_recvmsg_payload(out, &s.msg_template)),
                                          len),
               s.fds);
        }
      }
      recycle(id);
      if (len == 0) s.eof = true;
      return fd_error;
    }
    // Single-shot completion.
    error fd_error = detail::collect_fds(s.single_mh, s.fds);
    if (res == 0) {
      s.eof = true;
      return fd_error;
    }
    sink(std::span<const std::byte>(s.single.get(), static_cast<std::size_t>(res)), s.fds);
    return fd_error;
  }

  error collect_uring_fds(io_uring_recvmsg_out* out) {
    state& s = *state_;
    for (cmsghdr* c = io_uring_recvmsg_cmsg_firsthdr(out, &s.msg_template); c;
         c = io_uring_recvmsg_cmsg_nexthdr(out, &s.msg_template, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < n; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        ::fcntl(fd, F_SETFD, FD_CLOEXEC);  // io_uring may not honour MSG_CMSG_CLOEXEC
        s.fds.push(fd);
      }
    }
    return {};
  }

  std::unique_ptr<state> state_;  // stable address: the kernel holds pointers into it
};

#else

// Built without liburing: open() always fails, so connections use poll_transport.
class uring_transport {
 public:
  static constexpr const char* name = "io_uring";
  static result<uring_transport> open(unix_fd&, bool) {
    return error(errc::not_supported, error::no_offset, "mcbus was built without liburing");
  }
  int socket() const noexcept { return -1; }
  int poll_fd() const noexcept { return -1; }
  bool can_pass_fds() const noexcept { return false; }
  bool has_pending_output() const noexcept { return false; }
  void pause_receiving(bool) noexcept {}
  void enqueue(message&&) {}
  error flush() { return {errc::not_supported}; }
  template <class Sink>
  error wait(int, Sink&&) {
    return {errc::not_supported};
  }
  short poll_events() const noexcept { return 0; }
  void set_packet_handler(packet_handler) {}
  error add_packet_source(std::uint32_t, int) { return {errc::not_supported}; }
  void remove_packet_source(std::uint32_t) {}
  void send_packets(std::span<packet_send* const>) {}
  void watch_writable(std::uint32_t, int) {}
  void reap_packet_sends() {}
  template <class Fn>
  void drain_packets(std::uint32_t, Fn&&) {}
};

#endif

MCBUS_NAMESPACE_END
