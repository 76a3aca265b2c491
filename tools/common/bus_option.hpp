// The bus a tool talks to: --address=ADDR, --system, or --user/--session.
#pragma once

#include <mcbus/connection.hpp>

#include <string>
#include <string_view>

namespace mcbus_tools {

struct bus_option {
  enum class kind { session, system, address } which;
  std::string address;

  explicit bus_option(kind default_bus) : which(default_bus) {}

  // Takes the argument if it names a bus; false if it is something else.
  bool parse(std::string_view arg) {
    if (arg.starts_with("--address=")) {
      address = arg.substr(10);
      which = kind::address;
    } else if (arg == "--system") {
      which = kind::system;
    } else if (arg == "--user" || arg == "--session") {
      which = kind::session;
    } else {
      return false;
    }
    return true;
  }

  mcbus::result<mcbus::connection> connect(mcbus::connection_options opts = {}) const {
    switch (which) {
      case kind::address: return mcbus::connection::open(address, opts);
      case kind::system: return mcbus::connection::system(opts);
      default: return mcbus::connection::session(opts);
    }
  }
};

}  // namespace mcbus_tools
