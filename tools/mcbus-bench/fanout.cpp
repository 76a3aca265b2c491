// mcbus-bench: the fan-out harness (both phases, CPU accounting, figures) and the mcbus paths.
#include "fanout.hpp"

#include <mcbus/multicast/publisher.hpp>

#include <signal.h>

#include <cmath>
#include <cstring>

namespace mcbus_bench {

// ---- plan -----------------------------------------------------------------------------------------

plan plan::make(unsigned subscribers, double selectivity, unsigned messages, unsigned paced, unsigned window) {
  plan p;
  p.subscribers = subscribers;
  p.groups = selectivity > 0 ? std::max(1u, static_cast<unsigned>(std::lround(1.0 / selectivity))) : 1;
  p.messages = messages;
  p.paced = paced;
  p.window = std::max(1u, window);
  for (unsigned g = 0; g < p.groups && g < subscribers; ++g) p.paced_groups.push_back(g);
  p.sender = "org.mcbus.Bench.p" + std::to_string(::getpid());
  return p;
}

std::string plan::group_namespace(unsigned g) const { return "org.sensor.g" + std::to_string(g); }

std::string plan::sensor(std::uint32_t seq) const {
  return group_namespace(group_of(seq)) + ".s" + std::to_string((seq / groups) % names_per_group);
}

std::string plan::member(std::uint32_t seq) const {
  if (shape == rule_shape::arg0namespace) return bench_member;
  return bench_member + std::to_string(group_of(seq));
}

std::string plan::rule(unsigned i) const {
  const unsigned g = group_of_subscriber(i);
  const std::string head = "type='signal',sender='" + sender + "',interface='" + bench_interface + "',member='";
  if (shape == rule_shape::member) return head + bench_member + std::to_string(g) + "'";
  return head + bench_member + "',arg0namespace='" + group_namespace(g) + "'";
}

const char* to_string(rule_shape s) { return s == rule_shape::member ? "member" : "arg0namespace"; }

std::uint64_t plan::expected_load(unsigned i) const {
  const unsigned g = group_of_subscriber(i);
  return messages / groups + (g < messages % groups ? 1 : 0);
}

std::uint64_t plan::expected_total(unsigned i) const {
  std::uint64_t n = expected_load(i);
  const unsigned g = group_of_subscriber(i);
  for (unsigned k = 0; k < paced; ++k) n += group_of(messages + k) == g;
  return n;
}

// ---- shared state ---------------------------------------------------------------------------------

std::size_t shared_state::bytes(const plan& p) {
  std::size_t samples = 0;
  for (unsigned i = 0; i < p.subscribers; ++i) samples += p.expected_total(i);
  return sizeof(control) + 64 + sizeof(sub_slot) * p.subscribers + 64 + samples * sizeof(std::uint32_t);
}

shared_state::shared_state(const plan& p) : mem_(bytes(p)) {
  if (!mem_) return;
  new (mem_.data()) control();
  slots_at_ = (sizeof(control) + 63) / 64 * 64;
  samples_at_ = (slots_at_ + sizeof(sub_slot) * p.subscribers + 63) / 64 * 64;
  std::uint64_t offset = 0;
  for (unsigned i = 0; i < p.subscribers; ++i) {
    sub_slot* s = new (mem_.data() + slots_at_ + i * sizeof(sub_slot)) sub_slot();
    s->sample_offset = offset;
    s->expected = p.expected_total(i);
    s->expected_load = p.expected_load(i);
    offset += s->expected;
  }
}

void shared_state::fail(const std::string& why) const {
  control& c = ctl();
  if (c.failed.exchange(1) == 0) {
    std::snprintf(c.why, sizeof c.why, "%s", why.c_str());
  }
  c.stop.store(1);
}

bool recorder::wait_go() const {
  control& c = sh_.ctl();
  while (!c.go.load(std::memory_order_acquire)) {
    if (c.stop.load()) return false;
    nap(200000);
  }
  return true;
}

// ---- the harness ----------------------------------------------------------------------------------

namespace {

// Where the slowest subscriber is: the first load-phase message not yet received by every
// subscriber that wants it (messages of groups without subscribers count as received).
std::uint64_t completed(const plan& p, const shared_state& sh) {
  std::uint64_t low = p.messages;
  for (unsigned i = 0; i < p.subscribers; ++i) {
    const std::uint64_t d = sh.slot(i).delivered.load(std::memory_order_acquire);
    const std::uint64_t next = p.group_of_subscriber(i) + std::min(d, sh.slot(i).expected_load) * p.groups;
    low = std::min(low, next);
  }
  return low;
}

bool all_received(const plan& p, const shared_state& sh, bool load_only) {
  for (unsigned i = 0; i < p.subscribers; ++i) {
    const sub_slot& s = sh.slot(i);
    if (s.delivered.load(std::memory_order_acquire) < (load_only ? s.expected_load : s.expected)) return false;
  }
  return true;
}

std::uint64_t total_delivered(const plan& p, const shared_state& sh) {
  std::uint64_t n = 0;
  for (unsigned i = 0; i < p.subscribers; ++i) n += sh.slot(i).delivered.load(std::memory_order_acquire);
  return n;
}

}  // namespace

result_figures run_path(const plan& p, const path& route, const options& o, json_line& line) {
  result_figures r;
  shared_state sh(p);
  if (!sh) {
    r.why = "mmap failed";
    return r;
  }
  control& c = sh.ctl();
  std::vector<pid_t> children;
  for (unsigned i = 0; i < p.subscribers; ++i) {
    children.push_back(fork_child([&, i] {
      while (!c.publisher_ready.load() && !c.stop.load()) nap(1000000);
      if (c.stop.load()) return 1;
      return route.subscriber(p, sh, i);
    }));
  }
  const auto deadline = now_ns() + static_cast<std::uint64_t>(o.timeout_s * 1e9);
  auto timed_out = [&] { return now_ns() > deadline; };
  auto abandon = [&](const std::string& why) {
    sh.fail(why);
    for (pid_t pid : children) ::kill(pid, SIGTERM);
  };
  auto finish = [&]() {
    c.stop.store(1);
    bool children_ok = true;
    for (pid_t pid : children) children_ok = reap(pid) && children_ok;
    if (c.failed.load()) {
      r.ok = false;
      if (r.why.empty()) r.why = c.why;
    } else if (!children_ok && r.why.empty()) {
      r.ok = false;
      r.why = "a subscriber failed";
    }
  };

  std::unique_ptr<emitter> em = route.make_emitter(p);
  std::string why;
  if (!em->setup(why)) {
    abandon("emitter: " + why);
    finish();
    return r;
  }
  c.publisher_ready.store(1);
  while (c.ready.load() < p.subscribers) {
    em->serve();
    if (c.failed.load()) {
      finish();
      return r;
    }
    if (timed_out()) {
      abandon("subscribers did not get ready in time");
      finish();
      return r;
    }
    nap(500000);
  }

  std::vector<pid_t> bus_pids = route.bus_pids;
  for (pid_t pid : em->extra_pids()) bus_pids.push_back(pid);
  auto bus_cpu = [&] {
    process_usage u;
    for (pid_t pid : bus_pids) {
      const process_usage one = tree_usage(pid);
      u.cpu_s += one.cpu_s;
      u.switches += one.switches;
    }
    return u;
  };
  const process_usage bus0 = bus_cpu();
  const double cpu0 = process_cpu_s();
  const std::uint64_t switches0 = context_switches();
  const std::uint64_t t0 = now_ns();
  c.go.store(1, std::memory_order_release);

  // Load phase.
  std::uint64_t done = 0;
  bool ok = true;
  for (std::uint32_t seq = 0; seq < p.messages && ok; ++seq) {
    if (!p.lossy && seq - done >= p.window) {
      while ((done = completed(p, sh)) + p.window <= seq) {
        em->serve();
        if (c.failed.load() || timed_out()) {
          ok = false;
          break;
        }
        nap();
      }
      if (!ok) break;
    }
    if (!em->emit(seq, p.member(seq), p.sensor(seq), now_ns(), why)) {
      abandon("emit: " + why);
      ok = false;
    }
  }
  // Wait for the load phase to arrive everywhere (udp: until nothing has come for a while).
  std::uint64_t last_progress = now_ns(), seen = 0;
  while (ok && !all_received(p, sh, true)) {
    em->serve();
    if (c.failed.load()) ok = false;
    if (timed_out()) {
      abandon("the load phase did not complete in time (delivered " + std::to_string(total_delivered(p, sh)) + ")");
      ok = false;
    }
    if (p.lossy) {
      const std::uint64_t n = total_delivered(p, sh);
      if (n != seen) {
        seen = n;
        last_progress = now_ns();
      } else if (now_ns() - last_progress > 300000000u) {
        break;  // the rest was lost
      }
    }
    nap();
  }
  const double cpu_emitter = process_cpu_s() - cpu0;
  r.switches_emitter = context_switches() - switches0;
  const process_usage bus1 = bus_cpu();
  std::uint64_t t_end = t0;
  for (unsigned i = 0; i < p.subscribers; ++i) {
    const sub_slot& s = sh.slot(i);
    t_end = std::max(t_end, s.load_done_ns.load() ? s.load_done_ns.load() : s.last_ns.load());
  }
  for (unsigned i = 0; i < p.subscribers; ++i) r.delivered_load += sh.slot(i).delivered.load();

  // Paced phase.
  for (std::uint32_t k = 0; ok && k < p.paced; ++k) {
    const std::uint32_t seq = p.messages + k;
    const unsigned g = p.group_of(seq);
    std::vector<std::uint64_t> before;
    for (unsigned i = 0; i < p.subscribers; ++i) before.push_back(sh.slot(i).delivered.load());
    if (!em->emit(seq, p.member(seq), p.sensor(seq), now_ns(), why)) {
      abandon("emit: " + why);
      ok = false;
      break;
    }
    const std::uint64_t sent = now_ns();
    for (unsigned i = 0; ok && i < p.subscribers; ++i) {
      if (p.group_of_subscriber(i) != g) continue;
      while (sh.slot(i).delivered.load(std::memory_order_acquire) == before[i]) {
        em->serve();
        if (c.failed.load()) ok = false;
        if (timed_out()) {
          abandon("the paced phase did not complete in time");
          ok = false;
        }
        if (!ok || (p.lossy && now_ns() - sent > 50000000u)) break;
        nap(5000);
      }
    }
  }
  finish();

  // Figures.
  r.ok = ok && !c.failed.load() && (r.why.empty());
  if (!r.ok && r.why.empty()) r.why = c.why;
  r.seconds = double(t_end - t0) * 1e-9;
  r.emitted_per_s = r.seconds > 0 ? p.messages / r.seconds : 0;
  r.cpu_emitter_s = cpu_emitter;
  r.cpu_bus_s = bus1.cpu_s - bus0.cpu_s;
  r.switches_bus = bus1.switches - bus0.switches;
  std::vector<std::uint32_t> paced_lat, load_lat;
  for (unsigned i = 0; i < p.subscribers; ++i) {
    const sub_slot& s = sh.slot(i);
    const std::uint64_t d = s.delivered.load();
    r.delivered += d;
    r.expected += s.expected;
    r.expected_load += s.expected_load;
    r.reordered += s.reordered;
    r.extra += s.extra;
    r.cpu_subscribers_s += s.cpu_load_s;
    r.switches_subscribers += s.switches;
    const std::uint32_t* samples = sh.samples(i);
    const std::uint64_t load_n = std::min(d, s.expected_load);
    load_lat.insert(load_lat.end(), samples, samples + load_n);
    if (d > s.expected_load) paced_lat.insert(paced_lat.end(), samples + s.expected_load, samples + d);
  }
  r.cpu_s = r.cpu_emitter_s + r.cpu_subscribers_s + r.cpu_bus_s;
  r.p50_us = quantile(paced_lat, 0.5) / 1000;
  r.p99_us = quantile(paced_lat, 0.99) / 1000;
  r.load_p50_us = quantile(load_lat, 0.5) / 1000;
  r.load_p99_us = quantile(load_lat, 0.99) / 1000;
  if (r.ok && !p.lossy && (r.delivered != r.expected || r.reordered || r.extra)) {
    r.ok = false;
    r.why = "delivered " + std::to_string(r.delivered) + " of " + std::to_string(r.expected) + " (reordered " +
            std::to_string(r.reordered) + ", extra " + std::to_string(r.extra) + ")";
  }
  em->describe(line);
  return r;
}

void put_figures(json_line& line, const result_figures& r, bool with_loss) {
  line.num("seconds", r.seconds, 4)
      .num("emitted_per_s", r.emitted_per_s, 0)
      .integer("delivered", r.delivered)
      .integer("expected", r.expected);
  if (with_loss) line.integer("lost", r.expected - std::min(r.expected, r.delivered));
  line.num("cpu_s", r.cpu_s, 3)
      .num("p50_us", r.p50_us, 1)
      .num("p99_us", r.p99_us, 1)
      .num("load_p50_us", r.load_p50_us, 1)
      .num("load_p99_us", r.load_p99_us, 1)
      .num("cpu_emitter_s", r.cpu_emitter_s, 3)
      .num("cpu_subscribers_s", r.cpu_subscribers_s, 3)
      .num("cpu_bus_s", r.cpu_bus_s, 2);
  if (r.reordered || r.extra) line.integer("reordered", r.reordered).integer("extra", r.extra);
  line.boolean("ok", r.ok);
  if (!r.ok) line.str("error", r.why);
}

// ---- mcbus over the multicast group or the bus -------------------------------------------------

mcbus::message make_signal(const std::string& member, const std::string& sensor, std::uint64_t ts, std::uint32_t seq) {
  mcbus::message m = mcbus::message::signal(mcbus::object_path_view::from_unchecked(bench_path),
                                            mcbus::interface_name::from_unchecked(bench_interface),
                                            mcbus::member_name::from_unchecked(member));
  m.append(std::string_view(sensor), ts, seq);
  return m;
}

std::size_t signal_size(const plan& p) {
  mcbus::message m = make_signal(p.member(0), p.sensor(0), now_ns(), 1);
  m.set_sender(mcbus::bus_name::from_unchecked(":1.100"));  // as long as a typical unique name
  m.set_serial(1);
  (void)m.seal();
  return m.size();
}

namespace {

class mcbus_emitter final : public emitter {
 public:
  mcbus_emitter(bool multicast, std::string address, std::string name)
      : multicast_(multicast), address_(std::move(address)), name_(std::move(name)) {}

