// The SASL client against upstream conversations:
// - dbus 1.14.10's auth scripts (test/data/auth/*.auth-script), run by a runner for the script
//   language of dbus's test/internals/dbus-auth-script.c. CLIENT scripts run; SERVER scripts are
//   skipped, because mcbus has no SASL server.
// - dbus-broker v33's server conversations (src/dbus/test-sasl.c), used as a model server.
#include <mcbus/io/sasl.hpp>

#include <gtest/gtest.h>
#include <test_support.hpp>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace fs = std::filesystem;
using mcbus::sasl_client;
using mcbus::sasl_status;

fs::path auth_dir() { return mcbus_test::conformance_dir() / "dbus-1.14.10" / "auth"; }

// The outcome of one script: "" when it passed, else what went wrong and on which line.
struct script_result {
  bool skipped = false;
  std::string failure;
};

// dbus-auth-script.c's quoting: 'quoted text' with \r, \n and \\ escapes; unquoted text ends at
// whitespace.
bool unquote(std::string_view in, std::string& out) {
  bool quoted = false, backslash = false;
  for (char b : in) {
    if (backslash) {
      if (b == 'r')
        out += '\r';
      else if (b == 'n')
        out += '\n';
      else if (b == '\\')
        out += '\\';
      else
        return false;
      backslash = false;
    } else if (b == '\\') {
      backslash = true;
    } else if (quoted) {
      if (b == '\'')
        quoted = false;
      else
        out += b;
    } else if (b == '\'') {
      quoted = true;
    } else if (b == ' ' || b == '\n' || b == '\t') {
      break;
    } else {
      out += b;
    }
  }
  return true;
}

std::string first_word(std::string_view s) {
  const std::size_t blank = s.find_first_of(" \t");
  return std::string(s.substr(0, blank));
}

std::string hex_of(std::string_view raw) {
  std::string out;
  mcbus::detail::hex_append(out, raw);
  return out;
}

// Runs one script against mcbus's client. The client is configured as libdbus's DBusAuth client
// is in dbus-auth-script.c: every mechanism enabled, no unix fd passing.
script_result run_auth_script(const std::string& text) {
  script_result res;
  std::istringstream in(text);
  std::string raw;
  int line_no = 0;
  bool client_mode = false;
  std::unique_ptr<sasl_client> auth;
  std::string from_auth;  // what the client sent, not yet checked
  bool saw_nul = false;   // libdbus sends the credentials byte outside DBusAuth
  const auto fail = [&](const std::string& why) {
    res.failure = "line " + std::to_string(line_no) + ": " + why;
    return res;
  };
  const auto state_name = [&]() -> std::string {
    switch (auth->status()) {
      case sasl_status::in_progress: return "WAITING_FOR_INPUT";
      case sasl_status::authenticated: return "AUTHENTICATED";
      case sasl_status::failed: return "NEED_DISCONNECT";
    }
    return "INVALID";
  };
  while (std::getline(in, raw)) {
    ++line_no;
    std::string_view line = raw;
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (auth) {
      std::string out(auth->output_text());
      auth->consume(out.size());
      if (!saw_nul && !out.empty()) {
        if (out[0] != '\0') return fail("the client's first byte is not the credentials NUL");
        out.erase(0, 1);
        saw_nul = true;
      }
      from_auth += out;
    }
    const auto starts = [&](std::string_view w) { return line.substr(0, w.size()) == w; };
    const std::string_view rest = line.substr(std::min(line.size(), first_word(line).size()));
    const std::string_view arg = rest.substr(std::min(rest.size(), rest.find_first_not_of(" \t")));
    if (line.empty() || starts("#") || starts("UNIX_ONLY")) continue;
    if (starts("WIN_ONLY")) {
      res.skipped = true;
      return res;
    }
    if (starts("SERVER")) {
      res.skipped = true;
      return res;
    }
    if (starts("CLIENT")) {
      if (client_mode) return fail("CLIENT given twice");
      client_mode = true;
      mcbus::sasl_options o;
      o.anonymous = true;
      // DBUS_COOKIE_SHA1 enabled as in libdbus; no script gets as far as needing a cookie.
      o.cookies = [](std::string_view, std::string_view) { return std::optional<std::string>(); };
      auth = std::make_unique<sasl_client>(o);
      continue;
    }
    if (!auth) return fail("must specify CLIENT or SERVER");
    if (starts("SEND")) {
      std::string to_send;
      if (!unquote(arg, to_send)) return fail("bad quoting");
      to_send += "\r\n";
      if (const auto at = to_send.find("USERID_HEX"); at != std::string::npos)
        to_send.replace(at, 10, hex_of(std::to_string(::geteuid())));
      auth->feed(to_send);
    } else if (starts("EXPECT_STATE")) {
      if (first_word(arg) != state_name()) return fail("expected state " + std::string(arg) + ", got " + state_name());
    } else if (starts("EXPECT_COMMAND")) {
      const std::size_t eol = from_auth.find("\r\n");
      if (eol == std::string::npos) return fail("no line from the client, expected " + std::string(arg));
      const std::string got = from_auth.substr(0, eol);
      from_auth.erase(0, eol + 2);
      if (first_word(got) != first_word(arg))
        return fail("expected command " + std::string(arg) + ", got '" + got + "'");
    } else if (starts("EXPECT_UNUSED")) {
      std::string expected;
      if (!unquote(arg, expected)) return fail("bad quoting");
      const std::string unused = auth->take_leftover();
      if (unused != expected) return fail("expected unused bytes '" + expected + "', have '" + unused + "'");
    } else if (starts("EXPECT_HAVE") || starts("NO_CREDENTIALS") || starts("ROOT_CREDENTIALS") ||
               starts("SILLY_CREDENTIALS") || starts("ALLOWED_MECHS")) {
      return fail("'" + first_word(line) + "' is for SERVER scripts; the runner does not model it for clients");
    } else if (starts("EXPECT")) {
      std::string expected;
      if (!unquote(arg, expected)) return fail("bad quoting");
      if (from_auth.substr(0, expected.size()) != expected)
        return fail("expected exact string '" + expected + "', have '" + from_auth + "'");
      from_auth.erase(0, expected.size());
    } else {
      return fail("cannot parse '" + std::string(line) + "'");
    }
  }
  if (!auth) return fail("script has neither CLIENT nor SERVER");
  if (auth->authenticated() && !auth->leftover().empty()) return fail("unused bytes the script did not expect");
  if (!from_auth.empty()) return fail("client sent data the script did not EXPECT: '" + from_auth + "'");
  return res;
}

