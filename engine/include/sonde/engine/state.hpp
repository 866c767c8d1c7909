#pragma once
/// @file state.hpp
/// Task definitions as TOML text (for `export` and the state file) and the control state file:
/// the tasks started over the control channel, the task-file tasks stopped or paused over it,
/// and the ids the controller gave them. The file is a task file plus a `[state]` table, written
/// atomically (temporary file, fsync, rename) so a crash never leaves half a file.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <tl/expected.hpp>

#include "config.hpp"

namespace sonde::engine {

/// A duration as the task file writes it, exactly: "90s" -> "1m30s", "250ms", "1500us".
std::string format_duration_exact(duration d);

/// A TOML basic string literal (quotes included).
std::string toml_string(std::string_view s);

/// One `[[task]]` entry that loads back into an equal task: name, type, target, interval,
/// timeout, enabled (when false), tags, warn, crit, then the probe options. Deterministic, so
/// two definitions are equal exactly when their texts are (used by reload).
std::string format_task_toml(const task_spec& t);

/// What the control channel changed, kept across restarts.
struct control_state {
  std::vector<task_spec> tasks;             ///< started over the control channel
  std::map<std::string, std::int64_t> ids;  ///< task name -> id given by the controller
  std::vector<std::string> stopped;         ///< task-file tasks stopped over the channel
  std::vector<std::string> paused;          ///< tasks (either origin) paused over the channel
};

/// The state file in `state_dir`: "<state_dir>/control-tasks.toml".
std::string state_file_path(const std::string& state_dir);

/// The default state directory for a task file: "<dir>/<stem>.state" beside it.
std::string default_state_dir(const std::string& task_file);

/// Load a state file. A missing file is an empty state. Errors are positioned like a task
/// file's (`FILE:LINE:COL: error: ...`); a file with errors loads nothing.
tl::expected<control_state, std::vector<config_error>> load_control_state(
    const std::string& path, const plugin_host& plugins);

/// The state file's text.
std::string format_control_state(const std::vector<const task_spec*>& tasks,
                                 const std::map<std::string, std::int64_t>& ids,
                                 const std::vector<std::string>& stopped,
                                 const std::vector<std::string>& paused);

/// Write `text` to `path` atomically, creating the directory if needed. The error names the
/// file and the system's reason.
tl::expected<void, std::string> write_file_atomically(const std::string& path,
                                                      const std::string& text);

}  // namespace sonde::engine
