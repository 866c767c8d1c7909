#pragma once
/// @file alarm_manager.hpp
/// The alarm subsystem as the engine sees it: a result sink that keeps one alarm_track per
/// task, applies silences, maintenance windows and `depends_on`, streams alarm events to its
/// listeners, and hands notifications to the dispatcher through the durable journal. Alarm
/// states, pending notifications and silences survive a restart (or a SIGKILL) of the engine.
/// Not thread-safe: use from the loop's thread. Reference: docs/alarms.md.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <nlohmann/json.hpp>
#include <tl/expected.hpp>

#include "alarms/dispatcher.hpp"
#include "alarms/journal.hpp"
#include "alarms/machine.hpp"
#include "alarms/policy.hpp"
#include "core/scheduler.hpp"

namespace sonde::engine::alarms {

struct alarm_manager_options {
  std::string state_dir;  ///< holds alarms.journal ("" : nothing survives a restart)
  bool sync = true;       ///< fdatasync the journal
  std::uint64_t compact_bytes = std::uint64_t{8} << 20;  ///< rewrite the journal past this
  std::function<void(const std::string&)> log;           ///< operator-facing lines
};

/// A silence: notifications for the tasks it covers are held until `end`.
struct silence {
  std::uint64_t id = 0;
  std::vector<std::string> tasks;
  std::map<std::string, std::string> tags;
  std::chrono::system_clock::time_point start, end;
  std::string reason;
  bool covers(const std::string& task, const std::map<std::string, std::string>* task_tags) const;
  nlohmann::json to_json() const;
};

class alarm_manager final : public result_sink {
 public:
  alarm_manager(asio::io_context& io, scheduler& sched, const alarm_settings& settings,
                alarm_manager_options opts);
  alarm_manager(const alarm_manager&) = delete;
  alarm_manager& operator=(const alarm_manager&) = delete;
  ~alarm_manager() override;

  /// Read the journal (alarm states, pending notifications, silences), make the notifiers and
  /// start delivering. Call once the scheduler holds every task (after the control state).
  tl::expected<void, std::string> start();
  /// Stop timers and deliveries; what is pending stays in the journal for the next start.
  void stop();

  /// A reload: new [alarms] defaults and [[maintenance]] windows apply at once; notifier
  /// changes are logged and take effect at the next start (their queues and counters stay).
  void reload(const alarm_settings& s);

  void on_result(const result_record& r) override;
  void on_removed(const task_spec& t) override;

  /// Every alarm event as JSON, as it happens (watchers; later history and the cluster).
  void on_event(std::function<void(const nlohmann::json& event)> f) {
    listeners_.push_back(std::move(f));
  }

  /// Whether a maintenance window covers `t` now (history leaves such results out of uptime).
  bool in_maintenance(const task_spec& t) const;

  /// {"alarms": [...]}: every task whose alarm is not ok (and every held or notified one).
  nlohmann::json alarms(const nlohmann::json& body) const;
  /// Commands (docs/control-protocol.md): each returns its reply or a one-line error.
  tl::expected<nlohmann::json, std::string> silence_cmd(const nlohmann::json& body);
  tl::expected<nlohmann::json, std::string> unsilence_cmd(const nlohmann::json& body);
  tl::expected<nlohmann::json, std::string> ack_cmd(const nlohmann::json& body);
  /// {"notifiers": [...]} with counters.
  nlohmann::json notifiers() const { return dispatch_.describe(); }
  /// The subsystem's counters for `status`.
  nlohmann::json stats() const;

  /// Tests and benchmarks: the track of a task, or nullptr.
  const alarm_track* track(const std::string& task) const;
  const alarm_policy& policy_of(const task_spec& t) const {
    return t.alarm ? *t.alarm : *settings_.defaults;
  }

 private:
  struct entry {
    std::string name;
    const task_spec* spec = nullptr;  // the last one seen; null once removed
    std::string type, target;         // kept for events after removal
    alarm_track track;
    bool persisted_quiet = true;  // what the journal holds for it
  };
  entry& entry_for(const task_spec& t);
  alarm_context context_for(const entry& e, const alarm_policy& p) const;
  void handle(entry& e, const alarm_policy& p, std::vector<alarm_event>& events, int depth);
  void reconsider(entry& e, int depth);
  void reconsider_all();
  void persist(entry& e);
  void notify(const alarm_policy& p, const nlohmann::json& event);
  void maybe_compact();
  std::vector<nlohmann::json> snapshot() const;
  void arm_windows();
  void arm_silences();
  void log(const std::string& line) const {
    if (opts_.log) opts_.log(line);
  }

  asio::io_context& io_;
  scheduler& sched_;
  alarm_settings settings_;
  alarm_manager_options opts_;
  std::unique_ptr<alarm_journal> journal_;
  dispatcher dispatch_;
  std::unordered_map<std::string, std::unique_ptr<entry>> by_name_;
  std::unordered_map<const task_spec*, entry*> by_spec_;
  std::map<std::string, std::set<std::string>> children_;  // parent -> children seen
  std::map<std::uint64_t, silence> silences_;
  std::vector<bool> open_windows_;
  bool any_window_open_ = false;
  asio::steady_timer window_timer_, silence_timer_;
  std::vector<std::function<void(const nlohmann::json&)>> listeners_;
  std::vector<alarm_event> scratch_;
  std::uint64_t next_id_ = 0, next_silence_ = 0;
  std::uint64_t events_ = 0, notifications_ = 0, restored_ = 0, journal_bad_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  bool started_ = false;
};

}  // namespace sonde::engine::alarms
