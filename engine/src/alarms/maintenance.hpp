#pragma once
/// @file maintenance.hpp
/// When a [[maintenance]] window is open, in its time zone (IANA tzdata through Howard
/// Hinnant's date library: daylight-saving changes included; a start time that does not exist
/// on a spring-forward day begins at the transition, one that exists twice begins at the first).

#include <chrono>

#include "alarms/policy.hpp"

namespace sonde::engine::alarms {

struct window_state {
  bool open = false;
  /// When `open` changes next (time_point::max() for never: a one-off window that is over).
  std::chrono::system_clock::time_point next_change;
};

/// The window's state at `t`. The zone was checked when the file was read.
window_state window_at(const maintenance_window& w, std::chrono::system_clock::time_point t);

}  // namespace sonde::engine::alarms
