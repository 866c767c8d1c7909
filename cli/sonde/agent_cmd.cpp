// sonde agent: run a `system` task (and any --tasks) on this host and push every result to a
// central engine through the bounded on-disk queue (engine/agent.hpp, docs/agents.md).
#include "agent_cmd.hpp"

#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>

#include <sonde/duration.hpp>
#include "agents/agent.hpp"
#include "agents/agent_queue.hpp"
#include "core/config.hpp"
#include "core/plugin_host.hpp"
#include "core/scheduler.hpp"

namespace sonde::cli {

using namespace sonde::engine;

namespace {

constexpr int exit_usage = 3;

struct agent_flags {
  std::string server, interval = "5s", token, key, key_file, name, tasks_file, state_dir, queue_max,
                      retry_max = "30s";
  std::vector<std::string> plugin_dirs;
};

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) return "localhost";
  return buf;
}

std::string size_text(std::uint64_t b) {
  char buf[32];
  if (b % (1ull << 20) == 0)
    std::snprintf(buf, sizeof buf, "%lluMB", static_cast<unsigned long long>(b >> 20));
  else
    std::snprintf(buf, sizeof buf, "%lluKB", static_cast<unsigned long long>(b >> 10));
  return buf;
}

// The key file holds the key on its first line (surrounding white space ignored).
tl::expected<std::string, std::string> read_key_file(const std::string& path) {
  std::FILE* fp = std::fopen(path.c_str(), "rb");
  if (!fp) return tl::unexpected(": cannot read: " + std::string(std::strerror(errno)));
  char buf[1024];
  std::size_t n = std::fread(buf, 1, sizeof buf, fp);
  std::fclose(fp);
  std::string text(buf, n);
  text = text.substr(0, text.find('\n'));
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  std::size_t b = 0;
  while (b < text.size() && std::isspace(static_cast<unsigned char>(text[b]))) ++b;
  text.erase(0, b);
  if (text.empty()) return tl::unexpected(std::string(": the file's first line is empty"));
  return text;
}

