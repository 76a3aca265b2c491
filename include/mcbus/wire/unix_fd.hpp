// mcbus/wire: unix file descriptors as D-Bus values (type 'h').
//
// On the wire an 'h' is an index into the fds that travel beside the message. In C++, unix_fd owns
// a descriptor and closes it on destruction; borrowed_fd names one that someone else owns.
#pragma once

#include <mcbus/config.hpp>

#include <unistd.h>

#include <utility>

MCBUS_NAMESPACE_BEGIN

// A non-owning fd. Writing one into a message duplicates it, so the caller keeps its own.
struct borrowed_fd {
  int fd = -1;
  constexpr bool valid() const noexcept { return fd >= 0; }
  friend constexpr bool operator==(borrowed_fd, borrowed_fd) noexcept = default;
};

// An owning fd: closed when destroyed, movable, not copyable (dup() makes an explicit copy).
class unix_fd {
 public:
  constexpr unix_fd() noexcept = default;
  constexpr explicit unix_fd(int fd) noexcept : fd_(fd) {}
  unix_fd(const unix_fd&) = delete;
  unix_fd& operator=(const unix_fd&) = delete;
  constexpr unix_fd(unix_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  unix_fd& operator=(unix_fd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  ~unix_fd() { reset(); }

  constexpr int get() const noexcept { return fd_; }
  constexpr bool valid() const noexcept { return fd_ >= 0; }
  constexpr explicit operator bool() const noexcept { return valid(); }
  constexpr borrowed_fd borrow() const noexcept { return {fd_}; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  // A new descriptor for the same open file (F_DUPFD_CLOEXEC); invalid if that fails.
  unix_fd dup() const noexcept { return unix_fd(fd_ >= 0 ? dup_cloexec(fd_) : -1); }

  static int dup_cloexec(int fd) noexcept;

 private:
  int fd_ = -1;
};

MCBUS_NAMESPACE_END

#include <fcntl.h>

MCBUS_NAMESPACE_BEGIN
inline int unix_fd::dup_cloexec(int fd) noexcept { return ::fcntl(fd, F_DUPFD_CLOEXEC, 3); }
MCBUS_NAMESPACE_END