  bool setup(std::string& why) override {
    auto c = mcbus::connection::open(address_);
    if (!c) {
      why = c.error().message();
      return false;
    }
    conn_.emplace(std::move(*c));
    auto owned = conn_->request_name(mcbus::bus_name::from_unchecked(name_), mcbus::name_flags::do_not_queue);
    if (!owned || *owned != mcbus::request_name_reply::primary_owner) {
      why = "cannot own " + name_;
      return false;
    }
    if (multicast_) {
      mcbus::multicast::publisher_options po;
      po.bus_copy = false;  // the subscribers all joined: no bus copy (stated in the docs)
      // Every subscriber runs as this uid: allow them all (the default, 256 per uid, is a guard
      // against one user taking every place, which a benchmark of 256 subscribers would hit).
      po.max_members_per_uid = 1024;
      auto pub = mcbus::multicast::publisher::create(*conn_, po);
      if (!pub) {
        why = pub.error().message();
        return false;
      }
      pub_ = std::move(*pub);
    }
    return true;
  }
  void serve() override {
    burst_.reset();  // submit what the burst queued before waiting
    (void)conn_->process();
  }
  bool emit(std::uint32_t seq, const std::string& member, const std::string& sensor, std::uint64_t ts,
            std::string& why) override {
    mcbus::message m = make_signal(member, sensor, ts, seq);
    if (multicast_) {
      // The emitter runs outside the loop: bursts of emits share one io_uring submission, as
      // emits from handlers inside the loop do.
      if (!burst_) burst_.emplace(*pub_);
      if (mcbus::error e = pub_->emit(std::move(m))) {
        why = e.message();
        return false;
      }
      if (++in_burst_ == emit_burst) {
        burst_.reset();
        in_burst_ = 0;
      }
      return true;
    }
    auto r = conn_->emit(std::move(m));
    if (!r) why = r.error().message();
    return static_cast<bool>(r);
  }
  std::vector<pid_t> extra_pids() override { return {peer_pid(conn_->transport().socket())}; }
  void describe(json_line& line) override {
    line.str("transport", conn_->transport_name());
    if (pub_) {
      const auto& s = pub_->stats();
      line.integer("packets", s.packets).integer("backpressure", s.backpressure);
    }
  }

