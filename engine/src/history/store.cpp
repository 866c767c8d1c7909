// The history store: queue, writer thread (group commit, rollups, expiry), reader thread.
// See store.hpp and docs/history.md.
#include "history/store.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <filesystem>
#include <map>
#include <unordered_map>

#include <asio/post.hpp>

#include "core/rfc3339.hpp"
#include "history/codec.hpp"
#include "history/schema.hpp"

namespace sonde::engine::history {

using json = nlohmann::json;
using clock_t_ = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

constexpr std::size_t max_alarm_events = 10000;
constexpr std::size_t max_agent_batches = 10000;

struct stmt {
  sqlite3_stmt* s = nullptr;
  stmt() = default;
  stmt(const stmt&) = delete;
  stmt& operator=(const stmt&) = delete;
  ~stmt() { reset(); }
  void reset() {
    if (s) sqlite3_finalize(s);
    s = nullptr;
  }
  bool prepare(sqlite3* db, const char* sql) {
    reset();
    return sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) == SQLITE_OK;
  }
  sqlite3_stmt* operator*() const { return s; }
};

// Step a statement that returns no rows; reset it.
int run(sqlite3_stmt* s) {
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return rc;
}

struct pending_alarm {
  std::int64_t t_ms = 0;
  std::string alarm_id, task, type, target, state, text;
};

struct agent_job {
  agent_batch batch;
  std::function<void(tl::expected<void, std::string>)> done;
};

// A rollup bucket being filled (writer thread).
struct bucket_acc {
  std::uint64_t counts[4] = {0, 0, 0, 0};
  std::uint64_t maint = 0;
  summary latency;
  std::vector<std::pair<std::uint32_t, summary>> metrics;  // by metric id
  bool dirty = false;
  std::int64_t touched = 0;  // steady seconds
};

struct acc_key {
  int level;
  std::int64_t task, start;
  bool operator==(const acc_key&) const = default;
};
struct acc_hash {
  std::size_t operator()(const acc_key& k) const noexcept {
    return std::hash<std::int64_t>()(k.task * 1000003 + k.start * 4 + k.level);
  }
};

constexpr std::int64_t level_size[3] = {minute_s, hour_s, day_s};
constexpr const char* level_table[3] = {"rollup_minute", "rollup_hour", "rollup_day"};

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

}  // namespace

struct store::impl {
  asio::io_context& io;
  store_options opts;
  std::atomic<std::uint64_t>* dropped;
  std::atomic<std::uint64_t>* written;

  // ---- shared with the loop (mutex) -----------------------------------------------------
  mutable std::mutex m;
  std::condition_variable cv, synced;
  std::vector<result_row> results;
  std::vector<pending_alarm> alarms;
  std::vector<agent_job> agents;
  std::uint64_t sync_asked = 0, sync_done = 0;
  bool sync_failed = false;
  bool stopping = false;
  std::string state = "starting", error, refused_reason;
  std::vector<std::pair<read_fn, std::function<void(tl::expected<json, std::string>)>>> reads;
  std::condition_variable read_cv;
  bool reader_stop = false;
  std::uint64_t commits = 0, commit_failures = 0, alarm_dropped = 0, duplicates = 0;
  std::uint64_t expired_rows = 0;
  double last_commit_ms = 0, max_commit_ms = 0;
  std::size_t last_batch = 0, max_batch = 0;
  std::atomic<std::size_t> backlog{0};        // results waiting (queue + retry)
  std::atomic<std::size_t> alarm_backlog{0};  // alarm events waiting (queue + retry)
  std::size_t agent_rows = 0;                 // rows of agents' reports waiting (under m)
  std::atomic<bool> accepting{true};

  // ---- writer thread only -------------------------------------------------------------
  sqlite3* db = nullptr;
  stmt ins_result, ins_alarm, sel_task, ins_task, upd_task, sel_metric, ins_metric, upsert_queue;
  stmt sel_acc[3], put_acc[3];
  std::unordered_map<std::string, std::int64_t> task_ids;
  std::unordered_map<std::string, std::pair<std::string, std::string>> task_desc;
  std::unordered_map<std::string, std::uint32_t> metric_ids;
  std::unordered_map<acc_key, bucket_acc, acc_hash> accs;
  std::vector<result_row> retry;
  std::vector<pending_alarm> retry_alarms;
  clock_t_::time_point next_open{}, next_expiry{};
  int open_failures = 0;
  // Expiry cursors: which table, which task.
  std::size_t expiry_table = 0, expiry_task = 0;
  std::vector<std::int64_t> expiry_tasks;

  std::thread writer, reader;

  impl(asio::io_context& i, store_options o, std::atomic<std::uint64_t>* d,
       std::atomic<std::uint64_t>* w)
      : io(i), opts(std::move(o)), dropped(d), written(w) {
    if (!opts.clock) opts.clock = [] { return std::chrono::system_clock::now(); };
  }

