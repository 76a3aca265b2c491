// A bare D-Bus client for the integration test: SASL EXTERNAL, Hello, RequestName and sending
// messages built by mcbus in either byte order. Just enough to emit test signals; no dispatching.
#pragma once

#include <mcbus/wire.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace mcbus_test {

class raw_client {
 public:
  ~raw_client() {
    if (fd_ >= 0) ::close(fd_);
  }

  // Connects, authenticates and says Hello; false with `why` on failure.
  bool connect(const std::string& socket_path, mcbus::byte_order order, std::string& why) {
    order_ = order;
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, socket_path.c_str(), sizeof(sa.sun_path) - 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      why = std::string("connect: ") + std::strerror(errno);
      return false;
    }
    char uid[32];
    std::snprintf(uid, sizeof uid, "%u", static_cast<unsigned>(::getuid()));
    std::string hex;
    for (const char* p = uid; *p; ++p) {
      char h[3];
      std::snprintf(h, sizeof h, "%02x", static_cast<unsigned char>(*p));
      hex += h;
    }
    const std::string auth = std::string(1, '\0') + "AUTH EXTERNAL " + hex + "\r\n";
    if (!write_all(auth.data(), auth.size())) return fail(why, "write AUTH");
    std::string line;
    if (!read_line(line) || line.rfind("OK ", 0) != 0) return fail(why, "SASL: " + line);
    if (!write_all("BEGIN\r\n", 7)) return fail(why, "write BEGIN");
    auto hello = mcbus::message::method_call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                             "Hello", order_);
    auto reply = call(hello);
    if (!reply) return fail(why, "no reply to Hello");
    auto name = mcbus::message_view::parse(*reply)->read_first<std::string>();
    if (!name) return fail(why, "bad Hello reply");
    unique_ = *name;
    return true;
  }

  const std::string& unique_name() const noexcept { return unique_; }

  bool request_name(const std::string& name) {
    auto m = mcbus::message::method_call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                         "RequestName", order_);
    m.append(name, std::uint32_t{4});  // DBUS_NAME_FLAG_DO_NOT_QUEUE
    auto reply = call(m);
    if (!reply) return false;
    auto code = mcbus::message_view::parse(*reply)->read_first<std::uint32_t>();
    return code && *code == 1;  // PRIMARY_OWNER
  }

  // Sends a message with the next serial; returns the serial (0 on failure).
  std::uint32_t send(mcbus::message& m) {
    m.set_serial(++serial_);
    auto bytes = m.to_bytes();
    if (!bytes || !write_all(bytes->data(), bytes->size())) return 0;
    return serial_;
  }

  // Reads and drops whatever the bus has sent, without waiting.
  void drain() {
    std::vector<std::byte> msg;
    while (next_message(msg, 0)) {
    }
  }

 private:
  bool fail(std::string& why, const std::string& what) {
    why = what;
    return false;
  }

  bool write_all(const void* p, std::size_t n) {
    const auto* b = static_cast<const char*>(p);
    while (n) {
      const ssize_t w = ::send(fd_, b, n, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        drain();  // the bus may be waiting for us to read before it reads more
        continue;
      }
      if (w <= 0) return false;
      b += w;
      n -= static_cast<std::size_t>(w);
    }
    return true;
  }

  // Reads more into buf_, waiting up to timeout_ms; false on timeout or end.
  bool fill(int timeout_ms) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return false;
    char tmp[65536];
    const ssize_t n = ::recv(fd_, tmp, sizeof tmp, MSG_DONTWAIT);
    if (n <= 0) return false;
    buf_.insert(buf_.end(), reinterpret_cast<std::byte*>(tmp), reinterpret_cast<std::byte*>(tmp) + n);
    return true;
  }

  bool read_line(std::string& line) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      for (std::size_t i = 0; i + 1 < buf_.size(); ++i) {
        if (buf_[i] == std::byte{'\r'} && buf_[i + 1] == std::byte{'\n'}) {
          line.assign(reinterpret_cast<const char*>(buf_.data()), i);
          buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(i + 2));
          return true;
        }
      }
      if (std::chrono::steady_clock::now() > deadline || !fill(1000)) return false;
    }
  }

  // The next whole message, waiting up to timeout_ms for it.
  bool next_message(std::vector<std::byte>& out, int timeout_ms) {
    for (;;) {
      if (buf_.size() >= 16) {
        auto len = mcbus::message_length(buf_);
        if (!len) return false;
        if (buf_.size() >= *len) {
          out.assign(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(*len));
          buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(*len));
          return true;
        }
      }
      if (!fill(timeout_ms)) return false;
    }
  }

  std::optional<std::vector<std::byte>> call(mcbus::message& m) {
    const std::uint32_t serial = send(m);
    if (!serial) return std::nullopt;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    std::vector<std::byte> msg;
    while (std::chrono::steady_clock::now() < deadline) {
      if (!next_message(msg, 1000)) continue;
      auto v = mcbus::message_view::parse(msg);
      if (v && v->reply_serial() == serial) return msg;
    }
    return std::nullopt;
  }

  int fd_ = -1;
  mcbus::byte_order order_ = mcbus::native_byte_order;
  std::uint32_t serial_ = 0;
  std::string unique_;
  std::vector<std::byte> buf_;
};

}  // namespace mcbus_test
