// Asynchronous name resolution through c-ares on the io_context. Only loopback traffic: the
// DNS server for non-hosts names is an in-test UDP socket that never answers.
#include <catch2/catch.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/ip/udp.hpp>

#include <sonde/resolve.hpp>

using namespace sonde;
using namespace std::chrono_literals;
using lookup = tl::expected<std::vector<asio::ip::address>, std::string>;

namespace {
lookup resolve_sync(asio::io_context& io, std::string host, address_family fam,
                    std::chrono::milliseconds timeout) {
  std::optional<lookup> out;
  asio::co_spawn(
      io,
      [host, fam, timeout, &out]() -> asio::awaitable<void> {
        out = co_await resolve(host, fam, clock::now() + timeout);
      },
      asio::detached);
  io.restart();
  io.run();
  return *out;
}
}  // namespace

TEST_CASE("resolve: IP literals return without a lookup", "[resolve]") {
  asio::io_context io;
  auto r = resolve_sync(io, "::1", address_family::any, 100ms);
  REQUIRE(r);
  REQUIRE(r->size() == 1);
  CHECK((*r)[0].to_string() == "::1");
  auto mismatch = resolve_sync(io, "127.0.0.1", address_family::ipv6, 100ms);
  REQUIRE_FALSE(mismatch);
  CHECK_THAT(mismatch.error(), Catch::Contains("not of the requested family"));
}

TEST_CASE("resolve: /etc/hosts names resolve through c-ares", "[resolve]") {
  asio::io_context io;
  auto r = resolve_sync(io, "localhost", address_family::ipv4, 2000ms);
  REQUIRE(r);
  REQUIRE_FALSE(r->empty());
  CHECK((*r)[0].to_string() == "127.0.0.1");
}

TEST_CASE("resolve: a deadline cancels lookups, and lookups run concurrently", "[resolve]") {
  asio::io_context io;
  asio::ip::udp::socket silent(io, {asio::ip::make_address("127.0.0.1"), 0});
  auto server = "127.0.0.1:" + std::to_string(silent.local_endpoint().port());
  REQUIRE(set_resolver_servers(io, server));

  std::vector<lookup> results;
  auto t0 = clock::now();
  for (int i = 0; i < 3; ++i)
    asio::co_spawn(
        io,
        [i, &results]() -> asio::awaitable<void> {
          results.push_back(co_await resolve("host" + std::to_string(i) + ".invalid",
                                             address_family::ipv4, clock::now() + 300ms));
        },
        asio::detached);
  // Run until all three returned; c-ares keeps its abandoned queries alive in the background.
  while (results.size() < 3 && clock::now() - t0 < 5s) io.run_one_for(100ms);
  auto elapsed = clock::now() - t0;
  REQUIRE(results.size() == 3);
  for (auto& r : results) {
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error(), Catch::Contains("timed out resolving \"host"));
  }
  CHECK(elapsed >= 290ms);
  CHECK(elapsed < 900ms);  // not serialized: three 300 ms deadlines in parallel
}

TEST_CASE("resolve: an invalid server list is reported", "[resolve]") {
  asio::io_context io;
  auto r = set_resolver_servers(io, "not a server");
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error(), Catch::Contains("invalid DNS server list"));
}
