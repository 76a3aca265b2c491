// mcbus/wire: a dynamic value tree, for values whose type is known only at run time.
//
// Tools (mcbus-msg, mcbus-call), generic bridges and the variant type use it; typed code should
// prefer plain C++ types, which marshal without building a tree.
#pragma once

#include <mcbus/error.hpp>
#include <mcbus/wire/detail/buffer.hpp>
#include <mcbus/wire/reader.hpp>
#include <mcbus/wire/signature.hpp>
#include <mcbus/wire/writer.hpp>

#include <array>
#include <bit>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

MCBUS_NAMESPACE_BEGIN

namespace detail {
// Types that point into the buffer they were read from (views, spans, borrowed fds), alone or
// inside containers. value::to() reads from a buffer of its own that is gone when it returns, so it
// refuses them.
template <class T, class = void>
struct borrows : std::false_type {};
template <>
struct borrows<std::string_view> : std::true_type {};
template <>
struct borrows<const char*> : std::true_type {};
template <>
struct borrows<object_path_view> : std::true_type {};
template <>
struct borrows<signature_view> : std::true_type {};
template <>
struct borrows<borrowed_fd> : std::true_type {};
template <class T, std::size_t N>
struct borrows<std::span<T, N>> : std::true_type {};
template <class T, class A>
struct borrows<std::vector<T, A>> : borrows<T> {};
template <class T, std::size_t N>
struct borrows<std::array<T, N>> : borrows<T> {};
template <class K, class V, class C, class A>
struct borrows<std::map<K, V, C, A>> : std::disjunction<borrows<K>, borrows<V>> {};
template <class K, class V, class H, class E, class A>
struct borrows<std::unordered_map<K, V, H, E, A>> : std::disjunction<borrows<K>, borrows<V>> {};
template <class K, class V>
struct borrows<dict_entry<K, V>> : std::disjunction<borrows<K>, borrows<V>> {};
template <class... Ts>
struct borrows<std::tuple<Ts...>> : std::disjunction<borrows<Ts>...> {};
template <class A, class B>
struct borrows<std::pair<A, B>> : std::disjunction<borrows<A>, borrows<B>> {};
template <class... Ts>
struct borrows<std::variant<Ts...>> : std::disjunction<borrows<Ts>...> {};
template <class T, class... Ps>
constexpr bool members_borrow(std::tuple<Ps...>*) {
  return (borrows<typename member_type<Ps>::type>::value || ...);
}
template <class T>
struct borrows<T, std::enable_if_t<user_struct<T>>>
    : std::bool_constant<members_borrow<T>(
          static_cast<std::remove_cvref_t<decltype(dbus_struct<T>::members)>*>(nullptr))> {};
}  // namespace detail

class value {
 public:
  value() = default;

  static value byte(std::uint8_t v) { return make("y", v); }
  static value boolean(bool v) { return make("b", v ? 1 : 0); }
  static value int16(std::int16_t v) { return make("n", static_cast<std::uint16_t>(v)); }
  static value uint16(std::uint16_t v) { return make("q", v); }
  static value int32(std::int32_t v) { return make("i", static_cast<std::uint32_t>(v)); }
  static value uint32(std::uint32_t v) { return make("u", v); }
  static value int64(std::int64_t v) { return make("x", static_cast<std::uint64_t>(v)); }
  static value uint64(std::uint64_t v) { return make("t", v); }
  static value double_(double v) { return make("d", std::bit_cast<std::uint64_t>(v)); }
  static value fd_index(std::uint32_t v) { return make("h", v); }
  // The string types hold text the caller has validated (or that came off the wire validated);
  // writing re-checks strings, and object paths and signatures are checked here.
  static value string(std::string_view s) { return make_str("s", std::string(s)); }
  static result<value> object_path(std::string_view s) {
    if (error e = validate_object_path(s)) return e;
    return make_str("o", std::string(s));
  }
  static result<value> signature(std::string_view s) {
    if (error e = validate_signature(s)) return e;
    return make_str("g", std::string(s));
  }
  // An array of elements of the given single complete type; every element must have that type.
  static result<value> array(std::string_view element_type, std::vector<value> elements) {
    std::string t = "a";
    t += element_type;
    // Validated with its 'a' (offsets count it): a dict entry is a complete type only inside an array.
    if (error e = validate_single_type(t)) return e;
    for (const value& v : elements) {
      if (v.type_ != element_type) return error(errc::type_mismatch, error::no_offset, "array element");
    }
    value out = make(std::move(t), 0);
    out.items_ = std::move(elements);
    return out;
  }
  static result<value> structure(std::vector<value> fields) {
    if (fields.empty()) return error(errc::bad_signature, error::no_offset, "empty struct");
    std::string t = "(";
    for (const value& f : fields) t += f.type_;
    t += ')';
    if (error e = validate_single_type(t)) return e;
    value out = make(std::move(t), 0);
    out.items_ = std::move(fields);
    return out;
  }
  static result<value> dict_entry(value key, value val) {
    if (key.type_.size() != 1 || !is_basic_type_code(key.type_[0])) {
      return error(errc::bad_signature, error::no_offset, "dict key must be a basic type");
    }
    value out = make("{" + key.type_ + val.type_ + "}", 0);
    out.items_.push_back(std::move(key));
    out.items_.push_back(std::move(val));
    return out;
  }
  static value variant(value inner) {
    value out = make("v", 0);
    out.items_.push_back(std::move(inner));
    return out;
  }

