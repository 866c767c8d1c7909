#include "history.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "text.hpp"

namespace sonde::sondectl {

using json = nlohmann::json;

namespace {

std::string printf_text(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

// A value of the series' metric: milliseconds with 3 decimals, other metrics with 6 digits.
std::string value_text(const json& v, bool ms) {
  if (!v.is_number()) return "-";
  return printf_text(ms ? "%.3f" : "%.6g", v.get<double>());
}

std::string count_text(const json& v) {
  return v.is_number() ? std::to_string(v.get<std::uint64_t>()) : "-";
}

// 99.982%: truncated, not rounded, so that anything short of 100 never reads as 100.
std::string percent_text(const json& v) {
  if (!v.is_number()) return "-";
  double p = v.get<double>();
  if (p >= 100) return "100%";
  if (p <= 0) return "0%";
  return printf_text("%.3f%%", std::floor(p * 1000) / 1000);
}

// "2026-12-03T16:46:00.000Z" -> "2026-12-03T16:46:00Z" (whole seconds lose nothing).
std::string time_text(const json& v, bool keep_ms) {
  if (!v.is_string()) return "-";
  std::string t = v.get<std::string>();
  auto dot = t.find('.');
  if (dot != std::string::npos && t.size() > dot + 1 && t.back() == 'Z' &&
      (!keep_ms || t.compare(dot, 5, ".000") == 0))
    t = t.substr(0, dot) + "Z";
  return t;
}

// 3m12s, 2h5m0s, 1d3h0m0s, 45s.
std::string human_seconds(const json& v) {
  if (!v.is_number()) return "-";
  auto s = static_cast<long long>(std::llround(std::max(0.0, v.get<double>())));
  long long d = s / 86400, h = s % 86400 / 3600, m = s % 3600 / 60, sec = s % 60;
  std::string out;
  if (d) out += std::to_string(d) + "d";
  if (d || h) out += std::to_string(h) + "h";
  if (d || h || m) out += std::to_string(m) + "m";
  if (!d) out += std::to_string(sec) + "s";
  return out;
}

std::string seconds_step(const json& v) {
  if (!v.is_number()) return "-";
  auto s = v.get<long long>();
  if (s % 86400 == 0) return std::to_string(s / 86400) + "d";
  if (s % 3600 == 0) return std::to_string(s / 3600) + "h";
  if (s % 60 == 0) return std::to_string(s / 60) + "m";
  return std::to_string(s) + "s";
}

// Columns sized to their content; numbers right-aligned; the last column unpadded.
struct table {
  std::vector<std::string> head;
  std::vector<bool> right;
  std::vector<std::vector<std::string>> rows;

  void print() const {
    std::vector<std::size_t> w(head.size());
    for (std::size_t i = 0; i < head.size(); ++i) w[i] = head[i].size();
    for (const auto& r : rows)
      for (std::size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], r[i].size());
    auto line = [&](const std::vector<std::string>& r) {
      std::string out;
      for (std::size_t i = 0; i < r.size(); ++i) {
        bool last = i + 1 == r.size();
        std::size_t pad = r[i].size() < w[i] ? w[i] - r[i].size() : 0;
        bool to_right = i < right.size() && right[i];
        if (to_right) out.append(pad, ' ');
        out += r[i];
        if (!to_right && !last) out.append(pad, ' ');
        if (!last) out += "  ";
      }
      while (!out.empty() && out.back() == ' ') out.pop_back();
      std::printf("%s\n", out.c_str());
    };
    line(head);
    for (const auto& r : rows) line(r);
  }
};

// ---- history ----------------------------------------------------------------------------
void show_history(const json& r) {
  bool ms = text(r, "unit", "") == "ms";
  std::string level = text(r, "level");
  const auto& pts = r["points"];
  std::string step = level == "raw" ? "every result" : seconds_step(r["step_s"]);
  std::printf("task %s (%s %s), metric %s%s, level %s, step %s, %s to %s: %zu point%s\n",
              text(r, "task").c_str(), text(r, "type").c_str(), text(r, "target").c_str(),
              text(r, "metric").c_str(), ms ? " (ms)" : "", level.c_str(), step.c_str(),
              time_text(r["since"], false).c_str(), time_text(r["until"], false).c_str(),
              pts.size(), pts.size() == 1 ? "" : "s");
  if (r.contains("note")) std::printf("note: %s\n", text(r, "note").c_str());
  if (pts.empty()) {
    std::printf("no results in this window\n");
    return;
  }
  table t;
  if (level == "raw") {
    t.head = {"TIME", "STATUS", "VALUE", "REASON", "MESSAGE"};
    t.right = {false, false, true, false, false};
    for (const auto& p : pts) {
      std::string v = value_text(p["value"], ms);
      if (ms && v != "-") v += " ms";
      t.rows.push_back({time_text(p["t"], true), upper(text(p, "status")), v, text(p, "reason"),
                        text(p, "message", "")});
    }
  } else {
    bool maint = false;
    for (const auto& p : pts) maint = maint || p.value("maintenance", 0) > 0;
    t.head = {"TIME", "N", "UP%", "OK", "WARN", "CRIT", "UNK"};
    if (maint) t.head.push_back("MAINT");
    for (const char* h : {"MIN", "AVG", "MAX", "P50", "P90", "P99"}) t.head.push_back(h);
    t.right.assign(t.head.size(), true);
    t.right[0] = false;
    for (const auto& p : pts) {
      auto c = [&](const char* k) { return p.value(k, std::uint64_t{0}); };
      std::uint64_t up = c("ok") + c("warning"), judged = up + c("critical");
      json pct =
          judged ? json(100.0 * static_cast<double>(up) / static_cast<double>(judged)) : json();
      std::vector<std::string> row = {time_text(p["t"], false), count_text(p["n"]),
                                      percent_text(pct),        count_text(p["ok"]),
                                      count_text(p["warning"]), count_text(p["critical"]),
                                      count_text(p["unknown"])};
      if (maint) row.push_back(count_text(p["maintenance"]));
      for (const char* k : {"min", "avg", "max", "p50", "p90", "p99"})
        row.push_back(value_text(p[k], ms));
      t.rows.push_back(std::move(row));
    }
  }
  t.print();
}

// ---- uptime -----------------------------------------------------------------------------
void show_uptime(const json& r) {
  const auto& tasks = r["tasks"];
  if (tasks.empty()) {
    std::printf("no history yet\n");
    return;
  }
  table t;
  t.head = {"TASK"};
  t.right = {false};
  for (const auto& w : r["windows"]) {
    t.head.push_back(w.get<std::string>());
    t.right.push_back(true);
  }
  for (const auto& task : tasks) {
    std::vector<std::string> row = {text(task, "task")};
    for (const auto& w : r["windows"]) {
      const json& ws = task["windows"];
      auto it = ws.find(w.get<std::string>());
      row.push_back(it == ws.end() ? "-" : percent_text((*it)["uptime"]));
    }
    t.rows.push_back(std::move(row));
  }
  t.print();
}

// ---- percentiles ------------------------------------------------------------------------
void show_percentiles(const json& r) {
  std::string metric = text(r, "metric");
  bool ms = metric == "latency";
  std::string err = r["relative_error"].is_number()
                        ? printf_text("%g%%", r["relative_error"].get<double>() * 100)
                        : std::string("-");
  std::printf("%s%s from %s to %s (quantiles within %s)\n", metric.c_str(), ms ? " in ms" : "",
              time_text(r["since"], false).c_str(), time_text(r["until"], false).c_str(),
              err.c_str());
  const auto& tasks = r["tasks"];
  if (tasks.empty()) {
    std::printf("no results in this window\n");
    return;
  }
  table t;
  t.head = {"TASK", "N", "MIN", "AVG", "P50", "P90", "P95", "P99", "P99.9", "MAX"};
  t.right.assign(t.head.size(), true);
  t.right[0] = false;
  for (const auto& task : tasks) {
    std::vector<std::string> row = {text(task, "task"), count_text(task["n"])};
    for (const char* k : {"min", "avg", "p50", "p90", "p95", "p99", "p99.9", "max"})
      row.push_back(value_text(task.contains(k) ? task[k] : json(), ms));
    t.rows.push_back(std::move(row));
  }
  t.print();
}

// ---- incidents --------------------------------------------------------------------------
void show_incidents(const json& r) {
  const auto& list = r["incidents"];
  if (list.empty()) {
    std::printf("no incidents from %s to %s\n", time_text(r["since"], false).c_str(),
                time_text(r["until"], false).c_str());
    return;
  }
  table t;
  t.head = {"START", "END", "DURATION", "TASK", "SEVERITY", "REASON", "MESSAGE"};
  t.right = {false, false, true, false, false, false, false};
  for (const auto& i : list) {
    std::string end = i["end"].is_null() ? "ongoing" : time_text(i["end"], false);
    if (i["end"].is_null() && i.value("acknowledged", false)) end += " (acked)";
    std::string sev = text(i, "severity");
    if (i.value("flapping", false)) sev += " (flapping)";
    t.rows.push_back({time_text(i["start"], false), end, human_seconds(i["duration_s"]),
                      text(i, "task"), sev, text(i, "reason"), text(i, "message", "")});
  }
  t.print();
}

std::string bytes_text(const json& b) {
  if (!b.is_number()) return "-";
  double v = b.get<double>();
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace

std::string history_status_text(const json& status_reply) {
  auto it = status_reply.find("history");
  if (it == status_reply.end() || !it->is_object()) return "";
  const json& h = *it;
  std::string state = text(h, "state");
  std::string out = state;
  if (state != "refused") {
    out += ", " + text(h, "written") + " written, " + text(h, "dropped") + " dropped, " +
           text(h, "queued") + " queued, file " + bytes_text(h["file_bytes"]);
    if (h["wal_bytes"].is_number() && h["wal_bytes"].get<double>() > 0)
      out += " (+" + bytes_text(h["wal_bytes"]) + " WAL)";
  }
  out += " " + text(h, "path", "");
  if (auto e = text(h, "error", ""); !e.empty()) out += "; error: " + e;
  return out;
}

std::function<std::optional<int>(const request_fn&)> add_history_commands(CLI::App& app) {
  struct opts {
    std::string task, metric, since, until, step;
    std::vector<std::string> tasks, windows;
    long long limit = 0;
  };
  auto o = std::make_shared<opts>();
  auto* history = app.add_subcommand(
      "history", "A task's results (raw) or rollups over time: history TASK [--since 10m]");
  history->add_option("TASK", o->task, "The task")->required();
  history->add_option("--metric", o->metric, "latency (default) or a metric of the results");
  history->add_option("--since", o->since, "Start: a duration back (10m, 7d) or RFC 3339 time");
  history->add_option("--until", o->until, "End (default now): a duration back or RFC 3339 time");
  history->add_option("--step", o->step, "Bucket size, e.g. 1m, 1h (default: about 300 points)");

  auto* uptime = app.add_subcommand("uptime", "Uptime % per task over windows");
  uptime->add_option("TASK", o->tasks, "Tasks (default: every task with history)");
  uptime->add_option("--windows", o->windows, "Windows, e.g. 1h,24h,7d,30d,1y (the default)")
      ->delimiter(',');

  auto* percentiles =
      app.add_subcommand("percentiles", "Latency (or a metric's) percentiles per task");
  percentiles->add_option("TASK", o->tasks, "Tasks (default: every task with results)");
  percentiles->add_option("--metric", o->metric, "latency (default) or a metric of the results");
  percentiles->add_option("--since", o->since, "Start (default 24h): a duration back or a time");
  percentiles->add_option("--until", o->until, "End (default now)");

  auto* incidents = app.add_subcommand("incidents", "Alarms that fired: start, end, duration");
  incidents->add_option("TASK", o->task, "Only this task");
  incidents->add_option("--since", o->since, "Start (default 30d): a duration back or a time");
  incidents->add_option("--until", o->until, "End (default now)");
  auto* limit = incidents->add_option("--limit", o->limit, "At most this many (default 500)");

  return [=](const request_fn& req) -> std::optional<int> {
    auto window = [&](json& r) {
      if (!o->since.empty()) r["since"] = o->since;
      if (!o->until.empty()) r["until"] = o->until;
    };
    if (*history) {
      json r{{"command", "history"}, {"task", o->task}};
      if (!o->metric.empty()) r["metric"] = o->metric;
      if (!o->step.empty()) r["step"] = o->step;
      window(r);
      return req(r, show_history);
    }
    if (*uptime) {
      json r{{"command", "uptime"}};
      if (!o->tasks.empty()) r["tasks"] = o->tasks;
      if (!o->windows.empty()) r["windows"] = o->windows;
      return req(r, show_uptime);
    }
    if (*percentiles) {
      json r{{"command", "percentiles"}};
      if (!o->tasks.empty()) r["tasks"] = o->tasks;
      if (!o->metric.empty()) r["metric"] = o->metric;
      window(r);
      return req(r, show_percentiles);
    }
    if (*incidents) {
      json r{{"command", "incidents"}};
      if (!o->task.empty()) r["task"] = o->task;
      if (limit->count()) r["limit"] = o->limit;
      window(r);
      return req(r, show_incidents);
    }
    return std::nullopt;
  };
}

}  // namespace sonde::sondectl
