#pragma once
/// @file task_set.hpp
/// The engine's current set of tasks as the control channel sees it: the task file's tasks plus
/// the tasks started over the channel, with ids, pause state, reload by difference and
/// persistence of every change in the state file (state.hpp). The scheduler's tasks at
/// construction are the task file's; tasks become the control channel's through `start` or the
/// state file. Not thread-safe: use from the io_context's thread, like the scheduler it drives.

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <tl/expected.hpp>

#include "control_request.hpp"
#include "scheduler.hpp"

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

  /// Apply the state file: add its tasks, stop and pause what it says. A missing file is
  /// fine; errors are positioned and nothing is applied. A task in the state file whose name
  /// the task file now also uses is an error naming both files.
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

 private:
  tl::expected<std::vector<std::string>, task_set_error> resolve(const task_selector& sel) const;
  std::string save();  // "" or a warning
  nlohmann::json with_save(nlohmann::json reply);
  tl::expected<task_spec, task_set_error> validate(const nlohmann::json& fields) const;

  scheduler& sched_;
  const plugin_host& plugins_;
  std::string file_, state_path_;
  std::set<std::string> control_;            // names of tasks started over the channel
  std::map<std::string, std::int64_t> ids_;  // control task name -> id
  std::map<std::int64_t, std::string> by_id_;
  std::vector<std::string> stopped_;  // task-file tasks stopped over the channel
  std::set<std::string> paused_;
};

}  // namespace sonde::engine
