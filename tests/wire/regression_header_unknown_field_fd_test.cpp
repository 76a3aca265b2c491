// Regression (found by fuzz_message): an 'h' inside an unknown header field was checked against a
// UNIX_FDS count of 0, whatever the message said and whatever parse_options asked, so such a
// message was rejected. Unknown fields are ignored (and UNIX_FDS may come after them); libdbus
// accepts these messages too.
#include <mcbus/wire/message.hpp>
#include <mcbus/wire/message_tree.hpp>

#include <gtest/gtest.h>

TEST(RegressionHeaderUnknownFieldFd, FdIndexInUnknownFieldIsNotChecked) {
  auto m = mcbus::message::signal("/a", "org.example.I", "S");
  auto bytes = m.to_bytes();
  ASSERT_TRUE(bytes);
  auto view = mcbus::message_view::parse(*bytes);
  ASSERT_TRUE(view);
  auto tree = mcbus::message_tree::decode(*view);
  ASSERT_TRUE(tree);
  auto field = mcbus::value::structure({mcbus::value::byte(200), mcbus::value::variant(mcbus::value::fd_index(5))});
  ASSERT_TRUE(field);
  tree->fields.insert(tree->fields.begin(), *field);

  for (const auto order : {mcbus::byte_order::little, mcbus::byte_order::big}) {
    auto with_fd = tree->encode(order);
    ASSERT_TRUE(with_fd);
    auto parsed = mcbus::message_view::parse(*with_fd);
    ASSERT_TRUE(parsed) << parsed.error().message();
    EXPECT_EQ(parsed->header().unix_fds, 0u);
    EXPECT_EQ(parsed->member(), "S");
  }
}
