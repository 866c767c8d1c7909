// RFC 3339 times from outside input: the agents' form (UTC) and the silence form (any zone).
#include <catch2/catch.hpp>

#include "core/rfc3339.hpp"

using namespace sonde::engine;
using namespace std::chrono_literals;

TEST_CASE("rfc3339: UTC, fractions, offsets and what each caller accepts", "[rfc3339]") {
  const auto base = from_epoch_ms(1'798'761'600'000);  // 2027-01-01T00:00:00Z
  CHECK(parse_rfc3339("2027-01-01T00:00:00Z") == base);
  CHECK(parse_rfc3339("2027-01-01T00:00:00") == base);  // sonde's own writers may omit Z
  CHECK(parse_rfc3339("2027-01-01T00:00:00.250Z") == base + 250ms);
  CHECK_FALSE(parse_rfc3339("2027-01-01T01:00:00+01:00"));  // agents: UTC only
  CHECK(parse_rfc3339("2027-01-01T01:00:00+01:00", rfc3339_zone::required_any) == base);
  CHECK(parse_rfc3339("2026-12-31T19:30:00-04:30", rfc3339_zone::required_any) == base);
  CHECK(parse_rfc3339("2027-01-01 00:00:00Z", rfc3339_zone::required_any) == base);
  CHECK_FALSE(parse_rfc3339("2027-01-01T00:00:00", rfc3339_zone::required_any));
  CHECK_FALSE(parse_rfc3339("2027-01-01 00:00:00Z"));
  for (const char* bad : {"", "2027-13-01T00:00:00Z", "1969-12-31T23:59:59Z",
                          "2027-01-01T24:00:00Z", "2027-01-01T00:00:00+1:00",
                          "2027-01-01T00:00:00+01:60", "tomorrow", "2027-01-01T00:00:00Zjunk"})
    CHECK_FALSE(parse_rfc3339(bad, rfc3339_zone::required_any));
}
