#pragma once
/// @file config.hpp
/// Task files (TOML): loading, validation against the plugins' option tables, and errors as
/// `FILE:LINE:COL: error: ...` with suggestions. A file with any error yields no tasks.

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <tl/expected.hpp>

#include <sonde/condition.hpp>
#include <sonde/duration.hpp>
#include <sonde/options.hpp>

#include "alarms/policy.hpp"
#include "core/plugin_host.hpp"
#include "history/settings.hpp"

namespace sonde::engine {

/// A position in a source file (1-based; 0 when unknown).
struct source_pos {
  std::string file;
  unsigned line = 0;
  unsigned column = 0;
};

/// Whether metric `name` matches a metric table entry `pattern`: segments separated by dots,
/// where `<n>` stands for a number and any other `<word>` for one non-empty segment
/// (`cpu.<n>`, `net.<iface>.rx_bytes`).
bool metric_matches(std::string_view pattern, std::string_view name);

/// One configuration problem.
struct config_error {
  source_pos where;
  std::string message;
  /// "FILE:LINE:COL: error: MESSAGE"
  std::string to_string() const;
};

/// A probe instance made by a plugin's `create`; destroyed through the plugin.
class probe_instance {
 public:
  probe_instance(const sonde_probe_type* type, void* handle) : type_(type), handle_(handle) {}
  ~probe_instance() {
    if (handle_) type_->destroy(handle_);
  }
  probe_instance(const probe_instance&) = delete;
  probe_instance& operator=(const probe_instance&) = delete;
  const sonde_probe_type* type() const { return type_; }
  void* handle() const { return handle_; }

 private:
  const sonde_probe_type* type_;
  void* handle_;
};

/// Create a probe instance of `entry` for `target` with typed `options`; a positive `timeout` is
/// passed as the reserved option "timeout". On failure returns the plugin's error (its key
/// names the offending option, "target" for the target).
tl::expected<std::unique_ptr<probe_instance>, probe_error> create_probe(
    const probe_type_entry& entry, const std::string& target,
    const std::vector<std::pair<std::string, option_value>>& options,
    duration timeout = duration::zero());

/// A validated task.
struct task_spec {
  std::string name;
  std::string type;  ///< canonical type name (the plugin's, even if an alias or seed name was used)
  std::string target;
  duration interval{};
  duration timeout{};
  bool enabled = true;
  std::map<std::string, std::string> tags;
  std::vector<condition> warn, crit;
  std::vector<std::pair<std::string, option_value>> options;
  source_pos where;
  const probe_type_entry* entry = nullptr;
  std::shared_ptr<probe_instance> probe;  ///< ready to run
  /// The task's `alarm = { ... }` over [alarms]; null: the [alarms] defaults apply.
  std::shared_ptr<const alarms::alarm_policy> alarm;
};

/// [engine] settings.
struct engine_settings {
  std::vector<std::string> plugin_dirs;  ///< absolute (relative entries resolved against the file)
  std::int64_t max_in_flight = 1000;
};

/// [control] settings: the control server of `sonde run` (docs/control-protocol.md).
struct control_settings {
  std::string listen;               ///< "host:port" or "off"; empty when the file does not say
  std::string token;                ///< shared secret; required to listen beyond loopback
  std::string tls_cert;             ///< PEM certificate chain (absolute); TLS when set with tls_key
  std::string tls_key;              ///< PEM private key (absolute)
  std::int64_t max_line = 65536;    ///< longest request line in bytes
  std::int64_t max_clients = 512;   ///< connections at once; more are refused with an error
  std::int64_t watch_queue = 1024;  ///< results queued per watcher before dropping
  std::int64_t max_unauthenticated = 128;          ///< connections not yet authenticated, at once
  std::int64_t max_per_address = 32;               ///< unauthenticated connections from one address
  std::chrono::milliseconds auth_timeout{10000};   ///< accept to first authenticated request
  std::chrono::milliseconds idle_timeout{600000};  ///< silent non-watching client (0: never)
};

/// A loaded task file.
struct task_file {
  std::string path;
  engine_settings engine;
  control_settings control;
  alarms::alarm_settings alarms;      ///< [alarms], [[notifier]], [[maintenance]]
  history::history_settings history;  ///< [history]
  std::vector<task_spec> tasks;
  std::shared_ptr<void> document;  ///< the parsed TOML; drop it once loaded to save memory
};

/// Phase 1: parse the file and read [engine] (plugin directories are needed before tasks can be
/// validated). Errors are positioned.
/// The file must be a regular file (files.hpp); with `allow_pipe` (the command line's task
/// file: `sonde run /dev/stdin`) a pipe is read too. `reload` never reads a pipe.
tl::expected<task_file, std::vector<config_error>> read_engine_section(const std::string& path,
                                                                       bool allow_pipe = false);

/// Phase 2: validate tasks against the loaded plugins. `file` comes from phase 1.
tl::expected<task_file, std::vector<config_error>> load_tasks(task_file file,
                                                              const plugin_host& plugins);

/// Both phases for callers that have loaded plugins already (ignores [engine] plugin_dirs).
tl::expected<task_file, std::vector<config_error>> load_task_file(const std::string& path,
                                                                  const plugin_host& plugins);

/// Convert option text (`--set key=value`) by the type's option table. Error names the key and,
/// for unknown keys, suggests the closest one.
tl::expected<option_value, std::string> option_from_text(const probe_type_entry& entry,
                                                         const std::string& key,
                                                         const std::string& text);

/// The condition parser bound to a probe type's metric names and enumerations. Unknown metrics
/// are errors with a suggestion.
tl::expected<condition, std::string> parse_condition_for(const probe_type_entry& entry,
                                                         const std::string& text);

/// Levenshtein-closest candidate within a small distance, or "".
std::string closest(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace sonde::engine
