// Schema, migrations and a careful open. See schema.hpp and docs/history.md.
#include "history/schema.hpp"

#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>

namespace sonde::engine::history {

namespace fs = std::filesystem;

const std::vector<std::string_view>& migrations() {
  // Never edit a released migration: add one. Each runs in one transaction.
  static const std::vector<std::string_view> m = {
      // 0 -> 1: results, rollups, alarm events.
      R"sql(
CREATE TABLE task(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
                  target TEXT NOT NULL);
CREATE TABLE metric_name(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE result(task INTEGER NOT NULL, t INTEGER NOT NULL, status INTEGER NOT NULL,
                    reason INTEGER NOT NULL, flags INTEGER NOT NULL, latency_us INTEGER,
                    message TEXT, metrics BLOB, PRIMARY KEY(task, t)) WITHOUT ROWID;
CREATE TABLE rollup_minute(task INTEGER NOT NULL, start INTEGER NOT NULL, ok INTEGER NOT NULL,
                           warning INTEGER NOT NULL, critical INTEGER NOT NULL,
                           unknown INTEGER NOT NULL, maintenance INTEGER NOT NULL,
                           latency BLOB, metrics BLOB, PRIMARY KEY(task, start)) WITHOUT ROWID;
CREATE TABLE rollup_hour(task INTEGER NOT NULL, start INTEGER NOT NULL, ok INTEGER NOT NULL,
                         warning INTEGER NOT NULL, critical INTEGER NOT NULL,
                         unknown INTEGER NOT NULL, maintenance INTEGER NOT NULL,
                         latency BLOB, metrics BLOB, PRIMARY KEY(task, start)) WITHOUT ROWID;
CREATE TABLE rollup_day(task INTEGER NOT NULL, start INTEGER NOT NULL, ok INTEGER NOT NULL,
                        warning INTEGER NOT NULL, critical INTEGER NOT NULL,
                        unknown INTEGER NOT NULL, maintenance INTEGER NOT NULL,
                        latency BLOB, metrics BLOB, PRIMARY KEY(task, start)) WITHOUT ROWID;
CREATE TABLE alarm_event(id INTEGER PRIMARY KEY, t INTEGER NOT NULL, alarm_id TEXT NOT NULL,
                         task INTEGER NOT NULL, state TEXT NOT NULL, event TEXT NOT NULL);
CREATE INDEX alarm_event_by_alarm ON alarm_event(alarm_id, t);
CREATE INDEX alarm_event_by_time ON alarm_event(t);
)sql",
      // 1 -> 2: agents' reports at the central (their result numbers and queue positions).
      R"sql(
ALTER TABLE result ADD COLUMN seq INTEGER;
CREATE TABLE agent_queue(agent TEXT NOT NULL, queue_id TEXT NOT NULL,
                         last_seq INTEGER NOT NULL, dropped INTEGER NOT NULL,
                         PRIMARY KEY(agent, queue_id)) WITHOUT ROWID;
)sql",
  };
  return m;
}

std::string db_error(sqlite3* db, const std::string& what) {
  return what + ": " + (db ? sqlite3_errmsg(db) : "out of memory");
}

namespace {

struct closer {
  sqlite3* db = nullptr;
  ~closer() {
    if (db) sqlite3_close_v2(db);
  }
  sqlite3* release() {
    auto* d = db;
    db = nullptr;
    return d;
  }
};

bool exec(sqlite3* db, const char* sql, std::string& err) {
  char* msg = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &msg) == SQLITE_OK) return true;
  err = msg ? msg : sqlite3_errmsg(db);
  sqlite3_free(msg);
  return false;
}

// One integer or text column of a one-row query.
bool query_int(sqlite3* db, const char* sql, long long& out, std::string& err) {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) {
    err = sqlite3_errmsg(db);
    return false;
  }
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) out = sqlite3_column_int64(st, 0);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) err = sqlite3_errmsg(db);
  sqlite3_finalize(st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE;
}

std::string utc_stamp() {
  auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

// Rename the file and its -wal and -shm out of the way; never delete anything.
tl::expected<std::string, std::string> set_aside(const std::string& path) {
  std::string base = path + ".bad-" + utc_stamp();
  std::string dest = base;
  std::error_code ec;
  for (int i = 1; fs::exists(dest, ec) && i < 1000; ++i) dest = base + "." + std::to_string(i);
  fs::rename(path, dest, ec);
  if (ec) return tl::unexpected("cannot rename it to " + dest + ": " + ec.message());
  for (const char* sfx : {"-wal", "-shm"})
    if (fs::exists(path + sfx, ec)) fs::rename(path + sfx, dest + sfx, ec);
  return dest;
}

// Why `path` (or, when it does not exist, its directory) cannot be written, or "".
std::string not_writable(const std::string& path) {
  std::error_code ec;
  auto p = fs::exists(path, ec) ? fs::path(path) : fs::path(path).parent_path();
  if (p.empty()) p = ".";
  return ::access(p.c_str(), W_OK) != 0 ? std::string(std::strerror(errno)) : std::string();
}

enum class verdict { usable, bad, foreign, newer, io };

struct check_result {
  verdict v = verdict::usable;
  std::string why;
  long long version = 0;
};

check_result inspect(sqlite3* db) {
  check_result r;
  std::string err;
  long long app = 0, tables = 0;
  // The header is read here: a file that is not a database fails now.
  if (!query_int(db, "PRAGMA application_id", app, err) ||
      !query_int(db, "PRAGMA user_version", r.version, err) ||
      !query_int(db, "SELECT count(*) FROM sqlite_schema", tables, err)) {
    int code = sqlite3_errcode(db);
    r.v = code == SQLITE_NOTADB || code == SQLITE_CORRUPT ? verdict::bad : verdict::io;
    r.why = err;
    return r;
  }
  if (app != application_id && (app != 0 || tables > 0)) {
    r.v = verdict::foreign;
    r.why = app != 0 ? "its application_id is " + std::to_string(app) + ", not sonde's"
                     : "it holds " + std::to_string(tables) +
                           " schema objects of another program and no sonde marker";
    return r;
  }
  if (app == application_id && r.version > schema_version) {
    r.v = verdict::newer;
    r.why = "it has schema version " + std::to_string(r.version) +
            " from a newer sonde; this sonde knows up to " + std::to_string(schema_version);
    return r;
  }
  if (tables > 0) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, nullptr) != SQLITE_OK) {
      r.v = verdict::bad;
      r.why = sqlite3_errmsg(db);
      return r;
    }
    std::string first;
    int rc;
    int rows = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      const auto* t = sqlite3_column_text(st, 0);
      if (rows++ == 0 && t) first = reinterpret_cast<const char*>(t);
    }
    if (rc != SQLITE_DONE) {
      first = sqlite3_errmsg(db);
      rows = 2;
    }
    int code = sqlite3_errcode(db);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && code != SQLITE_CORRUPT && code != SQLITE_NOTADB) {
      r.v = verdict::io;
      r.why = first;
    } else if (rows != 1 || first != "ok") {
      r.v = verdict::bad;
      r.why = "integrity check: " + first;
    }
  }
  return r;
}

}  // namespace

