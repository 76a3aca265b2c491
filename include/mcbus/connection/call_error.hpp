// mcbus: errors of method calls, as D-Bus error names.
//
// A call fails either because the peer replied with a D-Bus error (name and message from the
// reply) or locally (timeout, disconnect, bad reply). Local failures get the standard
// org.freedesktop.DBus.Error.* names that libdbus and GDBus use for them, so a caller handles both
// the same way.
#pragma once

#include <mcbus/error.hpp>
#include <mcbus/wire/message.hpp>

#include <string>
#include <string_view>

MCBUS_NAMESPACE_BEGIN

namespace dbus_error {
inline constexpr std::string_view failed = "org.freedesktop.DBus.Error.Failed";
inline constexpr std::string_view no_memory = "org.freedesktop.DBus.Error.NoMemory";
inline constexpr std::string_view service_unknown = "org.freedesktop.DBus.Error.ServiceUnknown";
inline constexpr std::string_view name_has_no_owner = "org.freedesktop.DBus.Error.NameHasNoOwner";
inline constexpr std::string_view no_reply = "org.freedesktop.DBus.Error.NoReply";
inline constexpr std::string_view io_error = "org.freedesktop.DBus.Error.IOError";
inline constexpr std::string_view bad_address = "org.freedesktop.DBus.Error.BadAddress";
inline constexpr std::string_view not_supported = "org.freedesktop.DBus.Error.NotSupported";
inline constexpr std::string_view limits_exceeded = "org.freedesktop.DBus.Error.LimitsExceeded";
inline constexpr std::string_view access_denied = "org.freedesktop.DBus.Error.AccessDenied";
inline constexpr std::string_view auth_failed = "org.freedesktop.DBus.Error.AuthFailed";
inline constexpr std::string_view timeout = "org.freedesktop.DBus.Error.Timeout";
inline constexpr std::string_view disconnected = "org.freedesktop.DBus.Error.Disconnected";
inline constexpr std::string_view invalid_args = "org.freedesktop.DBus.Error.InvalidArgs";
inline constexpr std::string_view unknown_method = "org.freedesktop.DBus.Error.UnknownMethod";
inline constexpr std::string_view unknown_object = "org.freedesktop.DBus.Error.UnknownObject";
inline constexpr std::string_view unknown_interface = "org.freedesktop.DBus.Error.UnknownInterface";
inline constexpr std::string_view unknown_property = "org.freedesktop.DBus.Error.UnknownProperty";
inline constexpr std::string_view property_read_only = "org.freedesktop.DBus.Error.PropertyReadOnly";
inline constexpr std::string_view match_rule_invalid = "org.freedesktop.DBus.Error.MatchRuleInvalid";
inline constexpr std::string_view inconsistent_message = "org.freedesktop.DBus.Error.InconsistentMessage";
}  // namespace dbus_error

class call_error {
 public:
  call_error() = default;
  // A local failure, named after its cause.
  call_error(error cause) : cause_(cause), name_(name_for(cause.code())), text_(cause.message()) {}  // NOLINT
  call_error(errc code) : call_error(error(code)) {}                                                 // NOLINT
  // An error the peer sent, or one a handler wants to send.
  call_error(std::string_view name, std::string_view text) : cause_(errc::method_error), name_(name), text_(text) {}

  // From an ERROR message: its name, and its first argument when that is a string.
  static call_error from_reply(const message_view& reply) {
    std::string text;
    if (!reply.header().signature.empty() && reply.header().signature[0] == 's') {
      reader r = reply.body();
      text = std::string(r.get_string());
    }
    return call_error(reply.header().error_name, text);
  }

  const std::string& name() const noexcept { return name_; }
  const std::string& text() const noexcept { return text_; }
  const error& cause() const noexcept { return cause_; }
  errc code() const noexcept { return cause_.code(); }
  bool is_remote() const noexcept { return cause_.code() == errc::method_error; }
  std::string message() const { return name_ + ": " + text_; }

  static std::string_view name_for(errc code) noexcept {
    switch (code) {
      case errc::timeout: return dbus_error::no_reply;
      case errc::disconnected:
      case errc::not_connected: return dbus_error::disconnected;
      case errc::system: return dbus_error::io_error;
      case errc::bad_address: return dbus_error::bad_address;
      case errc::auth_rejected:
      case errc::auth_protocol: return dbus_error::auth_failed;
      case errc::not_supported: return dbus_error::not_supported;
      case errc::too_many_fds:
      case errc::message_too_long: return dbus_error::limits_exceeded;
      case errc::signature_mismatch:
      case errc::type_mismatch:
      case errc::invalid_argument: return dbus_error::invalid_args;
      default: return dbus_error::failed;
    }
  }

 private:
  error cause_;
  std::string name_;
  std::string text_;
};

template <class T = void>
using call_result = result<T, call_error>;

MCBUS_NAMESPACE_END
