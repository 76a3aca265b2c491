// mcbus/wire: type signatures.
//
// Two halves. The first parses and validates signature strings at run time or compile time, with
// every rule of the specification: at most 255 bytes, 32 nested arrays plus 32 nested structs, dict
// entries only as array elements and with a basic key, no empty struct, no reserved codes.
// The second maps C++ types to signatures at compile time: signature_of<int, std::string> is
// "is". User structs join through the dbus_struct<T> customization point (or MCBUS_STRUCT).
#pragma once

#include <mcbus/error.hpp>
#include <mcbus/wire/limits.hpp>
#include <mcbus/wire/names.hpp>
#include <mcbus/wire/unix_fd.hpp>

#include <array>
#include <cstddef>
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

namespace type_code {
inline constexpr char byte = 'y';
inline constexpr char boolean = 'b';
inline constexpr char int16 = 'n';
inline constexpr char uint16 = 'q';
inline constexpr char int32 = 'i';
inline constexpr char uint32 = 'u';
inline constexpr char int64 = 'x';
inline constexpr char uint64 = 't';
inline constexpr char double_ = 'd';
inline constexpr char string = 's';
inline constexpr char object_path = 'o';
inline constexpr char signature = 'g';
inline constexpr char unix_fd = 'h';
inline constexpr char array = 'a';
inline constexpr char variant = 'v';
inline constexpr char struct_begin = '(';
inline constexpr char struct_end = ')';
inline constexpr char dict_begin = '{';
inline constexpr char dict_end = '}';
}  // namespace type_code

namespace detail {
// What the codec needs to know of each type code, looked up in one load: the readers and writers
// ask it for every value.
struct code_traits {
  std::uint8_t alignment = 0;  // 0: not a type code that starts a complete type
  bool basic = false;
  bool fixed = false;  // basic and of fixed size: its wire size equals its alignment
};
inline constexpr auto code_table = [] {
  std::array<code_traits, 256> t{};
  auto set = [&](char c, std::uint8_t alignment, bool basic, bool fixed) {
    t[static_cast<unsigned char>(c)] = {alignment, basic, fixed};
  };
  for (char c : {'y'}) set(c, 1, true, true);
  for (char c : {'n', 'q'}) set(c, 2, true, true);
  for (char c : {'b', 'i', 'u', 'h'}) set(c, 4, true, true);
  for (char c : {'x', 't', 'd'}) set(c, 8, true, true);
  for (char c : {'s', 'o'}) set(c, 4, true, false);
  set('g', 1, true, false);
  set('v', 1, false, false);
  set('a', 4, false, false);
  for (char c : {'(', '{'}) set(c, 8, false, false);
  return t;
}();
}  // namespace detail

constexpr bool is_basic_type_code(char c) noexcept { return detail::code_table[static_cast<unsigned char>(c)].basic; }

// Fixed-size basic types: their wire size equals their alignment.
constexpr bool is_fixed_type_code(char c) noexcept { return detail::code_table[static_cast<unsigned char>(c)].fixed; }

// Alignment of a type from its first code; 0 for an invalid code.
constexpr std::size_t alignment_of_code(char c) noexcept {
  return detail::code_table[static_cast<unsigned char>(c)].alignment;
}

