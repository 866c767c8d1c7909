#pragma once
/// @file udp.hpp
/// udp_probe: send one datagram to `host:port` and judge the answer (or its absence).
///
/// The probe uses a *connected* UDP socket, so an ICMP port unreachable coming back from the
/// target surfaces as `connection_refused` on the next receive; an unconnected socket would only
/// time out. Outcomes:
///   - ICMP port unreachable            -> reason::refused, "port unreachable (ICMP)"
///   - a reply datagram                 -> healthy, unless `expect` is set and the reply does not
///                                         contain it: reason::mismatch with an excerpt
///   - no reply by the deadline         -> healthy "no reply: open or filtered" without a
///                                         latency; with `expect` set: reason::timeout
/// Only the first reply datagram is judged. Names resolve through sonde::resolve; when a name
/// has several addresses, the next one is tried after a refused or unreachable answer.
///
/// Metrics: `latency` and `rtt` (s, send to first reply), `reply_bytes` (bytes, size of the
/// first reply datagram). A refused run carries the time until the ICMP error as its latency.
///
/// Sockets are kept for the next run to the same address and port (detail::udp_socket_pool, one
/// per io_context) when a run ended with a definite answer: an ICMP error, or a reply (then the
/// next run first drains anything still queued). A run that ended without an answer closes its
/// socket, so a late reply can never be taken for a later run's answer.

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <asio/error.hpp>
#include <asio/execution_context.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/address.hpp>
#include <asio/ip/udp.hpp>
#include <asio/use_awaitable.hpp>

#include "detail/net.hpp"
#include "detail/peer_cache.hpp"
#include "probe.hpp"
#include "resolve.hpp"

namespace sonde {
namespace detail {

/// Idle connected UDP sockets, kept per io_context for the next run to the same peer. A socket
/// enters the pool only after a run that ended with a definite answer (an ICMP error, which
/// leaves nothing queued, or a reply, after which the next user drains the queue), so what a
/// reused socket receives answers the new run. Bounded: at most `max_idle` sockets, none older
/// than `max_age`; the oldest are closed first. Thread-safe.
class udp_socket_pool final : public asio::execution_context::service {
 public:
  using key_type = udp_socket_pool;
  static inline asio::execution_context::id id;
  static constexpr std::size_t max_idle = peer_cache<int>::max_idle;
  static constexpr std::chrono::seconds max_age = peer_cache<int>::max_age;

  explicit udp_socket_pool(asio::io_context& ctx) : service(ctx) {}
  ~udp_socket_pool() override { shutdown(); }
  void shutdown() override { idle_.clear(); }

  /// An idle socket connected to `ep`: its descriptor (-1 if none) and whether the queue must
  /// be drained before use.
  struct lease {
    int fd = -1;
    bool drain = false;
  };
  lease take(const asio::ip::udp::endpoint& ep) {
    auto kept = idle_.take(ep);
    if (!kept) return {};
    return {kept->release(), kept->drain};
  }
  /// Keep `fd` (connected to `ep`) for later; `drain` when a reply may still be queued.
  void give(const asio::ip::udp::endpoint& ep, int fd, bool drain) {
    idle_.give(ep, kept_fd(fd, drain));
  }

  struct stats_t {
    std::size_t idle = 0;      ///< sockets waiting in the pool
    std::uint64_t reused = 0;  ///< runs that took a pooled socket
  };
  stats_t stats() { return {idle_.idle(), idle_.reused()}; }

