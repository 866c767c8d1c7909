#pragma once
/// @file toml_util.hpp
/// Small helpers shared by the task-file readers (core/config.cpp, alarms/alarm_config.cpp):
/// positions, suggestions, value descriptions and durations from TOML nodes.

#include <string>
#include <vector>

#include <toml++/toml.h>
#include <tl/expected.hpp>

#include <sonde/duration.hpp>

#include "core/config.hpp"

namespace sonde::engine {

/// The position of `r`'s start in `file`.
source_pos pos_of(const std::string& file, const toml::source_region& r);
/// " (did you mean 'x'?)" for the closest candidate, or "".
std::string did_you_mean(const std::string& word, const std::vector<std::string>& cands);
/// "a string", "an integer", ... for messages.
std::string node_type_name(const toml::node& n);
/// A duration from "10s" (or a whole number of seconds).
tl::expected<duration, std::string> duration_from_node(const toml::node& n);

}  // namespace sonde::engine
