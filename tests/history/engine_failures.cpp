// History end to end, under failure: `sonde run` as a process with tcp tasks against loopback
// ports the test opens (and one it keeps closed), then SIGKILL in the middle of heavy writing, a
// full disk, a read-only file system, a damaged, foreign or newer database at start, and older
// schema versions to migrate. The database is checked with SQLite directly and through the
// control commands. The disk tests mount a tmpfs and so need root: they fail (never skip) if
// the mount is refused.
#include <signal.h>
#include <sqlite3.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>

#include "history/schema.hpp"
#include "support/files.hpp"
#include "support/line_client.hpp"
#include "support/process.hpp"
#include "support/receiver.hpp"

using namespace std::chrono_literals;
using json = nlohmann::json;
namespace fs = std::filesystem;
namespace history = sonde::engine::history;
using sonde::test::switch_port;
using sonde::test::wait_until;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// `sonde run FILE --quiet --control 127.0.0.1:0 --state-dir STATE` with stderr kept in a file;
// the control port is read from what it prints. SIGTERM (and reaped) when destroyed.
class engine {
 public:
  engine(const std::string& task_file, const std::string& state_dir, const std::string& err_file)
      : err_(err_file) {
    std::remove(err_.c_str());
    std::string cmd = "exec '" + std::string(SONDE_TEST_BIN_DIR) + "/sonde' run '" + task_file +
                      "' --quiet --control 127.0.0.1:0 --state-dir '" + state_dir + "' 2>'" + err_ +
                      "'";
    proc_ = std::make_unique<sonde::test::child_process>(
        std::vector<std::string>{"/bin/sh", "-c", cmd});
    static const std::regex listening("control: listening on 127\\.0\\.0\\.1:([0-9]+)");
    bool up = wait_until(
        [&] {
          std::smatch m;
          std::string e = err();
          if (std::regex_search(e, m, listening))
            port_ = static_cast<unsigned short>(std::stoi(m[1]));
          return port_ != 0 || !proc_->running();
        },
        15s);
    INFO("stderr: " << err());
    REQUIRE(up);
    REQUIRE(port_ != 0);
  }
  ~engine() { stop(); }
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  std::string err() const { return read_file(err_); }
  json cmd(const json& req) {
    sonde::test::line_client c(port_);
    c.set_timeout(10s);
    return c.call(req);
  }
  json history_status() { return cmd({{"command", "status"}})["history"]; }
  std::string history_state() { return history_status().value("state", ""); }
  std::uint64_t results_total() {
    return cmd({{"command", "status"}})["results"]["total"].get<std::uint64_t>();
  }
  // Wait until history's state is `state`; false after `limit`.
  bool wait_state(const std::string& state, std::chrono::milliseconds limit = 15s) {
    return wait_until([&] { return history_state() == state; }, limit);
  }
  void kill9() {
    ::kill(proc_->pid(), SIGKILL);
    REQUIRE(wait_until([&] { return !proc_->running(); }, 5s));
    proc_.reset();
  }
  void stop() {
    if (proc_) proc_->stop();
    proc_.reset();
  }

 private:
  std::string err_;
  std::unique_ptr<sonde::test::child_process> proc_;
  unsigned short port_ = 0;
};

// A tmpfs mounted at `dir` for the test's lifetime (unmounted, lazily if it must, when done).
class tmpfs_mount {
 public:
  tmpfs_mount(const std::string& dir, const std::string& size) : dir_(dir) {
    fs::create_directories(dir);
    std::string cmd = "mount -t tmpfs -o size=" + size + " tmpfs '" + dir + "' 2>&1";
    mounted_ = std::system(cmd.c_str()) == 0;
  }
  ~tmpfs_mount() {
    if (!mounted_) return;
    if (std::system(("umount '" + dir_ + "' 2>/dev/null").c_str()) != 0) {
      [[maybe_unused]] int rc = std::system(("umount -l '" + dir_ + "'").c_str());
    }
  }
  tmpfs_mount(const tmpfs_mount&) = delete;
  tmpfs_mount& operator=(const tmpfs_mount&) = delete;
  bool mounted() const { return mounted_; }
  // mount -o remount,OPTS; true on success.
  bool remount(const std::string& opts) {
    return std::system(("mount -o remount," + opts + " '" + dir_ + "' 2>&1").c_str()) == 0;
  }

 private:
  std::string dir_;
  bool mounted_ = false;
};

