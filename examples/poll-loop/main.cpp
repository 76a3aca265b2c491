// poll-loop: drives an mcbus connection from your own poll() loop, next to other file descriptors.
//
// The connection says what to wait for (fd(), events(), timeout()) and does its work in process(),
// which never blocks. Here the other source is standard input: each line typed is sent as a
// signal, and signals from anyone on the interface are printed.
//
//   poll-loop [--address=ADDRESS]
#include <mcbus/connection.hpp>

#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <string_view>

int main(int argc, char** argv) {
  std::string address = argc > 1 && std::string_view(argv[1]).starts_with("--address=") ? argv[1] + 10 : "";
  auto conn = address.empty() ? mcbus::connection::session() : mcbus::connection::open(address);
  if (!conn) {
    std::fprintf(stderr, "poll-loop: cannot connect: %s\n", conn.error().message().c_str());
    return 1;
  }
  auto sub =
      conn->subscribe("type='signal',interface='org.mcbus.Chat1',member='Said'", [](const mcbus::message_view& m) {
        std::printf("%s said: %s\n", std::string(m.header().sender).c_str(),
                    std::string(*m.read_first<std::string_view>()).c_str());
        std::fflush(stdout);
      });
  if (!sub) {
    std::fprintf(stderr, "poll-loop: %s\n", sub.error().message().c_str());
    return 1;
  }

  std::string pending;
  bool input_open = true;
  while (conn->connected()) {
    pollfd fds[2] = {{conn->fd(), conn->events(), 0}, {STDIN_FILENO, POLLIN, 0}};
    const int n = ::poll(fds, input_open ? 2 : 1, conn->timeout());
    if (n < 0) break;
    if (fds[1].revents & (POLLIN | POLLHUP)) {
      char buf[512];
      const ssize_t got = ::read(STDIN_FILENO, buf, sizeof(buf));
      if (got <= 0) {
        input_open = false;
        break;  // end of input: done
      }
      pending.append(buf, static_cast<std::size_t>(got));
      for (std::size_t eol; (eol = pending.find('\n')) != std::string::npos; pending.erase(0, eol + 1)) {
        mcbus::message m = mcbus::message::signal("/org/mcbus/Chat", "org.mcbus.Chat1", "Said");
        m.append(std::string_view(pending).substr(0, eol));
        (void)conn->emit(std::move(m));
      }
    }
    if (const mcbus::error e = conn->process()) {
      std::fprintf(stderr, "poll-loop: %s\n", e.message().c_str());
      return 1;
    }
  }
  return conn->flush() ? 1 : 0;
}
