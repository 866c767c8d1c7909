// The history queries. See query.hpp and docs/history.md.
#include "history/query.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include <sonde/duration.hpp>

#include "core/output.hpp"
#include "core/rfc3339.hpp"
#include "history/codec.hpp"
#include "history/store.hpp"

namespace sonde::engine::history {

using json = nlohmann::json;

namespace {

constexpr const char* status_names[4] = {"ok", "warning", "critical", "unknown"};
constexpr const char* reason_names[10] = {nullptr, "timeout",  "refused",  "unreachable", "resolve",
                                          "tls",   "protocol", "mismatch", "condition",   "error"};

struct statement {
  sqlite3_stmt* s = nullptr;
  statement(sqlite3* db, const std::string& sql) {
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) s = nullptr;
  }
  ~statement() {
    if (s) sqlite3_finalize(s);
  }
  statement(const statement&) = delete;
  explicit operator bool() const { return s != nullptr; }
};

std::string read_error(sqlite3* db) {
  return std::string("history query failed: ") + sqlite3_errmsg(db);
}

tl::expected<json, std::string> db_fail(sqlite3* db) {
  return tl::unexpected(read_error(db));
}

std::string iso(time_ms t) {
  return format_time_rfc3339(from_epoch_ms(t), 3);
}

std::int64_t floor_to(std::int64_t v, std::int64_t step) {
  return (v >= 0 ? v / step : -((-v + step - 1) / step)) * step;
}
std::int64_t ceil_to(std::int64_t v, std::int64_t step) {
  return -floor_to(-v, step);
}

json num(double v) {
  if (!std::isfinite(v)) return json();
  return std::round(v * 1e6) / 1e6;
}

struct task_row {
  std::int64_t id = 0;
  std::string name, type, target;
};

// The task's row; "no history for task" when there is none, or why the database could not be
// read (never mistaken for a task without history).
tl::expected<task_row, std::string> find_task(sqlite3* db, const std::string& name) {
  statement st(db, "SELECT id,type,target FROM task WHERE name=?");
  if (!st) return tl::unexpected(read_error(db));
  sqlite3_bind_text(st.s, 1, name.data(), static_cast<int>(name.size()), SQLITE_STATIC);
  int rc = sqlite3_step(st.s);
  if (rc == SQLITE_DONE) return tl::unexpected("no history for task '" + name + "'");
  if (rc != SQLITE_ROW) return tl::unexpected(read_error(db));
  task_row t;
  t.id = sqlite3_column_int64(st.s, 0);
  t.name = name;
  t.type = reinterpret_cast<const char*>(sqlite3_column_text(st.s, 1));
  t.target = reinterpret_cast<const char*>(sqlite3_column_text(st.s, 2));
  return t;
}

tl::expected<std::vector<task_row>, std::string> all_tasks(sqlite3* db) {
  std::vector<task_row> out;
  statement st(db, "SELECT id,name,type,target FROM task ORDER BY name");
  if (!st) return tl::unexpected(read_error(db));
  int rc;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) {
    task_row t;
    t.id = sqlite3_column_int64(st.s, 0);
    t.name = reinterpret_cast<const char*>(sqlite3_column_text(st.s, 1));
    t.type = reinterpret_cast<const char*>(sqlite3_column_text(st.s, 2));
    t.target = reinterpret_cast<const char*>(sqlite3_column_text(st.s, 3));
    out.push_back(std::move(t));
  }
  if (rc != SQLITE_DONE) return tl::unexpected(read_error(db));
  return out;
}

tl::expected<std::vector<task_row>, std::string> tasks_named(
    sqlite3* db, const std::vector<std::string>& names) {
  std::vector<task_row> out;
  for (const auto& n : names) {
    auto t = find_task(db, n);
    if (!t) return tl::unexpected(t.error());
    out.push_back(std::move(*t));
  }
  return out;
}

std::optional<std::uint32_t> metric_id(sqlite3* db, const std::string& name) {
  statement st(db, "SELECT id FROM metric_name WHERE name=?");
  if (!st) return std::nullopt;
  sqlite3_bind_text(st.s, 1, name.data(), static_cast<int>(name.size()), SQLITE_STATIC);
  if (sqlite3_step(st.s) != SQLITE_ROW) return std::nullopt;
  return static_cast<std::uint32_t>(sqlite3_column_int64(st.s, 0));
}

