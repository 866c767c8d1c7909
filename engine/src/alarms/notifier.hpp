#pragma once
/// @file notifier.hpp
/// Notifiers: how one message (one alarm event, or a group of them) reaches people. Each type
/// (webhook, slack, email, ntfy, telegram, pagerduty, exec) validates its options, renders its
/// payload from templates (template.hpp) and delivers asynchronously on the engine's loop:
/// HTTP and SMTP through libcurl's multi interface (sonde::detail::curl_service), `exec`
/// through a child process whose stdin, output and exit are watched by the loop. A delivery
/// never blocks the loop and reports its outcome exactly once. Reference: docs/alarms.md.
///
/// What the dispatcher (dispatcher.hpp) adds around a notifier: the durable outbox, grouping,
/// rate limit, retries with backoff, counters. A notifier knows nothing of those.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <asio/io_context.hpp>
#include <nlohmann/json.hpp>
#include <tl/expected.hpp>

namespace sonde::engine::alarms {

/// The kind of value an option takes in the task file.
enum class option_kind {
  string,       ///< "text"
  boolean,      ///< true / false
  integer,      ///< 42
  duration,     ///< "10s" (given to the notifier as a string, already validated)
  string_list,  ///< ["a", "b"] (a single string is accepted as a list of one)
  string_table  ///< { Key = "value", ... }
};

/// One option of a notifier type, for validation, `sonde check` suggestions and docs.
struct notifier_option {
  std::string key;
  option_kind kind;
  bool required = false;
  std::string help;  ///< one line; mentions the default
};

/// A notifier's own options (after the common ones: name, type, group_wait, max_age, ...),
/// converted from TOML to JSON by the config loader according to the option table: strings,
/// booleans, integers, durations as strings, lists of strings, tables of strings.
struct notifier_spec {
  std::string name;
  std::string type;
  nlohmann::json options = nlohmann::json::object();
  std::chrono::milliseconds timeout{10000};  ///< one attempt, connection to last byte
};

/// A refused option: which key (empty when the problem is not one key's) and why.
struct notifier_error {
  std::string key;
  std::string message;
};

/// The types, in documentation order.
const std::vector<std::string>& notifier_types();
/// The option table of `type` (empty for an unknown type).
const std::vector<notifier_option>& notifier_options(std::string_view type);

/// One message to deliver: what the outbox holds. `events` are alarm events (the fields of
/// docs/alarms.md); a message holds one or more, in the order they happened.
struct notification {
  std::uint64_t id = 0;  ///< unique per engine state directory; sent as X-Sonde-Notification
  std::string notifier;
  std::vector<nlohmann::json> events;
  bool test = false;  ///< from `sonde notify-test`
};

/// How one attempt ended.
struct delivery_result {
  enum class outcome {
    delivered,  ///< the receiver accepted it
    retry,      ///< a failure that may pass (refused, timeout, 5xx, 408, 429, exec exit != 0)
    rejected    ///< the receiver refused the message itself (other 4xx): retrying cannot help
  };
  outcome what = outcome::retry;
  std::string detail;  ///< one line for logs and `notifiers`: "HTTP 503", "connection refused"
  /// The receiver asked to wait this long before the next attempt (429 Retry-After, Telegram
  /// parameters.retry_after).
  std::optional<std::chrono::milliseconds> retry_after;
};

/// A configured notifier. Use from the loop's thread only.
class notifier {
 public:
  virtual ~notifier() = default;
  const notifier_spec& spec() const { return spec_; }
  /// Deliver `n`; `done` runs exactly once, on the loop, never inside `send`. A notifier
  /// handles one message at a time (the dispatcher waits for `done` before the next).
  /// Destroying the notifier cancels what is in flight without calling `done`.
  virtual void send(const notification& n, std::function<void(delivery_result)> done) = 0;

 protected:
  explicit notifier(notifier_spec spec) : spec_(std::move(spec)) {}
  notifier_spec spec_;
};

/// Check `spec`'s options beyond their kinds (URL schemes, templates, required keys, values in
/// range) without making anything. The config loader calls it for `sonde check`.
tl::expected<void, notifier_error> validate_notifier(const notifier_spec& spec);

/// Make a notifier that delivers on `io`; validates like `validate_notifier`.
tl::expected<std::unique_ptr<notifier>, notifier_error> make_notifier(asio::io_context& io,
                                                                      notifier_spec spec);

}  // namespace sonde::engine::alarms
