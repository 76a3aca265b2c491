/* sdbus-sensor: examples/embedded-minimal written with sd-bus (libsystemd), for the size and
 * memory comparison in scripts/measure-embedded.sh. Same bus name, object, interface, method,
 * signal, options and loop as the mcbus program:
 *
 *   org.mcbus.Sensor  /org/mcbus/Sensor  org.mcbus.Sensor1
 *     Read() -> d        the latest sample
 *     Changed(d)         emitted when a new sample differs from the last one
 *
 *   sdbus-sensor [--address=ADDRESS] [--source=FILE] [--interval=MS]
 *
 * It is C, as an sd-bus program on a device would be; built with -Os like the mcbus one. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested = 0;
static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

static double value = 0;

static int read_number(const char* path, double* out) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[64];
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  char* end = NULL;
  *out = strtod(buf, &end);
  return end != buf;
}

static double simulated(unsigned tick) { return 20.0 + (double)(tick % 50) / 10.0; }

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int method_read(sd_bus_message* m, void* userdata, sd_bus_error* error) {
  (void)userdata;
  (void)error;
  return sd_bus_reply_method_return(m, "d", value);
}

static const sd_bus_vtable sensor_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD_WITH_NAMES("Read", "", , "d", SD_BUS_PARAM(value), method_read, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_SIGNAL_WITH_NAMES("Changed", "d", SD_BUS_PARAM(value), 0), SD_BUS_VTABLE_END};

static int usage(void) {
  fputs("usage: sdbus-sensor [--address=ADDRESS] [--source=FILE] [--interval=MS]\n", stderr);
  return 2;
}

int main(int argc, char** argv) {
  const char* address = NULL;
  const char* source = NULL;
  long interval_ms = 1000;
  for (int i = 1; i < argc; ++i) {
    if (strncmp(argv[i], "--address=", 10) == 0) {
      address = argv[i] + 10;
    } else if (strncmp(argv[i], "--source=", 9) == 0) {
      source = argv[i] + 9;
    } else if (strncmp(argv[i], "--interval=", 11) == 0) {
      interval_ms = strtol(argv[i] + 11, NULL, 10);
      if (interval_ms <= 0) return usage();
    } else {
      return usage();
    }
  }

  sd_bus* bus = NULL;
  int r;
  if (address) {
    r = sd_bus_new(&bus);
    if (r >= 0) r = sd_bus_set_address(bus, address);
    if (r >= 0) r = sd_bus_set_bus_client(bus, 1);
    if (r >= 0) r = sd_bus_start(bus);
  } else {
    r = sd_bus_open_system(&bus);
  }
  if (r < 0) {
    fprintf(stderr, "sdbus-sensor: cannot connect: %s\n", strerror(-r));
    return 1;
  }

  unsigned tick = 0;
  if (!source || !read_number(source, &value)) value = simulated(tick);

  r = sd_bus_add_object_vtable(bus, NULL, "/org/mcbus/Sensor", "org.mcbus.Sensor1", sensor_vtable, NULL);
  if (r >= 0) r = sd_bus_request_name(bus, "org.mcbus.Sensor", 0);
  if (r < 0) {
    fprintf(stderr, "sdbus-sensor: cannot serve org.mcbus.Sensor: %s\n", strerror(-r));
    return 1;
  }

  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  const char* unique = NULL;
  sd_bus_get_unique_name(bus, &unique);
  printf("sdbus-sensor: org.mcbus.Sensor is %s\n", unique ? unique : "?");
  fflush(stdout);

  uint64_t next_sample = now_ms() + (uint64_t)interval_ms;
  while (!stop_requested) {
    /* Drain what is ready first: sd_bus_process does one message per call. */
    while ((r = sd_bus_process(bus, NULL)) > 0) {
    }
    if (r < 0) {
      if (r != -ECONNRESET && r != -ENOTCONN) fprintf(stderr, "sdbus-sensor: %s\n", strerror(-r));
      break;
    }
    uint64_t now = now_ms();
    int wait = next_sample > now ? (int)(next_sample - now) : 0;
    uint64_t bus_usec = 0;
    if (sd_bus_get_timeout(bus, &bus_usec) >= 0 && bus_usec != UINT64_MAX) {
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      uint64_t mono = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
      int bus_ms = bus_usec > mono ? (int)((bus_usec - mono + 999) / 1000) : 0;
      if (bus_ms < wait) wait = bus_ms;
    }
    struct pollfd p = {sd_bus_get_fd(bus), (short)sd_bus_get_events(bus), 0};
    if (poll(&p, 1, wait) < 0 && errno != EINTR) break;

    if (now_ms() >= next_sample) {
      next_sample += (uint64_t)interval_ms;
      double sample = 0;
      if (!source || !read_number(source, &sample)) sample = simulated(++tick);
      if (sample != value) {
        value = sample;
        r = sd_bus_emit_signal(bus, "/org/mcbus/Sensor", "org.mcbus.Sensor1", "Changed", "d", value);
        if (r < 0) fprintf(stderr, "sdbus-sensor: emit: %s\n", strerror(-r));
      }
    }
  }
  sd_bus_flush(bus);
  sd_bus_flush_close_unref(bus);
  return 0;
}
