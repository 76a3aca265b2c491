// The owning unix_fd (wire/unix_fd.hpp): every fd a connection receives lives in one, so a leak
// or a double close here would show up as leaked descriptors or as a close of someone else's fd.
#include <mcbus/wire/unix_fd.hpp>

#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <utility>

using mcbus::unix_fd;

namespace {

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

// True only if fd is closed: F_GETFD fails with EBADF (not with anything else).
bool is_closed(int fd) {
  errno = 0;
  return ::fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}

int new_fd() { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }

// Descriptor numbers are reused at once: each check runs before anything else can open one.

TEST(UnixFd, DestructionClosesTheFd) {
  const int raw = new_fd();
  ASSERT_GE(raw, 0);
  {
    unix_fd fd(raw);
    EXPECT_EQ(fd.get(), raw);
    EXPECT_TRUE(fd.valid());
    EXPECT_TRUE(is_open(raw));
  }
  EXPECT_TRUE(is_closed(raw));
}

TEST(UnixFd, MoveAssignmentClosesTheFdItHeld) {
  const int first = new_fd();
  const int second = new_fd();
  ASSERT_GE(first, 0);
  ASSERT_GE(second, 0);
  unix_fd a(first);
  unix_fd b(second);
  a = std::move(b);
  EXPECT_TRUE(is_closed(first));
  EXPECT_EQ(a.get(), second);
  EXPECT_TRUE(is_open(second));
  EXPECT_FALSE(b.valid());  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  EXPECT_EQ(b.get(), -1);   // NOLINT(bugprone-use-after-move)
  // Assigning an empty one closes too.
  a = unix_fd();
  EXPECT_TRUE(is_closed(second));
  EXPECT_FALSE(a.valid());
}

TEST(UnixFd, SelfMoveAssignmentKeepsTheFd) {
  const int raw = new_fd();
  ASSERT_GE(raw, 0);
  unix_fd a(raw);
  unix_fd& same = a;
  a = std::move(same);
  EXPECT_EQ(a.get(), raw);
  EXPECT_TRUE(is_open(raw));
}

TEST(UnixFd, MoveConstructionTransfersOwnership) {
  const int raw = new_fd();
  ASSERT_GE(raw, 0);
  unix_fd a(raw);
  {
    unix_fd b(std::move(a));
    EXPECT_EQ(b.get(), raw);
    EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move)
  }
  EXPECT_TRUE(is_closed(raw));
}

TEST(UnixFd, ReleaseGivesTheFdUp) {
  const int raw = new_fd();
  ASSERT_GE(raw, 0);
  {
    unix_fd fd(raw);
    EXPECT_EQ(fd.release(), raw);
    EXPECT_FALSE(fd.valid());
    EXPECT_EQ(fd.release(), -1);  // nothing left to give
  }
  EXPECT_TRUE(is_open(raw)) << "the destructor closed a released fd";
  ::close(raw);
  EXPECT_TRUE(is_closed(raw));
}

TEST(UnixFd, ResetClosesAndTakesTheNewFd) {
  const int first = new_fd();
  const int second = new_fd();
  ASSERT_GE(first, 0);
  ASSERT_GE(second, 0);
  unix_fd fd(first);
  fd.reset(second);
  EXPECT_TRUE(is_closed(first));
  EXPECT_EQ(fd.get(), second);
  fd.reset();
  EXPECT_TRUE(is_closed(second));
}

TEST(UnixFd, DupIsAnIndependentCloseOnExecCopy) {
  const int raw = new_fd();
  ASSERT_GE(raw, 0);
  unix_fd original(raw);
  int copy_raw = -1;
  {
    unix_fd copy = original.dup();
    ASSERT_TRUE(copy.valid());
    copy_raw = copy.get();
    EXPECT_NE(copy_raw, raw);
    EXPECT_NE(::fcntl(copy_raw, F_GETFD) & FD_CLOEXEC, 0);
  }
  EXPECT_TRUE(is_closed(copy_raw));
  EXPECT_TRUE(is_open(raw)) << "closing the copy closed the original";
  EXPECT_FALSE(unix_fd().dup().valid());
}

}  // namespace