  void log(const std::string& l) {
    if (opts.log) opts.log(l);
  }
  void set_state(const std::string& s, const std::string& e) {
    std::lock_guard g(m);
    state = s;
    error = e;
  }
  std::int64_t now_ms() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(opts.clock().time_since_epoch())
        .count();
  }

  // ---- opening ------------------------------------------------------------------------
  void close_db() {
    ins_result.reset();
    ins_alarm.reset();
    sel_task.reset();
    ins_task.reset();
    upd_task.reset();
    sel_metric.reset();
    ins_metric.reset();
    upsert_queue.reset();
    for (auto& s : sel_acc) s.reset();
    for (auto& s : put_acc) s.reset();
    if (db) sqlite3_close_v2(db);
    db = nullptr;
    task_ids.clear();
    task_desc.clear();
    metric_ids.clear();
    accs.clear();
  }

  bool prepare_all(std::string& err) {
    bool ok = ins_result.prepare(db,
                                 "INSERT OR IGNORE INTO result(task,t,status,reason,flags,"
                                 "latency_us,message,metrics,seq) VALUES(?,?,?,?,?,?,?,?,?)") &&
              ins_alarm.prepare(db,
                                "INSERT INTO alarm_event(t,alarm_id,task,state,event) "
                                "VALUES(?,?,?,?,?)") &&
              sel_task.prepare(db, "SELECT id,type,target FROM task WHERE name=?") &&
              ins_task.prepare(db, "INSERT INTO task(name,type,target) VALUES(?,?,?)") &&
              upd_task.prepare(db, "UPDATE task SET type=?, target=? WHERE id=?") &&
              sel_metric.prepare(db, "SELECT id FROM metric_name WHERE name=?") &&
              ins_metric.prepare(db, "INSERT INTO metric_name(name) VALUES(?)") &&
              upsert_queue.prepare(db,
                                   "INSERT INTO agent_queue(agent,queue_id,last_seq,dropped) "
                                   "VALUES(?,?,?,?) ON CONFLICT(agent,queue_id) DO UPDATE SET "
                                   "last_seq=excluded.last_seq, dropped=excluded.dropped");
    for (int l = 0; ok && l < 3; ++l) {
      std::string t = level_table[l];
      ok = sel_acc[l].prepare(db, ("SELECT ok,warning,critical,unknown,maintenance,latency,"
                                   "metrics FROM " +
                                   t + " WHERE task=? AND start=?")
                                      .c_str()) &&
           put_acc[l].prepare(db, ("INSERT OR REPLACE INTO " + t +
                                   "(task,start,ok,warning,critical,unknown,maintenance,latency,"
                                   "metrics) VALUES(?,?,?,?,?,?,?,?,?)")
                                      .c_str());
    }
    if (!ok) err = sqlite3_errmsg(db);
    return ok;
  }

  // Returns false when history is refused for good.
  bool try_open(std::vector<agent_position>* positions, std::string& why_refused) {
    std::vector<std::string> notes;
    auto r = open_for_writing(opts.path, opts.sync, notes);
    for (auto& n : notes) log(n);
    if (!r) {
      if (r.error().kind == open_error::refused) {
        why_refused = r.error().message;
        return false;
      }
      if (open_failures++ == 0) log(r.error().message + "; retrying every 5 s");
      set_state("failing", r.error().message);
      next_open = clock_t_::now() + std::chrono::seconds(5);
      return true;
    }
    db = *r;
    std::string err;
    if (!prepare_all(err)) {
      close_db();
      set_state("failing", "cannot prepare statements: " + err);
      next_open = clock_t_::now() + std::chrono::seconds(5);
      return true;
    }
    if (positions) {
      sqlite3_stmt* st = nullptr;
      if (sqlite3_prepare_v2(db, "SELECT agent,queue_id,last_seq,dropped FROM agent_queue", -1, &st,
                             nullptr) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
          agent_position p;
          p.agent = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
          p.queue_id = reinterpret_cast<const char*>(sqlite3_column_text(st, 1));
          p.last_seq = static_cast<std::uint64_t>(sqlite3_column_int64(st, 2));
          p.dropped = static_cast<std::uint64_t>(sqlite3_column_int64(st, 3));
          positions->push_back(std::move(p));
        }
        sqlite3_finalize(st);
      }
    }
    if (open_failures > 0) log(opts.path + " is open again");
    open_failures = 0;
    set_state("ok", "");
    return true;
  }

  // ---- ids ----------------------------------------------------------------------------
  std::optional<std::int64_t> task_id(const std::string& name, const std::string& type,
                                      const std::string& target) {
    if (auto it = task_ids.find(name); it != task_ids.end()) {
      auto& d = task_desc[name];
      if (d.first != type || d.second != target) {
        sqlite3_bind_text(*upd_task, 1, type.data(), static_cast<int>(type.size()), SQLITE_STATIC);
        sqlite3_bind_text(*upd_task, 2, target.data(), static_cast<int>(target.size()),
                          SQLITE_STATIC);
        sqlite3_bind_int64(*upd_task, 3, it->second);
        if (run(*upd_task) != SQLITE_DONE) return std::nullopt;
        d = {type, target};
      }
      return it->second;
    }
    sqlite3_bind_text(*sel_task, 1, name.data(), static_cast<int>(name.size()), SQLITE_STATIC);
    std::optional<std::int64_t> id;
    std::string old_type, old_target;
    if (sqlite3_step(*sel_task) == SQLITE_ROW) {
      id = sqlite3_column_int64(*sel_task, 0);
      old_type = reinterpret_cast<const char*>(sqlite3_column_text(*sel_task, 1));
      old_target = reinterpret_cast<const char*>(sqlite3_column_text(*sel_task, 2));
    }
    sqlite3_reset(*sel_task);
    sqlite3_clear_bindings(*sel_task);
    if (!id) {
      sqlite3_bind_text(*ins_task, 1, name.data(), static_cast<int>(name.size()), SQLITE_STATIC);
      sqlite3_bind_text(*ins_task, 2, type.data(), static_cast<int>(type.size()), SQLITE_STATIC);
      sqlite3_bind_text(*ins_task, 3, target.data(), static_cast<int>(target.size()),
                        SQLITE_STATIC);
      if (run(*ins_task) != SQLITE_DONE) return std::nullopt;
      id = sqlite3_last_insert_rowid(db);
      old_type = type;
      old_target = target;
    }
    task_ids[name] = *id;
    task_desc[name] = {old_type, old_target};
    if (old_type != type || old_target != target) return task_id(name, type, target);
    return id;
  }

  std::optional<std::uint32_t> metric_id(const std::string& name) {
    if (auto it = metric_ids.find(name); it != metric_ids.end()) return it->second;
    sqlite3_bind_text(*sel_metric, 1, name.data(), static_cast<int>(name.size()), SQLITE_STATIC);
    std::optional<std::int64_t> id;
    if (sqlite3_step(*sel_metric) == SQLITE_ROW) id = sqlite3_column_int64(*sel_metric, 0);
    sqlite3_reset(*sel_metric);
    sqlite3_clear_bindings(*sel_metric);
    if (!id) {
      sqlite3_bind_text(*ins_metric, 1, name.data(), static_cast<int>(name.size()), SQLITE_STATIC);
      if (run(*ins_metric) != SQLITE_DONE) return std::nullopt;
      id = sqlite3_last_insert_rowid(db);
    }
    if (*id < 0 || *id > 0x3fffffff) return std::nullopt;
    metric_ids[name] = static_cast<std::uint32_t>(*id);
    return static_cast<std::uint32_t>(*id);
  }

  // ---- rollups ------------------------------------------------------------------------
  bucket_acc* acc_for(int level, std::int64_t task, std::int64_t start) {
    acc_key k{level, task, start};
    if (auto it = accs.find(k); it != accs.end()) return &it->second;
    bucket_acc a;
    auto* s = *sel_acc[level];
    sqlite3_bind_int64(s, 1, task);
    sqlite3_bind_int64(s, 2, start);
    int rc = sqlite3_step(s);
    bool bad = false;
    if (rc == SQLITE_ROW) {
      for (int i = 0; i < 4; ++i)
        a.counts[i] = static_cast<std::uint64_t>(sqlite3_column_int64(s, i));
      a.maint = static_cast<std::uint64_t>(sqlite3_column_int64(s, 4));
      auto blob = [&](int col) {
        return std::string_view(static_cast<const char*>(sqlite3_column_blob(s, col)),
                                static_cast<std::size_t>(sqlite3_column_bytes(s, col)));
      };
      history::reader r(blob(5));
      if (sqlite3_column_type(s, 5) != SQLITE_NULL && !decode_summary(r, a.latency)) bad = true;
      if (auto ms = decode_summaries(blob(6)))
        a.metrics = std::move(*ms);
      else
        bad = true;
    } else if (rc != SQLITE_DONE) {
      sqlite3_reset(s);
      sqlite3_clear_bindings(s);
      return nullptr;
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (bad) {
      // A damaged rollup row (edited by hand?): start the bucket again rather than fail.
      log(std::string("a damaged ") + level_table[level] + " row (task " + std::to_string(task) +
          ", start " + std::to_string(start) + ") was replaced");
      a = bucket_acc{};
    }
    return &accs.emplace(k, std::move(a)).first->second;
  }

  bool write_accs() {
    for (auto& [k, a] : accs) {
      if (!a.dirty) continue;
      auto* s = *put_acc[k.level];
      sqlite3_bind_int64(s, 1, k.task);
      sqlite3_bind_int64(s, 2, k.start);
      for (int i = 0; i < 4; ++i)
        sqlite3_bind_int64(s, 3 + i, static_cast<std::int64_t>(a.counts[i]));
      sqlite3_bind_int64(s, 7, static_cast<std::int64_t>(a.maint));
      std::string lat, met;
      if (a.latency.n) {
        encode_summary(lat, a.latency);
        sqlite3_bind_blob(s, 8, lat.data(), static_cast<int>(lat.size()), SQLITE_STATIC);
      }
      if (!a.metrics.empty()) {
        met = encode_summaries(a.metrics);
        sqlite3_bind_blob(s, 9, met.data(), static_cast<int>(met.size()), SQLITE_STATIC);
      }
      if (run(s) != SQLITE_DONE) return false;
    }
    return true;
  }

  void accs_committed() {
    auto now_s =
        std::chrono::duration_cast<std::chrono::seconds>(clock_t_::now().time_since_epoch())
            .count();
    for (auto it = accs.begin(); it != accs.end();) {
      it->second.dirty = false;
      // Buckets not touched for a while are closed: late results load them again.
      if (now_s - it->second.touched > 120 || accs.size() > 200000)
        it = accs.erase(it);
      else
        ++it;
    }
  }

  // ---- one row ------------------------------------------------------------------------
  // False: a database error (the transaction is abandoned).
  bool put(const result_row& r) {
    if (!r.task) return true;
    auto tid = task_id(r.task->name, r.task->type, r.task->target);
    if (!tid) return false;
    std::vector<id_value> ids;
    ids.reserve(r.metrics.size());
    for (const auto& mt : r.metrics) {
      auto id = metric_id(mt.name);
      if (!id) return false;
      ids.push_back({*id, mt.value});
    }
    auto* s = *ins_result;
    sqlite3_bind_int64(s, 1, *tid);
    sqlite3_bind_int64(s, 2, r.time_ms);
    sqlite3_bind_int(s, 3, r.status);
    sqlite3_bind_int(s, 4, r.reason);
    sqlite3_bind_int(s, 5, r.maintenance ? 1 : 0);
    if (r.latency_ms && std::isfinite(*r.latency_ms))
      sqlite3_bind_int64(s, 6, std::llround(*r.latency_ms * 1000.0));
    if (r.status != 0 && !r.message.empty())
      sqlite3_bind_text(s, 7, r.message.data(), static_cast<int>(r.message.size()), SQLITE_STATIC);
    std::string blob = encode_metrics(ids);
    if (!blob.empty())
      sqlite3_bind_blob(s, 8, blob.data(), static_cast<int>(blob.size()), SQLITE_STATIC);
    if (r.seq) sqlite3_bind_int64(s, 9, static_cast<std::int64_t>(*r.seq));
    int rc = sqlite3_step(s);
    bool inserted = sqlite3_changes(db) > 0;
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (rc != SQLITE_DONE) return false;
    if (!inserted) {  // the same task and millisecond again: kept once
      std::lock_guard g(m);
      ++duplicates;
      return true;
    }
    std::int64_t t_s = floor_div(r.time_ms, 1000);
    auto touched =
        std::chrono::duration_cast<std::chrono::seconds>(clock_t_::now().time_since_epoch())
            .count();
    for (int l = 0; l < 3; ++l) {
      auto* a = acc_for(l, *tid, floor_div(t_s, level_size[l]) * level_size[l]);
      if (!a) return false;
      a->dirty = true;
      a->touched = touched;
      if (r.maintenance)
        ++a->maint;
      else
        ++a->counts[std::min<int>(r.status, 3)];
      if (r.latency_ms && std::isfinite(*r.latency_ms)) a->latency.add(*r.latency_ms);
      for (const auto& name : r.task->rollup_metrics) {
        for (std::size_t i = 0; i < r.metrics.size(); ++i) {
          if (r.metrics[i].name != name || !std::isfinite(r.metrics[i].value)) continue;
          std::uint32_t id = ids[i].id;
          auto it = std::find_if(a->metrics.begin(), a->metrics.end(),
                                 [&](const auto& p) { return p.first == id; });
          if (it == a->metrics.end()) {
            a->metrics.emplace_back(id, summary{});
            it = a->metrics.end() - 1;
          }
          it->second.add(r.metrics[i].value);
          break;
        }
      }
    }
    return true;
  }

  bool put_alarm(const pending_alarm& a) {
    auto tid = task_id(a.task, a.type, a.target);
    if (!tid) return false;
    auto* s = *ins_alarm;
    sqlite3_bind_int64(s, 1, a.t_ms);
    sqlite3_bind_text(s, 2, a.alarm_id.data(), static_cast<int>(a.alarm_id.size()), SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, *tid);
    sqlite3_bind_text(s, 4, a.state.data(), static_cast<int>(a.state.size()), SQLITE_STATIC);
    sqlite3_bind_text(s, 5, a.text.data(), static_cast<int>(a.text.size()), SQLITE_STATIC);
    return run(s) == SQLITE_DONE;
  }

  bool put_agent(const agent_job& j) {
    for (const auto& r : j.batch.rows)
      if (!put(r)) return false;
    auto* s = *upsert_queue;
    const auto& b = j.batch;
    sqlite3_bind_text(s, 1, b.agent.data(), static_cast<int>(b.agent.size()), SQLITE_STATIC);
    sqlite3_bind_text(s, 2, b.queue_id.data(), static_cast<int>(b.queue_id.size()), SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, static_cast<std::int64_t>(b.last_seq));
    sqlite3_bind_int64(s, 4, static_cast<std::int64_t>(b.dropped));
    return run(s) == SQLITE_DONE;
  }

  bool exec(const char* sql) {
    return sqlite3_exec(db, sql, nullptr, nullptr, nullptr) == SQLITE_OK;
  }

  // ---- one commit ---------------------------------------------------------------------
  void commit(std::vector<result_row>& rs, std::vector<pending_alarm>& as,
              std::vector<agent_job>& js) {
    if (rs.empty() && as.empty() && js.empty()) return;
    auto t0 = clock_t_::now();
    bool ok = db && exec("BEGIN IMMEDIATE");
    std::string err;
    if (ok) {
      for (auto& j : js)
        if (!(ok = put_agent(j))) break;
      if (ok)
        for (auto& r : rs)
          if (!(ok = put(r))) break;
      if (ok)
        for (auto& a : as)
          if (!(ok = put_alarm(a))) break;
      ok = ok && write_accs() && exec("COMMIT");
    }
    if (!ok) {
      err = db ? sqlite3_errmsg(db) : error_now();
      int code = db ? sqlite3_extended_errcode(db) : SQLITE_CANTOPEN;
      if (db) exec("ROLLBACK");
      accs.clear();  // they merged rows that are not stored: read them again
      bool reopen = (code & 0xff) == SQLITE_IOERR || (code & 0xff) == SQLITE_READONLY ||
                    (code & 0xff) == SQLITE_CORRUPT || (code & 0xff) == SQLITE_NOTADB ||
                    (code & 0xff) == SQLITE_CANTOPEN;
      if (db && reopen) {
        close_db();
        next_open = clock_t_::now() + std::chrono::seconds(1);
      }
      {
        std::lock_guard g(m);
        state = "failing";
        error = err;
        ++commit_failures;
      }
      if (commit_failures_logged_++ % 60 == 0)
        log("cannot write " + opts.path + ": " + err + " (kept in memory and retried; " +
            std::to_string(rs.size()) + " results waiting)");
      std::string why =
          "the central cannot store results now (" + err + "); they stay queued on the agent";
      for (auto& j : js)
        if (j.done) asio::post(io, [d = std::move(j.done), why] { d(tl::unexpected(why)); });
      js.clear();
      // Keep results and alarm events for the next attempt (bounded by the queue).
      retry = std::move(rs);
      retry_alarms = std::move(as);
      return;
    }
    double ms = std::chrono::duration<double, std::milli>(clock_t_::now() - t0).count();
    accs_committed();
    std::size_t n = rs.size();
    for (auto& j : js) n += j.batch.rows.size();
    {
      std::lock_guard g(m);
      if (state == "failing") log(opts.path + " is written again");
      state = "ok";
      error.clear();
      ++commits;
      last_commit_ms = ms;
      max_commit_ms = std::max(max_commit_ms, ms);
      last_batch = n;
      max_batch = std::max(max_batch, n);
    }
    commit_failures_logged_ = 0;
    written->fetch_add(n, std::memory_order_relaxed);
    backlog.fetch_sub(rs.size(), std::memory_order_relaxed);
    alarm_backlog.fetch_sub(as.size(), std::memory_order_relaxed);
    for (auto& j : js)
      if (j.done) asio::post(io, [d = std::move(j.done)] { d({}); });
    js.clear();
    rs.clear();
    as.clear();
  }
  std::uint64_t commit_failures_logged_ = 0;
  std::string error_now() {
    std::lock_guard g(m);
    return error.empty() ? "the database is not open" : error;
  }

  // ---- expiry -------------------------------------------------------------------------
  // One bounded step; returns true when there may be more to do.
  bool expire_step() {
    if (!db) return false;
    const auto& st = opts.settings;
    std::int64_t now = now_ms();
    struct tbl {
      const char* name;
      const char* col;
      std::int64_t cutoff, slice;
    };
    std::vector<tbl> tables = {
        {"result", "t", now - st.raw.count() * 1000, 3600 * 1000},
        {"rollup_minute", "start", now / 1000 - st.minute.count(), day_s},
        {"rollup_hour", "start", now / 1000 - st.hour.count(), 30 * day_s},
        {"rollup_day", "start", now / 1000 - st.day.count(), 366 * day_s},
    };
    if (expiry_tasks.empty()) {
      sqlite3_stmt* s = nullptr;
      if (sqlite3_prepare_v2(db, "SELECT id FROM task ORDER BY id", -1, &s, nullptr) != SQLITE_OK)
        return false;
      while (sqlite3_step(s) == SQLITE_ROW) expiry_tasks.push_back(sqlite3_column_int64(s, 0));
      sqlite3_finalize(s);
      expiry_table = 0;
      expiry_task = 0;
      // Alarm events, when they expire at all: by time, in bounded chunks.
      if (st.alarms) {
        std::string q =
            "DELETE FROM alarm_event WHERE id IN (SELECT id FROM alarm_event WHERE "
            "t < " +
            std::to_string(now - st.alarms->count() * 1000) + " ORDER BY t LIMIT 2000)";
        if (exec(q.c_str())) note_expired(sqlite3_changes(db));
      }
      if (expiry_tasks.empty()) return false;
    }
    auto t0 = clock_t_::now();
    bool began = exec("BEGIN IMMEDIATE");
    if (!began) return false;
    std::int64_t deleted = 0;
    while (expiry_table < tables.size() && clock_t_::now() - t0 < std::chrono::milliseconds(20) &&
           deleted < 20000) {
      const auto& t = tables[expiry_table];
      std::int64_t task = expiry_tasks[expiry_task];
      std::string q = std::string("DELETE FROM ") + t.name + " WHERE task=" + std::to_string(task) +
                      " AND " + t.col + " < min(" + std::to_string(t.cutoff) + ", (SELECT min(" +
                      t.col + ") FROM " + t.name + " WHERE task=" + std::to_string(task) + ") + " +
                      std::to_string(t.slice) + ")";
      if (!exec(q.c_str())) {
        exec("ROLLBACK");
        return false;
      }
      int n = sqlite3_changes(db);
      deleted += n;
      if (n == 0) {  // this task is done with this table
        if (++expiry_task >= expiry_tasks.size()) {
          expiry_task = 0;
          ++expiry_table;
        }
      }
    }
    if (!exec("COMMIT")) {
      exec("ROLLBACK");
      return false;
    }
    note_expired(deleted);
    if (expiry_table >= tables.size()) {
      expiry_tasks.clear();
      return false;
    }
    return true;
  }
  void note_expired(std::int64_t n) {
    std::lock_guard g(m);
    expired_rows += static_cast<std::uint64_t>(n);
  }

  // ---- the writer loop ----------------------------------------------------------------
  void writer_main(
      std::function<void(tl::expected<std::vector<agent_position>, std::string>)> ready) {
    std::vector<agent_position> positions;
    std::string refused;
    bool usable = try_open(&positions, refused);
    if (!usable) {
      log(refused);
      {
        std::lock_guard g(m);
        state = "refused";
        error = refused;
        refused_reason = refused;
        accepting = false;
      }
      if (ready) asio::post(io, [ready, refused] { ready(tl::unexpected(refused)); });
      refused_loop();
      return;
    }
    // `ready` says the database is open: when the first open failed (it is retried), the
    // positions are read and delivered once an open succeeds, never an empty list before.
    bool ready_sent = false;
    auto send_ready = [&] {
      if (ready)
        asio::post(io, [ready, p = std::move(positions)]() mutable { ready(std::move(p)); });
      ready_sent = true;
    };
    if (db) send_ready();
    next_expiry = clock_t_::now() + std::chrono::seconds(5);
    std::vector<result_row> rs;
    std::vector<pending_alarm> as;
    std::vector<agent_job> js;
    auto last_commit = clock_t_::now();
    for (;;) {
      std::uint64_t sync_target = 0;
      bool stop_now = false;
      {
        std::unique_lock lk(m);
        auto due = [&] {
          return stopping || !agents.empty() || sync_asked != sync_done || results.size() >= 4096 ||
                 ((!results.empty() || !alarms.empty() || !retry.empty()) &&
                  clock_t_::now() - last_commit >= opts.settings.commit_interval);
        };
        auto wake = last_commit + opts.settings.commit_interval;
        if (!db) wake = std::min(wake, next_open);
        cv.wait_until(lk, std::max(wake, clock_t_::now() + std::chrono::milliseconds(5)), due);
        stop_now = stopping;
        sync_target = sync_asked;
        // Results that failed to commit go first, in order.
        if (!retry.empty()) {
          rs = std::move(retry);
          retry.clear();
          rs.insert(rs.end(), std::make_move_iterator(results.begin()),
                    std::make_move_iterator(results.end()));
        } else {
          rs.swap(results);
        }
        results.clear();
        if (!retry_alarms.empty()) {
          as = std::move(retry_alarms);
          retry_alarms.clear();
          as.insert(as.end(), alarms.begin(), alarms.end());
        } else {
          as.swap(alarms);
        }
        alarms.clear();
        js.swap(agents);
        for (const auto& j : js) agent_rows -= j.batch.rows.size();
      }
      if (!db && clock_t_::now() >= next_open) {
        std::string ignored;
        positions.clear();
        try_open(ready_sent ? nullptr : &positions, ignored);
        if (db && !ready_sent) send_ready();
      }
      if (!db && !js.empty()) {
        std::string why = "the central cannot store results now (" + error_now() +
                          "); they stay queued on the agent";
        for (auto& j : js)
          if (j.done) asio::post(io, [d = std::move(j.done), why] { d(tl::unexpected(why)); });
        js.clear();
      }
      if (!db) {
        retry = std::move(rs);
        retry_alarms = std::move(as);
        rs.clear();
        as.clear();
        // A sync while failing reports failure.
        if (sync_target != sync_done_seen()) finish_sync(sync_target, false);
        if (stop_now) break;
        continue;
      }
      commit(rs, as, js);
      last_commit = clock_t_::now();
      bool failed = !retry.empty() || !retry_alarms.empty();
      if (!failed && (clock_t_::now() >= next_expiry || sync_target != sync_done_seen())) {
        bool more = expire_step();
        // A sync runs expiry to its end; otherwise one bounded step per second.
        while (more && sync_target != sync_done_seen()) more = expire_step();
        next_expiry =
            clock_t_::now() + (more ? std::chrono::milliseconds(200) : std::chrono::seconds(1));
      }
      if (sync_target != sync_done_seen()) finish_sync(sync_target, !failed);
      if (stop_now) break;
    }
    if (db) {
      exec("PRAGMA wal_checkpoint(TRUNCATE)");
      close_db();
    }
    if (!retry.empty()) log(std::to_string(retry.size()) + " results could not be written at exit");
    set_state("stopped", "");
  }
  std::uint64_t sync_done_seen() {
    std::lock_guard g(m);
    return sync_done;
  }
  void finish_sync(std::uint64_t target, bool ok) {
    std::lock_guard g(m);
    sync_done = target;
    sync_failed = !ok;
    synced.notify_all();
  }

  void refused_loop() {
    std::unique_lock lk(m);
    bool first = true;
    for (;;) {
      if (!first)
        cv.wait(lk, [&] { return stopping || !agents.empty() || sync_asked != sync_done; });
      first = false;
      auto js = std::move(agents);
      agents.clear();
      agent_rows = 0;
      backlog = 0;
      alarm_backlog = 0;
      results.clear();
      alarms.clear();
      std::string why = "the central has no history store (" + refused_reason + ")";
      for (auto& j : js)
        if (j.done) asio::post(io, [d = std::move(j.done), why] { d(tl::unexpected(why)); });
      sync_done = sync_asked;
      sync_failed = true;
      synced.notify_all();
      if (stopping) return;
    }
  }

  // ---- the reader loop ----------------------------------------------------------------
  void reader_main() {
    sqlite3* rdb = nullptr;
    for (;;) {
      std::pair<read_fn, std::function<void(tl::expected<json, std::string>)>> job;
      {
        std::unique_lock lk(m);
        read_cv.wait(lk, [&] { return reader_stop || !reads.empty(); });
        if (reader_stop && reads.empty()) break;
        job = std::move(reads.front());
        reads.erase(reads.begin());
      }
      std::string st;
      {
        std::lock_guard g(m);
        st = state;
      }
      if (!rdb && st != "refused" && st != "starting" && fs::exists(opts.path)) {
        if (sqlite3_open_v2(opts.path.c_str(), &rdb, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                            nullptr) != SQLITE_OK) {
          sqlite3_close_v2(rdb);
          rdb = nullptr;
        } else {
          sqlite3_busy_timeout(rdb, 2000);
        }
      }
      tl::expected<json, std::string> out = tl::unexpected(std::string("history is not available"));
      if (st == "refused") {
        std::lock_guard g(m);
        out = tl::unexpected("history is off: " + refused_reason);
      } else if (!rdb) {
        out = tl::unexpected(std::string("history is not open yet (") + st + ")");
      } else {
        try {
          out = job.first(rdb);
        } catch (const std::exception& e) {
          out = tl::unexpected(std::string("history query failed: ") + e.what());
        }
        if (!out && sqlite3_errcode(rdb) != SQLITE_OK &&
            (sqlite3_errcode(rdb) & 0xff) != SQLITE_BUSY) {
          sqlite3_close_v2(rdb);  // reopen for the next query
          rdb = nullptr;
        }
        // While writing fails, keep no connection between queries: SQLite shares one
        // shared-memory index per file within the process, and one opened while the file
        // system was read-only stays read-only for every later connection, the writer's too,
        // so writing could never resume.
        if (rdb && st != "ok") {
          sqlite3_close_v2(rdb);
          rdb = nullptr;
        }
      }
      if (job.second)
        asio::post(io,
                   [d = std::move(job.second), o = std::move(out)]() mutable { d(std::move(o)); });
    }
    if (rdb) sqlite3_close_v2(rdb);
  }
};

