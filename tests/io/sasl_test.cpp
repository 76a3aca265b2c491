// The SASL client state machine, driven by hand: every transition of the specification's client
// state diagram, the limits, and the bytes that follow the last line.
#include <mcbus/io/sasl.hpp>

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

using mcbus::errc;
using mcbus::sasl_client;
using mcbus::sasl_mechanism;
using mcbus::sasl_options;
using mcbus::sasl_status;

// Takes everything the client wants to send.
std::string drain(sasl_client& c) {
  std::string out(c.output_text());
  c.consume(out.size());
  return out;
}

sasl_options uid(std::uint32_t u) {
  sasl_options o;
  o.uid = u;
  return o;
}

TEST(Sasl, ExternalWithUidThenBegin) {
  sasl_client c(uid(1000));
  EXPECT_EQ(c.status(), sasl_status::in_progress);
  // The credentials NUL, then the uid as its decimal string in hex (spec example: 31303030).
  EXPECT_EQ(drain(c), std::string("\0AUTH EXTERNAL 31303030\r\n", 25));
  EXPECT_EQ(c.feed("OK 1234deadbeef\r\n"), sasl_status::authenticated);
  EXPECT_EQ(drain(c), "BEGIN\r\n");
  EXPECT_EQ(c.server_guid(), "1234deadbeef");
  EXPECT_FALSE(c.unix_fd_agreed());
  EXPECT_EQ(c.mechanism(), sasl_mechanism::external);
  EXPECT_TRUE(c.leftover().empty());
}

TEST(Sasl, DefaultUidIsTheEffectiveUid) {
  sasl_client c;
  std::string expect("\0AUTH EXTERNAL ", 15);
  mcbus::detail::hex_append(expect, std::to_string(::geteuid()));
  EXPECT_EQ(drain(c), expect + "\r\n");
}

TEST(Sasl, NegotiatesUnixFdsAgreed) {
  auto o = uid(0);
  o.negotiate_unix_fd = true;
  sasl_client c(o);
  EXPECT_EQ(drain(c), std::string("\0AUTH EXTERNAL 30\r\n", 19));
  EXPECT_EQ(c.feed("OK 0123456789abcdef0123456789abcdef\r\n"), sasl_status::in_progress);
  EXPECT_EQ(drain(c), "NEGOTIATE_UNIX_FD\r\n");
  EXPECT_EQ(c.feed("AGREE_UNIX_FD\r\n"), sasl_status::authenticated);
  EXPECT_EQ(drain(c), "BEGIN\r\n");
  EXPECT_TRUE(c.unix_fd_agreed());
}

// A client that got OK, sent NEGOTIATE_UNIX_FD and waits for the answer.
sasl_client awaiting_fd_answer() {
  auto o = uid(0);
  o.negotiate_unix_fd = true;
  sasl_client c(o);
  drain(c);
  c.feed("OK 00\r\n");
  EXPECT_EQ(drain(c), "NEGOTIATE_UNIX_FD\r\n");
  return c;
}

TEST(Sasl, NegotiatesUnixFdsRefusedStillAuthenticates) {
  sasl_client c = awaiting_fd_answer();
  EXPECT_EQ(c.feed("ERROR Not supported on this OS\r\n"), sasl_status::authenticated);
  EXPECT_EQ(drain(c), "BEGIN\r\n");
  EXPECT_FALSE(c.unix_fd_agreed());
}

TEST(Sasl, WrongReplyToNegotiateFails) {
  for (const char* reply : {"OK 00\r\n", "DATA\r\n", "REJECTED EXTERNAL\r\n", "BEGIN\r\n"}) {
    sasl_client c = awaiting_fd_answer();
    EXPECT_EQ(c.feed(reply), sasl_status::failed) << reply;
    EXPECT_EQ(c.failure().code(), errc::auth_protocol);
    EXPECT_EQ(c.failure().offset(), 7u) << "offset of the bad line in the server's bytes";
    EXPECT_EQ(drain(c), "") << "a failed conversation sends nothing more";
  }
}

TEST(Sasl, UnknownCommandAfterNegotiateIsAnsweredWithError) {
  // "Future Extensions": new commands may come after OK; the answer is ERROR, and it is not fatal.
  sasl_client c = awaiting_fd_answer();
  EXPECT_EQ(c.feed("EXTENSION_FOO bar\r\n"), sasl_status::in_progress);
  EXPECT_EQ(drain(c).substr(0, 5), "ERROR");
  EXPECT_EQ(c.feed("AGREE_UNIX_FD\r\n"), sasl_status::authenticated);
}

