// Fuzz target: a member's view of one publisher (multicast/stream.hpp), with the publisher
// hostile: packets, markers and bus messages addressed to the member, interleaved in any order,
// with any serials, sizes and timings.
//
// Each input byte pair is one event: the first byte's low three bits choose it (a signal packet,
// a marker packet, a bus message addressed to us, a bus copy, time passing, the publisher gone),
// the rest and the second byte give a serial step (which may go back) and a size. A delivery_gate
// judges what each path hands on. The member must never hand on a serial that is not after the
// last one handed on, never hold more than the limits allow once a packet has been handled (the
// connection gives the marker up at once then), never hold a packet without waiting for a marker
// (which its timeout ends), and end with nothing held once every marker has timed out.
//
// When the publisher's name changes owner, release_all() hands on what waits for the marker
// awaited now; a later held marker may still be answered (the old owner may be alive), so what is
// behind it waits for its message or its timeout.
#include <mcbus/multicast/stream.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

using namespace mcbus::multicast;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "fuzz_member_stream: %s\n", what);
  std::abort();
}

struct held {
  std::uint32_t serial;
  packet_kind kind;
  std::vector<std::byte> bytes;
};

struct member_side {
  stream_merge<held> merge;
  delivery_gate gate;
  std::uint32_t current_serial = 0;
  packet_kind current_kind = packet_kind::signal;
  std::size_t current_size = 0;
  std::optional<std::uint32_t> last_handed;

  void hand_on(origin from, std::uint32_t serial) {
    if (!gate.accept(from, ":1.9", serial)) return;
    if (last_handed && !serial_before(*last_handed, serial)) die("a serial handed on twice, or out of order");
    last_handed = serial;
  }
  // The sink stream_merge calls.
  held hold() { return {current_serial, current_kind, std::vector<std::byte>(current_size)}; }
  void deliver_current() {
    if (current_kind == packet_kind::signal) hand_on(origin::packet, current_serial);
  }
  void deliver(held& h) {
    if (h.kind == packet_kind::signal) hand_on(origin::packet, h.serial);
  }
  void problem(const mcbus::error&) {}
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const hold_limits limits{std::chrono::seconds(25), 64, 64 * 1024};
  member_side m;
  m.gate.join(":1.9", 100);
  std::uint32_t serial = 100;
  auto now = stream_merge<held>::clock::now();
  for (std::size_t i = 0; i + 1 < size; i += 2) {
    const std::uint8_t op = data[i] & 7;
    const auto step = static_cast<std::int32_t>(static_cast<std::int8_t>(data[i] & 0xf8) >> 3);
    serial += static_cast<std::uint32_t>(step);
    const std::size_t bytes = std::size_t{data[i + 1]} * 64;
    switch (op) {
      case 0:
      case 1:
      case 2: {
        m.current_serial = serial;
        m.current_kind = op == 2 ? packet_kind::marker : packet_kind::signal;
        m.current_size = bytes;
        m.merge.on_packet(serial, m.current_kind, m);
        if (m.merge.over(limits)) (void)m.merge.expire(now, limits, m);
        if (m.merge.held() > limits.packets + 1 || m.merge.held_bytes() > limits.bytes + 255 * 64)
          die("more held than the limits");
        break;
      }
      case 3:
      case 4:  // a bus message addressed to us: packets older than it first, then it
        m.merge.before_unicast(serial, m);
        m.hand_on(origin::unicast, serial);
        m.merge.after_unicast(serial, m);
        break;
      case 5:  // a bus copy (what a plain subscriber gets)
        m.hand_on(origin::broadcast, serial);
        break;
      case 6:
        now += std::chrono::seconds(data[i + 1]);
        (void)m.merge.expire(now, limits, m);
        break;
      case 7: m.merge.release_all(m); break;
    }
    if (m.merge.held() != 0 && !m.merge.waiting()) die("packets held with no marker awaited");
  }
  for (int turns = 0; m.merge.waiting(); ++turns) {
    if (turns > static_cast<int>(size)) die("markers that never time out");
    now += std::chrono::seconds(26);
    (void)m.merge.expire(now, limits, m);
  }
  if (m.merge.held() != 0 || m.merge.held_bytes() != 0) die("something held once every marker timed out");
  return 0;
}
