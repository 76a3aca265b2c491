// The ASCII fast path in front of the UTF-8 validator (detail::find_invalid_utf8_fast) must agree
// with the exact validator for every length, every position of a bad byte, and however many bytes
// past the string it may load: it is an optimisation, and may never change a verdict.
#include <mcbus/wire/detail/utf8.hpp>

#include <gtest/gtest.h>

#include <cstddef>
#include <vector>

namespace {

using mcbus::detail::find_invalid_utf8;
using mcbus::detail::find_invalid_utf8_fast;

void expect_same(const std::vector<unsigned char>& buf, std::size_t n, std::size_t readable) {
  bool nul_exact = false, nul_fast = false;
  const std::size_t exact = find_invalid_utf8(buf.data(), n, &nul_exact);
  const std::size_t fast = find_invalid_utf8_fast(buf.data(), n, readable, &nul_fast);
  ASSERT_EQ(fast, exact) << "n=" << n << " readable=" << readable;
  ASSERT_EQ(nul_fast, nul_exact) << "n=" << n << " readable=" << readable;
}

}  // namespace

TEST(Utf8FastPath, AgreesWithTheExactCheck) {
  // Bytes that must each be caught wherever they stand, and bytes that are fine.
  const unsigned char probes[] = {0x00, 0x80, 0xC3, 0xFF, 0x7F, 0x01, 'a'};
  for (std::size_t n = 0; n <= 40; ++n) {
    for (std::size_t extra : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{8}, std::size_t{16}}) {
      // What lies past the string must not matter: fill it with bytes the check would reject.
      std::vector<unsigned char> buf(n + extra, 0x80);
      for (std::size_t i = 0; i < n; ++i) buf[i] = static_cast<unsigned char>('A' + i % 26);
      expect_same(buf, n, n + extra);
      for (std::size_t at = 0; at < n; ++at) {
        for (unsigned char p : probes) {
          const unsigned char saved = buf[at];
          buf[at] = p;
          expect_same(buf, n, n + extra);
          buf[at] = saved;
        }
      }
    }
  }
}

TEST(Utf8FastPath, MultiByteTextFallsBackAndIsAccepted) {
  const std::vector<unsigned char> text = {'c', 'a', 'f', 0xC3, 0xA9, ' ', 0xE2, 0x9C, 0x93, 0xF0, 0x9F, 0x98, 0x80};
  for (std::size_t n = 0; n <= text.size(); ++n) expect_same(text, n, text.size());
  EXPECT_EQ(find_invalid_utf8_fast(text.data(), text.size(), text.size()), mcbus::detail::utf8_ok);
}