std::string_view blob_of(sqlite3_stmt* s, int col) {
  return {static_cast<const char*>(sqlite3_column_blob(s, col)),
          static_cast<std::size_t>(sqlite3_column_bytes(s, col))};
}

// What a range of rollup rows adds up to.
struct totals {
  std::uint64_t counts[4] = {0, 0, 0, 0};
  std::uint64_t maint = 0;
  summary value;
  bool any = false;
};

const char* table_of(int level) {
  return level == 0 ? "rollup_minute" : level == 1 ? "rollup_hour" : "rollup_day";
}

// Reads rows of one level for one task in [a, b) (seconds) into `t`. `metric`: null for the
// latency, else a metric id; `summaries`: whether to decode them at all.
class range_reader {
 public:
  explicit range_reader(sqlite3* db) : db_(db) {
    for (int l = 0; l < 3; ++l)
      st_[l] = std::make_unique<statement>(
          db, std::string("SELECT ok,warning,critical,unknown,maintenance,latency,metrics FROM ") +
                  table_of(l) + " WHERE task=? AND start>=? AND start<?");
  }
  bool ok() const { return st_[0]->s && st_[1]->s && st_[2]->s; }
  bool add(int level, std::int64_t task, std::int64_t a, std::int64_t b,
           std::optional<std::uint32_t> metric, bool summaries, totals& t) {
    if (a >= b) return true;
    auto* s = st_[level]->s;
    sqlite3_bind_int64(s, 1, task);
    sqlite3_bind_int64(s, 2, a);
    sqlite3_bind_int64(s, 3, b);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      t.any = true;
      for (int i = 0; i < 4; ++i)
        t.counts[i] += static_cast<std::uint64_t>(sqlite3_column_int64(s, i));
      t.maint += static_cast<std::uint64_t>(sqlite3_column_int64(s, 4));
      if (!summaries) continue;
      if (!metric) {
        if (sqlite3_column_type(s, 5) == SQLITE_NULL) continue;
        reader r(blob_of(s, 5));
        summary one;
        if (decode_summary(r, one)) t.value.merge(one);
      } else if (auto ms = decode_summaries(blob_of(s, 6))) {
        for (auto& [id, sm] : *ms)
          if (id == *metric) t.value.merge(sm);
      }
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE;
  }

  // [s, e) in seconds covered with whole days, then hours, then minutes at the edges. Edges
  // older than a finer level's retention use the coarser bucket that holds them.
  bool cover(std::int64_t task, std::int64_t s, std::int64_t e, const history_settings& st,
             std::int64_t now_s, std::optional<std::uint32_t> metric, bool summaries, totals& t) {
    s = floor_to(s, minute_s);
    e = ceil_to(e, minute_s);
    if (s < now_s - st.minute.count()) s = floor_to(s, hour_s);
    if (s < now_s - st.hour.count()) s = floor_to(s, day_s);
    if (e <= s) return true;
    std::int64_t d1 = ceil_to(s, day_s), d2 = floor_to(e, day_s);
    if (d1 < d2) {
      std::int64_t h1 = ceil_to(s, hour_s), h2 = floor_to(e, hour_s);
      return add(2, task, d1, d2, metric, summaries, t) &&
             add(1, task, h1, d1, metric, summaries, t) &&
             add(1, task, d2, h2, metric, summaries, t) &&
             add(0, task, s, h1, metric, summaries, t) && add(0, task, h2, e, metric, summaries, t);
    }
    std::int64_t h1 = ceil_to(s, hour_s), h2 = floor_to(e, hour_s);
    if (h1 < h2)
      return add(1, task, h1, h2, metric, summaries, t) &&
             add(0, task, s, h1, metric, summaries, t) && add(0, task, h2, e, metric, summaries, t);
    return add(0, task, s, e, metric, summaries, t);
  }

 private:
  sqlite3* db_;
  std::unique_ptr<statement> st_[3];
};

json counts_json(const totals& t) {
  return json{{"ok", t.counts[0]},
              {"warning", t.counts[1]},
              {"critical", t.counts[2]},
              {"unknown", t.counts[3]},
              {"maintenance", t.maint}};
}