namespace detail {
struct nesting {
  unsigned arrays = 0;
  unsigned structs = 0;
  unsigned dicts = 0;
};

// Parses the complete type that starts at s[i] and leaves i just past it.
constexpr error parse_complete_type(std::string_view s, std::size_t& i, nesting depth) noexcept {
  constexpr errc code = errc::bad_signature;
  if (i >= s.size()) return {code, i, "a complete type is missing"};
  const char c = s[i];
  if (is_basic_type_code(c) || c == 'v') {
    ++i;
    return {};
  }
  switch (c) {
    case 'a': {
      if (++depth.arrays > max_array_depth) return {code, i, "more than 32 nested arrays"};
      ++i;
      if (i >= s.size()) return {code, i, "array without an element type"};
      if (s[i] != '{') return parse_complete_type(s, i, depth);
      if (++depth.dicts > max_struct_depth) return {code, i, "more than 32 nested dict entries"};
      ++i;
      if (i >= s.size()) return {code, i, "dict entry not closed"};
      if (s[i] == '}') return {code, i, "dict entry has no fields"};
      if (!is_basic_type_code(s[i])) return {code, i, "dict entry key is not a basic type"};
      ++i;
      if (i >= s.size()) return {code, i, "dict entry not closed"};
      if (s[i] == '}') return {code, i, "dict entry has only one field"};
      if (error e = parse_complete_type(s, i, depth)) return e;
      if (i >= s.size()) return {code, i, "dict entry not closed"};
      if (s[i] != '}') return {code, i, "dict entry has more than two fields"};
      ++i;
      return {};
    }
    case '(': {
      if (++depth.structs > max_struct_depth) return {code, i, "more than 32 nested structs"};
      ++i;
      if (i < s.size() && s[i] == ')') return {code, i, "empty struct"};
      while (i < s.size() && s[i] != ')') {
        if (error e = parse_complete_type(s, i, depth)) return e;
      }
      if (i >= s.size()) return {code, i, "struct not closed"};
      ++i;
      return {};
    }
    case ')': return {code, i, "')' without '('"};
    case '{': return {code, i, "dict entry outside an array"};
    case '}': return {code, i, "'}' without '{'"};
    case 'r':
    case 'e':
    case 'm':
    case '*':
    case '?':
    case '@':
    case '&':
    case '^': return {code, i, "reserved type code"};
    default: return {code, i, "unknown type code"};
  }
}
}  // namespace detail

// A signature: zero or more complete types.
constexpr error validate_signature(std::string_view s) noexcept {
  if (s.size() > max_signature_length) return {errc::signature_too_long, max_signature_length};
  std::size_t i = 0;
  while (i < s.size()) {
    if (error e = detail::parse_complete_type(s, i, {})) return e;
  }
  return {};
}

// Exactly one complete type, as in a variant.
constexpr error validate_single_type(std::string_view s) noexcept {
  if (s.size() > max_signature_length) return {errc::signature_too_long, max_signature_length};
  if (s.empty()) return {errc::bad_signature, 0, "empty, but one complete type is needed"};
  std::size_t i = 0;
  if (error e = detail::parse_complete_type(s, i, {})) return e;
  if (i != s.size()) return {errc::bad_signature, i, "more than one complete type"};
  return {};
}

constexpr bool is_valid_signature(std::string_view s) noexcept { return !validate_signature(s); }
constexpr bool is_single_type(std::string_view s) noexcept { return !validate_single_type(s); }

// Length of the complete type at s[pos] in a signature already known to be valid.
// Array codes are prefixes: the type is not complete until a non-'a' code closes every container.
constexpr std::size_t complete_type_length(std::string_view s, std::size_t pos) noexcept {
  std::size_t i = pos;
  int open = 0;
  while (i < s.size()) {
    const char c = s[i++];
    if (c == '(' || c == '{') {
      ++open;
    } else if (c == ')' || c == '}') {
      --open;
    }
    if (c != 'a' && open <= 0) break;
  }
  return i - pos;
}

namespace detail {
struct signature_rule {
  static constexpr error validate(std::string_view s) noexcept { return validate_signature(s); }
};
}  // namespace detail

// A validated signature as a view; marshals as D-Bus type 'g'.
using signature_view = basic_name<detail::signature_rule>;

// An owning signature; marshals as D-Bus type 'g'.
class signature {
 public:
  signature() = default;
  signature(signature_view v) : str_(v.str()) {}  // NOLINT: a view is already valid
  static result<signature> from(std::string_view s) {
    if (error e = validate_signature(s)) return e;
    return signature(std::string(s), 0);
  }
  static signature from_unchecked(std::string_view s) { return signature(std::string(s), 0); }
  const std::string& str() const noexcept { return str_; }
  signature_view view() const noexcept { return signature_view::from_unchecked(str_); }
  operator signature_view() const noexcept { return view(); }  // NOLINT
  friend bool operator==(const signature& a, const signature& b) noexcept = default;

