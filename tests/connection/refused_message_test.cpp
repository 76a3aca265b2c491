// Messages refused on arrival (over the fd limit, or invalid) still say, when their header can be
// read, which call they answer or which call they are: the call they answer ends at once with the
// refusal instead of waiting out its timeout, and a caller waiting for an answer gets an error.
// Each is still reported to on_invalid_message.
#include <mcbus/connection.hpp>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include "raw_peer.hpp"

using namespace mcbus;

namespace {

constexpr std::size_t over_the_limit = 17;  // connection_options{}.max_fds_per_message + 1

class RefusedMessage : public mcbus_test::raw_peer_test {
 protected:
  void SetUp() override {
    raw_peer_test::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ASSERT_EQ(::pipe2(pipe_, O_CLOEXEC), 0);
    watch_invalid();
  }
  void TearDown() override {
    for (int fd : pipe_) {
      if (fd >= 0) ::close(fd);
    }
  }

  void watch_invalid() {
    conn().on_invalid_message([this](const error& e) { invalid_.push_back(e); });
  }

  message with_fds(message m, std::size_t n) const {
    for (std::size_t i = 0; i < n; ++i) m.append(borrowed_fd{pipe_[0]});
    return m;
  }

  // The call as the peer receives it, so that a reply can name it.
  std::optional<message_view> receive_call() { return next_message(call_bytes_); }

  // Replaces the first occurrence of `from` in `bytes` (a same-length edit that breaks a value).
  static void patch(std::vector<std::byte>& bytes, std::string_view from, std::string_view to) {
    ASSERT_EQ(from.size(), to.size());
    const auto* f = reinterpret_cast<const std::byte*>(from.data());
    auto at = std::search(bytes.begin(), bytes.end(), f, f + from.size());
    ASSERT_NE(at, bytes.end()) << from << " not in the message";
    std::memcpy(&*at, to.data(), to.size());
  }

  static message get() { return message::method_call({}, "/t", "org.example.T", "Get"); }

  // Sends a call and returns what its handler got, running the loop until it ran.
  template <class Answer>
  std::optional<call_error> call_async(Answer answer) {
    std::optional<call_error> got;
    const error sent = conn().call_async(
        get(), [&](call_result<message_view> r) { got = r ? call_error() : r.error(); }, std::chrono::seconds(3));
    EXPECT_FALSE(sent) << sent.message();
    auto call = receive_call();
    EXPECT_TRUE(call);
    if (!call) return std::nullopt;
    answer(*call);
    const error e = conn().run_until([&] { return got.has_value(); }, std::chrono::seconds(10));
    EXPECT_FALSE(e) << e.message();
    return got;
  }

