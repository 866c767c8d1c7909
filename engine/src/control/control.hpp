#pragma once
/// @file control.hpp
/// The control server: TCP (optionally TLS), one JSON object per line each way, commands
/// dispatched through a registry (`add_command`), results streamed to watchers through bounded
/// per-client queues. Runs on the engine's io_context thread. Protocol reference:
/// docs/control-protocol.md.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <asio/io_context.hpp>
#include <nlohmann/json.hpp>
#include <tl/expected.hpp>

#include "control/control_request.hpp"
#include "core/plugin_host.hpp"
#include "core/scheduler.hpp"
#include "core/task_set.hpp"

namespace sonde::engine {

/// How the control server listens and what it tolerates.
///
/// A connection is *authenticated* once it sent a request with the right token (or, without a
/// token, any well-formed request). Until then it is held to `auth_timeout`, and to the
/// unauthenticated limits: a new connection that would pass them closes the oldest
/// unauthenticated one instead of being refused, so connections that never speak cannot keep
/// `sondectl` or an agent out; authenticated clients are never closed to make room.
struct control_options {
  listen_address listen{"127.0.0.1", 6543};
  std::string token;             ///< required from every client when set
  std::size_t max_line = 65536;  ///< longest request line; longer ones get an error reply
  std::size_t max_clients = 512;
  std::size_t max_unauthenticated = 128;  ///< unauthenticated connections at once
  std::size_t max_per_address = 32;       ///< unauthenticated connections from one address
  /// From accept to the first authenticated request (TLS handshake included).
  std::chrono::milliseconds auth_timeout{10000};
  /// An authenticated client that is not watching and sends nothing this long is closed
  /// (0: never).
  std::chrono::milliseconds idle_timeout{600000};
  /// A change's reply waits for the disk at most this long, then goes out with a warning.
  std::chrono::milliseconds persist_wait{5000};
  std::size_t watch_queue = 1024;        ///< results queued per watcher before they are dropped
  std::size_t watch_queue_max = 100000;  ///< the largest "queue" a watcher may ask for
  /// Bytes queued for all clients together (results shared by several watchers count once per
  /// watcher); past it results are dropped for watchers (counted) instead of queued.
  std::size_t max_queued_bytes = std::size_t{256} << 20;
  std::string tls_cert, tls_key;  ///< PEM files: TLS on the control channel when both are set
};

/// A command's failure: a one-line message and optional details (e.g. every config error).
struct command_error {
  std::string message;
  std::vector<std::string> details;
};

/// What a command handler may see and change of the connection that sent the request.
class control_client {
 public:
  virtual ~control_client() = default;
  virtual std::uint64_t id() const = 0;
  virtual std::string peer() const = 0;
  /// Start streaming results that pass `filter`; `queue` caps the queued results (0: default).
  virtual void watch(watch_filter filter, std::size_t queue) = 0;
  virtual void unwatch() = 0;
  /// Queue an event line (a JSON object without "ok") for this connection, e.g. the agent
  /// protocol's {"event":"info","id":N} (docs/agents.md).
  virtual void send_event(const nlohmann::json& event) = 0;
  /// Close the connection once what is queued for it has been written.
  virtual void finish() = 0;
  /// Run `f` once when the connection is gone (for commands that remember connections).
  virtual void on_close(std::function<void()> f) = 0;
  /// Accept request lines up to `bytes` on this connection from now on.
  virtual void set_max_line(std::size_t bytes) = 0;
  /// Hold the reply to the request being handled until `wait` calls the function it is given
  /// (for commands that answer once their change is on disk). The connection takes no further
  /// request meanwhile, so replies stay in order. Fields of the object passed to that function
  /// are added to the reply (e.g. a "warning"); {"ok": false, "error": "..."} turns the reply
  /// into that error instead. Call at most once per request.
  using reply_amend = std::function<void(nlohmann::json extra)>;
  virtual void defer_reply(std::function<void(reply_amend)> wait) = 0;
};

/// Compare two secrets in time independent of where they differ (and of their lengths).
bool token_equal(std::string_view a, std::string_view b);

namespace detail {
struct control_core;
}

/// The control server. Not thread-safe: use from the io_context's thread.
class control_server {
 public:
  using handler = std::function<tl::expected<nlohmann::json, command_error>(
      control_client&, const control_request&)>;

  /// Registers the built-in commands. `tasks` and `sched` must outlive the server.
  control_server(asio::io_context& io, scheduler& sched, task_set& tasks,
                 const plugin_host& plugins, control_options opts);
  control_server(const control_server&) = delete;
  control_server& operator=(const control_server&) = delete;
  ~control_server();

  /// Refuse to listen beyond loopback without a token; load TLS files; bind and listen.
  /// Returns the bound address (the real port when 0 was asked for).
  tl::expected<listen_address, std::string> start();
  /// Called when a client sends `shutdown` (after its reply is queued).
  void on_shutdown(std::function<void()> f);
  /// Stop accepting, tell every client the engine is going away, flush what is queued, then
  /// close; `done` runs when all clients are gone or after `limit`.
  void close(std::function<void()> done,
             std::chrono::milliseconds limit = std::chrono::milliseconds(1000));
  /// Add or replace a command in the dispatch table. `help` is one line for `hello`.
  void add_command(std::string name, std::string help, handler h);
  /// The handler registered for `name` (empty if none), so a subsystem can extend a command
  /// (the agents add their section to `status`).
  handler command(const std::string& name) const;
  /// Connected clients.
  std::size_t client_count() const;
  /// The connected client with this id, or nullptr (valid until control returns to the loop).
  control_client* find_client(std::uint64_t id);
  /// Hand a result that did not come from the scheduler (an agent's) to the watchers.
  void publish(const result_record& r);
  /// Hand an alarm event (docs/alarms.md) to the watchers that asked for alarms.
  void publish_alarm(const nlohmann::json& event);

 private:
  std::shared_ptr<detail::control_core> core_;
};

}  // namespace sonde::engine
