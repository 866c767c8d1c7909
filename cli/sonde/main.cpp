// sonde: run a task file, run one probe (Nagios-plugin style), check a task file, list plugins.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <iostream>
#include <map>

#include <CLI/CLI.hpp>
#include <asio/co_spawn.hpp>
#include <asio/signal_set.hpp>

#include <sonde/version.hpp>
#include "agents/agent_commands.hpp"
#include "alarms/alarm_manager.hpp"
#include "alarms/commands.hpp"
#include "control/control.hpp"
#include "core/config.hpp"
#include "core/engine_info.hpp"
#include "core/output.hpp"
#include "core/plugin_host.hpp"
#include "core/scheduler.hpp"
#include "core/state.hpp"
#include "core/task_set.hpp"
#include "history/commands.hpp"
#include "history/sink.hpp"
#include "history/store.hpp"
#ifdef SONDE_WITH_MIMALLOC
#include <mimalloc.h>
#endif

#include "agent_cmd.hpp"
#include "notify_cmd.hpp"

using namespace sonde;
using namespace sonde::engine;

namespace {

constexpr int exit_usage = 3;

void print_errors(const std::vector<config_error>& errors, const std::string& file) {
  for (const auto& e : errors) std::fprintf(stderr, "%s\n", e.to_string().c_str());
  std::fprintf(stderr, "sonde: %zu error%s in %s; nothing was run\n", errors.size(),
               errors.size() == 1 ? "" : "s", file.c_str());
}

void load_plugins(plugin_host& host, const std::vector<std::string>& cli_dirs,
                  const std::vector<std::string>& config_dirs) {
  host.load_dirs(plugin_search_path(cli_dirs, config_dirs));
  for (const auto& p : host.problems())
    std::fprintf(stderr, "sonde: warning: %s\n", p.message.c_str());
}

// Leave the process without tearing down tens of thousands of tasks, the parsed task file and
// the plugins: the kernel reclaims it all. Sanitizer builds tear down normally so that ASan and
// LeakSanitizer still check shutdown.
[[noreturn]] void fast_exit(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
#if defined(__SANITIZE_ADDRESS__)
  std::exit(code);
#else
  std::_Exit(code);
#endif
}

// Both loading phases ([engine] first, since it may add plugin directories), errors printed.
std::optional<task_file> load_or_report(const std::string& file,
                                        const std::vector<std::string>& plugin_dirs,
                                        plugin_host& host) {
  auto f = read_engine_section(file, /*allow_pipe=*/true);
  if (!f) {
    print_errors(f.error(), file);
    return std::nullopt;
  }
  load_plugins(host, plugin_dirs, f->engine.plugin_dirs);
  auto tf = load_tasks(std::move(*f), host);
  if (!tf) {
    print_errors(tf.error(), file);
    return std::nullopt;
  }
  return std::move(*tf);
}

std::string unit_of(const sonde_probe_type* t, const std::string& metric) {
  if (metric == "latency") return "s";
  for (std::size_t i = 0; i < t->metric_count; ++i)
    if (metric_matches(t->metrics[i].name, metric)) {  // also cpu.<n>, hop.<n>.loss ...
      std::string_view u = t->metrics[i].unit;
      if (u == "s" || u == "%") return std::string(u);
      if (u == "bytes") return "B";
      return "";
    }
  return "";
}

// Counts results by reason for the --once summary.
struct reason_counter final : result_sink {
  std::uint64_t n[10] = {};
  void on_result(const result_record& r) override { ++n[static_cast<int>(r.why)]; }
  std::string text() const {
    std::string s;
    for (int i = 1; i < 10; ++i)
      if (n[i])
        s += (s.empty() ? "; reasons: " : ", ") + std::string(to_string(static_cast<reason>(i))) +
             " " + std::to_string(n[i]);
    return s;
  }
};

// ---- sonde run ------------------------------------------------------------------------------
int cmd_run(const std::string& file, bool once, bool quiet, const std::string& format,
            const std::vector<std::string>& plugin_dirs, const std::string& control_flag,
            const std::string& state_dir_flag) {
  plugin_host host;
  auto tf = load_or_report(file, plugin_dirs, host);
  if (!tf) return exit_usage;
  if (!once) tf->document.reset();  // a long run should not keep the parsed file around
  asio::io_context io(1);
  scheduler sched(io, tf->tasks, scheduler_options{tf->engine.max_in_flight, once});
  std::setvbuf(stdout, nullptr, _IOFBF, 1 << 16);
  json_sink js(stdout, !once);
  text_sink ts(stdout, !once, tf->tasks);
  reason_counter reasons;
  sched.add_sink(&reasons);
  if (!quiet) {
    if (format == "json")
      sched.add_sink(&js);
    else
      sched.add_sink(&ts);
  }

  // The control channel and its state (not with --once: that run ends by itself).
  std::optional<task_set> tasks;
  std::optional<alarms::alarm_manager> alarm_mgr;
  std::optional<history::store> hist;
  std::optional<history::history_sink> hist_sink;
  std::optional<control_server> control;
  // The central side of agents (docs/agents.md "The central"): on with the control channel.
  std::optional<agent_registry> agents;
  std::optional<agent_service> agent_cmds;
  std::function<void(const char*)> begin_stop;
  if (!once) {
    std::string state_dir = state_dir_flag.empty() ? default_state_dir(file) : state_dir_flag;
    tasks.emplace(sched, host, file, state_dir);
    if (auto st = tasks->load_state(); !st) {
      print_errors(st.error(), tasks->state_path());
      return exit_usage;
    }
    // Alarms and notifications (docs/alarms.md): judged over time, delivered through a durable
    // outbox in the state directory.
    alarms::alarm_manager_options ao;
    ao.state_dir = state_dir;
    ao.log = [](const std::string& l) { std::fprintf(stderr, "sonde: alarms: %s\n", l.c_str()); };
    if (tf->alarms.enabled) {
      alarm_mgr.emplace(io, sched, tf->alarms, ao);
      if (auto st = alarm_mgr->start(); !st) {
        std::fprintf(stderr, "sonde: alarms: %s\n", st.error().c_str());
        return exit_usage;
      }
      sched.add_sink(&*alarm_mgr);
      tasks->on_reload([&](const task_file& f) { alarm_mgr->reload(f.alarms); });
    }
    // History (docs/history.md): SQLite written by its own thread; the loop only queues.
    history::store_options hso;
    hso.path = tf->history.path.empty() ? state_dir + "/history.db" : tf->history.path;
    hso.settings = tf->history;
    hso.log = [](const std::string& l) { std::fprintf(stderr, "sonde: history: %s\n", l.c_str()); };
    hist.emplace(io, hso);
    // Once the file is open: the agents' stored queue positions (exactly-once across restarts),
    // or why history is refused. Runs on the loop, so after the registry below exists.
    hist->start([&](tl::expected<std::vector<history::agent_position>, std::string> r) {
      if (agents) agents->store_ready(std::move(r));
    });
    if (tf->history.enabled) {
      std::function<bool(const task_spec&)> in_maint;
      if (alarm_mgr) in_maint = [&](const task_spec& t) { return alarm_mgr->in_maintenance(t); };
      hist_sink.emplace(*hist, std::move(in_maint));
      sched.add_sink(&*hist_sink);
      if (alarm_mgr)
        alarm_mgr->on_event([&](const nlohmann::json& ev) { hist->add_alarm_event(ev); });
    }
    std::string listen = !control_flag.empty()         ? control_flag
                         : !tf->control.listen.empty() ? tf->control.listen
                                                       : std::string(control_default_listen);
    bool explicit_listen = !control_flag.empty() || !tf->control.listen.empty();
    if (listen != "off") {
      auto la = parse_listen_address(listen);
      if (!la) {
        std::fprintf(stderr, "sonde: --control: %s\n", la.error().c_str());
        return exit_usage;
      }
      control_options co;
      co.listen = *la;
      co.token = tf->control.token;
      if (co.token.empty())
        if (const char* env = std::getenv("SONDE_TOKEN"); env && *env) co.token = env;
      co.max_line = static_cast<std::size_t>(tf->control.max_line);
      co.max_clients = static_cast<std::size_t>(tf->control.max_clients);
      co.watch_queue = static_cast<std::size_t>(tf->control.watch_queue);
      co.max_unauthenticated = static_cast<std::size_t>(tf->control.max_unauthenticated);
      co.max_per_address = static_cast<std::size_t>(tf->control.max_per_address);
      co.auth_timeout = tf->control.auth_timeout;
      co.idle_timeout = tf->control.idle_timeout;
      co.tls_cert = tf->control.tls_cert;
      co.tls_key = tf->control.tls_key;
      bool tls = !co.tls_cert.empty();
      control.emplace(io, sched, *tasks, host, co);
      auto bound = control->start();
      if (!bound && explicit_listen) {
        std::fprintf(stderr, "sonde: control: %s\n", bound.error().c_str());
        return exit_usage;
      }
      if (!bound) {
        // The default address is taken (another engine?): run without the control channel.
        std::fprintf(stderr,
                     "sonde: warning: control: %s; running without the control channel "
                     "(choose another address with --control host:port)\n",
                     bound.error().c_str());
        control.reset();
      } else {
        std::fprintf(stderr, "sonde: control: listening on %s%s%s\n", bound->to_string().c_str(),
                     tls ? " (TLS)" : "", co.token.empty() ? "" : " (token required)");
        control->on_shutdown([&] { begin_stop("shutdown requested over the control channel"); });
        agent_registry_options aro;
        aro.state_dir = state_dir;
        aro.store = &*hist;  // agents' reports are stored whatever [history] enabled says
        agents.emplace(std::move(aro), [](const std::string& w) {
          std::fprintf(stderr, "sonde: warning: %s\n", w.c_str());
        });
        // Agents' results (task "<agent>/<task>") and dead-man changes ("agent:<name>") go to
        // the same output and watchers as local results.
        agents->on_result([&, quiet, json_out = format == "json"](const result_record& r) {
          if (!quiet) {
            if (json_out)
              js.on_result(r);
            else
              ts.on_result(r);
          }
          control->publish(r);
          if (alarm_mgr) alarm_mgr->on_result(r);
        });
        agent_cmds.emplace(io, *control, *agents);
        if (alarm_mgr) alarms::add_alarm_commands(*control, *alarm_mgr);
        history::add_history_commands(*control, *hist, tf->history);
      }
    }
  }

  asio::signal_set signals(io, SIGINT, SIGTERM);
  int signals_seen = 0;
  begin_stop = [&](const char* why) {
    if (sched.stopping()) return;
    duration max_timeout{0};  // tasks started over the control channel count too
    sched.for_each(
        [&](const scheduled_task& t) { max_timeout = std::max(max_timeout, t.spec().timeout); });
    auto grace = std::chrono::duration_cast<std::chrono::milliseconds>(max_timeout) +
                 std::chrono::milliseconds(1000);
    std::fprintf(stderr, "sonde: %s, finishing %lld in-flight probe%s\n", why,
                 static_cast<long long>(sched.stats().in_flight),
                 sched.stats().in_flight == 1 ? "" : "s");
    if (agent_cmds) agent_cmds->stop();
    if (alarm_mgr) alarm_mgr->stop();  // what is pending stays in the outbox for the next start
    sched.stop(
        [&] {
          if (control)
            control->close([&] { io.stop(); });
          else
            io.stop();
        },
        grace);
  };
  std::function<void(asio::error_code, int)> on_signal = [&](asio::error_code ec, int sig) {
    if (ec) return;
    if (++signals_seen == 1) {
      begin_stop(sig == SIGINT ? "SIGINT received" : "SIGTERM received");
      signals.async_wait(on_signal);
    } else {
      std::fprintf(stderr, "sonde: second signal, exiting now\n");
      io.stop();
    }
  };
  signals.async_wait(on_signal);
  if (once) sched.on_idle([&] { io.stop(); });

  std::size_t enabled = 0;
  sched.for_each([&](const scheduled_task& t) { enabled += t.spec().enabled && !t.paused(); });
  if (!once)
    std::fprintf(stderr, "sonde: running %zu task%s from %s%s (Ctrl-C to stop)\n", enabled,
                 enabled == 1 ? "" : "s", file.c_str(),
                 tasks && tasks->control_count() ? " and the control state" : "");
  sched.start();
  io.run();
  std::fflush(stdout);
  if (hist) hist->stop();  // commits what is queued

  const auto& st = sched.stats();
  if (!once) {
    std::fprintf(stderr, "sonde: stopped after %llu results\n",
                 static_cast<unsigned long long>(st.completed));
    return 0;
  }
  double wall = 0;
  if (st.first_start && st.last_done)
    wall = std::chrono::duration<double>(*st.last_done - *st.first_start).count();
  char line[256];
  std::snprintf(line, sizeof line,
                "summary: %llu results: %llu ok, %llu warning, %llu critical, %llu unknown; "
                "probing took %.6fs%s\n",
                static_cast<unsigned long long>(st.completed),
                static_cast<unsigned long long>(st.by_status[0]),
                static_cast<unsigned long long>(st.by_status[1]),
                static_cast<unsigned long long>(st.by_status[2]),
                static_cast<unsigned long long>(st.by_status[3]), wall, reasons.text().c_str());
  std::fputs(line, format == "json" ? stderr : stdout);
  status worst = status::ok;
  for (int s = 0; s < 4; ++s)
    if (st.by_status[s] && severity(static_cast<status>(s)) > severity(worst))
      worst = static_cast<status>(s);
  fast_exit(static_cast<int>(worst));  // skips tearing down the tasks and the parsed file
}

// ---- sonde probe ----------------------------------------------------------------------------
int cmd_probe(const std::string& type, const std::string& target,
              const std::vector<std::string>& sets, const std::string& timeout_text,
              const std::string& format, const std::vector<std::string>& warns,
              const std::vector<std::string>& crits, const std::vector<std::string>& plugin_dirs) {
  plugin_host host;
  load_plugins(host, plugin_dirs, {});
  const probe_type_entry* entry = host.find(type);
  if (!entry) {
    std::string known;
    for (auto& n : host.names()) known += (known.empty() ? "" : ", ") + n;
    auto sugg = closest(type, host.names());
    std::fprintf(stderr, "sonde: unknown probe type '%s'%s; available: %s\n", type.c_str(),
                 sugg.empty() ? "" : (" (did you mean '" + sugg + "'?)").c_str(),
                 known.empty() ? "none (no plugins found)" : known.c_str());
    return exit_usage;
  }
  auto timeout = parse_duration(timeout_text);
  if (!timeout || *timeout <= duration::zero()) {
    std::fprintf(stderr, "sonde: --timeout: %s\n",
                 timeout ? "must be positive" : timeout.error().c_str());
    return exit_usage;
  }
  task_spec spec;
  spec.name = "probe";
  spec.type = entry->type->name;
  spec.target = target;
  spec.timeout = *timeout;
  spec.interval = *timeout;
  spec.entry = entry;
  for (const auto& s : sets) {
    auto eq = s.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::fprintf(stderr, "sonde: --set expects key=value, got \"%s\"\n", s.c_str());
      return exit_usage;
    }
    std::string key = s.substr(0, eq), text = s.substr(eq + 1);
    auto v = option_from_text(*entry, key, text);
    if (!v) {
      std::fprintf(stderr, "sonde: --set %s\n", v.error().c_str());
      return exit_usage;
    }
    bool merged = false;
    for (auto& [k, old] : spec.options) {
      if (k != key) continue;
      auto* ol = std::get_if<std::vector<std::string>>(&old);
      auto* nl = std::get_if<std::vector<std::string>>(&*v);
      if (ol && nl)
        ol->insert(ol->end(), nl->begin(), nl->end());  // repeated --set appends
      else
        old = std::move(*v);
      merged = true;
    }
    if (!merged) spec.options.emplace_back(key, std::move(*v));
  }
  for (auto* list : {&warns, &crits}) {
    for (const auto& text : *list) {
      auto c = parse_condition_for(*entry, text);
      if (!c) {
        std::fprintf(stderr, "sonde: %s\n", c.error().c_str());
        return exit_usage;
      }
      (list == &warns ? spec.warn : spec.crit).push_back(std::move(*c));
    }
  }
  auto p = create_probe(*entry, target, spec.options, spec.timeout);
  if (!p) {
    const auto& e = p.error();
    std::fprintf(stderr, "sonde: %s%s%s\n", e.key.empty() || e.key == "target" ? "" : "option '",
                 e.key.empty() || e.key == "target" ? "" : (e.key + "': ").c_str(),
                 e.message.c_str());
    return exit_usage;
  }
  spec.probe = std::move(*p);

