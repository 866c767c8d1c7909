// The central side of agents without sockets (engine/src/agent_registry.cpp), over a real
// history store (SQLite on a temporary path): exactly-once storage across restarts, acks only
// once durable, two reports of one agent at once, the import of old per-agent files, the live
// view and the dead-man switch.
#include <time.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <asio/io_context.hpp>

#include "agents/agent_registry.hpp"
#include "core/output.hpp"
#include "history/store.hpp"

#include "support/files.hpp"
#include "support/history_db.hpp"

using namespace sonde::engine;
using sonde::test::temp_dir;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

// Results an hour ago plus `seq` seconds: distinct times (the store keeps one result per task
// and millisecond) within the raw retention.
std::string time_of(std::uint64_t seq) {
  static const std::time_t base = std::time(nullptr) - 3600;
  std::time_t t = base + static_cast<std::time_t>(seq);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char b[48];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S.123456Z", &tm);
  return b;
}

json result(std::uint64_t seq, const std::string& task = "system", double cpu = 1.5) {
  return {{"seq", seq},
          {"time", time_of(seq)},
          {"task", task},
          {"type", task == "system" ? "system" : "tcp"},
          {"target", "localhost"},
          {"status", "ok"},
          {"reason", nullptr},
          {"latency_ms", 2.5},
          {"message", "cpu " + std::to_string(cpu)},
          {"metrics",
           {{"cpu.total", cpu},
            {"cpu.0", 1.0},
            {"cpu.1", 2.0},
            {"mem.used", 100.0},
            {"mem.total", 400.0},
            {"load.1", 0.5},
            {"load.5", 0.25},
            {"load.15", 0.125}}}};
}

json batch(std::uint64_t from, std::uint64_t to) {
  json a = json::array();
  for (auto s = from; s <= to; ++s) a.push_back(result(s));
  return a;
}

using steady = std::chrono::steady_clock;

// Run the loop until `done` (the store's callbacks arrive there), at most `limit`.
bool pump(asio::io_context& io, const std::function<bool()>& done,
          std::chrono::milliseconds limit = 10s) {
  auto end = steady::now() + limit;
  while (!done()) {
    if (steady::now() > end) return false;
    if (io.stopped()) io.restart();
    if (io.run_one_for(10ms) == 0) std::this_thread::sleep_for(1ms);
  }
  return true;
}

// A central without sockets: the loop, a history store on `<dir>/history.db` and the
// registry, with the store open (unless `open` is false).
struct central {
  asio::io_context io;
  std::unique_ptr<history::store> store;
  std::unique_ptr<agent_registry> reg;
  std::vector<std::string> warnings;
  bool ready = false;

  explicit central(const temp_dir& d, agent_registry_options o = {}, bool open = true,
                   std::size_t queue = 100000)
      : central(d.path(), std::move(o), open, queue) {}
  central(const std::string& dir, agent_registry_options o, bool open, std::size_t queue) {
    history::store_options so;
    so.path = dir + "/history.db";
    so.settings.queue = queue;
    so.log = [this](const std::string& l) { warnings.push_back("history: " + l); };
    store = std::make_unique<history::store>(io, so);
    if (o.state_dir.empty()) o.state_dir = dir;
    o.store = store.get();
    reg = std::make_unique<agent_registry>(std::move(o),
                                           [this](const std::string& w) { warnings.push_back(w); });
    if (open) start();
  }
  void start() {
    store->start([this](tl::expected<std::vector<history::agent_position>, std::string> r) {
      reg->store_ready(std::move(r));
      ready = true;
    });
    REQUIRE(pump(io, [this] { return ready; }));
  }
  ~central() {
    reg.reset();
    store->stop();
  }
  std::string db() const { return store->path(); }
  agent_registry* operator->() { return reg.get(); }
  agent_registry& operator*() { return *reg; }
};

// The registry's hello and report as the commands call them, with the agent's queue
// position `next` (what every number it sent is below).
tl::expected<std::uint64_t, std::string> hello(central& c, const std::string& name,
                                               const std::string& qid, json facts,
                                               std::chrono::milliseconds interval,
                                               const std::string& peer,
                                               steady::time_point now = steady::now(),
                                               std::uint64_t next = 1000) {
  agent_hello h;
  h.agent = name;
  h.queue_id = qid;
  h.facts = facts.is_null() ? json::object() : std::move(facts);
  h.interval = interval;
  h.next_seq = next;
  return c->hello(h, peer, true, now);
}

