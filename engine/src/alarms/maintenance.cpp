#include "alarms/maintenance.hpp"

#include <algorithm>

#include <date/tz.h>

namespace sonde::engine::alarms {

using sys_clock = std::chrono::system_clock;
using std::chrono::seconds;

namespace {

const date::time_zone* zone_of(const maintenance_window& w) {
  try {
    return date::locate_zone(w.zone);
  } catch (const std::exception&) {
    return date::locate_zone("UTC");
  }
}

sys_clock::time_point to_sys(const date::time_zone* z, date::local_seconds l) {
  // Nonexistent local times (spring forward) and ambiguous ones (fall back) both resolve to
  // the earliest instant rather than throwing.
  auto info = z->get_info(l);
  if (info.result == date::local_info::nonexistent) return sys_clock::time_point(info.first.end);
  return sys_clock::time_point(z->to_sys(l, date::choose::earliest));
}

}  // namespace

window_state window_at(const maintenance_window& w, sys_clock::time_point t) {
  window_state s;
  s.next_change = sys_clock::time_point::max();
  const auto* z = zone_of(w);
  if (!w.days) {
    sys_clock::time_point start = w.absolute
                                      ? sys_clock::time_point(seconds(w.start_seconds))
                                      : to_sys(z, date::local_seconds(seconds(w.start_seconds)));
    auto end = start + w.length;
    if (t < start)
      s.next_change = start;
    else if (t < end)
      s.open = true, s.next_change = end;
    return s;
  }
  // Weekly: look at the starts of the days around `t` (a window lasts at most 7 days).
  auto local = z->to_local(date::floor<seconds>(t));
  auto today = date::floor<date::days>(local);
  sys_clock::time_point open_until{}, next_start = sys_clock::time_point::max();
  for (int d = -8; d <= 8; ++d) {
    auto day = today + date::days(d);
    unsigned wd = date::weekday(day).iso_encoding() - 1;  // Monday 0 ... Sunday 6
    if (!(w.days & (1u << wd))) continue;
    auto start = to_sys(z, day + seconds(w.start_seconds));
    auto end = start + w.length;
    if (start <= t && t < end) {
      s.open = true;
      open_until = std::max(open_until, end);
    } else if (start > t) {
      next_start = std::min(next_start, start);
    }
  }
  s.next_change = s.open ? open_until : next_start;
  return s;
}

}  // namespace sonde::engine::alarms
