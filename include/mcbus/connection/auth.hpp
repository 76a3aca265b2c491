// mcbus: opening a connection's socket and authenticating on it.
//
// Both steps block with a deadline; they run once, before the transport takes the socket over.
// The SASL conversation itself is the pure state machine of io/sasl.hpp; this file only moves its
// bytes.
#pragma once

#include <mcbus/error.hpp>
#include <mcbus/io/address.hpp>
#include <mcbus/io/sasl.hpp>
#include <mcbus/io/transport.hpp>
#include <mcbus/wire/unix_fd.hpp>

#include <sys/socket.h>

#include <array>
#include <chrono>
#include <string>
#include <vector>

MCBUS_NAMESPACE_BEGIN

struct opened_socket {
  unix_fd fd;
  bool can_pass_fds = false;
  std::string guid;  // the address's guid=, if any
};

namespace detail {

inline result<unix_fd> connect_to(const socket_address& sa, std::chrono::steady_clock::time_point deadline) {
  unix_fd fd(::socket(sa.domain, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return error::from_errno(errno, "socket");
  if (::connect(fd.get(), sa.get(), sa.length) == 0) return fd;
  if (errno != EINPROGRESS && errno != EAGAIN) return error::from_errno(errno, "connect");
  pollfd p{fd.get(), POLLOUT, 0};
  const int r = ::poll(&p, 1, to_poll_timeout(deadline));
  if (r == 0) return error(errc::timeout, error::no_offset, "connect");
  int so_error = 0;
  socklen_t len = sizeof(so_error);
  ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &so_error, &len);
  if (so_error != 0) return error::from_errno(so_error, "connect");
  return fd;
}

}  // namespace detail

// Connects to the first address of a ';'-separated list that accepts the connection. The error
// of the last attempt is returned when none does.
inline result<opened_socket> open_socket(std::string_view address_list, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto addresses = parse_address_list(address_list);
  if (!addresses) return addresses.error();
  error last(errc::bad_address, error::no_offset, "empty address list");
  for (const address& a : *addresses) {
    auto targets = resolve(a);
    if (!targets) {
      last = targets.error();
      continue;
    }
    for (const socket_address& sa : *targets) {
      auto fd = detail::connect_to(sa, deadline);
      if (fd) return opened_socket{std::move(*fd), a.can_pass_fds(), std::string(a.guid())};
      last = fd.error();
    }
  }
  return last;
}

struct auth_result {
  bool unix_fds = false;
  std::string guid;
  std::string leftover;  // bytes after the last SASL line: the start of the first message
};

// Runs the SASL client conversation on a connected socket.
inline result<auth_result> authenticate(int fd, sasl_options opts, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  sasl_client sasl(std::move(opts));
  std::array<std::byte, 4096> buf;
  while (true) {
    while (!sasl.output().empty()) {
      if (error e = detail::write_all(fd, sasl.output(), deadline)) return e;
      sasl.consume(sasl.output().size());
    }
    if (sasl.status() == sasl_status::authenticated) break;
    if (sasl.status() == sasl_status::failed) return sasl.failure();
    auto n = detail::read_some(fd, buf, deadline);
    if (!n) return n.error();
    sasl.feed(std::span<const std::byte>(buf.data(), *n));
  }
  auth_result out;
  out.unix_fds = sasl.unix_fd_agreed();
  out.guid = std::string(sasl.server_guid());
  out.leftover = sasl.take_leftover();
  return out;
}

MCBUS_NAMESPACE_END
