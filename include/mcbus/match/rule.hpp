// mcbus/match: D-Bus match rules, parsed, compared, formatted and evaluated as dbus-daemon 1.14
// does it.
//
// A match_rule is plain data with no heap: its values live in an inline buffer of 1024 bytes (the
// bus's limit on the whole rule text), so a rule can be parsed, stored and compiled to BPF at
// compile time:
//
//   constexpr auto rule = mcbus::match_rule::parse("type='signal',member='Changed'").value();
//   using namespace mcbus::literals;
//   constexpr auto other = "type='signal',interface='org.example.Foo'"_match;  // bad text: compile error
//
// matches() judges a message as dbus-daemon judges it for a connection that is not its addressed
// recipient, unless a match_context names the receiving connection (see context.hpp). What it
// cannot know by itself is who owns a well-known name: `sender='org.example.Foo'` and
// `destination=` keys go through the context's name lookup.
#pragma once

#include <mcbus/error.hpp>
#include <mcbus/match/context.hpp>
#include <mcbus/match/detail/rule_syntax.hpp>
#include <mcbus/wire/message.hpp>
#include <mcbus/wire/names.hpp>
#include <mcbus/wire/signature.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

MCBUS_NAMESPACE_BEGIN

enum class match_arg_kind : std::uint8_t {
  string,         // argN: the argument is a STRING equal to the value
  path,           // argNpath: a STRING or OBJECT_PATH equal to it, or one ends in '/' and prefixes the other
  arg0namespace,  // arg0namespace: a STRING equal to it or starting with it and a '.'
};

struct match_arg {
  unsigned index = 0;
  match_arg_kind kind = match_arg_kind::string;
  std::string_view value;
};

struct match_parse_options {
  match_syntax syntax = match_syntax::dbus_daemon;
  // dbus-daemon refuses rules longer than 1024 bytes. to_string() of a rule near that limit can be
  // longer than the text it came from (it quotes every value), so round trips of such rules parse
  // it back with this off.
  bool limit_length = true;
};

class match_rule {
 public:
  static constexpr std::size_t max_length = 1024;  // DBUS_MAXIMUM_MATCH_RULE_LENGTH
  static constexpr unsigned max_arg = 63;          // DBUS_MAXIMUM_MATCH_RULE_ARG_NUMBER
  static constexpr std::size_t max_keys = 16;      // dbus-daemon reads no more (MAX_RULE_TOKENS)
  static constexpr std::size_t capacity = 1024;    // bytes of values a rule can hold

  constexpr match_rule() noexcept = default;

  static constexpr result<match_rule> parse(std::string_view text, match_parse_options opts = {}) noexcept;

  // ---- what the rule says ------------------------------------------------------------------
  constexpr std::optional<message_type> type() const noexcept {
    if (!(keys_ & k_type)) return std::nullopt;
    return static_cast<message_type>(type_);
  }
  constexpr std::optional<std::string_view> sender() const noexcept { return get(k_sender, sender_); }
  constexpr std::optional<std::string_view> interface() const noexcept { return get(k_interface, interface_); }
  constexpr std::optional<std::string_view> member() const noexcept { return get(k_member, member_); }
  constexpr std::optional<std::string_view> path() const noexcept { return get(k_path, path_); }
  constexpr std::optional<std::string_view> path_namespace() const noexcept { return get(k_path_namespace, path_); }
  constexpr std::optional<std::string_view> destination() const noexcept { return get(k_destination, destination_); }
  constexpr bool eavesdrop() const noexcept { return eavesdrop_; }
  // Argument keys, sorted by argument number.
  constexpr std::size_t arg_count() const noexcept { return nargs_; }
  constexpr match_arg arg(std::size_t i) const noexcept {
    return {args_[i].index, args_[i].kind, view(args_[i].value)};
  }
  constexpr std::optional<match_arg> find_arg(unsigned index) const noexcept {
    for (std::size_t i = 0; i < nargs_; ++i) {
      if (args_[i].index == index) return arg(i);
    }
    return std::nullopt;
  }
  // Keys that to_string() writes: eavesdrop counts only when true.
  constexpr std::size_t key_count() const noexcept {
    std::size_t n = nargs_ + (eavesdrop_ ? 1 : 0);
    for (std::uint16_t k = keys_; k; k &= static_cast<std::uint16_t>(k - 1)) ++n;
    return n;
  }
  constexpr bool empty() const noexcept { return key_count() == 0; }

