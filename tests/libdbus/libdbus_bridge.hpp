// Converts between mcbus::value trees and libdbus messages, for the differential test.
#pragma once

#include <mcbus/wire/message.hpp>
#include <mcbus/wire/value.hpp>

#include <dbus/dbus.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace libdbus_bridge {

struct message_deleter {
  void operator()(DBusMessage* m) const noexcept { dbus_message_unref(m); }
};
using message_ptr = std::unique_ptr<DBusMessage, message_deleter>;

// Appends one value with libdbus's iterator API.
inline bool append(DBusMessageIter* it, const mcbus::value& v) {
  const std::uint64_t bits = v.bits();
  switch (v.code()) {
    case 'y': {
      const auto x = static_cast<unsigned char>(bits);
      return dbus_message_iter_append_basic(it, DBUS_TYPE_BYTE, &x);
    }
    case 'b': {
      const dbus_bool_t x = bits != 0;
      return dbus_message_iter_append_basic(it, DBUS_TYPE_BOOLEAN, &x);
    }
    case 'n':
    case 'q': {
      const auto x = static_cast<dbus_uint16_t>(bits);
      return dbus_message_iter_append_basic(it, v.code(), &x);
    }
    case 'i':
    case 'u': {
      const auto x = static_cast<dbus_uint32_t>(bits);
      return dbus_message_iter_append_basic(it, v.code(), &x);
    }
    case 'x':
    case 't':
    case 'd': {
      const dbus_uint64_t x = bits;  // a double travels as its bits
      return dbus_message_iter_append_basic(it, v.code(), &x);
    }
    case 's':
    case 'o':
    case 'g': {
      const char* s = v.str().c_str();
      return dbus_message_iter_append_basic(it, v.code(), &s);
    }
    case 'v': {
      DBusMessageIter sub;
      const mcbus::value& inner = v.items().at(0);
      if (!dbus_message_iter_open_container(it, DBUS_TYPE_VARIANT, inner.type().c_str(), &sub)) return false;
      const bool ok = append(&sub, inner);
      return dbus_message_iter_close_container(it, &sub) && ok;
    }
    case 'a': {
      DBusMessageIter sub;
      const std::string elem = v.type().substr(1);
      if (!dbus_message_iter_open_container(it, DBUS_TYPE_ARRAY, elem.c_str(), &sub)) return false;
      bool ok = true;
      for (const auto& e : v.items()) ok = append(&sub, e) && ok;
      return dbus_message_iter_close_container(it, &sub) && ok;
    }
    case '(':
    case '{': {
      DBusMessageIter sub;
      if (!dbus_message_iter_open_container(it, v.code() == '(' ? DBUS_TYPE_STRUCT : DBUS_TYPE_DICT_ENTRY, nullptr,
                                            &sub))
        return false;
      bool ok = true;
      for (const auto& e : v.items()) ok = append(&sub, e) && ok;
      return dbus_message_iter_close_container(it, &sub) && ok;
    }
    default: ADD_FAILURE() << "cannot append type " << v.type(); return false;
  }
}

inline std::string signature_at(DBusMessageIter* it) {
  char* s = dbus_message_iter_get_signature(it);
  std::string out = s ? s : "";
  dbus_free(s);
  return out;
}

inline mcbus::value read(DBusMessageIter* it);

// The elements of the container at the iterator.
inline std::vector<mcbus::value> read_items(DBusMessageIter* it) {
  DBusMessageIter sub;
  dbus_message_iter_recurse(it, &sub);
  std::vector<mcbus::value> items;
  while (dbus_message_iter_get_arg_type(&sub) != DBUS_TYPE_INVALID) {
    items.push_back(read(&sub));
    dbus_message_iter_next(&sub);
  }
  return items;
}

