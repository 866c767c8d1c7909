#pragma once
/// @file policy.hpp
/// What the task file says about alarms: the per-task policy ([alarms] defaults, a task's
/// `alarm = { ... }`), the notifiers ([[notifier]]) and the maintenance windows
/// ([[maintenance]]). Plain data; read by alarm_config.cpp, used by the alarm manager.
/// Reference: docs/alarms.md.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "alarms/notifier.hpp"

namespace sonde::engine::alarms {

/// How one task's results become an alarm.
struct alarm_policy {
  int failure_threshold = 3;              ///< consecutive non-ok results before firing
  int success_threshold = 2;              ///< consecutive ok results before a firing alarm resolves
  std::chrono::milliseconds renotify{0};  ///< repeat a firing notification this often (0: never)
  std::vector<std::string> notify;        ///< notifier names
  std::string depends_on;                 ///< a task name ("" for none)
  int flap_window = 21;                   ///< results looked at for flapping
  double flap_high = 50;                  ///< % of changes above which the task flaps
  double flap_low = 25;                   ///< % of changes below which flapping ends
};

/// A [[notifier]]: its type's spec plus what the dispatcher does around it.
struct notifier_config {
  notifier_spec spec;
  std::chrono::milliseconds group_wait{10000};  ///< events within this go out as one message
  std::chrono::milliseconds max_age{24 * 3600 * 1000};  ///< retried until this old, then dropped
  std::chrono::milliseconds retry_initial{1000};        ///< first retry delay (doubles, jittered)
  std::chrono::milliseconds retry_max{300000};          ///< longest delay between attempts
  int rate_count = 0;                                   ///< messages per rate_period (0: no limit)
  std::chrono::milliseconds rate_period{0};
  std::string file;  ///< where it was defined ("file:line:col"), for messages
};

/// A [[maintenance]] window: notifications for its tasks are held while it is open.
struct maintenance_window {
  std::string name;
  std::vector<std::string> tasks;           ///< task names (empty with tags: by tags only)
  std::map<std::string, std::string> tags;  ///< every tag must match
  std::string zone = "UTC";                 ///< IANA time zone of `start` and `days`
  /// One-off: `start` is a local date and time; weekly (`days` set): a local time of day.
  std::int64_t start_seconds = 0;  ///< one-off: local seconds since the epoch; weekly: of day
  std::chrono::seconds length{0};
  unsigned days = 0;      ///< bit 0 = Monday ... bit 6 = Sunday; 0: one-off
  bool absolute = false;  ///< one-off given with "Z" or an offset: start_seconds is UTC
  std::string where;      ///< "file:line:col"
  /// Whether a task with this name and these tags is covered.
  bool covers(const std::string& task, const std::map<std::string, std::string>& task_tags) const {
    if (tasks.empty() && tags.empty()) return false;
    if (!tasks.empty()) {
      bool named = false;
      for (const auto& t : tasks) named = named || t == task;
      if (!named) return false;
    }
    for (const auto& [k, v] : tags) {
      auto it = task_tags.find(k);
      if (it == task_tags.end() || (v != "*" && it->second != v)) return false;
    }
    return true;
  }
};

/// Everything alarm-related in one task file.
struct alarm_settings {
  bool enabled = true;  ///< [alarms] enabled = false: no alarm is judged, nothing notified
  std::shared_ptr<const alarm_policy> defaults = std::make_shared<alarm_policy>();
  std::vector<notifier_config> notifiers;
  std::vector<maintenance_window> maintenance;
};

}  // namespace sonde::engine::alarms