#define REQUIRE_MOUNTED(m, dir)                                                               \
  do {                                                                                        \
    if (!(m).mounted())                                                                       \
      FAIL("cannot mount a tmpfs at " << (dir)                                                \
                                      << ": this test needs root (CAP_SYS_ADMIN) to mount a " \
                                         "small file system; run the tests as root");         \
  } while (0)

// A SQLite connection for checking the database from outside the engine.
class db_conn {
 public:
  explicit db_conn(const std::string& path, bool read_only = true) {
    int flags = read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK)
      throw std::runtime_error("cannot open " + path + ": " + sqlite3_errmsg(db_));
    sqlite3_busy_timeout(db_, 5000);
  }
  ~db_conn() { sqlite3_close_v2(db_); }
  db_conn(const db_conn&) = delete;
  db_conn& operator=(const db_conn&) = delete;
  sqlite3* get() const { return db_; }
  void exec(const std::string& sql) {
    char* msg = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &msg) != SQLITE_OK) {
      std::string m = msg ? msg : "?";
      sqlite3_free(msg);
      throw std::runtime_error(sql + ": " + m);
    }
  }
  // The first column of every row, as text.
  std::vector<std::string> column(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) != SQLITE_OK)
      throw std::runtime_error(sql + ": " + sqlite3_errmsg(db_));
    std::vector<std::string> out;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      auto* t = sqlite3_column_text(st, 0);
      out.emplace_back(t ? reinterpret_cast<const char*>(t) : "");
    }
    std::string err = sqlite3_errmsg(db_);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) throw std::runtime_error(sql + ": " + err);
    return out;
  }
  std::int64_t integer(const std::string& sql) {
    auto c = column(sql);
    return c.empty() || c[0].empty() ? 0 : std::stoll(c[0]);
  }

 private:
  sqlite3* db_ = nullptr;
};

std::string tcp_task(const std::string& name, unsigned short port,
                     const std::string& interval = "200ms") {
  return "\n[[task]]\nname = \"" + name +
         "\"\ntype = \"tcp\"\ntarget = \"127.0.0.1:" + std::to_string(port) + "\"\ninterval = \"" +
         interval + "\"\ntimeout = \"" + interval + "\"\n";
}

// Rows of `task` in the result table (0 if the task is unknown).
std::int64_t rows_of(db_conn& db, const std::string& task) {
  return db.integer("SELECT count(*) FROM result JOIN task ON task.id = result.task WHERE name='" +
                    task + "'");
}

// Alarms whose task is `task` and whose state is `state`, from the `alarms` command.
bool alarm_in_state(engine& e, const std::string& task, const std::string& state) {
  auto r = e.cmd({{"command", "alarms"}});
  for (const auto& a : r["alarms"])
    if (a.value("task", "") == task && a.value("state", "") == state) return true;
  return false;
}

std::string fill_file_system(const std::string& file) {
  // dd stops with "No space left on device" (exit 1): that is the point.
  [[maybe_unused]] int rc =
      std::system(("dd if=/dev/zero of='" + file + "' bs=64k 2>/dev/null").c_str());
  return file;
}

}  // namespace

