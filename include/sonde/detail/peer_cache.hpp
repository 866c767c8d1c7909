#pragma once
/// @file peer_cache.hpp
/// Idle connected sockets kept per peer between probe runs (detail of the UDP checkers).

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <list>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>

#include <asio/execution_context.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/udp.hpp>

namespace sonde::detail {

/// Idle values (sockets) by peer: the endpoint plus a purpose tag, so that sockets set up for
/// different checkers never mix. Bounded: at most `max_idle` values, none older than `max_age`;
/// the least recently given goes first. Dropping a value destroys it, which closes the socket.
/// Thread-safe.
template <class T>
class peer_cache {
 public:
  static constexpr std::size_t max_idle = 256;
  static constexpr std::chrono::seconds max_age{30};

  /// The idle value for `ep` and `purpose`, taken out of the cache; nullopt if there is none.
  std::optional<T> take(const asio::ip::udp::endpoint& ep, std::uint8_t purpose = 0) {
    std::lock_guard lock(mu_);
    expire(clock::now());
    auto it = index_.find(key_of(ep, purpose));
    if (it == index_.end()) return std::nullopt;
    auto pos = it->second;
    index_.erase(it);
    std::optional<T> out(std::move(pos->value));
    lru_.erase(pos);
    ++reused_;
    return out;
  }

  /// Keep `value` for the next take() of `ep` and `purpose`.
  void give(const asio::ip::udp::endpoint& ep, T value, std::uint8_t purpose = 0) {
    std::lock_guard lock(mu_);
    const auto now = clock::now();
    expire(now);
    if (lru_.size() >= max_idle) evict(lru_.begin());
    lru_.push_back(entry{key_of(ep, purpose), std::move(value), now});
    index_.emplace(lru_.back().key, std::prev(lru_.end()));
  }

  /// Drop every idle value.
  void clear() {
    std::lock_guard lock(mu_);
    index_.clear();
    lru_.clear();
  }

  std::size_t idle() {
    std::lock_guard lock(mu_);
    return lru_.size();
  }
  std::uint64_t reused() {
    std::lock_guard lock(mu_);
    return reused_;
  }

 private:
  using clock = std::chrono::steady_clock;
  /// Address bytes, port, family and purpose: equal keys mean the same peer and use.
  struct key_t {
    std::array<unsigned char, 16> addr{};
    std::uint16_t port = 0;
    bool v6 = false;
    std::uint8_t purpose = 0;
    bool operator==(const key_t&) const = default;
  };
  struct key_hash {
    std::size_t operator()(const key_t& k) const noexcept {
      std::uint64_t a, b;
      std::memcpy(&a, k.addr.data(), 8);
      std::memcpy(&b, k.addr.data() + 8, 8);
      std::uint64_t h = a * 0x9E3779B97F4A7C15ULL ^ b * 0xC2B2AE3D27D4EB4FULL;
      h ^= (std::uint64_t{k.port} << 9 | std::uint64_t{k.purpose} << 1 | (k.v6 ? 1u : 0u)) *
           0x165667B19E3779F9ULL;
      return static_cast<std::size_t>(h ^ (h >> 29));
    }
  };
  struct entry {
    key_t key;
    T value;
    clock::time_point since;
  };
  using list_t = std::list<entry>;

  static key_t key_of(const asio::ip::udp::endpoint& ep, std::uint8_t purpose) {
    key_t k;
    k.port = ep.port();
    k.v6 = ep.address().is_v6();
    k.purpose = purpose;
    if (k.v6) {
      k.addr = ep.address().to_v6().to_bytes();
    } else {
      const auto b = ep.address().to_v4().to_bytes();
      std::memcpy(k.addr.data(), b.data(), b.size());
    }
    return k;
  }
  void evict(typename list_t::iterator pos) {
    auto [lo, hi] = index_.equal_range(pos->key);
    for (auto it = lo; it != hi; ++it)
      if (it->second == pos) {
        index_.erase(it);
        break;
      }
    lru_.erase(pos);
  }
  void expire(clock::time_point now) {
    while (!lru_.empty() && now - lru_.front().since > max_age) evict(lru_.begin());
  }

  std::mutex mu_;
  list_t lru_;  // oldest first
  std::unordered_multimap<key_t, typename list_t::iterator, key_hash> index_;
  std::uint64_t reused_ = 0;
};

/// Connected UDP sockets of the request/response checkers (dns, ntp), kept per io_context for
/// the next run to the same server. A kept socket stays registered with the io_context's
/// reactor, so a run that reuses one makes no socket, connect, epoll_ctl or close call: only
/// its own send and receive. A socket is kept only after its run got a valid answer. Replies
/// that reach a kept socket later (a server's duplicate) cannot answer a later run: each
/// checker matches a reply to its own query (DNS: identifier and question; NTP: the origin
/// timestamp) and ignores the rest. Bounded like udp_socket_pool. The sockets are closed at
/// shutdown, before any service of the io_context is destroyed.
class udp_session_cache final : public asio::execution_context::service {
 public:
  using key_type = udp_session_cache;
  static inline asio::execution_context::id id;
  /// What a socket was set up for: sockets of different purposes never mix.
  enum purpose : std::uint8_t { dns = 1, ntp = 2 };

  explicit udp_session_cache(asio::io_context& ctx) : service(ctx) {}
  ~udp_session_cache() override { shutdown(); }
  void shutdown() override { idle_.clear(); }

  std::optional<asio::ip::udp::socket> take(const asio::ip::udp::endpoint& ep, purpose p) {
    return idle_.take(ep, p);
  }
  void give(const asio::ip::udp::endpoint& ep, purpose p, asio::ip::udp::socket&& s) {
    if (s.is_open()) idle_.give(ep, std::move(s), p);
  }
  std::size_t idle() { return idle_.idle(); }
  std::uint64_t reused() { return idle_.reused(); }

 private:
  peer_cache<asio::ip::udp::socket> idle_;
};

}  // namespace sonde::detail