 private:
  /// An idle descriptor, closed when dropped.
  struct kept_fd {
    int fd = -1;
    bool drain = false;
    kept_fd(int f, bool d) noexcept : fd(f), drain(d) {}
    kept_fd(kept_fd&& o) noexcept : fd(std::exchange(o.fd, -1)), drain(o.drain) {}
    kept_fd& operator=(kept_fd&& o) noexcept {
      if (this != &o) {
        if (fd >= 0) ::close(fd);
        fd = std::exchange(o.fd, -1);
        drain = o.drain;
      }
      return *this;
    }
    ~kept_fd() {
      if (fd >= 0) ::close(fd);
    }
    int release() noexcept { return std::exchange(fd, -1); }
  };
  peer_cache<kept_fd> idle_;
};

/// Pool statistics of `ctx` (all zero when no UDP probe ran on it).
inline udp_socket_pool::stats_t udp_pool_stats(asio::io_context& ctx) {
  if (!asio::has_service<udp_socket_pool>(ctx)) return {};
  return asio::use_service<udp_socket_pool>(ctx).stats();
}

/// A connected datagram socket that stays a plain descriptor until the run has to wait. A
/// probe whose answer is already queued when it looks (an ICMP error on loopback) then costs
/// no reactor registration (epoll_ctl); the rest register on first wait. Not thread-safe.
class lazy_udp_socket {
 public:
  explicit lazy_udp_socket(const asio::any_io_executor& ex) : sock_(ex) {}
  ~lazy_udp_socket() { close(); }
  lazy_udp_socket(const lazy_udp_socket&) = delete;
  lazy_udp_socket& operator=(const lazy_udp_socket&) = delete;

  /// Close any previous socket, open a non-blocking close-on-exec one for `ep`'s family and
  /// connect it to `ep` (no traffic). Returns the failing call's error.
  asio::error_code open_connected(const asio::ip::udp::endpoint& ep) {
    close();
    protocol_ = ep.protocol();
    fd_ = ::socket(protocol_.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return last_error();
    if (::connect(fd_, ep.data(), static_cast<socklen_t>(ep.size())) != 0) return last_error();
    return {};
  }
  /// Take over `fd`, a socket of `protocol`'s family already connected to the peer.
  void adopt(int fd, const asio::ip::udp& protocol) {
    close();
    protocol_ = protocol;
    fd_ = fd;
  }
  /// Give up the descriptor, leaving the reactor if it was registered; -1 when there is none.
  int release() noexcept {
    if (sock_.is_open()) {
      asio::error_code ec;
      int fd = sock_.release(ec);
      if (ec) {
        sock_.close(ec);
        return -1;
      }
      return fd;
    }
    return std::exchange(fd_, -1);
  }
  /// Discard whatever a previous run left queued: datagrams and a pending error. Bounded.
  void drain() noexcept {
    const int fd = this->fd();
    for (int i = 0; i < 64; ++i) {
      if (::recv(fd, nullptr, 0, MSG_DONTWAIT | MSG_TRUNC) >= 0) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;  // others are consumed errors
    }
  }
  /// errno as an asio::error_code.
  static asio::error_code last_error() {
    return asio::error_code(errno, asio::error::get_system_category());
  }
  /// The descriptor, wherever it currently lives; -1 when closed.
  int fd() noexcept { return sock_.is_open() ? sock_.native_handle() : fd_; }
  /// Hand the descriptor to the reactor (idempotent).
  asio::error_code register_with_reactor() {
    asio::error_code ec;
    if (!sock_.is_open() && fd_ >= 0) {
      sock_.assign(protocol_, fd_, ec);
      if (!ec) fd_ = -1;
    }
    return ec;
  }
  /// The reactor-side socket, for async_wait; valid after register_with_reactor().
  asio::ip::udp::socket& reactor() noexcept { return sock_; }
  /// Cancel pending waits.
  void cancel() noexcept {
    asio::error_code ignored;
    sock_.cancel(ignored);
  }
  void close() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    asio::error_code ignored;
    sock_.close(ignored);
  }

 private:
  asio::ip::udp::socket sock_;
  asio::ip::udp protocol_ = asio::ip::udp::v4();
  int fd_ = -1;
};

}  // namespace detail

/// UDP request/reply checker.
///
/// @par Thread Safety
/// A udp_probe holds no mutable state: one object may be run any number of times concurrently,
/// on one io_context or several.
class udp_probe {
 public:
  static constexpr std::string_view kind = "udp";
  static constexpr std::string_view summary =
      "UDP datagram check: ICMP port unreachable is refused, a reply may be matched";
  static constexpr std::string_view target_form = "host:port";
  static constexpr port_rule target_ports = port_rule::required;
  static constexpr std::uint16_t default_port = 0;

