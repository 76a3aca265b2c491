// echo-service: a complete D-Bus service in one file. Copy it as a template.
//
// Owns org.mcbus.Echo and serves /org/mcbus/Echo with the interface org.mcbus.Echo1:
//   Echo(s) -> s        returns its argument and emits the signal Echoed(s)
//   EchoAny(v) -> v     returns any value unchanged
//   Sum(ai) -> x        adds 32-bit integers into a 64-bit sum
//   ReadFd(h) -> s      returns the first line read from the file descriptor
//   Count (u, read)     how many Echo calls so far, announced through PropertiesChanged
//
//   echo-service [--address=ADDRESS]     (default: the session bus); stops cleanly on SIGTERM/SIGINT
#include <mcbus/connection.hpp>

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

mcbus::connection* running = nullptr;

extern "C" void on_signal(int) {
  if (running) running->stop();  // stop() is safe in a signal handler
}

std::string first_line(int fd) {
  std::string line;
  char c;
  while (line.size() < 65536 && ::read(fd, &c, 1) == 1 && c != '\n') line += c;
  return line;
}

}  // namespace

int main(int argc, char** argv) {
  std::string address;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with("--address=")) {
      address = arg.substr(10);
    } else {
      std::fprintf(stderr, "usage: echo-service [--address=ADDRESS]\n");
      return 2;
    }
  }

  auto conn = address.empty() ? mcbus::connection::session() : mcbus::connection::open(address);
  if (!conn) {
    std::fprintf(stderr, "echo-service: cannot connect: %s\n", conn.error().message().c_str());
    return 1;
  }

  std::uint32_t count = 0;
  mcbus::object_handle echo;  // declared before use in the handlers below
  echo = conn->add_object(
      "/org/mcbus/Echo", mcbus::object_builder()
                             .interface("org.mcbus.Echo1")
                             .method("Echo",
                                     [&](std::string_view text) {
                                       ++count;
                                       (void)echo.emit("org.mcbus.Echo1", "Echoed", text);
                                       (void)echo.properties_changed("org.mcbus.Echo1", {"Count"});
                                       return std::string(text);
                                     },
                                     {"text"}, {"echoed"})
                             .method("EchoAny", [](mcbus::variant v) { return v; }, {"value"}, {"value"})
                             .method("Sum",
                                     [](const std::vector<std::int32_t>& numbers) {
                                       std::int64_t sum = 0;
                                       for (std::int32_t n : numbers) sum += n;
                                       return sum;
                                     },
                                     {"numbers"}, {"sum"})
                             .method("ReadFd", [](mcbus::unix_fd fd) { return first_line(fd.get()); }, {"fd"}, {"line"})
                             .signal<std::string>("Echoed", {"text"})
                             .property<std::uint32_t>("Count", [&] { return count; }));

  auto owned = conn->request_name("org.mcbus.Echo", mcbus::name_flags::do_not_queue);
  if (!owned || *owned != mcbus::request_name_reply::primary_owner) {
    std::fprintf(stderr, "echo-service: cannot own org.mcbus.Echo: %s\n",
                 owned ? "the name is taken" : owned.error().message().c_str());
    return 1;
  }

  running = &*conn;
  struct sigaction sa {};
  sa.sa_handler = on_signal;  // no SA_RESTART: the signal must interrupt the wait
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  std::printf("echo-service: org.mcbus.Echo is %s (transport %s)\n", conn->unique_name().c_str(),
              conn->transport_name());
  std::fflush(stdout);
  const mcbus::error e = conn->run();
  running = nullptr;
  if (e) {
    std::fprintf(stderr, "echo-service: %s\n", e.message().c_str());
    return 1;
  }
  std::printf("echo-service: stopped after %u echoes\n", count);
  return 0;
}
