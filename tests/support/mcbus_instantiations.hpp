// The connection and the publisher are instantiated once, in mcbus_instantiations.cpp, instead of
// in every test file that uses them: that roughly halves the compile time of those files (it is
// what keeps the CI run within its time budget). Applications can do the same.
#pragma once

#include <mcbus/multicast.hpp>

extern template class mcbus::basic_connection<mcbus::auto_transport>;
extern template class mcbus::multicast::basic_publisher<mcbus::connection>;
