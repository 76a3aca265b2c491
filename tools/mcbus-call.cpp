// mcbus-call: call a D-Bus method from the command line, with busctl's syntax and output.
//
//   mcbus-call [--address=ADDR|--system|--user] [--timeout=SECONDS]
//              SERVICE OBJECT INTERFACE METHOD [SIGNATURE [ARGUMENT...]]
//
// The reply is printed exactly as `busctl call` prints it, so the two can be compared. A D-Bus
// error goes to stderr as "NAME: MESSAGE" with exit status 1; bad usage exits with 2.
#include <mcbus/connection.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "bus_option.hpp"
#include "busctl_syntax.hpp"

namespace {

constexpr const char* usage =
    "usage: mcbus-call [--address=ADDR|--system|--user] [--timeout=SECONDS]\n"
    "                  SERVICE OBJECT INTERFACE METHOD [SIGNATURE [ARGUMENT...]]\n"
    "\n"
    "Calls a D-Bus method and prints the reply as `busctl call` does: the reply's signature, then\n"
    "its values (arrays as a count followed by the elements, variants as a signature followed by\n"
    "the value, strings quoted and C-escaped). Arguments use the same syntax. Options may come\n"
    "anywhere; after \"--\" everything is an argument (write negative numbers after it).\n"
    "\n"
    "  --address=ADDR     connect to this D-Bus address\n"
    "  --system           the system bus (the default, as for busctl)\n"
    "  --user             the session bus\n"
    "  --timeout=SECONDS  how long to wait for the reply (default 25)\n"
    "  -h, --help         this text\n"
    "\n"
    "Exit status: 0 on success, 1 if the call failed (D-Bus error printed as NAME: MESSAGE),\n"
    "2 on bad usage.\n";

int bad_usage(const std::string& why) {
  std::fprintf(stderr, "mcbus-call: %s\n%s", why.c_str(), usage);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  mcbus_tools::bus_option bus(mcbus_tools::bus_option::kind::system);  // busctl's default
  double timeout_s = 25;
  std::vector<std::string> positional;
  // As getopt does for busctl: options may come anywhere, and the first "--" ends them (so that
  // "-5" can be an argument).
  bool options_done = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (options_done || arg.empty() || arg[0] != '-' || arg == "-") {
      positional.emplace_back(arg);
    } else if (arg == "--") {
      options_done = true;
    } else if (arg == "-h" || arg == "--help") {
      std::fputs(usage, stdout);
      return 0;
    } else if (bus.parse(arg)) {
      continue;
    } else if (arg.starts_with("--timeout=")) {
      timeout_s = std::strtod(std::string(arg.substr(10)).c_str(), nullptr);
      if (timeout_s <= 0) return bad_usage("--timeout needs a positive number of seconds");
    } else {
      return bad_usage("unknown option " + std::string(arg));
    }
  }
  if (positional.size() < 4) return bad_usage("SERVICE, OBJECT, INTERFACE and METHOD are required");

  auto service = mcbus::bus_name::from(positional[0]);
  if (!service) return bad_usage("invalid service name: " + service.error().message());
  auto path = mcbus::object_path_view::from(positional[1]);
  if (!path) return bad_usage("invalid object path: " + path.error().message());
  auto iface = mcbus::interface_name::from(positional[2]);
  if (!iface) return bad_usage("invalid interface name: " + iface.error().message());
  auto method = mcbus::member_name::from(positional[3]);
  if (!method) return bad_usage("invalid method name: " + method.error().message());

  std::vector<mcbus::value> args;
  std::string signature;
  if (positional.size() > 4) {
    signature = positional[4];
    if (mcbus::error e = mcbus::validate_signature(signature)) return bad_usage("invalid signature: " + e.message());
    mcbus_tools::busctl_parser parser(std::vector<std::string>(positional.begin() + 5, positional.end()));
    if (!parser.parse_all(signature, args)) return bad_usage(parser.error());
  }

  mcbus::connection_options opts;
  opts.call_timeout = std::chrono::milliseconds(static_cast<long long>(timeout_s * 1000));
  auto conn = bus.connect(opts);
  if (!conn) {
    std::fprintf(stderr, "mcbus-call: cannot connect to the bus: %s\n", conn.error().message().c_str());
    return 1;
  }

  mcbus::message call = mcbus::message::method_call(*service, *path, *iface, *method);
  call.append_with(signature, [&](mcbus::writer& w) {
    for (const mcbus::value& v : args) v.write(w);
  });
  if (call.err()) {
    std::fprintf(stderr, "mcbus-call: cannot build the call: %s\n", call.err().message().c_str());
    return 2;
  }
  auto reply = conn->call(std::move(call));
  if (!reply) {
    std::fprintf(stderr, "%s: %s\n", reply.error().name().c_str(), reply.error().text().c_str());
    return 1;
  }
  mcbus::reader r = reply->view().body();
  const std::vector<mcbus::value> values = mcbus::value::read_all(r, reply->header().signature);
  if (r.err()) {
    std::fprintf(stderr, "mcbus-call: cannot read the reply: %s\n", r.err().message().c_str());
    return 1;
  }
  const std::string text = mcbus_tools::busctl_format(reply->header().signature, values, reply->view().fds());
  if (!text.empty()) std::printf("%s\n", text.c_str());
  return 0;
}
