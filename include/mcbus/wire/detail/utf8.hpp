// mcbus/wire: UTF-8 validation as D-Bus wants it: well-formed, no overlong forms, no surrogates,
// nothing above U+10FFFF, and no NUL byte anywhere.
#pragma once

#include <mcbus/config.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>

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

}  // namespace detail
MCBUS_NAMESPACE_END
