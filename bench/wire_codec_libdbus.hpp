// libdbus's side of the wire codec benchmark.
//  - encode: dbus_message_new_*(), append every value through a DBusMessageIter, then
//    dbus_message_marshal(), which gives the message as one malloc'd buffer (libdbus has no other
//    public way to seal a message without a connection).
//  - decode: dbus_message_demarshal() (which validates the whole message) and read every value
//    through a DBusMessageIter.
#pragma once

#include <dbus/dbus.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "wire_codec_data.hpp"

namespace wire_bench::libdbus {

inline void must(dbus_bool_t ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "libdbus: %s failed\n", what);
    std::abort();
  }
}

// A marshalled message; frees the buffer libdbus allocated.
struct blob_bytes {
  char* data = nullptr;
  int size = 0;
  blob_bytes() = default;
  blob_bytes(const blob_bytes&) = delete;
  blob_bytes& operator=(const blob_bytes&) = delete;
  blob_bytes(blob_bytes&& o) noexcept : data(o.data), size(o.size) { o.data = nullptr; }
  ~blob_bytes() { dbus_free(data); }
};

inline blob_bytes marshal(DBusMessage* m) {
  dbus_message_set_serial(m, 1);
  blob_bytes b;
  must(dbus_message_marshal(m, &b.data, &b.size), "dbus_message_marshal");
  dbus_message_unref(m);
  return b;
}

inline blob_bytes encode_props() {
  DBusMessage* m = dbus_message_new_signal(props_path, props_interface, props_member);
  must(m != nullptr, "new_signal");
  DBusMessageIter it, arr, entry, var, inner;
  dbus_message_iter_init_append(m, &it);
  must(dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &props_changed_interface), "append s");
  must(dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &arr), "open a");
  for (const prop& p : props()) {
    must(dbus_message_iter_open_container(&arr, DBUS_TYPE_DICT_ENTRY, nullptr, &entry), "open e");
    const char* name = p.name.data();
    must(dbus_message_iter_append_basic(&entry, DBUS_TYPE_STRING, &name), "append key");
    must(dbus_message_iter_open_container(&entry, DBUS_TYPE_VARIANT, p.kind.data(), &var), "open v");
    switch (const char t = tag_of(p.kind)) {
      case 's':
      case 'o': {
        const char* v = p.s.data();
        must(dbus_message_iter_append_basic(&var, t, &v), "append s/o");
        break;
      }
      case 'u':
      case 'i':
      case 'b': {
        const dbus_uint32_t v = static_cast<dbus_uint32_t>(p.n);
        must(dbus_message_iter_append_basic(&var, t, &v), "append u");
        break;
      }
      case 'x':
      case 't': {
        const dbus_uint64_t v = p.n;
        must(dbus_message_iter_append_basic(&var, t, &v), "append t");
        break;
      }
      case 'd': must(dbus_message_iter_append_basic(&var, DBUS_TYPE_DOUBLE, &p.d), "append d"); break;
      case 'r': {
        must(dbus_message_iter_open_container(&var, DBUS_TYPE_STRUCT, nullptr, &inner), "open r");
        const dbus_uint32_t a = static_cast<dbus_uint32_t>(p.n), b = static_cast<dbus_uint32_t>(p.n2);
        must(dbus_message_iter_append_basic(&inner, DBUS_TYPE_UINT32, &a), "append u");
        must(dbus_message_iter_append_basic(&inner, DBUS_TYPE_UINT32, &b), "append u");
        must(dbus_message_iter_close_container(&var, &inner), "close r");
        break;
      }
      case 'A':
        must(dbus_message_iter_open_container(&var, DBUS_TYPE_ARRAY, "s", &inner), "open as");
        for (const std::string& s : p.strings) {
          const char* c = s.c_str();
          must(dbus_message_iter_append_basic(&inner, DBUS_TYPE_STRING, &c), "append s");
        }
        must(dbus_message_iter_close_container(&var, &inner), "close as");
        break;
      case 'Y': {
        must(dbus_message_iter_open_container(&var, DBUS_TYPE_ARRAY, "y", &inner), "open ay");
        const unsigned char* data = p.bytes.data();
        must(dbus_message_iter_append_fixed_array(&inner, DBUS_TYPE_BYTE, &data, static_cast<int>(p.bytes.size())),
             "append ay");
        must(dbus_message_iter_close_container(&var, &inner), "close ay");
        break;
      }
    }
    must(dbus_message_iter_close_container(&entry, &var), "close v");
    must(dbus_message_iter_close_container(&arr, &entry), "close e");
  }
  must(dbus_message_iter_close_container(&it, &arr), "close a");
  must(dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "s", &arr), "open as");
  must(dbus_message_iter_append_basic(&arr, DBUS_TYPE_STRING, &props_invalidated), "append s");
  must(dbus_message_iter_close_container(&it, &arr), "close as");
  return marshal(m);
}

inline blob_bytes encode_call() {
  DBusMessage* m = dbus_message_new_method_call(call_destination, call_path, call_interface, call_member);
  must(m != nullptr, "new_method_call");
  DBusMessageIter it, arr;
  dbus_message_iter_init_append(m, &it);
  must(dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &call_text), "append s");
  must(dbus_message_iter_append_basic(&it, DBUS_TYPE_UINT32, &call_number), "append u");
  must(dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "s", &arr), "open as");
  for (const std::string& s : call_strings()) {
    const char* c = s.c_str();
    must(dbus_message_iter_append_basic(&arr, DBUS_TYPE_STRING, &c), "append s");
  }
  must(dbus_message_iter_close_container(&it, &arr), "close as");
  return marshal(m);
}

