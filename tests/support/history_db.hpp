#pragma once
// Read a history database (engine/src/history/schema.cpp) the way an operator would, with
// sqlite3, independently of the store's own reader: the agents' stored results and positions.
#include <sqlite3.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace sonde::test {

class history_db {
 public:
  explicit history_db(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      std::string e = db_ ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close_v2(db_);
      throw std::runtime_error("cannot open " + path + ": " + e);
    }
    sqlite3_busy_timeout(db_, 5000);
  }
  history_db(const history_db&) = delete;
  history_db& operator=(const history_db&) = delete;
  ~history_db() { sqlite3_close_v2(db_); }

  struct row {
    std::uint64_t seq = 0;
    std::int64_t t = 0;
    std::string task;
  };
  /// The results of tasks "<agent>/...", ordered by time (then seq).
  std::vector<row> agent_rows(const std::string& agent) const {
    std::vector<row> out;
    auto* st = prepare(
        "SELECT result.seq, result.t, task.name FROM result JOIN task ON result.task = task.id "
        "WHERE substr(task.name, 1, length(?1) + 1) = ?1 || '/' ORDER BY result.t, result.seq");
    sqlite3_bind_text(st, 1, agent.c_str(), -1, SQLITE_TRANSIENT);
    while (sqlite3_step(st) == SQLITE_ROW) {
      row r;
      r.seq = static_cast<std::uint64_t>(sqlite3_column_int64(st, 0));
      r.t = sqlite3_column_int64(st, 1);
      r.task = reinterpret_cast<const char*>(sqlite3_column_text(st, 2));
      out.push_back(std::move(r));
    }
    sqlite3_finalize(st);
    return out;
  }
  /// The seqs of an agent's stored results, in time order.
  std::vector<std::uint64_t> seqs(const std::string& agent) const {
    std::vector<std::uint64_t> out;
    for (auto& r : agent_rows(agent)) out.push_back(r.seq);
    return out;
  }
  /// The stored queue position (last_seq) of (agent, queue_id); -1 when there is none.
  std::int64_t position(const std::string& agent, const std::string& queue_id) const {
    auto* st = prepare("SELECT last_seq FROM agent_queue WHERE agent = ?1 AND queue_id = ?2");
    sqlite3_bind_text(st, 1, agent.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, queue_id.c_str(), -1, SQLITE_TRANSIENT);
    std::int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
  }
  /// The first column of the first row of `sql` as text ("" when no row).
  std::string text(const std::string& sql) const {
    auto* st = prepare(sql.c_str());
    std::string v;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
      v = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return v;
  }

 private:
  sqlite3_stmt* prepare(const char* sql) const {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &st, nullptr) != SQLITE_OK)
      throw std::runtime_error(std::string("cannot prepare ") + sql + ": " + sqlite3_errmsg(db_));
    return st;
  }
  sqlite3* db_ = nullptr;
};

}  // namespace sonde::test
