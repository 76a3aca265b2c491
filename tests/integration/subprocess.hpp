// Child processes for the integration tests: every child runs in a process group of its own, its
// output is read through pipes, every wait has a deadline, and the whole group is killed and reaped
// when the child object dies. The test program is a child subreaper (see integration.cpp), so
// grandchildren that outlive their parent come back to it and are reaped too, and every child dies
// with the program if the program dies first: nothing is left behind.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "test_bus.hpp"  // program_exists()

extern char** environ;

namespace mcbus_integration {

inline constexpr const char* setpriv_bin = "/usr/bin/setpriv";

using clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// How a child is started.
struct spawn_options {
  std::vector<std::string> env;                    // "NAME=VALUE", replacing inherited values
  std::vector<std::pair<int, std::string>> files;  // fd number in the child -> file opened read-only
  std::string stdin_path = "/dev/null";
};

// How a child ended.
struct exit_status {
  int code = -1;   // exit code, or -1 if it did not exit normally
  int signal = 0;  // the signal that killed it, if one did
  bool timed_out = false;

  bool exited(int c) const { return !timed_out && signal == 0 && code == c; }
  std::string describe() const {
    if (timed_out) return "timed out (killed)";
    if (signal) return "killed by signal " + std::to_string(signal) + " (" + strsignal(signal) + ")";
    return "exit status " + std::to_string(code);
  }
};

// What a finished command printed, and how it ended.
struct run_result {
  exit_status status;
  std::string out;
  std::string err;
};

namespace detail {

inline exit_status decode(int wstatus) {
  exit_status s;
  if (WIFEXITED(wstatus)) s.code = WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) s.signal = WTERMSIG(wstatus);
  return s;
}

inline int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

inline int ms_until(clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(left > 60000 ? 60000 : left);
}

// The environment with `overrides` replacing the inherited values of the same names.
inline std::vector<std::string> environment(const std::vector<std::string>& overrides) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string_view entry(*e);
    const std::string_view name = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const std::string& o : overrides) replaced |= o.compare(0, name.size() + 1, std::string(name) + "=") == 0;
    if (!replaced) env.emplace_back(entry);
  }
  env.insert(env.end(), overrides.begin(), overrides.end());
  return env;
}

}  // namespace detail