  /// Largest UDP payload; also the largest `max_reply`.
  static constexpr std::int64_t max_datagram = 65535;

  /// Options, with their defaults. Neither `send` nor `send_hex`: an empty datagram is sent.
  struct options {
    std::string send;                       ///< payload as text (escapes \r \n \t \0 \\ \xHH)
    std::string send_hex;                   ///< payload as hex bytes ("0a ff 01"); not with send
    std::string expect;                     ///< the reply must contain this (same escapes)
    std::string family = "auto";            ///< auto, ipv4, ipv6
    std::int64_t max_reply = max_datagram;  ///< most reply bytes kept for matching `expect`
  };

  static constexpr option_spec option_table[] = {
      {"send", option_type::string, "",
       "Payload as text (escapes: \\r \\n \\t \\0 \\\\ \\xHH); default: an empty datagram"},
      {"send_hex", option_type::string, "",
       "Payload as hex bytes (\"0a ff 01\"; spaces and colons ignored); not together with 'send'"},
      {"expect", option_type::string, "",
       "Substring the reply must contain (same escapes); reason 'mismatch' otherwise, 'timeout' "
       "when nothing answers"},
      {"family", option_type::string, "auto", "Address family for names: auto, ipv4 or ipv6"},
      {"max_reply", option_type::integer, "65535",
       "Most bytes of the reply datagram searched for 'expect' (1-65535)"},
  };
  static constexpr metric_spec metric_table[] = {
      {"latency", "s", "Send to first reply (or to the ICMP error); absent without a reply"},
      {"rtt", "s", "Send to first reply datagram"},
      {"reply_bytes", "bytes", "Size of the first reply datagram"},
  };

  /// Read options from an option_set (types already checked). Giving both `send` and
  /// `send_hex` is an error naming both.
  static tl::expected<options, probe_error> options_from(const option_set& set) {
    options o;
    for (auto r :
         {set.get("send", o.send), set.get("send_hex", o.send_hex), set.get("expect", o.expect),
          set.get("family", o.family), set.get("max_reply", o.max_reply)})
      if (!r) return tl::unexpected(r.error());
    if (set.find("send") && set.find("send_hex")) return tl::unexpected(both_payloads_error());
    return o;
  }

  /// Validate options and build the probe. Errors name the bad key.
  static tl::expected<udp_probe, probe_error> make(options o) {
    udp_probe p;
    if (!o.send.empty() && !o.send_hex.empty()) return tl::unexpected(both_payloads_error());
    if (!o.send_hex.empty()) {
      auto bytes = detail::decode_hex(o.send_hex);
      if (!bytes)
        return tl::unexpected(option_error(
            "send_hex",
            "'send_hex' must be pairs of hex digits (\"0a ff 01\"), not \"" + o.send_hex + "\""));
      p.payload_ = std::move(*bytes);
    } else {
      auto text = detail::decode_escapes(o.send);
      if (!text) return tl::unexpected(option_error("send", "bad escape sequence in 'send'"));
      p.payload_ = std::move(*text);
    }
    auto expect = detail::decode_escapes(o.expect);
    if (!expect) return tl::unexpected(option_error("expect", "bad escape sequence in 'expect'"));
    p.expect_ = std::move(*expect);
    auto fam = detail::family_option(o.family);
    if (!fam) return tl::unexpected(fam.error());
    p.family_ = *fam;
    if (o.max_reply < 1 || o.max_reply > max_datagram)
      return tl::unexpected(option_error("max_reply", "max_reply must be 1 to 65535"));
    p.opts_ = std::move(o);
    return p;
  }

  /// The options the probe was made from.
  const options& opts() const noexcept { return opts_; }

