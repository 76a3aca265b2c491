// mcbus/match: who a message is judged for, and who owns which well-known name.
//
// dbus-daemon decides `sender='com.example.Foo'` by asking whether the sending connection is the
// primary owner of that name, and `destination=` by asking who the addressed recipient is. A
// client sees only the message, so it answers those questions with what it knows: a lookup from
// well-known names to the unique names that own them. A publisher knows its own names; a
// connection learns others from NameOwnerChanged.
#pragma once

#include <mcbus/config.hpp>

#include <cstddef>
#include <span>
#include <string_view>
#include <type_traits>

MCBUS_NAMESPACE_BEGIN

// One well-known name and the unique name of its primary owner.
struct name_owner {
  std::string_view name;
  std::string_view owner;
};

// A borrowed lookup from well-known names to unique owners: a table, or any callable
// `std::string_view(std::string_view)`. An empty result means "no owner known". It borrows what
// it is built from, like std::string_view.
class name_lookup {
 public:
  constexpr name_lookup() noexcept = default;
  // A table: a span, an array or a vector of name_owner.
  template <class T>
  requires std::is_convertible_v<const T&, std::span<const name_owner>>
  constexpr name_lookup(const T& table) noexcept : table_(table) {}  // NOLINT

  template <class F>
  requires(!std::is_same_v<std::remove_cvref_t<F>, name_lookup> &&
           !std::is_convertible_v<const F&, std::span<const name_owner>> &&
           std::is_invocable_r_v<std::string_view, const F&, std::string_view>) name_lookup(const F& f)
  noexcept  // NOLINT
      : obj_(&f), fn_(&call<F>) {}

  constexpr std::string_view operator()(std::string_view name) const {
    if (fn_) return fn_(obj_, name);
    for (const name_owner& e : table_) {
      if (e.name == name) return e.owner;
    }
    return {};
  }

 private:
  template <class F>
  static std::string_view call(const void* obj, std::string_view name) {
    return (*static_cast<const F*>(obj))(name);
  }

  std::span<const name_owner> table_;
  const void* obj_ = nullptr;
  std::string_view (*fn_)(const void*, std::string_view) = nullptr;
};

// How a message is judged: for which connection, and with which knowledge of name owners.
//
// `receiver` is the unique name of the receiving connection. A message whose DESTINATION is that
// name (or a well-known name that `owners` says it owns) is addressed to it, and is judged as
// dbus-daemon judges messages for their addressed recipient: no eavesdrop='true' is needed, and a
// `destination=` key must name this connection. Leave it empty to judge as a bystander.
struct match_context {
  std::string_view receiver = {};
  name_lookup owners = {};
};

MCBUS_NAMESPACE_END
