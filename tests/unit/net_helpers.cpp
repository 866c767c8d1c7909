// The checkers' shared helpers: detail::heartbeat and detail::peer_cache.
#include <sonde/detail/net.hpp>
#include <sonde/detail/peer_cache.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <optional>

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

using namespace sonde;
using namespace std::chrono_literals;

TEST_CASE("heartbeat: beats while work is active and lets run() return soon after",
          "[net][heartbeat]") {
  asio::io_context io;
  detail::heartbeat hb(io.get_executor(), 10ms);
  asio::steady_timer work(io);
  hb.begin();
  work.expires_after(50ms);
  work.async_wait([&](asio::error_code) { hb.end(); });
  const auto t0 = clock::now();
  io.run();
  const auto took = clock::now() - t0;
  CHECK(took >= 50ms);
  CHECK(took < 50ms + 200ms);  // one or two periods after the end, not a deadline away
}

TEST_CASE("heartbeat: stop() ends it at once, destroying it with a wait pending is safe",
          "[net][heartbeat]") {
  asio::io_context io;
  {
    detail::heartbeat hb(io.get_executor(), 1000ms);
    hb.begin();
    hb.stop();
  }  // destroyed before its cancelled wait completes
  const auto t0 = clock::now();
  io.run();
  CHECK(clock::now() - t0 < 500ms);

  auto hb2 = std::make_unique<detail::heartbeat>(io.get_executor(), 5ms);
  hb2->begin();
  io.restart();
  asio::steady_timer t(io);
  t.expires_after(20ms);
  t.async_wait([&](asio::error_code) { hb2.reset(); });  // gone while beating
  io.run();
  CHECK_FALSE(hb2);
}

namespace {
/// Counts live instances, to see that dropped values are destroyed (sockets closed).
struct counted {
  static inline int live = 0;
  int value = 0;
  explicit counted(int v) : value(v) { ++live; }
  counted(counted&& o) noexcept : value(o.value) { ++live; }
  counted& operator=(counted&&) = default;
  ~counted() { --live; }
};
asio::ip::udp::endpoint ep(unsigned short port, const char* addr = "127.0.0.1") {
  return {asio::ip::make_address(addr), port};
}
}  // namespace

TEST_CASE("peer_cache: per peer and purpose, bounded, oldest dropped first", "[net][peer_cache]") {
  counted::live = 0;
  {
    detail::peer_cache<counted> c;
    c.give(ep(53), counted(1), 1);
    CHECK_FALSE(c.take(ep(53), 2));         // another purpose
    CHECK_FALSE(c.take(ep(54), 1));         // another port
    CHECK_FALSE(c.take(ep(53, "::1"), 1));  // another family
    auto v = c.take(ep(53), 1);
    REQUIRE(v);
    CHECK(v->value == 1);
    CHECK_FALSE(c.take(ep(53), 1));  // taken out
    CHECK(c.reused() == 1);

    const int n = static_cast<int>(detail::peer_cache<counted>::max_idle) + 44;
    for (int i = 0; i < n; ++i) c.give(ep(static_cast<unsigned short>(1000 + i)), counted(i));
    CHECK(c.idle() == detail::peer_cache<counted>::max_idle);
    CHECK_FALSE(c.take(ep(1000)));  // the oldest went first
    CHECK_FALSE(c.take(ep(1043)));
    auto newest = c.take(ep(static_cast<unsigned short>(1000 + n - 1)));
    REQUIRE(newest);
    CHECK(newest->value == n - 1);
    // Two values for one peer: both kept, each taken once.
    c.give(ep(7), counted(70));
    c.give(ep(7), counted(71));
    CHECK(c.take(ep(7)));
    CHECK(c.take(ep(7)));
    CHECK_FALSE(c.take(ep(7)));
    c.clear();
    CHECK(c.idle() == 0);
  }
  CHECK(counted::live == 0);  // every value dropped was destroyed
}
