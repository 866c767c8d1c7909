#pragma once
/// @file resolve.hpp
/// Asynchronous, cancellable name resolution on the caller's io_context, through c-ares.
///
/// ASIO's own resolver runs getaddrinfo on a hidden thread: lookups are serialized and a
/// deadline cannot cancel them. c-ares runs on the event loop instead: its sockets are watched
/// by the io_context, its retransmit timer is an asio timer, and a lookup whose deadline passes
/// returns at once (c-ares finishes or times out the abandoned query in the background).
/// IP literals never touch c-ares. /etc/hosts and /etc/resolv.conf are honoured.

#include <ares.h>
#include <netinet/in.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/address.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <tl/expected.hpp>

#include "probe.hpp"

namespace sonde {

/// Which address families a lookup may return.
enum class address_family { any, ipv4, ipv6 };

namespace detail {

/// One c-ares channel per io_context, driven by that io_context. Not thread-safe: use it from
/// the io_context's thread (the usual one-thread engine).
class ares_service final : public asio::execution_context::service {
 public:
  using key_type = ares_service;
  static inline asio::execution_context::id id;

  explicit ares_service(asio::io_context& ctx) : service(ctx), ctx_(ctx), timer_(ctx) {
    static std::once_flag once;
    std::call_once(once, [] { ares_library_init(ARES_LIB_INIT_ALL); });
    ares_options o{};
    o.sock_state_cb = &ares_service::on_sock_state;
    o.sock_state_cb_data = this;
    init_status_ = ares_init_options(&channel_, &o, ARES_OPT_SOCK_STATE_CB);
    if (init_status_ != ARES_SUCCESS) channel_ = nullptr;
  }
  ~ares_service() override { shutdown(); }

  void shutdown() override {
    if (channel_) {
      ares_destroy(channel_);  // completes pending lookups with ARES_EDESTRUCTION
      channel_ = nullptr;
    }
    for (auto& kv : watchers_) release(*kv.second);
    watchers_.clear();
    timer_.cancel();
  }

  struct lookup {
    std::vector<asio::ip::address> addresses;
    int status = -1;
    bool done = false;
    asio::steady_timer* waiter = nullptr;  // wakes the awaiting coroutine
  };

  /// Replace the DNS servers from resolv.conf ("127.0.0.1:5353,[::1]:53").
  tl::expected<void, std::string> set_servers(const std::string& csv) {
    if (!channel_)
      return tl::unexpected(std::string("resolver unavailable: ") + ares_strerror(init_status_));
    int rc = ares_set_servers_ports_csv(channel_, csv.c_str());
    if (rc != ARES_SUCCESS)
      return tl::unexpected("invalid DNS server list \"" + csv + "\": " + ares_strerror(rc));
    return {};
  }

  /// Start a lookup; `st` is completed (done=true, waiter cancelled) later or synchronously.
  void start(const std::string& host, address_family fam, std::shared_ptr<lookup> st) {
    if (!channel_) {
      st->status = init_status_;
      st->done = true;
      return;
    }
    ares_addrinfo_hints hints{};
    hints.ai_family = fam == address_family::ipv4   ? AF_INET
                      : fam == address_family::ipv6 ? AF_INET6
                                                    : AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;  // one entry per address
    auto* holder = new std::shared_ptr<lookup>(std::move(st));
    ares_getaddrinfo(channel_, host.c_str(), nullptr, &hints, &ares_service::on_addrinfo, holder);
    rearm_timer();
  }

 private:
  struct watcher {
    explicit watcher(asio::io_context& ctx, int fd) : desc(ctx, fd) {}
    asio::posix::stream_descriptor desc;
    bool want_read = false, want_write = false, reading = false, writing = false, closed = false;
  };

  static void release(watcher& w) {
    w.closed = true;
    asio::error_code ec;
    w.desc.cancel(ec);
    (void)w.desc.release();  // c-ares owns and closes the fd
  }

  static void on_sock_state(void* data, ares_socket_t fd, int readable, int writable) {
    static_cast<ares_service*>(data)->update(fd, readable != 0, writable != 0);
  }

  static void on_addrinfo(void* arg, int status, int /*timeouts*/, ares_addrinfo* res) {
    std::unique_ptr<std::shared_ptr<lookup>> holder(static_cast<std::shared_ptr<lookup>*>(arg));
    lookup& st = **holder;
    st.status = status;
    if (status == ARES_SUCCESS && res) {
      for (auto* n = res->nodes; n; n = n->ai_next) {
        if (n->ai_family == AF_INET) {
          auto* sa = reinterpret_cast<const sockaddr_in*>(n->ai_addr);
          asio::ip::address_v4::bytes_type b;
          std::memcpy(b.data(), &sa->sin_addr, 4);
          st.addresses.emplace_back(asio::ip::address_v4(b));
        } else if (n->ai_family == AF_INET6) {
          auto* sa = reinterpret_cast<const sockaddr_in6*>(n->ai_addr);
          asio::ip::address_v6::bytes_type b;
          std::memcpy(b.data(), &sa->sin6_addr, 16);
          st.addresses.emplace_back(asio::ip::address_v6(b, sa->sin6_scope_id));
        }
      }
    }
    if (res) ares_freeaddrinfo(res);
    st.done = true;
    if (st.waiter) st.waiter->cancel();
  }

