# The two consumer programs, built against mcbus::mcbus however the including project got it.
# core_consumer uses only wire/ and match/, so it builds without exceptions or RTTI;
# connection_consumer includes mcbus/connection.hpp and links what mcbus::mcbus brings (liburing).
cmake_path(SET mcbus_consumer_src NORMALIZE ${CMAKE_CURRENT_LIST_DIR}/src)
add_executable(core_consumer ${mcbus_consumer_src}/core_consumer.cpp)
target_link_libraries(core_consumer PRIVATE mcbus::mcbus)
target_compile_options(core_consumer PRIVATE -fno-exceptions -fno-rtti)
add_executable(connection_consumer ${mcbus_consumer_src}/connection_consumer.cpp)
target_link_libraries(connection_consumer PRIVATE mcbus::mcbus)

# mcbus builds its tests, tools and examples only as the top-level project.
foreach(target IN ITEMS mcbus_wire_tests mcbus-msg echo-service)
  if(TARGET ${target})
    message(FATAL_ERROR "mcbus added its own target ${target} to a consuming project")
  endif()
endforeach()