  asio::io_context io(1);
  std::optional<result_record> rec;
  struct ctx_t {
    task_spec* spec;
    std::optional<result_record>* rec;
  } ctx{&spec, &rec};
  auto dl = std::chrono::steady_clock::now() + *timeout;
  spec.probe->type()->run(
      spec.probe->handle(), &io,
      std::chrono::duration_cast<std::chrono::nanoseconds>(dl.time_since_epoch()).count(),
      [](void* user, const sonde_result* r) {
        auto* c = static_cast<ctx_t*>(user);
        *c->rec = evaluate(*c->spec, *r);
      },
      &ctx);
  io.run();
  if (!rec) {
    std::fprintf(stderr, "sonde: the probe produced no result\n");
    return 3;
  }
  if (format == "json") {
    std::printf("%s\n", to_json(*rec).c_str());
  } else {
    std::string upper = spec.type;
    for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    std::string msg = rec->message;
    if (rec->why != reason::none && rec->why != reason::condition)
      msg = std::string(to_string(rec->why)) + ": " + msg;
    std::string perf;
    auto add_perf = [&](const std::string& name, double v) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.9g", v);
      perf += (perf.empty() ? "" : " ") + name + "=" + buf + unit_of(spec.probe->type(), name);
    };
    if (rec->latency_ms) add_perf("latency", *rec->latency_ms / 1e3);
    for (auto& m : rec->metrics)
      if (m.name != "latency") add_perf(m.name, m.value);
    for (auto& c : msg)
      if (c == '|' || c == '\n') c = c == '|' ? '/' : ' ';  // keep Nagios output parseable
    std::printf("%s %s - %s: %s%s%s\n", upper.c_str(),
                std::string(status_label(rec->state)).c_str(), target.c_str(), msg.c_str(),
                perf.empty() ? "" : " | ", perf.c_str());
  }
  return static_cast<int>(rec->state);
}