 private:
  signature(std::string s, int) : str_(std::move(s)) {}
  std::string str_;
};

// ---------------------------------------------------------------------------------------------
// Compile-time signatures of C++ types.

// A string of known length usable as a template argument and in constant expressions.
template <std::size_t N>
struct fixed_string {
  char chars[N + 1] = {};
  constexpr fixed_string() = default;
  constexpr fixed_string(const char (&s)[N + 1]) {  // NOLINT
    for (std::size_t i = 0; i < N; ++i) chars[i] = s[i];
  }
  static constexpr std::size_t size() noexcept { return N; }
  constexpr std::string_view view() const noexcept { return {chars, N}; }
  constexpr operator std::string_view() const noexcept { return view(); }  // NOLINT
  constexpr const char* c_str() const noexcept { return chars; }
};
template <std::size_t N>
fixed_string(const char (&)[N]) -> fixed_string<N - 1>;

template <std::size_t A, std::size_t B>
constexpr fixed_string<A + B> operator+(const fixed_string<A>& a, const fixed_string<B>& b) {
  fixed_string<A + B> out;
  for (std::size_t i = 0; i < A; ++i) out.chars[i] = a.chars[i];
  for (std::size_t i = 0; i < B; ++i) out.chars[A + i] = b.chars[i];
  return out;
}

// Customization point: marshal a user struct as a D-Bus struct of the listed members, in order.
//   template <> struct mcbus::dbus_struct<point> {
//     static constexpr auto members = std::make_tuple(&point::x, &point::y);
//   };
// MCBUS_STRUCT(point, x, y) writes the same specialization.
template <class T>
struct dbus_struct;

// A dict entry {KV}. std::vector<dict_entry<K, V>> is a{KV} that keeps the order on the wire and,
// read with K and V as views, allocates nothing but the vector.
template <class K, class V>
struct dict_entry {
  K key;
  V value;
  friend bool operator==(const dict_entry&, const dict_entry&) = default;
};

// An array of fixed-size numbers that a message references instead of copying: appended to a
// message, the bytes stay in the caller's memory until they go to the socket, so a large payload
// is copied once (by the kernel) instead of twice. The memory must stay valid and unchanged until
// the message is sent or destroyed. Marshals as aT; borrow(span) makes one. Where the bytes cannot
// be used as they are (the other byte order, or a writer that is not writing a message body), they
// are copied, as any array would be.
template <class T>
struct borrowed_array {
  std::span<const T> items;
  const T* data() const noexcept { return items.data(); }
  std::size_t size() const noexcept { return items.size(); }
  auto begin() const noexcept { return items.begin(); }
  auto end() const noexcept { return items.end(); }
};
template <class T>
borrowed_array<T> borrow(std::span<const T> items) noexcept {
  return {items};
}

class variant;  // the dynamic variant (wire/value.hpp)