  // ---- building one (each setter validates as parse() would) ------------------------------
  constexpr error set_type(message_type t) noexcept {
    if (t == message_type::invalid || static_cast<unsigned>(t) > 4) return {errc::bad_match_rule, 0, "type: invalid"};
    if (error e = make_room(k_type)) return e;
    type_ = static_cast<std::uint8_t>(t);
    keys_ |= k_type;
    return {};
  }
  constexpr error set_sender(std::string_view s) noexcept {
    if (!detail::match::valid_bus_name(s)) return {errc::bad_match_rule, 0, "sender: not a valid bus name"};
    return set_string(k_sender, sender_, s);
  }
  constexpr error set_interface(std::string_view s) noexcept {
    if (!is_valid_interface_name(s)) return {errc::bad_match_rule, 0, "interface: not a valid interface name"};
    return set_string(k_interface, interface_, s);
  }
  constexpr error set_member(std::string_view s) noexcept {
    if (!is_valid_member_name(s)) return {errc::bad_match_rule, 0, "member: not a valid member name"};
    return set_string(k_member, member_, s);
  }
  // path and path_namespace share a slot: setting one drops the other.
  constexpr error set_path(std::string_view s) noexcept {
    if (!is_valid_object_path(s)) return {errc::bad_match_rule, 0, "path: not a valid object path"};
    return set_path_key(k_path, s);
  }
  constexpr error set_path_namespace(std::string_view s) noexcept {
    if (!is_valid_object_path(s)) return {errc::bad_match_rule, 0, "path_namespace: not a valid object path"};
    return set_path_key(k_path_namespace, s);
  }
  constexpr error set_destination(std::string_view s) noexcept {
    if (!detail::match::valid_bus_name(s)) return {errc::bad_match_rule, 0, "destination: not a valid bus name"};
    return set_string(k_destination, destination_, s);
  }
  constexpr error set_eavesdrop(bool on) noexcept {
    if (on && !eavesdrop_ && key_count() >= max_keys) return {errc::bad_match_rule, 0, "more than 16 keys"};
    eavesdrop_ = on;
    return {};
  }
  constexpr error add_arg(unsigned index, match_arg_kind kind, std::string_view value) noexcept {
    if (index > max_arg) return {errc::bad_match_rule, 0, "argN: argument number above 63"};
    if (kind == match_arg_kind::arg0namespace) {
      if (index != 0) return {errc::bad_match_rule, 0, "argNnamespace: only arg0namespace exists"};
      if (!detail::match::valid_bus_name(value, true)) {
        return {errc::bad_match_rule, 0, "arg0namespace: not a valid bus name namespace"};
      }
    }
    if (detail::match::find_bad_utf8(value) != static_cast<std::size_t>(-1)) {
      return {errc::bad_match_rule, 0, "argN: value is not valid UTF-8"};
    }
    for (std::size_t i = 0; i < nargs_; ++i) {
      if (args_[i].index == index) return {errc::bad_match_rule, 0, "argN: argument specified twice"};
    }
    if (key_count() >= max_keys) return {errc::bad_match_rule, 0, "more than 16 keys"};
    slice v;
    if (error e = store(value, v)) return e;
    std::size_t at = nargs_;
    while (at > 0 && args_[at - 1].index > index) {
      args_[at] = args_[at - 1];
      --at;
    }
    args_[at] = arg_slot{static_cast<std::uint8_t>(index), kind, v};
    ++nargs_;
    return {};
  }
  constexpr error add_arg(unsigned index, std::string_view value) noexcept {
    return add_arg(index, match_arg_kind::string, value);
  }

  // ---- evaluation ---------------------------------------------------------------------------
  bool matches(const message_view& m) const noexcept { return matches(m, match_context{}); }
  bool matches(const message_view& m, const match_context& ctx) const noexcept {
    const message_header& h = m.header();
    if ((keys_ & k_type) && h.raw_type != type_) return false;
    if ((keys_ & k_interface) && !(h.has(header_field::interface) && h.interface == view(interface_))) return false;
    if ((keys_ & k_member) && !(h.has(header_field::member) && h.member == view(member_))) return false;
    if ((keys_ & k_sender) && !sender_matches(h, ctx)) return false;
    if (!destination_matches(h, ctx)) return false;
    if (keys_ & (k_path | k_path_namespace)) {
      if (!h.has(header_field::path)) return false;
      if ((keys_ & k_path) ? h.path != view(path_) : !in_path_namespace(h.path, view(path_))) return false;
    }
    return nargs_ == 0 || args_match(m);
  }

