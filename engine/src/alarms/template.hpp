#pragma once
/// @file template.hpp
/// Message templates of the notifiers: compiled once when the notifier is made, rendered for
/// every message.
///
/// Syntax: text with `{name}` and `{name|filter}` substitutions; `{{` and `}}` are literal
/// braces. Names:
///   - the fields of an alarm event, taken from the message's first event: `time`,
///     `alarm_id`, `task`, `type`, `target`, `state`, `severity`, `previous`, `since`,
///     `reason`, `message`, `results` (a JSON array); null or missing renders as nothing;
///   - `count` (events in the message), `summary` (one line per event), `headline` ("FIRING
///     critical: web", "3 alarms: 2 firing, 1 resolved"), `details` (a readable multi-line
///     account of each event with its recent results), `events` (the events as a JSON
///     array), `engine` (the host name), `id` (the notification id), `notifier` (its name).
/// Filters: `json` (escaped for the inside of a JSON string, without quotes) and `html`
/// (& < > " ' escaped, for Telegram's parse_mode = "HTML").
///
/// Bounds: a template is at most `template_limits::source_bytes` long; one rendering adds at
/// most `budget` bytes of substituted text to the template's literal text (a cut value ends
/// with "…" and never splits a character or an escape, so a JSON template stays valid JSON).
/// Everything rendered is valid UTF-8 when the template is.
///
/// No ASIO here: the template fuzzer compiles this file directly. Thread-safe: a compiled
/// template is immutable.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>
#include <tl/expected.hpp>

namespace sonde::engine::alarms {

/// Template limits (docs/notifiers.md).
struct template_limits {
  /// Longest template text accepted (bytes).
  static constexpr std::size_t source_bytes = 16 * 1024;
  /// Default most bytes of substituted text in one rendering.
  static constexpr std::size_t default_budget = 256 * 1024;
};

/// Why a template does not compile: one line saying what and where.
struct template_error {
  std::size_t column = 0;  ///< 1-based, in characters; 0 when not about one place
  std::string message;     ///< e.g. "unknown name 'taks' at column 5 (did you mean 'task'?)"
};

/// What a template is rendered from: one message.
struct template_context {
  std::span<const nlohmann::json> events;  ///< at least one for a real message
  std::uint64_t id = 0;                    ///< the notification id
  std::string_view notifier;               ///< the notifier's name
  std::string_view engine;                 ///< the host name (host_name() in production)
};

/// A compiled template.
class message_template {
 public:
  /// The substitution names, in documentation order.
  static const std::vector<std::string>& names();

  /// Compile `text`. Errors: unknown name or filter (with a suggestion), unclosed `{`, a
  /// single `}`, an empty name, a NUL byte, text longer than the limit.
  static tl::expected<message_template, template_error> compile(std::string_view text);

  /// Render for `ctx`, adding at most `budget` bytes of substituted text. Never throws on
  /// content (invalid UTF-8 is replaced, control characters kept except in one-line names).
  std::string render(const template_context& ctx,
                     std::size_t budget = template_limits::default_budget) const;

  /// Whether rendering uses `name` (e.g. "events").
  bool uses(std::string_view name) const;

  message_template() = default;

 private:
  enum class filter : std::uint8_t { none, json, html };
  struct piece {
    std::string literal;  ///< text before the substitution (braces already unescaped)
    int field = -1;       ///< index into names(), -1 for the trailing literal
    filter how = filter::none;
  };
  std::vector<piece> pieces_;
};

}  // namespace sonde::engine::alarms