std::int64_t nice_step(std::int64_t raw) {
  static const std::int64_t steps[] = {
      60,       120,      300,       600,   900,       1800,      3600,       7200,
      3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400};
  for (auto s : steps)
    if (raw <= s) return s;
  return ceil_to(raw, 30 * 86400);
}

}  // namespace

tl::expected<std::int64_t, std::string> window_seconds(const std::string& text) {
  if (text.size() >= 2 && (text.back() == 'y' || text.back() == 'w')) {
    std::string n = text.substr(0, text.size() - 1);
    char* end = nullptr;
    double v = std::strtod(n.c_str(), &end);
    if (end && *end == 0 && !n.empty() && v > 0 && v <= 100)
      return static_cast<std::int64_t>(v * (text.back() == 'y' ? 365 : 7) * 86400);
  }
  auto d = parse_duration(text);
  if (!d) return tl::unexpected("'" + text + "': " + d.error());
  auto s = std::chrono::duration_cast<std::chrono::seconds>(*d).count();
  if (s <= 0) return tl::unexpected("'" + text + "' must be longer than 0s");
  return s;
}

tl::expected<json, std::string> query_series(sqlite3* db, const series_query& q,
                                             const history_settings& st, time_ms now) {
  auto task = find_task(db, q.task);
  if (!task) return tl::unexpected(task.error());
  if (q.until <= q.since) return tl::unexpected(std::string("'until' must be after 'since'"));
  bool latency = q.metric == "latency" || q.metric == "latency_ms";
  std::optional<std::uint32_t> mid;
  if (!latency) {
    mid = metric_id(db, q.metric);
    if (!mid)
      return tl::unexpected("no metric '" + q.metric + "' in the history of '" + q.task +
                            "' (use 'latency' or a metric its results carry)");
  }
  std::int64_t window_s = (q.until - q.since + 999) / 1000;
  std::int64_t step = q.step_s ? *q.step_s : window_s / 300;
  json out{{"task", task->name},     {"type", task->type},
           {"target", task->target}, {"metric", latency ? "latency" : q.metric},
           {"since", iso(q.since)},  {"until", iso(q.until)}};
  if (latency) out["unit"] = "ms";
  // Raw results: when the window is within raw retention and the step asks for that detail.
  bool raw_covers = q.since >= now - st.raw.count() * 1000;
  if (raw_covers && step < minute_s) {
    statement cnt(db, "SELECT count(*) FROM result WHERE task=? AND t>=? AND t<?");
    if (!cnt) return db_fail(db);
    sqlite3_bind_int64(cnt.s, 1, task->id);
    sqlite3_bind_int64(cnt.s, 2, q.since);
    sqlite3_bind_int64(cnt.s, 3, q.until);
    if (sqlite3_step(cnt.s) != SQLITE_ROW) return db_fail(db);
    auto n = static_cast<std::size_t>(sqlite3_column_int64(cnt.s, 0));
    if (n <= q.max_raw) {
      statement rs(db,
                   "SELECT t,status,reason,latency_us,message,metrics FROM result WHERE task=? "
                   "AND t>=? AND t<? ORDER BY t");
      if (!rs) return db_fail(db);
      sqlite3_bind_int64(rs.s, 1, task->id);
      sqlite3_bind_int64(rs.s, 2, q.since);
      sqlite3_bind_int64(rs.s, 3, q.until);
      json pts = json::array();
      int rc;
      while ((rc = sqlite3_step(rs.s)) == SQLITE_ROW) {
        int status = std::clamp(sqlite3_column_int(rs.s, 1), 0, 3);
        int why = sqlite3_column_int(rs.s, 2);
        json value;
        if (latency) {
          if (sqlite3_column_type(rs.s, 3) != SQLITE_NULL)
            value = num(static_cast<double>(sqlite3_column_int64(rs.s, 3)) / 1000.0);
        } else if (auto ms = decode_metrics(blob_of(rs.s, 5))) {
          for (auto& iv : *ms)
            if (iv.id == *mid) value = num(iv.value);
        }
        json p{{"t", iso(sqlite3_column_int64(rs.s, 0))},
               {"status", status_names[status]},
               {"value", value},
               {"reason", why > 0 && why < 10 ? json(reason_names[why]) : json()}};
        if (sqlite3_column_type(rs.s, 4) != SQLITE_NULL)
          p["message"] = reinterpret_cast<const char*>(sqlite3_column_text(rs.s, 4));
        pts.push_back(std::move(p));
      }
      if (rc != SQLITE_DONE) return db_fail(db);
      out["level"] = "raw";
      out["step_s"] = nullptr;
      out["points"] = std::move(pts);
      return out;
    }
  }
  // Rollups: the coarsest level whose bucket fits the step and whose retention reaches back.
  step = std::max<std::int64_t>(step, minute_s);
  if (!q.step_s) step = nice_step(step);
  std::int64_t since_s = q.since / 1000, now_s = now / 1000;
  int level = -1;
  const std::int64_t sizes[3] = {minute_s, hour_s, day_s};
  const std::int64_t keep[3] = {st.minute.count(), st.hour.count(), st.day.count()};
  for (int l = 2; l >= 0; --l)
    if (sizes[l] <= step && since_s >= now_s - keep[l] - sizes[l]) {
      level = l;
      break;
    }
  if (level < 0)  // the window reaches past the finer levels' retention: coarser steps
    for (int l = 0; l < 3; ++l)
      if (since_s >= now_s - keep[l] - sizes[l] || l == 2) {
        level = l;
        break;
      }
  step = std::max(step, sizes[level]);
  step = ceil_to(step, sizes[level]);
  std::int64_t a = floor_to(since_s, sizes[level]);
  std::int64_t b = ceil_to((q.until + 999) / 1000, sizes[level]);
  if ((b - a) / step > 20000)
    return tl::unexpected(std::string("that is more than 20000 points; ask for a larger step"));
  statement rs(db, std::string("SELECT start,ok,warning,critical,unknown,maintenance,latency,"
                               "metrics FROM ") +
                       table_of(level) + " WHERE task=? AND start>=? AND start<? ORDER BY start");
  if (!rs) return db_fail(db);
  sqlite3_bind_int64(rs.s, 1, task->id);
  sqlite3_bind_int64(rs.s, 2, a);
  sqlite3_bind_int64(rs.s, 3, b);
  std::map<std::int64_t, totals> points;
  int rc;
  while ((rc = sqlite3_step(rs.s)) == SQLITE_ROW) {
    std::int64_t start = sqlite3_column_int64(rs.s, 0);
    auto& t = points[floor_to(start - a, step) + a];
    t.any = true;
    for (int i = 0; i < 4; ++i)
      t.counts[i] += static_cast<std::uint64_t>(sqlite3_column_int64(rs.s, 1 + i));
    t.maint += static_cast<std::uint64_t>(sqlite3_column_int64(rs.s, 5));
    if (latency) {
      if (sqlite3_column_type(rs.s, 6) != SQLITE_NULL) {
        reader r(blob_of(rs.s, 6));
        summary one;
        if (decode_summary(r, one)) t.value.merge(one);
      }
    } else if (auto ms = decode_summaries(blob_of(rs.s, 7))) {
      for (auto& [id, sm] : *ms)
        if (id == *mid) t.value.merge(sm);
    }
  }
  if (rc != SQLITE_DONE) return db_fail(db);
  json pts = json::array();
  bool any_value = false;
  for (auto& [start, t] : points) {
    std::uint64_t n = t.counts[0] + t.counts[1] + t.counts[2] + t.counts[3] + t.maint;
    json p{{"t", iso(start * 1000)}, {"n", n}};
    json counts = counts_json(t);
    for (auto& [k, v] : counts.items()) p[k] = v;
    if (t.value.n) {
      any_value = true;
      p["min"] = num(t.value.min);
      p["avg"] = num(t.value.avg());
      p["max"] = num(t.value.max);
      // Estimates never leave what was seen: clamped to the exact min and max.
      auto qv = [&](double q) {
        return num(std::clamp(t.value.hist.quantile(q), t.value.min, t.value.max));
      };
      p["p50"] = qv(0.5);
      p["p90"] = qv(0.9);
      p["p99"] = qv(0.99);
    } else {
      for (const char* k : {"min", "avg", "max", "p50", "p90", "p99"}) p[k] = nullptr;
    }
    pts.push_back(std::move(p));
  }
  if (!latency && !points.empty() && !any_value)
    out["note"] = "'" + q.metric +
                  "' is kept in the rollups only when the task's conditions use it; ask for a "
                  "window within raw retention for its values";
  out["level"] = level == 0 ? "minute" : level == 1 ? "hour" : "day";
  out["step_s"] = step;
  out["points"] = std::move(pts);
  return out;
}