store::store(asio::io_context& io, store_options opts) : io_(io), opts_(std::move(opts)) {
  impl_ = std::make_shared<impl>(io_, opts_, &dropped_, &written_);
}

store::~store() {
  stop();
}

void store::start(
    std::function<void(tl::expected<std::vector<agent_position>, std::string>)> on_ready) {
  if (impl_->writer.joinable()) return;
  auto* p = impl_.get();
  p->writer = std::thread([p, on_ready] { p->writer_main(on_ready); });
  p->reader = std::thread([p] { p->reader_main(); });
}

void store::stop() {
  auto* p = impl_.get();
  {
    std::lock_guard g(p->m);
    p->stopping = true;
    p->reader_stop = true;
    p->accepting = false;
  }
  p->cv.notify_all();
  p->read_cv.notify_all();
  if (p->writer.joinable()) p->writer.join();
  if (p->reader.joinable()) p->reader.join();
}

bool store::add_result(result_row row) {
  auto* p = impl_.get();
  if (!p->accepting.load(std::memory_order_relaxed)) return false;
  if (p->backlog.load(std::memory_order_relaxed) >= opts_.settings.queue) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  bool wake;
  {
    std::lock_guard g(p->m);
    p->results.push_back(std::move(row));
    wake = p->results.size() == 4096;
  }
  p->backlog.fetch_add(1, std::memory_order_relaxed);
  if (wake) p->cv.notify_one();
  return true;
}