// ---- sonde check ----------------------------------------------------------------------------
int cmd_check(const std::string& file, const std::vector<std::string>& plugin_dirs) {
  plugin_host host;
  auto tf = load_or_report(file, plugin_dirs, host);
  if (!tf) return exit_usage;
  std::map<std::string, int> per_type;
  std::size_t enabled = 0;
  for (auto& t : tf->tasks) {
    ++per_type[t.type];
    enabled += t.enabled;
  }
  std::string types;
  for (auto& [t, n] : per_type) types += (types.empty() ? "" : ", ") + t + " " + std::to_string(n);
  std::printf("%s: ok, %zu task%s (%zu enabled)%s%s\n", file.c_str(), tf->tasks.size(),
              tf->tasks.size() == 1 ? "" : "s", enabled, types.empty() ? "" : ": ", types.c_str());
  if (!tf->alarms.notifiers.empty() || !tf->alarms.maintenance.empty()) {
    std::string n;
    for (const auto& c : tf->alarms.notifiers)
      n += (n.empty() ? "" : ", ") + c.spec.name + " (" + c.spec.type + ")";
    std::printf("alarms: %zu notifier%s%s%s, %zu maintenance window%s\n",
                tf->alarms.notifiers.size(), tf->alarms.notifiers.size() == 1 ? "" : "s",
                n.empty() ? "" : ": ", n.c_str(), tf->alarms.maintenance.size(),
                tf->alarms.maintenance.size() == 1 ? "" : "s");
  }
  fast_exit(0);
}

