#pragma once
/// @file agent_registry.hpp
/// The central side of agents (docs/agents.md "What the central implements"), without sockets:
/// what `agent_hello`, `report` and `info_reply` do to the agents' store and live view, the
/// dead-man switch, and the rows of `sondectl agents`. The control commands
/// (engine/src/agent_commands.cpp) are a thin layer over it.
///
/// **Store.** One JSON-lines file per agent, `<state_dir>/agents/<name>.jsonl` (characters of
/// the name outside `[A-Za-z0-9._-]` become `_`). Each accepted result is one line
/// `{"queue_id":"...","seq":N,"dropped":D,"result":{...}}`; a report's accepted lines are
/// written with one write(2) and made durable with one fdatasync before `report` returns, so
/// what is acknowledged is exactly what is stored, and the last stored seq per queue_id is
/// derived from the file when the engine restarts. A torn or corrupt line is ignored with a
/// warning naming the file and line (a torn last line is cut off so the next append starts on
/// a fresh line). **Bound:** when the file passes `store_max_bytes` it is renamed to
/// `<name>.jsonl.1` (replacing the previous one) and a fresh file starts with a state line
/// `{"state":{"queues":{"<queue_id>":last_seq,...},"dropped":D}}`, so at most about twice the
/// bound is kept per agent and the dedupe state survives the rotation.
///
/// **Identity.** The agent keys file (`keys_file`, default `<state_dir>/agent-keys`; one
/// `NAME KEY` per line, re-read when it changes) gives agents a key: an agent whose name is
/// listed must present that key in `agent_hello` (compared in constant time), and an agent
/// connecting from beyond loopback must have one. A name without a key is accepted on
/// loopback only. Everything an agent sends is validated (agent_protocol.hpp) before it is
/// stored or shown; result numbers may not reach the agent's stated write position
/// (`next_seq`).
///
/// **Failures.** A store that cannot be written is reported to the agent (nothing is
/// acknowledged), logged through `warn` (at once, then at most every 10 s per agent), and shown
/// in `table()` (per agent) and `status()`.
///
/// Not thread-safe: use from one thread (the engine's io_context).

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <tl/expected.hpp>

#include "agents/agent_protocol.hpp"
#include "core/scheduler.hpp"

namespace sonde::engine {

struct agent_registry_options {
  std::string state_dir;       ///< the store is `<state_dir>/agents/`
  std::string keys_file = {};  ///< the agent keys file ("": `<state_dir>/agent-keys`)
  std::size_t window = 100;    ///< recent results kept in memory per agent
  std::uint64_t store_max_bytes = 16ull << 20;  ///< rotate an agent's store past this size
  int dead_intervals = 3;                       ///< silent this many intervals: critical
  std::size_t max_tasks_per_agent = 256;        ///< distinct task names delivered per agent
  bool sync = true;                             ///< fdatasync each report (tests may skip)
};

/// The live view of one agent.
struct agent_view {
  std::string name;
  std::string peer;  ///< address of its connection ("" before the first hello)
  bool connected = false;
  nlohmann::json facts = nlohmann::json::object();  ///< from hello, refreshed by info_reply
  std::chrono::milliseconds interval{5000};
  std::string queue_id;
  std::uint64_t last_seq = 0;  ///< for queue_id
  std::uint64_t dropped = 0;   ///< the agent's cumulative count (maximum seen)
  std::uint64_t stored = 0;    ///< results stored since this engine started
  std::uint64_t duplicates = 0;
  std::uint64_t lost = 0;      ///< numbers skipped between stored results (never delivered)
  std::uint64_t next_seq = 0;  ///< the agent queue's write position, as it last stated
  std::uint64_t queued = 0;    ///< results the agent holds, as it last stated
  std::string problem;         ///< the agent's queue problem ("" when none), as it last stated
  std::string version;         ///< the agent's sonde version (from its hello)
  std::string store_error;     ///< the last store failure ("" when the last write worked)
  std::uint64_t store_failures = 0;  ///< store writes that failed since this engine started
  bool keyed = false;                ///< authenticated with its key
  std::optional<std::chrono::system_clock::time_point> last_seen_wall, last_hello_wall,
      last_result_time;
  std::chrono::steady_clock::time_point last_seen{};
  nlohmann::json latest_system;       ///< metrics object of the last `system` result (null if none)
  std::deque<nlohmann::json> window;  ///< the last results (each with "agent" and "seq")
  bool critical = false;              ///< the dead-man switch fired and it has not reported since
  bool seen_live = false;             ///< has said hello since this engine started
};

class agent_registry {
 public:
  /// Receives accepted results (task "<agent>/<task>") and dead-man state changes (task
  /// "agent:<name>", type "agent"); the record's task_spec lives as long as the registry.
  using result_fn = std::function<void(const result_record&)>;
  using warn_fn = std::function<void(const std::string&)>;

