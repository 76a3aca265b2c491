// mcbus: version, feature macros and the versioned namespace.
//
// Every public macro starts with MCBUS_. The library lives in mcbus::v0 (an inline namespace), so
// two vendored copies of different major versions can be linked into one program without ODR
// clashes; users write plain mcbus::.
#pragma once

#define MCBUS_VERSION_MAJOR 0
#define MCBUS_VERSION_MINOR 1
#define MCBUS_VERSION_PATCH 0
#define MCBUS_VERSION (MCBUS_VERSION_MAJOR * 10000 + MCBUS_VERSION_MINOR * 100 + MCBUS_VERSION_PATCH)

#define MCBUS_NAMESPACE_BEGIN \
  namespace mcbus {           \
  inline namespace v0 {
#define MCBUS_NAMESPACE_END \
  }                         \
  }

// Exceptions are optional: the core never throws. When the user builds with exceptions, value() on
// an empty result throws mcbus::bad_result_access; without them it aborts with a message.
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#define MCBUS_HAS_EXCEPTIONS 1
#else
#define MCBUS_HAS_EXCEPTIONS 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define MCBUS_LIKELY(x) __builtin_expect(!!(x), 1)
#define MCBUS_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define MCBUS_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define MCBUS_LIKELY(x) (x)
#define MCBUS_UNLIKELY(x) (x)
#define MCBUS_ALWAYS_INLINE inline
#endif

#if __cplusplus < 202002L
#error "mcbus needs C++20 (g++ >= 11 or clang >= 14, with -std=c++20)"
#endif
