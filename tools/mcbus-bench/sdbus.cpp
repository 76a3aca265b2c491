// mcbus-bench: sd-bus doing what mcbus does, through the same bus, in the same run: a method
// served through a vtable and called with sd_bus_call_method; signals emitted with
// sd_bus_emit_signal and received through sd_bus_add_match with the very same rule text.
#include "sdbus.hpp"

#if MCBUS_BENCH_HAVE_SDBUS

#include <systemd/sd-bus.h>

#include <cstring>

namespace mcbus_bench {

namespace {

// An sd-bus connection to `address`, registered on the bus (Hello).
sd_bus* open_sdbus(const std::string& address, std::string& why) {
  sd_bus* bus = nullptr;
  int r = sd_bus_new(&bus);
  if (r >= 0) r = sd_bus_set_address(bus, address.c_str());
  if (r >= 0) r = sd_bus_set_bus_client(bus, 1);
  if (r >= 0) r = sd_bus_start(bus);
  if (r < 0) {
    why = std::string("sd-bus: ") + std::strerror(-r);
    if (bus) sd_bus_unref(bus);
    return nullptr;
  }
  return bus;
}

int on_ping(sd_bus_message* m, void*, sd_bus_error*) {
  std::uint64_t x = 0;
  const int r = sd_bus_message_read(m, "t", &x);
  if (r < 0) return r;
  return sd_bus_reply_method_return(m, "t", x);
}

// The vtable in the layout the SD_BUS_* macros produce (those use C designated initializers that
// C++ refuses out of order).
const sd_bus_vtable* ping_vtable() {
  static sd_bus_vtable v[3];
  static bool made = false;
  if (!made) {
    std::memset(v, 0, sizeof v);
    v[0].type = _SD_BUS_VTABLE_START;
    v[0].x.start.element_size = sizeof(sd_bus_vtable);
    v[1].type = _SD_BUS_VTABLE_METHOD;
    v[1].flags = SD_BUS_VTABLE_UNPRIVILEGED;
    v[1].x.method.member = rt_method;
    v[1].x.method.signature = "t";
    v[1].x.method.result = "t";
    v[1].x.method.handler = on_ping;
    v[2].type = _SD_BUS_VTABLE_END;
    made = true;
  }
  return v;
}

}  // namespace

int sdbus_rt_server(const std::string& address, const std::string& name, rt_control& ctl) {
  std::string why;
  sd_bus* bus = open_sdbus(address, why);
  if (!bus) {
    std::fprintf(stderr, "mcbus-bench: sd-bus server: %s\n", why.c_str());
    ctl.failed.store(1);
    return 1;
  }
  int r = sd_bus_add_object_vtable(bus, nullptr, bench_path, bench_interface, ping_vtable(), nullptr);
  if (r >= 0) r = sd_bus_request_name(bus, name.c_str(), 0);
  if (r < 0) {
    std::fprintf(stderr, "mcbus-bench: sd-bus server: %s\n", std::strerror(-r));
    ctl.failed.store(1);
    return 1;
  }
  ctl.ready.store(1);
  while (!ctl.stop.load()) {
    r = sd_bus_process(bus, nullptr);
    if (r < 0) break;
    if (r > 0) continue;
    sd_bus_wait(bus, 50000);
  }
  sd_bus_flush_close_unref(bus);
  return 0;
}

bool sdbus_rt_client(const std::string& address, const std::string& name, unsigned warmup, unsigned calls,
                     std::vector<std::uint64_t>& lat_ns, double& seconds, std::string& why) {
  sd_bus* bus = open_sdbus(address, why);
  if (!bus) return false;
  bool ok = true;
  std::uint64_t t0 = 0;
  for (unsigned k = 0; k < warmup + calls && ok; ++k) {
    if (k == warmup) t0 = now_ns();
    const std::uint64_t start = now_ns();
    sd_bus_error err{};  // SD_BUS_ERROR_NULL is a C compound literal
    sd_bus_message* reply = nullptr;
    int r = sd_bus_call_method(bus, name.c_str(), bench_path, bench_interface, rt_method, &err, &reply, "t",
                               std::uint64_t{k});
    std::uint64_t back = 0;
    if (r >= 0) r = sd_bus_message_read(reply, "t", &back);
    if (r < 0 || back != k) {
      why = std::string("sd_bus_call_method: ") + (err.message ? err.message : std::strerror(-r));
      ok = false;
    }
    sd_bus_error_free(&err);
    sd_bus_message_unref(reply);
    if (k >= warmup) lat_ns.push_back(now_ns() - start);
  }
  seconds = double(now_ns() - t0) * 1e-9;
  sd_bus_flush_close_unref(bus);
  return ok;
}

// ---- fan-out ----------------------------------------------------------------------------------

namespace {

class sdbus_emitter final : public emitter {
 public:
  sdbus_emitter(std::string address, std::string name) : address_(std::move(address)), name_(std::move(name)) {}
  ~sdbus_emitter() override {
    if (bus_) sd_bus_flush_close_unref(bus_);
  }
  bool setup(std::string& why) override {
    bus_ = open_sdbus(address_, why);
    if (!bus_) return false;
    const int r = sd_bus_request_name(bus_, name_.c_str(), 0);
    if (r < 0) {
      why = std::string("sd_bus_request_name: ") + std::strerror(-r);
      return false;
    }
    return true;
  }
  void serve() override {
    while (sd_bus_process(bus_, nullptr) > 0) {
    }
  }
  bool emit(std::uint32_t seq, const std::string& member, const std::string& sensor, std::uint64_t ts,
            std::string& why) override {
    int r;
    while ((r = sd_bus_emit_signal(bus_, bench_path, bench_interface, member.c_str(), "stu", sensor.c_str(), ts,
                                   seq)) == -ENOBUFS) {
      sd_bus_flush(bus_);  // sd-bus's write queue is full: let it drain
    }
    if (r < 0) {
      why = std::string("sd_bus_emit_signal: ") + std::strerror(-r);
      return false;
    }
    // What did not fit in the socket waits in sd-bus's write queue until the bus is processed, as
    // an event loop would on POLLOUT.
    std::uint64_t queued = 0;
    if (sd_bus_get_n_queued_write(bus_, &queued) >= 0 && queued > 0) (void)sd_bus_process(bus_, nullptr);
    return true;
  }
  std::vector<pid_t> extra_pids() override { return {peer_pid(sd_bus_get_fd(bus_))}; }