  explicit agent_registry(agent_registry_options opts, warn_fn warn = nullptr);
  agent_registry(const agent_registry&) = delete;
  agent_registry& operator=(const agent_registry&) = delete;
  ~agent_registry();

  void on_result(result_fn f) { on_result_ = std::move(f); }

  /// An `agent_hello` (decoded by decode_agent_hello): check the agent's key (see
  /// "Identity"; `loopback` says whether the connection comes from loopback), remember facts,
  /// interval and peer; load the store the first time the agent is seen. Returns the last
  /// stored seq for (name, queue_id): 0 for a new queue_id. When the store holds numbers at or
  /// beyond the agent's `next_seq` (forged results, or an agent state restored from a copy),
  /// the last seq is rewound to `next_seq - 1` (recorded in the store, logged). Errors: a bad
  /// name, a missing or wrong key, invalid fields, an unreadable store.
  tl::expected<std::uint64_t, std::string> hello(
      const agent_hello& h, const std::string& peer, bool loopback,
      std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());

  /// A `report` (decoded by decode_agent_report; checked again here): store (durably) each
  /// result whose seq is above the last stored one, in order; returns the ack (the last stored
  /// seq). Errors: no hello for the agent, invalid results or numbers (a seq at or beyond
  /// `next_seq`, not increasing, above 2^53), a store that cannot be written (nothing is
  /// acknowledged then; see "Failures").
  tl::expected<std::uint64_t, std::string> report(
      const std::string& name, const agent_report& report,
      std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());

  /// An `info_reply`: keep the facts (validated) as the agent's latest. Errors: unknown
  /// agent, invalid facts.
  tl::expected<void, std::string> info_reply(const std::string& name, const nlohmann::json& facts);
  /// The agent's connection went away (the view stays; the dead-man switch keeps counting).
  void disconnected(const std::string& name);
  /// `sondectl agent NAME disconnect`: the agent is told to stop; no dead-man alarm for it
  /// until it says hello again.
  void retired(const std::string& name);

  /// The dead-man switch: every agent silent for `dead_intervals` of its interval becomes
  /// critical (one record each). Returns how many changed. Call a few times a second.
  std::size_t sweep(std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());

  /// Rows for `sondectl agents`, sorted by name: {"agents":[{...}]}.
  nlohmann::json table(
      std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now()) const;
  /// For `status`: agents known and connected, store failures (count, agents failing now, the
  /// last error), the keys file and how many keys it holds.
  nlohmann::json status_json() const;
  /// The agent's facts plus what the central knows (null if unknown).
  nlohmann::json info(const std::string& name) const;
  /// The recent results of an agent (oldest first; empty if unknown).
  nlohmann::json recent(const std::string& name) const;
  const agent_view* find(const std::string& name) const;
  std::size_t size() const { return agents_.size(); }

  /// `<state_dir>/agents/<safe name>.jsonl`.
  std::string store_path(const std::string& name) const;
  /// Check an agent name: 1 to 128 bytes, no control characters or '/'.
  static tl::expected<void, std::string> check_name(const std::string& name);

 private:
  struct agent_state;
  agent_state* load(const std::string& name, std::string& error);
  void deliver(agent_state& a, const nlohmann::json& result);
  void dead_man_record(agent_state& a, bool critical, std::chrono::steady_clock::time_point now);
  tl::expected<void, std::string> append(agent_state& a, const std::string& lines);
  tl::expected<void, std::string> rotate(agent_state& a);
  tl::expected<void, std::string> refresh_keys();
  tl::expected<bool, std::string> authenticate(const std::string& name,
                                               const std::optional<std::string>& key,
                                               bool loopback);
  void store_failed(agent_state& a, const std::string& error,
                    std::chrono::steady_clock::time_point now);
  void store_worked(agent_state& a);

  struct key_file_stamp {
    std::uint64_t ino = 0, size = 0;
    std::int64_t mtime_ns = 0;
    bool present = false;
    bool operator==(const key_file_stamp&) const = default;
  };

  agent_registry_options opts_;
  std::string keys_path_;
  std::map<std::string, std::string> keys_;
  std::string keys_error_;
  key_file_stamp keys_stamp_;
  std::uint64_t store_failures_ = 0;
  std::string last_store_error_;
  warn_fn warn_;
  result_fn on_result_;
  std::map<std::string, std::unique_ptr<agent_state>> agents_;
};

}  // namespace sonde::engine
