// Match rules against a real bus as the oracle.
//
// Python clients (python3-dbus) add match rules on a private dbus-daemon; the bus's verdict on each
// rule (AddMatch accepted or MatchRuleInvalid) must equal match_rule::parse(). Two raw mcbus
// connections, one little-endian and one big-endian, then emit random signals, some addressed to a
// subscriber, some to a well-known name, some to others; what the bus delivers to each subscriber
// must equal what matches() says for that connection (with the bus's name owners as the lookup),
// plus what is addressed to it. The same runs against dbus-broker, restricted to the keys its
// version 33 gets right (see DESIGN.md).
#include <mcbus/match.hpp>
#include <mcbus/wire.hpp>

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "../match/random_gen.hpp"
#include "raw_client.hpp"
#include "test_bus.hpp"

using namespace mcbus;

namespace {

const char* const python = "/usr/bin/python3";

bool have_python_dbus() {
  if (::access(python, X_OK) != 0) return false;
  return std::system("/usr/bin/python3 -c 'import dbus, dbus.mainloop.glib, gi.repository.GLib' >/dev/null 2>&1") == 0;
}

// A child process whose stdout we read line by line, with a deadline.
class child {
 public:
  bool start(const std::vector<std::string>& args) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return false;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const int rc = ::posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(fds[1]);
    fd_ = fds[0];
    return rc == 0;
  }
  ~child() {
    if (fd_ >= 0) ::close(fd_);
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  // The next line, or nothing once the deadline passes or the child closes its output.
  std::optional<std::string> line(std::chrono::steady_clock::time_point deadline) {
    for (;;) {
      if (const std::size_t nl = buf_.find('\n'); nl != std::string::npos) {
        std::string l = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return l;
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return std::nullopt;
      char tmp[65536];
      const ssize_t n = ::read(fd_, tmp, sizeof tmp);
      if (n <= 0) return std::nullopt;
      buf_.append(tmp, static_cast<std::size_t>(n));
    }
  }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  std::string buf_;
};

// A rule as subscriber.py reads it: hex, or "-" for the empty rule.
std::string hex(std::string_view s) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (char c : s) {
    out += digits[static_cast<unsigned char>(c) >> 4];
    out += digits[static_cast<unsigned char>(c) & 15];
  }
  return out.empty() ? "-" : out;
}

// Rule texts that show where dbus-daemon's parser departs from the specification or from
// dbus-broker, so the bus itself confirms the choice mcbus made.
const char* const quirks[] = {
    "arg0x1='foo'",
    "arg010='a'",
    "arg+1='a'",
    "arg-0='foo'",
    "arg-1='a'",
    "arg08='a'",
    "arg0x1fpath='/aa/'",
    "arg00namespace='a'",
    "===arg0=foo",
    " \t\n\r=arg0 \t\n\r=foo",
    "member='Changed',=junk,bogus",
    "arg0=\\',arg1=\\,arg2=',',arg3=\\\\",
    "arg0=''\\''',arg1='\\',arg2=',',arg3='\\\\'",
    "sender=':1'",
    "sender=':1.'",
    "arg0namespace=':1'",
    "type = signal",
    "eavesdrop='true',eavesdrop='false',member='Changed'",
    "arg0path=''",
    "arg0=''",
    ("arg0='a',arg1='a',arg2='a',arg3='a',arg4='a',arg5='a',arg6='a',arg7='a',arg8='a',arg9='a',arg10='a',"
     "arg11='a',arg12='a',arg13='a',arg14='a',arg15='a',colour='red'"),  // one rule, on two lines
    "path_namespace='/'",
    "member=Changed,arg0=foo\\",
};

struct sent {
  std::string sender;
  std::uint32_t serial;
  std::vector<std::byte> bytes;
};

struct round_result {
  int rules = 0;
  int parse_agree = 0;
  long pairs = 0;
  long delivered = 0;
  long eavesdropped = 0;  // delivered although addressed to another connection
  std::vector<std::string> problems;
};

// Rules dbus-broker 33 judges as dbus-daemon does: no eavesdropping (it refuses it), no
// destination key (it ignores it), no path_namespace='/' (matches nothing), arguments only on
// arg0 (it reads arg0 for every argN).
bool broker_safe(const match_rule& r) {
  if (r.eavesdrop() || r.destination() || r.path_namespace() == "/") return false;
  for (std::size_t i = 0; i < r.arg_count(); ++i) {
    if (r.arg(i).index != 0) return false;
  }
  return true;
}

round_result run_round(mcbus_test::test_bus& bus, std::uint64_t seed, int subscribers, int per_emitter) {
  round_result res;
  const bool broker = bus.kind() == mcbus_test::bus_kind::dbus_broker;
  mcbus_test::prng r(seed);
  std::string why;
  mcbus_test::raw_client emitters[2];
  const byte_order orders[2] = {byte_order::little, byte_order::big};
  const char* names[2] = {"org.mcbus.Test.EmitLE", "org.mcbus.Test.EmitBE"};
  for (int e = 0; e < 2; ++e) {
    if (!emitters[e].connect(bus.socket_path(), orders[e], why)) {
      res.problems.push_back("emitter: " + why);
      return res;
    }
    if (!emitters[e].request_name(names[e])) res.problems.push_back(std::string("RequestName ") + names[e]);
  }

  // Each subscriber gets a few random rules, some aimed at the emitters, and a share of the quirks.
  std::vector<std::vector<std::string>> texts(static_cast<std::size_t>(subscribers));
  std::size_t next_quirk = static_cast<std::size_t>(seed) % std::size(quirks);
  for (int i = 0; i < subscribers; ++i) {
    auto& t = texts[static_cast<std::size_t>(i)];
    const int n = 1 + static_cast<int>(r.below(4));
    for (int k = 0, tries = 0; k < n && tries < 200; ++tries) {
      match_rule rule = mcbus_test::random_rule(r);
      switch (r.below(6)) {
        case 0: (void)rule.set_sender(emitters[r.below(2)].unique_name()); break;
        case 1: (void)rule.set_sender(names[r.below(2)]); break;
        case 2:
          (void)rule.set_destination(r.below(2) ? "org.mcbus.Test.Sub" + std::to_string(r.below(subscribers))
                                                : emitters[r.below(2)].unique_name());
          break;
        default: break;
      }
      if (broker && !broker_safe(rule)) continue;
      t.push_back(rule.to_string());
      ++k;
    }
    if (!broker) {
      for (int q = 0; q < 2; ++q) t.push_back(quirks[next_quirk++ % std::size(quirks)]);
    }
  }
  char dir[] = "/tmp/mcbus-match-XXXXXX";
  if (!::mkdtemp(dir)) {
    res.problems.push_back("mkdtemp");
    return res;
  }
  const std::string spec = std::string(dir) + "/spec";
  {
    std::ofstream out(spec);
    for (const auto& t : texts) {
      for (const auto& rule : t) out << hex(rule) << ' ';
      out << '\n';
    }
  }
  child py;
  const std::string script = std::string(MCBUS_SOURCE_DIR) + "/tests/match_integration/subscriber.py";
  if (!py.start({python, script, bus.address(), spec, "2"})) {
    res.problems.push_back("cannot start python");
    return res;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(150);
  std::vector<std::string> unique(static_cast<std::size_t>(subscribers));
  std::map<std::pair<int, int>, bool> accepted;
  for (;;) {
    auto l = py.line(deadline);
    if (!l) {
      res.problems.push_back("subscriber script stopped before READY");
      return res;
    }
    std::istringstream in(*l);
    std::string word;
    in >> word;
    if (word == "READY") break;
    int i = 0;
    int n = 0;
    std::string verdict;
    if (word == "UNIQUE") {
      in >> i;
      in >> unique[static_cast<std::size_t>(i)];
    } else if (word == "ADD") {
      in >> i >> n >> verdict;
      accepted[{i, n}] = verdict == "OK";
    }
  }

  // The parse oracle: the bus and match_rule::parse() accept and refuse the same texts.
  std::vector<std::vector<match_rule>> rules(static_cast<std::size_t>(subscribers));
  for (int i = 0; i < subscribers; ++i) {
    for (int n = 0; n < static_cast<int>(texts[static_cast<std::size_t>(i)].size()); ++n) {
      const std::string& text = texts[static_cast<std::size_t>(i)][static_cast<std::size_t>(n)];
      auto parsed =
          match_rule::parse(text, {.syntax = broker ? match_syntax::specification : match_syntax::dbus_daemon});
      ++res.rules;
      if (parsed.has_value() == accepted[{i, n}]) {
        ++res.parse_agree;
      } else {
        res.problems.push_back("parse: \"" + text + "\": bus " + (accepted[{i, n}] ? "accepts" : "refuses") +
                               ", mcbus " + (parsed ? "accepts" : "refuses: " + parsed.error().message()));
      }
      if (parsed && accepted[{i, n}]) rules[static_cast<std::size_t>(i)].push_back(*parsed);
    }
  }

  // Signals: random content, random destinations among names that exist.
  std::vector<name_owner> owners = {{names[0], emitters[0].unique_name()}, {names[1], emitters[1].unique_name()}};
  std::vector<std::string> sub_names;
  for (int i = 0; i < subscribers; ++i) sub_names.push_back("org.mcbus.Test.Sub" + std::to_string(i));
  for (int i = 0; i < subscribers; ++i)
    owners.push_back({sub_names[static_cast<std::size_t>(i)], unique[static_cast<std::size_t>(i)]});
  std::vector<sent> messages;
  for (int k = 0; k < per_emitter; ++k) {
    for (int e = 0; e < 2; ++e) {
      auto m = message::signal(object_path_view::from(mcbus_test::pick(r, mcbus_test::pools::paths)).value(),
                               interface_name::from(mcbus_test::pick(r, mcbus_test::pools::interfaces)).value(),
                               member_name::from(mcbus_test::pick(r, mcbus_test::pools::members)).value(), orders[e]);
      m.set_sender(bus_name::from(emitters[e].unique_name()).value());
      switch (r.below(10)) {
        case 0: m.set_destination(bus_name::from(unique[r.below(subscribers)]).value()); break;
        case 1: m.set_destination(bus_name::from(sub_names[r.below(subscribers)]).value()); break;
        case 2:
          m.set_destination(bus_name::from(r.below(2) ? emitters[1 - e].unique_name() : names[1 - e]).value());
          break;
        default: break;
      }
      const unsigned nargs = r.below(5);
      for (unsigned a = 0; a < nargs; ++a) mcbus_test::random_arg(r, m, r.below(3) != 0);
      const std::uint32_t serial = emitters[e].send(m);
      if (!serial) {
        res.problems.push_back("send failed");
        return res;
      }
      messages.push_back({emitters[e].unique_name(), serial, m.to_bytes().value()});
      if (k % 16 == 0) emitters[e].drain();
    }
  }
  for (int e = 0; e < 2; ++e) {
    for (int i = 0; i < subscribers; ++i) {
      auto m = message::signal("/", "org.mcbus.Test.Control", "Sentinel", orders[e]);
      m.set_destination(bus_name::from(unique[static_cast<std::size_t>(i)]).value());
      emitters[e].send(m);
    }
    emitters[e].drain();
  }

  std::set<std::tuple<int, std::string, std::uint32_t>> got;
  bool done = false;
  while (auto l = py.line(deadline)) {
    std::istringstream in(*l);
    std::string word;
    in >> word;
    if (word == "DONE") {
      done = true;
      break;
    }
    if (word == "GOT") {
      int i = 0;
      std::string sender;
      std::uint32_t serial = 0;
      in >> i >> sender >> serial;
      got.insert({i, sender, serial});
    }
  }
  if (!done) {
    res.problems.push_back("subscriber script did not finish (timeout or crash)");
    return res;
  }

  for (int i = 0; i < subscribers; ++i) {
    const std::string& me = unique[static_cast<std::size_t>(i)];
    const match_context ctx{me, owners};
    for (const sent& s : messages) {
      const auto view = message_view::parse(s.bytes).value();
      const auto& h = view.header();
      const bool addressed = h.has(header_field::destination) &&
                             (h.destination == me || h.destination == sub_names[static_cast<std::size_t>(i)]);
      bool expect = addressed;
      for (const match_rule& rule : rules[static_cast<std::size_t>(i)]) expect = expect || rule.matches(view, ctx);
      const bool delivered = got.count({i, s.sender, s.serial}) > 0;
      ++res.pairs;
      res.delivered += delivered;
      res.eavesdropped += delivered && h.has(header_field::destination) && !addressed;
      if (expect != delivered) {
        std::string d = "delivery to subscriber " + std::to_string(i) + " (" + me + "): bus " +
                        (delivered ? "delivered" : "did not deliver") + ", matches() says " +
                        (expect ? "match" : "no match") + "; message from " + s.sender + " serial " +
                        std::to_string(s.serial) + " dest '" + std::string(h.destination) + "' member " +
                        std::string(h.member) + " sig '" + std::string(h.signature) + "'; rules:";
        for (const match_rule& rule : rules[static_cast<std::size_t>(i)]) d += " [" + rule.to_string() + "]";
        res.problems.push_back(d);
      }
    }
  }
  std::filesystem::remove_all(dir);
  return res;
}

void run_against(mcbus_test::bus_kind kind, int rounds, int subscribers, int per_emitter) {
  if (!have_python_dbus()) GTEST_SKIP() << "python3-dbus or python3-gi is missing for /usr/bin/python3";
  std::string why;
  mcbus_test::test_bus* bus = mcbus_test::shared_bus(kind, why);
  if (!bus) GTEST_SKIP() << why;
  round_result total;
  for (int round = 0; round < rounds; ++round) {
    round_result res = run_round(*bus, 1000 + static_cast<std::uint64_t>(round), subscribers, per_emitter);
    total.rules += res.rules;
    total.parse_agree += res.parse_agree;
    total.pairs += res.pairs;
    total.delivered += res.delivered;
    total.eavesdropped += res.eavesdropped;
    for (auto& p : res.problems) total.problems.push_back("round " + std::to_string(round) + ": " + p);
  }
  std::printf(
      "[ %s ] %d rules, parse verdicts agree on %d; %ld (subscriber, signal) pairs, %ld delivered (%ld of them "
      "addressed to another connection)\n",
      mcbus_test::to_string(kind), total.rules, total.parse_agree, total.pairs, total.delivered, total.eavesdropped);
  for (std::size_t i = 0; i < total.problems.size() && i < 30; ++i) ADD_FAILURE() << total.problems[i];
  EXPECT_TRUE(total.problems.empty()) << total.problems.size() << " disagreements";
  EXPECT_GT(total.pairs, 0);
}

TEST(MatchIntegration, DbusDaemonIsTheOracle) { run_against(mcbus_test::bus_kind::dbus_daemon, 6, 10, 200); }

TEST(MatchIntegration, DbusBrokerAgreesOnWhatItGetsRight) { run_against(mcbus_test::bus_kind::dbus_broker, 4, 8, 150); }

}  // namespace