  void update(int fd, bool readable, bool writable) {
    if (!readable && !writable) {
      if (auto it = watchers_.find(fd); it != watchers_.end()) {
        release(*it->second);
        watchers_.erase(it);
      }
      return;
    }
    auto& w = watchers_[fd];
    if (!w) w = std::make_shared<watcher>(ctx_, fd);
    w->want_read = readable;
    w->want_write = writable;
    arm(w, fd);
  }

  void arm(const std::shared_ptr<watcher>& w, int fd) {
    if (w->want_read && !w->reading) {
      w->reading = true;
      w->desc.async_wait(asio::posix::descriptor_base::wait_read,
                         [this, w, fd](asio::error_code ec) {
                           w->reading = false;
                           if (ec || w->closed || !channel_) return;
                           ares_process_fd(channel_, fd, ARES_SOCKET_BAD);
                           if (!w->closed) arm(w, fd);
                           rearm_timer();
                         });
    }
    if (w->want_write && !w->writing) {
      w->writing = true;
      w->desc.async_wait(asio::posix::descriptor_base::wait_write,
                         [this, w, fd](asio::error_code ec) {
                           w->writing = false;
                           if (ec || w->closed || !channel_) return;
                           ares_process_fd(channel_, ARES_SOCKET_BAD, fd);
                           if (!w->closed) arm(w, fd);
                           rearm_timer();
                         });
    }
  }

  void rearm_timer() {
    if (!channel_) return;
    timeval tv{};
    timeval* t = ares_timeout(channel_, nullptr, &tv);
    if (!t) {
      timer_.cancel();
      return;
    }
    timer_.expires_after(std::chrono::seconds(t->tv_sec) + std::chrono::microseconds(t->tv_usec));
    timer_.async_wait([this](asio::error_code ec) {
      if (ec || !channel_) return;
      ares_process_fd(channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
      rearm_timer();
    });
  }

  asio::io_context& ctx_;
  asio::steady_timer timer_;
  ares_channel channel_ = nullptr;
  int init_status_ = ARES_SUCCESS;
  std::unordered_map<int, std::shared_ptr<watcher>> watchers_;
};

/// Parse an IP literal (with optional %zone for IPv6), or nullopt.
inline std::optional<asio::ip::address> parse_ip_literal(const std::string& host) {
  if (unsigned char b[4]; parse_ipv4(host, b))
    return asio::ip::address(asio::ip::address_v4({b[0], b[1], b[2], b[3]}));
  if (host.find(':') == std::string::npos) return std::nullopt;  // neither v4 nor v6
  asio::error_code ec;
  auto a = asio::ip::make_address(host, ec);
  if (ec) return std::nullopt;
  return a;
}

}  // namespace detail

/// Use `servers` ("127.0.0.1:5353,[::1]:53") instead of resolv.conf's name servers for lookups
/// made on `io`. /etc/hosts is still consulted first. Not thread-safe.
inline tl::expected<void, std::string> set_resolver_servers(asio::io_context& io,
                                                            const std::string& servers) {
  return asio::use_service<detail::ares_service>(io).set_servers(servers);
}

/// Resolve `host` to addresses of family `fam`, finishing by `dl`. IP literals return at once.
/// On failure the error is a sentence naming the host ("no address for \"x.test\": Domain name
/// not found"). Must be awaited on an io_context executor; not thread-safe across contexts.
inline asio::awaitable<tl::expected<std::vector<asio::ip::address>, std::string>> resolve(
    std::string host, address_family fam, deadline dl) {
  using result_type = tl::expected<std::vector<asio::ip::address>, std::string>;
  if (auto lit = detail::parse_ip_literal(host)) {
    if ((fam == address_family::ipv4 && !lit->is_v4()) ||
        (fam == address_family::ipv6 && !lit->is_v6()))
      co_return result_type(tl::unexpect, "address " + host + " is not of the requested family");
    co_return std::vector<asio::ip::address>{*lit};
  }
  auto ex = co_await asio::this_coro::executor;
  auto& svc = asio::use_service<detail::ares_service>(detail::io_context_of(ex));
  auto st = std::make_shared<detail::ares_service::lookup>();
  asio::steady_timer wake(ex);
  wake.expires_at(dl);
  st->waiter = &wake;
  struct unhook {  // the coroutine may be destroyed while the lookup is still pending
    detail::ares_service::lookup* s;
    ~unhook() { s->waiter = nullptr; }
  } guard{st.get()};
  svc.start(host, fam, st);
  if (!st->done) co_await wake.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
  if (!st->done) co_return result_type(tl::unexpect, "timed out resolving \"" + host + "\"");
  if (st->status != ARES_SUCCESS)
    co_return result_type(tl::unexpect,
                          "cannot resolve \"" + host + "\": " + ares_strerror(st->status));
  if (st->addresses.empty())
    co_return result_type(tl::unexpect, "no address of the requested family for \"" + host + "\"");
  co_return std::move(st->addresses);
}

}  // namespace sonde
