// mcbus-bench: the two comparisons that are not D-Bus paths.
//
// udp: the same D-Bus messages over a UDP multicast group on loopback, each member socket with the
// member's rule compiled to classic BPF. A socket filter on a UDP socket sees the packet from the
// UDP header on (measured: a filter testing offset 0 for the byte-order byte rejects every message,
// offset 8 accepts), so the program is relocated by 8 bytes: every absolute and indirect packet load
// gets +8 (the compiler emits no length loads, which would need more). UDP has no back-pressure:
// the emitter sends without a window and losses are counted.
//
// floor: what fan-out costs with no D-Bus at all, with the freedoms mcbus has: byte packets of the
// signal's size over one SOCK_SEQPACKET pair per subscriber, each receiving end with a one-test
// BPF filter; sent only to the matching subscribers, emit_burst messages per io_uring submission
// (as the publisher batches), and read with recvmmsg in batches of 64.
#include <mcbus/match.hpp>

#include <arpa/inet.h>
#include <liburing.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

#include "fanout.hpp"

namespace mcbus_bench {

namespace {

constexpr unsigned batch = 64;
constexpr std::size_t slot_bytes = 4096;

void set_receive_timeout(int fd) {
  timeval tv{0, 100000};  // wakes to look at the stop flag
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

// recvmmsg in batches; fn(bytes) for each packet. Returns when done() or on a hard error.
template <class Fn, class Done>
bool receive_batches(int fd, Fn&& fn, Done&& done) {
  std::vector<std::byte> buf(batch * slot_bytes);
  mmsghdr msgs[batch];
  iovec iov[batch];
  while (!done()) {
    for (unsigned k = 0; k < batch; ++k) {
      iov[k] = {buf.data() + k * slot_bytes, slot_bytes};
      msgs[k] = {};
      msgs[k].msg_hdr.msg_iov = &iov[k];
      msgs[k].msg_hdr.msg_iovlen = 1;
    }
    const int n = ::recvmmsg(fd, msgs, batch, MSG_WAITFORONE, nullptr);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
      return false;
    }
    if (n == 0) return false;
    for (int k = 0; k < n; ++k) {
      fn(std::span<const std::byte>(buf.data() + k * slot_bytes, msgs[k].msg_len));
    }
  }
  return true;
}

// ---- the raw floor ----------------------------------------------------------------------------------

struct pairs {
  std::vector<int> emitter_end, subscriber_end;
  ~pairs() {
    for (int fd : emitter_end) ::close(fd);
    for (int fd : subscriber_end) ::close(fd);
  }
};

// The floor's sends are what the publisher's are: non-blocking sends to each matching member,
// emit_burst messages per io_uring submission. One member's sends in a burst are linked, so that
// when its socket is full the rest of its chain is cancelled instead of overtaking the message
// that did not fit; that message and the rest then go out in order with blocking sends (where
// the publisher would queue them and wait for POLLOUT).
class floor_emitter final : public emitter {
 public:
  floor_emitter(const plan& p, std::shared_ptr<pairs> fds, std::size_t size)
      : plan_(p), fds_(std::move(fds)), bufs_(emit_burst, std::vector<std::byte>(std::max<std::size_t>(size, 16))) {
    by_group_.resize(p.groups);
    for (unsigned i = 0; i < p.subscribers; ++i) by_group_[p.group_of_subscriber(i)].push_back(fds_->emitter_end[i]);
  }
  ~floor_emitter() override {
    if (ready_) io_uring_queue_exit(&ring_);
  }
  bool setup(std::string& why) override {
    unsigned entries = 64;
    while (entries < plan_.subscribers * emit_burst && entries < 32768) entries *= 2;
    const int r = io_uring_queue_init(entries, &ring_, 0);
    if (r < 0) {
      why = std::string("io_uring_queue_init: ") + std::strerror(-r);
      return false;
    }
    ready_ = true;
    return true;
  }
  void serve() override {
    if (!why_.empty()) return;
    (void)flush(why_);
  }
  bool emit(std::uint32_t seq, const std::string&, const std::string&, std::uint64_t ts, std::string& why) override {
    if (!why_.empty()) {
      why = why_;
      return false;
    }
    std::vector<std::byte>& buf = bufs_[burst_.size()];
    std::memcpy(buf.data(), &seq, sizeof seq);
    std::memcpy(buf.data() + 8, &ts, sizeof ts);
    burst_.push_back(plan_.group_of(seq));
    return burst_.size() < emit_burst || flush(why);
  }
  void describe(json_line& line) override {
    line.integer("backpressure", backpressure_).integer("submissions", submissions_);
  }

