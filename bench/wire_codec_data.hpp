// The three messages of the wire codec benchmark, as plain data that each codec (mcbus, sd-bus,
// libdbus) turns into the same D-Bus message, and the checksum each decoder computes over every
// value it reads. Equal checksums prove that the three decoders read the same content.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace wire_bench {

// (a) PropertiesChanged with an a{sv} of 20 mixed entries, as NetworkManager sends them.
inline constexpr const char* props_path = "/org/freedesktop/NetworkManager/Devices/3";
inline constexpr const char* props_interface = "org.freedesktop.DBus.Properties";
inline constexpr const char* props_member = "PropertiesChanged";
inline constexpr const char* props_changed_interface = "org.freedesktop.NetworkManager.Device";
inline constexpr const char* props_invalidated = "Ip6Config";

// One a{sv} entry. kind is the variant's signature; only the matching member is used. The strings
// are literals, so .data() is NUL-terminated for the C libraries.
struct prop {
  std::string_view name;
  std::string_view kind;
  std::string_view s = {};  // s, o
  std::uint64_t n = 0;      // b, u, i, x, t; (uu) uses n and n2
  std::uint64_t n2 = 0;
  double d = 0;
  std::vector<std::string> strings = {};  // as
  std::vector<std::uint8_t> bytes = {};   // ay
};

inline const std::vector<prop>& props() {
  static const std::vector<prop> p = {
      {"Udi", "s", "/sys/devices/pci0000:00/0000:00:1f.6/net/enp0s31f6"},
      {"Interface", "s", "enp0s31f6"},
      {"Driver", "s", "e1000e"},
      {"DriverVersion", "s", "6.1.0-13-amd64"},
      {"HwAddress", "s", "8C:16:45:AA:BB:CC"},
      {"Mtu", "u", {}, 1500},
      {"State", "u", {}, 100},
      {"DeviceType", "u", {}, 1},
      {"Ip4Address", "u", {}, 0x0100a8c0},
      {"Metric", "i", {}, static_cast<std::uint32_t>(-1)},
      {"Managed", "b", {}, 1},
      {"Autoconnect", "b", {}, 1},
      {"Real", "b", {}, 0},
      {"Speed", "x", {}, 1000000000},
      {"RxBytes", "t", {}, 123456789012345ULL},
      {"Load", "d", {}, 0, 0, 0.75},
      {"ActiveConnection", "o", "/org/freedesktop/NetworkManager/ActiveConnection/12"},
      {"StateReason", "(uu)", {}, 100, 0},
      {"Capabilities", "as", {}, 0, 0, 0, {"carrier-detect", "sriov", "is-software"}},
      {"PermHwAddress", "ay", {}, 0, 0, 0, {}, {0x8c, 0x16, 0x45, 0xaa, 0xbb, 0xcc}},
  };
  return p;
}

// One character for each variant type of the table, so that every codec dispatches with a switch
// (string comparisons would add the same harness cost to all three): the code of a basic type,
// 'r' for (uu), 'A' for as, 'Y' for ay.
inline char tag_of(std::string_view kind) {
  if (kind.size() == 1) return kind[0];
  if (kind[0] == '(') return 'r';
  return kind[1] == 's' ? 'A' : 'Y';
}

// (b) A method call with (s, u, as) holding 100 strings.
inline constexpr const char* call_destination = "org.example.Service";
inline constexpr const char* call_path = "/org/example/Object";
inline constexpr const char* call_interface = "org.example.Interface";
inline constexpr const char* call_member = "SetItems";
inline constexpr const char* call_text = "hello, world";
inline constexpr std::uint32_t call_number = 42;

inline const std::vector<std::string>& call_strings() {
  static const std::vector<std::string> s = [] {
    std::vector<std::string> out;
    for (int i = 0; i < 100; ++i) {
      char buf[48];
      std::snprintf(buf, sizeof buf, "item-%03d-with-some-ordinary-text", i);
      out.emplace_back(buf);
    }
    return out;
  }();
  return s;
}

// (c) A signal with a 64 KiB ay.
inline constexpr const char* blob_path = "/org/example/Blob";
inline constexpr const char* blob_interface = "org.example.Blob";
inline constexpr const char* blob_member = "Data";
inline constexpr std::size_t blob_size = 64 * 1024;

inline const std::vector<std::uint8_t>& blob() {
  static const std::vector<std::uint8_t> b = [] {
    std::vector<std::uint8_t> out(blob_size);
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::uint8_t>(i * 131 + 7);
    return out;
  }();
  return b;
}

// Every decoder feeds every value it reads into this, in message order; an array's element count
// comes after its elements.
struct checksum {
  std::uint64_t h = 1469598103934665603ULL;
  void num(std::uint64_t v) { h = (h ^ v) * 1099511628211ULL; }
  // Length and both ends: enough to show that the decoder located the string, without hashing
  // every character (which would add the same cost to every codec).
  void str(const char* s, std::size_t n) {
    num(n);
    if (n) num(static_cast<unsigned char>(s[0]) * 256u + static_cast<unsigned char>(s[n - 1]));
  }
  void str(std::string_view s) { str(s.data(), s.size()); }
  void bytes(const std::uint8_t* p, std::size_t n) {
    num(n);
    if (n) num(p[0] * 256u + p[n - 1]);
  }
};

// What a decoder must compute for each message; the three decoders are checked against these
// before anything is timed.
inline std::uint64_t expected_props() {
  checksum c;
  c.str(props_changed_interface);
  for (const prop& p : props()) {
    c.str(p.name);
    switch (tag_of(p.kind)) {
      case 's':
      case 'o': c.str(p.s); break;
      case 'd': c.num(static_cast<std::uint64_t>(p.d * 1000)); break;
      case 'r':
        c.num(p.n);
        c.num(p.n2);
        break;
      case 'A':
        for (const std::string& s : p.strings) c.str(s);
        c.num(p.strings.size());
        break;
      case 'Y': c.bytes(p.bytes.data(), p.bytes.size()); break;
      case 'i': c.num(static_cast<std::uint64_t>(static_cast<std::int64_t>(static_cast<std::int32_t>(p.n)))); break;
      default: c.num(p.n);
    }
  }
  c.str(props_invalidated);
  c.num(1);
  return c.h;
}

inline std::uint64_t expected_call() {
  checksum c;
  c.str(call_text);
  c.num(call_number);
  for (const std::string& s : call_strings()) c.str(s);
  c.num(call_strings().size());
  return c.h;
}

inline std::uint64_t expected_blob() {
  checksum c;
  c.bytes(blob().data(), blob().size());
  return c.h;
}

}  // namespace wire_bench
