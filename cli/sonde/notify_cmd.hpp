#pragma once
// `sonde notify-test`: send one test message through a notifier of a task file, directly (no
// outbox, no grouping), and say what the receiver answered. See docs/alarms.md.

#include <string>

#include "alarms/policy.hpp"

namespace sonde::cli {

/// Send the test message through `name`; prints the outcome. Exit code: 0 delivered, 2 not.
int notify_test(const engine::alarms::alarm_settings& settings, const std::string& name,
                const std::string& file);

}  // namespace sonde::cli
