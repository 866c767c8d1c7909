// sonde_history_bench: the history store (engine/src/history) under load, in-process, for
// benchmarks/history_bench.sh (run by hand; not a test). Three modes, each bounded in count and
// time, each writing only into the directory it is given:
//
//   ingest DIR [RATE] [SECS] [TASKS]
//       feeds store::add_result at a paced RATE results/s (default 20,000) for SECS seconds
//       (default 20) over TASKS tasks (default 2,000), then sync(). Prints the achieved rate,
//       drops, the writer thread's CPU per result, commit latency p50/p99/max and bytes on disk;
//       then the floor: the same raw rows into a bare table of the same shape (no rollups).
//   day DIR [TASKS] [INTERVAL_S]
//       one simulated UTC day of TASKS tasks (default 100) at INTERVAL_S (default 10) seconds
//       through the store with a fake clock, then the size of each table (SQLite's dbstat):
//       bytes per task per day for raw, minute, hour and day rows, and at default retention.
//   uptime DIR [TASKS] [DAYS] [SPACING_S] [RUNS]
//       TASKS tasks (default 1,000) with one result each per SPACING_S (default 900) seconds over
//       DAYS days (default 31) and one per minute over the last 26 hours, through the store,
//       the fake clock following the data so that retention expires raw and minute rows as in
//       a long-running engine; then query_uptime over all tasks for {"30d"} and for the default
//       five windows, RUNS times each (default 10): median and max. A database already in DIR
//       (from an earlier run with the same arguments) is reused.
//
// The results are shaped like an ICMP task's: a latency, five metrics (loss, rtt_min, rtt_avg,
// rtt_max, jitter) of which one (rtt_avg) is used by a condition and so rolled up too, mostly
// ok with a few warning, critical (timeout, with a message) and unknown results.
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <asio/io_context.hpp>

#include "history/codec.hpp"
#include "history/query.hpp"
#include "history/store.hpp"

using namespace sonde;
using namespace sonde::engine::history;
namespace fs = std::filesystem;
using steady = std::chrono::steady_clock;

namespace {

double secs_since(steady::time_point t0) {
  return std::chrono::duration<double>(steady::now() - t0).count();
}

// ---- realistic results ------------------------------------------------------------------------

struct task_model {
  std::shared_ptr<const task_ident> ident;
  double base_ms = 1;  // typical round trip
  double bad = 0;      // share of critical results
};

std::vector<task_model> make_tasks(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  // Round trips spread from sub-millisecond (LAN) to ~150 ms (other continents).
  std::lognormal_distribution<double> base(std::log(8.0), 1.2);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<task_model> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    auto t = std::make_shared<task_ident>();
    char name[32], target[32];
    std::snprintf(name, sizeof name, "ping-%05zu", i);
    std::snprintf(target, sizeof target, "192.0.2.%zu", i % 250 + 1);  // never contacted
    t->name = name;
    t->type = "icmp";
    t->target = target;
    t->rollup_metrics = {"rtt_avg"};
    task_model m;
    m.ident = std::move(t);
    m.base_ms = std::clamp(base(rng), 0.2, 300.0);
    // Most tasks are healthy; one in ten fails now and then, one in a hundred often.
    double r = u(rng);
    m.bad = r < 0.01 ? 0.05 : r < 0.1 ? 0.002 : 0.0;
    out.push_back(std::move(m));
  }
  return out;
}

class result_maker {
 public:
  explicit result_maker(std::uint64_t seed) : rng_(seed) {}
  result_row make(const task_model& t, std::int64_t time_ms) {
    result_row r;
    r.task = t.ident;
    r.time_ms = time_ms;
    double u = uni_(rng_);
    if (u < t.bad) {
      r.status = 2;
      r.reason = 1;  // timeout
      r.message = "no reply to 3 echo requests within 1s";
      r.metrics = {{"loss", 100}};  // no round trips without replies
      return r;
    }
    if (u > 0.9995) {  // the probe could not run (resolver, socket...)
      r.status = 3;
      r.reason = 9;
      r.message = "cannot open an ICMP socket: Operation not permitted";
      return r;
    }
    // Three echoes around the task's typical round trip with a long-ish tail.
    double rtt[3];
    for (double& x : rtt) x = t.base_ms * std::exp(0.08 * norm_(rng_)) * (uni_(rng_) < 0.01 ? 3 : 1);
    std::sort(rtt, rtt + 3);
    double avg = (rtt[0] + rtt[1] + rtt[2]) / 3;
    double jitter = (std::abs(rtt[1] - rtt[0]) + std::abs(rtt[2] - rtt[1])) / 2;
    bool lost = uni_(rng_) < 0.003;
    r.status = avg > t.base_ms * 2.5 || lost ? 1 : 0;
    r.reason = 0;
    if (r.status) r.message = lost ? "loss 33.3% >= 30%" : "rtt_avg above 2.5x its baseline";
    r.latency_ms = avg;
    r.metrics = {{"loss", lost ? 33.333333 : 0.0},
                 {"rtt_min", rtt[0] / 1000},
                 {"rtt_avg", avg / 1000},
                 {"rtt_max", rtt[2] / 1000},
                 {"jitter", jitter / 1000}};
    return r;
  }

