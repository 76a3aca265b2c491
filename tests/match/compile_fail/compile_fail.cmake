# Compile-time contracts of the match layer, checked by compiling a small file (included from
# tests/CMakeLists.txt): an invalid rule in a _match literal or in static_bpf stops the build with a
# diagnostic naming invalid_match_rule_in_string_literal; the control builds with valid rules compile.
set(_mcbus_match_cf ${CMAKE_CXX_COMPILER} -std=c++20 -fsyntax-only -I${PROJECT_SOURCE_DIR}/include
                    ${CMAKE_CURRENT_LIST_DIR}/invalid_literal.cpp)
add_test(NAME match/CompileFail.InvalidLiteralNamesTheProblem COMMAND ${_mcbus_match_cf})
add_test(NAME match/CompileFail.InvalidStaticBpfRuleNamesTheProblem COMMAND ${_mcbus_match_cf} -DMCBUS_STATIC_BPF)
set_tests_properties(match/CompileFail.InvalidLiteralNamesTheProblem match/CompileFail.InvalidStaticBpfRuleNamesTheProblem
                     PROPERTIES PASS_REGULAR_EXPRESSION "invalid_match_rule_in_string_literal")
add_test(NAME match/CompileFail.ControlLiteralCompiles COMMAND ${_mcbus_match_cf} -DMCBUS_CONTROL)
add_test(NAME match/CompileFail.ControlStaticBpfCompiles COMMAND ${_mcbus_match_cf} -DMCBUS_CONTROL -DMCBUS_STATIC_BPF)
