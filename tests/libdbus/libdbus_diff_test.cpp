// Differential test against libdbus, on every run:
//  - 10,000 random messages built and marshalled by libdbus parse in mcbus to the same header and
//    values;
//  - 10,000 random messages built by mcbus, each in both byte orders, are accepted by
//    dbus_message_demarshal with the same header and values;
//  - corrupted copies of such messages get the same verdict from both, except for the deliberate
//    differences listed in `classify` below, each of which is checked rather than assumed;
//  - every conformance message gets the same verdict from both.
// The seed is printed; MCBUS_TEST_SEED replays a run.
#include <mcbus/wire/message.hpp>
#include <mcbus/wire/value.hpp>

#include <gtest/gtest.h>

#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "libdbus_bridge.hpp"
#include "test_support.hpp"
#include "wire_test_util.hpp"

using namespace mcbus;
using libdbus_bridge::message_ptr;
using wire_test::bytes;
using wire_test::rng;

namespace {

constexpr int messages_each_way = 10000;

// Header content for one random message; the strings live here, message_header views them.
struct random_header {
  std::uint8_t type = 1;
  std::uint8_t flags = 0;
  std::uint32_t serial = 1;
  std::uint32_t reply_serial = 0;
  std::string path, interface, member, error_name, destination, sender;
  std::string signature;
  std::vector<value> body;
};

std::string random_dotted(rng& r, bool unique) {
  static const char* const elements[] = {"org", "freedesktop", "Example", "a_b", "x1", "Foo_Bar9", "_"};
  std::string s = unique ? ":" : "";
  const std::size_t n = r.range(2, 4);
  for (std::size_t i = 0; i < n; ++i) {
    if (i) s += '.';
    s += unique ? std::to_string(r.range(0, 999)) : elements[r.range(0, std::size(elements) - 1)];
  }
  return s;
}

random_header make_random(rng& r) {
  random_header h;
  h.type = static_cast<std::uint8_t>(r.range(1, 4));
  h.flags = static_cast<std::uint8_t>(r.range(0, 7));
  h.serial = static_cast<std::uint32_t>(r.range(1, 0xffffffffu));
  const bool call_like = h.type == 1 || h.type == 4;
  if (call_like || r.chance(10)) h.path = wire_test::random_path(r);
  if (h.type == 4 || (call_like && r.chance(70)) || r.chance(5)) h.interface = random_dotted(r, false);
  if (call_like || r.chance(5)) h.member = r.chance(50) ? "Get" : "Member_" + std::to_string(r.range(0, 99));
  if (h.type == 3 || r.chance(5)) h.error_name = random_dotted(r, false) + ".Error";
  if (h.type == 2 || h.type == 3 || r.chance(10)) h.reply_serial = static_cast<std::uint32_t>(r.range(1, 0xffffffffu));
  if (r.chance(60)) h.destination = random_dotted(r, r.chance(50));
  if (r.chance(60)) h.sender = random_dotted(r, true);
  wire_test::type_limits lim;
  lim.allow_fd = false;  // demarshal has no fds to go with them; see classify()
  lim.max_depth = static_cast<unsigned>(r.range(1, r.chance(5) ? 20 : 5));
  const std::size_t n = r.range(0, 4);
  for (std::size_t i = 0; i < n; ++i) {
    const std::string t = wire_test::random_type(r, lim);
    if (h.signature.size() + t.size() > max_signature_length) break;
    h.signature += t;
  }
  h.body = wire_test::random_values(r, h.signature, lim);
  return h;
}

message_header view_of(const random_header& h, byte_order order) {
  message_header m;
  m.order = order;
  m.raw_type = h.type;
  m.type = static_cast<message_type>(h.type);
  m.flags = h.flags;
  m.serial = h.serial;
  m.reply_serial = h.reply_serial;
  auto set = [&](header_field f, std::string_view* field, const std::string& s) {
    if (s.empty()) return;
    *field = s;
    m.present = static_cast<std::uint16_t>(m.present | (1u << static_cast<unsigned>(f)));
  };
  set(header_field::path, &m.path, h.path);
  set(header_field::interface, &m.interface, h.interface);
  set(header_field::member, &m.member, h.member);
  set(header_field::error_name, &m.error_name, h.error_name);
  set(header_field::destination, &m.destination, h.destination);
  set(header_field::sender, &m.sender, h.sender);
  if (h.reply_serial) m.present = static_cast<std::uint16_t>(m.present | (1u << 5));
  return m;
}

result<std::vector<std::byte>> build_mcbus(const random_header& h, byte_order order) {
  message m = message::from_header(view_of(h, order));
  m.append_with(h.signature, [&](writer& w) {
    for (const auto& v : h.body) v.write(w);
  });
  return m.to_bytes();
}

message_ptr build_libdbus(const random_header& h) {
  message_ptr m(dbus_message_new(h.type));
  if (!m) return m;
  bool ok = true;
  if (!h.path.empty()) ok = ok && dbus_message_set_path(m.get(), h.path.c_str());
  if (!h.interface.empty()) ok = ok && dbus_message_set_interface(m.get(), h.interface.c_str());
  if (!h.member.empty()) ok = ok && dbus_message_set_member(m.get(), h.member.c_str());
  if (!h.error_name.empty()) ok = ok && dbus_message_set_error_name(m.get(), h.error_name.c_str());
  if (!h.destination.empty()) ok = ok && dbus_message_set_destination(m.get(), h.destination.c_str());
  if (!h.sender.empty()) ok = ok && dbus_message_set_sender(m.get(), h.sender.c_str());
  if (h.reply_serial) ok = ok && dbus_message_set_reply_serial(m.get(), h.reply_serial);
  dbus_message_set_no_reply(m.get(), (h.flags & 1) != 0);
  dbus_message_set_auto_start(m.get(), (h.flags & 2) == 0);
  dbus_message_set_allow_interactive_authorization(m.get(), (h.flags & 4) != 0);
  dbus_message_set_serial(m.get(), h.serial);
  DBusMessageIter it;
  dbus_message_iter_init_append(m.get(), &it);
  for (const auto& v : h.body) ok = ok && libdbus_bridge::append(&it, v);
  EXPECT_TRUE(ok);
  return m;
}

std::string str_or_empty(const char* s) { return s ? s : ""; }

// libdbus's view of a message equals the random header and body.
void expect_libdbus_sees(DBusMessage* m, const random_header& h) {
  EXPECT_EQ(dbus_message_get_type(m), h.type);
  EXPECT_EQ(dbus_message_get_serial(m), h.serial);
  EXPECT_EQ(dbus_message_get_reply_serial(m), h.reply_serial);
  EXPECT_EQ(str_or_empty(dbus_message_get_path(m)), h.path);
  EXPECT_EQ(str_or_empty(dbus_message_get_interface(m)), h.interface);
  EXPECT_EQ(str_or_empty(dbus_message_get_member(m)), h.member);
  EXPECT_EQ(str_or_empty(dbus_message_get_error_name(m)), h.error_name);
  EXPECT_EQ(str_or_empty(dbus_message_get_destination(m)), h.destination);
  EXPECT_EQ(str_or_empty(dbus_message_get_sender(m)), h.sender);
  EXPECT_EQ(str_or_empty(dbus_message_get_signature(m)), h.signature);
  EXPECT_EQ(dbus_message_get_no_reply(m) != 0, (h.flags & 1) != 0);
  EXPECT_EQ(dbus_message_get_auto_start(m) != 0, (h.flags & 2) == 0);
  EXPECT_EQ(dbus_message_get_allow_interactive_authorization(m) != 0, (h.flags & 4) != 0);
  EXPECT_EQ(libdbus_bridge::read_body(m), h.body);
}

// mcbus's view of a message equals the random header and body.
void expect_mcbus_sees(const message_view& v, const random_header& h) {
  EXPECT_EQ(v.header().raw_type, h.type);
  EXPECT_EQ(v.flags(), h.flags);
  EXPECT_EQ(v.serial(), h.serial);
  EXPECT_EQ(v.reply_serial(), h.reply_serial);
  EXPECT_EQ(v.header().path, h.path);
  EXPECT_EQ(v.header().interface, h.interface);
  EXPECT_EQ(v.header().member, h.member);
  EXPECT_EQ(v.header().error_name, h.error_name);
  EXPECT_EQ(v.header().destination, h.destination);
  EXPECT_EQ(v.header().sender, h.sender);
  EXPECT_EQ(v.header().signature, h.signature);
  reader body = v.body();
  EXPECT_EQ(value::read_all(body, h.signature), h.body);
  EXPECT_FALSE(body.err());
}

TEST(LibdbusDiff, LibdbusMessagesParseInMcbus) {
  rng r(wire_test::test_seed());
  for (int i = 0; i < messages_each_way; ++i) {
    SCOPED_TRACE("message " + std::to_string(i));
    const random_header h = make_random(r);
    message_ptr m = build_libdbus(h);
    ASSERT_TRUE(m);
    char* data = nullptr;
    int len = 0;
    ASSERT_TRUE(dbus_message_marshal(m.get(), &data, &len));
    const bytes b(reinterpret_cast<const std::byte*>(data), reinterpret_cast<const std::byte*>(data) + len);
    dbus_free(data);
    auto v = message_view::parse(b);
    ASSERT_TRUE(v) << v.error().message() << "\n" << mcbus_test::to_hex(b);
    EXPECT_EQ(v->order(), native_byte_order);  // libdbus marshals in the CPU's order
    expect_mcbus_sees(*v, h);
    if (HasFailure()) break;
  }
}

TEST(LibdbusDiff, McbusMessagesDemarshalInLibdbusBothOrders) {
  rng r(wire_test::test_seed() ^ 0x5bd1e995u);
  int demarshalled[2] = {0, 0};
  for (int i = 0; i < messages_each_way; ++i) {
    SCOPED_TRACE("message " + std::to_string(i));
    const random_header h = make_random(r);
    for (byte_order order : {byte_order::little, byte_order::big}) {
      auto b = build_mcbus(h, order);
      ASSERT_TRUE(b) << b.error().message();
      auto v = libdbus_bridge::demarshal(*b);
      ASSERT_TRUE(v.accepted) << v.reason << "\n" << mcbus_test::to_hex(*b);
      expect_libdbus_sees(v.message.get(), h);
      ++demarshalled[order == byte_order::big];
      // Reading swapped the message to the CPU's order inside libdbus; marshalled again, it still
      // parses in mcbus to the same content.
      char* data = nullptr;
      int len = 0;
      ASSERT_TRUE(dbus_message_marshal(v.message.get(), &data, &len));
      const bytes again(reinterpret_cast<const std::byte*>(data), reinterpret_cast<const std::byte*>(data) + len);
      dbus_free(data);
      auto back = message_view::parse(again);
      ASSERT_TRUE(back) << back.error().message() << "\n" << mcbus_test::to_hex(again);
      expect_mcbus_sees(*back, h);
    }
    if (HasFailure()) break;
  }
  std::cout << "[ libdbus  ] demarshalled " << demarshalled[0] << " little-endian and " << demarshalled[1]
            << " big-endian mcbus messages" << std::endl;
  EXPECT_GE(demarshalled[0], messages_each_way);
  EXPECT_GE(demarshalled[1], messages_each_way);
}

// ---- verdicts on corrupt messages -----------------------------------------------------------

// Walks the header fields with a lenient reader and calls fn(code, signature, value string) for
// each; used to explain disagreements.
template <class F>
void for_each_field(std::span<const std::byte> b, F&& fn) {
  if (b.size() < 16) return;
  const auto* p = reinterpret_cast<const unsigned char*>(b.data());
  if (p[0] != 'l' && p[0] != 'B') return;
  const auto order = static_cast<byte_order>(p[0]);
  const std::uint32_t len = detail::load<std::uint32_t>(p + 12, order != native_byte_order);
  if (len > b.size() - 16) return;
  reader r(b.subspan(16, len), order, 16, reader_options{.trusted = false, .check_fd_indexes = false});
  while (!r.at_end() && !r.err()) {
    r.open_struct();
    const std::uint8_t code = r.get_byte();
    const signature_view sig = r.open_variant();
    if (r.err()) return;
    std::string text;
    if (sig.str() == "s" || sig.str() == "o") {
      text = std::string(r.get_string());
    } else if (sig.str() == "u") {
      text = std::to_string(r.get_fixed<std::uint32_t>());
    } else {
      r.skip(sig.str());
    }
    if (r.err()) return;
    fn(code, std::string(sig.str()), text);
    r.close_variant();
    r.close_struct();
  }
}

// The deliberate differences between mcbus and libdbus. Each is recognised from the message
// itself and from both verdicts, never from the verdicts alone; anything else is a bug in one of
// the two.
std::string classify(std::span<const std::byte> b, const result<message_view>& mc, const libdbus_bridge::verdict& lib) {
  if (!mc && lib.accepted) {
    // 1. Bus names: the specification wants at least two elements after ':' (":1.5"); libdbus
    //    also accepts ":1", ":a" and ":". mcbus follows the specification.
    if (mc.error().code() == errc::bad_bus_name) {
      std::string why;
      for_each_field(b, [&](std::uint8_t code, const std::string& sig, const std::string& s) {
        if ((code == 6 || code == 7) && sig == "s" && !is_valid_bus_name(s) &&
            dbus_validate_bus_name(s.c_str(), nullptr))
          why = "spec-strict bus name";
      });
      return why;
    }
    // 2. fd indexes: an 'h' at or above UNIX_FDS. libdbus checks indexes only when an fd is taken
    //    out of the message; mcbus checks on receipt (parse_options turns it off, as shown here).
    if (mc.error().code() == errc::bad_fd_index && message_view::parse(b, {.check_fd_indexes = false})) {
      return "fd index check";
    }
    return {};
  }
  if (mc && !lib.accepted) {
    // 3. UNIX_FDS > 0: dbus_message_demarshal() has no fds to attach, so libdbus refuses any
    //    message that announces some (DBUS_INVALID_MISSING_UNIX_FDS). A stream reader with the fds
    //    would accept it, as mcbus does.
    if (mc->header().unix_fds > 0) return "fds announced but demarshal carries none";
    // 4. Header field 10: libdbus 1.14 knows it as CONTAINER_INSTANCE (an experimental field that
    //    never reached the specification) and insists on type 'o'. The specification says
    //    unknown fields are ignored, and mcbus ignores it.
    std::string why;
    for_each_field(b, [&](std::uint8_t code, const std::string& sig, const std::string&) {
      if (code == 10 && sig != "o") why = "field 10 (libdbus CONTAINER_INSTANCE)";
    });
    return why;
  }
  return {};
}

TEST(LibdbusDiff, CorruptMessagesGetTheSameVerdict) {
  rng r(wire_test::test_seed() ^ 0xc0ffeeu);
  std::map<std::string, int> deliberate;
  int agree_accept = 0, agree_reject = 0, unexplained = 0;
  constexpr int n = 10000;
  for (int i = 0; i < n && unexplained < 5; ++i) {
    const random_header h = make_random(r);
    auto built = build_mcbus(h, r.chance(50) ? byte_order::little : byte_order::big);
    ASSERT_TRUE(built);
    bytes b = std::move(*built);
    // One to three changes of one byte each, mostly in the header where the rules are densest.
    const std::size_t changes = r.range(1, 3);
    for (std::size_t k = 0; k < changes; ++k) {
      const std::size_t header_end = std::min<std::size_t>(b.size(), 16 + detail::align_up(b.size() / 3, 8));
      const std::size_t at = r.chance(70) ? r.range(0, header_end - 1) : r.range(0, b.size() - 1);
      static const unsigned char interesting[] = {0,   1,   2,   0x7f, 0x80, 0xff, 'l', 'B', 'a',  'v', 's', '(',
                                                  ')', '{', '}', 'h',  'r',  '.',  '/', ':', 0xc3, 9,   10};
      b[at] = static_cast<std::byte>(r.chance(50) ? interesting[r.range(0, std::size(interesting) - 1)]
                                                  : static_cast<unsigned char>(r.bits()));
    }
    const auto mc = message_view::parse(b);
    const auto lib = libdbus_bridge::demarshal(b);
    if (static_cast<bool>(mc) == lib.accepted) {
      ++(lib.accepted ? agree_accept : agree_reject);
      continue;
    }
    const std::string why = classify(b, mc, lib);
    if (!why.empty()) {
      ++deliberate[why];
      continue;
    }
    ++unexplained;
    ADD_FAILURE() << "verdicts differ: mcbus " << (mc ? "accepts" : "rejects: " + mc.error().message()) << "; libdbus "
                  << (lib.accepted ? "accepts" : "rejects: " + lib.reason) << "\n"
                  << mcbus_test::to_hex(b);
  }
  std::cout << "[ libdbus  ] corrupt messages: both accept " << agree_accept << ", both reject " << agree_reject;
  for (const auto& [why, count] : deliberate) std::cout << ", deliberate (" << why << ") " << count;
  std::cout << std::endl;
  EXPECT_EQ(unexplained, 0);
  EXPECT_GT(agree_accept, 100);   // the mutations must leave some messages valid...
  EXPECT_GT(agree_reject, 1000);  // ...and break most
}

TEST(LibdbusDiff, ConformanceMessagesGetTheSameVerdict) {
  namespace fs = std::filesystem;
  const fs::path root = mcbus_test::conformance_dir();
  int n = 0;
  for (const char* dir : {"dbus-1.14.10/valid-messages", "dbus-1.14.10/invalid-messages",
                          "glib-2.74.6/invalid-messages", "systemd-252.39/fuzz-bus-message"}) {
    for (const auto& e : fs::directory_iterator(root / dir)) {
      if (e.path().extension() == ".hex") continue;
      SCOPED_TRACE(e.path().filename().string());
      const bytes b = mcbus_test::read_file(e.path());
      ++n;
      // Compare on the message the fixed header frames, as a stream reader would see it; the whole
      // file is checked by the wire tests.
      std::span<const std::byte> framed = b;
      if (auto len = message_length(b); len && *len < b.size()) framed = framed.first(*len);
      const auto mc = message_view::parse(framed);
      const auto lib = libdbus_bridge::demarshal(framed);
      if (e.path().filename() == "byteswap-fd-index.message-raw") {
        // The designed-in difference (an 'h' without UNIX_FDS), tested in both modes.
        EXPECT_TRUE(lib.accepted) << lib.reason;
        ASSERT_FALSE(mc);
        EXPECT_EQ(classify(framed, mc, lib), "fd index check");
        EXPECT_TRUE(message_view::parse(framed, {.check_fd_indexes = false}));
        continue;
      }
      EXPECT_EQ(static_cast<bool>(mc), lib.accepted) << "mcbus: " << (mc ? "accepts" : mc.error().message())
                                                     << "; libdbus: " << (lib.accepted ? "accepts" : lib.reason);
    }
  }
  EXPECT_EQ(n, 2 + 6 + 7 + 20);
}

// The 64-level limit sits at the same place in both, in the body and in a header field (whose
// array, struct and variant are three levels already).
TEST(LibdbusDiff, NestingLimitsAgree) {
  for (unsigned n : {63u, 64u, 65u, 66u}) {
    SCOPED_TRACE("variants in the body: " + std::to_string(n));
    wire_test::raw_message m;
    m.type = 4;
    m.fields = [](writer& w) {
      wire_test::call_fields(w);
      wire_test::sig_field(w, "v");
    };
    m.body = [n](writer& w) {
      for (unsigned i = 1; i < n; ++i) w.put_short_string("v");
      w.put_short_string("y");
      w.put_byte(1);
    };
    const bytes b = m.build();
    const auto mc = message_view::parse(b);
    EXPECT_EQ(static_cast<bool>(mc), n <= 64);
    EXPECT_EQ(libdbus_bridge::demarshal(b).accepted, n <= 64);
  }
  for (unsigned n : {60u, 61u, 62u}) {
    SCOPED_TRACE("variants in a header field: " + std::to_string(n));
    wire_test::raw_message m;
    m.type = 4;
    m.fields = [n](writer& w) {
      wire_test::call_fields(w);
      wire_test::field(w, 100, "v", [n](writer& x) {
        for (unsigned i = 1; i < n; ++i) x.put_short_string("v");
        x.put_short_string("y");
        x.put_byte(1);
      });
    };
    const bytes b = m.build();
    EXPECT_EQ(static_cast<bool>(message_view::parse(b)), n <= 61);
    EXPECT_EQ(libdbus_bridge::demarshal(b).accepted, n <= 61);
  }
}

// libdbus refuses every path and interface that starts with the local ones; so does mcbus.
TEST(LibdbusDiff, LocalPathAndInterfacePrefixes) {
  const std::pair<std::string, std::string> cases[] = {
      {"/org/freedesktop/DBus/Local", "a.b"},   {"/org/freedesktop/DBus/LocalX", "a.b"},
      {"/org/freedesktop/DBus/Local/x", "a.b"}, {"/org/freedesktop/DBus/Loca", "a.b"},
      {"/a", "org.freedesktop.DBus.Local"},     {"/a", "org.freedesktop.DBus.LocalX"},
      {"/a", "org.freedesktop.DBus.Local.x"},   {"/a", "org.freedesktop.DBus.Loca"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.first + " " + c.second);
    wire_test::raw_message m;
    m.type = 4;
    m.fields = [&](writer& w) {
      wire_test::path_field(w, c.first);
      wire_test::string_field(w, 2, c.second);
      wire_test::string_field(w, 3, "M");
    };
    const bytes b = m.build();
    const auto mc = message_view::parse(b);
    const auto lib = libdbus_bridge::demarshal(b);
    EXPECT_EQ(static_cast<bool>(mc), lib.accepted) << (mc ? "" : mc.error().message()) << " / " << lib.reason;
  }
}

// Each deliberate difference, shown on a message built for it, so that classify() is not merely
// trusted.
TEST(LibdbusDiff, DeliberateDifferencesExist) {
  wire_test::raw_message m;
  m.type = 1;
  m.fields = [](writer& w) {
    wire_test::path_field(w, "/a");
    wire_test::string_field(w, 3, "M");
    wire_test::string_field(w, 6, ":1");
  };
  bytes b = m.build();
  auto mc = message_view::parse(b);
  auto lib = libdbus_bridge::demarshal(b);
  EXPECT_FALSE(mc);
  EXPECT_TRUE(lib.accepted) << lib.reason;
  EXPECT_EQ(classify(b, mc, lib), "spec-strict bus name");

  m.fields = [](writer& w) {
    wire_test::path_field(w, "/a");
    wire_test::string_field(w, 3, "M");
    wire_test::u32_field(w, 9, 1);
  };
  b = m.build();
  mc = message_view::parse(b);
  lib = libdbus_bridge::demarshal(b);
  EXPECT_TRUE(mc);
  EXPECT_FALSE(lib.accepted);
  EXPECT_EQ(classify(b, mc, lib), "fds announced but demarshal carries none");

  m.fields = [](writer& w) {
    wire_test::path_field(w, "/a");
    wire_test::string_field(w, 3, "M");
    wire_test::string_field(w, 10, "not a path");
  };
  b = m.build();
  mc = message_view::parse(b);
  lib = libdbus_bridge::demarshal(b);
  EXPECT_TRUE(mc);
  EXPECT_FALSE(lib.accepted);
  EXPECT_EQ(classify(b, mc, lib), "field 10 (libdbus CONTAINER_INSTANCE)");
}

}  // namespace