  // The destination part of the judgement alone (DESTINATION field, destination key, eavesdrop),
  // with `destination` the message's DESTINATION if it has one. The BPF compiler decides the same
  // question per class of destination through this function, so the two cannot drift apart.
  constexpr bool destination_allows(std::optional<std::string_view> destination, const match_context& ctx) const {
    const bool addressed = destination && names_receiver(*destination, ctx);
    if (keys_ & k_destination) {
      if (!destination) return false;
      if (addressed) return names_receiver(view(destination_), ctx);
      return eavesdrop_ && same_owner(view(destination_), *destination, ctx.owners);
    }
    return !destination || addressed || eavesdrop_;
  }

  // Whether the sender key allows a message whose SENDER field is `sender`.
  constexpr bool sender_allows(std::string_view sender, const name_lookup& owners) const {
    const std::string_view want = view(sender_);
    if (sender == want) return true;
    if (detail::match::is_unique_name(want)) return false;
    const std::string_view owner = owners(want);
    return !owner.empty() && owner == sender;
  }

  // ---- text ---------------------------------------------------------------------------------
  // The canonical form: keys in dbus-daemon's order (type, interface, member, path or
  // path_namespace, sender, destination, eavesdrop, args by number), every value in single quotes
  // and an apostrophe written '\''. It means the same to dbus-daemon, dbus-broker and the
  // specification, and parse() reads it back as an equal rule.
  std::string to_string() const {
    std::string out;
    auto put = [&](std::string_view key, std::string_view value) {
      if (!out.empty()) out += ',';
      out += key;
      out += "='";
      for (char c : value) {
        if (c == '\'') {
          out += "'\\''";
        } else {
          out += c;
        }
      }
      out += '\'';
    };
    if (auto t = type()) put("type", mcbus::to_string(*t));
    if (auto v = interface()) put("interface", *v);
    if (auto v = member()) put("member", *v);
    if (auto v = path()) put("path", *v);
    if (auto v = path_namespace()) put("path_namespace", *v);
    if (auto v = sender()) put("sender", *v);
    if (auto v = destination()) put("destination", *v);
    if (eavesdrop_) put("eavesdrop", "true");
    for (std::size_t i = 0; i < nargs_; ++i) {
      const match_arg a = arg(i);
      std::string key = "arg" + std::to_string(a.index);
      if (a.kind == match_arg_kind::path) key += "path";
      if (a.kind == match_arg_kind::arg0namespace) key += "namespace";
      put(key, a.value);
    }
    return out;
  }

  friend constexpr bool operator==(const match_rule& a, const match_rule& b) noexcept {
    if (a.keys_ != b.keys_ || a.eavesdrop_ != b.eavesdrop_ || a.nargs_ != b.nargs_) return false;
    if ((a.keys_ & k_type) && a.type_ != b.type_) return false;
    if (a.sender() != b.sender() || a.interface() != b.interface() || a.member() != b.member()) return false;
    if (a.path() != b.path() || a.path_namespace() != b.path_namespace() || a.destination() != b.destination()) {
      return false;
    }
    for (std::size_t i = 0; i < a.nargs_; ++i) {
      const match_arg x = a.arg(i);
      const match_arg y = b.arg(i);
      if (x.index != y.index || x.kind != y.kind || x.value != y.value) return false;
    }
    return true;
  }

