// mcbus/io: the client side of D-Bus authentication (specification, "Authentication Protocol"),
// as a pure state machine: no sockets. The connection sends output(), feeds what it receives to
// feed(), and repeats until status() is authenticated (then flushes output() once more: it ends
// with BEGIN) or failed.
//
//   mcbus::sasl_client auth({.negotiate_unix_fd = addr.can_pass_fds()});
//   while (auth.status() == mcbus::sasl_status::in_progress) {
//     send(auth.output()); auth.consume(auth.output().size());
//     auth.feed(receive());
//   }
//   send(auth.output());            // "BEGIN\r\n", may go in one write with the Hello call
//   auth.leftover();                // bytes after the last line: the start of the first message
//
// Mechanisms, in order of preference: EXTERNAL (the uid as the decimal string, hex-encoded, or an
// empty response answered by DATA), DBUS_COOKIE_SHA1 (when the caller gives a cookie source) and
// ANONYMOUS (when the caller allows it). After REJECTED the next one the server listed is tried.
// The client sends only commands both dbus-daemon and dbus-broker know (AUTH, DATA, CANCEL, ERROR,
// NEGOTIATE_UNIX_FD, BEGIN): dbus-broker drops a connection after an unknown command.
#pragma once

#include <mcbus/config.hpp>
#include <mcbus/error.hpp>
#include <mcbus/io/detail/sha1.hpp>

#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

MCBUS_NAMESPACE_BEGIN

// A line from the server longer than this fails the conversation: real replies are below 200 bytes,
// and libdbus limits its whole auth buffer to 16 KiB.
inline constexpr std::size_t sasl_max_line = 16 * 1024;
// Lines from the server before the client gives up: every mechanism takes at most a few, so more
// means a server that never concludes.
inline constexpr std::size_t sasl_max_lines = 64;

enum class sasl_mechanism : std::uint8_t { external, dbus_cookie_sha1, anonymous };

constexpr std::string_view to_string(sasl_mechanism m) noexcept {
  switch (m) {
    case sasl_mechanism::external: return "EXTERNAL";
    case sasl_mechanism::dbus_cookie_sha1: return "DBUS_COOKIE_SHA1";
    case sasl_mechanism::anonymous: return "ANONYMOUS";
  }
  return "";
}

enum class sasl_status : std::uint8_t { in_progress, authenticated, failed };

// Looks a DBUS_COOKIE_SHA1 cookie up by keyring context and cookie id; returns its hex text.
using sasl_cookie_source = std::function<std::optional<std::string>(std::string_view context, std::string_view id)>;

struct sasl_options {
  // Offer NEGOTIATE_UNIX_FD after OK: only where the transport can pass fds (AF_UNIX).
  bool negotiate_unix_fd = false;
  bool external = true;
  // Send "AUTH EXTERNAL" without the uid and answer the server's DATA challenge with an empty DATA:
  // "whoever the kernel says I am". Costs a round trip; dbus-broker's own client does this.
  bool external_empty_response = false;
  // The identity EXTERNAL and DBUS_COOKIE_SHA1 claim; unset = geteuid(), as libdbus and sd-bus do.
  std::optional<std::uint32_t> uid{};
  // DBUS_COOKIE_SHA1 is offered only with a cookie source (see keyring_cookie_source()).
  sasl_cookie_source cookies{};
  // Fills the client challenge; unset = getrandom(2). Tests make it deterministic.
  std::function<bool(std::span<unsigned char>)> random{};
  bool anonymous = false;
  // ANONYMOUS's trace string (RFC 4505): UTF-8, an email address if it contains '@'.
  std::string anonymous_trace = "mcbus";
};