  int pipe_[2] = {-1, -1};
  std::vector<std::byte> call_bytes_;
  std::vector<error> invalid_;
};
INSTANTIATE_TEST_SUITE_P(Transports, RefusedMessage, testing::Values(transport_choice::uring, transport_choice::poll),
                         mcbus_test::transport_param_name);

TEST_P(RefusedMessage, AReplyWithTooManyFdsEndsTheBlockingCallAtOnce) {
  std::thread peer([&] {
    auto call = receive_call();
    if (call) send_raw(with_fds(message::method_return(*call), over_the_limit), 1);
  });
  // The timeout is long enough that reaching it would be a failure of its own.
  auto reply = conn().call(get(), std::chrono::seconds(3));
  peer.join();
  ASSERT_FALSE(reply) << "the reply over the fd limit was accepted";
  EXPECT_EQ(reply.error().code(), errc::too_many_fds) << reply.error().message();
  EXPECT_EQ(reply.error().name(), dbus_error::limits_exceeded);
  EXPECT_FALSE(reply.error().is_remote());
  EXPECT_NE(reply.error().text().find("max_fds_per_message"), std::string::npos) << reply.error().text();
  EXPECT_TRUE(invalid_.empty()) << "a blocking call dispatches nothing while it waits, refusals included";
  ASSERT_FALSE(conn().process());
  ASSERT_EQ(invalid_.size(), 1u);
  EXPECT_EQ(invalid_[0].code(), errc::too_many_fds);
  EXPECT_TRUE(conn().connected());
}

TEST_P(RefusedMessage, AReplyWithTooManyFdsEndsTheAsyncCallAtOnce) {
  auto got = call_async(
      [&](const message_view& call) { send_raw(with_fds(message::method_return(call), over_the_limit), 1); });
  ASSERT_TRUE(got);
  EXPECT_EQ(got->code(), errc::too_many_fds) << got->message();
  EXPECT_EQ(got->name(), dbus_error::limits_exceeded);
  ASSERT_EQ(invalid_.size(), 1u);
  EXPECT_EQ(invalid_[0].code(), errc::too_many_fds);
  EXPECT_TRUE(conn().connected());
}

TEST_P(RefusedMessage, AnErrorReplyWithTooManyFdsEndsItsCallWithTheRefusal) {
  auto got = call_async([&](const message_view& call) {
    send_raw(with_fds(message::error_reply(call, "org.example.Error.Busy", "busy"), over_the_limit), 1);
  });
  ASSERT_TRUE(got);
  EXPECT_EQ(got->code(), errc::too_many_fds) << got->message();
  EXPECT_EQ(invalid_.size(), 1u);
}

TEST_P(RefusedMessage, AReplyWithAnInvalidBodyEndsItsCall) {
  auto got = call_async([&](const message_view& call) {
    message reply = message::method_return(call);
    reply.append(std::string_view("okay"));
    std::vector<std::byte> bytes = bytes_of(std::move(reply), 1);
    patch(bytes, "okay", "ok\xff\xfe");
    send_raw_bytes(bytes);
  });
  ASSERT_TRUE(got);
  EXPECT_EQ(got->code(), errc::bad_utf8) << got->message();
  ASSERT_EQ(invalid_.size(), 1u);
  EXPECT_EQ(invalid_[0].code(), errc::bad_utf8);
}

// The header is read as far as it goes: REPLY_SERIAL comes before the field that breaks it.
TEST_P(RefusedMessage, AReplyWhoseHeaderBreaksAfterItsReplySerialEndsItsCall) {
  auto got = call_async([&](const message_view& call) {
    std::vector<std::byte> bytes =
        bytes_of(message::error_reply(call.serial(), ":1.7", "org.example.Error.Busy", "busy"), 1);
    patch(bytes, ":1.7", "!1.7");
    send_raw_bytes(bytes);
  });
  ASSERT_TRUE(got);
  EXPECT_EQ(got->code(), errc::bad_bus_name) << got->message();
  ASSERT_EQ(invalid_.size(), 1u);
  EXPECT_EQ(invalid_[0].code(), errc::bad_bus_name);
}

TEST_P(RefusedMessage, ARefusedCallIsAnsweredWithAnErrorUnlessItWantsNoReply) {
  send_raw(with_fds(get(), over_the_limit), 7);
  ASSERT_TRUE(run_until_peer_readable());
  std::vector<std::byte> buf;
  auto answer = next_message(buf);
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->type(), message_type::error);
  EXPECT_EQ(answer->reply_serial(), 7u);
  EXPECT_EQ(answer->header().error_name, dbus_error::limits_exceeded);

  message broken = get();
  broken.append(std::string_view("okay"));
  std::vector<std::byte> bytes = bytes_of(std::move(broken), 8);
  patch(bytes, "okay", "ok\xff\xfe");
  send_raw_bytes(bytes);
  ASSERT_TRUE(run_until_peer_readable());
  answer = next_message(buf);
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->type(), message_type::error);
  EXPECT_EQ(answer->reply_serial(), 8u);
  EXPECT_EQ(answer->header().error_name, dbus_error::invalid_args);

  message quiet = with_fds(get(), over_the_limit);
  quiet.set_no_reply_expected();
  send_raw(std::move(quiet), 9);
  send_raw(message::method_call({}, "/", "org.freedesktop.DBus.Peer", "Ping"), 10);
  ASSERT_TRUE(run_until_peer_readable());
  EXPECT_EQ(read_reply_to(10), message_type::method_return) << "the call that wanted no reply got one";
  EXPECT_EQ(invalid_.size(), 3u);
  EXPECT_TRUE(conn().connected());
}

// On a bus, a monitor or an eavesdropper receives calls meant for others: it must not answer them
// (dbus-daemon disconnects a monitor that sends anything).
TEST_P(RefusedMessage, ARefusedCallMeantForAnotherIsNotAnswered) {
  open_pair(true);
  ASSERT_EQ(conn().unique_name(), ":1.1");
  watch_invalid();
  message elsewhere = with_fds(message::method_call(":1.9", "/t", "org.example.T", "Get"), over_the_limit);
  elsewhere.set_sender(":1.8");
  send_raw(std::move(elsewhere), 5);
  message ours = with_fds(message::method_call(":1.1", "/t", "org.example.T", "Get"), over_the_limit);
  ours.set_sender(":1.8");
  send_raw(std::move(ours), 6);
  ASSERT_TRUE(run_until_peer_readable());
  std::vector<std::byte> buf;
  auto answer = next_message(buf);
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->reply_serial(), 6u) << "the call to :1.9 was answered";
  EXPECT_EQ(answer->type(), message_type::error);
  EXPECT_EQ(answer->header().destination, ":1.8");
  EXPECT_EQ(invalid_.size(), 2u);
}

}  // namespace