namespace detail {
template <class>
inline constexpr bool dependent_false = false;

template <class T>
concept user_struct = requires {
  dbus_struct<T>::members;
};

template <class T>
struct is_std_vector : std::false_type {};
template <class T, class A>
struct is_std_vector<std::vector<T, A>> : std::true_type {};

// How mcbus treats a C++ type; writer.hpp and reader.hpp dispatch on this.
enum class kind {
  integer,      // y n q i u x t (and enums)
  boolean,      // b
  floating,     // d
  string,       // s
  object_path,  // o
  signature,    // g
  fd,           // h
  array,        // a
  dict,         // a{..}
  dict_entry,   // {..}
  tuple,        // (..) from std::tuple / std::pair
  user_struct,  // (..) from dbus_struct<T>
  std_variant,  // v, one of the listed alternatives
  any_variant,  // v, any type (mcbus::variant)
};

template <class T, class = void>
struct type_info {
  static_assert(dependent_false<T>,
                "mcbus: this C++ type has no D-Bus type. For a struct, specialize "
                "mcbus::dbus_struct<T> (or write MCBUS_STRUCT(T, members...)); see docs/types.md "
                "for the types mcbus maps.");
};

template <class T>
concept plain_integer =
    std::is_integral_v<T> && !std::is_same_v<T, bool> && !std::is_same_v<T, char> && !std::is_same_v<T, signed char> &&
    !std::is_same_v<T, char8_t> && !std::is_same_v<T, char16_t> && !std::is_same_v<T, char32_t> &&
    !std::is_same_v<T, wchar_t> && (sizeof(T) == 1 ? std::is_unsigned_v<T> : true);

template <class T>
constexpr char integer_code() {
  if constexpr (sizeof(T) == 1)
    return 'y';
  else if constexpr (sizeof(T) == 2)
    return std::is_signed_v<T> ? 'n' : 'q';
  else if constexpr (sizeof(T) == 4)
    return std::is_signed_v<T> ? 'i' : 'u';
  else
    return std::is_signed_v<T> ? 'x' : 't';
}

template <char C, kind K, std::size_t Align>
struct basic_info {
  static constexpr fixed_string<1> sig{{C, '\0'}};
  static constexpr kind category = K;
  static constexpr std::size_t alignment = Align;
};

template <class T>
struct type_info<T, std::enable_if_t<plain_integer<T>>> : basic_info<integer_code<T>(), kind::integer, sizeof(T)> {
  static constexpr bool trivially_wire = true;  // memory layout equals the wire layout (native order)
};
template <class T>
struct type_info<T, std::enable_if_t<std::is_enum_v<T>>> : type_info<std::underlying_type_t<T>> {};
template <>
struct type_info<bool> : basic_info<'b', kind::boolean, 4> {};
template <>
struct type_info<double> : basic_info<'d', kind::floating, 8> {
  static constexpr bool trivially_wire = true;
};
template <>
struct type_info<std::string> : basic_info<'s', kind::string, 4> {};
template <>
struct type_info<std::string_view> : basic_info<'s', kind::string, 4> {};
template <>
struct type_info<const char*> : basic_info<'s', kind::string, 4> {};
template <>
struct type_info<object_path> : basic_info<'o', kind::object_path, 4> {};
template <>
struct type_info<object_path_view> : basic_info<'o', kind::object_path, 4> {};
template <>
struct type_info<signature> : basic_info<'g', kind::signature, 1> {};
template <>
struct type_info<signature_view> : basic_info<'g', kind::signature, 1> {};
template <>
struct type_info<unix_fd> : basic_info<'h', kind::fd, 4> {};
template <>
struct type_info<borrowed_fd> : basic_info<'h', kind::fd, 4> {};
template <>
struct type_info<variant> : basic_info<'v', kind::any_variant, 1> {};

template <class T>
concept trivially_wire = requires {
  type_info<T>::trivially_wire;
};

template <class E>
struct array_info {
  static constexpr auto sig = fixed_string<1>{{'a', '\0'}} + type_info<E>::sig;
  static constexpr kind category = kind::array;
  static constexpr std::size_t alignment = 4;
  using element = E;
};

template <class T, class A>
struct type_info<std::vector<T, A>> : array_info<T> {};
template <class T, std::size_t N>
struct type_info<std::array<T, N>> : array_info<T> {};
template <class T, std::size_t N>
struct type_info<std::span<T, N>> : array_info<std::remove_const_t<T>> {};
template <class T>
struct type_info<borrowed_array<T>> : array_info<T> {
  static_assert(trivially_wire<T>, "mcbus: only arrays of fixed-size numbers can be borrowed");
};

template <class K, class V>
struct dict_entry_info {
  static_assert(is_basic_type_code(type_info<K>::sig.chars[0]) && type_info<K>::sig.size() == 1,
                "mcbus: a D-Bus dict key must be a basic type (integer, bool, double, string, "
                "object path, signature or fd)");
  static constexpr auto sig =
      fixed_string<1>{{'{', '\0'}} + type_info<K>::sig + type_info<V>::sig + fixed_string<1>{{'}', '\0'}};
  static constexpr std::size_t alignment = 8;
  using key = K;
  using mapped = V;
};

template <class K, class V>
struct type_info<dict_entry<K, V>> : dict_entry_info<K, V> {
  static constexpr kind category = kind::dict_entry;
};

template <class K, class V>
struct dict_info : dict_entry_info<K, V> {
  static constexpr auto sig = fixed_string<1>{{'a', '\0'}} + dict_entry_info<K, V>::sig;
  static constexpr kind category = kind::dict;
  static constexpr std::size_t alignment = 4;
};
template <class K, class V, class C, class A>
struct type_info<std::map<K, V, C, A>> : dict_info<K, V> {};
template <class K, class V, class H, class E, class A>
struct type_info<std::unordered_map<K, V, H, E, A>> : dict_info<K, V> {};

template <class... Ts>
constexpr auto concat_sigs() {
  if constexpr (sizeof...(Ts) == 0) {
    return fixed_string<0>{};
  } else {
    return (type_info<std::remove_cvref_t<Ts>>::sig + ...);
  }
}

template <class... Ts>
struct struct_info {
  static_assert(sizeof...(Ts) > 0, "mcbus: D-Bus has no empty struct; std::tuple<> cannot be marshalled");
  static constexpr auto sig = fixed_string<1>{{'(', '\0'}} + concat_sigs<Ts...>() + fixed_string<1>{{')', '\0'}};
  static constexpr std::size_t alignment = 8;
};
template <class... Ts>
struct type_info<std::tuple<Ts...>> : struct_info<Ts...> {
  static constexpr kind category = kind::tuple;
};
template <class A, class B>
struct type_info<std::pair<A, B>> : struct_info<A, B> {
  static constexpr kind category = kind::tuple;
};

template <class P>
struct member_type;
template <class C, class M>
struct member_type<M C::*> {
  using type = M;
};

template <class T, class Tuple>
struct user_struct_sig;
template <class T, class... Ps>
struct user_struct_sig<T, std::tuple<Ps...>> {
  using info = struct_info<typename member_type<Ps>::type...>;
};

template <class T>
struct type_info<T, std::enable_if_t<user_struct<T>>>
    : user_struct_sig<T, std::remove_cvref_t<decltype(dbus_struct<T>::members)>>::info {
  static constexpr kind category = kind::user_struct;
};

template <class... Ts>
struct type_info<std::variant<Ts...>> : basic_info<'v', kind::std_variant, 1> {};

// The signature of a parameter list, validated: a type the D-Bus cannot express (too deep, too
// long) fails to compile here instead of failing at run time.
template <class... Ts>
struct signature_of_impl {
  static constexpr auto value = concat_sigs<Ts...>();
  static_assert(value.size() <= max_signature_length, "mcbus: signature longer than 255 bytes");
  static_assert(!validate_signature(value.view()),
                "mcbus: these types nest deeper than D-Bus allows (32 arrays, 32 structs)");
};
}  // namespace detail

