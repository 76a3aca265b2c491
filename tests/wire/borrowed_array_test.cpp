// borrowed_array: a message that references the caller's array instead of copying it must produce
// exactly the bytes of one that copies it, in both byte orders, wherever the array sits.
#include <mcbus/wire/message.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <span>
#include <tuple>
#include <vector>

namespace {

using mcbus::borrow;
using mcbus::byte_order;

std::vector<std::byte> body_by_parts(const mcbus::message& m, int* parts = nullptr) {
  std::vector<std::byte> out;
  int n = 0;
  m.for_each_body_part([&](std::span<const std::byte> b) {
    out.insert(out.end(), b.begin(), b.end());
    ++n;
  });
  if (parts) *parts = n;
  return out;
}

}  // namespace

TEST(BorrowedArray, SameBytesAsACopyInBothOrders) {
  std::vector<std::uint8_t> bytes(1001);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i * 7);
  const std::vector<std::uint32_t> words{1, 2, 0xdeadbeef};
  const std::vector<std::uint64_t> longs{5, 6};
  for (const byte_order o : {byte_order::little, byte_order::big}) {
    auto borrowed = mcbus::message::signal("/a", "org.example.I", "S", o);
    auto copied = mcbus::message::signal("/a", "org.example.I", "S", o);
    // An odd-length byte array, then values whose alignment depends on it, then wider elements.
    borrowed.append(std::uint8_t{1}, borrow(std::span<const std::uint8_t>(bytes)), std::uint16_t{2},
                    borrow(std::span<const std::uint32_t>(words)), std::string("after"),
                    borrow(std::span<const std::uint64_t>(longs)));
    copied.append(std::uint8_t{1}, bytes, std::uint16_t{2}, words, std::string("after"), longs);
    ASSERT_FALSE(borrowed.err()) << borrowed.err().message();
    auto a = borrowed.to_bytes();
    auto b = copied.to_bytes();
    ASSERT_TRUE(a && b);
    EXPECT_EQ(*a, *b);
    EXPECT_EQ(borrowed.size(), copied.size());
    EXPECT_EQ(borrowed.body_size(), copied.body_bytes().size());
    EXPECT_EQ(body_by_parts(borrowed), body_by_parts(copied));

    const auto flat = borrowed.body_bytes();
    EXPECT_TRUE(std::equal(flat.begin(), flat.end(), copied.body_bytes().begin(), copied.body_bytes().end()));
    auto parsed = mcbus::message_view::parse(*a);
    ASSERT_TRUE(parsed) << parsed.error().message();
    auto view = borrowed.view();
    ASSERT_TRUE(view);
    auto values = view->read<std::uint8_t, std::vector<std::uint8_t>, std::uint16_t, std::vector<std::uint32_t>,
                             std::string, std::vector<std::uint64_t>>();
    ASSERT_TRUE(values) << values.error().message();
    EXPECT_EQ(std::get<1>(*values), bytes);
    EXPECT_EQ(std::get<3>(*values), words);
    EXPECT_EQ(std::get<5>(*values), longs);
  }
}

TEST(BorrowedArray, PartsPointIntoTheCallersMemory) {
  const std::vector<std::uint8_t> bytes(4096, 0x5a);
  const std::vector<std::uint32_t> words{1, 2, 3};
  for (const byte_order o : {byte_order::little, byte_order::big}) {
    auto m = mcbus::message::signal("/a", "org.example.I", "S", o);
    m.append(borrow(std::span<const std::uint8_t>(bytes)), borrow(std::span<const std::uint32_t>(words)));
    ASSERT_FALSE(m.seal());
    bool saw_bytes = false, saw_words = false;
    m.for_each_body_part([&](std::span<const std::byte> b) {
      saw_bytes |= b.data() == reinterpret_cast<const std::byte*>(bytes.data());
      saw_words |= b.data() == reinterpret_cast<const std::byte*>(words.data());
    });
    EXPECT_TRUE(saw_bytes);  // bytes have no byte order
    // Wider numbers are used in place only in the CPU's own byte order; otherwise they are swapped
    // into the message.
    EXPECT_EQ(saw_words, o == mcbus::native_byte_order);
  }
}

// Inside containers: the lengths of the arrays around a borrowed one count its bytes.
TEST(BorrowedArray, NestedInArraysAndStructs) {
  const std::vector<std::uint32_t> a{1, 2, 3}, b{4};
  using borrowed_entry = std::tuple<std::uint8_t, mcbus::borrowed_array<std::uint32_t>>;
  using copied_entry = std::tuple<std::uint8_t, std::vector<std::uint32_t>>;
  for (const byte_order o : {byte_order::little, byte_order::big}) {
    auto borrowed = mcbus::message::signal("/a", "org.example.I", "S", o);
    auto copied = mcbus::message::signal("/a", "org.example.I", "S", o);
    borrowed.append(std::vector<borrowed_entry>{{7, borrow(std::span<const std::uint32_t>(a))},
                                                {8, borrow(std::span<const std::uint32_t>(b))}},
                    std::uint8_t{9});
    copied.append(std::vector<copied_entry>{{7, a}, {8, b}}, std::uint8_t{9});
    EXPECT_EQ(mcbus::signature_of<std::vector<borrowed_entry>>, "a(yau)");
    auto x = borrowed.to_bytes();
    auto y = copied.to_bytes();
    ASSERT_TRUE(x && y);
    EXPECT_EQ(*x, *y);
  }
}

// The body can grow after a borrowed array, and body_bytes() follows.
TEST(BorrowedArray, AppendingAfterwardsRefreshesTheFlatBody) {
  const std::vector<std::uint8_t> bytes{1, 2, 3};
  auto m = mcbus::message::signal("/a", "org.example.I", "S");
  m.append(borrow(std::span<const std::uint8_t>(bytes)));
  const std::size_t first = m.body_bytes().size();
  m.append(std::uint32_t{7});
  EXPECT_EQ(m.body_bytes().size(), first + 1 + 4);  // padding to 4, then the u32
  auto v = m.view();
  ASSERT_TRUE(v);
  auto values = v->read<std::vector<std::uint8_t>, std::uint32_t>();
  ASSERT_TRUE(values);
  EXPECT_EQ(std::get<0>(*values), bytes);
  EXPECT_EQ(std::get<1>(*values), 7u);
}
