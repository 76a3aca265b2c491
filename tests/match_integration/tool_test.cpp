// mcbus-match as a user runs it: rules on the command line, messages in files or on stdin, the
// three ways of judging, the program listing and the exit status for a bad rule.
#include <mcbus/wire.hpp>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace {

#ifdef MCBUS_MATCH_TOOL
struct output {
  int status = -1;
  std::string text;
};

output run(const std::string& args) {
  output o;
  const std::string cmd = std::string(MCBUS_MATCH_TOOL) + " " + args + " 2>&1";
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return o;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) o.text.append(buf, n);
  const int rc = ::pclose(p);
  o.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  return o;
}

class Tool : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("mcbus-match-tool-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    write("le.msg", mcbus::byte_order::little, "on");
    write("be.msg", mcbus::byte_order::big, "off");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write(const char* name, mcbus::byte_order order, const char* arg) {
    auto m = mcbus::message::signal("/org/example/foo", "org.example.Foo", "Changed", order);
    m.set_sender(":1.7");
    m.append(std::string(arg));
    auto bytes = m.to_bytes().value();
    std::ofstream(dir_ / name, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  std::string path(const char* name) { return (dir_ / name).string(); }
  std::filesystem::path dir_;
};

TEST_F(Tool, JudgesFilesInEveryMode) {
  for (const char* mode : {"", "--vm", "--kernel"}) {
    const auto o = run(std::string(mode) + " \"type='signal',arg0='on'\" " + path("le.msg") + " " + path("be.msg"));
    EXPECT_EQ(o.status, 0) << mode << ": " << o.text;
    EXPECT_EQ(o.text, path("le.msg") + "\tmatch\n" + path("be.msg") + "\tnomatch\n") << mode;
  }
}

TEST_F(Tool, RulesOrAndStdin) {
  const auto o = run("-e \"arg0='nope'\" -e \"arg0='off'\" < " + path("be.msg"));
  EXPECT_EQ(o.status, 0);
  EXPECT_EQ(o.text, "-\tmatch\n");
}

TEST_F(Tool, ListsTheProgramLikeTcpdump) {
  const auto o = run("--bpf \"member='Changed'\"");
  EXPECT_EQ(o.status, 0);
  EXPECT_EQ(o.text.rfind("(000) ", 0), 0u) << o.text;
  EXPECT_NE(o.text.find("ret      #0\n"), std::string::npos);
}

// The reason names the key and the byte: the rule itself is echoed too, so look past it.
TEST_F(Tool, InvalidRuleExitsTwo) {
  const auto o = run("\"member='A',colour='red'\" " + path("le.msg"));
  EXPECT_EQ(o.status, 2);
  EXPECT_NE(o.text.find("key 'colour': invalid match rule at byte 11 (unknown key)"), std::string::npos) << o.text;
}
#else
TEST(Tool, NotBuilt) { GTEST_SKIP() << "mcbus-match is not built in this configuration (MCBUS_BUILD_TOOLS)"; }
#endif

}  // namespace
