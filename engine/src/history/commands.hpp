#pragma once
/// @file commands.hpp
/// The history commands of the control protocol (docs/control-protocol.md, docs/history.md):
/// `history`, `uptime`, `percentiles`, `incidents`, and a "history" section in `status`.
/// Queries run on the store's reader thread; the reply waits for them (defer_reply), so the
/// event loop never reads the disk.

#include "control/control.hpp"
#include "history/store.hpp"

namespace sonde::engine::history {

/// Register the commands on `server`. `s` must outlive the server's use of them.
void add_history_commands(control_server& server, store& s, const history_settings& settings);

/// Request parsing, shared with tests: a time is a duration back from `now` ("10m") or an
/// RFC 3339 time with a zone.
tl::expected<std::int64_t, std::string> parse_when(const nlohmann::json& v, const char* key,
                                                   std::int64_t now_ms);

}  // namespace sonde::engine::history
