// mcbus: a received message that owns its bytes and fds.
//
// Handlers get a message_view that borrows the connection's receive buffer and is valid only during
// the call. A blocking call() returns its reply as a received_message, which keeps the bytes (one
// copy of the reply, nothing else) and the fds that came with it.
#pragma once

#include <mcbus/error.hpp>
#include <mcbus/wire/message.hpp>
#include <mcbus/wire/unix_fd.hpp>

#include <cstring>
#include <memory>
#include <span>
#include <tuple>
#include <vector>

MCBUS_NAMESPACE_BEGIN

class received_message {
 public:
  received_message() = default;
  received_message(received_message&&) noexcept = default;
  received_message& operator=(received_message&&) noexcept = default;

  // Copies the bytes of `view` and takes ownership of `fds`.
  static received_message copy_of(const message_view& view, std::vector<unix_fd> fds = {}) {
    received_message m;
    const std::size_t header = view.header_bytes().size();
    m.bytes_ = std::make_unique<std::byte[]>(view.size());
    std::memcpy(m.bytes_.get(), view.header_bytes().data(), header);
    if (!view.body_bytes().empty())
      std::memcpy(m.bytes_.get() + header, view.body_bytes().data(), view.body_bytes().size());
    m.fds_ = std::move(fds);
    for (const unix_fd& fd : m.fds_) m.fd_ints_.push_back(fd.get());
    // The bytes were validated when they arrived; re-reading the header only rebuilds the views.
    auto v =
        message_view::from_validated(std::span<const std::byte>(m.bytes_.get(), header),
                                     std::span<const std::byte>(m.bytes_.get() + header, view.body_bytes().size()));
    if (v) {
      m.view_ = *v;
      m.view_.set_fds(m.fd_ints_);
    }
    return m;
  }

  const message_view& view() const noexcept { return view_; }
  const message_view* operator->() const noexcept { return &view_; }
  const message_header& header() const noexcept { return view_.header(); }

  template <class... Ts>
  result<std::tuple<Ts...>> read() const {
    return view_.read<Ts...>();
  }
  template <class... Ts>
  error read_into(Ts&... out) const {
    return view_.read_into(out...);
  }
  template <class T>
  result<T> read_first() const {
    return view_.read_first<T>();
  }

  // The fds, to take out and keep (the message closes the ones left when destroyed).
  std::vector<unix_fd>& fds() noexcept { return fds_; }

 private:
  std::unique_ptr<std::byte[]> bytes_;
  std::vector<unix_fd> fds_;
  std::vector<int> fd_ints_;
  message_view view_;
};

MCBUS_NAMESPACE_END
