// Wire codec benchmark: mcbus against sd-bus and libdbus, in the same binary, on three messages:
//   (a) props  a PropertiesChanged signal with an a{sv} of 20 mixed entries
//   (b) call   a method call with (s, u, as) holding 100 strings
//   (c) blob   a signal with a 64 KiB ay; mcbus borrows it (mcbus::borrow) where sd-bus and libdbus
//              copy it, and the extra row c_copy has mcbus copying it too
// For each: encode (build the message from the same data and seal it) and decode (parse, validate
// and read every value, folding them into a checksum that must match across the three codecs). The
// table at the end gives the times, their sum (encode+decode) and the ratios.
//
// How comparable the work is: see wire_codec_sdbus.hpp and wire_codec_libdbus.hpp. In short,
// mcbus decode = message_view::parse (full validation) + reading every value; libdbus decode =
// dbus_message_demarshal (full validation, and a copy) + reading; sd-bus has no public parser, so
// its decode = rewind + reading every value (validated as read), without header parsing.
#include <mcbus/wire.hpp>

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "wire_codec_data.hpp"
#ifdef MCBUS_BENCH_HAVE_SDBUS
#include "wire_codec_sdbus.hpp"
#endif
#ifdef MCBUS_BENCH_HAVE_LIBDBUS
#include "wire_codec_libdbus.hpp"
#endif