// A running child with its stdout and stderr collected as they come.
class child {
 public:
  // Starts argv[0] (a full path). Returns null and says why in `why` if it cannot be started.
  static std::unique_ptr<child> start(const std::vector<std::string>& argv, const spawn_options& opts,
                                      std::string& why) {
    // Checked here because behind setpriv a missing program would be setpriv's failure.
    if (!mcbus_test::program_exists(argv[0].c_str())) {
      why = "cannot run " + argv[0] + ": not an executable file";
      return nullptr;
    }
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0) {
      why = std::string("pipe2: ") + std::strerror(errno);
      return nullptr;
    }
    if (::pipe2(err, O_CLOEXEC) != 0) {
      why = std::string("pipe2: ") + std::strerror(errno);
      ::close(out[0]);
      ::close(out[1]);
      return nullptr;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, opts.stdin_path.c_str(), O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    for (const auto& [fd, path] : opts.files) posix_spawn_file_actions_addopen(&fa, fd, path.c_str(), O_RDONLY, 0);

    // A group of its own, so that the whole tree can be signalled; default signal handling and an
    // empty mask, whatever this program has set for itself.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

    // The child dies with this program (PR_SET_PDEATHSIG, set by util-linux's setpriv before it
    // runs the command), so that nothing outlives a test program that crashed or was killed.
    // posix_spawn() rather than fork(): forking a sanitizer-sized process costs ~10 times more.
    std::vector<std::string> command;
    if (mcbus_test::program_exists(setpriv_bin)) command = {setpriv_bin, "--pdeathsig", "KILL", "--"};
    command.insert(command.end(), argv.begin(), argv.end());
    std::vector<std::string> env = detail::environment(opts.env);
    std::vector<char*> envp, args;
    for (std::string& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    for (std::string& a : command) args.push_back(a.data());
    args.push_back(nullptr);

    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, args[0], &fa, &attr, args.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    ::close(out[1]);
    ::close(err[1]);
    if (rc != 0) {
      why = "cannot run " + argv[0] + ": " + std::strerror(rc);
      ::close(out[0]);
      ::close(err[0]);
      return nullptr;
    }
    auto c = std::unique_ptr<child>(new child());
    c->pid_ = pid;
    c->out_fd_ = out[0];
    c->err_fd_ = err[0];
    c->pidfd_ = detail::pidfd_open(pid);  // -1 on old kernels: waits then poll waitpid instead
    return c;
  }

  child(const child&) = delete;
  child& operator=(const child&) = delete;
  ~child() { kill_group(); }

  pid_t pid() const noexcept { return pid_; }
  const std::string& out() const noexcept { return out_; }
  const std::string& err() const noexcept { return err_; }
  bool running() const noexcept { return !done_; }

  // Reads output until `pred(out, err)` holds, the child exits, or the deadline passes.
  bool wait_for(const std::function<bool(const std::string&, const std::string&)>& pred, clock::duration limit) {
    const auto deadline = clock::now() + limit;
    while (true) {
      if (pred(out_, err_)) return true;
      if ((out_fd_ < 0 && err_fd_ < 0 && done_) || clock::now() >= deadline) return false;
      pump(deadline);
    }
  }
  bool wait_for_output(std::string_view text, clock::duration limit) {
    return wait_for([&](const std::string& o, const std::string&) { return o.find(text) != std::string::npos; }, limit);
  }

  // Waits for the child to end and for its output to close; kills the group at the deadline.
  exit_status wait(clock::duration limit) {
    const auto deadline = clock::now() + limit;
    while (!done_ || out_fd_ >= 0 || err_fd_ >= 0) {
      if (clock::now() >= deadline) {
        kill_group();
        status_.timed_out = true;
        return status_;
      }
      pump(deadline);
    }
    reap_group(deadline);
    return status_;
  }

  // Sends `sig` to the child alone (not its group), then waits as wait() does.
  exit_status terminate(int sig, clock::duration limit) {
    if (!done_) ::kill(pid_, sig);
    return wait(limit);
  }

 private:
  child() = default;

  // One poll over the pipes and the child's exit, up to the deadline.
  void pump(clock::time_point deadline) {
    pollfd fds[3] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}, {done_ ? -1 : pidfd_, POLLIN, 0}};
    int timeout = detail::ms_until(deadline);
    if (!done_ && pidfd_ < 0 && timeout > 10) timeout = 10;  // no pidfd: look at waitpid now and then
    const int n = ::poll(fds, 3, timeout);
    if (n < 0 && errno != EINTR) return;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[65536];
      const ssize_t got = ::read(fds[i].fd, buf, sizeof(buf));
      if (got > 0) {
        (i == 0 ? out_ : err_).append(buf, static_cast<std::size_t>(got));
      } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        ::close(fds[i].fd);
        (i == 0 ? out_fd_ : err_fd_) = -1;
      }
    }
    if (!done_) {
      int ws = 0;
      const pid_t r = ::waitpid(pid_, &ws, WNOHANG);
      if (r == pid_) {
        status_ = detail::decode(ws);
        done_ = true;
      }
    }
  }

  // Members of the group that outlived the leader were reparented to this program (a subreaper);
  // kill and reap them so that none is left behind.
  void reap_group(clock::time_point deadline) {
    if (::kill(-pid_, 0) != 0) return;
    ::kill(-pid_, SIGKILL);
    while (clock::now() < deadline) {
      int ws = 0;
      const pid_t r = ::waitpid(-pid_, &ws, WNOHANG);
      if (r < 0) return;                             // ECHILD: none left in the group
      if (r == 0) std::this_thread::sleep_for(2ms);  // SIGKILL takes a moment to land
    }
  }

  void kill_group() {
    if (pid_ <= 0) return;
    ::kill(-pid_, SIGKILL);
    if (!done_) {
      int ws = 0;
      while (::waitpid(pid_, &ws, 0) < 0 && errno == EINTR) {
      }
      if (status_.code == -1 && status_.signal == 0) status_ = detail::decode(ws);
      done_ = true;
    }
    reap_group(clock::now() + 5s);
    for (int* fd : {&out_fd_, &err_fd_, &pidfd_}) {
      if (*fd >= 0) ::close(*fd);
      *fd = -1;
    }
    pid_ = -1;
  }

  pid_t pid_ = -1;
  int out_fd_ = -1, err_fd_ = -1, pidfd_ = -1;
  bool done_ = false;
  exit_status status_;
  std::string out_, err_;
};

// Runs a command to its end (killed at the deadline) and returns what it printed.
inline run_result run(const std::vector<std::string>& argv, const spawn_options& opts = {},
                      clock::duration limit = 20s) {
  run_result r;
  std::string why;
  auto c = child::start(argv, opts, why);
  if (!c) {
    r.err = why;
    return r;
  }
  r.status = c->wait(limit);
  r.out = c->out();
  r.err = c->err();
  return r;
}

// Runs independent commands, a few at a time (they mostly wait on the bus, not on a CPU).
inline std::vector<run_result> run_all(const std::vector<std::vector<std::string>>& commands,
                                       const spawn_options& opts = {}, unsigned parallel = 4) {
  std::vector<run_result> results(commands.size());
  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    for (std::size_t i; (i = next.fetch_add(1)) < commands.size();) results[i] = run(commands[i], opts);
  };
  std::vector<std::thread> threads;
  for (unsigned k = 1; k < parallel && k < commands.size(); ++k) threads.emplace_back(worker);
  worker();
  for (std::thread& t : threads) t.join();
  return results;
}

}  // namespace mcbus_integration
