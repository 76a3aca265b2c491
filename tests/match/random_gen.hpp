// Random match rules and messages for differential tests, benchmarks and fuzzers.
//
// Both draw from small pools of names, paths and strings chosen around the edges of the matching
// rules (prefixes with and without separators, quotes, commas, empty strings), so that random
// rules and random messages meet often. The source of randomness is a template parameter with
// `unsigned below(unsigned n)`: a seeded PRNG in tests, the fuzzer's input in fuzz targets.
#pragma once

#include <mcbus/match.hpp>
#include <mcbus/wire.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace mcbus_test {

struct prng {
  std::mt19937_64 g;
  explicit prng(std::uint64_t seed) : g(seed) {}
  unsigned below(unsigned n) { return n ? static_cast<unsigned>(g() % n) : 0; }
};

// The names the generated world uses: who receives, who owns what.
struct world {
  static constexpr std::string_view receiver = ":1.5";
  static constexpr mcbus::name_owner owner_table[] = {
      {"org.example.Sub", ":1.5"},
      {"org.example.Pub", ":1.7"},
      {"com.acme.Svc", ":1.7"},
      {"com.acme.Other", ":1.9"},
  };
  static std::span<const mcbus::name_owner> owners() { return owner_table; }
};

namespace pools {
inline constexpr std::string_view interfaces[] = {
    "org.example.Foo", "org.example.Bar", "org.example.Foo2", "com.acme.Ifc", "a.b", "org.freedesktop.DBus.Properties"};
inline constexpr std::string_view members[] = {"Changed", "Changed2", "Ping", "A", "PropertiesChanged", "Changez"};
inline constexpr std::string_view paths[] = {
    "/",  "/org", "/org/example", "/org/example/foo", "/org/example/foobar", "/org/example/foo/bar",
    "/a", "/a/b", "/a/bb"};
inline constexpr std::string_view senders[] = {
    ":1.5", ":1.7", ":1.42", ":2.1", "org.example.Pub", "com.acme.Svc", "org.freedesktop.DBus", "org.example.Sub"};
inline constexpr std::string_view dests[] = {
    ":1.5", ":1.9", ":1.7", "org.example.Sub", "com.acme.Other", "org.unknown.Name", "com.acme.Svc"};
inline constexpr std::string_view strings[] = {"",
                                               "a",
                                               "foo",
                                               "foo.bar",
                                               "foo.bar.baz",
                                               "foo.barbaz",
                                               "/",
                                               "/aa/",
                                               "/aa/bb/",
                                               "/aa/bb/cc",
                                               "/aa/b",
                                               "/aa",
                                               "with'quote",
                                               "x,y",
                                               "back\\slash",
                                               "com.example",
                                               "com.example.backend",
                                               ":1.5"};
inline constexpr std::string_view namespaces[] = {"foo", "foo.bar", "com", "com.example", "com.example.backend", ":1"};
inline constexpr std::string_view object_paths[] = {"/", "/aa", "/aa/bb", "/aa/bb/cc", "/org/example/foo"};
}  // namespace pools

template <class R, std::size_t N>
std::string_view pick(R& r, const std::string_view (&pool)[N]) {
  return pool[r.below(N)];
}

// A string argument: usually from the pool, sometimes long (past 255 bytes) or random printable.
template <class R>
std::string random_string(R& r) {
  switch (r.below(12)) {
    case 0: return std::string(256 + r.below(300), 'x');
    case 1: {
      std::string s;
      const unsigned n = r.below(12);
      for (unsigned i = 0; i < n; ++i) s += static_cast<char>(' ' + r.below(95));
      return s;
    }
    default: return std::string(pick(r, pools::strings));
  }
}

template <class R>
mcbus::match_rule random_rule(R& r) {
  using namespace mcbus;
  match_rule rule;
  auto maybe = [&](unsigned pct) { return r.below(100) < pct; };
  if (maybe(60)) (void)rule.set_type(r.below(5) ? message_type::signal : static_cast<message_type>(1 + r.below(4)));
  if (maybe(50)) (void)rule.set_interface(pick(r, pools::interfaces));
  if (maybe(45)) (void)rule.set_member(pick(r, pools::members));
  if (maybe(30)) {
    if (maybe(50)) {
      (void)rule.set_path(pick(r, pools::paths));
    } else {
      (void)rule.set_path_namespace(pick(r, pools::paths));
    }
  }
  if (maybe(30)) (void)rule.set_sender(pick(r, pools::senders));
  if (maybe(12)) (void)rule.set_destination(pick(r, pools::dests));
  if (maybe(15)) (void)rule.set_eavesdrop(true);
  const unsigned nargs = maybe(50) ? r.below(4) : 0;
  for (unsigned i = 0; i < nargs; ++i) {
    const unsigned index = r.below(100) < 85 ? r.below(4) : r.below(10);
    switch (r.below(4)) {
      case 0: (void)rule.add_arg(index, match_arg_kind::path, random_string(r)); break;
      case 1:
        if (index == 0) {
          (void)rule.add_arg(0, match_arg_kind::arg0namespace, pick(r, pools::namespaces));
          break;
        }
        [[fallthrough]];
      default: (void)rule.add_arg(index, random_string(r)); break;
    }
  }
  return rule;
}

