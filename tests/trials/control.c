/* Trial control: a bus-only subscriber written with libsystemd's sd-bus, the reference.
 *
 * It adds the same match rule to the bus (AddMatch) and writes each received seq on its own line
 * to --out, exactly as the mcbus subscriber does, so the two logs can be compared line by line.
 * With --latency=FILE it also writes "<seq> <latency_us>" per signal, the latency being
 * CLOCK_MONOTONIC now minus the mono_ns the publisher put in the body.
 *
 *   control RULE --out=FILE [--latency=FILE] [--expect=N] [--idle-exit=MS] [--max-time=MS]
 *           [--ready=FILE]
 * Connects to DBUS_SESSION_BUS_ADDRESS.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <time.h>

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static FILE *out, *lat;
static long received, read_failures, duplicates, inversions;
static uint64_t last_seq, last_arrival, max_latency_us;
static unsigned char* seen;
static size_t seen_size;
static volatile sig_atomic_t stop_requested;
static void on_term(int sig) {
  (void)sig;
  stop_requested = 1;
}

static int on_tick(sd_bus_message* m, void* userdata, sd_bus_error* err) {
  (void)userdata;
  (void)err;
  const char* s;
  uint64_t seq, sent;
  int r = sd_bus_message_read(m, "stt", &s, &seq, &sent);
  if (r < 0) {
    ++read_failures;
    fprintf(stderr, "control: unreadable Tick: %s\n", strerror(-r));
    return 0;
  }
  uint64_t now = mono_ns();
  fprintf(out, "%llu\n", (unsigned long long)seq);
  if (lat) {
    uint64_t us = now > sent ? (now - sent) / 1000 : 0;
    if (us > max_latency_us) max_latency_us = us;
    fprintf(lat, "%llu %llu\n", (unsigned long long)seq, (unsigned long long)us);
  }
  if (seq < seen_size) {
    if (seen[seq]) ++duplicates;
    seen[seq] = 1;
  }
  if (received > 0 && seq < last_seq) ++inversions;
  last_seq = seq;
  last_arrival = now;
  ++received;
  return 0;
}

int main(int argc, char** argv) {
  const char *rule = NULL, *out_path = NULL, *lat_path = NULL, *ready = NULL;
  long expect = -1, idle_ms = -1, max_ms = 120000;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    if (!strncmp(a, "--out=", 6))
      out_path = a + 6;
    else if (!strncmp(a, "--latency=", 10))
      lat_path = a + 10;
    else if (!strncmp(a, "--ready=", 8))
      ready = a + 8;
    else if (!strncmp(a, "--expect=", 9))
      expect = atol(a + 9);
    else if (!strncmp(a, "--idle-exit=", 12))
      idle_ms = atol(a + 12);
    else if (!strncmp(a, "--max-time=", 11))
      max_ms = atol(a + 11);
    else if (a[0] != '-' && !rule)
      rule = a;
    else
      return fprintf(stderr, "control: bad argument %s\n", a), 2;
  }
  const char* address = getenv("DBUS_SESSION_BUS_ADDRESS");
  if (!rule || !out_path || !address) return fprintf(stderr, "usage: control RULE --out=FILE [options]\n"), 2;
  if (!(out = fopen(out_path, "w")) || (lat_path && !(lat = fopen(lat_path, "w")))) return perror("control"), 1;
  seen_size = 1u << 20;
  seen = calloc(seen_size, 1);

  sd_bus* bus = NULL;
  int r;
  if ((r = sd_bus_new(&bus)) < 0 || (r = sd_bus_set_address(bus, address)) < 0 ||
      (r = sd_bus_set_bus_client(bus, 1)) < 0 || (r = sd_bus_start(bus)) < 0)
    return fprintf(stderr, "control: cannot connect: %s\n", strerror(-r)), 1;
  if ((r = sd_bus_add_match(bus, NULL, rule, on_tick, NULL)) < 0)
    return fprintf(stderr, "control: AddMatch: %s\n", strerror(-r)), 1;
  if (ready) {
    FILE* f = fopen(ready, "w");
    if (f) fclose(f);
  }
  struct sigaction sa = {.sa_handler = on_term};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  const uint64_t started = mono_ns(), deadline = started + (uint64_t)max_ms * 1000000u;
  const char* why = "deadline";
  while (!stop_requested && mono_ns() < deadline) {
    if (expect >= 0 && received >= expect) {
      why = "expected count";
      break;
    }
    r = sd_bus_process(bus, NULL);
    if (r < 0) {
      fprintf(stderr, "control: %s\n", strerror(-r));
      break;
    }
    if (r > 0) continue;
    /* Idle only when nothing is waiting to be read: a starved process is not an idle bus. */
    if (sd_bus_wait(bus, 50000) == 0 && idle_ms >= 0 && received > 0 &&
        mono_ns() - last_arrival >= (uint64_t)idle_ms * 1000000u) {
      why = "idle";
      break;
    }
  }
  if (stop_requested) why = "signal";
  fclose(out);
  if (lat) fclose(lat);
  /* When the last signal came and why the control stopped tell a lagging bus from a lost tail. */
  printf(
      "control: received %ld, duplicates %ld, inversions %ld, read failures %ld, max latency %.1f ms, "
      "last at %.2f s, stopped on %s\n",
      received, duplicates, inversions, read_failures, max_latency_us / 1000.0,
      received > 0 ? (double)(last_arrival - started) / 1e9 : 0.0, why);
  sd_bus_flush_close_unref(bus);
  return 0;
}