// The D-Bus signature of a list of C++ types, as a constant: signature_of<int, std::string> == "is".
template <class... Ts>
inline constexpr std::string_view signature_of = detail::signature_of_impl<std::remove_cvref_t<Ts>...>::value.view();

MCBUS_NAMESPACE_END

// Declares the D-Bus struct form of a user type: MCBUS_STRUCT(point, x, y). Use at global scope.
#define MCBUS_STRUCT(Type, ...)                                                               \
  template <>                                                                                 \
  struct mcbus::dbus_struct<Type> {                                                           \
    static constexpr auto members = std::make_tuple(MCBUS_DETAIL_MEMBERS(Type, __VA_ARGS__)); \
  }

#define MCBUS_DETAIL_MEMBERS(T, ...) MCBUS_DETAIL_FOR_EACH(MCBUS_DETAIL_MEMBER_PTR, T, __VA_ARGS__)
#define MCBUS_DETAIL_MEMBER_PTR(T, m) &T::m

// A bounded FOR_EACH over up to 16 members, written without a preprocessor library.
#define MCBUS_DETAIL_EXPAND(x) x
#define MCBUS_DETAIL_FE_1(M, T, a) M(T, a)
#define MCBUS_DETAIL_FE_2(M, T, a, ...) M(T, a), MCBUS_DETAIL_EXPAND(MCBUS_DETAIL_FE_1(M, T, __VA_ARGS__))
#define MCBUS_DETAIL_FE_3(M, T, a, ...) M(T, a), MCBUS_DETAIL_EXPAND(MCBUS_DETAIL_FE_2(M, T, __VA_ARGS__))
#define MCBUS_DETAIL_FE_4(M, T, a, ...) M(T, a), MCBUS_DETAIL_EXPAND(MCBUS_DETAIL_FE_3(M, T, __VA_ARGS__))
#define MCBUS_DETAIL_FE_5(M, T, a, ...) M(T, a), MCBUS_DETAIL_EXPAND(MCBUS_DETAIL_FE_4(M, T, __VA_ARGS__))
#define MCBUS_DETAIL_FE_6(M, T, a, ...) M(T, a), MCBUS_DETAIL_EXPAND(MCBUS_DETAIL_FE_5(M, T, __VA_ARGS__))
#define MCBUS_DETAIL_FE_7(M, T, a, ...) M(T, a), MCBUS_DETAIL_EXPAND(MCBUS_DETAIL_FE_6(M, T, __VA_ARGS__))
#define MCBUS_DETAIL_FE_8(M, T, a, ...) M(T, a), MCBUS_DETAIL_EXPAND(MCBUS_DETAIL_FE_7(M, T, __VA_ARGS__))
#define MCBUS_DETAIL_FE_9(M, T, a, ...) M(T, a), MCBUS_DETAIL_EXPAND(MCBUS_DETAIL_FE_8(M, T, __VA_ARGS__))
#define MCBUS_DETAIL_FE_10(M, T, a, ...) M(T, a), MCBUS_DETAIL_EXPAND(MCBUS_DETAIL_FE_9(M, T, __VA_ARGS__))
#define MCBUS_DETAIL_FE_11(M, T, a, ...) M(T, a), MCBUS_DETAIL_EXPAND(MCBUS_DETAIL_FE_10(M, T, __VA_ARGS__))
#define MCBUS_DETAIL_FE_12(M, T, a, ...) M(T, a), MCBUS_DETAIL_EXPAND(MCBUS_DETAIL_FE_11(M, T, __VA_ARGS__))
#define MCBUS_DETAIL_FE_13(M, T, a, ...) M(T, a), MCBUS_DETAIL_EXPAND(MCBUS_DETAIL_FE_12(M, T, __VA_ARGS__))
#define MCBUS_DETAIL_FE_14(M, T, a, ...) M(T, a), MCBUS_DETAIL_EXPAND(MCBUS_DETAIL_FE_13(M, T, __VA_ARGS__))
#define MCBUS_DETAIL_FE_15(M, T, a, ...) M(T, a), MCBUS_DETAIL_EXPAND(MCBUS_DETAIL_FE_14(M, T, __VA_ARGS__))
#define MCBUS_DETAIL_FE_16(M, T, a, ...) M(T, a), MCBUS_DETAIL_EXPAND(MCBUS_DETAIL_FE_15(M, T, __VA_ARGS__))
#define MCBUS_DETAIL_FE_PICK(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15, _16, NAME, ...) NAME
#define MCBUS_DETAIL_FOR_EACH(M, T, ...)                                                                               \
  MCBUS_DETAIL_EXPAND(MCBUS_DETAIL_FE_PICK(                                                                            \
      __VA_ARGS__, MCBUS_DETAIL_FE_16, MCBUS_DETAIL_FE_15, MCBUS_DETAIL_FE_14, MCBUS_DETAIL_FE_13, MCBUS_DETAIL_FE_12, \
      MCBUS_DETAIL_FE_11, MCBUS_DETAIL_FE_10, MCBUS_DETAIL_FE_9, MCBUS_DETAIL_FE_8, MCBUS_DETAIL_FE_7,                 \
      MCBUS_DETAIL_FE_6, MCBUS_DETAIL_FE_5, MCBUS_DETAIL_FE_4, MCBUS_DETAIL_FE_3, MCBUS_DETAIL_FE_2,                   \
      MCBUS_DETAIL_FE_1)(M, T, __VA_ARGS__))
