// mcbus/match: a minimal growable array that works in constant expressions.
//
// The BPF compiler runs at compile time for rules known then. std::vector would do, but clang 14
// with libstdc++ 12 cannot evaluate parts of it (resize, fill) in constant expressions, so the
// compiler uses this: new[]/delete[] only, elements default-constructed.
#pragma once

#include <mcbus/config.hpp>

#include <cstddef>
#include <cstdlib>
#include <utility>

MCBUS_NAMESPACE_BEGIN
namespace detail {

template <class T>
class cvec {
 public:
  constexpr cvec() noexcept = default;
  constexpr explicit cvec(std::size_t n) { resize(n); }
  constexpr ~cvec() { delete[] p_; }
  constexpr cvec(const cvec& o) : p_(o.n_ ? new T[o.n_]{} : nullptr), n_(o.n_), cap_(o.n_) {
    for (std::size_t i = 0; i < n_; ++i) p_[i] = o.p_[i];
  }
  constexpr cvec(cvec&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)), cap_(std::exchange(o.cap_, 0)) {}
  constexpr cvec& operator=(cvec o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    std::swap(cap_, o.cap_);
    return *this;
  }

  constexpr void push_back(const T& v) {
    if (n_ == cap_) reserve(cap_ ? cap_ * 2 : 16);
    p_[n_++] = v;
  }
  constexpr void pop_back() noexcept { --n_; }
  constexpr void clear() noexcept { n_ = 0; }
  // The compiler's arrays stay far below this; the bound also tells the optimizer so.
  static constexpr std::size_t max_elements = std::size_t{1} << 24;

  constexpr void reserve(std::size_t cap) {
    if (cap <= cap_) return;
    if (cap > max_elements) std::abort();
    T* q = new T[cap]{};
    for (std::size_t i = 0; i < n_; ++i) q[i] = std::move(p_[i]);
    delete[] p_;
    p_ = q;
    cap_ = cap;
  }
  constexpr void resize(std::size_t n, const T& fill = T{}) {
    if (n > max_elements) std::abort();
    reserve(n);
    for (std::size_t i = n_; i < n; ++i) p_[i] = fill;
    n_ = n;
  }

  constexpr std::size_t size() const noexcept { return n_; }
  constexpr bool empty() const noexcept { return n_ == 0; }
  constexpr T& operator[](std::size_t i) noexcept { return p_[i]; }
  constexpr const T& operator[](std::size_t i) const noexcept { return p_[i]; }
  constexpr T& back() noexcept { return p_[n_ - 1]; }
  constexpr T* data() noexcept { return p_; }
  constexpr const T* data() const noexcept { return p_; }
  constexpr T* begin() noexcept { return p_; }
  constexpr T* end() noexcept { return p_ + n_; }
  constexpr const T* begin() const noexcept { return p_; }
  constexpr const T* end() const noexcept { return p_ + n_; }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
  std::size_t cap_ = 0;
};

}  // namespace detail
MCBUS_NAMESPACE_END
