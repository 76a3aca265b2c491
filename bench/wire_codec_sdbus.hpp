// sd-bus's side of the wire codec benchmark.
//
// sd-bus builds messages only for a bus object, and has no public call that parses a buffer (its
// parser, bus_message_from_malloc(), is internal). So:
//  - encode: sd_bus_message_new_*() on a bus that runs over one end of a socketpair (it never
//    sends), append every value, sd_bus_message_seal(). No contiguous copy is made, as in mcbus.
//  - decode: sd_bus_message_rewind() on a sealed message, then read every value. sd-bus validates
//    each value as it is read (strings, UTF-8, object paths, signatures, booleans), so this is the
//    body's validation and reading; it leaves out header parsing and the socket read, which a real
//    receive adds. It is a lower bound of sd-bus's decode cost: the ratios understate mcbus's lead.
#pragma once

#include <sys/socket.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "wire_codec_data.hpp"

namespace wire_bench::sdbus {

inline void must(int r, const char* what) {
  if (r < 0) {
    std::fprintf(stderr, "sd-bus: %s: %s\n", what, std::strerror(-r));
    std::abort();
  }
}

// A bus object that can create messages: started over a socketpair whose other end nobody reads.
inline sd_bus* bus() {
  static sd_bus* b = [] {
    sd_bus* out = nullptr;
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
    must(sd_bus_new(&out), "sd_bus_new");
    must(sd_bus_set_fd(out, sv[0], sv[0]), "sd_bus_set_fd");
    must(sd_bus_start(out), "sd_bus_start");
    return out;
  }();
  return b;
}

inline sd_bus_message* encode_props() {
  sd_bus_message* m = nullptr;
  must(sd_bus_message_new_signal(bus(), &m, props_path, props_interface, props_member), "new_signal");
  must(sd_bus_message_append_basic(m, 's', props_changed_interface), "append");
  must(sd_bus_message_open_container(m, 'a', "{sv}"), "open a");
  for (const prop& p : props()) {
    must(sd_bus_message_open_container(m, 'e', "sv"), "open e");
    must(sd_bus_message_append_basic(m, 's', p.name.data()), "append key");
    must(sd_bus_message_open_container(m, 'v', p.kind.data()), "open v");
    switch (const char t = tag_of(p.kind)) {
      case 's':
      case 'o': must(sd_bus_message_append_basic(m, t, p.s.data()), "append s/o"); break;
      case 'u':
      case 'i':
      case 'b': {
        const std::uint32_t v = static_cast<std::uint32_t>(p.n);
        must(sd_bus_message_append_basic(m, t, &v), "append u");
        break;
      }
      case 'x':
      case 't': must(sd_bus_message_append_basic(m, t, &p.n), "append t"); break;
      case 'd': must(sd_bus_message_append_basic(m, 'd', &p.d), "append d"); break;
      case 'r': {
        must(sd_bus_message_open_container(m, 'r', "uu"), "open r");
        const std::uint32_t a = static_cast<std::uint32_t>(p.n), b = static_cast<std::uint32_t>(p.n2);
        must(sd_bus_message_append_basic(m, 'u', &a), "append u");
        must(sd_bus_message_append_basic(m, 'u', &b), "append u");
        must(sd_bus_message_close_container(m), "close r");
        break;
      }
      case 'A':
        must(sd_bus_message_open_container(m, 'a', "s"), "open as");
        for (const std::string& s : p.strings) must(sd_bus_message_append_basic(m, 's', s.c_str()), "append s");
        must(sd_bus_message_close_container(m), "close as");
        break;
      case 'Y': must(sd_bus_message_append_array(m, 'y', p.bytes.data(), p.bytes.size()), "append ay"); break;
    }
    must(sd_bus_message_close_container(m), "close v");
    must(sd_bus_message_close_container(m), "close e");
  }
  must(sd_bus_message_close_container(m), "close a");
  must(sd_bus_message_open_container(m, 'a', "s"), "open as");
  must(sd_bus_message_append_basic(m, 's', props_invalidated), "append s");
  must(sd_bus_message_close_container(m), "close as");
  must(sd_bus_message_seal(m, 1, 0), "seal");
  return m;
}

inline sd_bus_message* encode_call() {
  sd_bus_message* m = nullptr;
  must(sd_bus_message_new_method_call(bus(), &m, call_destination, call_path, call_interface, call_member), "new");
  must(sd_bus_message_append_basic(m, 's', call_text), "append s");
  must(sd_bus_message_append_basic(m, 'u', &call_number), "append u");
  must(sd_bus_message_open_container(m, 'a', "s"), "open as");
  for (const std::string& s : call_strings()) must(sd_bus_message_append_basic(m, 's', s.c_str()), "append s");
  must(sd_bus_message_close_container(m), "close as");
  must(sd_bus_message_seal(m, 1, 0), "seal");
  return m;
}

inline sd_bus_message* encode_blob() {
  sd_bus_message* m = nullptr;
  must(sd_bus_message_new_signal(bus(), &m, blob_path, blob_interface, blob_member), "new_signal");
  must(sd_bus_message_append_array(m, 'y', blob().data(), blob().size()), "append ay");
  must(sd_bus_message_seal(m, 1, 0), "seal");
  return m;
}

inline void read_strings(sd_bus_message* m, checksum& c) {
  must(sd_bus_message_enter_container(m, 'a', "s"), "enter as");
  std::uint64_t n = 0;
  for (;;) {
    const char* s = nullptr;
    const int r = sd_bus_message_read_basic(m, 's', &s);
    must(r, "read s");
    if (r == 0) break;
    c.str(s, std::strlen(s));
    ++n;
  }
  must(sd_bus_message_exit_container(m), "exit as");
  c.num(n);
}

inline std::uint64_t decode_props(sd_bus_message* m) {
  checksum c;
  must(sd_bus_message_rewind(m, 1), "rewind");
  const char* s = nullptr;
  must(sd_bus_message_read_basic(m, 's', &s), "read s");
  c.str(s, std::strlen(s));
  must(sd_bus_message_enter_container(m, 'a', "{sv}"), "enter a");
  for (;;) {
    const int r = sd_bus_message_enter_container(m, 'e', "sv");
    must(r, "enter e");
    if (r == 0) break;
    const char* key = nullptr;
    must(sd_bus_message_read_basic(m, 's', &key), "read key");
    c.str(key, std::strlen(key));
    const char* contents = nullptr;
    must(sd_bus_message_peek_type(m, nullptr, &contents), "peek");
    must(sd_bus_message_enter_container(m, 'v', contents), "enter v");
    switch (const char t = tag_of(contents)) {
      case 's':
      case 'o': {
        const char* v = nullptr;
        must(sd_bus_message_read_basic(m, t, &v), "read s/o");
        c.str(v, std::strlen(v));
        break;
      }
      case 'u':
      case 'b': {
        std::uint32_t v = 0;
        must(sd_bus_message_read_basic(m, t, &v), "read u");
        c.num(v);
        break;
      }
      case 'i': {
        std::int32_t v = 0;
        must(sd_bus_message_read_basic(m, 'i', &v), "read i");
        c.num(static_cast<std::uint64_t>(static_cast<std::int64_t>(v)));
        break;
      }
      case 'x':
      case 't': {
        std::uint64_t v = 0;
        must(sd_bus_message_read_basic(m, t, &v), "read t");
        c.num(v);
        break;
      }
      case 'd': {
        double v = 0;
        must(sd_bus_message_read_basic(m, 'd', &v), "read d");
        c.num(static_cast<std::uint64_t>(v * 1000));
        break;
      }
      case 'r': {
        std::uint32_t a = 0, b = 0;
        must(sd_bus_message_enter_container(m, 'r', "uu"), "enter r");
        must(sd_bus_message_read_basic(m, 'u', &a), "read u");
        must(sd_bus_message_read_basic(m, 'u', &b), "read u");
        must(sd_bus_message_exit_container(m), "exit r");
        c.num(a);
        c.num(b);
        break;
      }
      case 'A': read_strings(m, c); break;
      case 'Y': {
        const void* p = nullptr;
        std::size_t n = 0;
        must(sd_bus_message_read_array(m, 'y', &p, &n), "read ay");
        c.bytes(static_cast<const std::uint8_t*>(p), n);
        break;
      }
    }
    must(sd_bus_message_exit_container(m), "exit v");
    must(sd_bus_message_exit_container(m), "exit e");
  }
  must(sd_bus_message_exit_container(m), "exit a");
  read_strings(m, c);
  return c.h;
}

inline std::uint64_t decode_call(sd_bus_message* m) {
  checksum c;
  must(sd_bus_message_rewind(m, 1), "rewind");
  const char* s = nullptr;
  std::uint32_t u = 0;
  must(sd_bus_message_read_basic(m, 's', &s), "read s");
  must(sd_bus_message_read_basic(m, 'u', &u), "read u");
  c.str(s, std::strlen(s));
  c.num(u);
  read_strings(m, c);
  return c.h;
}

inline std::uint64_t decode_blob(sd_bus_message* m) {
  checksum c;
  must(sd_bus_message_rewind(m, 1), "rewind");
  const void* p = nullptr;
  std::size_t n = 0;
  must(sd_bus_message_read_array(m, 'y', &p, &n), "read ay");
  c.bytes(static_cast<const std::uint8_t*>(p), n);
  return c.h;
}

}  // namespace wire_bench::sdbus
