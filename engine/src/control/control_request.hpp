#pragma once
/// @file control_request.hpp
/// The control protocol's request side, without sockets: splitting a byte stream into bounded
/// lines, parsing a line into a request envelope, and decoding each command's fields (task
/// selectors, watch filters, task definitions with the seed aliases). Pure functions over
/// strings, so they can be fuzzed (fuzz/control_fuzz.cpp) and tested without a server.
/// This header must not include ASIO's coroutine headers: the fuzzers are built with a
/// compiler that cannot compile them. See docs/control-protocol.md.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>
#include <tl/expected.hpp>

namespace sonde::engine {

/// The protocol version this engine speaks (`hello` and `status` replies carry it). A request
/// may say `"protocol": N`; a version newer than this one is refused.
inline constexpr int control_protocol_version = 1;
/// Where the control server listens unless told otherwise.
inline constexpr std::string_view control_default_listen = "127.0.0.1:6543";

/// A "host:port" to listen on or connect to.
struct listen_address {
  std::string host;  ///< IPv4/IPv6 literal or "localhost" (brackets removed)
  std::uint16_t port = 0;
  /// "host:port" ("[v6]:port" for IPv6).
  std::string to_string() const;
};

/// Parse "host:port", "[v6]:port". Port 0 means "any free port" (the bound one is reported).
/// Errors name what is wrong. Thread-safe.
tl::expected<listen_address, std::string> parse_listen_address(std::string_view text);

/// True for 127.0.0.0/8, ::1, ::ffff:127.x and "localhost".
bool is_loopback_host(std::string_view host);

/// Check a control token: no whitespace or control characters, and at least 16 characters
/// when the listener is beyond loopback. The error says what to do.
tl::expected<void, std::string> check_token(std::string_view token, bool loopback);

/// The deepest nesting of arrays and objects accepted from the network (requests, agent facts,
/// replies). Real messages nest three or four levels; the limit keeps every later walk over a
/// parsed value (copy, dump, compare) far from the stack's end.
inline constexpr std::size_t json_max_depth = 64;

/// Parse JSON that came from outside: refuses a NUL byte, nesting deeper than `max_depth`
/// (checked by a linear scan before anything is built), a key given twice in one object
/// (`{"command":"hello","command":"shutdown"}` must not mean shutdown), and anything that is not
/// exactly one JSON value. The error says what and where (byte offset). Never throws.
/// Thread-safe.
tl::expected<nlohmann::json, std::string> parse_json_untrusted(
    std::string_view text, std::size_t max_depth = json_max_depth);

/// One request line, parsed: the whole object plus the envelope fields every command shares.
struct control_request {
  std::string command;  ///< e.g. "start"
  nlohmann::json body;  ///< the whole request object
  std::optional<std::string> token;
  nlohmann::json seq;  ///< echoed in the reply when present (null otherwise)
};

/// A request that could not be parsed; `seq` is echoed when the line had one.
struct request_error {
  std::string message;
  nlohmann::json seq;
};

/// Parse one line (no newline) with parse_json_untrusted. Errors: not JSON (with the reason:
/// a NUL byte, too deep, a duplicate key, a syntax error), not an object, no/invalid "command",
/// bad "token"/"protocol" types, a protocol version newer than ours. Never throws.
tl::expected<control_request, request_error> parse_request(std::string_view line);

/// The largest task id: 2^53-1, the largest integer a JavaScript (or any double-based) JSON
/// client reads exactly, so every id the engine accepts or gives out can be addressed again.
inline constexpr std::int64_t max_task_id = (std::int64_t{1} << 53) - 1;

/// Which tasks `stop`, `pause` and `resume` act on: all, or names and ids.
struct task_selector {
  bool all = false;
  std::vector<std::string> names;
  std::vector<std::int64_t> ids;
};

/// Decode "all": true, "name"/"task" (string or list), "id"/"service_id" (integer from 1 to
/// 2^53-1, the largest that every JSON client can address; or a list). Exactly one way of
/// naming tasks is required: names and ids together are refused.
tl::expected<task_selector, std::string> parse_selector(const nlohmann::json& body);

/// Which results a watcher receives: empty lists match everything.
struct watch_filter {
  std::vector<std::string> tasks, types, statuses;
  bool results = true;  ///< stream results ("results": false turns them off)
  bool alarms = false;  ///< stream alarm events too ("alarms": true)
  /// True if a result of `task`/`type`/`status` passes. `type` is compared case-insensitively.
  bool matches(std::string_view task, std::string_view type, std::string_view status) const;
  /// The task and type parts only (alarm events have no result status).
  bool matches_task(std::string_view task, std::string_view type) const {
    watch_filter any = *this;
    any.statuses.clear();
    return any.matches(task, type, "");
  }
};

/// Decode "task"/"name", "type"/"service", "status" (each a string or a list), "results" and
/// "alarms" (booleans). Statuses must be ok, warning, critical or unknown.
tl::expected<watch_filter, std::string> parse_watch_filter(const nlohmann::json& body);

/// A task definition from `start`, with the seed aliases resolved: "service" -> "type",
/// "host" -> "target", "service_id" -> "id". `fields` holds every task key (common keys and
/// probe options) exactly as the task file would; it is validated like a task file entry.
struct task_definition {
  std::string name;
  std::optional<std::int64_t> id;
  nlohmann::json fields;  ///< object: name, type, target, interval, ... and probe options
  /// "set": {"key": "text"}: probe options as text, converted by the type's option table (as
  /// `sonde probe --set key=value`), for clients that do not know the option's type.
  std::vector<std::pair<std::string, std::string>> set;
};

/// Decode a `start` request. Without a name, one is made: "<type>-<id>" (lower case) when an
/// id is given (the seed message becomes "ping-1"), else "<type>-<target>". Errors: a key and
/// its alias both given, a non-integer or non-positive id, a null value, a nested object other
/// than "tags" and "set" (whose values must be strings).
tl::expected<task_definition, std::string> parse_task_definition(const nlohmann::json& body);

/// Splits a received byte stream into lines of at most `max_line` bytes (not counting the
/// newline; a trailing '\r' is removed). A longer line is reported once as `too_long` and
/// skipped up to its newline, so memory stays bounded and the stream stays in sync.
class line_splitter {
 public:
  explicit line_splitter(std::size_t max_line) : max_(max_line) {}
  /// Append received bytes.
  void feed(std::string_view data);
  struct line {
    std::string text;
    bool too_long = false;
  };
  /// The next complete line (or overlong marker), or nullopt until more data arrives.
  std::optional<line> next();
  /// Bytes held (at most max_line + the last chunk fed).
  std::size_t buffered() const { return buf_.size() - head_; }
  /// Change the longest line accepted from now on (a connection that turned out to be an agent
  /// sends reports of up to 4 MiB).
  void set_max_line(std::size_t max_line) { max_ = max_line; }

 private:
  std::size_t max_;
  std::string buf_;
  std::size_t head_ = 0, scanned_ = 0;
  bool discarding_ = false;
};

}  // namespace sonde::engine