  // ---- the predicates dbus-daemon applies, shared with the BPF compiler ---------------------
  static constexpr bool in_path_namespace(std::string_view path, std::string_view ns) noexcept {
    if (path.substr(0, ns.size()) != ns) return false;
    // "/" is the only valid path of length 1, and it holds every path.
    return ns.size() == 1 || path.size() == ns.size() || path[ns.size()] == '/';
  }
  static constexpr bool arg_path_matches(std::string_view actual, std::string_view expected) noexcept {
    // dbus-daemon reads the byte before an empty string here; for the argument that byte is the
    // zero length word, for the rule it is heap metadata, which is never '/' in practice. Neither
    // is '/', so an empty side matches only an empty side.
    const bool actual_dir = !actual.empty() && actual.back() == '/';
    const bool expected_dir = !expected.empty() && expected.back() == '/';
    if (actual.size() < expected.size() && !actual_dir) return false;
    if (expected.size() < actual.size() && !expected_dir) return false;
    const std::size_t n = actual.size() < expected.size() ? actual.size() : expected.size();
    return actual.substr(0, n) == expected.substr(0, n);
  }
  static constexpr bool arg_namespace_matches(std::string_view actual, std::string_view ns) noexcept {
    if (ns.size() > actual.size() || actual.substr(0, ns.size()) != ns) return false;
    return actual.size() == ns.size() || actual[ns.size()] == '.';
  }
  static constexpr bool arg_value_matches(match_arg_kind kind, char type, std::string_view actual,
                                          std::string_view expected) noexcept {
    if (type != 's' && !(type == 'o' && kind == match_arg_kind::path)) return false;
    switch (kind) {
      case match_arg_kind::string: return actual == expected;
      case match_arg_kind::path: return arg_path_matches(actual, expected);
      case match_arg_kind::arg0namespace: return arg_namespace_matches(actual, expected);
    }
    return false;
  }

 private:
  struct slice {
    std::uint16_t off = 0;
    std::uint16_t len = 0;
  };
  struct arg_slot {
    std::uint8_t index = 0;
    match_arg_kind kind = match_arg_kind::string;
    slice value;
  };
  enum : std::uint16_t {
    k_type = 1,
    k_sender = 2,
    k_interface = 4,
    k_member = 8,
    k_path = 16,
    k_path_namespace = 32,
    k_destination = 64,
  };

  constexpr std::string_view view(slice s) const noexcept { return {buf_ + s.off, s.len}; }
  constexpr std::optional<std::string_view> get(std::uint16_t key, slice s) const noexcept {
    if (!(keys_ & key)) return std::nullopt;
    return view(s);
  }

  constexpr error make_room(std::uint16_t key) const noexcept {
    if (!(keys_ & key) && key_count() >= max_keys) return {errc::bad_match_rule, 0, "more than 16 keys"};
    return {};
  }

  // Appends a value to the buffer, compacting it first when values were replaced.
  constexpr error store(std::string_view s, slice& out) noexcept {
    if (capacity - used_ < s.size()) compact();
    if (capacity - used_ < s.size()) return {errc::bad_match_rule, capacity, "values longer than 1024 bytes in all"};
    for (std::size_t i = 0; i < s.size(); ++i) buf_[used_ + i] = s[i];
    out = slice{used_, static_cast<std::uint16_t>(s.size())};
    used_ = static_cast<std::uint16_t>(used_ + s.size());
    return {};
  }
  constexpr void compact() noexcept {
    match_rule fresh;
    auto move_one = [&](std::uint16_t key, slice& s) {
      if (keys_ & key) (void)fresh.store(view(s), s);
    };
    move_one(k_sender, sender_);
    move_one(k_interface, interface_);
    move_one(k_member, member_);
    move_one(static_cast<std::uint16_t>(k_path | k_path_namespace), path_);
    move_one(k_destination, destination_);
    for (std::size_t i = 0; i < nargs_; ++i) (void)fresh.store(view(args_[i].value), args_[i].value);
    for (std::size_t i = 0; i < fresh.used_; ++i) buf_[i] = fresh.buf_[i];
    used_ = fresh.used_;
  }
  constexpr error set_string(std::uint16_t key, slice& field, std::string_view s) noexcept {
    if (error e = make_room(key)) return e;
    keys_ = static_cast<std::uint16_t>(keys_ & ~key);  // the old value may be compacted away
    if (error e = store(s, field)) return e;
    keys_ |= key;
    return {};
  }
  constexpr error set_path_key(std::uint16_t key, std::string_view s) noexcept {
    const auto both = static_cast<std::uint16_t>(k_path | k_path_namespace);
    if (!(keys_ & both) && key_count() >= max_keys) return {errc::bad_match_rule, 0, "more than 16 keys"};
    keys_ = static_cast<std::uint16_t>(keys_ & ~both);
    if (error e = store(s, path_)) return e;
    keys_ |= key;
    return {};
  }

