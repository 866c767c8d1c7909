// The history store: encodings, exact rollups, uptime with maintenance, incidents, retention
// with a fake clock, the bounded queue. Queries run on a separate read connection, as the
// engine's reader thread does.
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <random>

#include <asio/io_context.hpp>
#include <catch2/catch.hpp>

#include "core/output.hpp"
#include "core/rfc3339.hpp"
#include "history/codec.hpp"
#include "history/query.hpp"
#include "history/schema.hpp"
#include "history/store.hpp"
#include "support/files.hpp"

using namespace sonde::engine::history;
using json = nlohmann::json;
using sys = std::chrono::system_clock;

namespace {

// Exact nearest-rank quantile of sorted values.
double exact_quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
}

bool within(double estimate, double exact, double rel) {
  return std::fabs(estimate - exact) <= rel * std::fabs(exact) + 1e-12;
}

// A store on a temporary file with a clock the test moves.
struct fixture {
  sonde::test::temp_dir dir;
  asio::io_context io;
  std::atomic<std::int64_t> now_ms{0};
  std::unique_ptr<store> s;
  std::vector<std::string> logs;
  std::mutex log_m;

  explicit fixture(std::int64_t start_ms, history_settings st = {}) {
    now_ms = start_ms;
    store_options o;
    o.path = dir.path() + "/history.db";
    o.settings = st;
    o.settings.commit_interval = std::chrono::milliseconds(20);
    o.clock = [this] { return sonde::engine::from_epoch_ms(now_ms.load()); };
    o.log = [this](const std::string& l) {
      std::lock_guard g(log_m);
      logs.push_back(l);
    };
    s = std::make_unique<store>(io, o);
  }
  sqlite3* reader() {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(s->path().c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
    return db;
  }
};

std::shared_ptr<task_ident> ident(const std::string& name, std::vector<std::string> rollup = {}) {
  auto t = std::make_shared<task_ident>();
  t->name = name;
  t->type = "tcp";
  t->target = "127.0.0.1:80";
  t->rollup_metrics = std::move(rollup);
  return t;
}

result_row row(std::shared_ptr<const task_ident> t, std::int64_t t_ms, int status,
               std::optional<double> latency, bool maint = false) {
  result_row r;
  r.task = std::move(t);
  r.time_ms = t_ms;
  r.status = static_cast<std::uint8_t>(status);
  r.latency_ms = latency;
  r.maintenance = maint;
  if (status != 0) {
    r.reason = 2;
    r.message = "connect failed: Connection refused";
  }
  return r;
}

std::int64_t count(sqlite3* db, const std::string& sql) {
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  auto n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return n;
}

// 2026-11-30T00:00:00Z: a day boundary, so minute, hour and day buckets line up.
constexpr std::int64_t day0 = 1795996800000;

}  // namespace

TEST_CASE("log histogram: quantiles within the stated error, exact merge, round trip",
          "[history]") {
  std::mt19937 rng(7);
  std::lognormal_distribution<double> dist(0.0, 1.5);
  std::vector<double> all;
  log_histogram whole, a, b;
  for (int i = 0; i < 20000; ++i) {
    double v = dist(rng);
    if (i % 97 == 0) v = -v;  // a few negative values
    if (i % 301 == 0) v = 0;
    all.push_back(v);
    whole.add(v);
    (i % 2 ? a : b).add(v);
  }
  a.merge(b);
  for (double q : {0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0}) {
    double exact = exact_quantile(all, q);
    INFO("q=" << q << " exact=" << exact << " estimate=" << whole.quantile(q));
    CHECK(within(whole.quantile(q), exact, log_histogram::relative_error));
    CHECK(a.quantile(q) == whole.quantile(q));  // merging halves is the whole
  }
  std::string enc, enc2;
  whole.encode(enc);
  a.encode(enc2);
  CHECK(enc == enc2);
  log_histogram back;
  reader r(enc);
  REQUIRE(back.decode(r));
  CHECK(r.done());
  CHECK(back.count() == whole.count());
  CHECK(back.quantile(0.99) == whole.quantile(0.99));
  // Every truncation of a valid encoding is refused, never read past its end.
  for (std::size_t n = 0; n < enc.size(); ++n) {
    log_histogram h;
    reader t(std::string_view(enc).substr(0, n));
    bool ok = h.decode(t);
    CHECK((!ok || !t.done() || n == enc.size()));
    if (ok) CHECK(h.count() <= whole.count());
  }
}

