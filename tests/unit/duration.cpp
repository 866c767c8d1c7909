#include <catch2/catch.hpp>

#include <sonde/duration.hpp>

using namespace sonde;
using namespace std::chrono_literals;

TEST_CASE("duration: parses units and compound forms", "[duration]") {
  CHECK(*parse_duration("250ms") == 250ms);
  CHECK(*parse_duration("10s") == 10s);
  CHECK(*parse_duration("5m") == 5min);
  CHECK(*parse_duration("1h") == 1h);
  CHECK(*parse_duration("1d") == 24h);
  CHECK(*parse_duration("1m30s") == 90s);
  CHECK(*parse_duration("1.5s") == 1500ms);
  CHECK(*parse_duration("750us") == 750us);
  CHECK(*parse_duration("0") == 0s);
}

TEST_CASE("duration: rejects malformed input with a sentence naming it", "[duration]") {
  for (const char* bad : {"", "10", "s", "10 s", "-1s", "1.2.3s", "10sec", "1e3s", "abc"}) {
    auto d = parse_duration(bad);
    INFO(bad);
    REQUIRE_FALSE(d);
    CHECK_THAT(d.error(), Catch::StartsWith(std::string("invalid duration \"") + bad + "\""));
  }
  CHECK_FALSE(parse_duration("99999999999d"));
}

TEST_CASE("duration: formats compactly", "[duration]") {
  CHECK(format_duration(0s) == "0s");
  CHECK(format_duration(850us) == "850us");
  CHECK(format_duration(12300us) == "12.3ms");
  CHECK(format_duration(2500ms) == "2.5s");
  CHECK(format_duration(5min) == "5m");
  CHECK(format_duration(90min) == "1h30m");
  CHECK(format_duration(48h) == "2d");
  CHECK(format_duration(-2s) == "-2s");
}
