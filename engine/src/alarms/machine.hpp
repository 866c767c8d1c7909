#pragma once
/// @file machine.hpp
/// The alarm state machine of one task: results in, alarm events out. Pure logic (no I/O, no
/// clock of its own), so every rule is unit-tested directly. docs/alarms.md has the diagram.
///
/// Two things are tracked apart: the *condition* the results show (ok, pending: failing below
/// `failure_threshold`, firing) with flapping on top, and whether a notification about the
/// current alarm went out (`notified`). Notifications are held while a silence or maintenance
/// window covers the task or its `depends_on` parent is failing; a held alarm is notified when
/// the hold ends if it still fires. A resolution is never held: every alarm that was notified
/// gets its resolution, and no other alarm does.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "alarms/policy.hpp"
#include "core/scheduler.hpp"

namespace sonde::engine::alarms {

enum class alarm_state : std::uint8_t { ok, pending, firing, flapping, silenced };
constexpr std::string_view to_string(alarm_state s) noexcept {
  switch (s) {
    case alarm_state::ok:
      return "ok";
    case alarm_state::pending:
      return "pending";
    case alarm_state::firing:
      return "firing";
    case alarm_state::flapping:
      return "flapping";
    case alarm_state::silenced:
      return "silenced";
  }
  return "ok";
}
std::optional<alarm_state> alarm_state_from(std::string_view s);

/// warning or critical (none while ok).
enum class alarm_severity : std::uint8_t { none, warning, critical };
constexpr std::string_view to_string(alarm_severity s) noexcept {
  return s == alarm_severity::warning ? "warning" : s == alarm_severity::critical ? "critical" : "";
}

/// One result as an alarm event lists it.
struct result_brief {
  std::chrono::system_clock::time_point time;
  status state = status::unknown;
  reason why = reason::none;
  std::optional<double> latency_ms;
  std::string message;
};

/// Why notifications for a task are held right now (empty strings: not held).
struct alarm_context {
  std::string silenced_by;  ///< "silence 3 (deploy)" or "maintenance nightly": shown as silenced
  std::string blocked_by;   ///< "depends_on gw (firing)": the parent is failing
};

/// A transition, or a notification without one (severity change, renotify).
struct alarm_event {
  std::chrono::system_clock::time_point time;
  std::string alarm_id;
  alarm_state state = alarm_state::ok, previous = alarm_state::ok;
  std::chrono::system_clock::time_point since;
  alarm_severity severity = alarm_severity::none;
  reason why = reason::none;
  std::string message;
  std::vector<result_brief> results;
  std::string held_by;  ///< why it was not notified, if it was held
  bool notify = false;  ///< goes to the task's notifiers
  bool acknowledged = false;
};

/// The alarm of one task.
class alarm_track {
 public:
  /// The most results an event lists.
  static constexpr std::size_t max_results = 10;

  /// Judge one result. Appends 0-2 events to `out`.
  void on_result(const alarm_policy& p, const result_record& r, const alarm_context& ctx,
                 std::chrono::system_clock::time_point now, std::vector<alarm_event>& out);
  /// The context changed without a result (a silence, a window, the parent's alarm).
  void reconsider(const alarm_policy& p, const alarm_context& ctx,
                  std::chrono::system_clock::time_point now, std::vector<alarm_event>& out);
  /// The task went away: a notified alarm is resolved ("task removed"), anything else dropped.
  void retire(std::chrono::system_clock::time_point now, std::string why,
              std::vector<alarm_event>& out);
  /// Stop renotifying until the alarm resolves. False if there is no alarm.
  bool ack();

  alarm_state state() const { return shown_; }
  /// ok, pending or firing: what the results show, ignoring flapping and holds.
  alarm_state condition() const { return cond_; }
  bool flapping() const { return flapping_; }
  alarm_severity severity() const { return sev_; }
  const std::string& alarm_id() const { return id_; }
  bool notified() const { return notified_; }
  bool acked() const { return acked_; }
  std::chrono::system_clock::time_point since() const { return since_; }
  /// Share of status changes over the flap window, in percent (0 until the window is full).
  double flap_percent() const;
  /// Failing or firing: the parent of a `depends_on` child blocks it.
  bool blocks_children() const { return cond_ != alarm_state::ok || flapping_; }
  /// Nothing worth keeping (ok, not flapping, nothing notified).
  bool quiet() const {
    return shown_ == alarm_state::ok && cond_ == alarm_state::ok && !flapping_ && !notified_;
  }
  const std::vector<result_brief>& results() const { return recent_; }
  const std::string& last_message() const { return last_message_; }

  /// For the state journal: everything needed to continue after a restart.
  nlohmann::json save() const;
  /// Undo `save`; false (and unchanged) if `j` is not a saved track.
  bool restore(const nlohmann::json& j);

 private:
  void update(const alarm_policy& p, const alarm_context& ctx,
              std::chrono::system_clock::time_point now, const result_record* r,
              std::vector<alarm_event>& out);
  void push_status(const alarm_policy& p, status s);

  alarm_state cond_ = alarm_state::ok, shown_ = alarm_state::ok;
  bool flapping_ = false, notified_ = false, acked_ = false;
  alarm_severity sev_ = alarm_severity::none;
  std::string id_;
  std::chrono::system_clock::time_point since_{}, last_notified_{};
  int fail_streak_ = 0, ok_streak_ = 0;
  // The flap window: the last statuses, a ring, and how many neighbours in it differ.
  std::vector<std::uint8_t> ring_;
  std::size_t head_ = 0;
  int changes_ = 0;
  std::vector<result_brief> recent_;  // the current streak (bounded), kept while not ok
  reason last_reason_ = reason::none;
  std::string last_message_;
};

/// A new alarm id: 16 hex digits, random.
std::string new_alarm_id();

/// The event as JSON: the fields of design.md for `task`, plus "held_by" and "acknowledged"
/// when set.
nlohmann::json event_json(const alarm_event& e, const std::string& task, const std::string& type,
                          const std::string& target);

}  // namespace sonde::engine::alarms