  /// Run once against `t`, finishing by `dl`. Never throws for network conditions; a socket
  /// that cannot be opened is a probe_error (resource or unsupported).
  asio::awaitable<probe_result> run(target t, deadline dl) const {
    observation obs;
    obs.start = detail::wall_now();

    // IP literals of the wanted family skip the resolver (and its allocations) entirely.
    asio::ip::address literal;
    std::vector<asio::ip::address> resolved;
    std::span<const asio::ip::address> addrs;
    if (t.kind != host_kind::name) {
      if (auto a = detail::parse_ip_literal(t.host); a && detail::family_allows(family_, *a)) {
        literal = *a;
        addrs = std::span<const asio::ip::address>(&literal, 1);
      }
    }
    if (addrs.empty()) {
      auto r = co_await resolve(t.host, family_, dl);
      if (!r) {
        obs.fail(reason::resolve, std::move(r.error()));
        co_return std::move(obs);
      }
      resolved = std::move(*r);
      addrs = resolved;
    }

    auto ex = co_await asio::this_coro::executor;
    auto& pool = asio::use_service<detail::udp_socket_pool>(detail::io_context_of(ex));
    detail::lazy_udp_socket sock(ex);
    // Created only when the run has to wait: a refused loopback probe never arms a timer.
    std::optional<detail::watchdog> dog;
    asio::error_code ec;
    for (std::size_t i = 0; i < addrs.size(); ++i) {
      const bool last = i + 1 == addrs.size();
      asio::ip::udp::endpoint ep(addrs[i], t.port);
      // A socket whose last run here got a definite answer, or a new one (connect sends no
      // traffic: it binds the peer so that ICMP errors reach us).
      if (auto kept = pool.take(ep); kept.fd >= 0) {
        sock.adopt(kept.fd, ep.protocol());
        if (kept.drain) sock.drain();
        ec.clear();
      } else {
        ec = sock.open_connected(ep);
      }
      // After a definite answer the socket serves the next run to this peer; after none (a
      // timeout) it is closed, so a late reply cannot answer a later run.
      auto keep = [&](bool drain) {
        if (int fd = sock.release(); fd >= 0) pool.give(ep, fd, drain);
      };
      if (ec) {
        if (auto e = detail::local_exhaustion(ec, "opening a UDP socket"))
          co_return tl::unexpected(std::move(*e));  // no other address would fare better
        if (!last) continue;
        if (ec == asio::error::address_family_not_supported)
          co_return tl::unexpected(detail::udp_open_error(ec));
        obs.fail(detail::classify(ec, false), "cannot send to " +
                                                  detail::endpoint_text(ep.address(), ep.port()) +
                                                  ": " + ec.message());
        co_return std::move(obs);
      }

      // Send: non-blocking first; wait for buffer space only if the kernel has none.
      clock::time_point t_send = clock::now();
      while (!send_now(sock.fd(), ec) && ec == asio::error::would_block) {
        if (!arm(dog, sock, dl, ec)) break;
        (void)co_await sock.reactor().async_wait(asio::socket_base::wait_write,
                                                 asio::experimental::as_tuple(asio::use_awaitable));
        if (dog->fired()) break;
        t_send = clock::now();
      }
      if (ec) {
        if (ec == asio::error::would_block || (dog && dog->fired())) {
          obs.fail(reason::timeout, "send timed out");
          co_return std::move(obs);
        }
        if (!last && detail::worth_next_address(ec)) continue;
        obs.fail(detail::classify(ec, false), "send failed: " + ec.message());
        co_return std::move(obs);
      }

      // Wait for the first reply. On loopback an ICMP error is usually queued before send()
      // returns, so peek once before waiting: that path needs no timer, no reactor
      // registration and no suspension.
      std::size_t size = 0;
      clock::time_point t_reply;
      bool got = false;
      while (true) {
        got = peek_now(sock.fd(), size, ec);
        t_reply = clock::now();
        if (got || ec != asio::error::would_block) break;
        if (!arm(dog, sock, dl, ec)) break;
        (void)co_await sock.reactor().async_wait(asio::socket_base::wait_read,
                                                 asio::experimental::as_tuple(asio::use_awaitable));
        if (dog->fired()) break;
      }
      if (got) {
        auto judged = judge_reply(std::move(obs), sock.fd(), size, t_reply - t_send);
        keep(true);  // the reply (or more of it) may still be queued: drain before reuse
        co_return judged;
      }
      if (ec == asio::error::would_block) {  // the deadline passed without an answer
        if (expect_.empty()) {
          obs.message = "no reply: open or filtered";
        } else {
          obs.fail(reason::timeout,
                   "no reply by the deadline (expected \"" + detail::excerpt(expect_) + "\")");
        }
        co_return std::move(obs);
      }
      if (detail::worth_next_address(ec)) keep(false);  // an ICMP error leaves nothing queued
      if (!last && detail::worth_next_address(ec)) continue;
      obs.latency = t_reply - t_send;
      if (ec == asio::error::connection_refused)
        obs.fail(reason::refused, "port unreachable (ICMP)");
      else
        obs.fail(detail::classify(ec, false), "receive failed: " + ec.message());
      co_return std::move(obs);
    }
    // Not reached: the last address always returns. Kept for the compiler's sake.
    obs.fail(reason::error, "no address to probe");
    co_return std::move(obs);
  }