TEST_CASE("metrics blob: exact round trip in the smallest form", "[history]") {
  std::vector<id_value> m = {{1, 0},   {2, 42},      {3, -7},       {4, 0.25},
                             {5, 0.1}, {6, 1e300},   {7, -3.5e-9},  {8, 9007199254740993.0},
                             {9, NAN}, {1000000, 3}, {17, INFINITY}};
  auto blob = encode_metrics(m);
  auto back = decode_metrics(blob);
  REQUIRE(back);
  REQUIRE(back->size() == m.size());
  for (std::size_t i = 0; i < m.size(); ++i) {
    CHECK((*back)[i].id == m[i].id);
    if (std::isnan(m[i].value))
      CHECK(std::isnan((*back)[i].value));
    else
      CHECK((*back)[i].value == m[i].value);
  }
  CHECK(blob.size() < m.size() * 6);  // integers and float32-exact values stay small
  CHECK_FALSE(decode_metrics(blob.substr(0, blob.size() - 1)));
  CHECK_FALSE(decode_metrics(std::string("\x03\x01", 2)));  // form 3 does not exist
}

TEST_CASE("rollups: exact counts, min/avg/max and percentiles per minute, hour and day",
          "[history]") {
  fixture f(day0 + 3 * 3600 * 1000);
  f.s->start();
  auto web = ident("web", {"connect_time"});
  // Two minutes at 1 s, a scripted mix: every 10th critical, every 25th warning, latency
  // i % 50 + 1 ms, connect_time (s) = latency / 2000.
  std::vector<double> lat[2], conn[2];
  std::uint64_t counts[2][4] = {};
  for (int i = 0; i < 120; ++i) {
    int st = i % 10 == 9 ? 2 : i % 25 == 24 ? 1 : 0;
    double l = i % 50 + 1;
    auto r = row(web, day0 + 3600 * 1000 + i * 1000, st, l);
    r.metrics = {{"connect_time", l / 2000}, {"reply_bytes", 100}};
    REQUIRE(f.s->add_result(r));
    lat[i / 60].push_back(l);
    conn[i / 60].push_back(l / 2000);
    ++counts[i / 60][st];
  }
  REQUIRE(f.s->sync());
  sqlite3* db = f.reader();
  // The minute series from the query layer.
  series_query q;
  q.task = "web";
  q.since = day0 + 3600 * 1000;
  q.until = day0 + 3600 * 1000 + 120 * 1000;
  q.step_s = 60;
  auto out = query_series(db, q, {}, f.now_ms);
  REQUIRE(out);
  CHECK((*out)["level"] == "minute");
  REQUIRE((*out)["points"].size() == 2);
  for (int m = 0; m < 2; ++m) {
    const auto& p = (*out)["points"][m];
    CHECK(p["n"] == 60);
    CHECK(p["ok"] == counts[m][0]);
    CHECK(p["warning"] == counts[m][1]);
    CHECK(p["critical"] == counts[m][2]);
    CHECK(p["min"].get<double>() == *std::min_element(lat[m].begin(), lat[m].end()));
    CHECK(p["max"].get<double>() == *std::max_element(lat[m].begin(), lat[m].end()));
    double avg = 0;
    for (double v : lat[m]) avg += v;
    CHECK(p["avg"].get<double>() == Approx(avg / 60).margin(1e-6));
    for (auto [k, qq] : {std::pair{"p50", 0.5}, {"p90", 0.9}, {"p99", 0.99}})
      CHECK(within(p[k].get<double>(), exact_quantile(lat[m], qq), 0.01));
  }
  // The hour and the day hold the merge of both minutes.
  for (const char* t : {"rollup_hour", "rollup_day"}) {
    CHECK(count(db, std::string("SELECT count(*) FROM ") + t) == 1);
    CHECK(count(db, std::string("SELECT ok+warning+critical+unknown FROM ") + t) == 120);
    CHECK(count(db, std::string("SELECT critical FROM ") + t) == 12);
  }
  // A condition metric is rolled up; others are not.
  q.metric = "connect_time";
  auto c = query_series(db, q, {}, f.now_ms);
  REQUIRE(c);
  REQUIRE((*c)["points"].size() == 2);
  CHECK((*c)["points"][0]["max"].get<double>() ==
        Approx(*std::max_element(conn[0].begin(), conn[0].end())));
  q.metric = "reply_bytes";
  auto rb = query_series(db, q, {}, f.now_ms);
  REQUIRE(rb);
  CHECK((*rb)["points"][0]["max"].is_null());
  CHECK((*rb).contains("note"));
  // Raw results keep every value (and the message of failures only).
  series_query raw = q;
  raw.metric = "reply_bytes";
  raw.step_s.reset();
  auto rr = query_series(db, raw, {}, f.now_ms);
  REQUIRE(rr);
  CHECK((*rr)["level"] == "raw");
  REQUIRE((*rr)["points"].size() == 120);
  CHECK((*rr)["points"][5]["value"] == 100);
  CHECK((*rr)["points"][9]["message"] == "connect failed: Connection refused");
  CHECK_FALSE((*rr)["points"][0].contains("message"));
  // Percentiles over both minutes.
  percentile_query pq;
  pq.tasks = {"web"};
  pq.since = q.since;
  pq.until = q.until;
  auto pc = query_percentiles(db, pq, {}, f.now_ms);
  REQUIRE(pc);
  std::vector<double> both = lat[0];
  both.insert(both.end(), lat[1].begin(), lat[1].end());
  const auto& t0 = (*pc)["tasks"][0];
  CHECK(t0["n"] == 120);
  CHECK(within(t0["p50"].get<double>(), exact_quantile(both, 0.5), 0.01));
  CHECK(within(t0["p99"].get<double>(), exact_quantile(both, 0.99), 0.01));
  CHECK(t0["max"].get<double>() == 50);
  sqlite3_close(db);
}

