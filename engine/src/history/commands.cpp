// The history commands. See commands.hpp.
#include "history/commands.hpp"

#include "core/rfc3339.hpp"
#include "history/query.hpp"

namespace sonde::engine::history {

using json = nlohmann::json;
using result = tl::expected<json, command_error>;

namespace {

result fail(std::string m) {
  return tl::unexpected(command_error{std::move(m), {}});
}

std::int64_t now_ms() {
  return to_epoch_ms(std::chrono::system_clock::now());
}

// Strings from "task" (one) or "tasks" (an array).
tl::expected<std::vector<std::string>, std::string> task_list(const json& b) {
  std::vector<std::string> out;
  if (auto t = b.find("task"); t != b.end() && !t->is_null()) {
    if (!t->is_string() || t->get_ref<const std::string&>().empty())
      return tl::unexpected(std::string("\"task\" must be a task name"));
    out.push_back(*t);
  }
  if (auto t = b.find("tasks"); t != b.end() && !t->is_null()) {
    if (!t->is_array() || t->size() > 10000)
      return tl::unexpected(std::string("\"tasks\" must be an array of task names"));
    for (const auto& e : *t) {
      if (!e.is_string()) return tl::unexpected(std::string("\"tasks\" must hold strings"));
      out.push_back(e);
    }
  }
  return out;
}

tl::expected<std::string, std::string> opt_string(const json& b, const char* key,
                                                  std::string dflt) {
  auto it = b.find(key);
  if (it == b.end() || it->is_null()) return dflt;
  if (!it->is_string() || it->get_ref<const std::string&>().empty())
    return tl::unexpected(std::string("\"") + key + "\" must be a non-empty string");
  return it->get<std::string>();
}

// Run `q` on the reader thread and answer the request with its reply.
template <class Q>
result deferred(control_client& c, store& s, Q q) {
  c.defer_reply([&s, q = std::move(q)](control_client::reply_amend done) mutable {
    s.read(std::move(q), [done = std::move(done)](tl::expected<json, std::string> r) {
      if (!r)
        done(json{{"ok", false}, {"error", r.error()}});
      else
        done(std::move(*r));
    });
  });
  return json::object();
}

}  // namespace

tl::expected<std::int64_t, std::string> parse_when(const json& v, const char* key,
                                                   std::int64_t now) {
  if (!v.is_string())
    return tl::unexpected(std::string("\"") + key +
                          "\" must be a duration back from now (\"10m\") or an RFC 3339 time");
  const auto& text = v.get_ref<const std::string&>();
  if (text == "now") return now;
  if (auto d = window_seconds(text)) return now - *d * 1000;
  if (auto t = parse_rfc3339(text, rfc3339_zone::required_any)) return to_epoch_ms(*t);
  return tl::unexpected(std::string("\"") + key + "\": '" + text +
                        "' is neither a duration (\"10m\", \"7d\") nor an RFC 3339 time with a "
                        "zone (\"2026-12-01T00:00:00Z\")");
}

void add_history_commands(control_server& server, store& s, const history_settings& settings) {
  auto window =
      [](const json& b, std::string dflt_since,
         std::int64_t now) -> tl::expected<std::pair<std::int64_t, std::int64_t>, std::string> {
    json since = b.contains("since") && !b["since"].is_null() ? b["since"] : json(dflt_since);
    json until = b.contains("until") && !b["until"].is_null() ? b["until"] : json("now");
    auto a = parse_when(since, "since", now);
    if (!a) return tl::unexpected(a.error());
    auto z = parse_when(until, "until", now);
    if (!z) return tl::unexpected(z.error());
    if (*z <= *a) return tl::unexpected(std::string("\"until\" must be after \"since\""));
    return std::pair{*a, *z};
  };

  server.add_command("history", "a task's series of a metric: task, metric, since, until, step",
                     [&s, settings, window](control_client& c, const control_request& r) -> result {
                       const json& b = r.body;
                       auto task = opt_string(b, "task", "");
                       if (!task) return fail(task.error());
                       if (task->empty())
                         return fail("\"task\" is required: the task whose history to show");
                       auto metric = opt_string(b, "metric", "latency");
                       if (!metric) return fail(metric.error());
                       auto now = now_ms();
                       auto w = window(b, "1h", now);
                       if (!w) return fail(w.error());
                       series_query q;
                       q.task = *task;
                       q.metric = *metric;
                       q.since = w->first;
                       q.until = w->second;
                       if (auto st = b.find("step"); st != b.end() && !st->is_null()) {
                         if (!st->is_string()) return fail("\"step\" must be a duration (\"5m\")");
                         auto sec = window_seconds(*st);
                         if (!sec) return fail("\"step\" " + sec.error());
                         q.step_s = *sec;
                       }
                       return deferred(c, s, [q, settings, now](sqlite3* db) {
                         return query_series(db, q, settings, now);
                       });
                     });

  server.add_command(
      "uptime", "uptime % per task over windows (1h, 24h, 7d, 30d, 1y): task(s), windows",
      [&s, settings](control_client& c, const control_request& r) -> result {
        auto tasks = task_list(r.body);
        if (!tasks) return fail(tasks.error());
        uptime_query q;
        q.tasks = std::move(*tasks);
        if (auto w = r.body.find("windows"); w != r.body.end() && !w->is_null()) {
          if (!w->is_array() || w->empty() || w->size() > 20)
            return fail("\"windows\" must be an array of 1 to 20 durations, e.g. [\"1h\",\"7d\"]");
          q.windows.clear();
          for (const auto& e : *w) {
            if (!e.is_string()) return fail("\"windows\" must hold durations (\"24h\")");
            if (auto sec = window_seconds(e); !sec) return fail("window " + sec.error());
            q.windows.push_back(e);
          }
        }
        auto now = now_ms();
        return deferred(
            c, s, [q, settings, now](sqlite3* db) { return query_uptime(db, q, settings, now); });
      });

  server.add_command("percentiles",
                     "latency (or a metric's) percentiles over a window: task(s), metric, since",
                     [&s, settings, window](control_client& c, const control_request& r) -> result {
                       auto tasks = task_list(r.body);
                       if (!tasks) return fail(tasks.error());
                       auto metric = opt_string(r.body, "metric", "latency");
                       if (!metric) return fail(metric.error());
                       auto now = now_ms();
                       auto w = window(r.body, "24h", now);
                       if (!w) return fail(w.error());
                       percentile_query q;
                       q.tasks = std::move(*tasks);
                       q.metric = *metric;
                       q.since = w->first;
                       q.until = w->second;
                       return deferred(c, s, [q, settings, now](sqlite3* db) {
                         return query_percentiles(db, q, settings, now);
                       });
                     });

  server.add_command(
      "incidents", "alarms that fired: start, end, duration, severity, reason (task, since)",
      [&s, window](control_client& c, const control_request& r) -> result {
        auto task = opt_string(r.body, "task", "");
        if (!task) return fail(task.error());
        auto now = now_ms();
        auto w = window(r.body, "30d", now);
        if (!w) return fail(w.error());
        incident_query q;
        q.task = *task;
        q.since = w->first;
        q.until = w->second;
        if (auto l = r.body.find("limit"); l != r.body.end() && !l->is_null()) {
          if (!l->is_number_integer() || *l < 1 || *l > 10000)
            return fail("\"limit\" must be a whole number from 1 to 10000");
          q.limit = l->get<std::size_t>();
        }
        return deferred(c, s, [q, now](sqlite3* db) { return query_incidents(db, q, now); });
      });

  if (auto base = server.command("status"))
    server.add_command("status", "uptime, task counts, in-flight probes, alarms, history",
                       [base, &s](control_client& c, const control_request& r) -> result {
                         auto out = base(c, r);
                         if (out && out->is_object()) (*out)["history"] = s.status();
                         return out;
                       });
}

}  // namespace sonde::engine::history
