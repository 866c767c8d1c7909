#pragma once
/// @file event_text.hpp
/// How alarm events read as text: the one-line summary of an event, the headline of a message
/// (one event or a group), the multi-line details, the events as JSON, and the byte-level
/// helpers every notifier needs for text that came from outside (control characters, invalid
/// UTF-8, bounded cuts, JSON and HTML escaping, RFC 2047 words). Pure functions without ASIO,
/// so the template fuzzer compiles this file directly. Thread-safe unless noted.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace sonde::engine::alarms {

/// A string field of an event, or "" when it is missing, null or not a string.
std::string_view event_string(const nlohmann::json& event, std::string_view key);

/// Whether `event` is a resolution: state `ok` after `firing`, `flapping` or `silenced`.
bool is_resolved(const nlohmann::json& event);

/// The state as people read it: "FIRING", "RESOLVED", "FLAPPING", "SILENCED", "PENDING", "OK".
std::string state_label(const nlohmann::json& event);

/// One line: "FIRING critical web (http http://127.0.0.1/): connection refused",
/// "RESOLVED web (http http://127.0.0.1/): HTTP 200". Control characters become spaces; each
/// part is bounded, so the line stays under about 1 KiB.
std::string summary_line(const nlohmann::json& event);

/// The headline of a message: "FIRING critical: web" for one event, "3 alarms: 2 firing,
/// 1 resolved" for a group, "no alarms" for none. Bounded like summary_line.
std::string headline(std::span<const nlohmann::json> events);

/// Summary lines of `events`, one per line (no trailing newline), stopping once the text
/// passes `limit` bytes.
std::string summary_text(std::span<const nlohmann::json> events, std::size_t limit);

/// Human-readable details of each event (summary line, since, reason, alarm id, recent
/// results), events separated by a blank line; stops once the text passes `limit` bytes.
std::string details_text(std::span<const nlohmann::json> events, std::size_t limit);

/// `value` as compact JSON; invalid UTF-8 in strings is replaced by U+FFFD (never throws).
std::string json_text(const nlohmann::json& value);

/// The events as a JSON array, stopping (with an incomplete array) once the text passes
/// `limit` bytes.
std::string events_json(std::span<const nlohmann::json> events, std::size_t limit);

/// The message body most receivers take by default: the event object for one event,
/// {"events":[...]} for a group.
nlohmann::json message_json(std::span<const nlohmann::json> events);

/// The host name (gethostname), read once; "localhost" when it cannot be read.
const std::string& host_name();

// ---- byte-level helpers ---------------------------------------------------------------------

/// Length of the longest prefix of `s` of at most `max` bytes that does not split a UTF-8
/// sequence.
std::size_t utf8_prefix(std::string_view s, std::size_t max);

/// `s` with invalid UTF-8 replaced by U+FFFD.
std::string valid_utf8(std::string_view s);

/// `s` on one line: invalid UTF-8 replaced, control characters (CR, LF, tab, DEL...) turned
/// into spaces, runs of spaces collapsed, trimmed, and cut to at most `max` bytes (with "…"
/// when cut).
std::string one_line(std::string_view s, std::size_t max);

/// Append `s` JSON-escaped (no quotes) to `out`, at most `max` bytes, never splitting an
/// escape or a character. Invalid UTF-8 becomes \ufffd. Returns false when `s` was cut.
bool append_json_escaped(std::string& out, std::string_view s, std::size_t max);

/// Append `s` HTML-escaped (& < > " ') to `out`, at most `max` bytes, never splitting an
/// entity or a character. Returns false when `s` was cut.
bool append_html_escaped(std::string& out, std::string_view s, std::size_t max);

/// Whether `s` is printable ASCII only (0x20-0x7e).
bool is_printable_ascii(std::string_view s);

/// A header value for `s`: one_line(s, max), then, when it is not plain ASCII, RFC 2047
/// encoded words (=?UTF-8?B?...?=, each at most 75 characters) separated by `separator`
/// (" " for HTTP, "\r\n " to fold a mail header).
std::string header_value(std::string_view s, std::size_t max, std::string_view separator = " ");

}  // namespace sonde::engine::alarms