namespace wire_bench::mcbus_side {

using mcbus::message;
using mcbus::message_view;
using mcbus::reader;
using mcbus::writer;

[[noreturn]] void fail(const char* what, const mcbus::error& e) {
  std::fprintf(stderr, "mcbus: %s: %s\n", what, e.message().c_str());
  std::abort();
}

// Compile-time lengths: a C++ caller has them (literals, std::string); the C libraries call strlen().
constexpr std::string_view props_path_v = props_path, props_interface_v = props_interface,
                           props_member_v = props_member, props_changed_v = props_changed_interface,
                           props_invalidated_v = props_invalidated, call_destination_v = call_destination,
                           call_path_v = call_path, call_interface_v = call_interface, call_member_v = call_member,
                           call_text_v = call_text, blob_path_v = blob_path, blob_interface_v = blob_interface,
                           blob_member_v = blob_member;

// The same loop over the same table as the sd-bus and libdbus encoders, through the writer.
void write_props(writer& w) {
  w.put_string(props_changed_v);
  const writer::array_mark a = w.open_array("{sv}");
  for (const prop& p : props()) {
    w.open_struct();
    w.put_string(p.name);
    w.open_variant(p.kind);
    switch (tag_of(p.kind)) {
      case 's': w.put_string(p.s); break;
      case 'o': w.put_object_path(p.s); break;
      case 'u':
      case 'i': w.put_fixed<std::uint32_t>(static_cast<std::uint32_t>(p.n)); break;
      case 'b': w.put_bool(p.n != 0); break;
      case 'x':
      case 't': w.put_fixed<std::uint64_t>(p.n); break;
      case 'd': w.put_double(p.d); break;
      case 'r':
        w.write(std::tuple<std::uint32_t, std::uint32_t>(static_cast<std::uint32_t>(p.n),
                                                         static_cast<std::uint32_t>(p.n2)));
        break;
      case 'A': w.write(p.strings); break;
      case 'Y': w.write(p.bytes); break;
    }
    w.close_variant();
    w.close_struct();
  }
  w.close_array(a);
  const writer::array_mark inv = w.open_array("s");
  w.put_string(props_invalidated_v);
  w.close_array(inv);
}

message encode_props() {
  message m = message::signal(mcbus::object_path_view::from_unchecked(props_path_v),
                              mcbus::interface_name::from_unchecked(props_interface_v),
                              mcbus::member_name::from_unchecked(props_member_v));
  m.append_with("sa{sv}as", write_props);
  if (mcbus::error e = m.seal()) fail("seal props", e);
  return m;
}

message encode_call() {
  message m = message::method_call(
      mcbus::bus_name::from_unchecked(call_destination_v), mcbus::object_path_view::from_unchecked(call_path_v),
      mcbus::interface_name::from_unchecked(call_interface_v), mcbus::member_name::from_unchecked(call_member_v));
  m.append(call_text_v, call_number, call_strings());
  if (mcbus::error e = m.seal()) fail("seal call", e);
  return m;
}

// The payload is borrowed: the message references it, and a sender gathers it straight into
// sendmsg(). sd-bus and libdbus have no such call (sd-bus's memfd arrays need the data in a sealed
// memfd first), so they copy it; encode_blob_copy() is mcbus copying too, for comparison.
template <class Payload>
message blob_message(const Payload& payload) {
  message m = message::signal(mcbus::object_path_view::from_unchecked(blob_path_v),
                              mcbus::interface_name::from_unchecked(blob_interface_v),
                              mcbus::member_name::from_unchecked(blob_member_v));
  m.append(payload);
  if (mcbus::error e = m.seal()) fail("seal blob", e);
  return m;
}
message encode_blob() { return blob_message(mcbus::borrow(std::span<const std::uint8_t>(blob()))); }
message encode_blob_copy() { return blob_message(std::span<const std::uint8_t>(blob())); }

void read_strings(reader& r, checksum& c) {
  const reader::array_cursor a = r.open_array("s");
  std::uint64_t n = 0;
  while (r.in_array(a)) {
    c.str(r.get_string());
    ++n;
  }
  r.close_array(a);
  c.num(n);
}

std::uint64_t read_props(const message_view& v) {
  checksum c;
  reader r = v.body();
  c.str(r.get_string());
  const reader::array_cursor a = r.open_array("{sv}");
  while (r.in_array(a)) {
    r.open_struct();
    c.str(r.get_string());
    switch (tag_of(r.open_variant().str())) {
      case 's': c.str(r.get_string()); break;
      case 'o': c.str(r.get_object_path().str()); break;
      case 'u': c.num(r.get_fixed<std::uint32_t>()); break;
      case 'b': c.num(r.get_bool()); break;
      case 'i': c.num(static_cast<std::uint64_t>(static_cast<std::int64_t>(r.get<std::int32_t>()))); break;
      case 'x':
      case 't': c.num(r.get_fixed<std::uint64_t>()); break;
      case 'd': c.num(static_cast<std::uint64_t>(r.get_double() * 1000)); break;
      case 'r': {
        const auto [x, y] = r.get<std::tuple<std::uint32_t, std::uint32_t>>();
        c.num(x);
        c.num(y);
        break;
      }
      case 'A': read_strings(r, c); break;
      case 'Y': {
        const auto bytes = r.get<std::span<const std::uint8_t>>();
        c.bytes(bytes.data(), bytes.size());
        break;
      }
    }
    r.close_variant();
    r.close_struct();
  }
  r.close_array(a);
  read_strings(r, c);
  if (r.err()) fail("read props", r.err());
  return c.h;
}

std::uint64_t read_call(const message_view& v) {
  checksum c;
  reader r = v.body();
  c.str(r.get_string());
  c.num(r.get_fixed<std::uint32_t>());
  read_strings(r, c);
  if (r.err()) fail("read call", r.err());
  return c.h;
}

std::uint64_t read_blob(const message_view& v) {
  checksum c;
  reader r = v.body();
  const auto bytes = r.get<std::span<const std::uint8_t>>();
  c.bytes(bytes.data(), bytes.size());
  if (r.err()) fail("read blob", r.err());
  return c.h;
}

}  // namespace wire_bench::mcbus_side