  // Builds a value from any C++ type mcbus maps, by marshalling it and reading it back.
  template <class T>
  static result<value> from(const T& v) {
    detail::byte_buffer buf;
    writer w(buf);
    w.write(v);
    if (w.err()) return w.err();
    reader r(buf.bytes(), native_byte_order, 0, reader::options{.trusted = true, .check_fd_indexes = false});
    return read(r, signature_of<T>);
  }

  // Converts to a C++ type, which must have exactly this value's signature.
  template <class T>
  result<T> to() const {
    static_assert(!detail::borrows<T>::value,
                  "mcbus: value::to<T>() cannot return views (string_view, spans, *_view, borrowed_fd): "
                  "they would point into a buffer that is gone; use owning types such as std::string");
    if (signature_of<T> != type_) return error(errc::type_mismatch, error::no_offset, type_.c_str()[0] ? "value" : "");
    detail::byte_buffer buf;
    writer w(buf, native_byte_order, 0);
    write(w);
    if (w.err()) return w.err();
    reader r(buf.bytes(), native_byte_order, 0, reader::options{.trusted = true, .check_fd_indexes = false});
    T out{};
    r.read(out);
    if (r.err()) return r.err();
    return out;
  }

  // ---- inspection ---------------------------------------------------------------------------

  const std::string& type() const noexcept { return type_; }
  char code() const noexcept { return type_.empty() ? '\0' : type_[0]; }
  bool empty() const noexcept { return type_.empty(); }
  std::uint64_t bits() const noexcept { return bits_; }
  std::int64_t as_int() const noexcept {
    switch (code()) {
      case 'n': return static_cast<std::int16_t>(bits_);
      case 'i': return static_cast<std::int32_t>(bits_);
      case 'x': return static_cast<std::int64_t>(bits_);
      default: return static_cast<std::int64_t>(bits_);
    }
  }
  double as_double() const noexcept { return std::bit_cast<double>(bits_); }
  bool as_bool() const noexcept { return bits_ != 0; }
  const std::string& str() const noexcept { return str_; }
  // Array elements, struct fields, the key and value of a dict entry, or the content of a variant.
  const std::vector<value>& items() const noexcept { return items_; }
  std::vector<value>& items() noexcept { return items_; }

  friend bool operator==(const value& a, const value& b) {
    return a.type_ == b.type_ && a.bits_ == b.bits_ && a.str_ == b.str_ && a.items_ == b.items_;
  }

  // ---- wire ---------------------------------------------------------------------------------

  void write(writer& w) const {
    switch (code()) {
      case 'y': w.put_fixed<std::uint8_t>(static_cast<std::uint8_t>(bits_)); return;
      case 'b': w.put_bool(bits_ != 0); return;
      case 'n':
      case 'q': w.put_fixed<std::uint16_t>(static_cast<std::uint16_t>(bits_)); return;
      case 'i':
      case 'u': w.put_fixed<std::uint32_t>(static_cast<std::uint32_t>(bits_)); return;
      case 'h': w.put_fd_index(static_cast<std::uint32_t>(bits_)); return;
      case 'x':
      case 't':
      case 'd': w.put_fixed<std::uint64_t>(bits_); return;
      case 's': w.put_string(str_); return;
      case 'o': w.put_object_path(str_); return;
      case 'g': w.put_signature(str_); return;
      case 'v':
        w.open_variant(items_[0].type_);
        items_[0].write(w);
        w.close_variant();
        return;
      case 'a': {
        const writer::array_mark m = w.open_array(std::string_view(type_).substr(1));
        for (const value& e : items_) e.write(w);
        w.close_array(m);
        return;
      }
      case '(':
      case '{':
        w.open_struct();
        for (const value& f : items_) f.write(w);
        w.close_struct();
        return;
      default: w.fail({errc::invalid_argument, w.position(), "empty mcbus::value"});
    }
  }

