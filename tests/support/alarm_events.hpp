#pragma once
// Alarm events for the notifier tests, with every field of docs/alarms.md.

#include <string>

#include <nlohmann/json.hpp>

namespace sonde::test {

/// An alarm event. `severity` "" means null.
inline nlohmann::json alarm_event(const std::string& task, const std::string& state,
                                  const std::string& previous, const std::string& severity = "",
                                  const std::string& message = "connection refused",
                                  const std::string& alarm_id = "") {
  using json = nlohmann::json;
  const bool ok = state == "ok";
  json results = json::array();
  results.push_back({{"time", "2026-12-03T13:33:10.125Z"},
                     {"status", ok ? "ok" : "critical"},
                     {"reason", ok ? json() : json("refused")},
                     {"latency_ms", ok ? json(12.5) : json()},
                     {"message", message}});
  return json{{"time", "2026-12-03T13:33:30.250Z"},
              {"alarm_id", alarm_id.empty() ? task + "-17" : alarm_id},
              {"task", task},
              {"type", "http"},
              {"target", "http://127.0.0.1/"},
              {"state", state},
              {"severity", severity.empty() ? json() : json(severity)},
              {"previous", previous},
              {"since", "2026-12-03T13:33:30Z"},
              {"reason", ok ? json() : json("refused")},
              {"message", message},
              {"results", results}};
}

}  // namespace sonde::test
