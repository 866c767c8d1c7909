#pragma once
/// @file result.hpp
/// observation: what one probe run measured, healthy or not.

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sonde {

/// Why a target is unhealthy. Values and names are part of the result contract (design.md).
enum class reason : int {
  none = 0,         ///< nothing wrong was observed
  timeout = 1,      ///< no (complete) answer before the deadline
  refused = 2,      ///< connection refused / ICMP port unreachable
  unreachable = 3,  ///< no route, host or network unreachable
  resolve = 4,      ///< the target name did not resolve
  tls = 5,          ///< TLS handshake or certificate verification failed
  protocol = 6,     ///< the peer answered with something malformed
  mismatch = 7,     ///< the answer was well-formed but not what was expected
  condition = 8,    ///< a warn/crit condition matched (set by the engine)
  error = 9,        ///< the probe could not run (probe_error) or a local error occurred
};

/// The result-contract name of a reason ("timeout", ...); "" for reason::none.
constexpr std::string_view to_string(reason r) noexcept {
  switch (r) {
    case reason::none:
      return "";
    case reason::timeout:
      return "timeout";
    case reason::refused:
      return "refused";
    case reason::unreachable:
      return "unreachable";
    case reason::resolve:
      return "resolve";
    case reason::tls:
      return "tls";
    case reason::protocol:
      return "protocol";
    case reason::mismatch:
      return "mismatch";
    case reason::condition:
      return "condition";
    case reason::error:
      return "error";
  }
  return "error";
}

/// One named numeric measurement. Units are fixed by design.md: durations in seconds, sizes in
/// bytes, ratios in percent, counts and codes as plain numbers.
struct metric {
  std::string name;
  double value = 0;
};

/// What a probe run saw. A target that fails (timeout, refused...) still yields an observation
/// with `why` set and whatever was measured before the failure.
struct observation {
  std::chrono::system_clock::time_point start{};    ///< wall-clock time the run started
  std::optional<std::chrono::nanoseconds> latency;  ///< total time of the measured exchange
  reason why = reason::none;                        ///< reason::none when healthy
  std::string message;                              ///< short human summary
  std::vector<metric> metrics;                      ///< named numbers, see docs/probes.md

  /// Set (or overwrite) metric `name`.
  void set(std::string_view name, double value) {
    for (auto& m : metrics) {
      if (m.name == name) {
        m.value = value;
        return;
      }
    }
    add(name, value);
  }
  /// Append metric `name`, which the caller knows is not set yet (hot paths: no search).
  void add(std::string_view name, double value) {
    if (metrics.capacity() == 0) metrics.reserve(8);  // most probes set a handful: one allocation
    auto& m = metrics.emplace_back();  // built in place: no temporary to move and destroy
    m.name.assign(name.data(), name.size());
    m.value = value;
  }
  /// The value of metric `name`; "latency" is derived from `latency` when not set explicitly.
  std::optional<double> get(std::string_view name) const {
    auto it = std::find_if(metrics.begin(), metrics.end(),
                           [&](const metric& m) { return m.name == name; });
    if (it != metrics.end()) return it->value;
    if (name == "latency" && latency) return std::chrono::duration<double>(*latency).count();
    return std::nullopt;
  }
  /// Mark the observation unhealthy with a reason and message.
  observation& fail(reason r, std::string msg) {
    why = r;
    message = std::move(msg);
    return *this;
  }
};

/// Seconds as a double, the unit of every duration metric.
template <class Rep, class Period>
constexpr double seconds(std::chrono::duration<Rep, Period> d) noexcept {
  return std::chrono::duration<double>(d).count();
}

}  // namespace sonde
