// Counts heap allocations per thread: alloc_counter.cpp replaces the global operator new. Its own
// translation unit, so that no compiler sees a replaced operator inlined next to its caller.
#pragma once

#include <cstdint>

namespace mcbus_test {
// operator new calls made by the calling thread so far (the other threads' do not count).
std::uint64_t thread_allocations() noexcept;
// Starts or ends a window in which the calling thread's allocations print their stacks, when
// MCBUS_ALLOC_TRACE=N is set (at most N of them).
void trace_allocations(bool on) noexcept;
}  // namespace mcbus_test
