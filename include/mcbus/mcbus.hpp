// mcbus: everything but the optional fmt formatters (include <mcbus/fmt.hpp> for those).
//
//   wire/       the codec: names, signatures, marshalling, messages (no I/O, no dependencies)
//   match/      match rules, their classic-BPF compiler and interpreter
//   io/         addresses, SASL, the io_uring and poll transports
//   connection  the bus connection, exported objects, subscriptions
//   multicast/  the publisher side of the fast path (the member side is in the connection)
#pragma once

#include <mcbus/config.hpp>
#include <mcbus/connection.hpp>
#include <mcbus/error.hpp>
#include <mcbus/match.hpp>
#include <mcbus/multicast.hpp>
#include <mcbus/wire.hpp>
