#pragma once
/// @file agent_commands.hpp
/// The agent commands of the control server (docs/agents.md, docs/control-protocol.md):
/// `agent_hello`, `report`, `info_reply` (spoken by `sonde agent`), `agents` and `agent`
/// (spoken by `sondectl`), over an agent_registry, plus the dead-man sweep timer.

#include <memory>

#include <asio/io_context.hpp>

#include "agents/agent_registry.hpp"
#include "control/control.hpp"

namespace sonde::engine {

namespace detail {
struct agent_service_state;
}

/// Registers the commands on `server` and sweeps `registry` every 250 ms. `server` and
/// `registry` must outlive it. Use from the io_context's thread.
class agent_service {
 public:
  agent_service(asio::io_context& io, control_server& server, agent_registry& registry);
  agent_service(const agent_service&) = delete;
  agent_service& operator=(const agent_service&) = delete;
  ~agent_service();
  /// Stop the sweep timer (before the io_context stops).
  void stop();

 private:
  std::shared_ptr<detail::agent_service_state> state_;
};

}  // namespace sonde::engine
