#pragma once
/// @file agent_protocol.hpp
/// The agent protocol's requests as the central receives them (docs/agents.md "Wire
/// protocol"), without sockets: decoding and validating `agent_hello`, `report` and
/// `info_reply` bodies, the agent keys file, and a constant-time key comparison. Everything an
/// agent sends is checked here before the central stores, shows or echoes it: every field has
/// a type and a size bound, nesting is fixed by the schema (no recursion over what an agent
/// sends), and every error names the field. Pure functions, so they are fuzzed
/// (fuzz/agent_fuzz.cpp). This header must not include ASIO's coroutine headers: the fuzzers are
/// built with a compiler that cannot compile them.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>
#include <tl/expected.hpp>

namespace sonde::engine {

/// The protocol's limits (docs/agents.md "Limits of what an agent may send").
namespace agent_limits {
/// Highest result sequence number (and `next_seq`) accepted: 2^53. No queue gives out that
/// many numbers (a million results a second for 285 years), and JSON numbers above it are not
/// exact everywhere; a seq near 2^64 can only be a forgery or a corrupted counter.
inline constexpr std::uint64_t max_seq = std::uint64_t{1} << 53;
inline constexpr std::size_t max_results = 500;      ///< results per report
inline constexpr std::size_t max_name = 128;         ///< agent name, bytes
inline constexpr std::size_t max_queue_id = 64;      ///< queue id, bytes
inline constexpr std::size_t max_key = 256;          ///< agent key, bytes
inline constexpr std::size_t min_key = 16;           ///< shortest key the keys file accepts
inline constexpr std::size_t max_fact_keys = 64;     ///< keys of `facts`
inline constexpr std::size_t max_fact_string = 256;  ///< a fact's text, bytes
inline constexpr std::size_t max_addresses = 64;     ///< facts.addresses entries
inline constexpr std::size_t max_problems = 32;      ///< facts.problems entries
inline constexpr std::size_t max_problem = 512;      ///< one problem text, bytes
inline constexpr std::size_t max_task = 256;         ///< result task name, bytes
inline constexpr std::size_t max_type = 64;          ///< result type, bytes
inline constexpr std::size_t max_target = 1024;      ///< result target, bytes
inline constexpr std::size_t max_message = 65536;    ///< result message, bytes
inline constexpr std::size_t max_metrics = 1024;     ///< metrics per result
inline constexpr std::size_t max_metric_name = 128;  ///< metric name, bytes
}  // namespace agent_limits

/// A decoded `agent_hello`.
struct agent_hello {
  std::string agent;                                ///< the agent's name
  std::string queue_id;                             ///< its queue's identity
  std::optional<std::string> key;                   ///< the agent's key, when it sent one
  nlohmann::json facts = nlohmann::json::object();  ///< validated (check_agent_facts)
  std::chrono::milliseconds interval{5000};         ///< at least 100 ms
  std::uint64_t next_seq = 1;  ///< the queue's write position: every seq it gave out is below
  std::uint64_t queued = 0, dropped = 0;
  std::string problem;  ///< the agent's current queue problem ("" when none)
  std::string version;  ///< the agent's sonde version ("" when not sent)
};

/// A decoded `report`. `results` is a validated array (check_agent_result for each).
struct agent_report {
  std::string queue_id;
  nlohmann::json results = nlohmann::json::array();
  std::uint64_t next_seq = 1;  ///< the queue's write position when the report was made
  std::uint64_t queued = 0, dropped = 0;
  std::string problem;
};

/// A decoded `info_reply`.
struct agent_info_reply {
  std::int64_t id = 0;  ///< the info event's id (0 when absent)
  nlohmann::json facts = nlohmann::json::object();
};

/// Decode and validate an `agent_hello` body (the whole request object). Required: "agent"
/// (1 to 128 bytes, no '/' or control characters), "queue_id" (1 to 64 of [A-Za-z0-9._-]),
/// "next_seq" (1 to 2^53). Optional: "key", "interval_ms", "queued", "dropped", "problem",
/// "version", "facts". Errors name the field. Never throws; does not recurse into the input.
tl::expected<agent_hello, std::string> decode_agent_hello(const nlohmann::json& body);
/// Decode and validate a `report` body: "queue_id", "next_seq", "results" (at most 500, each
/// valid and below `next_seq`, in increasing seq), "queued", "dropped", "problem".
tl::expected<agent_report, std::string> decode_agent_report(const nlohmann::json& body);
/// Decode and validate an `info_reply` body: "id" (integer), "facts" (check_agent_facts with
/// the info fields).
tl::expected<agent_info_reply, std::string> decode_agent_info_reply(const nlohmann::json& body);

/// Check an agent's facts: an object of at most 64 keys; the known facts have fixed types
/// (strings of at most 256 bytes; `addresses` and `problems` lists of strings; `cpu_count`,
/// `mem_total`, `interval_ms` non-negative integers; `queue` an object of non-negative
/// integers); any other key must hold a short string, a number, a boolean or null. `where`
/// prefixes errors ("facts"). Never recurses into the input.
tl::expected<void, std::string> check_agent_facts(const nlohmann::json& facts,
                                                  std::string_view where = "facts");
/// Check one result record of a report (design.md "Results" plus "seq"): each known field with
/// its type and size bound (seq, time, task, type and status required); at most 16 other
/// fields, each a plain value (a newer agent's). `where` prefixes errors ("results[3]").
tl::expected<void, std::string> check_agent_result(const nlohmann::json& result,
                                                   std::string_view where);
/// Check a report's "results": a list of at most max_results records, each passing
/// check_agent_result, in increasing seq, every seq below `next_seq` (what the agent's queue
/// has written). Used by decode_agent_report and again by the registry, whose `report` is
/// public.
tl::expected<void, std::string> check_agent_results(const nlohmann::json& results,
                                                    std::uint64_t next_seq);
/// Check an agent name: 1 to 128 bytes, no control characters or '/'.
tl::expected<void, std::string> check_agent_name(std::string_view name);
/// Check a queue id: 1 to 64 characters of [A-Za-z0-9._-].
bool valid_agent_queue_id(std::string_view queue_id);

/// Parse "2026-11-21T02:40:56.123456Z" (fraction optional, 'Z' or no zone): nullopt if the
/// text is not that shape or not a real date.
std::optional<std::chrono::system_clock::time_point> parse_agent_time(std::string_view text);

/// The agent keys file (docs/agents.md "Agent keys"): one `NAME KEY` per line, blank lines and
/// `#` comments ignored. A key is 16 to 256 printable ASCII characters without spaces. Errors
/// name the file and line (a name given twice, a short key, a bad name).
tl::expected<std::map<std::string, std::string>, std::string> parse_agent_keys(
    std::string_view text, std::string_view file);

/// Compare two keys in time that depends on neither their contents nor where they differ
/// (only on the length of `expected`).
bool agent_key_equal(std::string_view given, std::string_view expected);

}  // namespace sonde::engine
