#pragma once
/// @file scheduler.hpp
/// Runs tasks at their intervals on one io_context: first runs spread over the interval, at most
/// `max_in_flight` probes at once (the rest wait in FIFO order), never two runs of one task at
/// once; every completion is evaluated into a status and handed to the sinks.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

#include <sonde/result.hpp>

#include "config.hpp"

namespace sonde::engine {

/// The judgement of one result. Values are the Nagios exit codes.
enum class status : int { ok = 0, warning = 1, critical = 2, unknown = 3 };

/// "ok", "warning", "critical", "unknown"
constexpr std::string_view to_string(status s) noexcept {
  switch (s) {
    case status::ok:
      return "ok";
    case status::warning:
      return "warning";
    case status::critical:
      return "critical";
    case status::unknown:
      return "unknown";
  }
  return "unknown";
}
/// Severity order for "worst of": ok < warning < unknown < critical.
constexpr int severity(status s) noexcept {
  switch (s) {
    case status::ok:
      return 0;
    case status::warning:
      return 1;
    case status::unknown:
      return 2;
    case status::critical:
      return 3;
  }
  return 2;
}

/// One evaluated result, as printed and streamed.
struct result_record {
  std::chrono::system_clock::time_point time;  ///< when the probe started
  const task_spec* task = nullptr;
  status state = status::unknown;
  reason why = reason::none;
  std::optional<double> latency_ms;
  std::string message;
  std::vector<metric> metrics;
  std::optional<status> previous;  ///< set when the status differs from the task's last one
};

/// Judge a plugin result for `task`: a probe error is unknown (reason error); an unhealthy
/// observation is critical with its reason; otherwise crit, then warn conditions decide.
result_record evaluate(const task_spec& task, const sonde_result& r);

/// Receives every result (on the io_context's thread).
class result_sink {
 public:
  virtual ~result_sink() = default;
  virtual void on_result(const result_record& r) = 0;
  virtual void flush() {}
};

struct scheduler_options {
  std::int64_t max_in_flight = 1000;
  bool once = false;  ///< run every enabled task once, immediately, then report idle
};

struct scheduler_stats {
  std::uint64_t started = 0, completed = 0, skipped_overlap = 0;
  std::uint64_t by_status[4] = {0, 0, 0, 0};
  std::int64_t in_flight = 0, queued = 0, max_in_flight_seen = 0;
  std::optional<std::chrono::steady_clock::time_point> first_start, last_done;
};

/// The scheduler. Not thread-safe: use from the io_context's thread.
class scheduler {
 public:
  scheduler(asio::io_context& io, std::vector<task_spec>& tasks, scheduler_options opts);
  scheduler(const scheduler&) = delete;
  scheduler& operator=(const scheduler&) = delete;
  ~scheduler();

  void add_sink(result_sink* s) { sinks_.push_back(s); }
  /// Called once in `once` mode when every task has completed.
  void on_idle(std::function<void()> f) { on_idle_ = std::move(f); }
  /// Start scheduling.
  void start();
  /// Stop scheduling; `done` runs once in-flight probes have finished (each has a deadline),
  /// or after `grace` at the latest.
  void stop(std::function<void()> done, std::chrono::milliseconds grace);
  const scheduler_stats& stats() const { return stats_; }

 private:
  struct task_state {
    scheduler* owner = nullptr;
    task_spec* spec = nullptr;
    std::chrono::steady_clock::time_point due{};
    bool running = false, queued = false, has_last = false;
    status last = status::unknown;
  };
  using heap_item = std::pair<std::chrono::steady_clock::time_point, std::size_t>;

  void arm();
  void on_timer();
  void dispatch(std::size_t idx, std::chrono::steady_clock::time_point now);
  void launch(std::size_t idx);
  void pump();
  void completed(task_state& s, const sonde_result& r);
  static void on_done(void* user, const sonde_result* r);

  asio::io_context& io_;
  std::vector<task_state> states_;
  scheduler_options opts_;
  std::priority_queue<heap_item, std::vector<heap_item>, std::greater<>> heap_;
  std::deque<std::size_t> pending_;
  asio::steady_timer timer_, grace_timer_;
  std::vector<result_sink*> sinks_;
  std::function<void()> on_idle_, on_stopped_;
  scheduler_stats stats_;
  std::size_t enabled_count_ = 0;
  bool stopping_ = false, pump_posted_ = false;
};

}  // namespace sonde::engine
