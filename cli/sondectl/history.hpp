#pragma once
// sondectl history | uptime | percentiles | incidents (docs/cli.md), and the history line of
// `sondectl status`.

#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "alarms.hpp"

namespace CLI {
class App;
}

namespace sonde::sondectl {

/// Add the history subcommands to `app`. The returned function runs the one chosen after
/// parsing (nullopt when none of them was).
std::function<std::optional<int>(const request_fn&)> add_history_commands(CLI::App& app);

/// The "history" section of a `status` reply as one line ("ok, 1204 written, 0 dropped, ..."),
/// or "" when the reply has none.
std::string history_status_text(const nlohmann::json& status_reply);

}  // namespace sonde::sondectl