tl::expected<json, std::string> query_uptime(sqlite3* db, const uptime_query& q,
                                             const history_settings& st, time_ms now) {
  std::vector<std::pair<std::string, std::int64_t>> windows;
  std::int64_t longest = 0;
  for (const auto& w : q.windows) {
    auto s = window_seconds(w);
    if (!s) return tl::unexpected("window " + s.error());
    windows.emplace_back(w, *s);
    longest = std::max(longest, *s);
  }
  if (windows.empty()) return tl::unexpected(std::string("no windows asked for"));
  bool all = q.tasks.empty();
  auto selected = all ? all_tasks(db) : tasks_named(db, q.tasks);
  if (!selected) return tl::unexpected(selected.error());
  const std::vector<task_row>& tasks = *selected;
  range_reader rr(db);
  if (!rr.ok()) return db_fail(db);
  std::int64_t now_s = now / 1000;
  json rows = json::array();
  for (const auto& t : tasks) {
    json ws = json::object();
    bool any = false;
    for (const auto& [name, secs] : windows) {
      totals tt;
      if (!rr.cover(t.id, now_s - secs, now_s + 1, st, now_s, std::nullopt, false, tt))
        return db_fail(db);
      any = any || tt.any;
      std::uint64_t up = tt.counts[0] + tt.counts[1], judged = up + tt.counts[2];
      json w = counts_json(tt);
      w["uptime"] =
          judged ? num(100.0 * static_cast<double>(up) / static_cast<double>(judged)) : json();
      ws[name] = std::move(w);
    }
    if (all && !any) continue;
    rows.push_back(
        json{{"task", t.name}, {"type", t.type}, {"target", t.target}, {"windows", std::move(ws)}});
  }
  json names = json::array();
  for (auto& [n, s] : windows) names.push_back(n);
  return json{{"windows", std::move(names)}, {"tasks", std::move(rows)}};
}