int run_agent(const agent_flags& f) {
  // Settings.
  agent_options ao;
  ao.name = f.name.empty() ? host_name() : f.name;
  auto server = parse_listen_address(f.server);
  if (!server || server->port == 0) {
    std::fprintf(stderr, "sonde: agent: --server %s: %s\n", f.server.c_str(),
                 server ? "a port is required" : server.error().c_str());
    return exit_usage;
  }
  ao.server = *server;
  auto interval = parse_duration(f.interval);
  if (!interval || *interval < std::chrono::milliseconds(100)) {
    std::fprintf(stderr, "sonde: agent: --interval: %s\n",
                 interval ? "must be at least 100ms" : interval.error().c_str());
    return exit_usage;
  }
  ao.interval = std::chrono::duration_cast<std::chrono::milliseconds>(*interval);
  auto retry_max = parse_duration(f.retry_max);
  if (!retry_max || *retry_max < std::chrono::milliseconds(100)) {
    std::fprintf(stderr, "sonde: agent: --retry-max: %s\n",
                 retry_max ? "must be at least 100ms" : retry_max.error().c_str());
    return exit_usage;
  }
  ao.retry_max = std::chrono::duration_cast<std::chrono::milliseconds>(*retry_max);
  ao.token = f.token;
  if (ao.token.empty())
    if (const char* env = std::getenv("SONDE_TOKEN"); env && *env) ao.token = env;
  // The agent's key: --key, else --key-file, else $SONDE_AGENT_KEY.
  if (!f.key.empty() && !f.key_file.empty()) {
    std::fprintf(stderr, "sonde: agent: give --key or --key-file, not both\n");
    return exit_usage;
  }
  ao.key = f.key;
  if (!f.key_file.empty()) {
    auto k = read_key_file(f.key_file);
    if (!k) {
      std::fprintf(stderr, "sonde: agent: --key-file %s\n", k.error().c_str());
      return exit_usage;
    }
    ao.key = *k;
  }
  if (ao.key.empty())
    if (const char* env = std::getenv("SONDE_AGENT_KEY"); env && *env) ao.key = env;
  if (!ao.key.empty()) {
    bool printable = ao.key.size() <= 256;
    for (unsigned char c : ao.key) printable = printable && c > 0x20 && c < 0x7f;
    if (!printable) {
      std::fprintf(stderr,
                   "sonde: agent: the key must be 1 to 256 printable ASCII characters without "
                   "spaces\n");
      return exit_usage;
    }
  }
  agent_queue_options qo;
  if (!f.queue_max.empty()) {
    auto q = parse_queue_max(f.queue_max);
    if (!q) {
      std::fprintf(stderr, "sonde: agent: %s\n", q.error().c_str());
      return exit_usage;
    }
    qo = *q;
  }

  // Tasks: the built-in `system` task plus the task file's.
  plugin_host host;
  std::vector<task_spec> tasks;
  std::vector<std::string> config_dirs;
  std::optional<task_file> phase1;
  if (!f.tasks_file.empty()) {
    auto tf = read_engine_section(f.tasks_file);
    if (!tf) {
      for (const auto& e : tf.error()) std::fprintf(stderr, "%s\n", e.to_string().c_str());
      return exit_usage;
    }
    config_dirs = tf->engine.plugin_dirs;
    phase1 = std::move(*tf);
  }
  host.load_dirs(plugin_search_path(f.plugin_dirs, config_dirs));
  for (const auto& p : host.problems())
    std::fprintf(stderr, "sonde: warning: %s\n", p.message.c_str());
  std::int64_t max_in_flight = 1000;
  if (phase1) {
    auto tf = load_tasks(std::move(*phase1), host);
    if (!tf) {
      for (const auto& e : tf.error()) std::fprintf(stderr, "%s\n", e.to_string().c_str());
      std::fprintf(stderr, "sonde: agent: %zu error%s in %s; nothing was run\n", tf.error().size(),
                   tf.error().size() == 1 ? "" : "s", f.tasks_file.c_str());
      return exit_usage;
    }
    max_in_flight = tf->engine.max_in_flight;
    tasks = std::move(tf->tasks);
  }
  bool file_has_system = false;
  for (const auto& t : tasks) file_has_system |= t.name == "system";
  if (!file_has_system) {
    const probe_type_entry* entry = host.find("system");
    if (!entry) {
      std::fprintf(stderr,
                   "sonde: agent: the system probe is not available (no sonde-system plugin in "
                   "the search path; see `sonde plugins`)\n");
      return exit_usage;
    }
    task_spec sys;
    sys.name = "system";
    sys.type = entry->type->name;
    sys.target = "localhost";
    sys.interval = *interval;
    sys.timeout = std::min<duration>(*interval, std::chrono::seconds(10));
    sys.entry = entry;
    if (sys.timeout <= std::chrono::milliseconds(500)) {
      // The first run measures over `sample` (250ms by default), which must fit the timeout.
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(sys.timeout).count() / 2;
      if (auto v = option_from_text(*entry, "sample", std::to_string(ms) + "ms"))
        sys.options.emplace_back("sample", std::move(*v));
    }
    auto p = create_probe(*entry, sys.target, sys.options, sys.timeout);
    if (!p) {
      std::fprintf(stderr, "sonde: agent: system probe: %s\n", p.error().message.c_str());
      return exit_usage;
    }
    sys.probe = std::move(*p);
    tasks.insert(tasks.begin(), std::move(sys));
  }

  // The queue.
  std::string state_dir = f.state_dir.empty() ? default_agent_state_dir(ao.name) : f.state_dir;
  auto queue = agent_queue::open(state_dir, qo);
  if (!queue) {
    std::fprintf(stderr, "sonde: agent: %s\n", queue.error().c_str());
    return exit_usage;
  }
  agent_queue& q = **queue;

  asio::io_context io(1);
  scheduler sched(io, tasks, scheduler_options{max_in_flight, false});
  agent ag(io, q, ao);
  sched.add_sink(&ag);

  std::size_t enabled = 0;
  duration max_timeout{0};
  for (const auto& t : tasks) {
    enabled += t.enabled;
    max_timeout = std::max(max_timeout, t.timeout);
  }
  auto grace = std::chrono::duration_cast<std::chrono::milliseconds>(max_timeout) +
               std::chrono::milliseconds(1000);
  bool stopping = false;
  auto shutdown = [&](const std::string& why) {
    if (stopping) return;
    stopping = true;
    if (!why.empty()) std::fprintf(stderr, "agent: %s, stopping\n", why.c_str());
    ag.stop();
    sched.stop(
        [&] {
          ag.flush();  // results of the probes that were in flight
          io.stop();
        },
        grace);
  };
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](asio::error_code ec, int sig) {
    if (ec) return;
    shutdown(sig == SIGINT ? "SIGINT received" : "SIGTERM received");
    signals.async_wait([&](asio::error_code ec2, int) {
      if (!ec2) io.stop();  // a second signal: leave now (the queue is synced below)
    });
  });
  ag.on_disconnect([&](const std::string&) { shutdown(""); });

  std::fprintf(stderr,
               "agent: %s reporting to %s every %s (%zu task%s); queue %s: %zu result%s waiting, "
               "bound %llu results or %s\n",
               ao.name.c_str(), ao.server.to_string().c_str(), f.interval.c_str(), enabled,
               enabled == 1 ? "" : "s", q.dir().c_str(), q.size(), q.size() == 1 ? "" : "s",
               static_cast<unsigned long long>(qo.max_records), size_text(qo.max_bytes).c_str());
  ag.start();
  sched.start();
  io.run();
  ag.flush();
  std::fprintf(stderr, "agent: stopped; %zu result%s queued in %s, %llu dropped in all\n", q.size(),
               q.size() == 1 ? "" : "s", q.dir().c_str(),
               static_cast<unsigned long long>(q.dropped()));
  return 0;
}

}  // namespace

