#pragma once
/// @file alarm_config.hpp
/// Reading the alarm sections of a task file: [alarms] (the defaults of every task's policy),
/// a task's `alarm = { ... }`, [[notifier]] and [[maintenance]]. Errors are positioned and
/// suggest the closest key, like the rest of the file (core/config.cpp calls these).

#include <memory>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include "alarms/policy.hpp"
#include "core/config.hpp"

namespace sonde::engine::alarms {

/// The keys of [alarms] and of a task's `alarm` table.
const std::vector<std::string>& policy_keys();
/// The keys every [[notifier]] takes besides its type's options.
const std::vector<std::string>& notifier_common_keys();

/// Read [alarms], [[notifier]] and [[maintenance]] of `doc` into `out`.
void read_alarm_sections(const std::string& path, const toml::table& doc, alarm_settings& out,
                         std::vector<config_error>& errors);

/// A task's `alarm = { ... }` over `defaults`; notifier names are checked against `settings`.
/// `depends_on` is returned as written: `check_alarm_references` checks it once every task is
/// known.
std::shared_ptr<const alarm_policy> read_task_alarm(const std::string& path, const toml::node& node,
                                                    const alarm_settings& settings,
                                                    std::vector<config_error>& errors);

/// Once every task is read: `depends_on` names a task (not itself, no cycle) and maintenance
/// windows name tasks that exist.
void check_alarm_references(const std::string& path, const toml::table& doc,
                            const std::vector<task_spec>& tasks, const alarm_settings& settings,
                            std::vector<config_error>& errors);

/// Parse "N/period" ("10/1m"): N messages per period.
bool parse_rate_limit(const std::string& text, int& count, std::chrono::milliseconds& period);

}  // namespace sonde::engine::alarms
