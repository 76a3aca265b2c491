/* sensor-burst: the load for scripts/measure-embedded.sh. Calls org.mcbus.Sensor1.Read() on
 * org.mcbus.Sensor TOTAL times, keeping WINDOW calls in flight, and checks every reply is a
 * double. Written with sd-bus so that the client is the same whichever service is measured.
 *
 *   sensor-burst ADDRESS TOTAL WINDOW
 *
 * Prints "calls=N errors=E seconds=S"; exits 1 if any call failed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <time.h>

static long done = 0, errors = 0, in_flight = 0;

static int on_reply(sd_bus_message* m, void* userdata, sd_bus_error* ret_error) {
  (void)userdata;
  (void)ret_error;
  double v = 0;
  if (sd_bus_message_is_method_error(m, NULL) || sd_bus_message_read(m, "d", &v) < 0) ++errors;
  ++done;
  --in_flight;
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fputs("usage: sensor-burst ADDRESS TOTAL WINDOW\n", stderr);
    return 2;
  }
  const long total = strtol(argv[2], NULL, 10), window = strtol(argv[3], NULL, 10);
  sd_bus* bus = NULL;
  int r = sd_bus_new(&bus);
  if (r >= 0) r = sd_bus_set_address(bus, argv[1]);
  if (r >= 0) r = sd_bus_set_bus_client(bus, 1);
  if (r >= 0) r = sd_bus_start(bus);
  if (r < 0) {
    fprintf(stderr, "sensor-burst: cannot connect: %s\n", strerror(-r));
    return 1;
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  long sent = 0;
  while (done < total) {
    while (sent < total && in_flight < window) {
      r = sd_bus_call_method_async(bus, NULL, "org.mcbus.Sensor", "/org/mcbus/Sensor", "org.mcbus.Sensor1", "Read",
                                   on_reply, NULL, "");
      if (r < 0) {
        fprintf(stderr, "sensor-burst: call: %s\n", strerror(-r));
        return 1;
      }
      ++sent;
      ++in_flight;
    }
    r = sd_bus_process(bus, NULL);
    if (r < 0) {
      fprintf(stderr, "sensor-burst: %s\n", strerror(-r));
      return 1;
    }
    if (r == 0 && sd_bus_wait(bus, 5000000) <= 0) {
      fprintf(stderr, "sensor-burst: no reply within 5 s (%ld of %ld done)\n", done, total);
      return 1;
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  printf("calls=%ld errors=%ld seconds=%.3f\n", done, errors,
         (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
  sd_bus_flush_close_unref(bus);
  return errors ? 1 : 0;
}
