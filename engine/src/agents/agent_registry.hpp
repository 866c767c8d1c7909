#pragma once
/// @file agent_registry.hpp
/// The central side of agents (docs/agents.md "What the central implements"), without sockets:
/// what `agent_hello`, `report` and `info_reply` do to the agents' store and live view, the
/// dead-man switch, and the rows of `sondectl agents`. The control commands
/// (engine/src/agent_commands.cpp) are a thin layer over it.
///
/// **Store.** The central's history store (history/store.hpp, one SQLite database): each
/// report's accepted results are handed to `store::add_agent_report` as one batch together
/// with the agent's queue position, and the writer thread commits them in one transaction
/// (group commit with whatever else is waiting). The ack goes out only once that transaction
/// is durable, so what is acknowledged is exactly what is stored, even across a SIGKILL; the
/// event loop never waits for the disk. The last stored seq per (agent, queue_id) comes from
/// the store at start (`store_ready`). Reports of one agent are stored one after the other: a
/// report that arrives while another of the same agent is being stored (a new connection
/// replaced an old one) waits for it and is then deduplicated against the position it left.
/// Dead-man records go to the store as ordinary results (`add_result`).
///
/// **Old per-agent files.** Earlier versions kept `<state_dir>/agents/<name>.jsonl` (and
/// `.jsonl.1`). On an agent's first hello, when the store has no position for it, its queue
/// positions are imported from those files (read only, logged) and recorded in the store; the
/// files are no longer written.
///
/// **Identity.** The agent keys file (`keys_file`, default `<state_dir>/agent-keys`; one
/// `NAME KEY` per line, re-read when it changes) gives agents a key: an agent whose name is
/// listed must present that key in `agent_hello` (compared in constant time), and an agent
/// connecting from beyond loopback must have one. A name without a key is accepted on
/// loopback only. Everything an agent sends is validated (agent_protocol.hpp) before it is
/// stored or shown; result numbers may not reach the agent's stated write position
/// (`next_seq`).
///
/// **Failures.** A report that cannot be stored is answered with the error (nothing is
/// acknowledged; the agent keeps its results and sends them again), logged through `warn` (at
/// once, then at most every 10 s per agent), and shown in `table()` (per agent) and
/// `status_json()`. Until the store is open, `agent_hello` is refused ("starting; try again":
/// agents retry with backoff); when history is refused for this run (another program's or a
/// newer sonde's database), hello and report errors say so.
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
#include "history/store.hpp"

namespace sonde::engine {

struct agent_registry_options {
  std::string state_dir;       ///< old per-agent files are read from `<state_dir>/agents/`
  std::string keys_file = {};  ///< the agent keys file ("": `<state_dir>/agent-keys`)
  std::size_t window = 100;    ///< recent results kept in memory per agent
  int dead_intervals = 3;      ///< silent this many intervals: critical
  std::size_t max_tasks_per_agent = 256;  ///< distinct task names delivered per agent
  /// Where reports are stored (must outlive the registry; its callbacks run on the registry's
  /// thread). Null: no store; every agent_hello is refused.
  history::store* store = nullptr;
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
  /// Numbers skipped between stored results (never delivered), since this engine started (or
  /// as imported from an old per-agent file).
  std::uint64_t lost = 0;
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
  /// A report's answer: the ack (the last stored seq of the report's queue) or the error.
  using report_done = std::function<void(tl::expected<std::uint64_t, std::string>)>;

  explicit agent_registry(agent_registry_options opts, warn_fn warn = nullptr);
  agent_registry(const agent_registry&) = delete;
  agent_registry& operator=(const agent_registry&) = delete;
  ~agent_registry();

  void on_result(result_fn f) { on_result_ = std::move(f); }

  /// The store is open (`store::start`'s `on_ready`): the stored queue positions, or the reason
  /// history is refused for this run. Until then every `agent_hello` is refused.
  void store_ready(tl::expected<std::vector<history::agent_position>, std::string> positions);
  /// "starting", "ready" or "refused".
  std::string store_state() const;

  /// An `agent_hello` (decoded by decode_agent_hello): check the agent's key (see
  /// "Identity"; `loopback` says whether the connection comes from loopback), remember facts,
  /// interval and peer; import an old per-agent file the first time the agent is seen (see
  /// above). Returns the last stored seq for (name, queue_id): 0 for a new queue_id. When the
  /// store holds numbers at or beyond the agent's `next_seq` (forged results, or an agent state
  /// restored from a copy), the last seq is rewound to `next_seq - 1` (recorded in the store,
  /// logged). Errors: a bad name, a missing or wrong key, invalid fields, a store that is not
  /// open yet or refused.
  tl::expected<std::uint64_t, std::string> hello(
      const agent_hello& h, const std::string& peer, bool loopback,
      std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());

  /// A `report` (decoded by decode_agent_report; checked again here, synchronously): hand each
  /// result whose seq is above the last stored one to the store, in order, as one batch with
  /// the new queue position; once it is durable, update the view, deliver the results
  /// (`on_result`) and answer the ack (the last stored seq). `done` runs exactly once: at once
  /// when the report is refused or holds nothing new, otherwise from the store's callback on
  /// the io_context. Errors: no hello for the agent, invalid results or numbers (a seq at or
  /// beyond `next_seq`, not increasing, above 2^53), a store that cannot be written (nothing
  /// is acknowledged then; see "Failures").
  void report(const std::string& name, agent_report report, report_done done,
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

  /// The old per-agent file, `<state_dir>/agents/<safe name>.jsonl` (read once, never written).
  std::string legacy_path(const std::string& name) const;
  /// Check an agent name: 1 to 128 bytes, no control characters or '/'.
  static tl::expected<void, std::string> check_name(const std::string& name);

 private:
  struct agent_state;
  struct queue_pos;
  agent_state& state_of(const std::string& name);
  tl::expected<void, std::string> import_legacy(agent_state& a);
  task_spec* spec_for(agent_state& a, const nlohmann::json& result);
  std::shared_ptr<const history::task_ident> ident_for(agent_state& a, const task_spec* spec);
  result_record record_of(const nlohmann::json& result, task_spec* spec) const;
  void deliver(agent_state& a, const nlohmann::json& result);
  void dead_man_record(agent_state& a, bool critical, std::chrono::steady_clock::time_point now);
  // The per-agent chain of store writes: at most one batch of an agent in the store at a time.
  void enqueue(agent_state& a, std::function<void()> step);
  void next_step(agent_state& a);
  void store_report(agent_state& a, agent_report rep, report_done done,
                    std::chrono::steady_clock::time_point now);
  void store_position(agent_state& a, const std::string& queue_id, std::uint64_t last_seq,
                      std::uint64_t dropped, std::string why);
  std::string store_unusable() const;
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
  enum class store_phase { starting, ready, refused } phase_ = store_phase::starting;
  std::string refused_reason_;
  // Store callbacks check it: they may run after the registry is gone.
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

}  // namespace sonde::engine
