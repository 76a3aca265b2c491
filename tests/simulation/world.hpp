// A deterministic simulated world for the multicast fast path: a bus daemon, publishers, members
// and their group sockets, driven by one random number generator. The logic under test is the
// library's own, unchanged: member_route (the publisher's side of each member's stream),
// stream_merge, delivery_gate and member_machine (the member side). Only the I/O is simulated.
//
// The reference is a shadow subscriber: for every subscription the daemon also records, at the
// moment it routes each signal, what a plain bus subscriber with the same rule, added at the same
// moment, would receive. The contract is checked against it.
#pragma once

#include <mcbus/multicast/member.hpp>
#include <mcbus/multicast/route.hpp>
#include <mcbus/multicast/stream.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace sim {

using namespace mcbus::multicast;
using clock = std::chrono::steady_clock;
inline const std::string well_known = "W";

struct signal_id {
  int publisher;  // connection index
  std::uint32_t serial;
  bool operator==(const signal_id&) const = default;
};

// A rule: a sender (the well-known name or a unique name) and the topics it wants.
struct rule {
  std::string sender;
  std::uint32_t topics;
  std::string text() const { return sender + "/" + std::to_string(topics); }
};

enum class kind : std::uint8_t {
  signal,
  join,
  leave,
  probe,
  join_reply,
  probe_reply,
  add_match,
  remove_match,
  noc,
  death,
  own,
  own_reply,  // RequestName's reply: ok = primary owner, otherwise queued
  acquired    // NameAcquired, to a queued owner that got the name
};

struct bus_message {
  kind k = kind::signal;
  int from = -1;
  int to = -1;  // -1: broadcast, -2: the daemon
  std::uint32_t serial = 0;
  int topic = 0;
  bool copy = false;      // a unicast copy of a broadcast signal (fallback or overflow)
  bool virtual_ = false;  // no bus copy was sent: only the shadow sees it
  bool ok = true;
  join_outcome outcome = join_outcome::joined;
  int socket = -1;
  std::uint32_t reply_to = 0;
  std::uint32_t flags = 0;  // Join flags
  std::uint32_t until = 0;  // Join reply to join_replay: the last serial replayed
  std::uint64_t sub = 0;    // add_match: the subscription it activates (0: none)
  std::vector<std::string> rules;
  std::string text;
  std::string owner;
  std::uint64_t routed = 0;
};

struct packet {
  std::uint32_t serial;
  packet_kind kind;
  int topic;
  loss lost;
};

struct socket {
  std::deque<packet> queue;
  std::size_t capacity = 1;
  bool closed = false;  // the publisher's end is closed: end of file after the queue
  bool watched = false;
  int publisher = -1, member = -1;
};

struct connection {
  std::string name;
  bool alive = true;
  std::deque<bus_message> out, in;
  std::uint32_t serial = 0;
  std::multiset<std::string> matches;
  bool tracks_owner = false;
  std::uint32_t next_serial() { return ++serial == 0 ? ++serial : serial; }
};

struct publisher_entry {
  std::uint32_t serial = 0;
  entry_kind kind = entry_kind::packet;
  int topic = 0;
  bool copy = true;  // a bus entry that is a unicast copy of a broadcast signal
  loss lost{};
};

struct publisher_member {
  member_route<publisher_entry> route;
  int socket = -1;
  int next_socket = -1;
  std::vector<rule> rules;
  std::vector<rule> next_rules;
  bus_message next_reply;
  bool unwritten = false;
  std::optional<std::uint32_t> awaiting_reply;  // replayed to: its stream starts once the reply left
};

struct completion {
  int member;
  int socket;
  std::size_t index;
  bool ok;
};

// A signal the publisher recorded for replays, and whether it believed it owned the name then.
struct recorded {
  std::uint32_t serial;
  int topic;
  bool big;
  bool owned;
};

struct publisher {
  int conn = -1;
  bool alive = true;
  bool started = false;  // RequestName answered: it emits only then, as a real one blocks on it
  bool owns = false;     // as it knows it: from the reply, or NameAcquired
  std::size_t record_cap = 16;
  std::vector<recorded> record;
  overflow_policy policy = overflow_policy::bus;
  std::map<int, publisher_member> members;  // by member connection
  std::deque<std::pair<std::uint32_t, std::optional<bus_message>>> fifo;
  int unwritten = 0;
  std::deque<completion> completions;
  std::deque<std::pair<int, int>> writable;  // (member, socket)
};

struct held {
  std::uint32_t serial;
  packet_kind kind;
  packet p;
};

struct subscription {
  std::uint64_t id;
  int member;
  rule r;
  bool active = false;
  std::uint64_t active_from = 0;
  std::vector<signal_id> log, shadow;
  std::vector<signal_id> window;  // shadow entries routed in the successor window
};

struct group {
  int socket = -1;
  std::deque<int> next_sockets;
  stream_merge<held> merge;
  bool closing = false;
  bool ended = false;  // the socket reached its end while a re-join was under way
  bool lose_when_handled = false;
  std::string publisher;
};

// A successor's bus copies, held until its replay is in.
struct successor_hold {
  std::vector<bus_message> copies;
  std::optional<std::uint32_t> until;
  std::uint32_t reply = 0;
  bool owned = false;  // it owned the name when the copies came
  origin origin_of(std::uint32_t serial) const {
    return until && !serial_before(serial, reply) ? origin::broadcast : origin::backfill;
  }
};

struct member {
  int conn = -1;
  member_machine machine;
  std::map<std::string, group> groups;
  std::map<std::uint32_t, std::pair<kind, std::string>> pending;
  std::set<std::uint32_t> replay_calls;  // Joins sent with join_replay
  std::map<std::string, successor_hold> holds;
  std::vector<std::pair<std::string, loss>> gaps;
  std::vector<std::string> problems;
};

// Knobs of one schedule, all drawn from its seed.
struct config {
  int members = 2;
  int subscriptions = 2;  // per member at most
  int steps = 150;
  int topics = 3;
  bool restart = false;
  bool drop = false;
  double big = 0.05;       // signals too large for a packet
  double targeted = 0.03;  // signals addressed to one member
};

struct result {
  bool ok = true;
  std::string why;
  std::uint64_t compared = 0;
  std::uint64_t successor_window = 0;   // signals missed in the successor window that no replay could give
  std::uint64_t replayed = 0;           // signals a new owner replayed to a member that followed its name
  std::uint64_t killed_extra = 0;       // signals a killed publisher wrote to members but not to the bus
  std::uint64_t killed_unreported = 0;  // drop policy: discarded by a publisher killed before its notice
  std::uint64_t early_extra = 0;        // copies that reached a new subscription just before its rule was in place
};

}  // namespace sim