  // Reads one value of the given complete type.
  static value read(reader& r, std::string_view type) {
    value out = make(std::string(type), 0);
    switch (type[0]) {
      case 'y': out.bits_ = r.get_byte(); break;
      case 'b': out.bits_ = r.get_bool(); break;
      case 'n':
      case 'q': out.bits_ = r.get_fixed<std::uint16_t>(); break;
      case 'i':
      case 'u': out.bits_ = r.get_fixed<std::uint32_t>(); break;
      case 'h': out.bits_ = r.get_fd_index(); break;
      case 'x':
      case 't':
      case 'd': out.bits_ = r.get_fixed<std::uint64_t>(); break;
      case 's': out.str_ = std::string(r.get_string()); break;
      case 'o': out.str_ = std::string(r.get_object_path().str()); break;
      case 'g': out.str_ = std::string(r.get_signature().str()); break;
      case 'v': {
        const signature_view inner = r.open_variant();
        if (!r.err()) out.items_.push_back(read(r, inner.str()));
        r.close_variant();
        break;
      }
      case 'a': {
        const std::string_view elem = type.substr(1, complete_type_length(type, 1));
        const reader::array_cursor c = r.open_array(elem);
        while (r.in_array(c)) out.items_.push_back(read(r, elem));
        r.close_array(c);
        break;
      }
      case '(':
      case '{': {
        r.open_struct();
        std::size_t i = 1;
        while (!r.err() && i < type.size() - 1) {
          const std::size_t len = complete_type_length(type, i);
          out.items_.push_back(read(r, type.substr(i, len)));
          i += len;
        }
        r.close_struct();
        break;
      }
      default: r.fail(errc::bad_signature, "value type"); break;
    }
    return out;
  }

  // Reads all values of a signature (zero or more complete types).
  static std::vector<value> read_all(reader& r, std::string_view sig) {
    std::vector<value> out;
    std::size_t i = 0;
    while (i < sig.size() && !r.err()) {
      const std::size_t len = complete_type_length(sig, i);
      out.push_back(read(r, sig.substr(i, len)));
      i += len;
    }
    return out;
  }

 private:
  static value make(std::string type, std::uint64_t bits) {
    value v;
    v.type_ = std::move(type);
    v.bits_ = bits;
    return v;
  }
  static value make_str(std::string type, std::string s) {
    value v;
    v.type_ = std::move(type);
    v.str_ = std::move(s);
    return v;
  }

  std::string type_;
  std::uint64_t bits_ = 0;
  std::string str_;
  std::vector<value> items_;
};

// The dynamic variant: marshals as 'v' holding any value. std::variant<Ts...> is the typed choice
// when the alternatives are known.
class variant {
 public:
  variant() = default;  // empty: must be assigned before it is written
  explicit variant(value v) : v_(std::move(v)) {}
  template <class T>
  requires(!std::is_same_v<std::remove_cvref_t<T>, variant> &&
           !std::is_same_v<std::remove_cvref_t<T>, value>) static result<variant> from(const T& v) {
    auto inner = value::from(v);
    if (!inner) return inner.error();
    return variant(std::move(*inner));
  }

  const value& get() const noexcept { return v_; }
  const std::string& type() const noexcept { return v_.type(); }
  template <class T>
  result<T> to() const {
    return v_.to<T>();
  }

  void write_to(writer& w) const {
    if (v_.empty()) return w.fail({errc::invalid_argument, w.position(), "empty mcbus::variant"});
    w.open_variant(v_.type());
    v_.write(w);
    w.close_variant();
  }
  void read_from(reader& r) {
    const signature_view inner = r.open_variant();
    if (!r.err()) v_ = value::read(r, inner.str());
    r.close_variant();
  }

  friend bool operator==(const variant& a, const variant& b) { return a.v_ == b.v_; }

 private:
  value v_;
};

MCBUS_NAMESPACE_END