 private:
  bool multicast_;
  std::string address_, name_;
  std::optional<mcbus::connection> conn_;
  std::unique_ptr<mcbus::multicast::publisher> pub_;
  std::optional<mcbus::multicast::publisher::batch> burst_;  // declared after pub_: closed first
  unsigned in_burst_ = 0;
};

int mcbus_subscriber(const std::string& address, bool multicast, const plan& p, const shared_state& sh, unsigned i) {
  recorder rec(sh, i);
  mcbus::connection_options co;
  co.multicast_join_timeout = std::chrono::seconds(60);  // 64 members join at once on 2 busy cores
  auto conn = mcbus::connection::open(address, co);
  if (!conn) {
    sh.fail("subscriber: " + conn.error().message());
    return 1;
  }
  auto sub = conn->subscribe(
      p.rule(i),
      [&](const mcbus::message_view& m) {
        auto args = m.read<std::string_view, std::uint64_t, std::uint32_t>();
        if (args) rec.received(std::get<2>(*args), std::get<1>(*args));
      },
      multicast ? mcbus::subscribe_via::multicast : mcbus::subscribe_via::bus);
  if (!sub) {
    sh.fail("subscribe: " + sub.error().message());
    return 1;
  }
  if (multicast && conn->multicast_groups().empty()) {
    sh.fail("subscriber did not join the publisher's group");
    return 1;
  }
  sh.ctl().ready.fetch_add(1);
  if (!rec.wait_go()) return 1;
  rec.started();
  while (!rec.done()) {
    mcbus::error e = conn->run_until([&] { return rec.done(); }, std::chrono::milliseconds(100));
    if (e && e.code() != mcbus::errc::timeout) {
      sh.fail("subscriber loop: " + e.message());
      return 1;
    }
  }
  if (multicast) {
    // Every message must have come from the group, none over the bus.
    const auto groups = conn->multicast_groups();
    if (groups.empty()) {
      sh.fail("subscriber left the group during the run (it fell back to the bus)");
      return 1;
    }
  }
  return 0;
}

}  // namespace

path mcbus_path(const std::string& via, const std::string& address, pid_t) {
  path r;
  r.impl = "mcbus";
  r.via = via;
  const bool multicast = via == "multicast";
  r.make_emitter = [=](const plan& p) -> std::unique_ptr<emitter> {
    return std::make_unique<mcbus_emitter>(multicast, address, p.sender);
  };
  r.subscriber = [=](const plan& p, const shared_state& sh, unsigned i) {
    return mcbus_subscriber(address, multicast, p, sh, i);
  };
  return r;
}

}  // namespace mcbus_bench