TEST_CASE(
    "history e2e: SIGKILL during heavy writing leaves an intact database missing at most one "
    "commit interval, and the engine starts again on it",
    "[history][integration]") {
  sonde::test::temp_dir dir;
  switch_port up;
  up.open();
  constexpr int tasks = 300;
  constexpr std::int64_t interval_ms = 200, commit_ms = 200;
  std::string toml = "[history]\ncommit_interval = \"" + std::to_string(commit_ms) + "ms\"\n";
  for (int i = 0; i < tasks; ++i)
    toml += tcp_task("t" + std::to_string(i), up.port(), std::to_string(interval_ms) + "ms");
  auto file = dir.write("tasks.toml", toml);
  auto state = dir.path() + "/state";
  auto db_path = state + "/history.db";
  std::int64_t killed_at = 0;
  std::uint64_t written_before = 0;
  {
    engine e(file, state, dir.path() + "/e1.err");
    REQUIRE(e.wait_state("ok"));
    REQUIRE(wait_until([&] { return e.history_status()["written"].get<std::uint64_t>() > 0; }));
    std::this_thread::sleep_for(4s);
    auto st = e.history_status();
    written_before = st["written"].get<std::uint64_t>();
    INFO(st.dump());
    CHECK(st["state"] == "ok");
    CHECK(written_before > static_cast<std::uint64_t>(tasks) * 5);
    killed_at = now_ms();
    e.kill9();
  }
  std::int64_t newest = 0;
  {
    db_conn db(db_path, false);  // read-write: recovers the WAL the way the engine will
    auto check = db.column("PRAGMA integrity_check");
    REQUIRE(check.size() == 1);
    CHECK(check[0] == "ok");
    auto rows = db.integer("SELECT count(*) FROM result");
    CHECK(rows >= static_cast<std::int64_t>(written_before));
    CHECK(db.integer("SELECT count(DISTINCT task) FROM result") == tasks);
    newest = db.integer("SELECT max(t) FROM result");
    auto gap = killed_at - newest;
    INFO("newest stored result started " << gap << " ms before the SIGKILL");
    CHECK(gap >= 0);
    // The documented bound: what arrived within one commit interval; one probe interval of
    // slack for the result that was in flight.
    CHECK(gap <= commit_ms + interval_ms);
    // Rollups are written in the transaction of their raw rows: after the crash they agree.
    for (const char* level : {"rollup_minute", "rollup_hour", "rollup_day"}) {
      INFO(level);
      CHECK(db.integer(std::string("SELECT sum(ok+warning+critical+unknown+maintenance) FROM ") +
                       level) == rows);
    }
  }
  engine e2(file, state, dir.path() + "/e2.err");
  REQUIRE(e2.wait_state("ok"));
  INFO(e2.err());
  CHECK(e2.err().find("damaged") == std::string::npos);
  REQUIRE(wait_until([&] { return e2.history_status()["written"].get<std::uint64_t>() > 0; }));
  db_conn db(db_path);
  REQUIRE(wait_until([&] { return db.integer("SELECT max(t) FROM result") > killed_at; }));
  CHECK(db.integer("SELECT count(*) FROM result WHERE t <= " + std::to_string(newest)) >=
        static_cast<std::int64_t>(written_before));
  auto r = e2.cmd({{"command", "uptime"}, {"task", "t7"}, {"windows", {"1h"}}});
  REQUIRE(r["ok"] == true);
  CHECK(r["tasks"][0]["windows"]["1h"]["ok"].get<int>() > 10);
}

TEST_CASE(
    "history e2e: a full disk fails history, not probing or alarms, and freeing space resumes "
    "writing with what was kept",
    "[history][integration]") {
  sonde::test::temp_dir dir;
  auto disk = dir.path() + "/disk";
  // Room for SQLite's WAL (it grows to about 4 MiB before the automatic checkpoint) and the
  // database: a smaller file system fills up with the WAL alone.
  tmpfs_mount mount(disk, "8m");
  REQUIRE_MOUNTED(mount, disk);
  switch_port up, flip;
  up.open();
  flip.open();
  auto file =
      dir.write("tasks.toml", "[alarms]\nfailure_threshold = 2\n[history]\npath = \"" + disk +
                                  "/history.db\"\ncommit_interval = \"100ms\"\n" +
                                  tcp_task("up", up.port()) + tcp_task("flip", flip.port()));
  engine e(file, dir.path() + "/state", dir.path() + "/e.err");
  REQUIRE(e.wait_state("ok"));
  REQUIRE(wait_until([&] { return e.history_status()["written"].get<std::uint64_t>() > 10; }));

  auto filler = fill_file_system(disk + "/filler");
  auto full_at = now_ms();
  REQUIRE(e.wait_state("failing", 10s));
  auto st = e.history_status();
  INFO(st.dump());
  CHECK_THAT(st["error"].get<std::string>(), Catch::Contains("full"));
  CHECK(e.err().find("database or disk is full") != std::string::npos);
  // Probing goes on, and alarms fire while history cannot write.
  auto before = e.results_total();
  flip.close();
  REQUIRE(wait_until([&] { return alarm_in_state(e, "flip", "firing"); }, 10s));
  CHECK(wait_until([&] { return e.results_total() > before + 10; }, 5s));
  // Full for a few seconds: what arrives meanwhile waits in memory.
  std::this_thread::sleep_for(2s);
  CHECK(e.history_state() == "failing");
  CHECK(e.history_status()["queued"].get<std::uint64_t>() > 10);
  auto written_full = e.history_status()["written"].get<std::uint64_t>();

  fs::remove(filler);
  auto freed_at = now_ms();
  REQUIRE(e.wait_state("ok", 5s));
  REQUIRE(wait_until(
      [&] { return e.history_status()["written"].get<std::uint64_t>() > written_full; }, 5s));
  db_conn db(disk + "/history.db");
  auto n1 = rows_of(db, "up");
  REQUIRE(wait_until([&] { return rows_of(db, "up") > n1; }, 5s));
  // What arrived while the disk was full was kept and written once there was room.
  CHECK(db.integer("SELECT count(*) FROM result WHERE t > " + std::to_string(full_at + 500) +
                   " AND t < " + std::to_string(freed_at - 500)) > 5);
  // The alarm that fired meanwhile is an incident.
  auto inc = e.cmd({{"command", "incidents"}, {"task", "flip"}});
  INFO(inc.dump());
  REQUIRE(inc["ok"] == true);
  REQUIRE(inc["incidents"].size() == 1);
  CHECK(inc["incidents"][0]["end"].is_null());
  CHECK(e.history_status()["dropped"] == 0);
}

