// mcbus/multicast: the multicast fast path. The member side is built into the connection
// (subscribe() joins automatically); the publisher is here.
#pragma once

#include <mcbus/multicast/member.hpp>
#include <mcbus/multicast/protocol.hpp>
#include <mcbus/multicast/publisher.hpp>