TEST(Sasl, ExternalEmptyResponseAnsweredByData) {
  auto o = uid(1);
  o.external_empty_response = true;
  sasl_client c(o);
  EXPECT_EQ(drain(c), std::string("\0AUTH EXTERNAL\r\n", 16));
  EXPECT_EQ(c.feed("DATA\r\n"), sasl_status::in_progress);
  EXPECT_EQ(drain(c), "DATA\r\n");
  EXPECT_EQ(c.feed("OK 30313233343536373839616263646566\r\n"), sasl_status::authenticated);
  EXPECT_EQ(drain(c), "BEGIN\r\n");
}

TEST(Sasl, ExternalRejectsANonEmptyChallenge) {
  auto o = uid(1);
  o.external_empty_response = true;
  sasl_client c(o);
  drain(c);
  c.feed("DATA 41\r\n");
  EXPECT_EQ(drain(c).substr(0, 6), "ERROR ");
  c.feed("DATA zz\r\n");  // not hex
  EXPECT_EQ(drain(c).substr(0, 6), "ERROR ");
  EXPECT_EQ(c.status(), sasl_status::in_progress);
}

TEST(Sasl, DataWhileWaitingForOkCancels) {
  sasl_client c(uid(5));
  drain(c);
  EXPECT_EQ(c.feed("DATA 00\r\n"), sasl_status::in_progress);
  EXPECT_EQ(drain(c), "CANCEL\r\n");
  // Only REJECTED may follow a CANCEL; EXTERNAL was tried, nothing else is enabled.
  EXPECT_EQ(c.feed("REJECTED EXTERNAL\r\n"), sasl_status::failed);
  EXPECT_EQ(c.failure().code(), errc::auth_rejected);
}

TEST(Sasl, ErrorCancelsThenAnythingButRejectedFails) {
  sasl_client c(uid(5));
  drain(c);
  c.feed("ERROR what\r\n");
  EXPECT_EQ(drain(c), "CANCEL\r\n");
  EXPECT_EQ(c.feed("OK 00\r\n"), sasl_status::failed);
  EXPECT_EQ(c.failure().code(), errc::auth_protocol);
}

TEST(Sasl, RejectedFallsBackToAnonymousWhenAllowed) {
  auto o = uid(5);
  o.anonymous = true;
  o.anonymous_trace = "me";
  sasl_client c(o);
  drain(c);
  EXPECT_EQ(c.feed("REJECTED FOO ANONYMOUS\r\n"), sasl_status::in_progress);
  EXPECT_EQ(drain(c), "AUTH ANONYMOUS 6d65\r\n");
  EXPECT_EQ(c.mechanism(), sasl_mechanism::anonymous);
  EXPECT_EQ(c.feed("OK 00\r\n"), sasl_status::authenticated);
}

TEST(Sasl, AnonymousIsNotTriedUnlessAllowedOrListed) {
  {
    sasl_client c(uid(5));
    drain(c);
    EXPECT_EQ(c.feed("REJECTED ANONYMOUS\r\n"), sasl_status::failed);
    EXPECT_EQ(c.failure().code(), errc::auth_rejected);
    EXPECT_EQ(c.failure().offset(), 0u);
  }
  {
    auto o = uid(5);
    o.anonymous = true;
    sasl_client c(o);
    drain(c);
    EXPECT_EQ(c.feed("REJECTED EXTERNAL DBUS_COOKIE_SHA1\r\n"), sasl_status::failed);
  }
  {
    // A REJECTED without a list says nothing about the server: try what is left.
    auto o = uid(5);
    o.anonymous = true;
    sasl_client c(o);
    drain(c);
    EXPECT_EQ(c.feed("REJECTED\r\n"), sasl_status::in_progress);
    EXPECT_EQ(drain(c).substr(0, 14), "AUTH ANONYMOUS");
  }
}

TEST(Sasl, OnlyTheFirstMechanismListCounts) {
  auto o = uid(5);
  o.anonymous = true;
  o.cookies = [](std::string_view, std::string_view) { return std::optional<std::string>(); };
  sasl_client c(o);
  drain(c);
  c.feed("REJECTED EXTERNAL DBUS_COOKIE_SHA1\r\n");
  EXPECT_EQ(drain(c).substr(0, 21), "AUTH DBUS_COOKIE_SHA1");
  // The spec lets clients ignore later lists; ANONYMOUS was not in the first.
  EXPECT_EQ(c.feed("REJECTED EXTERNAL DBUS_COOKIE_SHA1 ANONYMOUS\r\n"), sasl_status::failed);
}

TEST(Sasl, NoMechanismEnabledFailsAtOnce) {
  sasl_options o;
  o.external = false;
  sasl_client c(o);
  EXPECT_EQ(c.status(), sasl_status::failed);
  EXPECT_EQ(c.failure().code(), errc::invalid_argument);
}

