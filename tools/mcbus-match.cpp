// mcbus-match: does a match rule (or several, OR'ed) match raw D-Bus messages?
//
//   mcbus-match [--kernel|--vm] [-e RULE]... [RULE] [FILE...]
//   mcbus-match --bpf [-e RULE]... [RULE]
//
// Each FILE holds one message as it travels on the wire; with no FILE, stdin does. For each one it
// prints FILE<TAB>match or FILE<TAB>nomatch. By default the rules are judged exactly, as
// dbus-daemon judges them; --vm runs the compiled BPF filter in mcbus's interpreter, and --kernel
// attaches it to a real AF_UNIX SOCK_SEQPACKET pair and reports whether the message got through.
// Exit status: 0 done, 1 a message could not be read or judged, 2 usage error or invalid rule.
#include <mcbus/match.hpp>
#include <mcbus/wire.hpp>

#include <fmt/format.h>

#include <linux/filter.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr int exit_ok = 0;
constexpr int exit_failed = 1;
constexpr int exit_usage = 2;

constexpr std::string_view usage_text = R"(usage: mcbus-match [--kernel|--vm] [-e RULE]... [RULE] [FILE...]
       mcbus-match --bpf [-e RULE]... [RULE]

Judges raw D-Bus messages against match rules. Without -e, the first argument is the
rule; with -e (which may repeat; the rules are OR'ed), every argument is a FILE. Each
FILE holds one message; with none, stdin does. Prints FILE<TAB>match or
FILE<TAB>nomatch for each ("-" for stdin).

modes:
  (default)            judge exactly, as dbus-daemon does
  --vm                 compile the rules to a classic BPF filter; run it in mcbus's
                       interpreter
  --kernel             compile the rules; attach the filter to one end of a socket pair
                       (SO_ATTACH_FILTER), send the message through, report whether it
                       arrived
  --bpf                print the compiled filter, one instruction per line, as
                       `tcpdump -d` does, and exit

options:
  -e RULE              a rule (repeatable)
  --receiver NAME      judge for this connection's unique name (messages addressed to it
                       need no eavesdrop='true')
  --owner NAME=UNIQUE  UNIQUE owns the well-known NAME (repeatable): for sender= and
                       destination= keys
  --owners-complete    the --owner list is every owner there is (tighter filters)
  --spec-syntax        read backslashes as the D-Bus specification does rather than as
                       dbus-daemon 1.14 does ("\," is a backslash, then a separator)
  --optmem BYTES       the kernel budget for the filter (net.core.optmem_max); default:
                       read /proc/sys/net/core/optmem_max
  -h, --help           show this help

exit status: 0 done, 1 a message could not be read or judged, 2 usage error or invalid rule
)";

enum class mode { exact, vm, kernel, listing };

struct options {
  mode how = mode::exact;
  std::vector<std::string> rule_texts;
  std::vector<std::string> files;
  std::string receiver;
  std::vector<std::pair<std::string, std::string>> owners;
  bool owners_complete = false;
  mcbus::match_syntax syntax = mcbus::match_syntax::dbus_daemon;
  std::size_t optmem = 0;
};

int usage_error(std::string_view what) {
  fmt::print(stderr, "mcbus-match: {}\nTry 'mcbus-match --help'.\n", what);
  return exit_usage;
}

std::optional<int> parse_args(int argc, char** argv, options& o) {
  std::vector<std::string> positional;
  bool had_e = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&](std::string_view name) -> std::optional<std::string> {
      if (i + 1 >= argc) return std::nullopt;
      (void)name;
      return std::string(argv[++i]);
    };
    if (a == "-h" || a == "--help") {
      fmt::print("{}", usage_text);
      return exit_ok;
    } else if (a == "--vm") {
      o.how = mode::vm;
    } else if (a == "--kernel") {
      o.how = mode::kernel;
    } else if (a == "--bpf") {
      o.how = mode::listing;
    } else if (a == "-e") {
      auto v = value(a);
      if (!v) return usage_error("-e needs a rule");
      o.rule_texts.push_back(*v);
      had_e = true;
    } else if (a == "--receiver") {
      auto v = value(a);
      if (!v) return usage_error("--receiver needs a unique name");
      o.receiver = *v;
    } else if (a == "--owner") {
      auto v = value(a);
      const std::size_t eq = v ? v->find('=') : std::string::npos;
      if (eq == std::string::npos) return usage_error("--owner needs NAME=UNIQUE");
      o.owners.emplace_back(v->substr(0, eq), v->substr(eq + 1));
    } else if (a == "--owners-complete") {
      o.owners_complete = true;
    } else if (a == "--spec-syntax") {
      o.syntax = mcbus::match_syntax::specification;
    } else if (a == "--optmem") {
      auto v = value(a);
      if (!v || v->empty() || v->find_first_not_of("0123456789") != std::string::npos) {
        return usage_error("--optmem needs a number of bytes");
      }
      o.optmem = std::stoul(*v);
    } else if (a.size() > 1 && a[0] == '-' && a != "-") {
      return usage_error(fmt::format("unknown option '{}'", a));
    } else {
      positional.emplace_back(a);
    }
  }
  std::size_t first_file = 0;
  if (!had_e) {
    if (positional.empty()) return usage_error("no rule given");
    o.rule_texts.push_back(positional[0]);
    first_file = 1;
  }
  o.files.assign(positional.begin() + static_cast<std::ptrdiff_t>(first_file), positional.end());
  if (o.how == mode::listing && !o.files.empty()) return usage_error("--bpf takes no FILE");
  return std::nullopt;
}