TEST_CASE(
    "history e2e: a read-only file system fails history, not probing or alarms, and history "
    "resumes once it is writable again",
    "[history][integration]") {
  sonde::test::temp_dir dir;
  auto disk = dir.path() + "/disk";
  tmpfs_mount mount(disk, "8m");
  REQUIRE_MOUNTED(mount, disk);
  switch_port up, flip;
  up.open();
  flip.open();
  auto file =
      dir.write("tasks.toml", "[alarms]\nfailure_threshold = 2\n[history]\npath = \"" + disk +
                                  "/history.db\"\ncommit_interval = \"100ms\"\n" +
                                  tcp_task("up", up.port()) + tcp_task("flip", flip.port()));
  auto db_path = disk + "/history.db";
  std::int64_t rows_before = 0;
  {
    engine e(file, dir.path() + "/state", dir.path() + "/e1.err");
    REQUIRE(e.wait_state("ok"));
    REQUIRE(wait_until([&] { return e.history_status()["written"].get<std::uint64_t>() > 10; }));
  }
  rows_before = db_conn(db_path).integer("SELECT count(*) FROM result");
  REQUIRE(rows_before > 10);
  // That read-only check left history.db-shm and -wal behind, as any reader does; with them a
  // read-only file system can still be read, without them SQLite cannot open the file at all.
  bool shm_left = GENERATE(true, false);
  INFO((shm_left ? "with" : "without") << " the -shm and -wal files");
  REQUIRE(fs::exists(db_path + "-shm"));
  if (!shm_left) {
    fs::remove(db_path + "-shm");
    fs::remove(db_path + "-wal");
  }
  auto bytes_before = read_file(db_path);
  // The kernel refuses `remount,ro` while a file on it is open for writing (EBUSY), and a
  // running engine keeps its database open: so the file system goes read-only between two
  // runs, and the engine starts on it.
  REQUIRE(mount.remount("ro"));
  engine e(file, dir.path() + "/state", dir.path() + "/e2.err");
  REQUIRE(e.wait_state("failing", 10s));
  auto st = e.history_status();
  INFO(st.dump() << "\nstderr: " << e.err());
  CHECK_THAT(st["error"].get<std::string>(), Catch::Contains("Read-only file system"));
  CHECK(e.err().find("Read-only file system") != std::string::npos);
  auto before = e.results_total();
  flip.close();
  REQUIRE(wait_until([&] { return alarm_in_state(e, "flip", "firing"); }, 10s));
  CHECK(wait_until([&] { return e.results_total() > before + 10; }, 5s));
  // It stays failing (never "ok" while nothing can be written).
  for (int i = 0; i < 10; ++i) {
    CHECK(e.history_state() == "failing");
    std::this_thread::sleep_for(200ms);
  }
  // What is stored can still be read when SQLite can; if it cannot, the reply says why rather
  // than that there is no history.
  auto h = e.cmd({{"command", "history"}, {"task", "up"}, {"since", "10m"}});
  INFO(h.dump());
  if (shm_left) {
    CHECK(h["ok"] == true);
    CHECK(h["points"].size() > 5);
  } else {
    CHECK(h["ok"] == false);
    CHECK_THAT(h["error"].get<std::string>(), Catch::StartsWith("history query failed"));
  }
  CHECK(read_file(db_path) == bytes_before);

  REQUIRE(mount.remount("rw"));
  bool writable = e.wait_state("ok", 10s);
  INFO("now: " << e.history_status().dump() << "\nstderr: " << e.err());
  REQUIRE(writable);
  db_conn db(db_path);
  REQUIRE(wait_until([&] { return db.integer("SELECT count(*) FROM result") > rows_before; }, 5s));
  CHECK(db.column("PRAGMA integrity_check") == std::vector<std::string>{"ok"});
  REQUIRE(wait_until(
      [&] {
        auto inc = e.cmd({{"command", "incidents"}, {"task", "flip"}});
        return inc["ok"] == true && inc["incidents"].size() == 1;
      },
      5s));
}