bool store::add_alarm_event(const nlohmann::json& ev) {
  auto* p = impl_.get();
  if (!p->accepting.load(std::memory_order_relaxed)) return false;
  pending_alarm a;
  auto str = [&](const char* k) {
    auto it = ev.find(k);
    return it != ev.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  a.alarm_id = str("alarm_id");
  a.task = str("task");
  a.type = str("type");
  a.target = str("target");
  a.state = str("state");
  a.text = ev.dump(-1, ' ', false, json::error_handler_t::replace);
  a.t_ms = p->now_ms();
  if (auto t = ev.find("time"); t != ev.end() && t->is_string())
    if (auto tp = parse_rfc3339(t->get_ref<const std::string&>())) a.t_ms = to_epoch_ms(*tp);
  std::lock_guard g(p->m);
  if (p->alarm_backlog.load(std::memory_order_relaxed) >= max_alarm_events) {
    ++p->alarm_dropped;
    return false;
  }
  p->alarms.push_back(std::move(a));
  p->alarm_backlog.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void store::add_agent_report(agent_batch batch,
                             std::function<void(tl::expected<void, std::string>)> done) {
  auto* p = impl_.get();
  {
    std::lock_guard g(p->m);
    if (!p->stopping && p->agents.size() < max_agent_batches &&
        p->agent_rows + batch.rows.size() <= opts_.settings.queue) {
      p->agent_rows += batch.rows.size();
      p->agents.push_back({std::move(batch), std::move(done)});
      p->cv.notify_one();
      return;
    }
  }
  std::string why = p->stopping ? "the central is stopping"
                                : "the central's history queue is full; try again shortly";
  asio::post(io_, [d = std::move(done), why] { d(tl::unexpected(why)); });
}

void store::read(read_fn f, std::function<void(tl::expected<nlohmann::json, std::string>)> done) {
  auto* p = impl_.get();
  {
    std::lock_guard g(p->m);
    if (p->reads.size() >= 256) {
      asio::post(io_, [d = std::move(done)] {
        d(tl::unexpected(std::string("too many history queries at once; try again")));
      });
      return;
    }
    p->reads.emplace_back(std::move(f), std::move(done));
  }
  p->read_cv.notify_one();
}

std::string store::state() const {
  std::lock_guard g(impl_->m);
  return impl_->state;
}

nlohmann::json store::status() const {
  auto* p = impl_.get();
  std::error_code ec;
  auto size_of = [&](const std::string& f) -> json {
    auto s = fs::file_size(f, ec);
    return ec ? json() : json(s);
  };
  json j;
  {
    std::lock_guard g(p->m);
    j = json{{"state", p->state},
             {"path", opts_.path},
             {"error", p->error.empty() ? json() : json(p->error)},
             {"queued", p->backlog.load()},
             {"queue_limit", opts_.settings.queue},
             {"dropped", dropped_.load()},
             {"alarm_events_dropped", p->alarm_dropped},
             {"written", written_.load()},
             {"duplicates", p->duplicates},
             {"commits", p->commits},
             {"commit_failures", p->commit_failures},
             {"last_commit_ms", p->last_commit_ms},
             {"max_commit_ms", p->max_commit_ms},
             {"last_batch", p->last_batch},
             {"max_batch", p->max_batch},
             {"expired_rows", p->expired_rows}};
  }
  j["file_bytes"] = size_of(opts_.path);
  j["wal_bytes"] = size_of(opts_.path + "-wal");
  return j;
}

bool store::sync(std::chrono::milliseconds limit) {
  auto* p = impl_.get();
  std::unique_lock lk(p->m);
  auto target = ++p->sync_asked;
  p->cv.notify_all();
  bool done = p->synced.wait_for(lk, limit,
                                 [&] { return p->sync_done >= target || !p->writer.joinable(); });
  return done && !p->sync_failed;
}

}  // namespace sonde::engine::history
