#pragma once
/// @file duration.hpp
/// Parsing and formatting of human durations: "250ms", "10s", "1m30s", "1.5h", "1d".

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include <tl/expected.hpp>

namespace sonde {

/// sonde's duration type (nanosecond resolution).
using duration = std::chrono::nanoseconds;

namespace detail {
/// Nanoseconds per unit, or 0 if `u` is no duration unit.
constexpr double duration_unit_ns(std::string_view u) noexcept {
  if (u == "ns") return 1;
  if (u == "us" || u == "\xC2\xB5s") return 1e3;
  if (u == "ms") return 1e6;
  if (u == "s") return 1e9;
  if (u == "m") return 60e9;
  if (u == "h") return 3600e9;
  if (u == "d") return 86400e9;
  return 0;
}
constexpr bool is_digit(char c) noexcept {
  return c >= '0' && c <= '9';
}
}  // namespace detail

/// Parse a duration: one or more `<number><unit>` parts with units ns, us, ms, s, m, h, d
/// ("1m30s", "0.5s"). A bare "0" is zero. Negative and out-of-range values are errors.
/// Returns the error as a sentence naming the input. Thread-safe (pure function).
inline tl::expected<duration, std::string> parse_duration(std::string_view text) {
  auto fail = [&](std::string why) -> tl::unexpected<std::string> {
    return tl::unexpected("invalid duration \"" + std::string(text) + "\": " + why);
  };
  if (text.empty()) return fail("empty (use e.g. \"250ms\", \"10s\", \"5m\")");
  if (text == "0") return duration::zero();
  double total_ns = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t num_begin = i;
    while (i < text.size() && (detail::is_digit(text[i]) || text[i] == '.')) ++i;
    if (i == num_begin) {
      if (text[i] == '-') return fail("negative durations are not allowed");
      return fail("expected a number at \"" + std::string(text.substr(i)) + "\"");
    }
    std::string num(text.substr(num_begin, i - num_begin));
    if (num.find('.') != num.rfind('.') || num == ".")
      return fail("malformed number \"" + num + "\"");
    std::size_t unit_begin = i;
    while (i < text.size() && !detail::is_digit(text[i]) && text[i] != '.') ++i;
    std::string_view unit = text.substr(unit_begin, i - unit_begin);
    if (unit.empty()) return fail("missing unit after \"" + num + "\" (use us, ms, s, m, h or d)");
    double per = detail::duration_unit_ns(unit);
    if (per == 0)
      return fail("unknown unit \"" + std::string(unit) + "\" (use us, ms, s, m, h or d)");
    total_ns += std::strtod(num.c_str(), nullptr) * per;
  }
  if (!(total_ns < 9.2e18)) return fail("too large");
  return duration(static_cast<std::int64_t>(std::llround(total_ns)));
}

/// Format a duration compactly for people: "0s", "850us", "12.3ms", "2.5s", "5m", "1h30m", "2d".
inline std::string format_duration(duration d) {
  using namespace std::chrono;
  char buf[48];
  std::int64_t ns = d.count();
  const char* sign = ns < 0 ? "-" : "";
  if (ns < 0) ns = -ns;
  if (ns == 0) return "0s";
  if (ns < 1000) {
    std::snprintf(buf, sizeof buf, "%s%lldns", sign, static_cast<long long>(ns));
  } else if (ns < 1'000'000) {
    std::snprintf(buf, sizeof buf, "%s%.3gus", sign, ns / 1e3);
  } else if (ns < 1'000'000'000) {
    std::snprintf(buf, sizeof buf, "%s%.3gms", sign, ns / 1e6);
  } else if (ns < 60'000'000'000LL) {
    std::snprintf(buf, sizeof buf, "%s%.3gs", sign, ns / 1e9);
  } else {
    std::int64_t s = ns / 1'000'000'000;
    std::int64_t days = s / 86400, hours = s % 86400 / 3600, mins = s % 3600 / 60, secs = s % 60;
    std::string out = sign;
    if (days) out += std::to_string(days) + "d";
    if (hours) out += std::to_string(hours) + "h";
    if (mins) out += std::to_string(mins) + "m";
    if (secs) out += std::to_string(secs) + "s";
    return out;
  }
  return buf;
}

}  // namespace sonde
