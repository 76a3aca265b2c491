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

// One a{sv} entry. kind is the variant's signature; only the matching member is used.
struct prop {
  const char* name;
  const char* kind;
  const char* s = nullptr;  // s, o
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
      {"Mtu", "u", nullptr, 1500},
      {"State", "u", nullptr, 100},
      {"DeviceType", "u", nullptr, 1},
      {"Ip4Address", "u", nullptr, 0x0100a8c0},
      {"Metric", "i", nullptr, static_cast<std::uint32_t>(-1)},
      {"Managed", "b", nullptr, 1},
      {"Autoconnect", "b", nullptr, 1},
      {"Real", "b", nullptr, 0},
      {"Speed", "x", nullptr, 1000000000},
      {"RxBytes", "t", nullptr, 123456789012345ULL},
      {"Load", "d", nullptr, 0, 0, 0.75},
      {"ActiveConnection", "o", "/org/freedesktop/NetworkManager/ActiveConnection/12"},
      {"StateReason", "(uu)", nullptr, 100, 0},
      {"Capabilities", "as", nullptr, 0, 0, 0, {"carrier-detect", "sriov", "is-software"}},
      {"PermHwAddress", "ay", nullptr, 0, 0, 0, {}, {0x8c, 0x16, 0x45, 0xaa, 0xbb, 0xcc}},
  };
  return p;
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
    const std::string_view k = p.kind;
    if (k == "s" || k == "o") {
      c.str(p.s);
    } else if (k == "d") {
      c.num(static_cast<std::uint64_t>(p.d * 1000));
    } else if (k == "(uu)") {
      c.num(p.n);
      c.num(p.n2);
    } else if (k == "as") {
      for (const std::string& s : p.strings) c.str(s);
      c.num(p.strings.size());
    } else if (k == "ay") {
      c.bytes(p.bytes.data(), p.bytes.size());
    } else if (k == "i") {
      c.num(static_cast<std::uint64_t>(static_cast<std::int64_t>(static_cast<std::int32_t>(p.n))));
    } else {
      c.num(p.n);
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