 private:
  struct send_slot {
    int fd;
    unsigned message;  // index into bufs_
    bool last_of_chain;
  };

  bool flush(std::string& why) {
    if (burst_.empty()) return true;
    sends_.clear();
    for (unsigned g = 0; g < plan_.groups; ++g) {
      for (int fd : by_group_[g]) {
        const std::size_t first = sends_.size();
        for (unsigned k = 0; k < burst_.size(); ++k) {
          if (burst_[k] == g) sends_.push_back({fd, k, false});
        }
        if (sends_.size() > first) sends_.back().last_of_chain = true;
      }
    }
    burst_.clear();
    if (sends_.empty()) return true;
    for (std::size_t n = 0; n < sends_.size(); ++n) {
      const send_slot& s = sends_[n];
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      if (!sqe) {
        why = "the floor's ring is too small for one burst";
        return false;
      }
      const std::vector<std::byte>& buf = bufs_[s.message];
      io_uring_prep_send(sqe, s.fd, buf.data(), buf.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (!s.last_of_chain) sqe->flags |= IOSQE_IO_LINK;
      io_uring_sqe_set_data64(sqe, n);
    }
    ++submissions_;
    const int r = io_uring_submit_and_wait(&ring_, static_cast<unsigned>(sends_.size()));
    if (r < 0) {
      why = std::string("io_uring_submit_and_wait: ") + std::strerror(-r);
      return false;
    }
    results_.assign(sends_.size(), 0);
    for (std::size_t seen = 0; seen < sends_.size(); ++seen) {
      io_uring_cqe* cqe = nullptr;
      if (const int w = io_uring_wait_cqe(&ring_, &cqe); w < 0) {
        why = std::string("io_uring_wait_cqe: ") + std::strerror(-w);
        return false;
      }
      results_[io_uring_cqe_get_data64(cqe)] = cqe->res;
      io_uring_cqe_seen(&ring_, cqe);
    }
    // Within a chain, the first send that failed and everything after it go out in order.
    bool resend = false;
    for (std::size_t n = 0; n < sends_.size(); ++n) {
      const int res = results_[n];
      if (!resend && res == -EAGAIN) {
        resend = true;
        ++backpressure_;
      } else if (!resend && res < 0) {
        why = std::string("io_uring send: ") + std::strerror(-res);
        return false;
      }
      if (resend) {
        const std::vector<std::byte>& buf = bufs_[sends_[n].message];
        if (::send(sends_[n].fd, buf.data(), buf.size(), MSG_NOSIGNAL) < 0) {
          why = std::string("send: ") + std::strerror(errno);
          return false;
        }
      }
      if (sends_[n].last_of_chain) resend = false;
    }
    return true;
  }

  const plan& plan_;
  std::shared_ptr<pairs> fds_;
  std::vector<std::vector<std::byte>> bufs_;  // one per message of the burst
  std::vector<std::vector<int>> by_group_;
  std::vector<unsigned> burst_;  // the group of each message queued in bufs_
  std::vector<send_slot> sends_;
  std::vector<int> results_;
  std::string why_;
  io_uring ring_{};
  bool ready_ = false;
  std::uint64_t backpressure_ = 0, submissions_ = 0;
};

// ---- UDP multicast on loopback --------------------------------------------------------------------

constexpr const char* udp_group = "239.255.77.1";
constexpr const char* udp_sender = ":1.1";  // no bus gives out names here: the messages say this

in_addr loopback() {
  in_addr a{};
  ::inet_pton(AF_INET, "127.0.0.1", &a);
  return a;
}

// The rule's program, moved 8 bytes on (past the UDP header the filter sees first).
bool relocate(std::vector<mcbus::bpf_insn>& prog, std::uint32_t by, std::string& why) {
  using namespace mcbus::bpf;
  for (mcbus::bpf_insn& in : prog) {
    const std::uint16_t c = cls(in.code), m = mode(in.code);
    if ((c == ld || c == ldx) && m == len) {
      why = "the program loads the packet length; relocating it needs more than an offset";
      return false;
    }
    if ((c == ld && (m == abs_ || m == ind)) || (c == ldx && m == msh)) in.k += by;
  }
  return true;
}

class udp_emitter final : public emitter {
 public:
  explicit udp_emitter(std::uint16_t port) : port_(port) {}
  ~udp_emitter() override {
    if (fd_ >= 0) ::close(fd_);
  }
  bool setup(std::string& why) override {
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    const in_addr lo = loopback();
    const int one = 1;
    if (fd_ < 0 || ::setsockopt(fd_, IPPROTO_IP, IP_MULTICAST_IF, &lo, sizeof lo) != 0 ||
        ::setsockopt(fd_, IPPROTO_IP, IP_MULTICAST_LOOP, &one, sizeof one) != 0) {
      why = std::string("udp socket: ") + std::strerror(errno);
      return false;
    }
    to_.sin_family = AF_INET;
    to_.sin_port = htons(port_);
    ::inet_pton(AF_INET, udp_group, &to_.sin_addr);
    return true;
  }
  void serve() override {}
  bool emit(std::uint32_t seq, const std::string& member, const std::string& sensor, std::uint64_t ts,
            std::string& why) override {
    mcbus::message m = make_signal(member, sensor, ts, seq);
    m.set_sender(mcbus::bus_name::from_unchecked(udp_sender));
    m.set_serial(seq + 1);
    if (mcbus::error e = m.seal()) {
      why = e.message();
      return false;
    }
    const auto h = m.header_bytes();
    const auto b = m.body_bytes();
    iovec iov[2] = {{const_cast<std::byte*>(h.data()), h.size()}, {const_cast<std::byte*>(b.data()), b.size()}};
    msghdr mh{};
    mh.msg_name = &to_;
    mh.msg_namelen = sizeof to_;
    mh.msg_iov = iov;
    mh.msg_iovlen = 2;
    if (::sendmsg(fd_, &mh, MSG_NOSIGNAL) < 0) {
      if (errno == ENOBUFS || errno == EAGAIN) {
        ++send_failures_;  // UDP: counted as lost
        return true;
      }
      why = std::string("sendmsg: ") + std::strerror(errno);
      return false;
    }
    return true;
  }
  void describe(json_line& line) override { line.integer("send_failures", send_failures_); }