agent_report report_of(const std::string& qid, json results, std::uint64_t dropped,
                       std::uint64_t next) {
  agent_report r;
  r.queue_id = qid;
  r.results = std::move(results);
  r.dropped = dropped;
  r.next_seq = next;
  return r;
}

// A report and its answer, once the store has answered.
tl::expected<std::uint64_t, std::string> report(central& c, const std::string& name,
                                                const std::string& qid, json results,
                                                std::uint64_t dropped,
                                                steady::time_point now = steady::now(),
                                                std::uint64_t next = 1000) {
  std::optional<tl::expected<std::uint64_t, std::string>> out;
  c->report(
      name, report_of(qid, std::move(results), dropped, next),
      [&out](tl::expected<std::uint64_t, std::string> r) { out = std::move(r); }, now);
  REQUIRE(pump(c.io, [&] { return out.has_value(); }));
  return *out;
}

std::vector<std::uint64_t> stored_seqs(central& c, const std::string& agent) {
  return sonde::test::history_db(c.db()).seqs(agent);
}

std::vector<std::uint64_t> range(std::uint64_t from, std::uint64_t to) {
  std::vector<std::uint64_t> v;
  for (auto s = from; s <= to; ++s) v.push_back(s);
  return v;
}

struct collected {
  std::vector<std::string> tasks, statuses, messages;
  std::vector<bool> had_previous;
};

void collect(central& reg, collected& c) {
  reg->on_result([&c](const result_record& r) {
    c.tasks.push_back(r.task->name);
    c.statuses.push_back(std::string(to_string(r.state)));
    c.messages.push_back(r.message);
    c.had_previous.push_back(r.previous.has_value());
  });
}

}  // namespace

TEST_CASE("agent registry: hello, report, dedupe and ack", "[agent_registry]") {
  temp_dir d;
  central reg(d);
  collected c;
  collect(reg, c);
  auto t0 = std::chrono::steady_clock::now();
  CHECK_FALSE(report(reg, "b", "q1", batch(1, 2), 0, t0));  // no hello yet
  auto h = hello(reg, "b", "q1", {{"os", "Linux"}}, 1000ms, "127.0.0.1:4000", t0);
  REQUIRE(h);
  CHECK(*h == 0);
  // The ack waits for the store: nothing is answered or delivered before the batch is durable.
  std::optional<tl::expected<std::uint64_t, std::string>> first;
  reg->report(
      "b", report_of("q1", batch(1, 3), 0, 1000),
      [&](tl::expected<std::uint64_t, std::string> r) {
        // Durable by now: another connection to the database sees the rows.
        CHECK(stored_seqs(reg, "b") == range(1, 3));
        first = std::move(r);
      },
      t0);
  CHECK_FALSE(first);
  CHECK(c.tasks.empty());
  CHECK(reg->find("b")->last_seq == 0);
  REQUIRE(pump(reg.io, [&] { return first.has_value(); }));
  REQUIRE(*first);
  CHECK(**first == 3);
  // A resent report (ack lost): 2 and 3 are duplicates, 4 is new.
  auto ack = report(reg, "b", "q1", batch(2, 4), 2, t0);
  REQUIRE(ack);
  CHECK(*ack == 4);
  CHECK(stored_seqs(reg, "b") == range(1, 4));
  // Only duplicates: answered at once with the stored position.
  std::optional<tl::expected<std::uint64_t, std::string>> dup;
  reg->report(
      "b", report_of("q1", batch(3, 4), 2, 1000),
      [&](tl::expected<std::uint64_t, std::string> r) { dup = std::move(r); }, t0);
  REQUIRE(dup);
  CHECK(dup->value() == 4);
  CHECK(c.tasks == std::vector<std::string>(4, "b/system"));
  const auto* v = reg->find("b");
  REQUIRE(v);
  CHECK(v->duplicates == 4);
  CHECK(v->dropped == 2);
  CHECK(v->stored == 4);
  CHECK(v->window.size() == 4);
  CHECK(v->window.back()["agent"] == "b");
  sonde::test::history_db db(reg.db());
  CHECK(db.position("b", "q1") == 4);
  auto rows = db.agent_rows("b");
  REQUIRE(rows.size() == 4);
  CHECK(rows[0].task == "b/system");
  CHECK(db.text("SELECT dropped FROM agent_queue WHERE agent='b'") == "2");
  CHECK(db.text("SELECT type || ' ' || target FROM task WHERE name='b/system'") ==
        "system localhost");
  // Malformed input and a queue id that is not the hello's are refused, nothing stored.
  CHECK_FALSE(report(reg, "b", "q1", json{{{"task", "x"}}}, 0, t0));
  CHECK_FALSE(report(reg, "b", "other", batch(5, 5), 0, t0));
  CHECK_FALSE(hello(reg, "b", "bad id!", {}, 1000ms, "", t0));
  CHECK_FALSE(hello(reg, "a/b", "q1", {}, 1000ms, "", t0));
  CHECK(stored_seqs(reg, "b").size() == 4);
  // A new queue id (state directory recreated) starts at 0.
  h = hello(reg, "b", "q2", {}, 1000ms, "127.0.0.1:4001", t0);
  REQUIRE(h);
  CHECK(*h == 0);
  ack = report(reg, "b", "q2", json::array({result(101), result(102)}), 0, t0);
  REQUIRE(ack);
  CHECK(*ack == 102);
  CHECK(db.position("b", "q2") == 102);
  CHECK(db.position("b", "q1") == 4);
}

