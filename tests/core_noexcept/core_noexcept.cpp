// Built with -fno-exceptions -fno-rtti and only the include path: proves that the codec (and the
// match layer, once present) needs neither exceptions, RTTI, liburing nor fmt.
#include <mcbus/wire.hpp>
#if __has_include(<mcbus/match.hpp>)
#include <mcbus/match.hpp>
#define MCBUS_TEST_HAVE_MATCH 1
#endif

#include <cstdio>
#include <map>
#include <string>

#if defined(FMT_VERSION) || defined(LIBURING_H) || defined(__cpp_exceptions) || defined(__GXX_RTTI)
#error "the core pulled in fmt or liburing, or this file is not built with -fno-exceptions -fno-rtti"
#endif

int main() {
  using namespace mcbus;
  auto m = message::signal("/org/example/Core", "org.example.Core", "Tick");
  std::map<std::string, variant> props;
  props["n"] = *variant::from(std::uint32_t{7});
  m.append(std::string("text"), props);
  auto bytes = m.to_bytes();
  if (!bytes) return std::puts("to_bytes failed"), 1;
  auto view = message_view::parse(*bytes);
  if (!view) return std::printf("parse failed: %s\n", view.error().message().c_str()), 1;
  auto body = view->read<std::string_view, std::map<std::string, variant>>();
  if (!body || std::get<0>(*body) != "text") return std::puts("read back failed"), 1;
  auto n = std::get<1>(*body)["n"].to<std::uint32_t>();
  if (!n || *n != 7) return std::puts("variant read back failed"), 1;
#ifdef MCBUS_TEST_HAVE_MATCH
  auto rule = match_rule::parse("type='signal',interface='org.example.Core',arg0='text'");
  if (!rule) return std::printf("rule parse failed: %s\n", rule.error().message().c_str()), 1;
  if (!rule->matches(*view)) return std::puts("rule did not match"), 1;
#endif
  std::puts("core builds and runs without exceptions, RTTI, liburing or fmt");
  return 0;
}
