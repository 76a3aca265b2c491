# Compile-time contracts of the wire codec, checked by compiling small files (included from
# tests/CMakeLists.txt). An unmapped type must stop the build with a static_assert whose message
# names mcbus::dbus_struct; the control build of the same file, with the type mapped, must compile.
set(_mcbus_cf_cmd ${CMAKE_CXX_COMPILER} -std=c++20 -fsyntax-only -I${PROJECT_SOURCE_DIR}/include
                  ${CMAKE_CURRENT_LIST_DIR}/unmapped_type.cpp)
add_test(NAME wire/CompileFail.UnmappedTypeNamesTheTrait COMMAND ${_mcbus_cf_cmd})
set_tests_properties(wire/CompileFail.UnmappedTypeNamesTheTrait
                     PROPERTIES PASS_REGULAR_EXPRESSION "static.assert[^\n]*mcbus::dbus_struct")
add_test(NAME wire/CompileFail.ControlCompiles COMMAND ${_mcbus_cf_cmd} -DMCBUS_CONTROL)