 private:
  std::mt19937_64 rng_;
  std::uniform_real_distribution<double> uni_{0, 1};
  std::normal_distribution<double> norm_{0, 1};
};

// ---- threads' CPU -----------------------------------------------------------------------------

std::set<long> thread_ids() {
  std::set<long> out;
  for (const auto& e : fs::directory_iterator("/proc/self/task"))
    out.insert(std::stol(e.path().filename().string()));
  return out;
}

// Nanoseconds a thread has run (/proc/self/task/TID/schedstat, first field).
double thread_cpu_ns(long tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/schedstat");
  double ns = 0;
  f >> ns;
  return ns;
}

double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

double rusage_s(int who) {
  rusage ru{};
  getrusage(who, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto i = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size()))) - 1;
  return v[std::min(i, v.size() - 1)];
}

std::uintmax_t file_size_or0(const std::string& p) {
  std::error_code ec;
  auto s = fs::file_size(p, ec);
  return ec ? 0 : s;
}

void log_line(const std::string& l) {
  std::fprintf(stderr, "history: %s\n", l.c_str());
}

// ---- ingest -----------------------------------------------------------------------------------

// The floor: the same raw rows into a bare table of the same shape (no rollups, no expiry, no
// queue), in transactions of 4,096 rows, WAL and synchronous=FULL as the store has them, on
// this thread. Returns the thread's CPU seconds per row, or a negative number on failure.
double raw_insert_floor(const std::string& path, std::uint64_t n, std::size_t ntasks,
                        double per_ms, std::int64_t wall0) {
  for (const char* sfx : {"", "-wal", "-shm"}) fs::remove(path + sfx);
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) return -1;
  auto exec = [&](const char* q) {
    return sqlite3_exec(db, q, nullptr, nullptr, nullptr) == SQLITE_OK;
  };
  bool ok = exec("PRAGMA journal_mode=WAL") && exec("PRAGMA synchronous=FULL") &&
            exec("PRAGMA cache_size=-16384") &&
            exec("CREATE TABLE result(task INTEGER NOT NULL, t INTEGER NOT NULL, status INTEGER "
                 "NOT NULL, reason INTEGER NOT NULL, flags INTEGER NOT NULL, latency_us INTEGER, "
                 "message TEXT, metrics BLOB, seq INTEGER, PRIMARY KEY(task, t)) WITHOUT ROWID");
  sqlite3_stmt* ins = nullptr;
  ok = ok && sqlite3_prepare_v2(db,
                                "INSERT OR IGNORE INTO result(task,t,status,reason,flags,"
                                "latency_us,message,metrics,seq) VALUES(?,?,?,?,?,?,?,?,?)",
                                -1, &ins, nullptr) == SQLITE_OK;
  if (!ok) {
    sqlite3_close(db);
    return -1;
  }
  auto tasks = make_tasks(ntasks, 1);
  result_maker mk(2);
  // The rows are made before the clock starts: only the inserts are timed.
  std::vector<std::pair<std::int64_t, result_row>> rows;  // task id, row
  rows.reserve(4096);
  double cpu = 0;
  for (std::uint64_t i = 0; i < n && ok;) {
    rows.clear();
    for (; i < n && rows.size() < 4096; ++i)
      rows.emplace_back(
          static_cast<std::int64_t>(i % ntasks) + 1,
          mk.make(tasks[i % ntasks],
                  wall0 + static_cast<std::int64_t>(static_cast<double>(i) / per_ms)));
    double c0 = thread_cpu_s();
    ok = exec("BEGIN IMMEDIATE");
    for (const auto& [task_id, r] : rows) {
      std::vector<id_value> ids;
      for (std::size_t k = 0; k < r.metrics.size(); ++k)
        ids.push_back({static_cast<std::uint32_t>(k + 1), r.metrics[k].value});
      std::string blob = encode_metrics(ids);
      sqlite3_bind_int64(ins, 1, task_id);
      sqlite3_bind_int64(ins, 2, r.time_ms);
      sqlite3_bind_int(ins, 3, r.status);
      sqlite3_bind_int(ins, 4, r.reason);
      sqlite3_bind_int(ins, 5, 0);
      if (r.latency_ms) sqlite3_bind_int64(ins, 6, std::llround(*r.latency_ms * 1000.0));
      if (r.status != 0 && !r.message.empty())
        sqlite3_bind_text(ins, 7, r.message.data(), static_cast<int>(r.message.size()),
                          SQLITE_STATIC);
      if (!blob.empty())
        sqlite3_bind_blob(ins, 8, blob.data(), static_cast<int>(blob.size()), SQLITE_STATIC);
      ok = ok && sqlite3_step(ins) == SQLITE_DONE;
      sqlite3_reset(ins);
      sqlite3_clear_bindings(ins);
    }
    ok = ok && exec("COMMIT");
    cpu += thread_cpu_s() - c0;
  }
  sqlite3_finalize(ins);
  sqlite3_close(db);
  for (const char* sfx : {"", "-wal", "-shm"}) fs::remove(path + sfx);
  return ok ? cpu / static_cast<double>(n) : -1;
}

