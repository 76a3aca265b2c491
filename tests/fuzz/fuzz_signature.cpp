// Fuzz target: signature parsing.
//
// Any input is either a valid signature or fails with an error inside the input. A valid one is
// cut into complete types by complete_type_length(), which must walk it exactly, each piece being
// one valid complete type. Where the signature is simple enough to name as a C++ type (up to two
// levels of arrays, dicts and structs), signature_of<T> of that type must give back the same text,
// and a T written by the typed writer must read back through the untyped reader with that text.
#include <mcbus/wire.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <tuple>
#include <variant>
#include <vector>

namespace {

[[noreturn]] void die(const char* what, std::string_view sig, const mcbus::error& e = {}) {
  std::fprintf(stderr, "fuzz_signature: %s for \"%.*s\"%s%s\n", what, static_cast<int>(sig.size()), sig.data(),
               e ? ": " : "", e ? e.message().c_str() : "");
  std::abort();
}

// Calls f.template operator()<K>() with the C++ type of the basic type code c, if it can be a
// std::map key (mcbus::signature has no ordering, and fds are left out: writing one dups it).
template <class F>
bool with_key(char c, F&& f) {
  switch (c) {
    case 'y': return f.template operator()<std::uint8_t>(), true;
    case 'b': return f.template operator()<bool>(), true;
    case 'n': return f.template operator()<std::int16_t>(), true;
    case 'q': return f.template operator()<std::uint16_t>(), true;
    case 'i': return f.template operator()<std::int32_t>(), true;
    case 'u': return f.template operator()<std::uint32_t>(), true;
    case 'x': return f.template operator()<std::int64_t>(), true;
    case 't': return f.template operator()<std::uint64_t>(), true;
    case 'd': return f.template operator()<double>(), true;
    case 's': return f.template operator()<std::string>(), true;
    case 'o': return f.template operator()<mcbus::object_path>(), true;
    default: return false;
  }
}

// Calls f.template operator()<T>() with the C++ type T whose signature is the complete type at
// sig[i], moves i past it, and returns whether it did; false when the type is not in the small
// family below. Depth bounds template instantiation: structs of two fields and dicts with any key
// exist only one level above the leaves.
template <int Depth, class F>
bool with_type(std::string_view sig, std::size_t& i, F&& f) {
  if (i >= sig.size()) return false;
  const char c = sig[i++];
  if (c == 'g') return f.template operator()<mcbus::signature>(), true;
  if (c == 'v') return f.template operator()<std::variant<std::uint8_t>>(), true;
  if (c != 'a' && c != '(') return with_key(c, f);
  if constexpr (Depth > 0) {
    bool done = false;
    if (c == 'a' && i < sig.size() && sig[i] == '{') {
      ++i;
      if (Depth == 1) {  // a{KV}: any key, a leaf value
        if (i >= sig.size()) return false;
        with_key(sig[i++], [&]<class K>() {
          with_type<0>(sig, i, [&]<class V>() {
            f.template operator()<std::map<K, V>>();
            done = true;
          });
        });
      } else if (i < sig.size() && sig[i++] == 's') {  // a{sV}: a deeper value
        with_type<Depth - 1>(sig, i, [&]<class V>() {
          f.template operator()<std::map<std::string, V>>();
          done = true;
        });
      }
      return done && i < sig.size() && sig[i++] == '}';
    }
    if (c == 'a') {
      return with_type<Depth - 1>(sig, i, [&]<class E>() { f.template operator()<std::vector<E>>(); });
    }
    with_type<Depth - 1>(sig, i, [&]<class A>() {
      if (i < sig.size() && sig[i] == ')') {
        f.template operator()<std::tuple<A>>();
        done = true;
      } else if constexpr (Depth == 1) {
        with_type<0>(sig, i, [&]<class B>() {
          f.template operator()<std::tuple<A, B>>();
          done = true;
        });
      }
    });
    return done && i < sig.size() && sig[i++] == ')';
  }
  return false;
}

// The typed and the untyped sides of mcbus must agree on what a type is called.
void check_typed(std::string_view type) {
  std::size_t i = 0;
  // Recorded, not compared, in the callback: the dispatch may still find that the type does not
  // close where this family of types would need it to.
  std::string_view named_as;
  const bool named = with_type<2>(type, i, [&]<class T>() { named_as = mcbus::signature_of<T>; });
  if (named && (i != type.size() || named_as != type)) die("signature_of differs", type);
}

mcbus::value must(mcbus::result<mcbus::value> v, std::string_view type) {
  if (!v) die("cannot build a value", type, v.error());
  return std::move(*v);
}

// A value tree of the given type, with one element in every array so that nothing is left out.
mcbus::value sample_value(std::string_view type) {
  using mcbus::value;
  switch (type[0]) {
    case 'y': return value::byte(7);
    case 'b': return value::boolean(true);
    case 'n': return value::int16(-2);
    case 'q': return value::uint16(3);
    case 'i': return value::int32(-4);
    case 'u': return value::uint32(5);
    case 'x': return value::int64(-6);
    case 't': return value::uint64(7);
    case 'd': return value::double_(0.5);
    case 'h': return value::fd_index(0);
    case 's': return value::string("s");
    case 'o': return must(value::object_path("/o"), type);
    case 'g': return must(value::signature("a{sv}"), type);
    case 'v': return value::variant(value::byte(1));
    case 'a': {
      const std::string_view elem = type.substr(1, mcbus::complete_type_length(type, 1));
      return must(value::array(elem, {sample_value(elem)}), type);
    }
    default: {  // ( or {
      std::vector<value> fields;
      for (std::size_t i = 1; i + 1 < type.size(); i += mcbus::complete_type_length(type, i)) {
        fields.push_back(sample_value(type.substr(i, mcbus::complete_type_length(type, i))));
      }
      if (type[0] == '{') return must(value::dict_entry(std::move(fields[0]), std::move(fields[1])), type);
      return must(value::structure(std::move(fields)), type);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view sig(reinterpret_cast<const char*>(data), size);
  const mcbus::error e = mcbus::validate_signature(sig);
  const mcbus::error single = mcbus::validate_single_type(sig);
  if (e) {
    if (e.code() != mcbus::errc::bad_signature && e.code() != mcbus::errc::signature_too_long) {
      die("unexpected error code", sig, e);
    }
    if (!e.has_offset() || e.offset() > size) die("error offset outside the input", sig, e);
    if (!single) die("a single type that is not a signature", sig);
    if (mcbus::signature::from(sig)) die("signature::from accepts what validate rejects", sig);
    mcbus::detail::byte_buffer buf;
    mcbus::writer w(buf);
    w.put_signature(sig);
    if (!w.err()) die("writer accepts an invalid signature", sig);
    return 0;
  }

  // Walk it as complete types.
  std::size_t i = 0;
  std::size_t types = 0;
  std::vector<std::string_view> types_seen;
  while (i < size) {
    const std::size_t len = mcbus::complete_type_length(sig, i);
    if (len == 0 || i + len > size) die("complete_type_length steps outside", sig);
    const std::string_view type = sig.substr(i, len);
    if (mcbus::error te = mcbus::validate_single_type(type)) die("piece is not one complete type", type, te);
    check_typed(type);
    types_seen.push_back(type);
    i += len;
    ++types;
  }
  if (i != size) die("complete_type_length overshoots", sig);
  if (static_cast<bool>(single) != (types != 1)) die("validate_single_type disagrees with the walk", sig, single);

  // As a value of type 'g', in both byte orders.
  for (const mcbus::byte_order order : {mcbus::byte_order::little, mcbus::byte_order::big}) {
    mcbus::detail::byte_buffer buf;
    mcbus::writer w(buf, order);
    w.put_signature(sig);
    if (w.err()) die("writer rejects a valid signature", sig, w.err());
    mcbus::reader r(buf.bytes(), order);
    if (r.get_signature().str() != sig || r.err() || !r.at_end()) die("signature value round trip", sig, r.err());
  }

  // A value of each type, written and read back in both byte orders at an odd start. Nesting
  // deeper than 64 containers is refused by both sides alike.
  for (const mcbus::byte_order order : {mcbus::byte_order::little, mcbus::byte_order::big}) {
    std::vector<mcbus::value> values;
    for (std::string_view type : types_seen) values.push_back(sample_value(type));
    mcbus::detail::byte_buffer buf;
    mcbus::writer w(buf, order, 1);
    for (const mcbus::value& v : values) v.write(w);
    mcbus::reader r(buf.bytes(), order, 1, mcbus::reader::options{.check_fd_indexes = false});
    const std::vector<mcbus::value> back = mcbus::value::read_all(r, sig);
    if (w.err()) {
      if (w.err().code() != mcbus::errc::nesting_too_deep) die("writer failed", sig, w.err());
      continue;
    }
    if (r.err()) die("reader rejects what the writer wrote", sig, r.err());
    if (!r.at_end() || back != values) die("values changed in the round trip", sig);
  }
  return 0;
}