  // dbus-daemon: the receiving connection is the addressed recipient when it owns DESTINATION.
  static constexpr bool names_receiver(std::string_view name, const match_context& ctx) {
    if (ctx.receiver.empty()) return false;
    if (name == ctx.receiver) return true;
    return !detail::match::is_unique_name(name) && ctx.owners(name) == ctx.receiver;
  }
  // Whether two names have the same primary owner (a unique name owns itself).
  static constexpr bool same_owner(std::string_view a, std::string_view b, const name_lookup& owners) {
    if (a == b) return true;
    const std::string_view oa = detail::match::is_unique_name(a) ? a : owners(a);
    const std::string_view ob = detail::match::is_unique_name(b) ? b : owners(b);
    return !oa.empty() && oa == ob;
  }

  bool sender_matches(const message_header& h, const match_context& ctx) const noexcept {
    return h.has(header_field::sender) && sender_allows(h.sender, ctx.owners);
  }
  bool destination_matches(const message_header& h, const match_context& ctx) const noexcept {
    std::optional<std::string_view> d;
    if (h.has(header_field::destination)) d = h.destination;
    return destination_allows(d, ctx);
  }

  // Walks the body as dbus-daemon's iterator does: argument i is the i-th complete type.
  bool args_match(const message_view& m) const noexcept {
    const std::string_view sig = m.header().signature;
    reader r = m.body();
    std::size_t si = 0;
    unsigned index = 0;
    for (std::size_t k = 0; k < nargs_; ++k) {
      const arg_slot& want = args_[k];
      while (index < want.index) {
        if (si >= sig.size()) return false;
        const std::size_t len = complete_type_length(sig, si);
        r.skip(sig.substr(si, len));
        si += len;
        ++index;
      }
      if (si >= sig.size()) return false;
      const char type = sig[si];
      if (type != 's' && type != 'o') return false;
      const std::string_view actual = r.get_string();
      if (r.err() || !arg_value_matches(want.kind, type, actual, view(want.value))) return false;
      ++si;
      ++index;
    }
    return true;
  }

  friend struct match_rule_parser;

  char buf_[capacity]{};
  std::uint16_t used_ = 0;
  std::uint16_t keys_ = 0;
  std::uint8_t type_ = 0;
  bool eavesdrop_ = false;
  std::uint8_t nargs_ = 0;
  slice sender_;
  slice interface_;
  slice member_;
  slice path_;
  slice destination_;
  arg_slot args_[max_keys]{};
};

// The key that a parse error of `text` is about: the key of the key=value pair that holds the
// error's offset (the error notes are static, so they cannot name a key such as "colour"). Empty
// when the error has no offset or the pair has no key yet. Quotes are followed as both syntaxes
// agree on them: an apostrophe opens and closes, and outside quotes \' is a literal apostrophe.
constexpr std::string_view match_rule_error_key(std::string_view text, const error& e) noexcept {
  if (!e.has_offset()) return {};
  const std::size_t at = e.offset() < text.size() ? e.offset() : text.size();
  std::size_t pair = 0;
  bool quoted = false;
  for (std::size_t i = 0; i < at; ++i) {
    const char c = text[i];
    if (c == '\'') {
      quoted = !quoted;
    } else if (!quoted && c == '\\' && i + 1 < text.size() && text[i + 1] == '\'') {
      ++i;
    } else if (!quoted && c == ',') {
      pair = i + 1;
    }
  }
  while (pair < text.size() && (text[pair] == ' ' || text[pair] == '\t' || text[pair] == '\n' || text[pair] == '\r')) {
    ++pair;
  }
  std::size_t end = pair;
  while (end < text.size() && text[end] != '=' && text[end] != ',' && text[end] != '\'') ++end;
  while (end > pair && (text[end - 1] == ' ' || text[end - 1] == '\t')) --end;
  return text.substr(pair, end - pair);
}

// "key 'colour': invalid match rule at byte 0 (unknown key)": the error's message, led by the key.
inline std::string match_rule_error_text(std::string_view text, const error& e) {
  const std::string_view key = match_rule_error_key(text, e);
  if (key.empty()) return e.message();
  return "key '" + std::string(key) + "': " + e.message();
}

MCBUS_NAMESPACE_END

#include <mcbus/match/detail/rule_parse.hpp>
