// Test helper: a real AF_UNIX SOCK_SEQPACKET pair whose receiving end carries a classic BPF filter,
// to ask the kernel whether it lets a message through.
#pragma once

#include <mcbus/match/bpf_insn.hpp>

#include <linux/filter.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

namespace mcbus_test {

static_assert(sizeof(sock_filter) == sizeof(mcbus::bpf_insn) &&
              offsetof(sock_filter, k) == offsetof(mcbus::bpf_insn, k));

class kernel_filter {
 public:
  kernel_filter() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) == 0) {
      tx_ = fds[0];
      rx_ = fds[1];
      int size = 4 << 20;
      (void)::setsockopt(tx_, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
      (void)::setsockopt(rx_, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    }
  }
  ~kernel_filter() {
    if (tx_ >= 0) ::close(tx_);
    if (rx_ >= 0) ::close(rx_);
  }
  kernel_filter(const kernel_filter&) = delete;
  kernel_filter& operator=(const kernel_filter&) = delete;

  bool ok() const { return tx_ >= 0; }

  // Attaches (or replaces) the receiving end's filter; returns 0 or the errno. The old filter goes
  // first: while both are attached, both count against net.core.optmem_max.
  int attach(std::span<const mcbus::bpf_insn> prog) {
    int unused = 0;
    if (::setsockopt(rx_, SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof unused) != 0 && errno == ENOPROTOOPT) {
      // qemu-user (the s390x run) does not pass SO_DETACH_FILTER on: a fresh pair drops the old
      // filter instead, and the old sockets close with `fresh`.
      kernel_filter fresh;
      std::swap(tx_, fresh.tx_);
      std::swap(rx_, fresh.rx_);
    }
    sock_fprog fprog{};
    fprog.len = static_cast<unsigned short>(prog.size());
    fprog.filter = reinterpret_cast<sock_filter*>(const_cast<mcbus::bpf_insn*>(prog.data()));
    if (::setsockopt(rx_, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog) != 0) return errno;
    return 0;
  }

  // Sends one message through the pair; returns the number of bytes that arrived (0: dropped),
  // or -1 on an error. The filter runs inside send(), so the answer is there when it returns.
  long pass(std::span<const std::byte> msg) {
    if (::send(tx_, msg.data(), msg.size(), MSG_DONTWAIT | MSG_NOSIGNAL) != static_cast<ssize_t>(msg.size())) {
      return -1;
    }
    buf_.resize(msg.size() + 1);
    const ssize_t n = ::recv(rx_, buf_.data(), buf_.size(), MSG_DONTWAIT);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    return n;
  }

 private:
  int tx_ = -1;
  int rx_ = -1;
  std::vector<std::byte> buf_;
};

}  // namespace mcbus_test
