// mcbus/multicast: the multicast fast path. The member side is built into the connection
// (subscribe() joins automatically); the publisher is here.
#pragma once

#include <mcbus/multicast/admission.hpp>
#include <mcbus/multicast/join_request.hpp>
#include <mcbus/multicast/member.hpp>
#include <mcbus/multicast/protocol.hpp>
#include <mcbus/multicast/publisher.hpp>
#include <mcbus/multicast/route.hpp>
#include <mcbus/multicast/stream.hpp>