// ---- sonde plugins --------------------------------------------------------------------------
int cmd_plugins(const std::string& describe, const std::vector<std::string>& plugin_dirs) {
  plugin_host host;
  host.load_dirs(plugin_search_path(plugin_dirs, {}));
  if (!describe.empty()) {
    const probe_type_entry* e = host.find(describe);
    if (!e) {
      auto sugg = closest(describe, host.names());
      std::fprintf(stderr, "sonde: unknown probe type '%s'%s\n", describe.c_str(),
                   sugg.empty() ? "" : (" (did you mean '" + sugg + "'?)").c_str());
      return exit_usage;
    }
    const auto* t = e->type;
    std::printf("%s: %s\n", t->name, t->summary);
    std::printf("  target:  %s\n", t->target_form);
    if (t->alias_count) {
      std::printf("  aliases:");
      for (std::size_t i = 0; i < t->alias_count; ++i) std::printf(" %s", t->aliases[i]);
      std::printf("\n");
    }
    std::printf("  plugin:  %s %s (%s)\n\noptions:\n", e->plugin->descriptor->name,
                e->plugin->descriptor->version, e->plugin->path.c_str());
    std::printf("  %-16s %-16s %-10s %s\n", "KEY", "TYPE", "DEFAULT", "DESCRIPTION");
    for (std::size_t i = 0; i < t->option_count; ++i) {
      const auto& o = t->options[i];
      std::string def = o.default_value && *o.default_value ? o.default_value : "-";
      std::printf("  %-16s %-16s %-10s %s\n", o.key,
                  std::string(to_string(static_cast<option_type>(o.type))).c_str(), def.c_str(),
                  o.help);
    }
    std::printf("\nmetrics:\n  %-20s %-6s %s\n", "NAME", "UNIT", "DESCRIPTION");
    for (std::size_t i = 0; i < t->metric_count; ++i)
      std::printf("  %-20s %-6s %s\n", t->metrics[i].name, t->metrics[i].unit, t->metrics[i].help);
    if (t->enum_count) {
      std::printf("\nnamed values:\n");
      for (std::size_t i = 0; i < t->enum_count; ++i)
        std::printf("  %s == %s (%g)\n", t->enums[i].metric, t->enums[i].name, t->enums[i].value);
    }
    return 0;
  }
  std::printf("search path:\n");
  for (const auto& d : host.searched())
    std::printf("  %-40s (%s)\n", d.path.c_str(), d.origin.c_str());
  std::printf("\nplugins:\n");
  if (host.plugins().empty()) std::printf("  (none found)\n");
  for (const auto& p : host.plugins()) {
    std::string types;
    for (std::size_t i = 0; i < p.descriptor->type_count; ++i) {
      const auto& t = p.descriptor->types[i];
      types += (types.empty() ? "" : ", ") + std::string(t.name);
      for (std::size_t a = 0; a < t.alias_count; ++a)
        types += std::string(" (alias ") + t.aliases[a] + ")";
    }
    std::printf("  %-10s %-8s %-12s %s\n", p.descriptor->name, p.descriptor->version, types.c_str(),
                p.path.c_str());
  }
  if (!host.problems().empty()) {
    std::printf("\nrefused:\n");
    for (const auto& p : host.problems()) std::printf("  %s\n", p.message.c_str());
  }
  if (!host.shadowed().empty()) {
    std::printf("\nshadowed (same file name found earlier in the search path):\n");
    for (const auto& p : host.shadowed()) std::printf("  %s\n", p.c_str());
  }
  return 0;
}