std::vector<std::string> script_names() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(auth_dir(), ec))
    if (e.path().extension() == ".auth-script") names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  if (names.empty()) names.push_back("(none)");  // keeps the suite instantiated; the test skips
  return names;
}

class AuthScript : public ::testing::TestWithParam<std::string> {};

TEST_P(AuthScript, Runs) {
  const fs::path p = auth_dir() / GetParam();
  if (!fs::exists(p)) GTEST_SKIP() << "no dbus auth scripts at " << auth_dir();
  const script_result r = run_auth_script(mcbus_test::read_text(p));
  if (r.skipped) GTEST_SKIP() << "SERVER script: mcbus implements only the client side of SASL";
  EXPECT_EQ(r.failure, "") << GetParam();
}

INSTANTIATE_TEST_SUITE_P(Dbus, AuthScript, ::testing::ValuesIn(script_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param;
                           n = n.substr(0, n.find('.'));
                           for (char& c : n)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n.empty() ? std::string("none") : n;
                         });

TEST(AuthScriptRunner, FindsTheFourClientScripts) {
  if (!fs::exists(auth_dir())) GTEST_SKIP() << "no dbus auth scripts at " << auth_dir();
  std::set<std::string> clients;
  for (const auto& name : script_names()) {
    const std::string text = mcbus_test::read_text(auth_dir() / name);
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("CLIENT", 0) == 0) clients.insert(name);
  }
  EXPECT_EQ(clients,
            (std::set<std::string>{"anonymous-client-successful.auth-script", "client-out-of-mechanisms.auth-script",
                                   "fallback.auth-script", "invalid-command-client.auth-script"}));
}

TEST(AuthScriptRunner, CatchesAWrongClient) {
  // The runner must be able to fail: each script is right except for one expectation.
  EXPECT_NE(run_auth_script("CLIENT\nEXPECT_COMMAND BEGIN\n").failure, "");
  EXPECT_NE(run_auth_script("CLIENT\nEXPECT_COMMAND AUTH\nSEND 'OK 00'\nEXPECT_STATE WAITING_FOR_INPUT\n").failure, "");
  EXPECT_NE(run_auth_script("CLIENT\nEXPECT_COMMAND AUTH\nSEND 'OK 00'\nEXPECT_STATE AUTHENTICATED\n").failure, "")
      << "BEGIN was not expected";
  EXPECT_NE(run_auth_script("CLIENT\nEXPECT_COMMAND AUTH\nSEND 'OK 00\\r\\nxy'\nEXPECT_COMMAND BEGIN\n").failure, "")
      << "unused bytes were not expected";
  EXPECT_EQ(run_auth_script("CLIENT\nEXPECT_COMMAND AUTH\nSEND 'OK 00\\r\\nxy'\nEXPECT_COMMAND BEGIN\n"
                            "EXPECT_STATE AUTHENTICATED\nEXPECT_UNUSED 'xy\\r\\n'\n")
                .failure,
            "");
  EXPECT_EQ(run_auth_script("CLIENT\nEXPECT 'AUTH '\nEXPECT_COMMAND EXTERNAL\n").failure, "");
}

// ---- dbus-broker's server conversations ---------------------------------------------------------

// Replies of dbus-broker's SASL server (uid 1, guid "0123456789abcdef") by client line, taken from
// the conversations of its test-sasl.c. "-" means no reply (after BEGIN).
struct broker_model {
  std::map<std::string, std::string> reply;
  std::set<std::string> first_lines;  // lines that open a conversation (with the NUL)
};

