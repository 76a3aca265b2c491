// embedded-minimal: the smallest useful D-Bus service, for devices. Copy it as a template.
//
// A sensor. It owns org.mcbus.Sensor and serves /org/mcbus/Sensor with the interface
// org.mcbus.Sensor1:
//   Read() -> d          the latest sample
//   Changed(d)           a signal, emitted when a new sample differs from the last one
//
//   embedded-minimal [--address=ADDRESS] [--source=FILE] [--interval=MS]
//
// Each --interval (default 1000 ms) it takes a sample: the number in FILE when --source is given
// (a sysfs attribute, say; a file holding "42000" from /sys/class/thermal gives 42000), otherwise a
// simulated reading. Without --address it uses the system bus, where devices put their services.
// SIGTERM or SIGINT stop it cleanly.
//
// What makes it small: basic_connection<poll_transport> (no io_uring, no liburing), built with
// -Os -fno-exceptions -fno-rtti (see CMakeLists.txt), no iostreams, and its own poll() loop, so
// the sampling timer needs no thread and no extra library. docs/embedded.md has the figures.
#include <mcbus/connection.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace {

using sensor_connection = mcbus::basic_connection<mcbus::poll_transport>;
using steady = std::chrono::steady_clock;

volatile sig_atomic_t stop_requested = 0;
extern "C" void on_signal(int) { stop_requested = 1; }

// Reads a number from a file; open/read rather than stdio or iostreams keeps the binary small
// and works on sysfs attributes, which must be read in one go.
bool read_number(const char* path, double& out) {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[64];
  const ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  char* end = nullptr;
  out = std::strtod(buf, &end);
  return end != buf;
}

// A reading that moves: 20.0 .. 24.9 in steps of 0.1, then again.
double simulated(unsigned tick) { return 20.0 + static_cast<double>(tick % 50) / 10.0; }

int usage() {
  std::fputs("usage: embedded-minimal [--address=ADDRESS] [--source=FILE] [--interval=MS]\n", stderr);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  const char* address = nullptr;
  const char* source = nullptr;
  long interval_ms = 1000;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with("--address=")) {
      address = argv[i] + 10;
    } else if (arg.starts_with("--source=")) {
      source = argv[i] + 9;
    } else if (arg.starts_with("--interval=")) {
      interval_ms = std::strtol(argv[i] + 11, nullptr, 10);
      if (interval_ms <= 0) return usage();
    } else {
      return usage();
    }
  }

  auto conn = address ? sensor_connection::open(address) : sensor_connection::system();
  if (!conn) {
    std::fprintf(stderr, "embedded-minimal: cannot connect: %s\n", conn.error().message().c_str());
    return 1;
  }

  double value = 0;
  unsigned tick = 0;
  if (!source || !read_number(source, value)) value = simulated(tick);

  mcbus::object_handle sensor =
      conn->add_object("/org/mcbus/Sensor", mcbus::object_builder()
                                                .interface("org.mcbus.Sensor1")
                                                .method("Read", [&] { return value; }, {}, {"value"})
                                                .signal<double>("Changed", {"value"}));

  auto owned = conn->request_name("org.mcbus.Sensor", mcbus::name_flags::do_not_queue);
  if (!owned || *owned != mcbus::request_name_reply::primary_owner) {
    std::fprintf(stderr, "embedded-minimal: cannot own org.mcbus.Sensor: %s\n",
                 owned ? "the name is taken" : owned.error().message().c_str());
    return 1;
  }

  struct sigaction sa {};
  sa.sa_handler = on_signal;  // no SA_RESTART: the signal must interrupt poll()
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::printf("embedded-minimal: org.mcbus.Sensor is %s\n", conn->unique_name().c_str());
  std::fflush(stdout);

  // The loop: wait for the bus or the next sample, whichever comes first.
  const auto interval = std::chrono::milliseconds(interval_ms);
  auto next_sample = steady::now() + interval;
  while (!stop_requested && conn->connected()) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(next_sample - steady::now()).count();
    int wait = left > 0 ? static_cast<int>(left) : 0;
    if (conn->timeout() >= 0 && conn->timeout() < wait) wait = conn->timeout();
    pollfd p{conn->fd(), conn->events(), 0};
    if (::poll(&p, 1, wait) < 0 && errno != EINTR) break;

    if (steady::now() >= next_sample) {
      next_sample += interval;
      double sample = 0;
      if (!source || !read_number(source, sample)) sample = simulated(++tick);
      if (sample != value) {
        value = sample;
        if (mcbus::error e = sensor.emit("org.mcbus.Sensor1", "Changed", value)) {
          std::fprintf(stderr, "embedded-minimal: emit: %s\n", e.message().c_str());
        }
      }
    }
    if (mcbus::error e = conn->process()) {
      std::fprintf(stderr, "embedded-minimal: %s\n", e.message().c_str());
      return 1;
    }
  }
  return conn->flush() ? 1 : 0;
}
