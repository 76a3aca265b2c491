// mcbus/wire: the limits of the D-Bus specification, as named constants.
#pragma once

#include <mcbus/config.hpp>

#include <cstddef>

MCBUS_NAMESPACE_BEGIN

inline constexpr std::size_t max_message_length = std::size_t{128} << 20;  // 128 MiB
inline constexpr std::size_t max_array_length = std::size_t{64} << 20;     // 64 MiB of elements
inline constexpr std::size_t max_name_length = 255;                        // bus, interface, member, error
inline constexpr std::size_t max_signature_length = 255;
inline constexpr unsigned max_array_depth = 32;
inline constexpr unsigned max_struct_depth = 32;
// Containers nested in a value, variants included (the signature limits cannot see variants).
inline constexpr unsigned max_total_depth = 64;
// The kernel's SCM_MAX_FD: no more fds fit in one sendmsg().
inline constexpr std::size_t max_fds_per_message = 253;
// Every message starts with this many bytes: endian, type, flags, version, body length, serial,
// and the length of the header field array.
inline constexpr std::size_t fixed_header_length = 16;

MCBUS_NAMESPACE_END
