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

#include <mcbus/io/transport.hpp>

#if __has_include(<liburing.h>)
#include <liburing.h>
#define MCBUS_HAS_LIBURING 1
#else
#define MCBUS_HAS_LIBURING 0
#endif

#include <sys/mman.h>

#include <cerrno>
#include <deque>
#include <memory>
#include <utility>

MCBUS_NAMESPACE_BEGIN

#if MCBUS_HAS_LIBURING

class uring_transport {
 public:
  static constexpr const char* name = "io_uring";
  static constexpr unsigned buffer_count = 16;        // provided buffers (a power of two)
  static constexpr unsigned buffer_size = 32 * 1024;  // bytes each, control data included
  static constexpr unsigned ring_entries = 32;

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
  bool can_pass_fds() const noexcept { return state_->can_pass_fds; }
  bool has_pending_output() const noexcept { return !state_->out.empty(); }
  bool uses_buffer_ring() const noexcept { return state_->buf_ring != nullptr; }
  void enqueue(message&& m) { state_->out.push(std::move(m)); }

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
    while (!s.stashed.empty()) {
      const auto [res, flags] = s.stashed.front();
      s.stashed.pop_front();
      if (error e = on_received(res, flags, sink)) return e;
      timeout_ms = 0;  // there was input: do not block before the caller has seen it
    }
    arm_receive();
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

 private:
  enum : std::uint64_t { tag_recv = 1, tag_send = 2 };

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
    std::deque<std::pair<int, unsigned>> stashed;  // receive completions reaped by flush()
  };

  uring_transport() = default;

  void destroy() {
    if (!state_) return;
    if (state_->ring_ready) {
      if (state_->buf_ring) io_uring_unregister_buf_ring(&state_->ring, 0);
      io_uring_queue_exit(&state_->ring);
    }
    if (state_->buf_ring) ::munmap(state_->buf_ring, state_->buf_ring_bytes);
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
    s.buffers = std::make_unique<std::byte[]>(std::size_t{buffer_count} * buffer_size);
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
      if (!s.single) s.single = std::make_unique<std::byte[]>(buffer_size);
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
      const std::uint64_t tag = io_uring_cqe_get_data64(cqe);
      const int res = cqe->res;
      const unsigned flags = cqe->flags;
      io_uring_cqe_seen(&s.ring, cqe);
      ++seen;
      if (tag == tag_send) {
        result = on_sent(res);
      } else if (tag == tag_recv) {
        result = on_received(res, flags, sink);
      }
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
      } else if (tag == tag_recv) {
        s.stashed.emplace_back(res, flags);
        if (!(flags & IORING_CQE_F_MORE)) s.recv_armed = false;
      }
    }
    return result;
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
  void enqueue(message&&) {}
  error flush() { return {errc::not_supported}; }
  template <class Sink>
  error wait(int, Sink&&) {
    return {errc::not_supported};
  }
};

#endif

MCBUS_NAMESPACE_END