TEST_CASE("rollups survive a restart: a bucket continues where it was", "[history]") {
  fixture f(day0 + 7200 * 1000);
  auto t = ident("t");
  f.s->start();
  for (int i = 0; i < 30; ++i) REQUIRE(f.s->add_result(row(t, day0 + i * 1000, 0, 1.0 + i)));
  REQUIRE(f.s->sync());
  f.s->stop();
  store_options o;
  o.path = f.s->path();
  o.clock = [&] { return sonde::engine::from_epoch_ms(f.now_ms.load()); };
  store again(f.io, o);
  again.start();
  for (int i = 30; i < 60; ++i) REQUIRE(again.add_result(row(t, day0 + i * 1000, 2, 1.0 + i)));
  REQUIRE(again.sync());
  sqlite3* db = f.reader();
  CHECK(count(db, "SELECT ok FROM rollup_minute") == 30);
  CHECK(count(db, "SELECT critical FROM rollup_minute") == 30);
  CHECK(count(db, "SELECT critical FROM rollup_day") == 30);
  CHECK(count(db, "SELECT count(*) FROM result") == 60);
  sqlite3_close(db);
}

TEST_CASE("uptime: ok and warning are up, maintenance and unknown are left out", "[history]") {
  std::int64_t now = day0 + 2 * 86400 * 1000LL;
  fixture f(now);
  f.s->start();
  auto a = ident("a"), b = ident("b");
  // Within the last hour, one result a minute for 50 minutes: a has 45 ok, 3 warning,
  // 2 critical; b has the same plus 5 critical inside a maintenance window and 4 unknown.
  for (int i = 0; i < 50; ++i) {
    std::int64_t t = now - (50 - i) * 60 * 1000LL;
    int st = i < 45 ? 0 : i < 48 ? 1 : 2;
    REQUIRE(f.s->add_result(row(a, t, st, 1.0)));
    REQUIRE(f.s->add_result(row(b, t, st, 1.0)));
    if (i < 5) REQUIRE(f.s->add_result(row(b, t + 500, 2, 1.0, true)));
    if (i < 4) REQUIRE(f.s->add_result(row(b, t + 700, 3, std::nullopt)));
  }
  // And a day ago, 10 critical results of a only (inside 24h, outside 1h).
  for (int i = 0; i < 10; ++i)
    REQUIRE(f.s->add_result(row(a, now - 20 * 3600 * 1000LL + i * 1000, 2, 1.0)));
  REQUIRE(f.s->sync());
  sqlite3* db = f.reader();
  uptime_query q;
  q.windows = {"1h", "24h", "30d"};
  auto out = query_uptime(db, q, {}, now);
  REQUIRE(out);
  REQUIRE((*out)["tasks"].size() == 2);
  const auto& ra = (*out)["tasks"][0];
  const auto& rb = (*out)["tasks"][1];
  CHECK(ra["task"] == "a");
  CHECK(ra["windows"]["1h"]["uptime"].get<double>() == Approx(100.0 * 48 / 50));
  CHECK(ra["windows"]["24h"]["uptime"].get<double>() == Approx(100.0 * 48 / 60));
  CHECK(ra["windows"]["30d"]["uptime"].get<double>() == Approx(100.0 * 48 / 60));
  CHECK(rb["windows"]["1h"]["uptime"].get<double>() == Approx(100.0 * 48 / 50));
  CHECK(rb["windows"]["1h"]["maintenance"] == 5);
  CHECK(rb["windows"]["1h"]["unknown"] == 4);
  // One named task; an unknown name is an error that says which.
  q.tasks = {"b"};
  auto one = query_uptime(db, q, {}, now);
  REQUIRE(one);
  CHECK((*one)["tasks"].size() == 1);
  q.tasks = {"nope"};
  auto bad = query_uptime(db, q, {}, now);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().find("nope") != std::string::npos);
  sqlite3_close(db);
}