broker_model load_broker_model() {
  broker_model m;
  std::string last_conv;
  for (const auto& row : mcbus_test::read_tsv(mcbus_test::conformance_dir() / "dbus-broker-33" / "sasl-server.tsv")) {
    if (row.size() != 3) continue;
    if (row[0] != last_conv) m.first_lines.insert(row[1]);
    last_conv = row[0];
    m.reply[row[1]] = row[2];
  }
  return m;
}

struct broker_run {
  sasl_status status = sasl_status::in_progress;
  std::vector<std::string> sent;
  std::string unknown;  // a line the model has no reply for
};

// Plays the model server against the client until the client finishes or sends a line that
// dbus-broker's conversations do not cover.
broker_run converse(const broker_model& m, mcbus::sasl_options o) {
  broker_run r;
  sasl_client c(std::move(o));
  for (int round = 0; round < 16 && c.status() == sasl_status::in_progress; ++round) {
    std::string out(c.output_text());
    c.consume(out.size());
    std::size_t pos = 0;
    std::string replies;
    while (pos < out.size()) {
      const std::size_t eol = out.find("\r\n", pos);
      if (eol == std::string::npos) break;
      const std::string line = out.substr(pos, eol - pos);
      pos = eol + 2;
      r.sent.push_back(line);
      auto it = m.reply.find(line);
      if (it == m.reply.end()) {
        r.unknown = line;
        r.status = c.status();
        return r;
      }
      if (it->second != "-") replies += it->second + "\r\n";
    }
    c.feed(replies);
  }
  std::string out(c.output_text());
  if (out.size() >= 2) r.sent.push_back(out.substr(0, out.size() - 2));
  r.status = c.status();
  return r;
}

class BrokerSasl : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(mcbus_test::conformance_dir() / "dbus-broker-33" / "sasl-server.tsv"))
      GTEST_SKIP() << "no dbus-broker conformance data";
    model_ = load_broker_model();
    ASSERT_GE(model_.reply.size(), 8u);
  }
  broker_model model_;
};

TEST_F(BrokerSasl, ExternalWithTheRightUid) {
  mcbus::sasl_options o;
  o.uid = 1;
  const auto r = converse(model_, o);
  EXPECT_EQ(r.unknown, "");
  EXPECT_EQ(r.status, sasl_status::authenticated);
  ASSERT_EQ(r.sent.size(), 2u);
  EXPECT_EQ(r.sent[0], std::string("\0AUTH EXTERNAL 31", 17));
  EXPECT_TRUE(model_.first_lines.count(r.sent[0]));
  EXPECT_EQ(r.sent[1], "BEGIN");
}

TEST_F(BrokerSasl, ExternalWithTheWrongUidIsRejected) {
  mcbus::sasl_options o;
  o.uid = 0;
  const auto r = converse(model_, o);
  EXPECT_EQ(r.unknown, "");
  EXPECT_EQ(r.status, sasl_status::failed);
}

TEST_F(BrokerSasl, EmptyResponseDataAndFdNegotiation) {
  // Conversation 7, the one dbus-broker's own client has.
  mcbus::sasl_options o;
  o.uid = 1;
  o.external_empty_response = true;
  o.negotiate_unix_fd = true;
  const auto r = converse(model_, o);
  EXPECT_EQ(r.unknown, "");
  EXPECT_EQ(r.status, sasl_status::authenticated);
  EXPECT_EQ(r.sent,
            (std::vector<std::string>{std::string("\0AUTH EXTERNAL", 14), "DATA", "NEGOTIATE_UNIX_FD", "BEGIN"}));
}

TEST_F(BrokerSasl, PipelinedServerRepliesOfItsClientTest) {
  // test-sasl.c's client test feeds DATA, OK and AGREE_UNIX_FD back to back.
  mcbus::sasl_options o;
  o.external_empty_response = true;
  o.negotiate_unix_fd = true;
  sasl_client c(o);
  c.consume(c.output().size());
  EXPECT_EQ(c.feed("DATA\r\nOK 30313233343536373839616263646566\r\nAGREE_UNIX_FD\r\n"), sasl_status::authenticated);
  EXPECT_EQ(c.output_text(), "DATA\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n");
  EXPECT_EQ(c.server_guid(), "30313233343536373839616263646566");
  EXPECT_TRUE(c.unix_fd_agreed());
}

TEST_F(BrokerSasl, EveryCommandTheClientSendsIsOneBrokerKnows) {
  // dbus-broker drops the connection after an unknown command; the client must never send one.
  const std::set<std::string> broker_commands = {"AUTH", "DATA", "BEGIN", "CANCEL", "ERROR", "NEGOTIATE_UNIX_FD"};
  for (bool empty : {false, true})
    for (bool fds : {false, true})
      for (std::uint32_t uid : {0u, 1u}) {
        mcbus::sasl_options o;
        o.uid = uid;
        o.external_empty_response = empty;
        o.negotiate_unix_fd = fds;
        const auto r = converse(model_, o);
        EXPECT_EQ(r.unknown, "");
        for (std::string line : r.sent) {
          if (!line.empty() && line[0] == '\0') line.erase(0, 1);
          EXPECT_TRUE(broker_commands.count(first_word(line))) << line;
        }
      }
}

}  // namespace
