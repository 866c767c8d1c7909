#pragma once
/// @file query.hpp
/// The history queries (docs/history.md "Queries"), run on the store's reader thread with the
/// read connection: a metric's series, uptime over windows, percentiles, incidents. Pure
/// functions of the database and `now`, so tests call them directly.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <tl/expected.hpp>

#include "history/settings.hpp"

struct sqlite3;

namespace sonde::engine::history {

using time_ms = std::int64_t;  ///< milliseconds since the Unix epoch

struct series_query {
  std::string task;
  std::string metric = "latency";  ///< "latency" (ms) or a metric of the task's results
  time_ms since = 0, until = 0;
  std::optional<std::int64_t> step_s;  ///< none: chosen for about 300 points
  std::size_t max_raw = 5000;          ///< more raw results than this: a rollup level instead
};
/// {"task","metric","level":"raw|minute|hour|day","step_s","since","until","points":[...]}.
/// Raw points: {"t","status","value","reason","message"}; rollup points: {"t","n","ok",
/// "warning","critical","unknown","maintenance","min","avg","max","p50","p90","p99"}.
tl::expected<nlohmann::json, std::string> query_series(sqlite3* db, const series_query& q,
                                                       const history_settings& s, time_ms now);

struct uptime_query {
  std::vector<std::string> tasks;  ///< empty: every task with results in the longest window
  std::vector<std::string> windows = {"1h", "24h", "7d", "30d", "1y"};
};
/// {"windows":[...],"tasks":[{"task","type","target","windows":{"1h":{"uptime":99.9|null,
/// "ok","warning","critical","unknown","maintenance"},...}}]}. Uptime counts ok and warning
/// results as up and critical ones as down; unknown results (the probe could not run) and
/// results inside maintenance windows are left out.
tl::expected<nlohmann::json, std::string> query_uptime(sqlite3* db, const uptime_query& q,
                                                       const history_settings& s, time_ms now);

struct percentile_query {
  std::vector<std::string> tasks;  ///< empty: every task with results in the window
  std::string metric = "latency";
  time_ms since = 0, until = 0;
  std::vector<double> quantiles = {0.5, 0.9, 0.95, 0.99, 0.999};
};
/// {"metric","since","until","relative_error","tasks":[{"task","n","min","avg","max",
/// "p50",...}]}. From the rollups (exact counts, min, max and average; quantiles within
/// `relative_error`).
tl::expected<nlohmann::json, std::string> query_percentiles(sqlite3* db, const percentile_query& q,
                                                            const history_settings& s, time_ms now);

struct incident_query {
  std::string task;  ///< "": every task
  time_ms since = 0, until = 0;
  std::size_t limit = 500;
};
/// {"incidents":[{"alarm_id","task","type","target","start","end","duration_s","severity",
/// "reason","message","state","acknowledged","events"}]}, newest first: every alarm that fired
/// (or flapped) and overlaps the window; "end" is null while it is still open.
tl::expected<nlohmann::json, std::string> query_incidents(sqlite3* db, const incident_query& q,
                                                          time_ms now);

/// "1h", "24h", "7d", "30d", "1y" (and any duration sonde reads) in seconds.
tl::expected<std::int64_t, std::string> window_seconds(const std::string& text);

}  // namespace sonde::engine::history