TEST_CASE(
    "history e2e: a damaged, foreign or newer database at start is set aside or left untouched, "
    "and probing goes on",
    "[history][integration]") {
  sonde::test::temp_dir dir;
  switch_port up;
  up.open();
  auto file = dir.write("tasks.toml", "[history]\ncommit_interval = \"100ms\"\n" +
                                          tcp_task("up", up.port()) + tcp_task("t2", up.port()));
  auto state = dir.path() + "/state";
  auto db_path = state + "/history.db";
  fs::create_directories(state);
  // A database sonde made: run, let it write, stop.
  auto make_sonde_db = [&] {
    engine e(file, state, dir.path() + "/make.err");
    REQUIRE(e.wait_state("ok"));
    REQUIRE(wait_until([&] { return e.history_status()["written"].get<std::uint64_t>() > 20; }));
    e.stop();
    REQUIRE(fs::exists(db_path));
  };
  // The file set aside as history.db.bad-<time>: exactly one, with `bytes`.
  auto check_set_aside = [&](const std::string& bytes, const std::string& err) {
    static const std::regex name("history\\.db\\.bad-[0-9]{8}T[0-9]{6}Z(\\.[0-9]+)?");
    std::vector<fs::path> bad;
    for (const auto& f : fs::directory_iterator(state))
      if (std::regex_match(f.path().filename().string(), name)) bad.push_back(f.path());
    REQUIRE(bad.size() == 1);
    CHECK(read_file(bad[0].string()) == bytes);
    CHECK(err.find("was damaged") != std::string::npos);
    CHECK(err.find("kept as " + bad[0].string()) != std::string::npos);
  };
  auto check_probing = [&](engine& e) {
    auto n = e.results_total();
    REQUIRE(wait_until([&] { return e.results_total() > n + 3; }, 5s));
  };

  SECTION("random bytes") {
    std::string junk(64 * 1024, '\0');
    std::mt19937 rng(42);
    for (auto& c : junk) c = static_cast<char>(rng());
    std::ofstream(db_path, std::ios::binary) << junk;
    engine e(file, state, dir.path() + "/e.err");
    REQUIRE(e.wait_state("ok"));
    check_probing(e);
    INFO(e.err());
    check_set_aside(junk, e.err());
    REQUIRE(wait_until([&] { return e.history_status()["written"].get<std::uint64_t>() > 3; }));
    db_conn db(db_path);
    CHECK(db.integer("PRAGMA user_version") == history::schema_version);
    CHECK(db.integer("SELECT count(*) FROM result") > 0);
  }

  SECTION("a truncated sonde database") {
    make_sonde_db();
    auto full = read_file(db_path);
    REQUIRE(full.size() >= 8 * 4096);
    fs::resize_file(db_path, full.size() / 2);
    auto half = read_file(db_path);
    engine e(file, state, dir.path() + "/e.err");
    REQUIRE(e.wait_state("ok"));
    check_probing(e);
    INFO(e.err());
    check_set_aside(half, e.err());
    REQUIRE(wait_until([&] { return e.history_status()["written"].get<std::uint64_t>() > 3; }));
    auto r = e.cmd({{"command", "history"}, {"task", "up"}, {"since", "1m"}});
    CHECK(r["ok"] == true);
  }

  SECTION("another program's database") {
    {
      db_conn other(db_path, false);
      other.exec("CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT)");
      other.exec("INSERT INTO customers(name) VALUES('Ada')");
    }
    auto bytes = read_file(db_path);
    {
      engine e(file, state, dir.path() + "/e.err");
      REQUIRE(e.wait_state("refused"));
      check_probing(e);
      auto st = e.history_status();
      INFO(st.dump() << "\nstderr: " << e.err());
      CHECK_THAT(st["error"].get<std::string>(),
                 Catch::Contains("not this sonde's history database") &&
                     Catch::Contains("another program"));
      CHECK(e.err().find("left untouched") != std::string::npos);
      for (json req : {json{{"command", "history"}, {"task", "up"}}, json{{"command", "uptime"}}}) {
        auto r = e.cmd(req);
        INFO(r.dump());
        CHECK(r["ok"] == false);
        CHECK_THAT(r["error"].get<std::string>(), Catch::StartsWith("history is off"));
      }
      CHECK(read_file(db_path) == bytes);
    }
    CHECK(read_file(db_path) == bytes);
    db_conn db(db_path);
    CHECK(db.column("SELECT name FROM customers") == std::vector<std::string>{"Ada"});
    for (const auto& f : fs::directory_iterator(state))
      CHECK(f.path().filename().string().find("history.db.bad") == std::string::npos);
  }

  SECTION("a newer sonde's database") {
    make_sonde_db();
    {
      db_conn db(db_path, false);
      db.exec("PRAGMA user_version = 99");
    }
    auto bytes = read_file(db_path);
    {
      engine e(file, state, dir.path() + "/e.err");
      REQUIRE(e.wait_state("refused"));
      check_probing(e);
      auto st = e.history_status();
      INFO(st.dump() << "\nstderr: " << e.err());
      CHECK_THAT(st["error"].get<std::string>(),
                 Catch::Contains("schema version 99") &&
                     Catch::Contains("knows up to " + std::to_string(history::schema_version)));
      CHECK(e.err().find("left untouched") != std::string::npos);
      auto r = e.cmd({{"command", "uptime"}});
      CHECK(r["ok"] == false);
      CHECK_THAT(r["error"].get<std::string>(), Catch::Contains("schema version 99"));
    }
    CHECK(read_file(db_path) == bytes);
    CHECK(db_conn(db_path).integer("PRAGMA user_version") == 99);
  }
}