int run_ingest(const std::string& dir, double rate, double secs, std::size_t ntasks) {
  fs::create_directories(dir);
  std::string path = dir + "/history.db";
  asio::io_context io;
  store_options o;
  o.path = path;
  o.log = log_line;  // settings as `sonde run` has them by default; synchronous=FULL
  store st(io, o);
  auto before = thread_ids();
  st.start();
  while (st.state() == "starting") std::this_thread::sleep_for(std::chrono::milliseconds(5));
  if (st.state() != "ok") {
    std::fprintf(stderr, "store: %s\n", st.status().dump().c_str());
    return 1;
  }
  std::set<long> store_threads;
  for (long t : thread_ids())
    if (!before.count(t)) store_threads.insert(t);
  std::map<long, double> cpu0;
  for (long t : store_threads) cpu0[t] = thread_cpu_ns(t);

  auto tasks = make_tasks(ntasks, 1);
  result_maker mk(2);
  // Commit figures: status() polled every 2 ms; each new commit's duration and batch noted.
  std::atomic<bool> done{false};
  std::vector<double> commit_ms;
  std::vector<double> batches;
  std::uint64_t missed = 0;
  long monitor_tid = 0;
  std::thread monitor([&] {
    monitor_tid = static_cast<long>(syscall(SYS_gettid));
    std::uint64_t seen = 0;
    while (!done.load()) {
      auto s = st.status();
      auto c = s["commits"].get<std::uint64_t>();
      if (c != seen) {
        if (c > seen + 1 && seen) missed += c - seen - 1;
        commit_ms.push_back(s["last_commit_ms"].get<double>());
        batches.push_back(s["last_batch"].get<double>());
        seen = c;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });

  const auto total = static_cast<std::uint64_t>(rate * secs);
  std::uint64_t sent = 0, refused = 0;
  double feeder0 = rusage_s(RUSAGE_THREAD), proc0 = rusage_s(RUSAGE_SELF);
  auto t0 = steady::now();
  const auto wall0 = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  const double per_ms = rate / 1000.0;
  while (sent < total && secs_since(t0) < secs + 10) {
    auto due = std::min<std::uint64_t>(total, static_cast<std::uint64_t>(secs_since(t0) * rate));
    for (; sent < due; ++sent) {
      // Task sent % n; its results 1/(rate/n) s apart: every (task, ms) is distinct.
      auto t_ms = wall0 + static_cast<std::int64_t>(static_cast<double>(sent) / per_ms);
      if (!st.add_result(mk.make(tasks[sent % ntasks], t_ms))) ++refused;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  double feed_s = secs_since(t0);
  double feeder_cpu = rusage_s(RUSAGE_THREAD) - feeder0;
  bool synced = st.sync(std::chrono::seconds(60));
  double drained_s = secs_since(t0);
  double proc_cpu = rusage_s(RUSAGE_SELF) - proc0;
  done = true;
  monitor.join();
  std::map<long, double> cpu;
  for (long t : store_threads) cpu[t] = (thread_cpu_ns(t) - cpu0[t]) / 1e9;
  auto status = st.status();
  std::uint64_t written = status["written"].get<std::uint64_t>();
  auto db_bytes = file_size_or0(path), wal_bytes = file_size_or0(path + "-wal");
  // The writer is the store thread that worked; the other one (the reader) waits for queries.
  long writer = 0;
  double writer_cpu = -1, others = 0;
  for (auto& [t, c] : cpu) {
    if (c > writer_cpu) {
      if (writer_cpu >= 0) others += writer_cpu;
      writer = t;
      writer_cpu = c;
    } else {
      others += c;
    }
  }
  st.stop();
  auto db_final = file_size_or0(path);

  std::printf("ingest: %zu tasks, asked %.0f results/s for %.0f s (%llu results)\n", ntasks, rate,
              secs, static_cast<unsigned long long>(total));
  std::printf("  fed %llu in %.2f s (%.0f/s); all committed %.2f s after the start (sync %s): "
              "%.0f results/s stored\n",
              static_cast<unsigned long long>(sent), feed_s, static_cast<double>(sent) / feed_s,
              drained_s, synced ? "ok" : "FAILED", static_cast<double>(written) / drained_s);
  std::printf("  written %llu, dropped %llu (add_result refused %llu), duplicates %llu, "
              "commit failures %llu\n",
              static_cast<unsigned long long>(written),
              static_cast<unsigned long long>(status["dropped"].get<std::uint64_t>()),
              static_cast<unsigned long long>(refused),
              static_cast<unsigned long long>(status["duplicates"].get<std::uint64_t>()),
              static_cast<unsigned long long>(status["commit_failures"].get<std::uint64_t>()));
  std::printf("  writer thread (tid %ld): %.2f s CPU = %.2f us per result, %.1f%% of one core "
              "over %.1f s; reader thread %.3f s\n",
              writer, writer_cpu, 1e6 * writer_cpu / std::max<double>(1, static_cast<double>(written)),
              100 * writer_cpu / drained_s, drained_s, others);
  std::printf("  feeding thread (making rows + add_result): %.2f s = %.2f us per result; whole "
              "process %.2f s (process - feeder = %.2f us per result, monitor thread included)\n",
              feeder_cpu, 1e6 * feeder_cpu / static_cast<double>(std::max<std::uint64_t>(1, sent)),
              proc_cpu,
              1e6 * (proc_cpu - feeder_cpu) / std::max<double>(1, static_cast<double>(written)));
  std::printf("  commits %llu (seen %zu, missed by the 2 ms poll %llu): duration p50 %.2f ms, p99 "
              "%.2f ms, max %.2f ms (status max_commit_ms %.2f); batch median %.0f, max %.0f\n",
              static_cast<unsigned long long>(status["commits"].get<std::uint64_t>()),
              commit_ms.size(), static_cast<unsigned long long>(missed), quantile(commit_ms, 0.5),
              quantile(commit_ms, 0.99), quantile(commit_ms, 1.0),
              status["max_commit_ms"].get<double>(), quantile(batches, 0.5),
              quantile(batches, 1.0));
  std::printf("  on disk after sync: db %.1f MB + wal %.1f MB = %.0f bytes per result; after the "
              "closing checkpoint %.1f MB (%.0f bytes per result)\n",
              static_cast<double>(db_bytes) / 1e6, static_cast<double>(wal_bytes) / 1e6,
              static_cast<double>(db_bytes + wal_bytes) / std::max<double>(1, static_cast<double>(written)),
              static_cast<double>(db_final) / 1e6,
              static_cast<double>(db_final) / std::max<double>(1, static_cast<double>(written)));
  double floor_s = raw_insert_floor(dir + "/floor.db", written, ntasks, per_ms, wall0);
  double writer_per = writer_cpu / std::max<double>(1, static_cast<double>(written));
  std::printf("  floor (the same raw rows into a bare table, 4,096 per transaction, same pragmas, "
              "one thread): %.2f us CPU per row; the writer is %.1fx that\n",
              floor_s * 1e6, floor_s > 0 ? writer_per / floor_s : 0.0);
  std::printf("RESULT ingest rate=%.0f dropped=%llu writer_us=%.2f commit_p50=%.2f "
              "commit_p99=%.2f commit_max=%.2f bytes=%llu floor_us=%.2f\n",
              static_cast<double>(written) / drained_s,
              static_cast<unsigned long long>(status["dropped"].get<std::uint64_t>()),
              1e6 * writer_cpu / std::max<double>(1, static_cast<double>(written)),
              quantile(commit_ms, 0.5), quantile(commit_ms, 0.99),
              std::max(quantile(commit_ms, 1.0), status["max_commit_ms"].get<double>()),
              static_cast<unsigned long long>(db_final), floor_s * 1e6);
  return synced && status["dropped"].get<std::uint64_t>() == 0 ? 0 : 1;
}

// ---- feeding simulated time -------------------------------------------------------------------

// 2026-01-05T00:00:00Z: a Monday, midnight UTC.
constexpr std::int64_t day0_ms = 1767571200000;

// Feeds results of `tasks` at times [from, to) every `spacing_ms` (task i offset by
// i * spacing / n inside each slot), as fast as the store takes them: batches of `chunk`, then
// sync(). `now_ms` follows the data when non-null (the store's fake clock).
bool feed_range(store& st, const std::vector<task_model>& tasks, std::int64_t from_ms,
                std::int64_t to_ms, std::int64_t spacing_ms, std::atomic<std::int64_t>* now_ms,
                std::uint64_t& fed) {
  result_maker mk(3);
  const std::size_t chunk = 100000;
  std::size_t in_chunk = 0;
  auto n = static_cast<std::int64_t>(tasks.size());
  for (std::int64_t slot = from_ms; slot < to_ms; slot += spacing_ms) {
    for (std::int64_t i = 0; i < n; ++i) {
      auto t = slot + i * spacing_ms / n;
      if (now_ms) now_ms->store(t);
      if (!st.add_result(mk.make(tasks[static_cast<std::size_t>(i)], t))) {
        std::fprintf(stderr, "add_result refused (dropped %llu)\n",
                     static_cast<unsigned long long>(st.dropped()));
        return false;
      }
      ++fed;
      if (++in_chunk == chunk) {
        in_chunk = 0;
        if (!st.sync(std::chrono::minutes(5))) return false;
      }
    }
  }
  return st.sync(std::chrono::minutes(5));
}

struct table_size {
  std::int64_t rows = 0, pages = 0, bytes = 0, payload = 0;
};

std::map<std::string, table_size> table_sizes(sqlite3* db) {
  std::map<std::string, table_size> out;
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db,
                         "SELECT name, count(*), sum(pgsize), sum(payload) FROM dbstat "
                         "GROUP BY name",
                         -1, &s, nullptr) != SQLITE_OK) {
    std::fprintf(stderr, "dbstat: %s\n", sqlite3_errmsg(db));
    return out;
  }
  while (sqlite3_step(s) == SQLITE_ROW) {
    auto& t = out[reinterpret_cast<const char*>(sqlite3_column_text(s, 0))];
    t.pages = sqlite3_column_int64(s, 1);
    t.bytes = sqlite3_column_int64(s, 2);
    t.payload = sqlite3_column_int64(s, 3);
  }
  sqlite3_finalize(s);
  for (auto& [name, t] : out) {
    if (name.rfind("sqlite_", 0) == 0) continue;
    std::string q = "SELECT count(*) FROM \"" + name + "\"";
    if (sqlite3_prepare_v2(db, q.c_str(), -1, &s, nullptr) == SQLITE_OK) {
      if (sqlite3_step(s) == SQLITE_ROW) t.rows = sqlite3_column_int64(s, 0);
      sqlite3_finalize(s);
    }
  }
  return out;
}

double blob_avg(sqlite3* db, const std::string& table, const char* col) {
  sqlite3_stmt* s = nullptr;
  std::string q = "SELECT avg(length(" + std::string(col) + ")) FROM " + table;
  double v = 0;
  if (sqlite3_prepare_v2(db, q.c_str(), -1, &s, nullptr) == SQLITE_OK) {
    if (sqlite3_step(s) == SQLITE_ROW) v = sqlite3_column_double(s, 0);
    sqlite3_finalize(s);
  }
  return v;
}

// ---- day: bytes per task per day --------------------------------------------------------------

int run_day(const std::string& dir, std::size_t ntasks, std::int64_t interval_s) {
  fs::create_directories(dir);
  std::string path = dir + "/history.db";
  fs::remove(path);
  fs::remove(path + "-wal");
  fs::remove(path + "-shm");
  asio::io_context io;
  store_options o;
  o.path = path;
  o.log = log_line;
  o.settings.queue = 1000000;
  // Nothing expires: "now" is just after the simulated day.
  o.clock = [] {
    return std::chrono::system_clock::time_point(std::chrono::milliseconds(day0_ms + 86400000 + 3600000));
  };
  store st(io, o);
  st.start();
  auto tasks = make_tasks(ntasks, 4);
  std::uint64_t fed = 0;
  auto t0 = steady::now();
  bool ok = feed_range(st, tasks, day0_ms, day0_ms + 86400000, interval_s * 1000, nullptr, fed);
  double took = secs_since(t0);
  auto status = st.status();
  st.stop();  // closing checkpoint: everything in the main file
  if (!ok) {
    std::fprintf(stderr, "feeding failed: %s\n", status.dump().c_str());
    return 1;
  }
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) return 1;
  auto sizes = table_sizes(db);
  auto n = static_cast<double>(ntasks);
  auto file = static_cast<double>(file_size_or0(path));
  std::printf("day: %zu tasks at %llds for one simulated day: %llu results fed in %.1f s "
              "(%.0f/s), written %llu, dropped %llu; file %.1f MB\n",
              ntasks, static_cast<long long>(interval_s), static_cast<unsigned long long>(fed),
              took, static_cast<double>(fed) / took,
              static_cast<unsigned long long>(status["written"].get<std::uint64_t>()),
              static_cast<unsigned long long>(status["dropped"].get<std::uint64_t>()), file / 1e6);
  std::printf("  %-22s %10s %8s %12s %14s %16s\n", "table/index", "rows", "pages",
              "bytes(pages)", "payload bytes", "per task per day");
  double other = 0;
  for (auto& [name, t] : sizes) {
    std::printf("  %-22s %10lld %8lld %12lld %14lld %13.0f B\n", name.c_str(),
                static_cast<long long>(t.rows), static_cast<long long>(t.pages),
                static_cast<long long>(t.bytes), static_cast<long long>(t.payload),
                static_cast<double>(t.bytes) / n);
    if (name.rfind("rollup_", 0) != 0 && name != "result") other += static_cast<double>(t.bytes);
  }
  auto per = [&](const char* name) { return static_cast<double>(sizes[name].bytes) / n; };
  double raw = per("result"), minute = per("rollup_minute"), hour = per("rollup_hour"),
         day = per("rollup_day");
  std::printf("  average blob sizes: raw metrics %.0f B; minute latency %.0f + metrics %.0f B; "
              "hour %.0f + %.0f B; day %.0f + %.0f B\n",
              blob_avg(db, "result", "metrics"), blob_avg(db, "rollup_minute", "latency"),
              blob_avg(db, "rollup_minute", "metrics"), blob_avg(db, "rollup_hour", "latency"),
              blob_avg(db, "rollup_hour", "metrics"), blob_avg(db, "rollup_day", "latency"),
              blob_avg(db, "rollup_day", "metrics"));
  sqlite3_close(db);
  std::printf("  per task per day (pages, so B-tree slack included): raw %.1f KB, minute %.1f KB, "
              "hour %.2f KB, day %.2f KB\n",
              raw / 1e3, minute / 1e3, hour / 1e3, day / 1e3);
  std::printf("  after rollup (hour + day rows only): %.2f KB per task per day (goal: under 50 KB)\n",
              (hour + day) / 1e3);
  history_settings def;
  double days_raw = static_cast<double>(def.raw.count()) / 86400,
         days_min = static_cast<double>(def.minute.count()) / 86400,
         days_hour = static_cast<double>(def.hour.count()) / 86400,
         days_day = static_cast<double>(def.day.count()) / 86400;
  double total = raw * days_raw + minute * days_min + hour * days_hour + day * days_day;
  std::printf("  at default retention (raw %.0fd, minute %.0fd, hour %.0fd, day %.0fd) per task: "
              "raw %.2f MB + minute %.2f MB + hour %.2f MB + day %.2f MB = %.2f MB "
              "(other tables and indexes: %.0f B per task)\n",
              days_raw, days_min, days_hour, days_day, raw * days_raw / 1e6,
              minute * days_min / 1e6, hour * days_hour / 1e6, day * days_day / 1e6, total / 1e6,
              other / n);
  std::printf("RESULT day raw=%.0f minute=%.0f hour=%.0f day=%.0f after_rollup=%.0f "
              "retention_total=%.0f\n",
              raw, minute, hour, day, hour + day, total);
  return 0;
}

// ---- uptime: a 30-day query over many tasks ----------------------------------------------------

int run_uptime(const std::string& dir, std::size_t ntasks, int days, std::int64_t spacing_s,
               int runs) {
  fs::create_directories(dir);
  std::string path = dir + "/history.db";
  const std::int64_t begin_ms = day0_ms;
  // "now": 13h37m into the last day, so every window has partial days and hours at its edges.
  const std::int64_t now_ms = begin_ms + std::int64_t{days} * 86400000 + (13 * 60 + 37) * 60000;
  std::string stamp = dir + "/generated";
  std::string want = "v2 " + std::to_string(ntasks) + " " + std::to_string(days) + " " +
                     std::to_string(spacing_s);
  std::string have;
  if (std::ifstream f(stamp); f) std::getline(f, have);
  history_settings settings;
  if (have != want || !fs::exists(path)) {
    fs::remove(path);
    fs::remove(path + "-wal");
    fs::remove(path + "-shm");
    fs::remove(stamp);
    asio::io_context io;
    std::atomic<std::int64_t> clock_ms{begin_ms};
    store_options o;
    o.path = path;
    o.log = log_line;
    o.settings.queue = 1000000;
    o.sync = false;  // synchronous=NORMAL: the same rows, generated faster
    o.clock = [&clock_ms] {
      return std::chrono::system_clock::time_point(std::chrono::milliseconds(clock_ms.load()));
    };
    auto tasks = make_tasks(ntasks, 5);
    std::uint64_t fed = 0, expired = 0;
    auto t0 = steady::now();
    // Three stretches, each through a store of its own on the same file:
    //  A. up to 7 days before "now", with the shortest retention [history] allows (raw 1h,
    //     minute 2h): what is left of it at the end is hour and day rows, as in an engine that
    //     has run for a month, and its raw and minute rows are deleted while their pages are
    //     still hot (much faster to generate than with the default retention);
    //  B. the last 7 days but 26 hours, default retention: raw rows kept, minute rows older
    //     than 2 days expired;
    //  C. the last 26 hours at one result per minute at least, so that every minute row a
    //     window's edge reads (the 1h and 24h windows' starts, every window's end) is there, as
    //     for a real task at 10 s or 60 s.
    const std::int64_t a_end = std::max(begin_ms, now_ms - 7 * 86400000);
    const std::int64_t c_begin = std::max(begin_ms, now_ms - 26 * 3600000);
    struct stretch {
      std::int64_t from, to, spacing_ms;
      bool shortest;
    };
    for (const auto& sp : {stretch{begin_ms, a_end, spacing_s * 1000, true},
                           stretch{a_end, c_begin, spacing_s * 1000, false},
                           stretch{c_begin, now_ms, std::min<std::int64_t>(spacing_s, 60) * 1000,
                                   false}}) {
      if (sp.from >= sp.to) continue;
      auto so = o;
      if (sp.shortest) {
        so.settings.raw = std::chrono::hours(1);
        so.settings.minute = std::chrono::hours(2);
      }
      store st(io, so);
      st.start();
      auto fed0 = fed;
      auto ts = steady::now();
      bool ok = feed_range(st, tasks, sp.from, sp.to, sp.spacing_ms, &clock_ms, fed);
      clock_ms = sp.to;
      ok = ok && st.sync(std::chrono::minutes(5));  // expiry to its end
      auto s = st.status();
      expired += s["expired_rows"].get<std::uint64_t>();
      std::printf("  stretch of %.1f days, one result per task per %llds%s: %llu results in %.1f s\n",
                  static_cast<double>(sp.to - sp.from) / 86400000,
                  static_cast<long long>(sp.spacing_ms / 1000),
                  sp.shortest ? " (retention raw 1h, minute 2h)" : "",
                  static_cast<unsigned long long>(fed - fed0), secs_since(ts));
      if (!ok || s["dropped"].get<std::uint64_t>() != 0) {
        std::fprintf(stderr, "generating failed: %s\n", s.dump().c_str());
        return 1;
      }
    }
    std::printf("uptime: generated %llu results (%zu tasks, one per %llds over %d days and "
                "13.6 hours, one per minute over the last 26 hours) in %.1f s (%.0f/s), none "
                "dropped; expired rows %llu\n",
                static_cast<unsigned long long>(fed), ntasks, static_cast<long long>(spacing_s),
                days, secs_since(t0), static_cast<double>(fed) / secs_since(t0),
                static_cast<unsigned long long>(expired));
    std::ofstream(stamp) << want << "\n";
  } else {
    std::printf("uptime: reusing %s (%s)\n", path.c_str(), want.c_str());
  }
  sqlite3* db = nullptr;
  // As the store's reader thread opens it.
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr) !=
      SQLITE_OK)
    return 1;
  sqlite3_busy_timeout(db, 2000);
  auto sizes = table_sizes(db);
  std::printf("  database %.1f MB: rows raw %lld, minute %lld, hour %lld, day %lld\n",
              static_cast<double>(file_size_or0(path)) / 1e6,
              static_cast<long long>(sizes["result"].rows),
              static_cast<long long>(sizes["rollup_minute"].rows),
              static_cast<long long>(sizes["rollup_hour"].rows),
              static_cast<long long>(sizes["rollup_day"].rows));
  auto bench = [&](const std::vector<std::string>& windows, const char* label) {
    uptime_query q;
    q.windows = windows;
    std::vector<double> ms, cpu_ms, dump_ms;
    std::size_t rows = 0;
    double sample = -1;
    for (int i = 0; i < runs; ++i) {
      auto t0 = steady::now();
      double c0 = thread_cpu_s();
      auto r = query_uptime(db, q, settings, now_ms);
      ms.push_back(secs_since(t0) * 1000);
      cpu_ms.push_back((thread_cpu_s() - c0) * 1000);
      if (!r) {
        std::fprintf(stderr, "query failed: %s\n", r.error().c_str());
        return std::vector<double>{};
      }
      auto t1 = steady::now();
      auto text = r->dump();
      dump_ms.push_back(secs_since(t1) * 1000);
      rows = (*r)["tasks"].size();
      auto& w = (*r)["tasks"][0]["windows"][windows.back()];
      sample = w["uptime"].is_number() ? w["uptime"].get<double>() : -1;
    }
    std::printf("  %s over all %zu tasks: query median %.1f ms, max %.1f ms, first %.1f ms "
                "(%d runs; its thread's CPU median %.1f ms); JSON text of the reply %.1f ms more "
                "(first task's uptime %.3f%%)\n",
                label, rows, quantile(ms, 0.5), quantile(ms, 1.0), ms.front(), runs,
                quantile(cpu_ms, 0.5), quantile(dump_ms, 0.5), sample);
    return ms;
  };
  auto a = bench({"30d"}, "uptime {30d}");
  auto b = bench({"1h", "24h", "7d", "30d", "1y"}, "uptime {1h,24h,7d,30d,1y}");
  sqlite3_close(db);
  if (a.empty() || b.empty()) return 1;
  // For comparison only (not what the store does today): the same queries on a connection
  // with a 64 MiB page cache (the reader's is SQLite's default, 2 MiB), each query inside one
  // read transaction (today each of its ~5 statements per task takes its own).
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr) ==
      SQLITE_OK) {
    sqlite3_exec(db, "PRAGMA cache_size=-65536", nullptr, nullptr, nullptr);
    for (bool tx : {false, true}) {
      for (const auto& windows : std::vector<std::vector<std::string>>{
               {"30d"}, {"1h", "24h", "7d", "30d", "1y"}}) {
        uptime_query q;
        q.windows = windows;
        std::vector<double> ms;
        for (int i = 0; i < runs; ++i) {
          auto t0 = steady::now();
          if (tx) sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
          auto r = query_uptime(db, q, settings, now_ms);
          if (tx) sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
          ms.push_back(secs_since(t0) * 1000);
        }
        std::printf("  (compare: 64 MiB cache%s, %zu window%s: median %.1f ms, max %.1f ms)\n",
                    tx ? " + one read transaction" : "", windows.size(),
                    windows.size() > 1 ? "s" : "", quantile(ms, 0.5), quantile(ms, 1.0));
      }
    }
    sqlite3_close(db);
  }
  std::printf("RESULT uptime q30d_median=%.1f q30d_max=%.1f q5_median=%.1f q5_max=%.1f\n",
              quantile(a, 0.5), quantile(a, 1.0), quantile(b, 0.5), quantile(b, 1.0));
  return 0;
}

