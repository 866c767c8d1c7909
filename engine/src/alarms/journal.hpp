#pragma once
/// @file journal.hpp
/// The alarm subsystem's durable memory: one file of JSON lines (`<state dir>/alarms.journal`)
/// holding alarm states, the notification outbox and silences. The loop only queues lines; a
/// writer thread appends them in batches with one fdatasync each and reports back on the loop,
/// so a notification is attempted only once its outbox line is on disk and the disk never
/// delays a probe. When the file grows, the owner hands over a snapshot of what is still live
/// and the writer replaces the file with it atomically (temporary file, fsync, rename, fsync of
/// the directory).

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <asio/io_context.hpp>
#include <nlohmann/json.hpp>
#include <tl/expected.hpp>

namespace sonde::engine::alarms {

class alarm_journal {
 public:
  struct options {
    std::string path;
    std::size_t max_queued_bytes = std::size_t{64} << 20;  ///< past it, lines are not saved
    bool sync = true;  ///< fdatasync each batch (tests of slow paths may turn it off)
  };
  struct stats {
    std::uint64_t lines = 0, batches = 0, rewrites = 0, overflow = 0, errors = 0;
    std::uint64_t file_bytes = 0;  ///< bytes in the file since the last rewrite
    std::string last_error;
  };

  /// Every record of the file at `path`, in order ("" : no file yet). A torn last line (a crash
  /// mid-write) is ignored; other bad lines are skipped and counted in `bad`.
  static tl::expected<std::vector<nlohmann::json>, std::string> load(const std::string& path,
                                                                     std::size_t& bad);

  alarm_journal(asio::io_context& io, options o);
  alarm_journal(const alarm_journal&) = delete;
  alarm_journal& operator=(const alarm_journal&) = delete;
  /// Writes what is queued, then stops the thread.
  ~alarm_journal();

  /// Queue one record. `saved(ok)` runs on the loop once it is on disk (ok) or could not be
  /// written (not ok: the queue was full or the disk failed; the caller goes on without it).
  void append(const nlohmann::json& record, std::function<void(bool ok)> saved = {});
  /// Replace the file with `records` (everything still live), after what is queued.
  void rewrite(std::vector<nlohmann::json> records);
  /// Bytes appended since the last rewrite (to decide when to rewrite).
  std::uint64_t file_bytes() const { return file_bytes_; }
  stats get_stats() const;

 private:
  struct item {
    bool rewrite = false;
    std::string text;
    std::function<void(bool)> saved;
  };
  void run();
  bool write_batch(const std::string& text);
  bool replace_file(const std::string& text);

  asio::io_context& io_;
  options opts_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<item> queue_;
  std::size_t queued_bytes_ = 0;
  bool stopping_ = false;
  int fd_ = -1;
  stats stats_;
  std::uint64_t file_bytes_ = 0;  // loop's view
  std::thread thread_;
};

}  // namespace sonde::engine::alarms
