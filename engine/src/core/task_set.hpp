#pragma once
/// @file task_set.hpp
/// The engine's current set of tasks as the control channel sees it: the task file's tasks plus
/// the tasks started over the channel, with ids, pause state, reload by difference and
/// persistence of every change in the state file (state.hpp). The scheduler's tasks at
/// construction are the task file's; tasks become the control channel's through `start` or the
/// state file. Not thread-safe: use from the io_context's thread, like the scheduler it drives.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <tl/expected.hpp>

#include "control/control_request.hpp"
#include "core/scheduler.hpp"
#include "core/state_writer.hpp"

namespace sonde::engine {

/// A refused control operation: a one-line message and, for validation, every problem.
struct task_set_error {
  std::string message;
  std::vector<std::string> details;
};

class task_set {
 public:
  /// `task_file` is re-read by `reload` (empty: reload is refused). `state_dir` holds the
  /// state file (empty: changes are not persisted).
  task_set(scheduler& sched, const plugin_host& plugins, std::string task_file,
           std::string state_dir);
  task_set(const task_set&) = delete;
  task_set& operator=(const task_set&) = delete;

  /// Apply the state file (and its journal): add its tasks, stop and pause what it says, and
  /// start the writer thread that persists later changes. A missing file is fine; errors are
  /// positioned and nothing is applied. Without calling it nothing is persisted. A task in the
  /// state file whose name the task file now also uses is an error naming both files.
  tl::expected<void, std::vector<config_error>> load_state();

  /// Start a task (validated like a task-file entry). Starting a name that exists with the
  /// same definition and id succeeds without change; a stopped task-file task is restored by
  /// giving its name alone.
  tl::expected<nlohmann::json, task_set_error> start(const task_definition& def);
  tl::expected<nlohmann::json, task_set_error> stop(const task_selector& sel);
  tl::expected<nlohmann::json, task_set_error> pause(const task_selector& sel);
  tl::expected<nlohmann::json, task_set_error> resume(const task_selector& sel);
  /// {"tasks": [...]}: every task with its origin, id, schedule, state and last result.
  nlohmann::json list() const;
  /// Re-read the task file: unchanged tasks keep their schedule and state, changed ones are
  /// replaced, missing ones removed, new ones added. A file with errors changes nothing.
  tl::expected<nlohmann::json, task_set_error> reload();
  /// The current task set as a task file.
  std::string export_toml() const;

  std::size_t control_count() const { return control_.size(); }
  std::size_t paused_count() const { return paused_.size(); }
  const std::string& state_path() const { return state_path_; }

  /// The ticket of the last change made since the previous call (0: none, or no state
  /// directory). A change is in effect at once and on disk when its ticket is saved.
  std::uint64_t take_ticket();
  /// Run `f` on the loop when `ticket` is on disk: "" or the reason it is not yet (state_writer).
  void when_saved(std::uint64_t ticket, std::function<void(const std::string& error)> f);
  /// The persistence counters (null without a state directory).
  nlohmann::json state_stats() const;
  /// Called after a successful `reload` with the file as read (its tasks already applied), so
  /// other subsystems can take their sections (the alarms' [alarms] and [[maintenance]]).
  void on_reload(std::function<void(const task_file&)> f) { on_reload_ = std::move(f); }
  /// Tests: options for the writer made by load_state (e.g. a slow disk).
  void set_writer_options(state_writer::options o) { writer_opts_ = std::move(o); }

 private:
  tl::expected<std::vector<std::string>, task_set_error> resolve(const task_selector& sel) const;
  state_record record_of(const std::string& name) const;
  state_records all_records() const;
  // Hand the changed names' records to the writer; returns `reply`.
  nlohmann::json persist(nlohmann::json reply, const std::vector<std::string>& names);
  tl::expected<task_spec, task_set_error> validate(const nlohmann::json& fields) const;

  scheduler& sched_;
  const plugin_host& plugins_;
  std::string file_, state_path_;
  std::set<std::string> control_;            // names of tasks started over the channel
  std::map<std::string, std::int64_t> ids_;  // control task name -> id
  std::map<std::int64_t, std::string> by_id_;
  std::vector<std::string> stopped_;  // task-file tasks stopped over the channel
  std::set<std::string> paused_;
  state_writer::options writer_opts_;
  std::unique_ptr<state_writer> writer_;  // off-loop persistence (none without a state dir)
  std::uint64_t ticket_ = 0;
  std::function<void(const task_file&)> on_reload_;
};

}  // namespace sonde::engine
