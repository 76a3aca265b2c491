// mcbus/io: packet sockets that a transport serves beside the bus stream.
//
// The multicast fast path uses AF_UNIX SOCK_SEQPACKET sockets: every receive is one whole D-Bus
// message, every send one packet. Both transports serve them in the same loop as the bus socket,
// so one wait covers everything, and under io_uring the packet sends of a loop iteration go out
// in the same submission as everything else.
//
// Sends never block. A packet that does not fit in the receiver's socket completes with -EAGAIN
// (and the rest of its chain with -ECANCELED); the caller keeps it, asks for a writable
// notification, and sends it again: back-pressure, never a silent drop.
#pragma once

#include <mcbus/error.hpp>

#include <sys/socket.h>
#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <span>

MCBUS_NAMESPACE_BEGIN

// One packet to one socket. The caller owns it and the bytes it points to until `sent` reports it.
struct packet_send {
  int fd = -1;
  std::uint64_t token = 0;  // handed back in packet_handler::sent
  iovec iov[2] = {};
  msghdr mh = {};

  void set(int socket, std::span<const std::byte> header, std::span<const std::byte> body, std::uint64_t t) {
    fd = socket;
    token = t;
    iov[0] = {const_cast<std::byte*>(header.data()), header.size()};
    iov[1] = {const_cast<std::byte*>(body.data()), body.size()};
    mh = {};
    mh.msg_iov = iov;
    mh.msg_iovlen = body.empty() ? 1 : 2;
  }
};

struct packet_handler {
  // A packet arrived on a source; the bytes are valid during the call only.
  std::function<void(std::uint32_t source, std::span<const std::byte> packet)> packet;
  // A source reached end of file or failed. It is no longer served.
  std::function<void(std::uint32_t source, const error& why)> closed;
  // A send finished: the bytes written, or -errno (-EAGAIN: the receiver is full; -ECANCELED: an
  // earlier packet of the same chain failed).
  std::function<void(std::uint64_t token, int result)> sent;
  // A socket passed to watch_writable() can take packets again.
  std::function<void(std::uint32_t watch)> writable;
};

// The largest packet sent on a group socket. Larger messages travel by unicast over the bus.
// Receivers size their buffers for it; the protocol announces it in Join's reply.
inline constexpr std::size_t max_packet_size = 32 * 1024;

MCBUS_NAMESPACE_END
