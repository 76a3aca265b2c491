// An out-of-tree program that uses only the core of mcbus: the wire codec and match rules.
// tests/consumers builds it in every way a project can consume mcbus, with -fno-exceptions
// -fno-rtti and with neither liburing nor fmt on its include or link line.
#include <mcbus/match.hpp>
#include <mcbus/wire.hpp>

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

// Compile-time proof: the core pulled in neither library.
#if defined(FMT_VERSION) || defined(LIBURING_H)
#error "mcbus/wire.hpp or mcbus/match.hpp included fmt or liburing"
#endif

int main() {
  auto m = mcbus::message::signal("/org/example/Thermo", "org.example.Thermo1", "Changed");
  m.append(std::string("kitchen"), 21.5, std::vector<std::uint32_t>{1, 2, 3});
  auto bytes = m.to_bytes();
  if (!bytes) return std::printf("to_bytes: %s\n", bytes.error().message().c_str()), 1;

  auto view = mcbus::message_view::parse(*bytes);
  if (!view) return std::printf("parse: %s\n", view.error().message().c_str()), 1;
  auto body = view->read<std::string_view, double, std::vector<std::uint32_t>>();
  if (!body || std::get<0>(*body) != "kitchen" || std::get<1>(*body) != 21.5 || std::get<2>(*body).size() != 3) {
    return std::puts("the body did not read back"), 1;
  }

  auto hit = mcbus::match_rule::parse("type='signal',interface='org.example.Thermo1',arg0='kitchen'");
  auto miss = mcbus::match_rule::parse("type='signal',interface='org.example.Thermo1',arg0='garage'");
  if (!hit || !miss) return std::puts("a match rule did not parse"), 1;
  if (!hit->matches(*view) || miss->matches(*view)) return std::puts("match verdicts are wrong"), 1;

  std::printf("core consumer: %zu-byte message parsed and matched\n", bytes->size());
  return 0;
}
