// An out-of-tree program that uses the bus connection (mcbus/connection.hpp), so it links
// liburing when mcbus was configured with it. With MCBUS_CONSUMER_ADDRESS set to a bus address it
// connects and asks the bus for its id; without, it checks that a bad address gives an error value.
#include <mcbus/connection.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>

int main() {
  const char* address = std::getenv("MCBUS_CONSUMER_ADDRESS");
  if (!address || !*address) {
    auto conn = mcbus::connection::open("unix:path=/nonexistent/mcbus-consumer");
    if (conn) return std::puts("connected to a socket that does not exist"), 1;
    std::printf("connection consumer: no bus given; a bad address fails with \"%s\"\n", conn.error().message().c_str());
    return 0;
  }
  auto conn = mcbus::connection::open(address);
  if (!conn) return std::printf("open: %s\n", conn.error().message().c_str()), 1;
  auto reply = conn->call_method(mcbus::bus_service, mcbus::bus_path, mcbus::bus_interface, "GetId");
  if (!reply) return std::printf("GetId: %s\n", reply.error().message().c_str()), 1;
  auto id = reply->read_first<std::string>();
  if (!id || id->size() != 32) return std::puts("GetId returned no 32-character id"), 1;
  std::printf("connection consumer: %s over %s, bus id %s\n", conn->unique_name().c_str(), conn->transport_name(),
              id->c_str());
  return 0;
}