 private:
  udp_probe() = default;

  static probe_error both_payloads_error() {
    return option_error("send_hex",
                        "'send' and 'send_hex' are mutually exclusive: give one of them");
  }

  /// Make sure the socket is registered with the reactor and the watchdog runs. False when the
  /// deadline has passed (`ec` untouched) or registration failed (`ec` set to why).
  static bool arm(std::optional<detail::watchdog>& dog, detail::lazy_udp_socket& sock, deadline dl,
                  asio::error_code& ec) {
    if (dog) return !dog->fired();
    if (detail::remaining(dl) == clock::duration::zero()) return false;
    if (auto rec = sock.register_with_reactor()) {
      ec = rec;
      return false;
    }
    dog.emplace(sock.reactor().get_executor(), dl, [&sock] { sock.cancel(); });
    return true;
  }

  /// One non-blocking send of the payload.
  bool send_now(int fd, asio::error_code& ec) const {
    ssize_t n;
    do {
      n = ::send(fd, payload_.data(), payload_.size(), MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      ec = detail::lazy_udp_socket::last_error();
      if (ec == asio::error::try_again) ec = asio::error::would_block;
      return false;
    }
    ec.clear();
    return true;
  }

  /// Non-blocking peek at the next datagram: true with its full size, or false with the
  /// pending socket error (an ICMP error) or would_block. Reads no bytes and needs no buffer.
  static bool peek_now(int fd, std::size_t& size, asio::error_code& ec) {
    ssize_t n;
    do {
      n = ::recv(fd, nullptr, 0, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      ec = detail::lazy_udp_socket::last_error();
      if (ec == asio::error::try_again) ec = asio::error::would_block;
      return false;
    }
    ec.clear();
    size = static_cast<std::size_t>(n);
    return true;
  }

  /// Build the observation for a reply of `size` bytes waiting on `sock`.
  probe_result judge_reply(observation obs, int fd, std::size_t size, clock::duration rtt) const {
    obs.latency = rtt;
    obs.set("rtt", seconds(rtt));
    obs.set("reply_bytes", static_cast<double>(size));
    if (expect_.empty()) {
      obs.message = "reply of " + std::to_string(size) + " bytes";
      return obs;
    }
    // Only now is a buffer needed, and only as large as the part of the reply kept.
    const std::size_t keep = std::min(size, static_cast<std::size_t>(opts_.max_reply));
    auto buf = std::make_unique_for_overwrite<char[]>(keep ? keep : 1);
    ssize_t n;
    do {
      n = ::recv(fd, buf.get(), keep, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
      return obs.fail(reason::error,
                      "receive failed: " + detail::lazy_udp_socket::last_error().message());
    std::string_view reply(buf.get(), std::min(static_cast<std::size_t>(n), keep));
    if (reply.find(expect_) != std::string_view::npos) {
      obs.message = "reply contains \"" + detail::excerpt(expect_) + "\"";
    } else {
      obs.fail(reason::mismatch, "expected \"" + detail::excerpt(expect_) + "\"; got \"" +
                                     detail::excerpt(reply) + "\"");
    }
    return obs;
  }

  options opts_;
  std::string payload_, expect_;
  address_family family_ = address_family::any;
};

}  // namespace sonde
