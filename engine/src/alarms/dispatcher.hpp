#pragma once
/// @file dispatcher.hpp
/// Delivery around the notifiers: per notifier, an ordered queue of outbox entries (one alarm
/// event each, already on disk), grouped into one message per `group_wait` window, sent one
/// message at a time (so receivers see events in order), retried with exponential backoff and
/// jitter (or the receiver's Retry-After) until `max_age`, held back by `rate_limit`. A retry
/// carries the failed message's events first and whatever arrived meanwhile after them.
/// Runs on the loop; every outcome is counted per notifier.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include "alarms/notifier.hpp"
#include "alarms/policy.hpp"

namespace sonde::engine::alarms {

/// One event for one notifier, as the outbox holds it.
struct outbox_entry {
  std::uint64_t id = 0;
  std::string notifier;
  std::chrono::system_clock::time_point created;
  nlohmann::json event;
  bool durable = false;  ///< its outbox line is on disk (or could not be: then it goes anyway)
  std::chrono::steady_clock::time_point arrived;
};

struct notifier_counters {
  std::uint64_t messages_sent = 0, events_sent = 0, failed = 0, retried = 0, dropped = 0,
                rejected = 0, expired = 0;
  std::string last_error;
  std::optional<std::chrono::system_clock::time_point> last_sent, last_failed;
};

class dispatcher {
 public:
  /// Called when entries are finished (delivered, rejected or expired): the owner writes their
  /// "done" line so a restart does not send them again.
  using finished_fn = std::function<void(const std::vector<std::uint64_t>& ids)>;
  /// Called with each log line worth an operator's attention.
  using log_fn = std::function<void(const std::string&)>;

  dispatcher(asio::io_context& io, finished_fn finished, log_fn log);
  ~dispatcher();

  /// Add a notifier (its notifier made by `make_notifier`).
  void add(notifier_config cfg, std::unique_ptr<notifier> impl);
  bool has(const std::string& name) const { return queues_.count(name) != 0; }
  /// Queue an entry for its notifier. False if there is no such notifier.
  bool enqueue(outbox_entry e);
  /// The entry's outbox line is on disk: it may be sent.
  void durable(const std::string& notifier, std::uint64_t id);
  /// Entries not yet finished, per notifier, for the journal's snapshot.
  std::vector<const outbox_entry*> pending() const;
  /// {"notifiers": [...]}: each with its type, counters, pending, next attempt, last error.
  nlohmann::json describe() const;
  std::size_t pending_count() const;
  /// Stop timers and forget in-flight attempts (their entries stay in the outbox).
  void stop();

  /// Largest number of events in one message; more go out in the next one.
  static constexpr std::size_t max_group = 5000;

 private:
  struct queue;
  void try_send(queue& q);
  void arm(queue& q, std::chrono::steady_clock::duration after);
  void finished(queue& q, std::size_t count, bool delivered, bool expired);

  asio::io_context& io_;
  finished_fn finished_;
  log_fn log_;
  std::map<std::string, std::unique_ptr<queue>> queues_;
  std::mt19937_64 rng_{std::random_device{}()};
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace sonde::engine::alarms