TEST_CASE("agent registry: the last seq survives a restart of the central", "[agent_registry]") {
  temp_dir d;
  {
    central reg(d);
    REQUIRE(hello(reg, "web-01", "q1", {}, 5000ms, "127.0.0.1:1"));
    REQUIRE(report(reg, "web-01", "q1", batch(1, 5), 3));
  }
  central reg(d);
  // Known from the store's positions before it says hello.
  auto t = reg->table();
  REQUIRE(t["agents"].size() == 1);
  CHECK(t["agents"][0]["state"] == "offline");
  CHECK(t["agents"][0]["last_seq"] == 5);
  auto h = hello(reg, "web-01", "q1", {}, 5000ms, "127.0.0.1:2");
  REQUIRE(h);
  CHECK(*h == 5);
  CHECK(reg->find("web-01")->dropped == 3);
  // The agent resends what it did not see acknowledged: stored once.
  auto ack = report(reg, "web-01", "q1", batch(4, 7), 3);
  REQUIRE(ack);
  CHECK(*ack == 7);
  CHECK(reg->find("web-01")->duplicates == 2);
  CHECK(stored_seqs(reg, "web-01") == range(1, 7));
  CHECK(reg->find("web-01")->window.size() == 2);  // filled by what this run delivered
  // No per-agent file is written any more.
  CHECK_FALSE(std::filesystem::exists(reg->legacy_path("web-01")));
}

TEST_CASE("agent registry: hello waits for the store, and a refused store is said",
          "[agent_registry]") {
  temp_dir d;
  {
    central reg(d, {}, /*open=*/false);
    auto h = hello(reg, "b", "q1", {}, 1000ms, "127.0.0.1:1");
    REQUIRE_FALSE(h);
    CHECK(h.error() == "the central's history store is starting; try again");
    CHECK(reg->find("b") == nullptr);
    CHECK(reg->status_json()["store_state"] == "starting");
    reg.start();
    REQUIRE(hello(reg, "b", "q1", {}, 1000ms, "127.0.0.1:1"));
    CHECK(reg->status_json()["store_state"] == "ready");
    CHECK(reg->status_json()["store"] == reg.db());
  }
  {
    // No store at all.
    agent_registry_options o;
    o.state_dir = d.path();
    agent_registry none(o);
    agent_hello h;
    h.agent = "b";
    h.queue_id = "q1";
    h.next_seq = 5;
    auto r = none.hello(h, "127.0.0.1:1", true);
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error(), Catch::Contains("no history store"));
  }
  // Another program's database: history is refused for the run, and agents are told why.
  temp_dir other;
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open((other.path() + "/history.db").c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "CREATE TABLE mine(x)", nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  central reg(other);
  auto h = hello(reg, "b", "q1", {}, 1000ms, "127.0.0.1:1");
  REQUIRE_FALSE(h);
  CHECK_THAT(h.error(), Catch::Contains("the central has no history store") &&
                            Catch::Contains("not this sonde's history database"));
  CHECK(reg->status_json()["store_state"] == "refused");
}