TEST_CASE("incidents from alarm events: start, end, duration, severity, reason", "[history]") {
  std::int64_t now = day0 + 86400 * 1000LL;
  fixture f(now);
  f.s->start();
  auto ev = [](const std::string& id, const std::string& task, std::int64_t t,
               const std::string& state, const std::string& prev, json severity,
               json reason = nullptr) {
    return json{{"time", sonde::engine::format_time_rfc3339(sonde::engine::from_epoch_ms(t), 3)},
                {"alarm_id", id},
                {"task", task},
                {"type", "tcp"},
                {"target", "127.0.0.1:1"},
                {"state", state},
                {"severity", severity},
                {"previous", prev},
                {"since", "2026-11-30T00:00:00.000Z"},
                {"reason", reason},
                {"message", state == "firing" ? "connect failed" : "back"},
                {"results", json::array()}};
  };
  std::int64_t t0 = now - 3600 * 1000;
  REQUIRE(f.s->add_alarm_event(ev("A1", "db", t0, "pending", "ok", nullptr, "refused")));
  REQUIRE(
      f.s->add_alarm_event(ev("A1", "db", t0 + 2000, "firing", "pending", "warning", "refused")));
  REQUIRE(
      f.s->add_alarm_event(ev("A1", "db", t0 + 5000, "firing", "firing", "critical", "timeout")));
  REQUIRE(f.s->add_alarm_event(ev("A1", "db", t0 + 62000, "ok", "firing", nullptr)));
  // A pending alarm that never fired is no incident; an open one has no end.
  REQUIRE(f.s->add_alarm_event(ev("B1", "web", t0 + 1000, "pending", "ok", nullptr, "refused")));
  REQUIRE(f.s->add_alarm_event(ev("B1", "web", t0 + 3000, "ok", "pending", nullptr)));
  REQUIRE(f.s->add_alarm_event(
      ev("C1", "web", t0 + 10000, "firing", "pending", "critical", "refused")));
  REQUIRE(f.s->sync());
  sqlite3* db = f.reader();
  incident_query q;
  q.since = now - 86400 * 1000LL;
  q.until = now;
  auto out = query_incidents(db, q, now);
  REQUIRE(out);
  const auto& inc = (*out)["incidents"];
  REQUIRE(inc.size() == 2);
  CHECK(inc[0]["alarm_id"] == "C1");  // newest first
  CHECK(inc[0]["end"].is_null());
  CHECK(inc[0]["state"] == "firing");
  CHECK(inc[0]["duration_s"].get<double>() == Approx((now - t0 - 10000) / 1000.0));
  CHECK(inc[1]["alarm_id"] == "A1");
  CHECK(inc[1]["task"] == "db");
  CHECK(inc[1]["severity"] == "critical");
  CHECK(inc[1]["reason"] == "refused");
  CHECK(inc[1]["duration_s"].get<double>() == Approx(60.0));
  CHECK(inc[1]["state"] == "resolved");
  CHECK(inc[1]["start"] ==
        sonde::engine::format_time_rfc3339(sonde::engine::from_epoch_ms(t0 + 2000), 3));
  // Per task, and a window that ends before the incident began.
  q.task = "db";
  auto db_only = query_incidents(db, q, now);
  REQUIRE(db_only);
  CHECK((*db_only)["incidents"].size() == 1);
  q.task.clear();
  q.until = t0;
  q.since = t0 - 3600 * 1000;
  auto before = query_incidents(db, q, now);
  REQUIRE(before);
  CHECK((*before)["incidents"].empty());
  sqlite3_close(db);
}

