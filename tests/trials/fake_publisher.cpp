// Trial fake publisher: a misbehaving org.mcbus.Multicast1 peer, exported by hand with mcbus's
// object builder (the wire contract is docs/multicast-protocol.md). Subscribers must survive it.
//
// Owns NAME, answers Join(as rules, u flags) -> (h socket, u version=1, u max_packet=32768) at
// /org/mcbus/Multicast1, waits for the first member, then emits org.example.Trial1.Tick
// (s "tick", t seq, t mono_ns) N times. Each Tick goes once on the bus (an honest bus copy, what
// a bus-only listener sees) and, as a packet (a whole D-Bus signal message with our unique name
// as SENDER), to the member's socket, both with the same serial from our sequence, as the
// protocol requires; the packets misbehave by mode:
//   --mode=a  the socket handed back is SOCK_STREAM, not SOCK_SEQPACKET
//   --mode=b  every packet is written twice (duplicate serials)
//   --mode=c  packets are written out of serial order (each pair swapped)
//   --mode=d  the packet of seq N/2 is larger (about 70 KB) than the max_packet announced (and than 64 KiB)
//   --mode=e  a zero-length packet, then the socket is closed; Ticks go on the bus only
//
//   fake_publisher NAME --mode=a|b|c|d|e [--count=N] [--ready=FILE]
// Connects to DBUS_SESSION_BUS_ADDRESS.
#include <mcbus/connection.hpp>

#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

using namespace std::chrono_literals;

static std::uint64_t mono_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::uint64_t(ts.tv_sec) * 1000000000u + std::uint64_t(ts.tv_nsec);
}

static mcbus::message tick(std::uint64_t seq, std::uint64_t when, std::string_view text = "tick") {
  mcbus::message m = mcbus::message::signal("/org/example/Trial", "org.example.Trial1", "Tick");
  m.append(text, seq, when);
  return m;
}

int main(int argc, char** argv) {
  std::string name, ready;
  char mode = 0;
  long count = 200;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a.starts_with("--mode=") && a.size() == 8)
      mode = a[7];
    else if (a.starts_with("--count="))
      count = std::atol(argv[i] + 8);
    else if (a.starts_with("--ready="))
      ready = argv[i] + 8;
    else if (!a.starts_with("-") && name.empty())
      name = a;
    else
      return std::fprintf(stderr, "fake_publisher: bad argument %s\n", argv[i]), 2;
  }
  if (name.empty() || mode < 'a' || mode > 'e')
    return std::fprintf(stderr, "usage: fake_publisher NAME --mode=a..e\n"), 2;

  auto bus = mcbus::connection::session();
  if (!bus) return std::fprintf(stderr, "fake_publisher: %s\n", bus.error().message().c_str()), 1;
  mcbus::connection& conn = *bus;
  auto wk = mcbus::bus_name::from(name);
  if (!wk) return std::fprintf(stderr, "fake_publisher: bad name %s\n", name.c_str()), 2;
  auto owned = conn.request_name(*wk, mcbus::name_flags::do_not_queue);
  if (!owned || *owned != mcbus::request_name_reply::primary_owner)
    return std::fprintf(stderr, "fake_publisher: cannot own %s\n", name.c_str()), 1;

  int ours = -1;  // our end of the member's socket
  std::string member;
  long joins = 0;
  auto group = conn.add_object(
      "/org/mcbus/Multicast1",
      mcbus::object_builder()
          .interface("org.mcbus.Multicast1")
          .method("Join",
                  [&](mcbus::method_call& call, std::vector<std::string> rules, std::uint32_t flags)
                      -> mcbus::call_result<std::tuple<mcbus::unix_fd, std::uint32_t, std::uint32_t>> {
                    int sv[2];
                    const int type = mode == 'a' ? SOCK_STREAM : SOCK_SEQPACKET;
                    if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) != 0)
                      return mcbus::call_error("org.mcbus.Multicast1.Error.Failed", "socketpair");
                    if (ours >= 0) ::close(ours);
                    ours = sv[0];
                    member = call.sender();
                    ++joins;
                    std::fprintf(stderr, "fake_publisher: Join from %s (%zu rules, flags %u)\n", member.c_str(),
                                 rules.size(), flags);
                    return std::tuple<mcbus::unix_fd, std::uint32_t, std::uint32_t>{mcbus::unix_fd(sv[1]), 1u, 32768u};
                  },
                  {"rules", "flags"}, {"socket", "version", "max_packet"})
          .method("Leave",
                  [&](mcbus::method_call& call) {
                    std::fprintf(stderr, "fake_publisher: Leave from %s\n", std::string(call.sender()).c_str());
                    if (ours >= 0) ::close(ours);
                    ours = -1;
                  },
                  {}, {})
          .signal<std::string>("Dropped", {"reason"}));

  if (!ready.empty()) {
    if (FILE* f = std::fopen(ready.c_str(), "w")) std::fclose(f);
  }
  if (conn.run_until([&] { return ours >= 0; }, 20s) || ours < 0)
    return std::fprintf(stderr, "fake_publisher: nobody joined\n"), 1;
  (void)conn.run_for(300ms);  // the Join reply reaches the member

  if (mode == 'e') {
    const ssize_t n = ::send(ours, "", 0, MSG_NOSIGNAL);
    std::fprintf(stderr, "fake_publisher: zero-length packet: %zd; closing the socket\n", n);
    ::close(ours);
    ours = -1;
    (void)conn.run_for(500ms);
  }

  long written = 0, refused = 0;
  auto write_packet = [&](mcbus::message& p) {
    if (ours < 0) return;
    const auto h = p.header_bytes();
    const auto b = p.body_bytes();
    iovec iov[2] = {{const_cast<std::byte*>(h.data()), h.size()}, {const_cast<std::byte*>(b.data()), b.size()}};
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = b.empty() ? 1 : 2;
    if (::sendmsg(ours, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
      ++written;
    else
      ++refused;
  };

  mcbus::message held;  // mode c: the even packet, written after the odd one
  bool holding = false;
  for (long seq = 0; seq < count; ++seq) {
    const std::uint64_t now = mono_ns();
    const bool oversize = mode == 'd' && seq == count / 2;
    mcbus::message p = oversize ? tick(seq, now, "tick" + std::string(70000, 'x')) : tick(seq, now);
    p.set_sender(mcbus::bus_name::from_unchecked(conn.unique_name()));
    const std::uint32_t serial = conn.allocate_serial();
    p.set_serial(serial);
    if (mcbus::error e = p.seal()) return std::fprintf(stderr, "fake_publisher: seal: %s\n", e.message().c_str()), 1;
    if (mode == 'c' && !holding) {
      held = std::move(p);
      holding = true;
    } else {
      write_packet(p);
      if (mode == 'b') write_packet(p);
      if (holding) write_packet(held), holding = false;
    }
    mcbus::message copy = tick(seq, now);  // the honest bus copy, with the packet's serial
    copy.set_serial(serial);
    if (auto sent = conn.send_unhooked(std::move(copy)); !sent)
      return std::fprintf(stderr, "fake_publisher: send: %s\n", sent.error().message().c_str()), 1;
    (void)conn.run_for(2ms);
  }
  if (holding) write_packet(held);
  (void)conn.run_for(1s);
  (void)conn.flush();
  std::printf("fake_publisher: mode %c, %ld Ticks, %ld packets written, %ld refused by the socket, %ld joins\n", mode,
              count, written, refused, joins);
  if (ours >= 0) ::close(ours);
  return 0;
}