int usage() {
  std::fprintf(stderr,
               "usage: sonde_history_bench ingest DIR [RATE] [SECS] [TASKS]\n"
               "       sonde_history_bench day DIR [TASKS] [INTERVAL_S]\n"
               "       sonde_history_bench uptime DIR [TASKS] [DAYS] [SPACING_S] [RUNS]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  std::string mode = argv[1], dir = argv[2];
  auto arg = [&](int i, double def) { return argc > i ? std::atof(argv[i]) : def; };
  if (mode == "ingest") {
    double rate = arg(3, 20000), secs = arg(4, 20);
    auto tasks = static_cast<std::size_t>(arg(5, 2000));
    if (rate < 1 || rate > 1e6 || secs <= 0 || secs > 300 || tasks < 1 || tasks > 1000000)
      return usage();
    return run_ingest(dir, rate, secs, tasks);
  }
  if (mode == "day") {
    auto tasks = static_cast<std::size_t>(arg(3, 100));
    auto interval = static_cast<std::int64_t>(arg(4, 10));
    if (tasks < 1 || tasks > 100000 || interval < 1 || tasks * 86400 / interval > 20000000)
      return usage();
    return run_day(dir, tasks, interval);
  }
  if (mode == "uptime") {
    auto tasks = static_cast<std::size_t>(arg(3, 1000));
    int days = static_cast<int>(arg(4, 31));
    auto spacing = static_cast<std::int64_t>(arg(5, 900));
    int runs = static_cast<int>(arg(6, 10));
    if (tasks < 1 || days < 1 || days > 400 || spacing < 1 || runs < 1 || runs > 1000 ||
        tasks * days * 86400 / spacing > 50000000)
      return usage();
    return run_uptime(dir, tasks, days, spacing, runs);
  }
  return usage();
}
