#pragma once
// `sonde agent`: collect this host's metrics (and optional local tasks) and push the results to
// a central engine through a bounded on-disk queue. See docs/agents.md.

#include <functional>

namespace CLI {
class App;
}

namespace sonde::cli {

/// Add the `agent` subcommand to `app`; the returned function runs it once the command line
/// has been parsed and the subcommand was chosen. Returns the process exit code.
std::function<int()> add_agent_command(CLI::App& app);

}  // namespace sonde::cli