TEST_CASE("agent registry: a store that opens late still gives the stored positions",
          "[agent_registry]") {
  temp_dir d;
  {
    central reg(d.path() + "/real", {}, true, 100000);
    REQUIRE(hello(reg, "b", "q1", {}, 1000ms, "127.0.0.1:1"));
    REQUIRE(report(reg, "b", "q1", batch(1, 4), 0));
  }
  // The database's directory is a file at start: the store cannot open it and retries (every
  // 5 s). Agents are told why and to try again, and never get a last_seq of 0 meanwhile.
  d.write("late", "not a directory");
  agent_registry_options o;
  o.state_dir = d.path();
  central reg(d.path() + "/late", o, false, 100000);
  reg.store->start([&](tl::expected<std::vector<history::agent_position>, std::string> r) {
    reg->store_ready(std::move(r));
    reg.ready = true;
  });
  REQUIRE(pump(reg.io, [&] { return reg.store->state() == "failing"; }));
  auto h = hello(reg, "b", "q1", {}, 1000ms, "127.0.0.1:1");
  REQUIRE_FALSE(h);
  CHECK_THAT(h.error(),
             Catch::StartsWith("the central's history store cannot open its database (") &&
                 Catch::EndsWith("); try again"));
  CHECK_FALSE(reg.ready);
  // The directory appears (with the database of before): the positions come with `ready`.
  std::filesystem::remove(d.path() + "/late");
  std::filesystem::rename(d.path() + "/real", d.path() + "/late");
  REQUIRE(pump(
      reg.io, [&] { return reg.ready; }, 15s));
  h = hello(reg, "b", "q1", {}, 1000ms, "127.0.0.1:1");
  REQUIRE(h);
  CHECK(*h == 4);
}

TEST_CASE("agent registry: two reports of one agent at once are stored once, in order",
          "[agent_registry]") {
  temp_dir d;
  central reg(d, {}, true, /*queue=*/4);
  collected c;
  collect(reg, c);
  REQUIRE(hello(reg, "b", "q1", {}, 1000ms, "127.0.0.1:1"));
  // The old connection's report is in the store when the new connection sends its own (the
  // same results again and more): the second waits and stores only what the first did not.
  std::optional<tl::expected<std::uint64_t, std::string>> a1, a2;
  reg->report("b", report_of("q1", batch(1, 3), 0, 1000),
              [&](tl::expected<std::uint64_t, std::string> r) { a1 = std::move(r); });
  reg->report("b", report_of("q1", batch(2, 5), 0, 1000),
              [&](tl::expected<std::uint64_t, std::string> r) { a2 = std::move(r); });
  CHECK_FALSE(a1);
  CHECK_FALSE(a2);
  REQUIRE(pump(reg.io, [&] { return a1 && a2; }));
  REQUIRE(*a1);
  REQUIRE(*a2);
  CHECK(**a1 == 3);
  CHECK(**a2 == 5);
  CHECK(stored_seqs(reg, "b") == range(1, 5));
  CHECK(c.tasks.size() == 5);
  CHECK(reg->find("b")->duplicates == 2);

  // The first one fails (more than the store's queue takes): the second is deduplicated
  // against what is really stored, so nothing goes missing behind the failed one.
  a1.reset();
  a2.reset();
  reg->report("b", report_of("q1", batch(6, 10), 0, 1000),
              [&](tl::expected<std::uint64_t, std::string> r) { a1 = std::move(r); });
  reg->report("b", report_of("q1", batch(6, 8), 0, 1000),
              [&](tl::expected<std::uint64_t, std::string> r) { a2 = std::move(r); });
  REQUIRE(pump(reg.io, [&] { return a1 && a2; }));
  REQUIRE_FALSE(*a1);
  CHECK_THAT(a1->error(), Catch::Contains("history queue is full"));
  REQUIRE(*a2);
  CHECK(**a2 == 8);
  CHECK(stored_seqs(reg, "b") == range(1, 8));
  CHECK(reg->find("b")->last_seq == 8);
  CHECK(sonde::test::history_db(reg.db()).position("b", "q1") == 8);
}

