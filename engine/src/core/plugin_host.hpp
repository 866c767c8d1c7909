#pragma once
/// @file plugin_host.hpp
/// Plugin discovery and loading: finds `sonde-*.so` files in the search path, checks ABI and
/// build fingerprint, and keeps a registry of probe types. A refused file never stops the
/// others; plugins are never unloaded.

#include <string>
#include <string_view>
#include <vector>

#include <sonde/plugin.hpp>

namespace sonde::engine {

/// A plugin that loaded and was accepted.
struct loaded_plugin {
  std::string path;
  const sonde_plugin_descriptor* descriptor = nullptr;
};

/// A probe type (or alias) and where it comes from.
struct probe_type_entry {
  std::string name;  ///< the name looked up (may be an alias)
  const sonde_probe_type* type = nullptr;
  const loaded_plugin* plugin = nullptr;
};

/// A file that was refused, and why (the message names the file).
struct plugin_problem {
  std::string path;
  std::string message;
};

/// One directory of the search path and where it came from ("--plugin-dir", "SONDE_PLUGIN_PATH",
/// "task file", "install", "build tree").
struct plugin_dir {
  std::string path;
  std::string origin;
};

/// The search path in the documented order: `cli_dirs`, SONDE_PLUGIN_PATH, `config_dirs`, the
/// install directory, and ../lib/sonde/plugins beside the running binary (build tree or a
/// relocated install). Duplicates are dropped.
std::vector<plugin_dir> plugin_search_path(const std::vector<std::string>& cli_dirs,
                                           const std::vector<std::string>& config_dirs);

/// Registry of loaded plugins. Not thread-safe; load before running.
class plugin_host {
 public:
  plugin_host() = default;
  plugin_host(const plugin_host&) = delete;
  plugin_host& operator=(const plugin_host&) = delete;

  /// Load every `sonde-*.so` in `dirs` (in order; within a directory, by name). A file whose
  /// name was already loaded from an earlier directory is skipped as shadowed.
  void load_dirs(const std::vector<plugin_dir>& dirs);
  /// Load one file. Returns false (and records a problem) when refused.
  bool load_file(const std::string& path);

  /// The entry for `type` (exact name or alias; upper-case seed names such as "PING" are
  /// accepted as their lower-case form), or nullptr.
  const probe_type_entry* find(std::string_view type) const;
  /// All registered names (types and aliases), sorted.
  std::vector<std::string> names() const;

  const std::vector<loaded_plugin>& plugins() const { return plugins_; }
  const std::vector<plugin_problem>& problems() const { return problems_; }
  const std::vector<std::string>& shadowed() const { return shadowed_; }
  const std::vector<plugin_dir>& searched() const { return searched_; }

 private:
  std::vector<loaded_plugin> plugins_;  // reserved up front: entries point into it
  std::vector<probe_type_entry> types_;
  std::vector<plugin_problem> problems_;
  std::vector<std::string> shadowed_;
  std::vector<std::string> loaded_names_;
  std::vector<plugin_dir> searched_;
};

}  // namespace sonde::engine