bool read_all(int fd, std::vector<std::byte>& out) {
  std::byte buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0) return true;
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    out.insert(out.end(), buf, buf + n);
  }
}

std::optional<std::vector<std::byte>> read_message(const std::string& file) {
  std::vector<std::byte> bytes;
  if (file == "-") {
    if (!read_all(STDIN_FILENO, bytes)) return std::nullopt;
    return bytes;
  }
  std::FILE* f = std::fopen(file.c_str(), "rb");
  if (!f) return std::nullopt;
  const bool ok = read_all(::fileno(f), bytes);
  std::fclose(f);
  if (!ok) return std::nullopt;
  return bytes;
}

std::size_t optmem_max() {
  std::FILE* f = std::fopen("/proc/sys/net/core/optmem_max", "r");
  if (!f) return mcbus::bpf::optmem_max_default;
  unsigned long v = 0;
  const int got = std::fscanf(f, "%lu", &v);
  std::fclose(f);
  return got == 1 ? v : mcbus::bpf::optmem_max_default;
}

// A socket pair whose receiving end carries the filter.
class kernel_pair {
 public:
  ~kernel_pair() {
    if (tx_ >= 0) ::close(tx_);
    if (rx_ >= 0) ::close(rx_);
  }
  std::string open(std::span<const mcbus::bpf_insn> prog) {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) {
      return fmt::format("socketpair: {}", std::strerror(errno));
    }
    tx_ = fds[0];
    rx_ = fds[1];
    int size = 128 << 20;
    (void)::setsockopt(tx_, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    (void)::setsockopt(rx_, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    sock_fprog fprog{};
    fprog.len = static_cast<unsigned short>(prog.size());
    fprog.filter = reinterpret_cast<sock_filter*>(const_cast<mcbus::bpf_insn*>(prog.data()));
    if (::setsockopt(rx_, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog) != 0) {
      return fmt::format("SO_ATTACH_FILTER: {}", std::strerror(errno));
    }
    return {};
  }
  // Whether the message arrived, or an error.
  std::optional<bool> pass(std::span<const std::byte> msg, std::string& err) {
    if (::send(tx_, msg.data(), msg.size(), MSG_DONTWAIT | MSG_NOSIGNAL) != static_cast<ssize_t>(msg.size())) {
      err = fmt::format("send: {}", std::strerror(errno));
      return std::nullopt;
    }
    buf_.resize(msg.size() + 1);
    const ssize_t n = ::recv(rx_, buf_.data(), buf_.size(), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
    if (n < 0) {
      err = fmt::format("recv: {}", std::strerror(errno));
      return std::nullopt;
    }
    return true;
  }

 private:
  int tx_ = -1;
  int rx_ = -1;
  std::vector<std::byte> buf_;
};

}  // namespace

int main(int argc, char** argv) {
  options o;
  if (auto stop = parse_args(argc, argv, o)) return *stop;

  std::vector<mcbus::match_rule> rules;
  for (const std::string& text : o.rule_texts) {
    auto r = mcbus::match_rule::parse(text, {.syntax = o.syntax});
    if (!r) {
      fmt::print(stderr, "mcbus-match: invalid rule \"{}\": {}\n", text, mcbus::match_rule_error_text(text, r.error()));
      return exit_usage;
    }
    rules.push_back(*r);
  }
  std::vector<mcbus::name_owner> owners;
  for (const auto& [name, owner] : o.owners) owners.push_back({name, owner});
  const mcbus::match_context ctx{o.receiver, mcbus::name_lookup(owners)};

  std::optional<mcbus::bpf_program> prog;
  kernel_pair pair;
  if (o.how != mode::exact) {
    const std::size_t budget = o.optmem ? o.optmem : optmem_max();
    auto p = mcbus::compile_bpf(rules, {.receiver = o.receiver,
                                        .owners = owners,
                                        .owners_complete = o.owners_complete,
                                        .max_kernel_bytes = budget > 512 ? budget - 512 : budget});
    if (!p) {
      fmt::print(stderr, "mcbus-match: cannot compile: {}\n", p.error().message());
      return exit_usage;
    }
    prog = std::move(*p);
    if (o.how == mode::listing) {
      fmt::print("{}", mcbus::bpf_to_string(prog->insns()));
      return exit_ok;
    }
    if (o.how == mode::kernel) {
      if (std::string e = pair.open(prog->insns()); !e.empty()) {
        fmt::print(stderr, "mcbus-match: {}\n", e);
        return exit_failed;
      }
    }
  }

  if (o.files.empty()) o.files.push_back("-");
  int status = exit_ok;
  for (const std::string& file : o.files) {
    auto bytes = read_message(file);
    if (!bytes) {
      fmt::print(stderr, "mcbus-match: {}: {}\n", file, std::strerror(errno));
      status = exit_failed;
      continue;
    }
    bool verdict = false;
    if (o.how == mode::exact) {
      auto view = mcbus::message_view::parse(*bytes);
      if (!view) {
        fmt::print(stderr, "mcbus-match: {}: not a valid message: {}\n", file, view.error().message());
        status = exit_failed;
        continue;
      }
      for (const mcbus::match_rule& r : rules) verdict = verdict || r.matches(*view, ctx);
    } else if (o.how == mode::vm) {
      verdict = mcbus::run_bpf(prog->insns(), *bytes) != 0;
    } else {
      std::string err;
      auto got = pair.pass(*bytes, err);
      if (!got) {
        fmt::print(stderr, "mcbus-match: {}: {}\n", file, err);
        status = exit_failed;
        continue;
      }
      verdict = *got;
    }
    fmt::print("{}\t{}\n", file, verdict ? "match" : "nomatch");
  }
  return status;
}
