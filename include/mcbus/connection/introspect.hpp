// mcbus: introspection XML, generated from what an object registered.
//
// The format is the one in the D-Bus specification (and what gdbus, busctl and d-feet read): the
// object's interfaces with their methods, signals and properties, then the standard interfaces,
// then one <node name="..."/> per child so that tools can walk the tree.
#pragma once

#include <mcbus/wire/signature.hpp>

#include <string>
#include <string_view>
#include <vector>

MCBUS_NAMESPACE_BEGIN

namespace detail {

inline void xml_escape_into(std::string& out, std::string_view s) {
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
}

// Appends <arg> elements for each complete type of `sig`, named from `names` where given.
inline void xml_args(std::string& out, std::string_view sig, const std::vector<std::string>& names,
                     const char* direction) {
  std::size_t index = 0;
  for (std::size_t i = 0; i < sig.size(); ++index) {
    const std::size_t len = complete_type_length(sig, i);
    out += "      <arg type=\"";
    xml_escape_into(out, sig.substr(i, len));
    out += '"';
    if (index < names.size() && !names[index].empty()) {
      out += " name=\"";
      xml_escape_into(out, names[index]);
      out += '"';
    }
    if (direction) {
      out += " direction=\"";
      out += direction;
      out += '"';
    }
    out += "/>\n";
    i += len;
  }
}

inline constexpr std::string_view standard_interfaces_xml =
    "  <interface name=\"org.freedesktop.DBus.Peer\">\n"
    "    <method name=\"Ping\"/>\n"
    "    <method name=\"GetMachineId\">\n"
    "      <arg type=\"s\" name=\"machine_uuid\" direction=\"out\"/>\n"
    "    </method>\n"
    "  </interface>\n"
    "  <interface name=\"org.freedesktop.DBus.Introspectable\">\n"
    "    <method name=\"Introspect\">\n"
    "      <arg type=\"s\" name=\"xml_data\" direction=\"out\"/>\n"
    "    </method>\n"
    "  </interface>\n";

inline constexpr std::string_view properties_interface_xml =
    "  <interface name=\"org.freedesktop.DBus.Properties\">\n"
    "    <method name=\"Get\">\n"
    "      <arg type=\"s\" name=\"interface_name\" direction=\"in\"/>\n"
    "      <arg type=\"s\" name=\"property_name\" direction=\"in\"/>\n"
    "      <arg type=\"v\" name=\"value\" direction=\"out\"/>\n"
    "    </method>\n"
    "    <method name=\"GetAll\">\n"
    "      <arg type=\"s\" name=\"interface_name\" direction=\"in\"/>\n"
    "      <arg type=\"a{sv}\" name=\"props\" direction=\"out\"/>\n"
    "    </method>\n"
    "    <method name=\"Set\">\n"
    "      <arg type=\"s\" name=\"interface_name\" direction=\"in\"/>\n"
    "      <arg type=\"s\" name=\"property_name\" direction=\"in\"/>\n"
    "      <arg type=\"v\" name=\"value\" direction=\"in\"/>\n"
    "    </method>\n"
    "    <signal name=\"PropertiesChanged\">\n"
    "      <arg type=\"s\" name=\"interface_name\"/>\n"
    "      <arg type=\"a{sv}\" name=\"changed_properties\"/>\n"
    "      <arg type=\"as\" name=\"invalidated_properties\"/>\n"
    "    </signal>\n"
    "  </interface>\n";

}  // namespace detail

// Interface is interface_def (object.hpp); a template so that this header does not need it.
template <class Interface>
std::string introspection_xml(const std::vector<Interface>& interfaces, const std::vector<std::string>& children) {
  std::string out =
      "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n"
      " \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<node>\n";
  bool any_properties = false;
  for (const Interface& i : interfaces) {
    out += "  <interface name=\"";
    detail::xml_escape_into(out, i.name);
    out += "\">\n";
    for (const auto& m : i.methods) {
      out += "    <method name=\"" + m.name + "\">\n";
      detail::xml_args(out, m.in_signature, m.in_names, "in");
      detail::xml_args(out, m.out_signature, m.out_names, "out");
      out += "    </method>\n";
    }
    for (const auto& s : i.signals) {
      out += "    <signal name=\"" + s.name + "\">\n";
      detail::xml_args(out, s.signature, s.arg_names, nullptr);
      out += "    </signal>\n";
    }
    for (const auto& p : i.properties) {
      any_properties = true;
      out += "    <property name=\"" + p.name + "\" type=\"";
      detail::xml_escape_into(out, p.signature);
      out += "\" access=\"";
      out += p.access == decltype(p.access)::read    ? "read"
             : p.access == decltype(p.access)::write ? "write"
                                                     : "readwrite";
      out += "\"";
      if (!p.emits_changed) {
        out +=
            ">\n      <annotation name=\"org.freedesktop.DBus.Property.EmitsChangedSignal\" value=\"false\"/>\n"
            "    </property>\n";
      } else {
        out += "/>\n";
      }
    }
    out += "  </interface>\n";
  }
  out += detail::standard_interfaces_xml;
  if (any_properties) out += detail::properties_interface_xml;
  for (const std::string& c : children) {
    out += "  <node name=\"";
    detail::xml_escape_into(out, c);
    out += "\"/>\n";
  }
  out += "</node>\n";
  return out;
}

MCBUS_NAMESPACE_END
