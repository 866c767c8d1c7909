#pragma once
/// @file agent.hpp
/// `sonde agent`: every result of the local scheduler goes into the on-disk queue first; a
/// sender coroutine connects to the central engine, says `agent_hello`, and delivers the queue
/// in `report` batches, acknowledging the queue only when the central acknowledges; on
/// connection loss it reconnects with exponential backoff and jitter. The central may ask
/// `info` (answered with the host's facts) or `disconnect` (the agent stops for good) on the
/// same connection. Protocol and operation: docs/agents.md.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <asio/io_context.hpp>
#include <nlohmann/json.hpp>
#include <tl/expected.hpp>

#include "agents/agent_queue.hpp"
#include "control/control_request.hpp"
#include "core/scheduler.hpp"

namespace sonde::engine {

/// The agent wire protocol's version (`"protocol"` of `agent_hello`).
inline constexpr int agent_protocol_version = 1;

/// What the agent needs to know about its central and its pace.
struct agent_options {
  std::string name;       ///< how this agent reports itself (default: the host name)
  listen_address server;  ///< the central engine's control address
  std::string token;      ///< sent in `agent_hello` when not empty
  std::string key;        ///< this agent's key (docs/agents.md "Agent keys"), sent in `agent_hello`
  std::chrono::milliseconds interval{5000};    ///< reported in `agent_hello`
  std::size_t batch = 500;                     ///< results per `report`, at most (at most 500)
  std::size_t batch_bytes = 4u << 20;          ///< payload bytes per `report`, at most
  std::chrono::milliseconds retry_min{500};    ///< first reconnection delay
  std::chrono::milliseconds retry_max{30000};  ///< the delay doubles up to this
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds reply_timeout{30000};  ///< a request unanswered this long: reconnect
  std::size_t max_line = 1u << 20;                 ///< longest line accepted from the central
};

/// Counters of the sender, for status lines and tests.
struct agent_stats {
  std::uint64_t connects = 0;   ///< successful hellos
  std::uint64_t reports = 0;    ///< reports acknowledged
  std::uint64_t delivered = 0;  ///< results acknowledged by the central
  std::uint64_t info_answered = 0;
  std::uint64_t queue_failures = 0;  ///< results that could not be queued (counted as dropped)
  std::uint64_t acks_refused = 0;    ///< acknowledgements beyond what the queue has written
  bool connected = false;
};

namespace detail {
struct agent_core;
}

/// The agent: a result sink that queues, plus the sender. Not thread-safe: use from the
/// io_context's thread. `queue` must outlive the agent.
class agent final : public result_sink {
 public:
  agent(asio::io_context& io, agent_queue& queue, agent_options opts);
  agent(const agent&) = delete;
  agent& operator=(const agent&) = delete;
  ~agent() override;

  /// Queue a result (its original time is kept); wakes the sender. A result that cannot be
  /// queued (full disk, I/O error) is counted in the queue's `dropped` and leaves a gap in the
  /// numbering; the agent says so on stderr (at once, then at most every 10 s with the count)
  /// and tells the central (`dropped` and `problem` in its next report, sent even when no
  /// result is queued).
  void on_result(const result_record& r) override;
  /// Queue a result already formatted as a JSON object (design.md "Results" fields).
  void push_json(std::string_view object);
  /// Make everything queued durable.
  void flush() override;
  /// Start the sender (connect, hello, deliver; reconnect with backoff).
  void start();
  /// Stop the sender, close the connection, sync the queue. Idempotent.
  void stop();
  /// Called once when the central sends `disconnect` (with its reason); the sender has stopped
  /// and will not reconnect.
  void on_disconnect(std::function<void(const std::string& reason)> f);
  const agent_stats& stats() const;

 private:
  std::shared_ptr<detail::agent_core> core_;
};

/// The facts `info` answers with: os, kernel, arch, hostname, addresses, cpu_model, cpu_count,
/// mem_total (bytes), plus problems when something could not be read. Thread-safe.
nlohmann::json agent_facts_json();

/// Parse `--queue-max`: a count ("100000"), a size ("64MB"; KB, MB, GB, binary multiples), or
/// both separated by a comma ("5000,16MB"). Unspecified parts keep their defaults.
tl::expected<agent_queue_options, std::string> parse_queue_max(std::string_view text);

/// The default state directory of agent `name` (docs/agents.md): `$STATE_DIRECTORY/agent-NAME`
/// under systemd, else `/var/lib/sonde/agent-NAME` when /var/lib/sonde is writable, else
/// `$XDG_STATE_HOME/sonde/agent-NAME` (`~/.local/state/...`). Characters of `name` outside
/// [A-Za-z0-9._-] become '_'.
std::string default_agent_state_dir(const std::string& name);

}  // namespace sonde::engine
