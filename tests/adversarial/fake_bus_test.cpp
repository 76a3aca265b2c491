// A fake bus: it does the SASL handshake like a bus, then misbehaves. Nothing between it and the
// connection limits what it sends, as a real bus would.
#include <mcbus/connection.hpp>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "bounds.hpp"
#include "raw_peer.hpp"

using namespace mcbus;

namespace {

class FakeBus : public mcbus_test::raw_peer_test {
 protected:
  // Writes all of `bytes`, blocking; false once the connection is gone.
  bool write_all(std::span<const std::byte> bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(raw_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      bytes = bytes.subspan(static_cast<std::size_t>(n));
    }
    return true;
  }
  // A call to /sink with no reply wanted, carrying `data` and (declared in UNIX_FDS) `fds` fds.
  static message sink_call(std::string_view data, std::size_t fds = 0) {
    message m = fds ? message::method_call({}, "/sink", "org.example.Sink", "TakeFd")
                    : message::method_call({}, "/sink", "org.example.Sink", "Take");
    if (fds) {
      m.append(unix_fd(::open("/dev/null", O_RDONLY | O_CLOEXEC)));
    } else {
      m.append(data);
    }
    m.set_no_reply_expected(true);
    return m;
  }
  object_handle count_sink(connection& c, std::atomic<int>& taken, std::atomic<int>& fds_taken) {
    return c.add_object("/sink", object_builder()
                                     .interface("org.example.Sink")
                                     .method("Take", [&taken](std::string_view) { ++taken; }, {"data"}, {})
                                     .method("TakeFd", [&fds_taken](unix_fd) { ++fds_taken; }, {"fd"}, {}));
  }
  static std::vector<int> dev_nulls(int n) {
    std::vector<int> fds;
    for (int i = 0; i < n; ++i) fds.push_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    return fds;
  }
  static void close_all(const std::vector<int>& fds) {
    for (int fd : fds) ::close(fd);
  }
};
INSTANTIATE_TEST_SUITE_P(Transports, FakeBus, testing::Values(transport_choice::uring, transport_choice::poll),
                         mcbus_test::transport_param_name);

// Issue 11, attack 6: while the connection waits for a reply, a peer floods it with 512 MB. The
// connection stops reading at connection_options::max_inbox_bytes (64 MiB), so the flood is
// pushed back into the socket; the call times out with a reason; then everything is dispatched,
// nothing lost.
TEST_P(FakeBus, AFloodWhileACallWaitsStopsAtTheInboxLimit) {
  connection& c = conn();
  std::atomic<int> taken{0}, fds_taken{0};
  object_handle sink = count_sink(c, taken, fds_taken);
  constexpr int chunks = 8192;
  const std::vector<std::byte> chunk = bytes_of(sink_call(std::string(64 * 1024 - 200, 'f')), 1);
  std::atomic<bool> flooded{false};
  ASSERT_TRUE(mcbus_test::reset_peak_rss()) << "/proc/self/clear_refs refused";
  const long before = mcbus_test::peak_rss_kib();
  std::thread peer([&] {
    auto call = read_message();  // the call; answered only after the flood
    if (!call) return;
    auto v = message_view::parse(*call);
    if (!v) return;
    for (int i = 0; i < chunks; ++i) {
      if (!write_all(chunk)) return;
    }
    message reply = message::method_return(*v);
    flooded = write_all(bytes_of(std::move(reply), 2));
  });
  // On a failed assertion the peer may be blocked in a send: end the socket, then join it.
  struct joiner {
    std::thread& t;
    int fd;
    ~joiner() {
      if (!t.joinable()) return;
      ::shutdown(fd, SHUT_RDWR);
      t.join();
    }
  } join_peer{peer, raw_.get()};
  auto r = c.call(message::method_call({}, "/", "org.example.Slow", "Answer"), std::chrono::seconds(3));
  const long during = mcbus_test::peak_rss_kib();
  std::printf("peak RSS %ld KiB before, %ld KiB while a 512 MB flood came during a call\n", before, during);
  EXPECT_TRUE(mcbus_test::rss_growth_within(during - before, 128 * 1024));
  ASSERT_FALSE(r) << "the reply came through the whole flood: nothing held the flood back";
  EXPECT_EQ(r.error().code(), errc::timeout) << r.error().message();
  EXPECT_NE(r.error().text().find("max_inbox_bytes"), std::string::npos) << r.error().message();
  // The loop dispatches what it holds and reads on: every chunk is handled.
  const error e = c.run_until([&] { return taken == chunks && flooded; }, std::chrono::seconds(60));
  EXPECT_FALSE(e) << e.message();
  EXPECT_EQ(taken.load(), chunks);
  peer.join();
  EXPECT_TRUE(c.connected());
}

// Issue 11, attack 7: fds beyond what a message's UNIX_FDS says are closed at once, not kept.
TEST_P(FakeBus, FdsBeyondAMessagesCountAreClosedAtOnce) {
  connection& c = conn();
  std::atomic<int> taken{0}, fds_taken{0};
  object_handle sink = count_sink(c, taken, fds_taken);
  ASSERT_FALSE(c.run_for(std::chrono::milliseconds(10)));
  const int fds_before = mcbus_test::open_fds();
  for (int i = 0; i < 300; ++i) {
    const std::vector<int> extra = dev_nulls(10);  // one declared, nine more
    send_raw_bytes(bytes_of(sink_call({}, 1), static_cast<std::uint32_t>(i + 1)), extra);
    close_all(extra);
    const error e = c.run_until([&] { return fds_taken == i + 1; }, std::chrono::seconds(10));
    ASSERT_FALSE(e) << e.message();
  }
  const int fds_after = mcbus_test::open_fds();
  std::printf("%d fds open before 300 messages with 9 excess fds each, %d after\n", fds_before, fds_after);
  EXPECT_LE(fds_after - fds_before, 2);
  EXPECT_EQ(fds_taken.load(), 300);
}

// Issue 11, attack 7: a message that declares an fd it did not bring is refused, and is never
// handed one left over from an earlier message.
TEST_P(FakeBus, AMessageIsNeverHandedAnotherMessagesFd) {
  connection& c = conn();
  std::atomic<int> taken{0}, fds_taken{0};
  object_handle sink = count_sink(c, taken, fds_taken);
  std::vector<error> refused;
  c.on_invalid_message([&](const error& e) { refused.push_back(e); });
  const std::vector<int> stray = dev_nulls(3);
  send_raw_bytes(bytes_of(sink_call("no fds declared"), 1), stray);  // three fds nobody declared
  close_all(stray);
  ASSERT_FALSE(c.run_until([&] { return taken == 1; }, std::chrono::seconds(10)));
  send_raw_bytes(bytes_of(sink_call({}, 1), 2));  // declares one fd, brings none
  send_raw_bytes(bytes_of(sink_call("after"), 3));
  ASSERT_FALSE(c.run_until([&] { return taken == 2; }, std::chrono::seconds(10)));
  EXPECT_EQ(fds_taken.load(), 0) << "a message was handed an fd it did not bring";
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].code(), errc::bad_fd_index) << refused[0].message();
  EXPECT_TRUE(c.connected());
}

}  // namespace