namespace detail {
inline void hex_append(std::string& out, std::string_view raw) {
  static constexpr char digits[] = "0123456789abcdef";
  for (char c : raw) {
    out += digits[static_cast<unsigned char>(c) >> 4];
    out += digits[static_cast<unsigned char>(c) & 15];
  }
}

inline int sasl_hex(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

inline std::optional<std::string> hex_decode(std::string_view hex) {
  if (hex.size() % 2) return std::nullopt;
  std::string out;
  out.reserve(hex.size() / 2);
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    const int hi = sasl_hex(hex[i]), lo = sasl_hex(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
  }
  return out;
}

inline bool default_random(std::span<unsigned char> out) noexcept {
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// libdbus's rule for keyring contexts: they name a file, so no separators, dots or blanks.
inline bool valid_keyring_context(std::string_view c) noexcept {
  if (c.empty()) return false;
  for (char ch : c)
    if (static_cast<unsigned char>(ch) <= ' ' || static_cast<unsigned char>(ch) >= 0x7f || ch == '/' || ch == '\\' ||
        ch == '.')
      return false;
  return true;
}
}  // namespace detail

// A cookie source that reads DIR/CONTEXT, libdbus's keyring format: one "ID TIME HEXCOOKIE" line
// per cookie. DIR is normally $HOME/.dbus-keyrings of the user the server runs as.
inline sasl_cookie_source keyring_cookie_source(std::string dir) {
  return [dir = std::move(dir)](std::string_view context, std::string_view id) -> std::optional<std::string> {
    if (!detail::valid_keyring_context(context)) return std::nullopt;
    const std::string file = dir + "/" + std::string(context);
    std::FILE* f = std::fopen(file.c_str(), "re");
    if (!f) return std::nullopt;
    std::string text;
    char buf[4096];
    std::size_t n;
    // A keyring holds at most 256 cookies of ~80 bytes; more is not a keyring.
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0 && text.size() < 256 * 1024) text.append(buf, n);
    std::fclose(f);
    std::size_t pos = 0;
    while (pos < text.size()) {
      std::size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      const std::string_view line = std::string_view(text).substr(pos, end - pos);
      pos = end + 1;
      const std::size_t s1 = line.find(' ');
      const std::size_t s2 = s1 == std::string_view::npos ? s1 : line.find(' ', s1 + 1);
      if (s2 == std::string_view::npos || line.substr(0, s1) != id) continue;
      const std::string_view cookie = line.substr(s2 + 1);
      if (cookie.empty() || !detail::hex_decode(cookie)) continue;
      return std::string(cookie);
    }
    return std::nullopt;
  };
}

// $HOME/.dbus-keyrings, where libdbus keeps cookies; empty if HOME is unset.
inline std::string default_keyring_dir() {
  const char* home = std::getenv("HOME");
  return home && *home ? std::string(home) + "/.dbus-keyrings" : std::string();
}

class sasl_client {
 public:
  explicit sasl_client(sasl_options opts = {}) : opts_(std::move(opts)) {
    uid_ = opts_.uid ? *opts_.uid : static_cast<std::uint32_t>(::geteuid());
    out_ += '\0';  // the credentials byte: the transport sends it, with SCM_CREDENTIALS where it can
    if (!try_next_mechanism()) fail(errc::invalid_argument, "no SASL mechanism enabled");
  }

  sasl_status status() const noexcept { return status_; }
  // BEGIN is queued: flush output() and the message stream starts.
  bool authenticated() const noexcept { return status_ == sasl_status::authenticated; }
  // Why the conversation failed: auth_rejected (out of mechanisms) or auth_protocol, with the
  // offset in the bytes received from the server.
  const error& failure() const noexcept { return failure_; }

  // Bytes to send to the server. consume(n) after sending the first n of them.
  std::span<const std::byte> output() const noexcept {
    return std::as_bytes(std::span<const char>(out_.data() + sent_, out_.size() - sent_));
  }
  std::string_view output_text() const noexcept { return std::string_view(out_).substr(sent_); }
  void consume(std::size_t n) noexcept {
    sent_ += n < out_.size() - sent_ ? n : out_.size() - sent_;
    if (sent_ == out_.size()) {
      out_.clear();
      sent_ = 0;
    }
  }

