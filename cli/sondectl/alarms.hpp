#pragma once
// sondectl alarms | silence | unsilence | ack | notifiers (docs/alarms.md).

#include <functional>
#include <optional>

#include <nlohmann/json.hpp>

namespace CLI {
class App;
}

namespace sonde::sondectl {

/// Sends a request; an ok reply goes to `show` (or is printed as JSON). Returns the exit code.
using request_fn =
    std::function<int(nlohmann::json request, std::function<void(const nlohmann::json&)> show)>;

/// Add the alarm subcommands to `app`. The returned function runs the one chosen after parsing
/// (nullopt when none of them was).
std::function<std::optional<int>(const request_fn&)> add_alarm_commands(CLI::App& app);

/// One alarm event as a line for `sondectl watch --alarms`.
void print_alarm_event(const nlohmann::json& event, bool color);

}  // namespace sonde::sondectl