tl::expected<json, std::string> query_percentiles(sqlite3* db, const percentile_query& q,
                                                  const history_settings& st, time_ms now) {
  if (q.until <= q.since) return tl::unexpected(std::string("'until' must be after 'since'"));
  bool latency = q.metric == "latency" || q.metric == "latency_ms";
  std::optional<std::uint32_t> mid;
  if (!latency) {
    mid = metric_id(db, q.metric);
    if (!mid) return tl::unexpected("no metric '" + q.metric + "' in the history");
  }
  bool all = q.tasks.empty();
  auto selected = all ? all_tasks(db) : tasks_named(db, q.tasks);
  if (!selected) return tl::unexpected(selected.error());
  const std::vector<task_row>& tasks = *selected;
  range_reader rr(db);
  if (!rr.ok()) return db_fail(db);
  json rows = json::array();
  for (const auto& t : tasks) {
    totals tt;
    if (!rr.cover(t.id, q.since / 1000, (q.until + 999) / 1000, st, now / 1000, mid, true, tt))
      return db_fail(db);
    if (all && tt.value.n == 0) continue;
    json r{{"task", t.name}, {"type", t.type}, {"target", t.target}, {"n", tt.value.n}};
    if (tt.value.n) {
      r["min"] = num(tt.value.min);
      r["avg"] = num(tt.value.avg());
      r["max"] = num(tt.value.max);
    } else {
      r["min"] = r["avg"] = r["max"] = nullptr;
    }
    for (double qq : q.quantiles) {
      char key[32];
      std::snprintf(key, sizeof key, "p%g", qq * 100);
      // Never outside what was seen: the estimate is clamped to the exact min and max.
      r[key] = tt.value.n ? num(std::clamp(tt.value.hist.quantile(qq), tt.value.min, tt.value.max))
                          : json();
    }
    rows.push_back(std::move(r));
  }
  return json{{"metric", latency ? "latency" : q.metric},
              {"since", iso(q.since)},
              {"until", iso(q.until)},
              {"relative_error", log_histogram::relative_error},
              {"tasks", std::move(rows)}};
}

