// mcbus-msg, run as the real binary: verdicts on the conformance vectors, dump and convert output,
// exit codes, and no crash on any input of the fuzz corpus.
#include <mcbus/wire/message.hpp>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "test_support.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;

struct outcome {
  int status = -1;  // the exit code; -1 if the tool died from a signal
  int signal = 0;
  std::string out;
  std::string err;
};

// A scratch file that removes itself.
struct temp_file {
  std::string path;
  temp_file() {
    std::string tmpl = (fs::temp_directory_path() / "mcbus-msg-test.XXXXXX").string();
    const int fd = ::mkstemp(tmpl.data());
    EXPECT_GE(fd, 0);
    ::close(fd);
    path = tmpl;
  }
  ~temp_file() { ::unlink(path.c_str()); }
};

// Runs mcbus-msg with args; stdin comes from stdin_path (or /dev/null).
outcome run(const std::vector<std::string>& args, const std::string& stdin_path = "/dev/null") {
  temp_file out, err;
  std::vector<std::string> argv_s{MCBUS_MSG_BIN};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, stdin_path.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out.path.c_str(), O_WRONLY | O_TRUNC, 0);
  posix_spawn_file_actions_addopen(&fa, 2, err.path.c_str(), O_WRONLY | O_TRUNC, 0);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  outcome o;
  if (rc != 0) {
    ADD_FAILURE() << "cannot run " << MCBUS_MSG_BIN << ": " << std::strerror(rc);
    return o;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) o.status = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) o.signal = WTERMSIG(status);
  o.out = mcbus_test::read_text(out.path);
  o.err = mcbus_test::read_text(err.path);
  return o;
}

std::vector<fs::path> files_in(const fs::path& dir, const std::string& suffix = "") {
  std::vector<fs::path> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file() && (suffix.empty() || e.path().string().ends_with(suffix))) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<fs::path> invalid_vectors() {
  const fs::path c = mcbus_test::conformance_dir();
  std::vector<fs::path> all = files_in(c / "dbus-1.14.10/invalid-messages", ".message-raw");
  for (const auto& p : files_in(c / "glib-2.74.6/invalid-messages")) all.push_back(p);
  for (const auto& p : files_in(c / "systemd-252.39/fuzz-bus-message")) all.push_back(p);
  return all;
}

fs::path valid_vector(const std::string& name) {
  return mcbus_test::conformance_dir() / "dbus-1.14.10/valid-messages" / (name + ".message-raw");
}

// A line such as "invalid: what is wrong at byte N (where)"; returns N, or -1.
long reported_offset(const std::string& line) {
  static const std::regex at(" at byte ([0-9]+)");
  std::smatch m;
  return std::regex_search(line, m, at) ? std::stol(m[1]) : -1;
}

std::string hex_of_file(const fs::path& p) { return mcbus_test::to_hex(mcbus_test::read_file(p)); }

}  // namespace

TEST(McbusMsg, HelpAndUsageErrors) {
  const outcome help = run({"--help"});
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.out.find("usage: mcbus-msg"), std::string::npos);
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {},
           {"frobnicate"},
           {"convert", valid_vector("minimal").string()},
           {"convert", "--endian", "middle", valid_vector("minimal").string()},
           {"convert", "--endian"},
           {"check", "--endian=big", valid_vector("minimal").string()},
           {"check", "--bogus"},
           {"check", "a", "b"},
           {"check", "/nonexistent/mcbus/message"},
       }) {
    const outcome o = run(args);
    EXPECT_EQ(o.status, 2) << "args: " << ::testing::PrintToString(args);
    EXPECT_FALSE(o.err.empty());
  }
}

TEST(McbusMsg, ChecksValidVectors) {
  const outcome o = run({"check", valid_vector("minimal").string()});
  EXPECT_EQ(o.status, 0) << o.out << o.err;
  EXPECT_EQ(o.out.rfind("valid: method_return", 0), 0u) << o.out;

  // An fd index beyond UNIX_FDS: libdbus accepts it, mcbus only when asked to.
  const std::string fd = valid_vector("byteswap-fd-index").string();
  const outcome strict = run({"check", fd});
  EXPECT_EQ(strict.status, 1);
  EXPECT_NE(strict.out.find("unix fd index"), std::string::npos) << strict.out;
  EXPECT_EQ(run({"check", "--no-fd-check", fd}).status, 0);
}

TEST(McbusMsg, RejectsEveryInvalidVectorWithOneLineAndAnOffset) {
  const auto vectors = invalid_vectors();
  if (vectors.empty()) GTEST_SKIP() << "no conformance vectors in " << mcbus_test::conformance_dir();
  for (const fs::path& p : vectors) {
    const outcome o = run({"check", p.string()});
    EXPECT_EQ(o.status, 1) << p;
    ASSERT_FALSE(o.out.empty()) << p;
    EXPECT_EQ(o.out.find('\n'), o.out.size() - 1) << "more than one line for " << p << ": " << o.out;
    EXPECT_EQ(o.out.rfind("invalid: ", 0), 0u) << o.out;
    const long at = reported_offset(o.out);
    EXPECT_GE(at, 0) << "no offset for " << p << ": " << o.out;
    EXPECT_LE(at, static_cast<long>(fs::file_size(p))) << p;
  }
}

