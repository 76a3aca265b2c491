// mcbus/wire: UTF-8 validation as D-Bus wants it: well-formed, no overlong forms, no surrogates,
// nothing above U+10FFFF, and no NUL byte anywhere.
#pragma once

#include <mcbus/config.hpp>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

MCBUS_NAMESPACE_BEGIN
namespace detail {

inline constexpr std::size_t utf8_ok = static_cast<std::size_t>(-1);

// Returns utf8_ok, or the offset of the first byte that is not part of a valid sequence. Runs of
// ASCII are checked eight bytes at a time, since most D-Bus strings are ASCII.
inline std::size_t find_invalid_utf8(const unsigned char* s, std::size_t n, bool* found_nul = nullptr) noexcept {
  std::size_t i = 0;
  while (i < n) {
    if (i + 8 <= n) {
      std::uint64_t w;
      std::memcpy(&w, s + i, 8);
      // No high bit set and no zero byte: all eight are printable-or-control ASCII, not NUL.
      const std::uint64_t has_zero = (w - 0x0101010101010101ULL) & ~w & 0x8080808080808080ULL;
      if (((w & 0x8080808080808080ULL) | has_zero) == 0) {
        i += 8;
        continue;
      }
    }
    const unsigned char c = s[i];
    if (c == 0) {
      if (found_nul) *found_nul = true;
      return i;
    }
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    std::uint32_t cp;
    std::uint32_t min;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return i;
    }
    if (n - i < len) return i;
    for (std::size_t k = 1; k < len; ++k) {
      const unsigned char cc = s[i + k];
      if ((cc & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return utf8_ok;
}

// Whether all n bytes at s are ASCII and none is NUL: the common case, decided a word at a time
// with no per-byte branch. `readable` is how many bytes from s may be loaded (at least n); with 8
// or more, a short string is checked with one masked load instead of a byte loop. A false answer
// says nothing more: find_invalid_utf8() then decides, and finds the offset.
MCBUS_ALWAYS_INLINE bool is_ascii_without_nul(const unsigned char* s, std::size_t n, std::size_t readable) noexcept {
  constexpr std::uint64_t ones = 0x0101010101010101ULL;
  constexpr std::uint64_t highs = 0x8080808080808080ULL;
  // Nonzero when some byte of w has its high bit set or is zero.
  auto bad = [](std::uint64_t w) noexcept { return (w | ((w - ones) & ~w)) & highs; };
  std::uint64_t w;
  if (n < 8) {
    if (n == 0) return true;
    if (readable < 8) {
      for (std::size_t i = 0; i < n; ++i) {
        if (s[i] == 0 || s[i] >= 0x80) return false;
      }
      return true;
    }
    std::memcpy(&w, s, 8);
    // Bytes past the string become 0x01 (ASCII, not NUL), whatever the byte order.
    std::uint64_t keep;
    if constexpr (std::endian::native == std::endian::little) {
      keep = ~std::uint64_t{0} >> (8 * (8 - n));
    } else {
      keep = ~std::uint64_t{0} << (8 * (8 - n));
    }
    return bad((w & keep) | (ones & ~keep)) == 0;
  }
  std::uint64_t acc = 0;
  std::size_t i = 0;
#if defined(__SSE2__)
  // x86-64 always has SSE2: 16 bytes in a handful of instructions, where the word loop needs twice
  // as many. Other CPUs take the portable loop.
  if (n >= 16) {
    const __m128i zero = _mm_setzero_si128();
    __m128i any = zero;
    for (; i + 16 <= n; i += 16) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
      any = _mm_or_si128(any, _mm_or_si128(v, _mm_cmpeq_epi8(v, zero)));  // high bit: >= 0x80 or NUL
    }
    const __m128i tail = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + n - 16));
    any = _mm_or_si128(any, _mm_or_si128(tail, _mm_cmpeq_epi8(tail, zero)));
    return _mm_movemask_epi8(any) == 0;
  }
#endif
  for (; i + 16 <= n; i += 16) {
    std::uint64_t w2;
    std::memcpy(&w, s + i, 8);
    std::memcpy(&w2, s + i + 8, 8);
    acc |= bad(w) | bad(w2);
  }
  if (i + 8 <= n) {
    std::memcpy(&w, s + i, 8);
    acc |= bad(w);
  }
  // The last 8 bytes, overlapping what was checked: no byte loop for the tail.
  std::memcpy(&w, s + n - 8, 8);
  acc |= bad(w);
  return acc == 0;
}

// find_invalid_utf8() with the ASCII fast path in front.
MCBUS_ALWAYS_INLINE std::size_t find_invalid_utf8_fast(const unsigned char* s, std::size_t n, std::size_t readable,
                                                       bool* found_nul = nullptr) noexcept {
  if (MCBUS_LIKELY(is_ascii_without_nul(s, n, readable))) return utf8_ok;
  return find_invalid_utf8(s, n, found_nul);
}

}  // namespace detail
MCBUS_NAMESPACE_END