 private:
  std::string address_, name_;
  sd_bus* bus_ = nullptr;
};

int on_reading(sd_bus_message* m, void* userdata, sd_bus_error*) {
  const char* sensor = nullptr;
  std::uint64_t ts = 0;
  std::uint32_t seq = 0;
  if (sd_bus_message_read(m, "stu", &sensor, &ts, &seq) >= 0) static_cast<recorder*>(userdata)->received(seq, ts);
  return 0;
}

int sdbus_subscriber(const std::string& address, const plan& p, const shared_state& sh, unsigned i) {
  recorder rec(sh, i);
  std::string why;
  sd_bus* bus = open_sdbus(address, why);
  if (!bus) {
    sh.fail("sd-bus subscriber: " + why);
    return 1;
  }
  const int r = sd_bus_add_match(bus, nullptr, p.rule(i).c_str(), on_reading, &rec);
  if (r < 0) {
    sh.fail(std::string("sd_bus_add_match: ") + std::strerror(-r));
    return 1;
  }
  sh.ctl().ready.fetch_add(1);
  if (!rec.wait_go()) return 1;
  rec.started();
  while (!rec.done()) {
    const int n = sd_bus_process(bus, nullptr);
    if (n < 0) {
      sh.fail(std::string("sd_bus_process: ") + std::strerror(-n));
      return 1;
    }
    if (n == 0) sd_bus_wait(bus, 100000);
  }
  sd_bus_flush_close_unref(bus);
  return 0;
}

}  // namespace

path sdbus_path(const std::string& address, pid_t) {
  path r;
  r.impl = "sd-bus";
  r.via = "bus";
  r.make_emitter = [address](const plan& p) -> std::unique_ptr<emitter> {
    return std::make_unique<sdbus_emitter>(address, p.sender);
  };
  r.subscriber = [address](const plan& p, const shared_state& sh, unsigned i) {
    return sdbus_subscriber(address, p, sh, i);
  };
  return r;
}

}  // namespace mcbus_bench

#endif
