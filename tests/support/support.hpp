#pragma once
// Test support: run a probe to completion on a private io_context, and small loopback servers
// bound to port 0 for tests that need a peer.

#include <chrono>
#include <initializer_list>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/udp.hpp>

#include <catch2/catch.hpp>

#include <sonde/probe.hpp>

namespace sonde::test {

/// Run `p.run(t, now + timeout)` on a fresh io_context and return its result.
template <class P>
probe_result run_probe(const P& p, const target& t,
                       std::chrono::milliseconds timeout = std::chrono::milliseconds(2000)) {
  asio::io_context io;
  std::optional<probe_result> out;
  asio::co_spawn(
      io,
      [&p, t, timeout, &out]() -> asio::awaitable<void> {
        out = co_await p.run(t, clock::now() + timeout);
      },
      asio::detached);
  io.run();
  return out ? std::move(*out)
             : probe_result(tl::unexpected(probe_error{probe_errc::internal, "", "no result"}));
}

/// Run `p` against `t` `n` times one after the other on `io` (each run with `timeout`), so that
/// later runs find what earlier ones left in the io_context's services.
template <class P>
std::vector<probe_result> run_in_sequence(
    asio::io_context& io, const P& p, const target& t, int n,
    std::chrono::milliseconds timeout = std::chrono::milliseconds(2000)) {
  std::vector<probe_result> out;
  asio::co_spawn(
      io,
      [&p, t, n, timeout, &out]() -> asio::awaitable<void> {
        for (int i = 0; i < n; ++i) out.push_back(co_await p.run(t, clock::now() + timeout));
      },
      asio::detached);
  io.run();
  io.restart();
  return out;
}

/// Parse a target or fail the test.
template <class P>
target target_for(std::string_view text) {
  auto t = parse_target_for<P>(text);
  if (!t) throw std::runtime_error(t.error().message);
  return *t;
}

/// Build a probe from option pairs or throw.
template <class P>
P make(const option_set& set = {}) {
  auto p = make_probe<P>(set);
  if (!p) throw std::runtime_error(p.error().message);
  return std::move(*p);
}

/// A loopback port that nothing listens on (TCP and UDP), found by binding and closing.
inline unsigned short closed_port() {
  asio::io_context io;
  asio::ip::tcp::acceptor a(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  auto port = a.local_endpoint().port();
  a.close();
  return port;
}

/// An option set from {key, value} pairs.
inline option_set opts(std::initializer_list<std::pair<const char*, option_value>> kv) {
  option_set s;
  for (auto& [k, v] : kv) s.set(k, v);
  return s;
}

/// ICMP needs a datagram-socket range or CAP_NET_RAW; without either, the real-socket tests
/// cannot run here (the [.icmp-noperm] test covers that case). True (with a warning) when `r`
/// is that refusal.
inline bool no_icmp_permission(const probe_result& r) {
  if (!r && r.error().code == probe_errc::permission_denied) {
    WARN("skipped: ICMP sockets are not permitted here: " << r.error().message);
    return true;
  }
  return false;
}

}  // namespace sonde::test
