#pragma once
/// @file rfc3339.hpp
/// Reading RFC 3339 times from outside input (agents' results, `silence` until): one parser,
/// bounded to 40 characters, no allocation.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

namespace sonde::engine {

/// Which zones a time may carry.
enum class rfc3339_zone {
  utc,          ///< 'Z' or none (UTC): what sonde itself writes (agents' results)
  required_any  ///< 'Z' or an offset ("+01:00"), one of them required; ' ' may stand for 'T'
};

/// "2026-11-21T02:40:56.123456Z" (the fraction optional), zones as `zone` says. nullopt if the
/// text is not that shape or not a real date (1970 or later).
std::optional<std::chrono::system_clock::time_point> parse_rfc3339(
    std::string_view text, rfc3339_zone zone = rfc3339_zone::utc);

/// Milliseconds since the epoch, and back (the journals' time format).
inline std::int64_t to_epoch_ms(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}
inline std::chrono::system_clock::time_point from_epoch_ms(std::int64_t ms) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::milliseconds(ms)));
}

}  // namespace sonde::engine