std::function<int()> add_agent_command(CLI::App& app) {
  auto f = std::make_shared<agent_flags>();
  auto* sub = app.add_subcommand(
      "agent", "Collect this host's metrics and push them to a central engine (docs/agents.md)");
  sub->add_option("--server", f->server, "The central engine's control address host:port")
      ->required();
  sub->add_option("--interval", f->interval, "How often the system task runs (default 5s)");
  sub->add_option("--token", f->token, "Token the central requires (default $SONDE_TOKEN)");
  sub->add_option("--key", f->key,
                  "This agent's key, as listed for its name in the central's agent-keys file "
                  "(default $SONDE_AGENT_KEY); prefer --key-file: arguments are visible to "
                  "other users");
  sub->add_option("--key-file", f->key_file, "File whose first line is this agent's key");
  sub->add_option("--name", f->name, "The name this agent reports as (default the host name)");
  sub->add_option("--tasks", f->tasks_file, "Task file (TOML) of further local tasks");
  sub->add_option("--state-dir", f->state_dir,
                  "Directory of the on-disk queue (default $STATE_DIRECTORY/agent-NAME, "
                  "/var/lib/sonde/agent-NAME or $XDG_STATE_HOME/sonde/agent-NAME)");
  sub->add_option("--queue-max", f->queue_max,
                  "Queue bound: results, size, or both, e.g. 100000,64MB (the default); the "
                  "oldest are dropped and counted beyond it");
  sub->add_option("--retry-max", f->retry_max,
                  "Longest delay between reconnection attempts (default 30s)");
  sub->add_option("--plugin-dir", f->plugin_dirs,
                  "Directory to search for plugins first (repeatable)");
  return [f] { return run_agent(*f); };
}

}  // namespace sonde::cli
