// Must not compile: a match rule written in the source that dbus-daemon would refuse, once through
// the _match literal and once through static_bpf. compile_fail.cmake checks that the diagnostic
// names invalid_match_rule_in_string_literal. With MCBUS_CONTROL the same code, with valid rules,
// compiles, which shows the failure comes from the rule.
#include <mcbus/match.hpp>

#ifdef MCBUS_CONTROL
#define MCBUS_TEST_RULE "type='signal',member='Changed'"
#else
#define MCBUS_TEST_RULE "type='telegram',member='Changed'"
#endif

using namespace mcbus::literals;

#ifdef MCBUS_STATIC_BPF
constexpr auto program = mcbus::static_bpf<MCBUS_TEST_RULE>;
int main() { return static_cast<int>(program.size()); }
#else
constexpr auto rule = MCBUS_TEST_RULE ""_match;
int main() { return rule.type() ? 0 : 1; }
#endif