  // Feeds bytes received from the server. After authentication they go to leftover().
  sasl_status feed(std::span<const std::byte> bytes) {
    return feed(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  }
  sasl_status feed(std::string_view bytes) {
    if (status_ == sasl_status::failed) return status_;
    in_.append(bytes);
    if (status_ == sasl_status::authenticated) return status_;
    std::size_t start = 0;
    while (status_ == sasl_status::in_progress) {
      // A line ends at CRLF; a partial line waits for more bytes.
      const std::size_t scan_from = start + scanned_ > 0 ? start + scanned_ - 1 : start;
      const std::size_t eol = in_.find("\r\n", scan_from);
      if (eol == std::string::npos) {
        scanned_ = in_.size() - start;
        // One byte more than the limit may be the CR of a line that is just within it.
        if (scanned_ > sasl_max_line + 1) fail(errc::auth_protocol, "server line longer than 16 KiB", received_);
        break;
      }
      scanned_ = 0;
      if (eol - start > sasl_max_line) {
        fail(errc::auth_protocol, "server line longer than 16 KiB", received_);
        break;
      }
      const std::string line = in_.substr(start, eol - start);
      const std::size_t line_at = received_;
      received_ += eol + 2 - start;
      start = eol + 2;
      if (++lines_ > sasl_max_lines) {
        fail(errc::auth_protocol, "server sent too many lines without concluding", line_at);
        break;
      }
      handle_line(line, line_at);
    }
    in_.erase(0, start);
    return status_;
  }

  // The GUID from the server's OK line (hex, as sent); compare it with the address's guid=.
  std::string_view server_guid() const noexcept { return guid_; }
  bool unix_fd_agreed() const noexcept { return fd_agreed_; }
  // The mechanism being tried, or the one that succeeded.
  sasl_mechanism mechanism() const noexcept { return mech_; }
  // Bytes received after the final line: they belong to the first message.
  std::span<const std::byte> leftover() const noexcept {
    return status_ == sasl_status::authenticated ? std::as_bytes(std::span<const char>(in_.data(), in_.size()))
                                                 : std::span<const std::byte>{};
  }
  std::string take_leftover() {
    if (status_ != sasl_status::authenticated) return {};
    std::string out;
    out.swap(in_);
    return out;
  }

 private:
  // The spec's client states (section "Authentication state diagrams").
  enum class state : std::uint8_t {
    waiting_for_data,
    waiting_for_ok,
    waiting_for_reject,
    waiting_for_agree_unix_fd,
    done
  };

  void send_line(std::string_view line) {
    out_ += line;
    out_ += "\r\n";
  }

  void fail(errc code, const char* why, std::size_t offset = error::no_offset) {
    status_ = sasl_status::failed;
    state_ = state::done;
    failure_ = error(code, offset, why);
  }

  bool enabled(sasl_mechanism m) const noexcept {
    switch (m) {
      case sasl_mechanism::external: return opts_.external;
      case sasl_mechanism::dbus_cookie_sha1: return static_cast<bool>(opts_.cookies);
      case sasl_mechanism::anonymous: return opts_.anonymous;
    }
    return false;
  }
  static unsigned bit(sasl_mechanism m) noexcept { return 1u << static_cast<unsigned>(m); }

  // Sends AUTH for the first enabled, untried mechanism that the server offers (any, while the
  // server has not said). False when none is left.
  bool try_next_mechanism() {
    for (auto m : {sasl_mechanism::external, sasl_mechanism::dbus_cookie_sha1, sasl_mechanism::anonymous}) {
      if (!enabled(m) || (tried_ & bit(m))) continue;
      if (server_listed_ && !(server_mechs_ & bit(m))) continue;
      tried_ |= bit(m);
      mech_ = m;
      std::string line = "AUTH ";
      line += to_string(m);
      switch (m) {
        case sasl_mechanism::external:
          if (opts_.external_empty_response) {
            state_ = state::waiting_for_data;
          } else {
            line += ' ';
            detail::hex_append(line, std::to_string(uid_));
            state_ = state::waiting_for_ok;
          }
          break;
        case sasl_mechanism::dbus_cookie_sha1:
          line += ' ';
          detail::hex_append(line, std::to_string(uid_));
          state_ = state::waiting_for_data;
          break;
        case sasl_mechanism::anonymous:
          line += ' ';
          detail::hex_append(line, opts_.anonymous_trace);
          state_ = state::waiting_for_ok;
          break;
      }
      send_line(line);
      return true;
    }
    return false;
  }

  void rejected(std::string_view mechs, std::size_t at) {
    // "Clients are free to ignore all lists received after the first": the list is fixed.
    if (!server_listed_) {
      while (!mechs.empty()) {
        const std::size_t sp = mechs.find(' ');
        const std::string_view name = mechs.substr(0, sp);
        for (auto m : {sasl_mechanism::external, sasl_mechanism::dbus_cookie_sha1, sasl_mechanism::anonymous})
          if (name == to_string(m)) server_mechs_ |= bit(m);
        if (!name.empty()) server_listed_ = true;
        mechs = sp == std::string_view::npos ? std::string_view{} : mechs.substr(sp + 1);
      }
    }
    if (!try_next_mechanism()) fail(errc::auth_rejected, "server rejected every mechanism mcbus offers", at);
  }

  void ok(std::string_view guid, std::size_t at) {
    bool valid = !guid.empty() && guid.size() % 2 == 0 && guid.size() <= 64;
    for (char c : guid) valid = valid && detail::sasl_hex(c) >= 0;
    if (!valid) return fail(errc::auth_protocol, "OK without a hex GUID", at);
    guid_ = std::string(guid);
    if (opts_.negotiate_unix_fd) {
      send_line("NEGOTIATE_UNIX_FD");
      state_ = state::waiting_for_agree_unix_fd;
    } else {
      begin();
    }
  }

  void begin() {
    send_line("BEGIN");
    state_ = state::done;
    status_ = sasl_status::authenticated;
  }

  // A server challenge for the current mechanism, while waiting for data.
  void data(std::string_view hex) {
    const auto challenge = detail::hex_decode(hex);
    if (!challenge) return send_line("ERROR invalid hex encoding");
    switch (mech_) {
      case sasl_mechanism::external:
        // The empty challenge asks for the identity; the empty answer means "as the kernel says".
        if (!challenge->empty()) return send_line("ERROR EXTERNAL expects an empty challenge");
        send_line("DATA");
        state_ = state::waiting_for_ok;
        return;
      case sasl_mechanism::dbus_cookie_sha1: return cookie_challenge(*challenge);
      case sasl_mechanism::anonymous: return send_line("ERROR ANONYMOUS has no challenges");
    }
  }

  // DBUS_COOKIE_SHA1: the server sends "CONTEXT ID SERVER_CHALLENGE"; the client answers
  // "CLIENT_CHALLENGE HASH" with HASH = sha1("SERVER_CHALLENGE:CLIENT_CHALLENGE:COOKIE").
  void cookie_challenge(std::string_view text) {
    const std::size_t s1 = text.find(' ');
    const std::size_t s2 = s1 == std::string_view::npos ? s1 : text.find(' ', s1 + 1);
    if (s2 == std::string_view::npos) return send_line("ERROR expected context, cookie id and challenge");
    const std::string_view context = text.substr(0, s1), id = text.substr(s1 + 1, s2 - s1 - 1);
    const std::string_view server_challenge = text.substr(s2 + 1);
    bool id_ok = !id.empty();
    for (char c : id) id_ok = id_ok && c >= '0' && c <= '9';
    if (!detail::valid_keyring_context(context) || !id_ok || server_challenge.empty())
      return send_line("ERROR expected context, cookie id and challenge");
    const auto cookie = opts_.cookies(context, id);
    if (!cookie) return send_line("ERROR no cookie with that id");
    unsigned char random[16];  // 128 bits, as libdbus
    const bool have = opts_.random ? opts_.random(random) : detail::default_random(random);
    if (!have) return send_line("ERROR no random bytes for a challenge");
    std::string client_challenge;
    detail::hex_append(client_challenge, std::string_view(reinterpret_cast<const char*>(random), sizeof random));
    std::string hashed = std::string(server_challenge) + ":" + client_challenge + ":" + *cookie;
    std::string reply = client_challenge + " " + detail::sha1::hex(hashed);
    std::string line = "DATA ";
    detail::hex_append(line, reply);
    send_line(line);
    state_ = state::waiting_for_ok;
  }

  void handle_line(std::string_view line, std::size_t at) {
    // "COMMAND[ ARGS]": the command is [A-Z_]+; any other byte makes the line garbage, which the
    // spec answers like an unknown command.
    std::size_t n = 0;
    while (n < line.size() && ((line[n] >= 'A' && line[n] <= 'Z') || line[n] == '_')) ++n;
    bool garbage = n == 0 || (n < line.size() && line[n] != ' ');
    for (char c : line)
      garbage = garbage || static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e;
    const std::string_view cmd = garbage ? std::string_view{} : line.substr(0, n);
    std::string_view args = n < line.size() ? line.substr(n + 1) : std::string_view{};
    while (!args.empty() && args.front() == ' ') args.remove_prefix(1);
    while (!args.empty() && args.back() == ' ') args.remove_suffix(1);
    const bool known = cmd == "OK" || cmd == "REJECTED" || cmd == "DATA" || cmd == "ERROR" || cmd == "AGREE_UNIX_FD" ||
                       cmd == "AUTH" || cmd == "CANCEL" || cmd == "BEGIN" || cmd == "NEGOTIATE_UNIX_FD";

    switch (state_) {
      case state::waiting_for_data:
      case state::waiting_for_ok:
        if (cmd == "OK") return ok(args, at);
        if (cmd == "REJECTED") return rejected(args, at);
        if (cmd == "ERROR" || (cmd == "DATA" && state_ == state::waiting_for_ok)) {
          send_line("CANCEL");
          state_ = state::waiting_for_reject;
          return;
        }
        if (cmd == "DATA") return data(args);
        return send_line("ERROR unknown or unexpected command");
      case state::waiting_for_reject:
        if (cmd == "REJECTED") return rejected(args, at);
        return fail(errc::auth_protocol, "expected REJECTED after CANCEL", at);
      case state::waiting_for_agree_unix_fd:
        if (cmd == "AGREE_UNIX_FD" || cmd == "ERROR") {
          fd_agreed_ = cmd == "AGREE_UNIX_FD";
          return begin();
        }
        // New commands may come after OK ("Future Extensions"); known ones here are a broken server.
        if (known) return fail(errc::auth_protocol, "expected AGREE_UNIX_FD or ERROR after NEGOTIATE_UNIX_FD", at);
        return send_line("ERROR unknown command");
      case state::done: return;
    }
  }

  sasl_options opts_;
  std::uint32_t uid_ = 0;
  std::string out_;
  std::size_t sent_ = 0;
  std::string in_;
  std::size_t scanned_ = 0;   // bytes of in_ already searched for CRLF
  std::size_t received_ = 0;  // server bytes consumed as lines, for error offsets
  std::size_t lines_ = 0;
  state state_ = state::waiting_for_ok;
  sasl_status status_ = sasl_status::in_progress;
  error failure_;
  sasl_mechanism mech_ = sasl_mechanism::external;
  unsigned tried_ = 0;
  unsigned server_mechs_ = 0;
  bool server_listed_ = false;
  std::string guid_;
  bool fd_agreed_ = false;
};

MCBUS_NAMESPACE_END