tl::expected<json, std::string> query_incidents(sqlite3* db, const incident_query& q, time_ms now) {
  std::optional<task_row> task;
  if (!q.task.empty()) {
    auto t = find_task(db, q.task);
    if (!t) return tl::unexpected(t.error());
    task = std::move(*t);
  }
  // Alarms whose events overlap the window, or that never resolved.
  std::string sql = "SELECT alarm_id FROM alarm_event" + std::string(task ? " WHERE task=?3" : "") +
                    " GROUP BY alarm_id HAVING min(t) < ?2 AND (max(t) >= ?1 OR sum(state='ok')=0) "
                    "AND sum(state IN ('firing','flapping')) > 0 ORDER BY min(t) DESC LIMIT ?4";
  statement ids(db, sql);
  if (!ids) return db_fail(db);
  sqlite3_bind_int64(ids.s, 1, q.since);
  sqlite3_bind_int64(ids.s, 2, q.until);
  if (task) sqlite3_bind_int64(ids.s, 3, task->id);
  sqlite3_bind_int64(ids.s, 4, static_cast<std::int64_t>(q.limit));
  std::vector<std::string> alarm_ids;
  int rc;
  while ((rc = sqlite3_step(ids.s)) == SQLITE_ROW)
    alarm_ids.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(ids.s, 0)));
  if (rc != SQLITE_DONE) return db_fail(db);
  statement evs(db, "SELECT t,state,event FROM alarm_event WHERE alarm_id=? ORDER BY t, id");
  if (!evs) return db_fail(db);
  auto sev_rank = [](const std::string& s) { return s == "critical" ? 2 : s == "warning" ? 1 : 0; };
  json out = json::array();
  for (const auto& id : alarm_ids) {
    sqlite3_bind_text(evs.s, 1, id.data(), static_cast<int>(id.size()), SQLITE_STATIC);
    json inc{{"alarm_id", id}};
    std::optional<time_ms> start, end;
    std::string severity, state;
    int events = 0;
    bool acked = false;
    while (sqlite3_step(evs.s) == SQLITE_ROW) {
      ++events;
      time_ms t = sqlite3_column_int64(evs.s, 0);
      std::string st = reinterpret_cast<const char*>(sqlite3_column_text(evs.s, 1));
      json ev =
          json::parse(reinterpret_cast<const char*>(sqlite3_column_text(evs.s, 2)), nullptr, false);
      if (!ev.is_object()) continue;
      state = st;
      if (!inc.contains("task")) {
        inc["task"] = ev.value("task", "");
        inc["type"] = ev.value("type", "");
        inc["target"] = ev.value("target", "");
      }
      if (ev.value("acknowledged", false)) acked = true;
      if (auto s = ev.find("severity");
          s != ev.end() && s->is_string() && sev_rank(*s) > sev_rank(severity))
        severity = *s;
      if (!start && (st == "firing" || st == "flapping")) {
        start = t;
        inc["reason"] = ev.contains("reason") ? ev["reason"] : json();
        inc["message"] = ev.value("message", "");
        inc["flapping"] = st == "flapping";
      }
      if (start && !end && st == "ok") end = t;
    }
    sqlite3_reset(evs.s);
    if (!start) continue;
    inc["start"] = iso(*start);
    inc["end"] = end ? json(iso(*end)) : json();
    inc["duration_s"] = num(static_cast<double>((end ? *end : now) - *start) / 1000.0);
    inc["severity"] = severity.empty() ? json() : json(severity);
    inc["state"] = end ? std::string("resolved") : state;
    inc["acknowledged"] = acked;
    inc["events"] = events;
    out.push_back(std::move(inc));
  }
  return json{{"since", iso(q.since)}, {"until", iso(q.until)}, {"incidents", std::move(out)}};
}

}  // namespace sonde::engine::history
