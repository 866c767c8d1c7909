// tcp_probe against real loopback sockets.
#include <catch2/catch.hpp>

#include <sonde/tcp.hpp>

#include "support/support.hpp"

using namespace sonde;

TEST_CASE("tcp: connect to a listening port is ok with connect_time", "[tcp][integration]") {
  asio::io_context srv;
  asio::ip::tcp::acceptor acc(srv, {asio::ip::make_address("127.0.0.1"), 0});
  auto port = acc.local_endpoint().port();
  auto p = test::make<tcp_probe>();
  auto r = test::run_probe(p, test::target_for<tcp_probe>("127.0.0.1:" + std::to_string(port)));
  REQUIRE(r);
  CHECK(r->why == reason::none);
  REQUIRE(r->get("connect_time"));
  CHECK(*r->get("connect_time") >= 0);
  CHECK(*r->get("connect_time") < 1.0);
}

TEST_CASE("tcp: closed port is refused", "[tcp][integration]") {
  auto p = test::make<tcp_probe>();
  auto r = test::run_probe(
      p, test::target_for<tcp_probe>("127.0.0.1:" + std::to_string(test::closed_port())));
  REQUIRE(r);
  CHECK(r->why == reason::refused);
  CHECK_THAT(r->message, Catch::Contains("refused"));
}