TEST(Sasl, AnonymousOnlyStartsWithAnonymous) {
  sasl_options o;
  o.external = false;
  o.anonymous = true;
  sasl_client c(o);
  EXPECT_EQ(drain(c), std::string("\0AUTH ANONYMOUS 6d63627573\r\n", 28));
}

TEST(Sasl, GarbageIsAnsweredWithErrorAndIsNotFatal) {
  sasl_client c(uid(5));
  drain(c);
  for (std::string_view junk :
       {std::string_view("NONEXISTENT_COMMAND foo\r\n"), std::string_view("ok 00\r\n"), std::string_view("\r\n"),
        std::string_view("OK\x01 00\r\n"), std::string_view("OK\xff\r\n"), std::string_view("O\0K\r\n", 5),
        std::string_view("OKAY 00\r\n"), std::string_view("AUTH EXTERNAL\r\n"), std::string_view("AGREE_UNIX_FD\r\n"),
        std::string_view("-\r\n")}) {
    EXPECT_EQ(c.feed(junk), sasl_status::in_progress) << junk;
    const std::string out = drain(c);
    EXPECT_EQ(out.substr(0, 5), "ERROR") << junk;
    EXPECT_EQ(out.find_first_of(std::string_view("\0", 1)), std::string::npos);
  }
  EXPECT_EQ(c.feed("OK 00\r\n"), sasl_status::authenticated);
}

TEST(Sasl, OkNeedsAHexGuid) {
  for (const char* bad : {"OK\r\n", "OK xyz\r\n", "OK 123\r\n", "OK 00 11\r\n"}) {
    sasl_client c(uid(5));
    drain(c);
    EXPECT_EQ(c.feed(bad), sasl_status::failed) << bad;
    EXPECT_EQ(c.failure().code(), errc::auth_protocol);
  }
}

TEST(Sasl, BytesAfterTheLastLineBelongToTheFirstMessage) {
  auto o = uid(5);
  o.negotiate_unix_fd = true;
  sasl_client c(o);
  drain(c);
  // Everything arrives in one read: OK, AGREE_UNIX_FD and the start of the Hello reply.
  const std::string tail("l\2\1\1\0\0\0\0\1\0\0\0", 12);
  EXPECT_EQ(c.feed("OK 00\r\nAGREE_UNIX_FD\r\n" + tail), sasl_status::authenticated);
  EXPECT_EQ(drain(c), "NEGOTIATE_UNIX_FD\r\nBEGIN\r\n");
  ASSERT_EQ(c.leftover().size(), tail.size());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(c.leftover().data()), c.leftover().size()), tail);
  // More bytes after authentication go to the same place.
  c.feed(std::string_view("more"));
  EXPECT_EQ(c.take_leftover(), tail + "more");
  EXPECT_TRUE(c.leftover().empty());
}

TEST(Sasl, ByteByByteFeedingGivesTheSameResult) {
  const std::string server = "REJECTED EXTERNAL ANONYMOUS\r\nOK 0011\r\nAGREE_UNIX_FD\r\nxyz";
  auto o = uid(7);
  o.anonymous = true;
  o.negotiate_unix_fd = true;
  sasl_client whole(o), bytes(o);
  // The conversation does not depend on the server waiting for the client's lines.
  whole.feed(server);
  for (char ch : server) bytes.feed(std::string_view(&ch, 1));
  EXPECT_EQ(whole.status(), sasl_status::authenticated);
  EXPECT_EQ(bytes.status(), sasl_status::authenticated);
  EXPECT_EQ(drain(whole), drain(bytes));
  EXPECT_EQ(whole.take_leftover(), "xyz");
  EXPECT_EQ(bytes.take_leftover(), "xyz");
  EXPECT_EQ(bytes.server_guid(), "0011");
}

TEST(Sasl, PartialOutputConsumption) {
  sasl_client c(uid(1000));
  const std::string all(c.output_text());
  c.consume(3);
  EXPECT_EQ(c.output_text(), all.substr(3));
  c.consume(1000);
  EXPECT_EQ(c.output_text(), "");
  EXPECT_TRUE(c.output().empty());
}

TEST(Sasl, OverlongLinesFail) {
  {
    sasl_client c(uid(5));
    drain(c);
    // max + 1 bytes may still be a line at the limit whose LF has not arrived; one more cannot.
    std::string line(mcbus::sasl_max_line + 1, 'A');
    EXPECT_EQ(c.feed(line), sasl_status::in_progress);
    EXPECT_EQ(c.feed("A"), sasl_status::failed);  // no CRLF yet, already too long
    EXPECT_EQ(c.failure().code(), errc::auth_protocol);
  }
  {
    sasl_client c(uid(5));
    drain(c);
    std::string line = "ERROR " + std::string(mcbus::sasl_max_line, 'x') + "\r\n";
    EXPECT_EQ(c.feed(line), sasl_status::failed);
  }
  {
    // Right at the limit is fine, fed in pieces.
    sasl_client c(uid(5));
    drain(c);
    const std::string line = "ERROR " + std::string(mcbus::sasl_max_line - 6, 'x') + "\r\n";
    for (std::size_t i = 0; i < line.size(); i += 1000) c.feed(std::string_view(line).substr(i, 1000));
    EXPECT_EQ(c.status(), sasl_status::in_progress);
    EXPECT_EQ(drain(c), "CANCEL\r\n");
  }
}