std::string allocator_name() {
#ifdef SONDE_WITH_MIMALLOC
  int v = mi_version();  // e.g. 209 for 2.0.9
  return "mimalloc " + std::to_string(v / 100) + "." + std::to_string(v / 10 % 10) + "." +
         std::to_string(v % 10);
#else
  return "libc malloc";
#endif
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sonde " SONDE_VERSION_STRING ": network and host monitoring engine"};
  app.set_version_flag("--version", std::string("sonde ") + SONDE_VERSION_STRING + "\nplugin ABI " +
                                        std::to_string(SONDE_PLUGIN_ABI_MAJOR) + "." +
                                        std::to_string(SONDE_PLUGIN_ABI_MINOR) + "\nfingerprint " +
                                        engine_fingerprint() + "\nallocator " + allocator_name());
  app.require_subcommand(1);
  app.footer("Exit codes: 0 ok, 1 warning, 2 critical, 3 unknown or usage/config error.");

  std::vector<std::string> plugin_dirs;
  std::string file, format = "text", type, target, timeout = "10s", describe;
  std::vector<std::string> sets, warns, crits;
  std::string control_flag, state_dir;
  bool once = false, quiet = false;
  auto add_plugin_dir = [&](CLI::App* sub) {
    sub->add_option("--plugin-dir", plugin_dirs,
                    "Directory to search for plugins first (repeatable)");
  };

  auto* run = app.add_subcommand("run", "Run a task file until stopped (or once with --once)");
  run->add_option("FILE", file, "Task file (TOML)")->required();
  run->add_flag("--once", once, "Run every task once, print a summary, exit with the worst status");
  run->add_option("--format", format, "Output format")->check(CLI::IsMember({"text", "json"}));
  run->add_flag("--quiet", quiet, "With --once: print only the summary line");
  run->add_option("--control", control_flag,
                  "Control channel address host:port, or off (default [control] listen, else "
                  "127.0.0.1:6543)");
  run->add_option("--state-dir", state_dir,
                  "Where tasks started or stopped over the control channel are kept (default "
                  "FILE's directory/<FILE stem>.state)");
  add_plugin_dir(run);

  auto* probe =
      app.add_subcommand("probe", "Run one probe and exit with its status (Nagios plugin)");
  probe->add_option("TYPE", type, "Probe type, e.g. tcp, udp, icmp")->required();
  probe->add_option("TARGET", target, "Target, e.g. 127.0.0.1:80")->required();
  probe->add_option("--set", sets,
                    "Probe option key=value (repeatable; lists are comma-separated)");
  probe->add_option("--timeout", timeout, "Deadline for the probe (default 10s)");
  probe->add_option("--warn", warns, "Warning condition, e.g. \"latency > 200ms\" (repeatable)");
  probe->add_option("--crit", crits, "Critical condition (repeatable)");
  probe->add_option("--format", format, "Output format")->check(CLI::IsMember({"text", "json"}));
  add_plugin_dir(probe);

  auto* check = app.add_subcommand("check", "Validate a task file without running it");
  check->add_option("FILE", file, "Task file (TOML)")->required();
  add_plugin_dir(check);

  auto* plugins =
      app.add_subcommand("plugins", "List discovered plugins, or describe a probe type");
  plugins->add_option("--describe", describe, "Show the options and metrics of TYPE");
  add_plugin_dir(plugins);

  std::string notify_name, notify_file;
  auto* notify_test =
      app.add_subcommand("notify-test", "Send a test message through a notifier of a task file");
  notify_test->add_option("NOTIFIER", notify_name, "The notifier's name")->required();
  notify_test->add_option("FILE", notify_file, "Task file (TOML) that defines it")->required();
  add_plugin_dir(notify_test);

  auto run_agent = sonde::cli::add_agent_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : exit_usage;
  }
  std::signal(SIGPIPE, SIG_IGN);
  try {
    if (*run) return cmd_run(file, once, quiet, format, plugin_dirs, control_flag, state_dir);
    if (*probe) return cmd_probe(type, target, sets, timeout, format, warns, crits, plugin_dirs);
    if (*check) return cmd_check(file, plugin_dirs);
    if (*notify_test) {
      // Either order: the argument that is a file is the task file.
      std::string name = notify_name, tasks = notify_file;
      if (::access(name.c_str(), R_OK) == 0 && ::access(tasks.c_str(), R_OK) != 0)
        std::swap(name, tasks);
      plugin_host host;
      auto tf = load_or_report(tasks, plugin_dirs, host);
      if (!tf) return exit_usage;
      return sonde::cli::notify_test(tf->alarms, name, tasks);
    }
    if (*plugins) return cmd_plugins(describe, plugin_dirs);
    if (app.got_subcommand("agent")) return run_agent();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sonde: error: %s\n", e.what());
    return 3;
  }
  return exit_usage;
}