namespace {

using namespace wire_bench;

// One message's codec operations for one library.
struct codec {
  const char* library;
  void (*encode)(benchmark::State&);
  void (*decode)(benchmark::State&);
};

// ---- mcbus -------------------------------------------------------------------------------------

template <mcbus::message (*Encode)(), std::uint64_t (*Read)(const mcbus::message_view&)>
struct mcbus_ops {
  static void encode(benchmark::State& st) {
    for (auto _ : st) {
      mcbus::message m = Encode();
      benchmark::DoNotOptimize(m.header_bytes().data());
    }
  }
  static void decode(benchmark::State& st) {
    mcbus::message m = Encode();
    auto bytes = m.to_bytes();  // one contiguous buffer, as it arrives from a socket
    const std::span<const std::byte> all(*bytes);
    for (auto _ : st) {
      auto v = mcbus::message_view::parse(all);
      if (!v) mcbus_side::fail("parse", v.error());
      benchmark::DoNotOptimize(Read(*v));
    }
  }
  static std::uint64_t check() {
    mcbus::message m = Encode();
    auto bytes = m.to_bytes();
    auto v = mcbus::message_view::parse(*bytes);
    if (!v) mcbus_side::fail("parse", v.error());
    return Read(*v);
  }
};

#ifdef MCBUS_BENCH_HAVE_SDBUS
template <sd_bus_message* (*Encode)(), std::uint64_t (*Read)(sd_bus_message*)>
struct sdbus_ops {
  static void encode(benchmark::State& st) {
    for (auto _ : st) sd_bus_message_unref(Encode());
  }
  static void decode(benchmark::State& st) {
    sd_bus_message* m = Encode();
    for (auto _ : st) benchmark::DoNotOptimize(Read(m));
    sd_bus_message_unref(m);
  }
  static std::uint64_t check() {
    sd_bus_message* m = Encode();
    const std::uint64_t h = Read(m);
    sd_bus_message_unref(m);
    return h;
  }
};
#endif

#ifdef MCBUS_BENCH_HAVE_LIBDBUS
template <libdbus::blob_bytes (*Encode)(), std::uint64_t (*Read)(const libdbus::blob_bytes&)>
struct libdbus_ops {
  static void encode(benchmark::State& st) {
    for (auto _ : st) benchmark::DoNotOptimize(Encode().data);
  }
  static void decode(benchmark::State& st) {
    const libdbus::blob_bytes b = Encode();
    for (auto _ : st) benchmark::DoNotOptimize(Read(b));
  }
  static std::uint64_t check() { return Read(Encode()); }
};
#endif

struct message_case {
  const char* name;
  std::uint64_t (*expected)();
  std::vector<codec> codecs;
  std::vector<std::pair<const char*, std::uint64_t (*)()>> checks;
  const char* peers_from = nullptr;  // take sd-bus's and libdbus's times from this case
};

template <class Ops>
codec make(const char* library) {
  return {library, &Ops::encode, &Ops::decode};
}

// The peers' operations for a message, or void where the library is absent.
#ifdef MCBUS_BENCH_HAVE_SDBUS
#define MCBUS_BENCH_SDBUS_OPS(encode, decode) sdbus_ops<sdbus::encode, sdbus::decode>
#else
#define MCBUS_BENCH_SDBUS_OPS(encode, decode) void
#endif
#ifdef MCBUS_BENCH_HAVE_LIBDBUS
#define MCBUS_BENCH_LIBDBUS_OPS(encode, decode) libdbus_ops<libdbus::encode, libdbus::decode>
#else
#define MCBUS_BENCH_LIBDBUS_OPS(encode, decode) void
#endif

template <class M, class S, class L>
message_case make_case(const char* name, std::uint64_t (*expected)()) {
  message_case c{name, expected, {make<M>("mcbus")}, {{"mcbus", M::check}}};
  if constexpr (!std::is_void_v<S>) {
    c.codecs.push_back(make<S>("sd-bus"));
    c.checks.emplace_back("sd-bus", S::check);
  }
  if constexpr (!std::is_void_v<L>) {
    c.codecs.push_back(make<L>("libdbus"));
    c.checks.emplace_back("libdbus", L::check);
  }
  return c;
}

std::vector<message_case> cases() {
  using namespace wire_bench;
  std::vector<message_case> out;
  out.push_back(
      make_case<mcbus_ops<mcbus_side::encode_props, mcbus_side::read_props>,
                MCBUS_BENCH_SDBUS_OPS(encode_props, decode_props), MCBUS_BENCH_LIBDBUS_OPS(encode_props, decode_props)>(
          "a_props", expected_props));
  out.push_back(
      make_case<mcbus_ops<mcbus_side::encode_call, mcbus_side::read_call>,
                MCBUS_BENCH_SDBUS_OPS(encode_call, decode_call), MCBUS_BENCH_LIBDBUS_OPS(encode_call, decode_call)>(
          "b_call", expected_call));
  out.push_back(
      make_case<mcbus_ops<mcbus_side::encode_blob, mcbus_side::read_blob>,
                MCBUS_BENCH_SDBUS_OPS(encode_blob, decode_blob), MCBUS_BENCH_LIBDBUS_OPS(encode_blob, decode_blob)>(
          "c_blob64k", expected_blob));
  // mcbus copying the payload as the others do; their times are those of c_blob64k.
  message_case copy =
      make_case<mcbus_ops<mcbus_side::encode_blob_copy, mcbus_side::read_blob>, void, void>("c_copy", expected_blob);
  copy.peers_from = "c_blob64k";
  out.push_back(std::move(copy));
  return out;
}

// Collects each benchmark's CPU time per iteration (the median when repetitions are asked for; CPU
// time, because the machines are shared and wall time counts other people's work) and prints the
// comparison table after the usual console output. encode+decode is the sum of the two.
class ratio_reporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.error_occurred) continue;
      const bool median = r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
      if (r.run_type == Run::RT_Aggregate && !median) continue;
      const std::string name = r.run_name.function_name;
      if (median || !ns_.count(name)) ns_[name] = r.GetAdjustedCPUTime() * to_ns(r.time_unit);
    }
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    std::printf("\nwire codec: CPU time per message (us), and how many times as long the others take\n");
    std::printf("%-10s %-14s %9s %9s %9s %10s %10s\n", "message", "operation", "mcbus", "sd-bus", "libdbus",
                "sd-bus/mc", "libdbus/mc");
    int target_checked = 0;  // of the three messages, how many have both times
    bool target_met = true;
    for (const message_case& c : cases()) {
      double sum[3] = {0, 0, 0};
      for (const char* op : {"encode", "decode", "encode+decode"}) {
        double t[3];
        const char* libs[3] = {"mcbus", "sd-bus", "libdbus"};
        for (int i = 0; i < 3; ++i) {
          if (op == std::string_view("encode+decode")) {
            t[i] = sum[i];
          } else {
            const char* from = i > 0 && c.peers_from ? c.peers_from : c.name;
            t[i] = get(std::string(op) + "/" + from + "/" + libs[i]);
            sum[i] = (sum[i] < 0 || t[i] < 0) ? -1 : sum[i] + t[i];
          }
        }
        std::printf("%-10s %-14s %9s %9s %9s %10s %10s\n", c.name, op, us(t[0]).c_str(), us(t[1]).c_str(),
                    us(t[2]).c_str(), ratio(t[1], t[0]).c_str(), ratio(t[2], t[0]).c_str());
        if (op == std::string_view("encode+decode") && t[0] > 0 && t[1] > 0 && !c.peers_from) {
          ++target_checked;
          target_met = target_met && t[1] / t[0] >= 4.0;
        }
      }
    }
    if (target_checked == 3) {
      std::printf("target: mcbus >= 4x faster than sd-bus on encode+decode for (a), (b) and (c): %s\n",
                  target_met ? "met" : "NOT met");
    }
  }

 private:
  static double to_ns(benchmark::TimeUnit u) {
    switch (u) {
      case benchmark::kNanosecond: return 1;
      case benchmark::kMicrosecond: return 1e3;
      case benchmark::kMillisecond: return 1e6;
      case benchmark::kSecond: return 1e9;
    }
    return 1;
  }
  double get(const std::string& name) const {
    const auto it = ns_.find(name);
    return it == ns_.end() ? -1 : it->second;
  }
  static std::string us(double ns) {
    if (ns < 0) return "-";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", ns / 1000);
    return buf;
  }
  static std::string ratio(double other, double mc) {
    if (other < 0 || mc <= 0) return "-";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2fx", other / mc);
    return buf;
  }
  std::map<std::string, double> ns_;
};

}  // namespace

int main(int argc, char** argv) {
  // Before timing anything: every codec must read back exactly the content that was written.
  for (const message_case& c : cases()) {
    for (const auto& [library, check] : c.checks) {
      if (check() != c.expected()) {
        std::fprintf(stderr, "%s decodes %s to other values than were encoded\n", library, c.name);
        return 1;
      }
    }
  }
  for (const message_case& c : cases()) {
    for (const codec& k : c.codecs) {
      const std::string suffix = std::string(c.name) + "/" + k.library;
      benchmark::RegisterBenchmark(("encode/" + suffix).c_str(), k.encode)->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark(("decode/" + suffix).c_str(), k.decode)->Unit(benchmark::kMicrosecond);
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  ratio_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