TEST(McbusMsg, ReadsStdinLikeAFile) {
  const std::string minimal = valid_vector("minimal").string();
  const outcome from_file = run({"dump", minimal});
  const outcome from_stdin = run({"dump"}, minimal);
  const outcome from_dash = run({"dump", "-"}, minimal);
  EXPECT_EQ(from_stdin.status, 0);
  EXPECT_EQ(from_stdin.out, from_file.out);
  EXPECT_EQ(from_dash.out, from_file.out);
}

TEST(McbusMsg, DumpShowsHeaderFieldsAndBody) {
  const outcome o = run({"dump", valid_vector("minimal").string()});
  ASSERT_EQ(o.status, 0) << o.err;
  EXPECT_NE(o.out.find("method_return serial="), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("REPLY_SERIAL:"), std::string::npos) << o.out;

  // A message with an unknown header field and a body, generated for the fuzz corpus.
  const fs::path gen = fs::path(MCBUS_SOURCE_DIR) / "tests/fuzz/corpus/message/gen-unknown-field";
  if (!fs::exists(gen)) GTEST_SKIP() << "fuzz corpus missing";
  const outcome u = run({"dump", gen.string()});
  ASSERT_EQ(u.status, 0) << u.err;
  EXPECT_NE(u.out.find("field 42 (unknown) as: [\"x\"]"), std::string::npos) << u.out;
  EXPECT_NE(u.out.find("[0] i: 1"), std::string::npos) << u.out;

  const outcome bad = run({"dump", invalid_vectors().at(0).string()});
  EXPECT_EQ(bad.status, 1);
}

// convert twice gives back the original bytes; converting to the same order changes nothing.
TEST(McbusMsg, ConvertRoundTripsExactly) {
  temp_file once, twice, same;
  const std::string fd = valid_vector("byteswap-fd-index").string();  // big-endian
  outcome o = run({"convert", "--endian", "little", "--no-fd-check", fd});
  ASSERT_EQ(o.status, 0) << o.err;
  {
    std::FILE* f = std::fopen(once.path.c_str(), "wb");
    std::fwrite(o.out.data(), 1, o.out.size(), f);
    std::fclose(f);
  }
  EXPECT_EQ(o.out[0], 'l');
  EXPECT_EQ(o.out.size(), fs::file_size(fd));
  const outcome checked = run({"check", "--no-fd-check", once.path});
  EXPECT_EQ(checked.status, 0) << checked.out;
  EXPECT_NE(checked.out.find("order=little"), std::string::npos);

  const outcome back = run({"convert", "--endian=big", "--no-fd-check"}, once.path);
  ASSERT_EQ(back.status, 0) << back.err;
  EXPECT_EQ(mcbus_test::to_hex({reinterpret_cast<const std::byte*>(back.out.data()), back.out.size()}),
            hex_of_file(fd));

  const std::string minimal = valid_vector("minimal").string();  // little-endian
  const outcome unchanged = run({"convert", "--endian", "little", minimal});
  ASSERT_EQ(unchanged.status, 0);
  EXPECT_EQ(mcbus_test::to_hex({reinterpret_cast<const std::byte*>(unchanged.out.data()), unchanged.out.size()}),
            hex_of_file(minimal));
}

// Every input of the fuzz corpus: each command exits 0 or 1, never by a signal, and valid messages
// survive convert-and-back byte for byte.
TEST(McbusMsg, NeverCrashesOnTheFuzzCorpus) {
  const auto inputs = files_in(fs::path(MCBUS_SOURCE_DIR) / "tests/fuzz/corpus/message");
  if (inputs.empty()) GTEST_SKIP() << "fuzz corpus missing";
  int valid = 0;
  for (const fs::path& p : inputs) {
    const outcome check = run({"check", "--no-fd-check", p.string()});
    ASSERT_EQ(check.signal, 0) << p;
    ASSERT_TRUE(check.status == 0 || check.status == 1) << p << ": " << check.err;
    const outcome dump = run({"dump", "--no-fd-check", p.string()});
    ASSERT_EQ(dump.signal, 0) << p;
    EXPECT_EQ(dump.status, check.status) << p << ": " << dump.err;
    for (const char* order : {"big", "little"}) {
      const outcome conv = run({"convert", "--no-fd-check", "--endian", order, p.string()});
      ASSERT_EQ(conv.signal, 0) << p;
      EXPECT_EQ(conv.status, check.status) << p << ": " << conv.err;
      if (conv.status != 0) continue;
      temp_file t;
      std::FILE* f = std::fopen(t.path.c_str(), "wb");
      std::fwrite(conv.out.data(), 1, conv.out.size(), f);
      std::fclose(f);
      const outcome back = run({"convert", "--no-fd-check", "--endian",
                                check.out.find("order=big") != std::string::npos ? "big" : "little", t.path});
      ASSERT_EQ(back.status, 0) << p << ": " << back.err;
      EXPECT_EQ(mcbus_test::to_hex({reinterpret_cast<const std::byte*>(back.out.data()), back.out.size()}),
                hex_of_file(p))
          << p;
    }
    valid += check.status == 0;
  }
  EXPECT_GT(valid, 10) << "the corpus should hold a good number of valid messages";
}
