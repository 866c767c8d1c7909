#pragma once
/// @file state.hpp
/// Task definitions as TOML text (for `export` and the state file) and the control state file:
/// the tasks started over the control channel, the task-file tasks stopped or paused over it,
/// and the ids the controller gave them. The file is a task file plus a `[state]` table, written
/// atomically (temporary file, fsync, rename) so a crash never leaves half a file.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <tl/expected.hpp>

#include "core/config.hpp"

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
  bool replayed_journal = false;  ///< a journal was folded in (the file should be rewritten)
};

/// The state file in `state_dir`: "<state_dir>/control-tasks.toml".
std::string state_file_path(const std::string& state_dir);

/// The default state directory for a task file: "<dir>/<stem>.state" beside it.
std::string default_state_dir(const std::string& task_file);

/// Load a state file and replay its journal (state_writer.hpp). A missing file is an empty
/// state. Refused with a message saying what to do: a path that is not a regular file (a
/// directory, FIFO, device) or is larger than max_config_bytes, an empty file or one without
/// `[state]` (sonde always writes it, atomically), a journal record that is invalid before its
/// last line (a torn last line is a crash mid-write: ignored with a warning). Errors are
/// positioned like a task file's (`FILE:LINE:COL: error: ...`); a file with errors loads
/// nothing.
tl::expected<control_state, std::vector<config_error>> load_control_state(
    const std::string& path, const plugin_host& plugins);

/// Everything the state file says about one task name.
struct state_record {
  std::string name;
  std::optional<std::string> task;  ///< `[[task]]` TOML, when started over the control channel
  std::optional<std::int64_t> id;   ///< the id the controller gave it
  bool stopped = false;             ///< a task-file task stopped over the channel
  bool paused = false;              ///< paused over the channel
  bool empty() const { return !task && !id && !stopped && !paused; }
  bool operator==(const state_record&) const = default;
};

using state_records = std::map<std::string, state_record>;

/// One journal line (JSON, newline included).
std::string format_state_record(const state_record& r);
/// Parse one journal line (without the newline). The error says what is wrong.
tl::expected<state_record, std::string> parse_state_record(std::string_view line);
/// The state file's text for these records (the same format `load_control_state` reads).
std::string format_state_file(const state_records& records);

/// The journal's path for a state file.
std::string state_journal_path(const std::string& state_file);

/// The records that say what `st` says.
state_records records_of(const control_state& st);

/// Write `text` to `path` atomically, creating the directory if needed. The error names the
/// file and the system's reason.
tl::expected<void, std::string> write_file_atomically(const std::string& path,
                                                      const std::string& text);

}  // namespace sonde::engine