// Reads the value at the iterator with libdbus and builds the same mcbus::value.
inline mcbus::value read(DBusMessageIter* it) {
  using mcbus::value;
  const int type = dbus_message_iter_get_arg_type(it);
  DBusBasicValue b{};
  switch (type) {
    case DBUS_TYPE_BYTE: dbus_message_iter_get_basic(it, &b); return value::byte(b.byt);
    case DBUS_TYPE_BOOLEAN: dbus_message_iter_get_basic(it, &b); return value::boolean(b.bool_val != 0);
    case DBUS_TYPE_INT16: dbus_message_iter_get_basic(it, &b); return value::int16(b.i16);
    case DBUS_TYPE_UINT16: dbus_message_iter_get_basic(it, &b); return value::uint16(b.u16);
    case DBUS_TYPE_INT32: dbus_message_iter_get_basic(it, &b); return value::int32(b.i32);
    case DBUS_TYPE_UINT32: dbus_message_iter_get_basic(it, &b); return value::uint32(b.u32);
    case DBUS_TYPE_INT64: dbus_message_iter_get_basic(it, &b); return value::int64(b.i64);
    case DBUS_TYPE_UINT64: dbus_message_iter_get_basic(it, &b); return value::uint64(b.u64);
    case DBUS_TYPE_DOUBLE: dbus_message_iter_get_basic(it, &b); return value::double_(b.dbl);
    case DBUS_TYPE_STRING: dbus_message_iter_get_basic(it, &b); return value::string(b.str);
    case DBUS_TYPE_OBJECT_PATH: dbus_message_iter_get_basic(it, &b); return value::object_path(b.str).value();
    case DBUS_TYPE_SIGNATURE: dbus_message_iter_get_basic(it, &b); return value::signature(b.str).value();
    case DBUS_TYPE_VARIANT: {
      DBusMessageIter sub;
      dbus_message_iter_recurse(it, &sub);
      return value::variant(read(&sub));
    }
    case DBUS_TYPE_ARRAY: {
      return value::array(signature_at(it).substr(1), read_items(it)).value();
    }
    case DBUS_TYPE_STRUCT:
    case DBUS_TYPE_DICT_ENTRY: {
      std::vector<value> items = read_items(it);
      if (type == DBUS_TYPE_STRUCT) return value::structure(std::move(items)).value();
      if (items.size() != 2) {
        ADD_FAILURE() << "dict entry with " << items.size() << " fields";
        return {};
      }
      return value::dict_entry(std::move(items[0]), std::move(items[1])).value();
    }
    default: ADD_FAILURE() << "libdbus gave type " << type; return {};
  }
}

inline std::vector<mcbus::value> read_body(DBusMessage* m) {
  std::vector<mcbus::value> out;
  DBusMessageIter it;
  if (!dbus_message_iter_init(m, &it)) return out;
  do {
    out.push_back(read(&it));
  } while (dbus_message_iter_next(&it));
  return out;
}

// The verdict of libdbus on a buffer that should hold exactly one message: accepted or not, and
// why not. A buffer whose fixed header frames a different length is not one message to libdbus
// either (it waits for more bytes, or leaves the rest for the next message).
struct verdict {
  bool accepted = false;
  std::string reason;
  message_ptr message;
};

inline verdict demarshal(std::span<const std::byte> b) {
  verdict v;
  const auto* data = reinterpret_cast<const char*>(b.data());
  const int len = static_cast<int>(b.size());
  if (b.size() < 16) {
    v.reason = "shorter than the fixed header";
    return v;
  }
  const int needed = dbus_message_demarshal_bytes_needed(data, len);
  if (needed != len) {
    v.reason = "frames " + std::to_string(needed) + " bytes, not " + std::to_string(len);
    return v;
  }
  DBusError err;
  dbus_error_init(&err);
  DBusMessage* m = dbus_message_demarshal(data, len, &err);
  if (!m) {
    v.reason = err.message ? err.message : "rejected";
    dbus_error_free(&err);
    return v;
  }
  v.accepted = true;
  v.message.reset(m);
  return v;
}

}  // namespace libdbus_bridge
