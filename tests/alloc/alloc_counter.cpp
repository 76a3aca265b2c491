#include "alloc_counter.hpp"

#include <execinfo.h>
#include <unistd.h>

#include <cstdlib>
#include <new>

namespace {
thread_local std::uint64_t allocations = 0;
thread_local unsigned traces_left = 0;
thread_local bool tracing = false;

// With MCBUS_ALLOC_TRACE=N, the first N counted allocations inside a traced window print their
// stack (c++filt makes it readable): the way to find what allocates per signal.
void trace() noexcept {
  if (traces_left == 0 || tracing) return;
  tracing = true;  // backtrace() may allocate the first time
  --traces_left;
  void* frames[24];
  const int n = ::backtrace(frames, 24);
  (void)!::write(2, "-- allocation\n", 14);
  ::backtrace_symbols_fd(frames, n, 2);
  tracing = false;
}

void* counted(std::size_t n) noexcept {
  ++allocations;
  trace();
  return std::malloc(n ? n : 1);
}
void* counted_aligned(std::size_t n, std::align_val_t a) noexcept {
  ++allocations;
  trace();
  const auto al = static_cast<std::size_t>(a);
  return std::aligned_alloc(al, (n + al - 1) / al * al);
}
}  // namespace

std::uint64_t mcbus_test::thread_allocations() noexcept { return allocations; }

void mcbus_test::trace_allocations(bool on) noexcept {
  static const char* limit = std::getenv("MCBUS_ALLOC_TRACE");
  traces_left = on && limit ? static_cast<unsigned>(std::atoi(limit)) : 0;
}

void* operator new(std::size_t n) {
  if (void* p = counted(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  if (void* p = counted(n)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  if (void* p = counted_aligned(n, a)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) {
  if (void* p = counted_aligned(n, a)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