TEST_CASE("agent registry: old per-agent files are imported once, never written",
          "[agent_registry]") {
  temp_dir d;
  std::filesystem::create_directories(d.path() + "/agents");
  auto line = [](std::uint64_t seq, std::uint64_t dropped) {
    return "{\"queue_id\":\"q1\",\"seq\":" + std::to_string(seq) +
           ",\"dropped\":" + std::to_string(dropped) + ",\"result\":" + result(seq).dump() + "}\n";
  };
  // A rotated file, then the live one starting with its state line; a gap (6, 7 lost); a torn
  // last line from a crash.
  std::string rotated = line(1, 0) + line(2, 0) + line(3, 0);
  std::string live =
      "{\"state\":{\"queues\":{\"q1\":3},\"dropped\":0,\"lost\":0,\"queue_id\":"
      "\"q1\"}}\n" +
      line(4, 0) + line(5, 1) + line(8, 2) + "{\"queue_id\":\"q1\",\"seq\":9,\"dro";
  d.write("agents/web-01.jsonl.1", rotated);
  auto live_path = d.write("agents/web-01.jsonl", live);
  {
    central reg(d);
    // Listed (offline) from the old file before it says hello.
    REQUIRE(reg->table()["agents"].size() == 1);
    CHECK(reg->table()["agents"][0]["state"] == "offline");
    auto h = hello(reg, "web-01", "q1", {}, 5000ms, "127.0.0.1:2");
    REQUIRE(h);
    CHECK(*h == 8);
    auto said = std::any_of(reg.warnings.begin(), reg.warnings.end(), [&](const std::string& w) {
      return w.find("agent web-01: queue positions imported from") != std::string::npos &&
             w.find("q1 up to seq 8") != std::string::npos;
    });
    CHECK(said);
    CHECK(std::any_of(reg.warnings.begin(), reg.warnings.end(), [&](const std::string& w) {
      return w.find(live_path + ":5: torn last line") != std::string::npos;
    }));
    CHECK(reg->find("web-01")->dropped == 2);
    CHECK(reg->find("web-01")->lost == 2);
    // The agent resends 7..10 (its ack was lost): 9 and 10 are stored, nothing twice.
    auto ack = report(reg, "web-01", "q1", batch(7, 10), 2);
    REQUIRE(ack);
    CHECK(*ack == 10);
    CHECK(stored_seqs(reg, "web-01") == range(9, 10));
  }
  // The files were read, not written; the store has the position now.
  {
    std::ifstream in(live_path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    CHECK(ss.str() == live);
  }
  central reg(d);
  auto h = hello(reg, "web-01", "q1", {}, 5000ms, "127.0.0.1:2", steady::now(), 11);
  REQUIRE(h);
  CHECK(*h == 10);
  CHECK(std::none_of(reg.warnings.begin(), reg.warnings.end(),
                     [](const std::string& w) { return w.find("imported") != std::string::npos; }));
}

TEST_CASE("agent registry: dead-man switch", "[agent_registry]") {
  temp_dir d;
  central reg(d);
  collected c;
  collect(reg, c);
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(hello(reg, "b", "q1", {}, 5000ms, "127.0.0.1:9", t0));
  REQUIRE(report(reg, "b", "q1", batch(1, 1), 0, t0));
  CHECK(reg->sweep(t0 + 14900ms) == 0);
  CHECK(reg->sweep(t0 + 15200ms) == 1);
  CHECK(reg->sweep(t0 + 16000ms) == 0);  // once
  REQUIRE(c.tasks.back() == "agent:b");
  CHECK(c.statuses.back() == "critical");
  CHECK(c.messages.back() == "agent b silent for 15.2s (3 intervals of 5s)");
  CHECK(reg->table(t0 + 16000ms)["agents"][0]["state"] == "critical");
  // It reports again: recovery record, then the result. (A few ms later: history keeps one
  // result per task and millisecond.)
  std::this_thread::sleep_for(5ms);
  REQUIRE(report(reg, "b", "q1", batch(2, 2), 0, t0 + 17000ms));
  REQUIRE(c.tasks.size() >= 3);
  CHECK(c.tasks[c.tasks.size() - 2] == "agent:b");
  CHECK(c.statuses[c.statuses.size() - 2] == "ok");
  CHECK(c.had_previous[c.had_previous.size() - 2]);
  CHECK(c.tasks.back() == "b/system");
  CHECK(reg->table(t0 + 17000ms)["agents"][0]["state"] == "ok");
  // Both dead-man records are in history, as results of "agent:b" (type agent, no seq).
  REQUIRE(reg.store->sync());
  sonde::test::history_db db(reg.db());
  CHECK(db.text("SELECT type FROM task WHERE name='agent:b'") == "agent");
  CHECK(db.text("SELECT group_concat(r.status, ',') FROM (SELECT status FROM result WHERE task = "
                "(SELECT id FROM task WHERE name='agent:b') ORDER BY t) r") == "2,0");
  CHECK(db.text("SELECT count(*) FROM result WHERE seq IS NULL AND task = "
                "(SELECT id FROM task WHERE name='agent:b')") == "2");
  // Told to disconnect: no alarm.
  reg->retired("b");
  CHECK(reg->sweep(t0 + 60000ms) == 0);
  CHECK(reg->table(t0 + 60000ms)["agents"][0]["state"] == "disconnected");
}

TEST_CASE("agent registry: table and info", "[agent_registry]") {
  temp_dir d;
  central reg(d);
  REQUIRE(hello(reg, "a", "q1",
                {{"os", "Debian"}, {"hostname", "h"}, {"cpu_count", 2}, {"mem_total", 400}}, 2000ms,
                "127.0.0.1:5555"));
  REQUIRE(report(reg, "a", "q1", json::array({result(1, "system", 7.5), result(2, "web")}), 0));
  auto row = reg->table()["agents"][0];
  CHECK(row["agent"] == "a");
  CHECK(row["address"] == "127.0.0.1:5555");
  CHECK(row["cpu"] == 7.5);
  CHECK(row["cpus"] == json::array({1.0, 2.0}));
  CHECK(row["mem_used"] == 100.0);
  CHECK(row["mem_total"] == 400.0);
  CHECK(row["load"] == json::array({0.5, 0.25, 0.125}));
  CHECK(row["state"] == "ok");
  CHECK(row["last_seq"] == 2);
  auto info = reg->info("a");
  CHECK(info["os"] == "Debian");
  CHECK(info["name"] == "a");
  CHECK(info["ip"] == "127.0.0.1");
  REQUIRE(reg->info_reply("a", {{"os", "Debian 12"}, {"name", "a"}, {"ip", "10.0.0.1"}}));
  CHECK(reg->info("a")["ip"] == "10.0.0.1");
  CHECK(reg->info("nobody").is_null());
  CHECK(reg->recent("a").size() == 2);
}

namespace {
agent_hello hello_of(const std::string& name, std::optional<std::string> key = std::nullopt,
                     std::uint64_t next = 1000) {
  agent_hello h;
  h.agent = name;
  h.queue_id = "q1";
  h.key = std::move(key);
  h.next_seq = next;
  return h;
}
}  // namespace

TEST_CASE("agent registry: keys make an agent's name its own", "[agent_registry]") {
  temp_dir d;
  central reg(d);
  const std::string key = "0123456789abcdef0123";
  auto keys = d.write("agent-keys", "# name key\nweb-01 " + key + "\n\nlab\t" + key + "xy\n");
  std::filesystem::permissions(
      keys, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  // A listed agent must present its key, wherever it connects from.
  auto h = reg->hello(hello_of("web-01"), "127.0.0.1:1", true);
  REQUIRE_FALSE(h);
  CHECK_THAT(h.error(), Catch::Contains("must present its key"));
  h = reg->hello(hello_of("web-01", "0123456789abcdef0124"), "127.0.0.1:1", true);
  REQUIRE_FALSE(h);
  CHECK(h.error() == "wrong key for agent 'web-01'");
  CHECK_FALSE(reg->hello(hello_of("web-01", key + "0"), "127.0.0.1:1", true));  // longer
  CHECK_FALSE(reg->hello(hello_of("web-01", key.substr(1)), "127.0.0.1:1", true));
  CHECK(reg->find("web-01") == nullptr);  // refused hellos leave no trace in the view
  h = reg->hello(hello_of("web-01", key), "10.0.0.5:4000", false);
  REQUIRE(h);
  CHECK(reg->find("web-01")->keyed);
  // Beyond loopback an agent needs a key; on loopback a name without one is accepted.
  h = reg->hello(hello_of("other"), "10.0.0.6:4000", false);
  REQUIRE_FALSE(h);
  CHECK_THAT(h.error(), Catch::Contains("no key") && Catch::Contains(keys));
  REQUIRE(reg->hello(hello_of("other"), "127.0.0.1:4000", true));
  CHECK_FALSE(reg->find("other")->keyed);
  // The file is re-read when it changes; a broken file refuses everyone (fails closed).
  std::this_thread::sleep_for(10ms);
  d.write("agent-keys", "web-01 " + key + "\nweb-01 " + key + "\n");
  h = reg->hello(hello_of("other"), "127.0.0.1:4000", true);
  REQUIRE_FALSE(h);
  CHECK_THAT(h.error(), Catch::Contains(":2: agent 'web-01' is listed twice"));
  CHECK(reg->status_json()["keys_error"].is_string());
  std::this_thread::sleep_for(10ms);
  d.write("agent-keys", "other " + key + "\n");
  CHECK_FALSE(reg->hello(hello_of("other"), "127.0.0.1:4000", true));  // now it has a key
  REQUIRE(reg->hello(hello_of("other", key), "127.0.0.1:4000", true));
  CHECK(reg->status_json()["keys"] == 1);
}

TEST_CASE("agent registry: numbers beyond what the agent's queue wrote are refused",
          "[agent_registry]") {
  temp_dir d;
  {
    central reg(d);
    auto& warnings = reg.warnings;
    REQUIRE(reg->hello(hello_of("b", std::nullopt, 11), "127.0.0.1:1", true));
    // The forgery of issue 10: a result numbered 2^64-1.
    auto r = report(reg, "b", "q1", json::array({result(18446744073709551615ull)}), 0,
                    steady::now(), 11);
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error(), Catch::Contains("results[0].seq") && Catch::Contains("2^53"));
    r = report(reg, "b", "q1", batch(5, 11), 0, steady::now(), 11);
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error(), Catch::Contains("results[6].seq") &&
                              Catch::Contains("beyond what the agent's queue has written"));
    r = report(reg, "b", "q1", batch(1, 1), 0, steady::now(), 18446744073709551615ull);
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error(), Catch::Contains("next_seq"));
    CHECK_FALSE(report(reg, "b", "q1", batch(1, 1), 0, steady::now(), 5));    // went backwards
    CHECK_FALSE(report(reg, "b", "q1", batch(1, 1), 50, steady::now(), 11));  // dropped > given
    CHECK(stored_seqs(reg, "b").empty());
    auto ack = report(reg, "b", "q1", batch(1, 10), 0, steady::now(), 11);
    REQUIRE(ack);
    CHECK(*ack == 10);
    // A store that holds numbers the agent never wrote (forged before keys were configured):
    // the next hello rewinds to what the agent has, so its results are not skipped for ever.
    REQUIRE(reg->hello(hello_of("b", std::nullopt, 6), "127.0.0.1:2", true).value() == 5);
    REQUIRE_FALSE(warnings.empty());
    CHECK_THAT(warnings.back(), Catch::Contains("continuing from 5"));
    // The rewind is recorded in the store (an empty batch with the position).
    REQUIRE(
        pump(reg.io, [&] { return sonde::test::history_db(reg.db()).position("b", "q1") == 5; }));
    // The agent's new results 6 and 7 are stored although numbers 6..10 were stored before
    // (they are other results: other times).
    json fresh = json::array({result(1006), result(1007)});
    fresh[0]["seq"] = 6;
    fresh[1]["seq"] = 7;
    ack = report(reg, "b", "q1", fresh, 0, steady::now(), 8);
    REQUIRE(ack);
    CHECK(*ack == 7);
    CHECK(stored_seqs(reg, "b").size() == 12);
  }
  central reg(d);
  CHECK(reg->hello(hello_of("b", std::nullopt, 8), "127.0.0.1:3", true).value() == 7);
}

