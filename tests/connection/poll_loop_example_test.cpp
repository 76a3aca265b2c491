// Runs the built examples/poll-loop against the private bus: lines on its standard input become
// Said signals on the bus, Said signals from others are printed, and end of input ends it cleanly.
// CMake passes the program's path as MCBUS_POLL_LOOP_BIN when the examples are built.
#include <mcbus/connection.hpp>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fixture.hpp"

extern char** environ;

using namespace mcbus;
using mcbus_test::bus_test;

namespace {

using clock = std::chrono::steady_clock;

#ifdef MCBUS_POLL_LOOP_BIN
constexpr const char* poll_loop_bin = MCBUS_POLL_LOOP_BIN;
#else
constexpr const char* poll_loop_bin = nullptr;
#endif

int ms_until(clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(left);
}

// The example as a child with its standard input and output on pipes. Whatever happens in the
// test, the child is killed and reaped when this object dies.
class example_process {
 public:
  bool start(const std::string& program, const std::vector<std::string>& args, const std::string& transport) {
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0) return false;
    if (::pipe2(out, O_CLOEXEC) != 0) {
      ::close(in[0]);
      ::close(in[1]);
      return false;
    }
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
      if (!std::string_view(*e).starts_with("MCBUS_TRANSPORT=")) env.emplace_back(*e);
    }
    env.push_back("MCBUS_TRANSPORT=" + transport);
    std::vector<char*> envp, argv{const_cast<char*>(program.c_str())};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (std::string& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, out[1], 2);  // its complaints end up in the test's output
    const int rc = posix_spawn(&pid_, program.c_str(), &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    ::close(in[0]);
    ::close(out[1]);
    stdin_ = in[1];
    stdout_ = out[0];
    if (rc != 0) pid_ = -1;
    return rc == 0;
  }

  ~example_process() {
    close_stdin();
    if (stdout_ >= 0) ::close(stdout_);
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  pid_t pid() const { return pid_; }

  bool write_line(std::string_view line) {
    const std::string text = std::string(line) + "\n";
    return ::write(stdin_, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  }
  void close_stdin() {
    if (stdin_ >= 0) ::close(std::exchange(stdin_, -1));
  }

  // Reads its output until `want` appears in it, the output ends, or the deadline passes.
  bool read_until(std::string_view want, clock::time_point deadline) {
    while (output_.find(want) == std::string::npos) {
      if (!read_some(deadline)) return output_.find(want) != std::string::npos;
    }
    return true;
  }

  // Reads to the end of its output and reaps it; nullopt if it was still running at the deadline.
  std::optional<int> wait(clock::time_point deadline) {
    while (read_some(deadline)) {
    }
    if (!eof_) return std::nullopt;
    // Its output closes as it exits; the pidfd bounds the last moment in between.
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    if (pidfd >= 0) {
      pollfd p{pidfd, POLLIN, 0};
      const int ready = ::poll(&p, 1, ms_until(deadline));
      ::close(pidfd);
      if (ready != 1) return std::nullopt;
    }
    int status = 0;
    if (::waitpid(pid_, &status, 0) != pid_) return std::nullopt;
    pid_ = -1;
    return status;
  }

  const std::string& output() const { return output_; }

 private:
  bool read_some(clock::time_point deadline) {
    if (eof_) return false;
    pollfd p{stdout_, POLLIN, 0};
    if (::poll(&p, 1, ms_until(deadline)) != 1) return false;
    char buf[4096];
    const ssize_t n = ::read(stdout_, buf, sizeof(buf));
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    output_.append(buf, static_cast<std::size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int stdin_ = -1;
  int stdout_ = -1;
  bool eof_ = false;
  std::string output_;
};

// Whether process `pid` holds an io_uring instance: tells which transport the example picked.
bool has_io_uring_fd(pid_t pid) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    if (std::filesystem::read_symlink(e.path(), ec).string() == "anon_inode:[io_uring]") return true;
  }
  return false;
}

class PollLoopExample : public bus_test {};
MCBUS_ALL_BUSES_AND_TRANSPORTS(PollLoopExample);

TEST_P(PollLoopExample, ChatsOverTheBusAndEndsWithItsInput) {
  if (!poll_loop_bin) GTEST_SKIP() << "the examples are not built (MCBUS_BUILD_EXAMPLES=OFF)";
  const bool uring = std::get<1>(GetParam()) == transport_choice::uring;
  MCBUS_TEST_CONNECT(c);
  struct said {
    std::string sender, text;
  };
  std::vector<said> heard;
  auto sub = c.subscribe("type='signal',interface='org.mcbus.Chat1',member='Said'", [&](const message_view& m) {
    auto text = m.read_first<std::string_view>();
    heard.push_back({std::string(m.header().sender), text ? std::string(*text) : "(unreadable)"});
  });
  ASSERT_TRUE(sub) << sub.error().message();

  example_process example;
  ASSERT_TRUE(example.start(poll_loop_bin, {"--address=" + bus_->address()}, uring ? "uring" : "poll"))
      << poll_loop_bin << ": " << std::strerror(errno);
  const auto deadline = clock::now() + std::chrono::seconds(30);

  // A line typed becomes a signal. The example subscribes before it reads any input, so once its
  // signal is here its own match rule is in place too.
  ASSERT_TRUE(example.write_line("hello from stdin"));
  std::string example_name;
  const auto from_example = [&] {
    for (const said& s : heard) {
      if (s.text == "hello from stdin") example_name = s.sender;
    }
    return !example_name.empty();
  };
  ASSERT_FALSE(c.run_until(from_example, std::chrono::seconds(20)))
      << "no signal from the example; it printed: " << example.output();
  EXPECT_NE(example_name, c.unique_name());
  EXPECT_EQ(has_io_uring_fd(example.pid()), uring) << "the example did not use the transport MCBUS_TRANSPORT chose";

  // A signal from someone else is printed as "SENDER said: TEXT".
  message m = message::signal("/org/mcbus/Chat", "org.mcbus.Chat1", "Said");
  m.append(std::string_view("hello from the test"));
  ASSERT_TRUE(c.emit(std::move(m)));
  const std::string expected = c.unique_name() + " said: hello from the test\n";
  EXPECT_TRUE(example.read_until(expected, deadline)) << "it printed: " << example.output();

  // End of input ends it, with success.
  example.close_stdin();
  const std::optional<int> status = example.wait(deadline);
  ASSERT_TRUE(status.has_value()) << "still running 30 s after its input ended; it printed: " << example.output();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
      << "wait status " << *status << "; it printed: " << example.output();
  EXPECT_EQ(example.output().find("poll-loop:"), std::string::npos) << "it complained: " << example.output();
}

}  // namespace