TEST_CASE(
    "history e2e: a database of every earlier schema version is migrated on start, its rows "
    "kept and shown, new results added",
    "[history][integration]") {
  switch_port up;
  up.open();
  for (int version = 0; version < history::schema_version; ++version) {
    DYNAMIC_SECTION("from schema version " << version) {
      sonde::test::temp_dir dir;
      auto state = dir.path() + "/state";
      fs::create_directories(state);
      auto db_path = state + "/history.db";
      std::int64_t old_t = now_ms() - 10 * 60 * 1000;  // ten minutes ago
      {
        db_conn db(db_path, false);
        if (version > 0) {
          auto m = history::migrate(db.get(), 0, version);
          INFO((m ? std::string() : m.error()));
          REQUIRE(m);
          REQUIRE(db.integer("PRAGMA user_version") == version);
          REQUIRE(db.integer("PRAGMA application_id") == history::application_id);
          // A task and one of its results as version 1 wrote them.
          db.exec("INSERT INTO task(id, name, type, target) VALUES(7, 'up', 'tcp', '127.0.0.1:" +
                  std::to_string(up.port()) + "')");
          db.exec(
              "INSERT INTO result(task, t, status, reason, flags, latency_us, message, metrics) "
              "VALUES(7, " +
              std::to_string(old_t) + ", 2, 2, 0, 1234, 'stored by an older sonde', NULL)");
        }
      }
      auto file = dir.write("tasks.toml",
                            "[history]\ncommit_interval = \"100ms\"\n" + tcp_task("up", up.port()));
      engine e(file, state, dir.path() + "/e.err");
      REQUIRE(e.wait_state("ok"));
      INFO(e.err());
      if (version > 0)
        CHECK(e.err().find("schema version " + std::to_string(version) + " migrated to " +
                           std::to_string(history::schema_version)) != std::string::npos);
      REQUIRE(wait_until([&] { return e.history_status()["written"].get<std::uint64_t>() > 2; }));
      {
        db_conn db(db_path);
        CHECK(db.integer("PRAGMA user_version") == history::schema_version);
        CHECK(db.integer("PRAGMA application_id") == history::application_id);
        CHECK(db.column("PRAGMA integrity_check") == std::vector<std::string>{"ok"});
        CHECK(rows_of(db, "up") >= (version > 0 ? 3 : 2));
      }
      auto r = e.cmd({{"command", "history"}, {"task", "up"}, {"since", "1h"}});
      INFO(r.dump());
      REQUIRE(r["ok"] == true);
      REQUIRE(r["level"] == "raw");
      const auto& pts = r["points"];
      REQUIRE(pts.size() >= 2);
      if (version > 0) {
        CHECK(pts[0]["status"] == "critical");
        CHECK(pts[0]["reason"] == "refused");
        CHECK(pts[0]["message"] == "stored by an older sonde");
        CHECK(pts[0]["value"] == 1.234);
      }
      CHECK(pts.back()["status"] == "ok");
    }
  }
}
