// mcbus/multicast: the org.mcbus.Multicast1 protocol, as constants. docs/multicast-protocol.md
// describes it in full.
//
// A publisher exports /org/mcbus/Multicast1 with:
//   Join(as rules, u flags) -> (h socket, u version, u max_packet [, u replayed_until])
//   Leave() -> ()
// and sends each member its packets on the returned AF_UNIX SOCK_SEQPACKET socket, filtered by a
// locked classic-BPF program compiled from the member's rules. Messages larger than max_packet
// go to the member by unicast over the bus, announced in its packet stream by a Unicast marker,
// so that the member handles everything in the publisher's serial order.
#pragma once

#include <mcbus/io/packets.hpp>
#include <mcbus/wire/message.hpp>
#include <mcbus/wire/names.hpp>

#include <cstdint>
#include <string_view>

MCBUS_NAMESPACE_BEGIN
namespace multicast {

inline constexpr interface_name interface = "org.mcbus.Multicast1";
inline constexpr object_path_view path = "/org/mcbus/Multicast1";
inline constexpr member_name join_method = "Join";
inline constexpr member_name leave_method = "Leave";
// Signal a publisher may send a member by unicast over the bus when it ends the membership
// (mcbus publishers never drop a member for being slow; a member handles it all the same).
inline constexpr member_name dropped_signal = "Dropped";
// Marker packet: "the message with my serial comes to you over the bus"; never on the bus.
inline constexpr member_name unicast_marker = "Unicast";
// Loss notice packet, only under overflow_policy::drop: Lost(u first, u last, u count), with the
// serial of the last packet lost.
inline constexpr member_name lost_notice = "Lost";

inline constexpr std::uint32_t version = 1;
// Join flags; a publisher refuses unknown bits.
//   join_replay: the caller followed a well-known name here from its previous owner, and had no
//     rule on the bus for a moment. The publisher replays, ahead of everything else on the new
//     socket, what it recorded in the first seconds after taking its names that matches the rules
//     naming a well-known name, and the reply gains a fourth value: the serial of the last signal
//     replayed (0: none). Only a new member is replayed to.
inline constexpr std::uint32_t join_replay = 1;
inline constexpr std::uint32_t known_join_flags = join_replay;

namespace errors {
inline constexpr std::string_view access_denied = "org.mcbus.Multicast1.Error.AccessDenied";
inline constexpr std::string_view invalid_rules = "org.mcbus.Multicast1.Error.InvalidRules";
inline constexpr std::string_view unsupported_flags = "org.mcbus.Multicast1.Error.UnsupportedFlags";
inline constexpr std::string_view too_many_members = "org.mcbus.Multicast1.Error.TooManyMembers";
inline constexpr std::string_view failed = "org.mcbus.Multicast1.Error.Failed";
}  // namespace errors

// The rule every member's filter also accepts, so that markers and loss notices always get through.
inline constexpr std::string_view marker_rule =
    "type='signal',path='/org/mcbus/Multicast1',interface='org.mcbus.Multicast1'";

// The protocol's own packets: the publisher's path and interface.
inline bool is_control(const message_view& m) noexcept {
  const message_header& h = m.header();
  return h.type == message_type::signal && h.interface == interface.str() && h.path == path.str();
}
inline bool is_marker(const message_view& m) noexcept {
  return is_control(m) && m.header().member == unicast_marker.str();
}
inline bool is_loss_notice(const message_view& m) noexcept {
  return is_control(m) && m.header().member == lost_notice.str();
}

// Serials wrap around: a is before b when the signed distance is negative.
constexpr bool serial_before(std::uint32_t a, std::uint32_t b) noexcept { return static_cast<std::int32_t>(a - b) < 0; }

}  // namespace multicast
MCBUS_NAMESPACE_END
