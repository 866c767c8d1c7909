#pragma once
/// @file state_writer.hpp
/// Persists the control channel's changes off the event loop. Each change is one *record*: the
/// whole state of one task name (its definition when it was started over the channel, its id,
/// whether the task-file task of that name is stopped, whether it is paused). The loop hands
/// records to `submit` (constant time, no I/O) and gets a ticket; a worker thread appends them
/// as JSON lines to a journal beside the state file (`control-tasks.toml.journal`) with one
/// fdatasync per batch (group commit), and rewrites the state file from its own copy of the
/// state when the journal outgrows it, so nothing on the loop is proportional to the number of
/// tasks. `when_saved(ticket, f)` runs `f` on the loop once the change is durable (or failed).
///
/// Records are last-writer-wins per name, so replaying a journal onto a snapshot that already
/// contains some of it yields the same state: a crash between writing the snapshot and
/// emptying the journal loses nothing and doubles nothing. Pending records are coalesced by
/// name, so the queue is bounded by the number of task names.
///
/// A write that fails (a full disk) is retried every second; the state stays in memory in the
/// meantime, the failure is counted, logged at most once a minute, shown in `stats()`, and the
/// replies waiting for it carry a warning.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <asio/io_context.hpp>
#include <tl/expected.hpp>

#include "core/state.hpp"

namespace sonde::engine {

class state_writer {
 public:
  struct options {
    std::string path;  ///< the state file; the journal is state_journal_path(path)
    /// Rewrite the state file when the journal is larger than this and than the state file.
    std::uint64_t compact_bytes = 1 << 20;
    std::chrono::milliseconds retry{1000};
    /// Tests: runs on the worker before each write (to simulate a slow or failing disk).
    std::function<void()> before_write;
  };
  struct counters {
    std::uint64_t submitted = 0, batches = 0, snapshots = 0, failures = 0;
    std::size_t pending = 0;  ///< records not yet durable
    std::string last_error;   ///< empty once a write succeeds again
  };

  /// `records` is the state as loaded; with `compact_now` the worker first rewrites the state
  /// file from it and empties the journal (after a start that replayed one).
  state_writer(asio::io_context& io, options opts, state_records records, bool compact_now);
  state_writer(const state_writer&) = delete;
  state_writer& operator=(const state_writer&) = delete;
  /// Writes what is pending (bounded by one attempt), then stops the worker.
  ~state_writer();

  /// Queue a record (loop thread). Returns its ticket.
  std::uint64_t submit(state_record r);
  /// Run `f` on the loop once everything up to `ticket` is written: with "" on success or the
  /// error that kept it from the disk (the change is in effect and will be retried).
  void when_saved(std::uint64_t ticket, std::function<void(const std::string& error)> f);
  counters stats() const;

 private:
  void run();
  bool write_batch(const std::vector<state_record>& batch, bool snapshot, std::string& error);
  void completed(std::uint64_t ticket, std::string error);

  asio::io_context& io_;
  options opts_;
  // Loop side.
  std::uint64_t next_ticket_ = 0;
  std::map<std::uint64_t, std::vector<std::function<void(const std::string&)>>> waiting_;
  // Shared with the worker.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, state_record> pending_;
  std::uint64_t pending_ticket_ = 0, attempted_ticket_ = 0, durable_ticket_ = 0;
  bool stop_ = false, snapshot_due_ = false;
  counters counters_;
  // Worker side.
  state_records mirror_;
  std::uint64_t journal_bytes_ = 0, snapshot_bytes_ = 0;
  int journal_fd_ = -1;
  bool torn_ = false;  // the journal may end in part of a line (after a failed write)
  std::chrono::steady_clock::time_point last_log_{};
  std::thread thread_;
};

}  // namespace sonde::engine