inline blob_bytes encode_blob() {
  DBusMessage* m = dbus_message_new_signal(blob_path, blob_interface, blob_member);
  must(m != nullptr, "new_signal");
  DBusMessageIter it, arr;
  dbus_message_iter_init_append(m, &it);
  must(dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "y", &arr), "open ay");
  const unsigned char* data = blob().data();
  must(dbus_message_iter_append_fixed_array(&arr, DBUS_TYPE_BYTE, &data, static_cast<int>(blob().size())), "append ay");
  must(dbus_message_iter_close_container(&it, &arr), "close ay");
  return marshal(m);
}

inline DBusMessage* demarshal(const char* data, int size) {
  DBusError err;
  dbus_error_init(&err);
  DBusMessage* m = dbus_message_demarshal(data, size, &err);
  if (!m) {
    std::fprintf(stderr, "libdbus: demarshal: %s\n", err.message);
    std::abort();
  }
  return m;
}

inline const char* get_string(DBusMessageIter* it) {
  const char* s = nullptr;
  dbus_message_iter_get_basic(it, &s);
  return s;
}

inline void read_strings(DBusMessageIter* it, checksum& c) {
  DBusMessageIter arr;
  dbus_message_iter_recurse(it, &arr);
  std::uint64_t n = 0;
  while (dbus_message_iter_get_arg_type(&arr) == DBUS_TYPE_STRING) {
    const char* s = get_string(&arr);
    c.str(s, std::strlen(s));
    ++n;
    dbus_message_iter_next(&arr);
  }
  c.num(n);
}

inline void read_variant(DBusMessageIter* var, checksum& c) {
  switch (dbus_message_iter_get_arg_type(var)) {
    case DBUS_TYPE_STRING:
    case DBUS_TYPE_OBJECT_PATH: {
      const char* s = get_string(var);
      c.str(s, std::strlen(s));
      break;
    }
    case DBUS_TYPE_UINT32:
    case DBUS_TYPE_BOOLEAN: {
      dbus_uint32_t v = 0;
      dbus_message_iter_get_basic(var, &v);
      c.num(v);
      break;
    }
    case DBUS_TYPE_INT32: {
      dbus_int32_t v = 0;
      dbus_message_iter_get_basic(var, &v);
      c.num(static_cast<std::uint64_t>(static_cast<std::int64_t>(v)));
      break;
    }
    case DBUS_TYPE_INT64:
    case DBUS_TYPE_UINT64: {
      dbus_uint64_t v = 0;
      dbus_message_iter_get_basic(var, &v);
      c.num(v);
      break;
    }
    case DBUS_TYPE_DOUBLE: {
      double v = 0;
      dbus_message_iter_get_basic(var, &v);
      c.num(static_cast<std::uint64_t>(v * 1000));
      break;
    }
    case DBUS_TYPE_STRUCT: {
      DBusMessageIter st;
      dbus_message_iter_recurse(var, &st);
      dbus_uint32_t a = 0, b = 0;
      dbus_message_iter_get_basic(&st, &a);
      dbus_message_iter_next(&st);
      dbus_message_iter_get_basic(&st, &b);
      c.num(a);
      c.num(b);
      break;
    }
    case DBUS_TYPE_ARRAY:
      if (dbus_message_iter_get_element_type(var) == DBUS_TYPE_BYTE) {
        DBusMessageIter arr;
        dbus_message_iter_recurse(var, &arr);
        const unsigned char* p = nullptr;
        int n = 0;
        dbus_message_iter_get_fixed_array(&arr, &p, &n);
        c.bytes(p, static_cast<std::size_t>(n));
      } else {
        read_strings(var, c);
      }
      break;
    default: std::abort();
  }
}

inline std::uint64_t decode_props(const blob_bytes& b) {
  DBusMessage* m = demarshal(b.data, b.size);
  checksum c;
  DBusMessageIter it, arr, entry, var;
  must(dbus_message_iter_init(m, &it), "iter_init");
  const char* s = get_string(&it);
  c.str(s, std::strlen(s));
  dbus_message_iter_next(&it);
  dbus_message_iter_recurse(&it, &arr);
  while (dbus_message_iter_get_arg_type(&arr) == DBUS_TYPE_DICT_ENTRY) {
    dbus_message_iter_recurse(&arr, &entry);
    const char* key = get_string(&entry);
    c.str(key, std::strlen(key));
    dbus_message_iter_next(&entry);
    dbus_message_iter_recurse(&entry, &var);
    read_variant(&var, c);
    dbus_message_iter_next(&arr);
  }
  dbus_message_iter_next(&it);
  read_strings(&it, c);
  dbus_message_unref(m);
  return c.h;
}

inline std::uint64_t decode_call(const blob_bytes& b) {
  DBusMessage* m = demarshal(b.data, b.size);
  checksum c;
  DBusMessageIter it;
  must(dbus_message_iter_init(m, &it), "iter_init");
  const char* s = get_string(&it);
  c.str(s, std::strlen(s));
  dbus_message_iter_next(&it);
  dbus_uint32_t u = 0;
  dbus_message_iter_get_basic(&it, &u);
  c.num(u);
  dbus_message_iter_next(&it);
  read_strings(&it, c);
  dbus_message_unref(m);
  return c.h;
}

inline std::uint64_t decode_blob(const blob_bytes& b) {
  DBusMessage* m = demarshal(b.data, b.size);
  checksum c;
  DBusMessageIter it, arr;
  must(dbus_message_iter_init(m, &it), "iter_init");
  dbus_message_iter_recurse(&it, &arr);
  const unsigned char* p = nullptr;
  int n = 0;
  dbus_message_iter_get_fixed_array(&arr, &p, &n);
  c.bytes(p, static_cast<std::size_t>(n));
  dbus_message_unref(m);
  return c.h;
}

}  // namespace wire_bench::libdbus