 private:
  std::uint16_t port_;
  int fd_ = -1;
  sockaddr_in to_{};
  std::uint64_t send_failures_ = 0;
};

int udp_subscriber(std::uint16_t port, const plan& p, const shared_state& sh, unsigned i) {
  recorder rec(sh, i);
  auto rule = mcbus::match_rule::parse(p.rule(i));
  if (!rule) {
    sh.fail("udp rule: " + rule.error().message());
    return 1;
  }
  const mcbus::name_owner owners[] = {{p.sender, udp_sender}};
  mcbus::bpf_options bo;
  bo.owners = owners;
  bo.owners_complete = true;
  const mcbus::match_rule rules[] = {*rule};
  auto prog = mcbus::compile_bpf(rules, bo);
  if (!prog) {
    sh.fail("compile_bpf: " + prog.error().message());
    return 1;
  }
  std::vector<mcbus::bpf_insn> insns(prog->data(), prog->data() + prog->size());
  std::string why;
  if (!relocate(insns, 8, why)) {
    sh.fail(why);
    return 1;
  }
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_port = htons(port);
  at.sin_addr.s_addr = htonl(INADDR_ANY);
  ip_mreq join{};
  ::inet_pton(AF_INET, udp_group, &join.imr_multiaddr);
  join.imr_interface = loopback();
  sock_fprog fprog{static_cast<unsigned short>(insns.size()), reinterpret_cast<sock_filter*>(insns.data())};
  // As much buffer as the kernel gives root (8 MiB): losses then come from UDP itself, not from a
  // small default.
  const int rcvbuf = 8 << 20;
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) != 0) {
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  }
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&at), sizeof at) != 0 ||
      ::setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &join, sizeof join) != 0 ||
      ::setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog) != 0) {
    sh.fail(std::string("udp member socket: ") + std::strerror(errno));
    return 1;
  }
  set_receive_timeout(fd);
  sh.ctl().ready.fetch_add(1);
  if (!rec.wait_go()) return 1;
  rec.started();
  const mcbus::name_owner table[] = {{p.sender, udp_sender}};
  const mcbus::match_context exact{{}, mcbus::name_lookup(table)};
  std::uint64_t filtered_late = 0;  // what the filter let through and the exact match refused
  receive_batches(
      fd,
      [&](std::span<const std::byte> bytes) {
        auto v = mcbus::message_view::parse(bytes);
        if (!v) return;
        if (!rule->matches(*v, exact)) {
          ++filtered_late;
          return;
        }
        auto args = v->read<std::string_view, std::uint64_t, std::uint32_t>();
        if (args) rec.received(std::get<2>(*args), std::get<1>(*args));
      },
      [&] { return rec.done(); });
  ::close(fd);
  return 0;
}

