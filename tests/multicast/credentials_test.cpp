// The admission policy sees who the bus says the caller is: a subscriber running as another user
// (setpriv to nobody) is denied by a policy that says so, and gets its readings through the bus.
#include <mcbus/multicast.hpp>

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "harness.hpp"

using namespace mcbus;
using mcbus_test::bus_test;
using mcbus_test::looper;

namespace {

// The built program may sit where `nobody` cannot reach it (a clone under /root, mode 0700): it
// runs from a copy in a directory anyone can enter, removed with this object.
class copy_for_anyone {
 public:
  explicit copy_for_anyone(const std::string& program) {
    char tmpl[] = "/tmp/mcbus-nobody-XXXXXX";
    if (!::mkdtemp(tmpl)) return;
    dir_ = tmpl;
    std::error_code ec;
    const std::string to = dir_ + "/" + std::filesystem::path(program).filename().string();
    if (::chmod(dir_.c_str(), 0755) == 0 && std::filesystem::copy_file(program, to, ec) &&
        ::chmod(to.c_str(), 0755) == 0)
      path_ = to;
  }
  copy_for_anyone(const copy_for_anyone&) = delete;
  copy_for_anyone& operator=(const copy_for_anyone&) = delete;
  ~copy_for_anyone() {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  const std::string& path() const { return path_; }  // empty if the copy failed

 private:
  std::string dir_, path_;
};

class Credentials : public bus_test {};
MCBUS_ALL_BUSES_AND_TRANSPORTS(Credentials);

TEST_P(Credentials, AnotherUserIsDeniedByPolicyAndUsesTheBus) {
#ifndef MCBUS_SENSOR_SUBSCRIBER
  GTEST_SKIP() << "the sensor-subscriber example is not built (MCBUS_BUILD_EXAMPLES=OFF)";
#else
  if (::geteuid() != 0) GTEST_SKIP() << "switching to another user needs root";
  if (::access("/usr/bin/setpriv", X_OK) != 0) GTEST_SKIP() << "setpriv is missing (util-linux)";
  const std::string sender = "org.mcbus.Test.Credentials." + mcbus_test::param_name({GetParam(), 0});
  auto pc = connect();
  ASSERT_TRUE(pc) << pc.error().message();
  looper pub_loop(std::move(*pc));
  std::vector<std::uint32_t> uids_seen;
  multicast::publisher_options opts;
  opts.admit = [&uids_seen](const multicast::credentials& c) {
    uids_seen.push_back(c.uid.value_or(~0u));
    return c.uid == 0u ? multicast::admission::allow() : multicast::admission::deny("root only");
  };
  std::shared_ptr<multicast::publisher> pub = pub_loop.run([&](connection& c) -> std::shared_ptr<multicast::publisher> {
    auto owned = c.request_name(bus_name::from_unchecked(sender));
    if (!owned) ADD_FAILURE() << owned.error().message();
    if (!owned || *owned != request_name_reply::primary_owner) return nullptr;
    auto made = multicast::publisher::create(c, opts);
    if (!made) ADD_FAILURE() << made.error().message();
    return made ? std::shared_ptr<multicast::publisher>(std::move(*made)) : nullptr;
  });
  ASSERT_TRUE(pub) << "cannot own " << sender << " on the shared bus";
  pub_loop.keep(pub);

  const copy_for_anyone program(MCBUS_SENSOR_SUBSCRIBER);
  ASSERT_FALSE(program.path().empty()) << "cannot copy " << MCBUS_SENSOR_SUBSCRIBER << " to /tmp for nobody";
  const std::string out = "/tmp/mcbus-nobody-" + std::to_string(::getpid()) + ".txt";
  const pid_t child = mcbus_test::spawn(
      {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", program.path(),
       "--address=" + bus_->address(), "--count=3", "type='signal',sender='" + sender + "',member='Reading'"},
      out);
  ASSERT_GT(child, 0);
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (::waitpid(child, &status, WNOHANG) == 0 && std::chrono::steady_clock::now() < deadline) {
    pub_loop.run([&](connection&) {
      message m = message::signal("/org/mcbus/Sensor", "org.mcbus.Sensor1", "Reading");
      m.append(std::string_view("temp0"), 21.5, std::uint64_t{0});
      return pub->emit(std::move(m));
    });
    // A reading every 20 ms: the subscriber's Join (made in the background) is answered first.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (::waitpid(child, &status, WNOHANG) == 0) {
    ::kill(child, SIGKILL);
    ::waitpid(child, &status, 0);
  }
  std::ifstream in(out);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::remove(out.c_str());
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << text;
  EXPECT_NE(text.find("AccessDenied"), std::string::npos) << text;
  EXPECT_NE(text.find("via bus"), std::string::npos) << text;
  EXPECT_EQ(text.find("via multicast"), std::string::npos) << text;
  pub_loop.run([&](connection&) {
    EXPECT_EQ(pub->stats().denied, 1u);
    EXPECT_EQ(pub->member_count(), 0u);
    EXPECT_EQ(uids_seen, std::vector<std::uint32_t>{65534u});
    return 0;
  });
#endif
}

}  // namespace