tl::expected<void, std::string> migrate(sqlite3* db, int from, int to) {
  const auto& m = migrations();
  for (int v = from; v < to && v < static_cast<int>(m.size()); ++v) {
    std::string err;
    std::string sql = "BEGIN IMMEDIATE;\n" + std::string(m[static_cast<std::size_t>(v)]) +
                      "\nPRAGMA application_id=" + std::to_string(application_id) +
                      ";\nPRAGMA user_version=" + std::to_string(v + 1) + ";\nCOMMIT;";
    if (!exec(db, sql.c_str(), err)) {
      std::string ignored;
      exec(db, "ROLLBACK", ignored);
      return tl::unexpected("migration to schema version " + std::to_string(v + 1) +
                            " failed: " + err);
    }
  }
  return {};
}

tl::expected<sqlite3*, open_error> open_for_writing(const std::string& path, bool synchronous_full,
                                                    std::vector<std::string>& notes) {
  std::error_code ec;
  auto dir = fs::path(path).parent_path();
  if (!dir.empty()) fs::create_directories(dir, ec);
  for (int attempt = 0; attempt < 2; ++attempt) {
    closer c;
    int rc =
        sqlite3_open_v2(path.c_str(), &c.db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK)
      return tl::unexpected(open_error{open_error::retry, db_error(c.db, "cannot open " + path)});
    sqlite3_extended_result_codes(c.db, 1);
    sqlite3_busy_timeout(c.db, 5000);
    auto chk = inspect(c.db);
    if (chk.v == verdict::foreign || chk.v == verdict::newer)
      return tl::unexpected(open_error{
          open_error::refused, path + " is not this sonde's history database: " + chk.why +
                                   ". It was left untouched and history is off for this run; "
                                   "set [history] path to another file, or move this one away"});
    if (chk.v == verdict::io) {
      // "unable to open database file" says little: a read-only file system, say, is the reason.
      auto ro = not_writable(path);
      return tl::unexpected(open_error{open_error::retry, "cannot read " + path + ": " + chk.why +
                                                              (ro.empty() ? "" : " (" + ro + ")")});
    }
    if (chk.v == verdict::bad) {
      if (attempt > 0)
        return tl::unexpected(open_error{
            open_error::retry, path + " is still unusable after a fresh start: " + chk.why});
      sqlite3_close_v2(c.release());
      auto moved = set_aside(path);
      if (!moved)
        return tl::unexpected(open_error{open_error::refused, path + " is damaged (" + chk.why +
                                                                  ") and " + moved.error() +
                                                                  "; history is off for this run"});
      notes.push_back(path + " was damaged (" + chk.why + "); it was kept as " + *moved +
                      " and a new history database was started");
      continue;
    }
    // SQLite falls back to read-only when the file cannot be opened for writing (a read-only
    // file system, permissions): that is no writer's connection. Try again later.
    if (sqlite3_db_readonly(c.db, "main") == 1) {
      auto why = not_writable(path);
      return tl::unexpected(open_error{
          open_error::retry,
          "cannot write " + path + ": " + (why.empty() ? "SQLite opened it read-only" : why)});
    }
    std::string err;
    if (!exec(c.db, "PRAGMA journal_mode=WAL", err))
      return tl::unexpected(
          open_error{open_error::retry, "cannot use WAL on " + path + ": " + err});
    exec(c.db, synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL", err);
    exec(c.db, "PRAGMA cache_size=-16384", err);  // 16 MiB
    exec(c.db, "PRAGMA temp_store=MEMORY", err);
    if (chk.version < schema_version) {
      if (chk.version > 0)
        notes.push_back(path + ": schema version " + std::to_string(chk.version) + " migrated to " +
                        std::to_string(schema_version));
      if (auto m = migrate(c.db, static_cast<int>(chk.version), schema_version); !m)
        return tl::unexpected(open_error{open_error::retry, path + ": " + m.error()});
    }
    return c.release();
  }
  return tl::unexpected(open_error{open_error::retry, "cannot open " + path});
}

}  // namespace sonde::engine::history