// Appends one random argument; `simple` keeps to types the BPF walk can step over.
template <class R>
void random_arg(R& r, mcbus::message& m, bool simple) {
  using namespace mcbus;
  const unsigned kinds = simple ? 13 : 18;
  switch (r.below(kinds)) {
    case 0:
    case 1:
    case 2: m.append(random_string(r)); break;
    case 3: m.append(object_path_view::from(pick(r, pools::object_paths)).value()); break;
    case 4: m.append(std::uint8_t(r.below(256))); break;
    case 5: m.append(r.below(2) == 1); break;
    case 6: m.append(std::int16_t(r.below(1000))); break;
    case 7: m.append(std::uint32_t(r.below(100000))); break;
    case 8: m.append(std::uint64_t(r.below(100000)) << 20); break;
    case 9: m.append(double(r.below(1000)) / 7); break;
    case 10: {
      std::vector<std::string> v(r.below(4));
      for (auto& s : v) s = random_string(r);
      m.append(v);
      break;
    }
    case 11: {
      std::vector<std::uint8_t> v(r.below(2) ? r.below(20) : 70000 + r.below(100));
      m.append(v);
      break;
    }
    case 12: {
      std::map<std::string, std::string> d;
      const unsigned n = r.below(3);
      for (unsigned i = 0; i < n; ++i) d[random_string(r)] = random_string(r);
      m.append(d);
      break;
    }
    case 13: m.append(variant(value::string(random_string(r)))); break;
    case 14: m.append(std::tuple<std::string, std::int32_t>(random_string(r), 7)); break;
    case 15: m.append(std::vector<std::vector<std::int32_t>>{{1, 2}, {3}}); break;
    case 16: {
      const value sig = value::signature("a{sv}").value();
      m.append_with("g", [&](writer& w) { sig.write(w); });
      break;
    }
    default: {
      std::map<std::string, variant> props;
      props["k"] = *variant::from(std::uint32_t{1});
      m.append(props);
      break;
    }
  }
}

struct random_message_options {
  bool simple_args = false;  // only argument types the BPF walk steps over
};

// A random message, in a random byte order, as raw bytes.
template <class R>
std::vector<std::byte> random_message(R& r, random_message_options o = {}) {
  using namespace mcbus;
  const byte_order order = r.below(2) ? byte_order::little : byte_order::big;
  const std::string path(pick(r, pools::paths));
  const std::string iface(pick(r, pools::interfaces));
  const std::string member(pick(r, pools::members));
  message m;
  switch (r.below(10)) {
    case 0: {
      message_header h;
      h.order = order;
      h.type = message_type::method_call;
      h.raw_type = 1;
      h.serial = 9;
      h.path = path;
      h.member = member;
      h.present = static_cast<std::uint16_t>((1u << 1) | (1u << 3));
      if (r.below(2)) {
        h.interface = iface;
        h.present = static_cast<std::uint16_t>(h.present | (1u << 2));
      }
      m = message::from_header(h);
      break;
    }
    case 1: {
      message_header h;
      h.order = order;
      h.raw_type = r.below(2) ? 2 : 3;
      h.type = static_cast<message_type>(h.raw_type);
      h.serial = 9;
      h.reply_serial = 3;
      h.error_name = "org.example.Error.Failed";
      h.present = static_cast<std::uint16_t>((1u << 5) | (h.raw_type == 3 ? (1u << 4) : 0u));
      m = message::from_header(h);
      break;
    }
    default:
      m = message::signal(object_path_view::from(path).value(), interface_name::from(iface).value(),
                          member_name::from(member).value(), order);
      break;
  }
  if (r.below(10) < 8) (void)m.set_sender(bus_name::from(pick(r, pools::senders)).value());
  if (r.below(10) < 3) (void)m.set_destination(bus_name::from(pick(r, pools::dests)).value());
  const unsigned nargs = r.below(7);
  for (unsigned i = 0; i < nargs; ++i) random_arg(r, m, o.simple_args || r.below(3) != 0);
  auto bytes = m.to_bytes();
  return bytes ? std::move(*bytes) : std::vector<std::byte>{};
}

// Inserts an unknown header field (code, single-character type, value) before the first field.
// Fields stay 8-aligned and the body keeps its alignment.
inline std::vector<std::byte> with_unknown_field(const std::vector<std::byte>& msg, std::uint8_t code, char type) {
  const bool little = msg[0] == std::byte{'l'};
  auto rd32 = [&](std::size_t at) {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const auto b = static_cast<std::uint32_t>(msg[at + (little ? i : 3 - i)]);
      v |= b << (8 * i);
    }
    return v;
  };
  std::vector<std::byte> field = {std::byte{code}, std::byte{1}, static_cast<std::byte>(type), std::byte{0}};
  auto put32 = [&](std::vector<std::byte>& out, std::size_t at, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out[at + (little ? i : 3 - i)] = static_cast<std::byte>((v >> (8 * i)) & 0xff);
  };
  if (type == 's') {
    field.resize(8 + 4, std::byte{0});
    put32(field, 4, 3);
    field[8] = std::byte{'a'}, field[9] = std::byte{'b'}, field[10] = std::byte{'c'};
  } else {
    field.resize(8, std::byte{0});
    put32(field, 4, 42);
  }
  const std::uint32_t fields_len = rd32(12);
  const std::size_t old_end = 16 + fields_len;
  std::vector<std::byte> out(msg.begin(), msg.begin() + 16);
  const std::size_t padded = (field.size() + 7) & ~std::size_t{7};
  field.resize(padded, std::byte{0});
  out.insert(out.end(), field.begin(), field.end());
  out.insert(out.end(), msg.begin() + 16, msg.end());
  // The old last field ends at old_end; shifting by a multiple of 8 keeps its padding valid.
  put32(out, 12, static_cast<std::uint32_t>(padded + fields_len));
  (void)old_end;
  return out;
}

}  // namespace mcbus_test
