// Regression (found by fuzz_signature): value::array() validated its element type on its own, and
// a dict entry {..} is a complete type only inside an array, so no a{..} value could be built.
#include <mcbus/wire/value.hpp>
#include <mcbus/wire/writer.hpp>

#include <gtest/gtest.h>

TEST(RegressionValueArrayOfDictEntries, DictArrayCanBeBuiltAndRoundTrips) {
  auto entry = mcbus::value::dict_entry(mcbus::value::string("k"), mcbus::value::variant(mcbus::value::uint32(7)));
  ASSERT_TRUE(entry);
  auto dict = mcbus::value::array("{sv}", {*entry});
  ASSERT_TRUE(dict) << dict.error().message();
  EXPECT_EQ(dict->type(), "a{sv}");

  mcbus::detail::byte_buffer buf;
  mcbus::writer w(buf, mcbus::byte_order::big);
  dict->write(w);
  ASSERT_FALSE(w.err()) << w.err().message();
  mcbus::reader r(buf.bytes(), mcbus::byte_order::big);
  EXPECT_EQ(mcbus::value::read(r, "a{sv}"), *dict);
  EXPECT_FALSE(r.err());
}

TEST(RegressionValueArrayOfDictEntries, StillRefusesWhatIsNotAnElementType) {
  EXPECT_FALSE(mcbus::value::array("{vs}", {}));  // key not basic
  EXPECT_FALSE(mcbus::value::array("ii", {}));    // two types
  EXPECT_FALSE(mcbus::value::array("", {}));
  EXPECT_EQ(mcbus::value::array(std::string(255, 'y'), {}).error().code(), mcbus::errc::signature_too_long);
}
