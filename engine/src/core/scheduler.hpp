#pragma once
/// @file scheduler.hpp
/// Runs tasks at their intervals on one io_context: first runs spread over the interval, at most
/// `max_in_flight` probes at once (the rest wait in FIFO order), never two runs of one task at
/// once; every completion is evaluated into a status and handed to the sinks.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

#include <sonde/detail/net.hpp>
#include <sonde/result.hpp>

#include "core/config.hpp"

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
  /// A task was removed (stopped, or replaced by a reload: the same name may be added again
  /// within the same turn of the loop). `t` is valid during the call only.
  virtual void on_removed(const task_spec& t) { (void)t; }
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

class scheduler;

/// A task as the scheduler holds it: its definition, whether it is paused or running, and its
/// last result. Owned by the scheduler; valid until the task is removed.
class scheduled_task {
 public:
  const task_spec& spec() const { return *spec_; }
  /// Paused over the control channel (its timer is off until resumed).
  bool paused() const { return paused_; }
  /// A run is in flight (or waiting for an in-flight slot).
  bool running() const { return running_ || queued_; }
  /// The last evaluated result, if the task has completed a run.
  const std::optional<result_record>& last_result() const { return last_result_; }

 private:
  friend class scheduler;
  scheduler* owner_ = nullptr;
  task_spec* spec_ = nullptr;
  std::unique_ptr<task_spec> owned_;  // tasks added after construction own their definition
  std::size_t slot_ = 0;
  std::chrono::steady_clock::time_point due_{};
  std::uint32_t gen_ = 0;  // bumped on pause and removal: older heap entries are stale
  bool running_ = false, queued_ = false, has_last_ = false, paused_ = false, removed_ = false;
  status last_ = status::unknown;
  std::optional<result_record> last_result_;
};

/// The scheduler. Not thread-safe: use from the io_context's thread.
///
/// Tasks passed to the constructor are referenced (the vector must outlive the scheduler);
/// tasks added later with `add` are owned. Tasks can be added, removed, paused and resumed at
/// any time, before or after `start`; a removed task's in-flight run finishes and its result is
/// dropped.
class scheduler {
 public:
  scheduler(asio::io_context& io, std::vector<task_spec>& tasks, scheduler_options opts);
  scheduler(const scheduler&) = delete;
  scheduler& operator=(const scheduler&) = delete;
  ~scheduler();

  void add_sink(result_sink* s) { sinks_.push_back(s); }
  /// The io_context the scheduler runs on.
  asio::io_context& io() const { return io_; }
  void remove_sink(result_sink* s);
  /// Called once in `once` mode when every task has completed.
  void on_idle(std::function<void()> f) { on_idle_ = std::move(f); }
  /// Start scheduling.
  void start();
  /// Stop scheduling; `done` runs once in-flight probes have finished (each has a deadline),
  /// or after `grace` at the latest.
  void stop(std::function<void()> done, std::chrono::milliseconds grace);
  const scheduler_stats& stats() const { return stats_; }
  bool started() const { return started_; }
  bool stopping() const { return stopping_; }

  /// Add a task. Returns nullptr if a task of that name exists. After `start` an enabled task
  /// runs at once, then at its interval.
  const scheduled_task* add(task_spec spec);
  /// Remove a task by name. Returns false if there is none.
  bool remove(std::string_view name);
  /// Pause a task: no new runs until resumed (a run in flight finishes). False if unknown.
  bool pause(std::string_view name);
  /// Resume a paused task: it runs at once, then at its interval. False if unknown.
  bool resume(std::string_view name);
  /// Resume several paused tasks, their first runs spread over their intervals (as at start).
  void resume(const std::vector<std::string>& names);
  /// The task called `name`, or nullptr.
  const scheduled_task* find(std::string_view name) const;
  /// Every task in the order added (the constructor's first).
  template <class F>
  void for_each(F&& f) const {
    for (const auto& s : states_)
      if (!s.removed_ && s.spec_) f(s);
  }
  /// Number of tasks (any state).
  std::size_t size() const { return live_; }

 private:
  struct heap_item {
    std::chrono::steady_clock::time_point due;
    std::size_t slot;
    std::uint32_t gen;
    bool operator>(const heap_item& o) const { return due > o.due; }
  };

  void arm();
  void on_timer();
  void schedule(scheduled_task& s, std::chrono::steady_clock::time_point due);
  void dispatch(scheduled_task& s, std::chrono::steady_clock::time_point now);
  void launch(scheduled_task& s);
  void pump();
  void release(scheduled_task& s);
  void build_index() const;
  scheduled_task* lookup(std::string_view name) const;
  void completed(scheduled_task& s, const sonde_result& r);
  static void on_done(void* user, const sonde_result* r);

  asio::io_context& io_;
  std::deque<scheduled_task> states_;  // a deque: addresses stay valid as tasks are added
  std::vector<std::size_t> free_slots_;
  mutable std::unordered_map<std::string_view, std::size_t> index_;  // built on first lookup
  mutable bool indexed_ = false;
  scheduler_options opts_;
  std::priority_queue<heap_item, std::vector<heap_item>, std::greater<>> heap_;
  std::deque<std::pair<std::size_t, std::uint32_t>> pending_;
  asio::steady_timer timer_, grace_timer_;
  // Beats while probes run, so their deadline timers do not reprogram the kernel timer on
  // every run (detail::heartbeat).
  sonde::detail::heartbeat heartbeat_;
  std::vector<result_sink*> sinks_;
  std::function<void()> on_idle_, on_stopped_;
  scheduler_stats stats_;
  std::size_t enabled_count_ = 0, live_ = 0;
  bool started_ = false, stopping_ = false, pump_posted_ = false, pumping_ = false;
  int launching_ = 0;  // depth of launch() calls on the stack
  std::chrono::steady_clock::time_point armed_for_{};
  bool armed_ = false;
};

}  // namespace sonde::engine
