// mcbus/wire: a growable byte buffer that does not zero what it is about to overwrite.
// std::vector<std::byte>::resize() would clear every byte before the writer fills it; on a 64 KiB
// array that doubles the cost of encoding.
#pragma once

#include <mcbus/config.hpp>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <utility>

MCBUS_NAMESPACE_BEGIN
namespace detail {

class byte_buffer {
 public:
  byte_buffer() noexcept = default;
  explicit byte_buffer(std::size_t capacity) { reserve(capacity); }
  byte_buffer(const byte_buffer& o) { append(o.data_, o.size_); }
  byte_buffer(byte_buffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)), cap_(std::exchange(o.cap_, 0)) {}
  byte_buffer& operator=(const byte_buffer& o) {
    if (this != &o) {
      size_ = 0;
      append(o.data_, o.size_);
    }
    return *this;
  }
  byte_buffer& operator=(byte_buffer&& o) noexcept {
    if (this != &o) {
      std::free(data_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      cap_ = std::exchange(o.cap_, 0);
    }
    return *this;
  }
  ~byte_buffer() { std::free(data_); }

  unsigned char* data() noexcept { return data_; }
  const unsigned char* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return cap_; }
  bool empty() const noexcept { return size_ == 0; }
  void clear() noexcept { size_ = 0; }
  std::span<const std::byte> bytes() const noexcept { return {reinterpret_cast<const std::byte*>(data_), size_}; }

  void reserve(std::size_t n) {
    if (n <= cap_) return;
    // Doubling keeps appends amortized O(1); a single large append gets what it asks for, not the
    // next power of two (64 KiB + 4 would otherwise allocate 128 KiB).
    std::size_t cap = cap_ ? 2 * cap_ : 64;
    if (cap < n) cap = n;
    void* p = std::realloc(data_, cap);
    if (!p) {
      std::fputs("mcbus: out of memory\n", stderr);
      std::abort();
    }
    data_ = static_cast<unsigned char*>(p);
    cap_ = cap;
  }
  // Grows by n bytes and returns where they start; their content is unspecified.
  MCBUS_ALWAYS_INLINE unsigned char* extend(std::size_t n) {
    if (MCBUS_UNLIKELY(size_ + n > cap_)) reserve(size_ + n);
    unsigned char* p = data_ + size_;
    size_ += n;
    return p;
  }
  void append(const void* p, std::size_t n) {
    if (n) std::memcpy(extend(n), p, n);
  }
  void append_zeros(std::size_t n) {
    if (n) std::memset(extend(n), 0, n);
  }
  void resize(std::size_t n) {
    if (n > size_) append_zeros(n - size_);
    size_ = n;
  }

 private:
  unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t cap_ = 0;
};

}  // namespace detail
MCBUS_NAMESPACE_END