TEST_CASE("agent registry: a store that cannot be written is visible, and gaps are counted",
          "[agent_registry]") {
  temp_dir d;
  // The store takes at most 3 rows at once: a report of 4 new results cannot be stored (like a
  // store that is failing, it answers an error and stores nothing).
  central reg(d, {}, true, /*queue=*/3);
  auto& warnings = reg.warnings;
  collected c;
  collect(reg, c);
  REQUIRE(hello(reg, "b", "q1", {}, 1000ms, "127.0.0.1:1"));
  REQUIRE(report(reg, "b", "q1", batch(1, 3), 0));
  auto t0 = steady::now();
  auto r = report(reg, "b", "q1", batch(4, 7), 0, t0);
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error(), Catch::Contains("history queue is full"));
  CHECK_FALSE(report(reg, "b", "q1", batch(4, 7), 0, t0 + 1s));  // retried: logged once
  auto said = std::count_if(warnings.begin(), warnings.end(), [](const std::string& w) {
    return w.find("cannot store its results") != std::string::npos;
  });
  CHECK(said == 1);
  auto row = reg->table()["agents"][0];
  CHECK_THAT(row["store_error"].get<std::string>(), Catch::Contains("history queue is full"));
  CHECK(row["store_failures"] == 2);
  CHECK(row["last_seq"] == 3);  // nothing acknowledged
  CHECK(c.tasks.size() == 3);   // nor delivered
  auto st = reg->status_json();
  CHECK(st["store_failures"] == 2);
  CHECK(st["store_failing"] == json::array({"b"}));
  CHECK(stored_seqs(reg, "b") == range(1, 3));
  CHECK(sonde::test::history_db(reg.db()).position("b", "q1") == 3);
  CHECK_FALSE(report(reg, "b", "q1", batch(4, 7), 0, t0 + 11s));  // 10 s later: said again
  said = std::count_if(warnings.begin(), warnings.end(), [](const std::string& w) {
    return w.find("cannot store its results") != std::string::npos;
  });
  CHECK(said == 2);
  // Stored again, the error clears. Results 6..7 were dropped by the agent: a gap.
  auto ack = report(reg, "b", "q1", json::array({result(4), result(5), result(8)}), 2);
  REQUIRE(ack);
  CHECK(*ack == 8);
  row = reg->table()["agents"][0];
  CHECK(row["store_error"].is_null());
  CHECK(row["lost"] == 2);
  CHECK(row["dropped"] == 2);
  CHECK(reg->status_json()["store_failing"].empty());
  CHECK_THAT(warnings.back(), Catch::Contains("stored again"));
  CHECK(stored_seqs(reg, "b") == std::vector<std::uint64_t>{1, 2, 3, 4, 5, 8});
  // New drops without results are recorded too (the agent's cumulative count).
  ack = report(reg, "b", "q1", json::array(), 5);
  REQUIRE(ack);
  CHECK(*ack == 8);
  CHECK(sonde::test::history_db(reg.db()).text("SELECT dropped FROM agent_queue WHERE agent='b'") ==
        "5");
}