TEST_CASE("retention: each level expires on its own schedule (fake clock)", "[history]") {
  history_settings st;  // raw 7d, minute 2d, hour 90d, day 5y
  st.alarms = std::chrono::hours(24 * 30);
  fixture f(day0, st);
  f.s->start();
  auto t = ident("t");
  for (int i = 0; i < 600; ++i) REQUIRE(f.s->add_result(row(t, day0 + i * 1000, 0, 2.0)));
  REQUIRE(f.s->add_alarm_event(json{
      {"time", "2026-11-30T00:00:01Z"}, {"alarm_id", "X"}, {"task", "t"}, {"state", "firing"}}));
  REQUIRE(f.s->sync());
  sqlite3* db = f.reader();
  auto rows = [&](const char* table) {
    return count(db, std::string("SELECT count(*) FROM ") + table);
  };
  CHECK(rows("result") == 600);
  CHECK(rows("rollup_minute") == 10);
  f.now_ms = day0 + 3 * 86400 * 1000LL;  // past minute retention only
  REQUIRE(f.s->sync());
  CHECK(rows("result") == 600);
  CHECK(rows("rollup_minute") == 0);
  CHECK(rows("rollup_hour") == 1);
  f.now_ms = day0 + 8 * 86400 * 1000LL;  // past raw retention
  REQUIRE(f.s->sync());
  CHECK(rows("result") == 0);
  CHECK(rows("rollup_hour") == 1);
  CHECK(rows("alarm_event") == 1);
  f.now_ms = day0 + 91 * 86400 * 1000LL;  // past hour and alarm retention
  REQUIRE(f.s->sync());
  CHECK(rows("rollup_hour") == 0);
  CHECK(rows("rollup_day") == 1);
  CHECK(rows("alarm_event") == 0);
  // Uptime over a year still answers from the day rollup.
  uptime_query q;
  q.windows = {"1y"};
  auto up = query_uptime(db, q, st, f.now_ms);
  REQUIRE(up);
  CHECK((*up)["tasks"][0]["windows"]["1y"]["ok"] == 600);
  CHECK(f.s->status()["expired_rows"].get<int>() == 600 + 10 + 1 + 1);
  sqlite3_close(db);
}

TEST_CASE("the queue is bounded: overflow drops from history only, counted", "[history]") {
  history_settings st;
  st.queue = 100;
  fixture f(day0, st);  // not started: nothing drains the queue
  auto t = ident("t");
  int accepted = 0;
  for (int i = 0; i < 150; ++i) accepted += f.s->add_result(row(t, day0 + i, 0, 1.0));
  CHECK(accepted == 100);
  CHECK(f.s->dropped() == 50);
  CHECK(f.s->status()["dropped"] == 50);
  CHECK(f.s->status()["queued"] == 100);
  f.s->start();
  REQUIRE(f.s->sync());
  CHECK(f.s->written() == 100);
  CHECK(f.s->status()["queued"] == 0);
}

TEST_CASE("schema: a new file is created at the current version with sonde's marker", "[history]") {
  sonde::test::temp_dir dir;
  std::vector<std::string> notes;
  auto db = open_for_writing(dir.path() + "/h.db", true, notes);
  REQUIRE(db);
  CHECK(notes.empty());
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(*db, "PRAGMA user_version", -1, &st, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  CHECK(sqlite3_column_int(st, 0) == schema_version);
  sqlite3_finalize(st);
  REQUIRE(sqlite3_prepare_v2(*db, "PRAGMA application_id", -1, &st, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  CHECK(sqlite3_column_int(st, 0) == application_id);
  sqlite3_finalize(st);
  REQUIRE(sqlite3_prepare_v2(*db, "PRAGMA journal_mode", -1, &st, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))) == "wal");
  sqlite3_finalize(st);
  sqlite3_close(*db);
}
