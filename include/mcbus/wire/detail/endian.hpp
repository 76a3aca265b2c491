// mcbus/wire: byte order helpers. Loads and stores go through memcpy, so unaligned access is safe
// on every CPU and compiles to a single move (plus a bswap) where the CPU allows.
#pragma once

#include <mcbus/config.hpp>

#include <bit>
#include <cstdint>
#include <cstring>
#include <type_traits>

MCBUS_NAMESPACE_BEGIN

// The two D-Bus byte orders, named by their marker byte.
enum class byte_order : std::uint8_t { little = 'l', big = 'B' };

constexpr byte_order native_byte_order =
    std::endian::native == std::endian::little ? byte_order::little : byte_order::big;

namespace detail {

constexpr std::uint16_t bswap(std::uint16_t v) noexcept { return __builtin_bswap16(v); }
constexpr std::uint32_t bswap(std::uint32_t v) noexcept { return __builtin_bswap32(v); }
constexpr std::uint64_t bswap(std::uint64_t v) noexcept { return __builtin_bswap64(v); }

template <class U>
MCBUS_ALWAYS_INLINE U load(const unsigned char* p, bool swap) noexcept {
  static_assert(std::is_unsigned_v<U>);
  U v;
  std::memcpy(&v, p, sizeof(U));
  if constexpr (sizeof(U) > 1) {
    if (swap) v = bswap(v);
  }
  return v;
}

template <class U>
MCBUS_ALWAYS_INLINE void store(unsigned char* p, U v, bool swap) noexcept {
  static_assert(std::is_unsigned_v<U>);
  if constexpr (sizeof(U) > 1) {
    if (swap) v = bswap(v);
  }
  std::memcpy(p, &v, sizeof(U));
}

constexpr std::size_t align_up(std::size_t n, std::size_t a) noexcept { return (n + a - 1) & ~(a - 1); }

}  // namespace detail

MCBUS_NAMESPACE_END
