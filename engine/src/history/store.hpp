#pragma once
/// @file store.hpp
/// The history store (docs/history.md): one SQLite database in WAL mode, written by one writer
/// thread in batched transactions (group commit), read by one reader thread on its own
/// connection. The event loop only appends to a bounded queue (`add_result`, `add_alarm_event`,
/// `add_agent_report`) and never waits for the disk: when the queue is full, results are
/// dropped from history only (counted in `status`); an agent's report is refused instead (the
/// agent keeps it and sends it again).
///
/// **What is kept** (schema in schema.cpp): raw results (`result`), per-task rollups per
/// minute, hour and day (`rollup_minute`, ...: counts per status, maintenance results, and a
/// `summary` (count/min/max/sum/log histogram) of the latency and of each metric the task's
/// conditions use), alarm events (`alarm_event`), and the agents' queue positions
/// (`agent_queue`), written in the same transaction as the agents' results so exactly-once
/// delivery holds across a crash. Rollups are kept in memory per open bucket and written with
/// the raw rows of the same transaction, so a crash never leaves them disagreeing.
///
/// **Failures.** At start the writer opens the file and checks it (`PRAGMA quick_check`):
/// a file that is not a database or is damaged is renamed to `history.db.bad-<time>` (with its
/// -wal and -shm) and a new one begins; another program's database, or one from a newer sonde,
/// is left untouched and history is refused for this run (`status` says why). A commit that
/// fails (disk full, read-only, I/O error) is rolled back, kept, and retried every second (the
/// connection is reopened after I/O errors); meanwhile the queue fills and then drops.
///
/// Thread-safety: the add_* and status functions may be called from any thread; callbacks run
/// on the io_context given to the constructor.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <asio/io_context.hpp>
#include <nlohmann/json.hpp>
#include <tl/expected.hpp>

#include <sonde/result.hpp>

#include "history/settings.hpp"

struct sqlite3;

namespace sonde::engine::history {

/// Who a result belongs to. Shared by all of a task's results (one allocation per task).
struct task_ident {
  std::string name, type, target;
  /// Metrics rolled up besides the latency (those the task's conditions use).
  std::vector<std::string> rollup_metrics;
};

/// One result as the store keeps it.
struct result_row {
  std::shared_ptr<const task_ident> task;
  std::int64_t time_ms = 0;  ///< start, milliseconds since the Unix epoch (UTC)
  std::uint8_t status = 3;   ///< 0 ok, 1 warning, 2 critical, 3 unknown
  std::uint8_t reason = 0;   ///< sonde::reason
  bool maintenance = false;  ///< inside a maintenance window: not counted for uptime
  std::optional<double> latency_ms;
  std::string message;  ///< kept for results that are not ok
  std::vector<metric> metrics;
  std::optional<std::uint64_t> seq;  ///< an agent's result number
};

/// One agent report to store atomically with its queue position.
struct agent_batch {
  std::string agent, queue_id;
  std::uint64_t last_seq = 0;  ///< the queue position once these rows are stored
  std::uint64_t dropped = 0;   ///< the agent's cumulative dropped count
  std::vector<result_row> rows;
};

/// An agent queue's stored position.
struct agent_position {
  std::string agent, queue_id;
  std::uint64_t last_seq = 0, dropped = 0;
};

struct store_options {
  std::string path;  ///< the database file
  history_settings settings;
  /// The wall clock (tests of retention use a fake one).
  std::function<std::chrono::system_clock::time_point()> clock;
  /// Log lines ("history: ..."), called on the writer or reader thread.
  std::function<void(const std::string&)> log;
  bool sync = true;  ///< PRAGMA synchronous=FULL (off: NORMAL; benchmarks compare)
};

/// A query handed to the reader thread: runs with the read connection (may be null when the
/// store is not open) and returns the reply.
using read_fn = std::function<tl::expected<nlohmann::json, std::string>(sqlite3* db)>;

class store {
 public:
  /// Nothing happens until `start`. `io` receives the callbacks.
  store(asio::io_context& io, store_options opts);
  store(const store&) = delete;
  store& operator=(const store&) = delete;
  /// Commits what is queued (`stop`) and joins the threads.
  ~store();

  /// Start the writer and reader threads. The file is opened and checked on the writer thread;
  /// `on_ready` (optional) runs on the io_context once that is done, with the agents' stored
  /// queue positions, or with the reason history is refused.
  void start(std::function<void(tl::expected<std::vector<agent_position>, std::string>)> on_ready =
                 nullptr);
  /// Commit what is queued, close the database and join the threads. Blocks (call at exit).
  void stop();

  /// Queue a result. False: the queue is full (dropped, counted) or the store is refused.
  bool add_result(result_row row);
  /// Queue an alarm event (docs/alarms.md). Alarm events have their own bound (10,000).
  bool add_alarm_event(const nlohmann::json& event);
  /// Queue an agent's report; `done` runs on the io_context once it is durable (or failed, with
  /// the reason: nothing of it was stored). The writer commits at once for reports.
  void add_agent_report(agent_batch batch,
                        std::function<void(tl::expected<void, std::string>)> done);

  /// Run `f` on the reader thread; `done` gets its reply on the io_context.
  void read(read_fn f, std::function<void(tl::expected<nlohmann::json, std::string>)> done);

  /// For `status`: state ("starting", "ok", "failing", "refused", "stopped"), path, error,
  /// queued, dropped, written, commits, last commit time and size, file sizes.
  nlohmann::json status() const;
  /// "ok", "failing", ...
  std::string state() const;
  std::uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  std::uint64_t written() const { return written_.load(std::memory_order_relaxed); }
  const std::string& path() const { return opts_.path; }

  /// Tests and benchmarks: block until everything queued before the call is committed (or has
  /// failed) and one expiry pass has run to its end. Returns false on a commit failure.
  bool sync(std::chrono::milliseconds limit = std::chrono::seconds(30));

 private:
  struct impl;
  asio::io_context& io_;
  store_options opts_;
  std::shared_ptr<impl> impl_;
  std::atomic<std::uint64_t> dropped_{0}, written_{0};
};

/// Bucket sizes of the rollup levels, in seconds.
constexpr std::int64_t minute_s = 60, hour_s = 3600, day_s = 86400;

}  // namespace sonde::engine::history
