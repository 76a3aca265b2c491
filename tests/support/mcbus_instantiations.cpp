#include <mcbus/multicast.hpp>

template class mcbus::basic_connection<mcbus::auto_transport>;
template class mcbus::multicast::basic_publisher<mcbus::connection>;