// The floor's member filter: one test, as the shortest rule a member could bring compiles to. The
// kernel runs it on every send, as it runs a member's filter; bytes 4-5 of a floor packet are 0.
bool attach_one_test_filter(int fd) {
  static sock_filter one_test[] = {
      BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 4),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, 0xffffffffu),
      BPF_STMT(BPF_RET | BPF_K, 0),
  };
  const sock_fprog prog{static_cast<unsigned short>(std::size(one_test)), one_test};
  return ::setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) == 0;
}

}  // namespace

path floor_path(const plan& p, std::size_t message_size) {
  auto fds = std::make_shared<pairs>();
  std::string filter_error;
  for (unsigned i = 0; i < p.subscribers; ++i) {
    int sv[2] = {-1, -1};
    ::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv);
    fds->emitter_end.push_back(sv[0]);
    fds->subscriber_end.push_back(sv[1]);
    if (!attach_one_test_filter(sv[1]) && filter_error.empty()) {
      filter_error = std::string("SO_ATTACH_FILTER on the floor's sockets: ") + std::strerror(errno);
    }
  }
  path r;
  r.impl = "raw-seqpacket";
  r.via = "floor";
  r.make_emitter = [fds, message_size](const plan& pl) -> std::unique_ptr<emitter> {
    return std::make_unique<floor_emitter>(pl, fds, message_size);
  };
  r.subscriber = [fds, filter_error](const plan&, const shared_state& sh, unsigned i) {
    recorder rec(sh, i);
    if (!filter_error.empty()) {
      sh.fail(filter_error);
      return 1;
    }
    const int fd = fds->subscriber_end[i];
    set_receive_timeout(fd);
    sh.ctl().ready.fetch_add(1);
    if (!rec.wait_go()) return 1;
    rec.started();
    receive_batches(
        fd,
        [&](std::span<const std::byte> bytes) {
          std::uint32_t seq;
          std::uint64_t ts;
          if (bytes.size() < 16) return;
          std::memcpy(&seq, bytes.data(), sizeof seq);
          std::memcpy(&ts, bytes.data() + 8, sizeof ts);
          rec.received(seq, ts);
        },
        [&] { return rec.done(); });
    return 0;
  };
  return r;
}

path udp_path(const plan&) {
  const auto port = static_cast<std::uint16_t>(40000 + ::getpid() % 20000);
  path r;
  r.impl = "mcbus";
  r.via = "udp";
  r.make_emitter = [port](const plan&) -> std::unique_ptr<emitter> { return std::make_unique<udp_emitter>(port); };
  r.subscriber = [port](const plan& p, const shared_state& sh, unsigned i) { return udp_subscriber(port, p, sh, i); };
  return r;
}

}  // namespace mcbus_bench
