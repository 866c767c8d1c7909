#include <catch2/catch.hpp>

#include <sonde/condition.hpp>

using namespace sonde;

TEST_CASE("condition: operators and units", "[condition]") {
  auto c = parse_condition("latency > 200ms");
  REQUIRE(c);
  CHECK(c->metric == "latency");
  CHECK(c->op == compare_op::gt);
  CHECK(c->value == Approx(0.2));
  CHECK(c->holds(0.3));
  CHECK_FALSE(c->holds(0.2));

  CHECK(parse_condition("loss>=50%")->value == 50);
  CHECK(parse_condition("mem.available < 512MB")->value == 512.0 * 1024 * 1024);
  CHECK(parse_condition("tls.cert_expiry < 7d")->value == 7 * 86400);
  CHECK(parse_condition("offset < -0.5s")->value == -0.5);
  CHECK(parse_condition("status_code != 200")->op == compare_op::ne);
  CHECK(parse_condition("x == 1e3")->value == 1000);
  CHECK(parse_condition("rtt_avg <= 1.5ms")->op == compare_op::le);
  CHECK(parse_condition("  jitter   >=   2us  ")->value == Approx(2e-6));
}

TEST_CASE("condition: names resolve through the probe's enumeration", "[condition]") {
  enum_resolver names = [](std::string_view metric,
                           std::string_view name) -> std::optional<double> {
    if (metric == "rcode" && name == "NXDOMAIN") return 3;
    return std::nullopt;
  };
  auto c = parse_condition("rcode == NXDOMAIN", names);
  REQUIRE(c);
  CHECK(c->value == 3);
  auto bad = parse_condition("rcode == NXDOMIAN", names);
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error(), Catch::Contains("not a number or a known name"));
}

TEST_CASE("condition: malformed conditions are explained", "[condition]") {
  for (auto [text, why] :
       {std::pair{"", "expected a metric name"}, std::pair{"latency", "expected an operator"},
        std::pair{"latency = 1", "use '=='"}, std::pair{"latency >", "missing value"},
        std::pair{"latency > 1parsec", "unknown unit"},
        std::pair{"latency > fast", "is not a number"},
        std::pair{"> 1", "expected a metric name"}}) {
    auto c = parse_condition(text);
    INFO(text);
    REQUIRE_FALSE(c);
    CHECK_THAT(c.error(), Catch::Contains(why));
  }
}

TEST_CASE("condition: NaN never satisfies", "[condition]") {
  auto c = parse_condition("x != 1");
  CHECK_FALSE(c->holds(std::nan("")));
}