TEST(Sasl, EndlessGarbageEnds) {
  sasl_client c(uid(5));
  drain(c);
  std::size_t lines = 0;
  while (c.status() == sasl_status::in_progress && lines < 10000) {
    c.feed("FOO\r\n");
    drain(c);
    ++lines;
  }
  EXPECT_EQ(c.status(), sasl_status::failed);
  EXPECT_EQ(lines, mcbus::sasl_max_lines + 1);
  EXPECT_EQ(c.failure().offset(), 5 * mcbus::sasl_max_lines);
}

TEST(Sasl, FailedClientIgnoresFurtherInput) {
  sasl_client c(uid(5));
  drain(c);
  c.feed("REJECTED FOO\r\n");
  ASSERT_EQ(c.status(), sasl_status::failed);
  EXPECT_EQ(c.feed("OK 00\r\n"), sasl_status::failed);
  EXPECT_TRUE(c.leftover().empty());
  EXPECT_EQ(c.take_leftover(), "");
}

// ---- DBUS_COOKIE_SHA1 -------------------------------------------------------------------------

TEST(Sha1, FipsVectors) {
  using mcbus::detail::sha1;
  EXPECT_EQ(sha1::hex(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  EXPECT_EQ(sha1::hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
  EXPECT_EQ(sha1::hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
  EXPECT_EQ(sha1::hex(std::string(1000000, 'a')), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
  // Every length around the 55/56/64-byte padding boundaries agrees with a split update.
  for (std::size_t n = 50; n < 130; ++n) {
    const std::string s(n, 'x');
    sha1 a;
    a.update(s.substr(0, n / 3));
    a.update(s.substr(n / 3));
    const auto d = a.finish();
    std::string hex;
    for (auto b : d) {
      char buf[3];
      std::snprintf(buf, sizeof buf, "%02x", b);
      hex += buf;
    }
    EXPECT_EQ(hex, sha1::hex(s)) << n;
  }
}

TEST(SaslCookie, AnswersTheChallengeWithTheKeyringCookie) {
  const auto dir = std::filesystem::temp_directory_path() / ("mcbus-keyring-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  { std::ofstream(dir / "org_freedesktop_general") << "1 1700000000 aaaa\n7 1700000001 0badc0ffee\n"; }
  auto o = uid(1000);
  o.external = false;
  o.cookies = mcbus::keyring_cookie_source(dir.string());
  o.random = [](std::span<unsigned char> out) {
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<unsigned char>(i);
    return true;
  };
  sasl_client c(o);
  EXPECT_EQ(drain(c), std::string("\0AUTH DBUS_COOKIE_SHA1 31303030\r\n", 33));
  std::string challenge = "DATA ";
  mcbus::detail::hex_append(challenge, "org_freedesktop_general 7 5e4ec0e5");
  c.feed(challenge + "\r\n");
  const std::string reply = drain(c);
  ASSERT_EQ(reply.substr(0, 5), "DATA ");
  auto decoded = mcbus::detail::hex_decode(reply.substr(5, reply.size() - 7));
  ASSERT_TRUE(decoded);
  const std::string client_challenge = "000102030405060708090a0b0c0d0e0f";
  EXPECT_EQ(*decoded,
            client_challenge + " " + mcbus::detail::sha1::hex("5e4ec0e5:" + client_challenge + ":0badc0ffee"));
  EXPECT_EQ(c.feed("OK 00\r\n"), sasl_status::authenticated);
  EXPECT_EQ(c.mechanism(), sasl_mechanism::dbus_cookie_sha1);

  // An unknown cookie id, or a context that names another file, is answered with ERROR.
  for (const char* bad : {"org_freedesktop_general 8 abcd", "../etc 7 abcd", "ctx.lock 7 abcd",
                          "org_freedesktop_general x1 ab", "org_freedesktop_general 7", "missing_file 7 ab"}) {
    sasl_client d(o);
    drain(d);
    std::string line = "DATA ";
    mcbus::detail::hex_append(line, bad);
    d.feed(line + "\r\n");
    EXPECT_EQ(drain(d).substr(0, 6), "ERROR ") << bad;
    EXPECT_EQ(d.status(), sasl_status::in_progress);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
