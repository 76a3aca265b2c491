// mcbus-msg: check, show and convert one raw D-Bus message.
//
//   mcbus-msg check [--no-fd-check] [FILE]
//   mcbus-msg dump [--no-fd-check] [FILE]
//   mcbus-msg convert --endian big|little [--no-fd-check] [FILE]
//
// FILE (or stdin, or "-") holds exactly one message as it travels on the wire. Exit status: 0 for a
// valid message, 1 for an invalid one (with one line saying what is wrong and at which byte), 2 for
// usage and I/O errors. docs/tools/mcbus-msg.md has examples.
#include <mcbus/fmt.hpp>
#include <mcbus/wire.hpp>
#include <mcbus/wire/message_tree.hpp>

#include <fmt/format.h>

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr int exit_ok = 0;
constexpr int exit_invalid = 1;
constexpr int exit_usage = 2;

constexpr std::string_view usage_text = R"(usage: mcbus-msg COMMAND [OPTIONS] [FILE]

Reads one raw D-Bus message from FILE, or from stdin when FILE is absent or "-".

commands:
  check                  validate the message; print "valid: ..." or one line saying
                         what is wrong and at which byte offset
  dump                   validate, then print the header, every header field (unknown
                         ones too) and every body value
  convert --endian big|little
                         validate, then write the same message in that byte order to
                         stdout: serial, flags, every header field in its order, and
                         every body value are kept exactly

options:
  --endian big|little    the byte order for convert (also --endian=big)
  --no-fd-check          accept unix fd indexes at or above the UNIX_FDS count, as
                         libdbus does (mcbus rejects them by default)
  -h, --help             show this help

exit status: 0 valid, 1 invalid message, 2 usage or I/O error
)";

struct options {
  std::string command;
  std::optional<mcbus::byte_order> endian;
  bool check_fds = true;
  std::string file;  // empty: stdin
};

int usage_error(std::string_view what) {
  fmt::print(stderr, "mcbus-msg: {}\nTry 'mcbus-msg --help'.\n", what);
  return exit_usage;
}

// Returns an exit code when the command line says to stop (help or a usage error).
std::optional<int> parse_args(int argc, char** argv, options& o) {
  bool have_file = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "-h" || a == "--help" || a == "help") {
      fmt::print("{}", usage_text);
      return exit_ok;
    }
    std::string_view endian_value;
    if (a == "--endian") {
      if (i + 1 >= argc) return usage_error("--endian needs a value: big or little");
      endian_value = argv[++i];
    } else if (a.starts_with("--endian=")) {
      endian_value = a.substr(9);
    } else if (a == "--no-fd-check") {
      o.check_fds = false;
      continue;
    } else if (a.size() > 1 && a[0] == '-') {
      return usage_error(fmt::format("unknown option '{}'", a));
    } else if (o.command.empty()) {
      o.command = a;
      continue;
    } else if (!have_file) {
      have_file = true;
      if (a != "-") o.file = a;
      continue;
    } else {
      return usage_error("only one input file is read");
    }
    if (endian_value == "big") {
      o.endian = mcbus::byte_order::big;
    } else if (endian_value == "little") {
      o.endian = mcbus::byte_order::little;
    } else {
      return usage_error(fmt::format("--endian must be big or little, not '{}'", endian_value));
    }
  }
  if (o.command.empty()) return usage_error("no command given (check, dump or convert)");
  if (o.command != "check" && o.command != "dump" && o.command != "convert") {
    return usage_error(fmt::format("unknown command '{}'", o.command));
  }
  if (o.command == "convert" && !o.endian) return usage_error("convert needs --endian big or --endian little");
  if (o.command != "convert" && o.endian) return usage_error("--endian is for convert only");
  return std::nullopt;
}

// Reads at most one byte more than the largest valid message, so that a huge input is refused
// without being read whole.
bool read_input(const options& o, std::vector<std::byte>& out) {
  std::FILE* f = o.file.empty() ? stdin : std::fopen(o.file.c_str(), "rb");
  const char* name = o.file.empty() ? "stdin" : o.file.c_str();
  if (!f) {
    fmt::print(stderr, "mcbus-msg: cannot open {}: {}\n", name, std::strerror(errno));
    return false;
  }
  const std::size_t limit = mcbus::max_message_length + 1;
  std::size_t used = 0;
  while (used < limit) {
    out.resize(std::min(limit, std::max<std::size_t>(used * 2, 64 * 1024)));
    const std::size_t n = std::fread(out.data() + used, 1, out.size() - used, f);
    used += n;
    if (n == 0) break;
  }
  out.resize(used);
  const bool failed = std::ferror(f) != 0;
  const int err = errno;
  if (f != stdin) std::fclose(f);
  if (failed) {
    fmt::print(stderr, "mcbus-msg: cannot read {}: {}\n", name, std::strerror(err));
    return false;
  }
  return true;
}

int invalid(const mcbus::error& e) {
  fmt::print("invalid: {}\n", e);
  return exit_invalid;
}

int run(const options& o) {
  std::vector<std::byte> bytes;
  if (!read_input(o, bytes)) return exit_usage;
  if (bytes.size() > mcbus::max_message_length) {
    return invalid(mcbus::error(mcbus::errc::message_too_long, mcbus::max_message_length, "input"));
  }
  mcbus::parse_options popts;
  popts.check_fd_indexes = o.check_fds;
  const auto view = mcbus::message_view::parse(bytes, popts);
  if (!view) return invalid(view.error());

  if (o.command == "check") {
    fmt::print("valid: {}\n", view->header());
    return exit_ok;
  }

  const auto tree = mcbus::message_tree::decode(*view);
  if (!tree) return invalid(tree.error());  // not expected after parse(); said rather than hidden

  if (o.command == "dump") {
    fmt::print("{}-endian, {} bytes (header {}, body {})\n{}\n", view->order(), view->size(),
               view->header_bytes().size(), view->body_bytes().size(), *tree);
    return exit_ok;
  }

  // convert
  auto out = tree->encode(*o.endian);
  if (!out) return invalid(out.error());
  // The result must be valid by construction; check it anyway rather than write a bad message.
  if (auto again = mcbus::message_view::parse(*out, popts); !again) {
    fmt::print(stderr, "mcbus-msg: internal error: the converted message is invalid: {}\n", again.error());
    return exit_usage;
  }
  if (::isatty(STDOUT_FILENO)) {
    fmt::print(stderr, "mcbus-msg: not writing a binary message to a terminal; redirect stdout\n");
    return exit_usage;
  }
  if (std::fwrite(out->data(), 1, out->size(), stdout) != out->size() || std::fflush(stdout) != 0) {
    fmt::print(stderr, "mcbus-msg: cannot write to stdout: {}\n", std::strerror(errno));
    return exit_usage;
  }
  return exit_ok;
}

}  // namespace

int main(int argc, char** argv) {
  // fmt reports a failed write to stdout (a closed pipe, a full disk) by throwing.
  try {
    options o;
    if (const auto stop = parse_args(argc, argv, o)) return *stop;
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mcbus-msg: %s\n", e.what());
    return exit_usage;
  }
}
