#pragma once
/// @file settings.hpp
/// [history] of a task file (docs/history.md "Settings").

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>

namespace sonde::engine::history {

struct history_settings {
  bool enabled = true;  ///< record local results (agents' reports are always stored)
  std::string path;     ///< the database ("": <state dir>/history.db); absolute once loaded
  /// Retention per level. Rows older than this are deleted incrementally.
  std::chrono::seconds raw{std::chrono::hours(24 * 7)};
  std::chrono::seconds minute{std::chrono::hours(24 * 2)};
  std::chrono::seconds hour{std::chrono::hours(24 * 90)};
  std::chrono::seconds day{std::chrono::hours(24 * 365 * 5)};
  /// Alarm events (incidents): nullopt keeps them forever.
  std::optional<std::chrono::seconds> alarms;
  std::size_t queue = 100000;  ///< results waiting for the writer; beyond: dropped, counted
  /// Group commit: the writer commits at least this often while results arrive. A SIGKILL
  /// loses at most what arrived within one interval (and never more than `queue` results).
  std::chrono::milliseconds commit_interval{1000};
};

}  // namespace sonde::engine::history
