// mcbus/wire: the codec, with no I/O, no liburing and no fmt. What embedded users vendor.
#pragma once

#include <mcbus/config.hpp>
#include <mcbus/error.hpp>
#include <mcbus/wire/limits.hpp>
#include <mcbus/wire/message.hpp>
#include <mcbus/wire/names.hpp>
#include <mcbus/wire/reader.hpp>
#include <mcbus/wire/signature.hpp>
#include <mcbus/wire/unix_fd.hpp>
#include <mcbus/wire/value.hpp>
#include <mcbus/wire/writer.hpp>
