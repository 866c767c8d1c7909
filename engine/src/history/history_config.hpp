#pragma once
/// @file history_config.hpp
/// Reads [history] (docs/history.md "Settings") with positioned errors.

#include <string>
#include <vector>

#include <toml++/toml.h>

#include "core/config.hpp"
#include "history/settings.hpp"

namespace sonde::engine::history {

/// Reads [history] of `doc` into `out`; a relative `path` is taken from the task file's
/// directory.
void read_history_section(const std::string& path, const toml::table& doc, history_settings& out,
                          std::vector<config_error>& errors);

}  // namespace sonde::engine::history