TEST_CASE("agent registry: everything an agent sends is validated, and the view stays usable",
          "[agent_registry]") {
  temp_dir d;
  central reg(d);
  // Issue 10: "os": ["x"] broke `agents` for every client.
  json bad_hello{{"command", "agent_hello"},
                 {"agent", "x"},
                 {"queue_id", "q1"},
                 {"next_seq", 1},
                 {"facts", {{"os", json::array({"x"})}}}};
  auto h = decode_agent_hello(bad_hello);
  REQUIRE_FALSE(h);
  CHECK(h.error() == "\"facts.os\" must be a string");
  agent_hello direct = hello_of("x");
  direct.facts = {{"os", json::array({"x"})}};
  CHECK_FALSE(reg->hello(direct, "127.0.0.1:1", true));
  REQUIRE(hello(reg, "y", "q1", {{"os", "Debian"}}, 1000ms, "127.0.0.1:2"));
  CHECK_NOTHROW(reg->table());
  CHECK(reg->table()["agents"][0]["os"] == "Debian");
  CHECK_FALSE(reg->info_reply("y", {{"hostname", 7}}));
  CHECK_FALSE(reg->info_reply("y", {{"queue", {{"acked", "many"}}}}));
  CHECK(reg->info("y")["os"] == "Debian");  // unchanged by the refused reply

  // Deep nesting (issue 10 #2) is refused by type, without being walked.
  std::string deep(100000, '[');
  deep += std::string(100000, ']');
  // (Moved, never copied: copying or dumping such a value is what recurses.)
  json nested = json::parse(deep, nullptr, false);
  REQUIRE(nested.is_array());
  direct.facts = {{"os", "Debian"}};
  direct.facts["extra"] = std::move(nested);
  auto e = check_agent_facts(direct.facts);
  REQUIRE_FALSE(e);
  CHECK_THAT(e.error(), Catch::Contains("facts.extra"));
  json r = result(1);
  r["metrics"]["deep"] = json::parse(deep, nullptr, false);
  e = check_agent_result(r, "results[0]");
  REQUIRE_FALSE(e);
  CHECK(e.error() == "\"results[0].metrics.deep\" must be a number");

  // Each field of a result, with its name in the error.
  auto refuses = [](json res, const std::string& field) {
    auto c = check_agent_result(res, "results[0]");
    INFO(field);
    REQUIRE_FALSE(c);
    CHECK_THAT(c.error(), Catch::Contains(field));
  };
  json ok = result(1);
  REQUIRE(check_agent_result(ok, "results[0]"));
  auto with = [&ok](const char* key, json value) {
    json r = ok;
    r[key] = std::move(value);
    return r;
  };
  refuses(with("status", 5), "results[0].status");
  refuses(with("status", "fine"), "results[0].status");
  refuses(with("reason", "because"), "results[0].reason");
  refuses(with("time", "yesterday"), "results[0].time");
  refuses(with("task", ""), "results[0].task");
  refuses(with("message", std::string(70000, 'm')), "results[0].message");
  refuses(with("latency_ms", -1), "results[0].latency_ms");
  refuses(with("future", {{"a", 1}}), "results[0].future");
  json no_time = ok;
  no_time.erase("time");
  refuses(no_time, "results[0].time");
  // A report with a bad result stores nothing and says which.
  json results = batch(1, 3);
  results[1]["type"] = json::array();
  auto rep = report(reg, "y", "q1", results, 0);
  REQUIRE_FALSE(rep);
  CHECK(rep.error() == "\"results[1].type\" must be a string");
  CHECK(stored_seqs(reg, "y").empty());
}
