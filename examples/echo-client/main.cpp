// echo-client: calls every method of echo-service and prints what comes back.
//
//   echo-client [--address=ADDRESS] [TEXT]
#include <mcbus/connection.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace {
constexpr mcbus::bus_name service = "org.mcbus.Echo";
constexpr mcbus::object_path_view path = "/org/mcbus/Echo";
constexpr mcbus::interface_name iface = "org.mcbus.Echo1";

int fail(const char* what, const mcbus::call_error& e) {
  std::fprintf(stderr, "echo-client: %s failed: %s\n", what, e.message().c_str());
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  std::string address;
  std::string text = "hello, bus";
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with("--address=")) {
      address = arg.substr(10);
    } else if (arg.starts_with("-")) {
      std::fprintf(stderr, "usage: echo-client [--address=ADDRESS] [TEXT]\n");
      return 2;
    } else {
      text = arg;
    }
  }
  auto conn = address.empty() ? mcbus::connection::session() : mcbus::connection::open(address);
  if (!conn) {
    std::fprintf(stderr, "echo-client: cannot connect: %s\n", conn.error().message().c_str());
    return 1;
  }

  // Listen for Echoed before calling Echo, so the signal cannot be missed.
  std::string echoed;
  auto sub = conn->subscribe("type='signal',sender='org.mcbus.Echo',interface='org.mcbus.Echo1',member='Echoed'",
                             [&](const mcbus::message_view& m) { echoed = *m.read_first<std::string>(); });
  if (!sub) return fail("subscribe", sub.error());

  auto echo = conn->call_method(service, path, iface, "Echo", std::string_view(text));
  if (!echo) return fail("Echo", echo.error());
  std::printf("Echo(\"%s\") -> \"%s\"\n", text.c_str(), std::string(*echo->read_first<std::string_view>()).c_str());

  auto any = conn->call_method(service, path, iface, "EchoAny", *mcbus::variant::from(std::int32_t{42}));
  if (!any) return fail("EchoAny", any.error());
  std::printf("EchoAny(<int32 42>) -> <%s %d>\n", any->read_first<mcbus::variant>()->type().c_str(),
              *any->read_first<mcbus::variant>()->to<std::int32_t>());

  auto sum = conn->call_method(service, path, iface, "Sum", std::vector<std::int32_t>{1, 2, 3, 2147483647});
  if (!sum) return fail("Sum", sum.error());
  std::printf("Sum([1, 2, 3, 2147483647]) -> %lld\n", static_cast<long long>(*sum->read_first<std::int64_t>()));

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return 1;
  const std::string line = "a line through a pipe\n";
  if (::write(pipe_fds[1], line.data(), line.size()) < 0) return 1;
  ::close(pipe_fds[1]);
  mcbus::unix_fd read_end(pipe_fds[0]);
  auto fd = conn->call_method(service, path, iface, "ReadFd", read_end);
  if (!fd) return fail("ReadFd", fd.error());
  std::printf("ReadFd(<pipe>) -> \"%s\"\n", std::string(*fd->read_first<std::string_view>()).c_str());

  auto count = conn->call_method(service, path, "org.freedesktop.DBus.Properties", "Get",
                                 std::string_view("org.mcbus.Echo1"), std::string_view("Count"));
  if (!count) return fail("Get Count", count.error());
  std::printf("Count -> %u\n", *count->read_first<mcbus::variant>()->to<std::uint32_t>());

  // The signal was sent before Echo's reply; it may already be queued, or still on its way.
  (void)conn->run_until([&] { return !echoed.empty(); }, std::chrono::seconds(5));
  std::printf("Echoed signal: \"%s\"\n", echoed.c_str());
  return echoed == text ? 0 : 1;
}
