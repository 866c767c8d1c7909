// The central side of agents without sockets (engine/src/agent_registry.cpp): exactly-once
// storage across restarts, torn lines, rotation, the live view and the dead-man switch.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "agents/agent_registry.hpp"
#include "core/output.hpp"

#include "support/files.hpp"

using namespace sonde::engine;
using sonde::test::temp_dir;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

json result(std::uint64_t seq, const std::string& task = "system", double cpu = 1.5) {
  return {{"seq", seq},
          {"time", "2026-11-21T02:40:56.123456Z"},
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

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

std::vector<std::uint64_t> stored_seqs(const std::string& path) {
  std::vector<std::uint64_t> out;
  for (auto& l : lines_of(path)) {
    auto j = json::parse(l, nullptr, false);
    if (j.is_object() && j.contains("seq")) out.push_back(j["seq"].get<std::uint64_t>());
  }
  return out;
}

using steady = std::chrono::steady_clock;

// The registry's hello and report as the commands call them, with the agent's queue
// position `next` (what every number it sent is below).
tl::expected<std::uint64_t, std::string> hello(agent_registry& reg, const std::string& name,
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
  return reg.hello(h, peer, true, now);
}

tl::expected<std::uint64_t, std::string> report(agent_registry& reg, const std::string& name,
                                                const std::string& qid, json results,
                                                std::uint64_t dropped,
                                                steady::time_point now = steady::now(),
                                                std::uint64_t next = 1000) {
  agent_report r;
  r.queue_id = qid;
  r.results = std::move(results);
  r.dropped = dropped;
  r.next_seq = next;
  return reg.report(name, r, now);
}

struct collected {
  std::vector<std::string> tasks, statuses, messages;
  std::vector<bool> had_previous;
};

void collect(agent_registry& reg, collected& c) {
  reg.on_result([&c](const result_record& r) {
    c.tasks.push_back(r.task->name);
    c.statuses.push_back(std::string(to_string(r.state)));
    c.messages.push_back(r.message);
    c.had_previous.push_back(r.previous.has_value());
  });
}

}  // namespace

TEST_CASE("agent registry: hello, report, dedupe and ack", "[agent_registry]") {
  temp_dir d;
  agent_registry reg({d.path()});
  collected c;
  collect(reg, c);
  auto t0 = std::chrono::steady_clock::now();
  CHECK_FALSE(report(reg, "b", "q1", batch(1, 2), 0, t0));  // no hello yet
  auto h = hello(reg, "b", "q1", {{"os", "Linux"}}, 1000ms, "127.0.0.1:4000", t0);
  REQUIRE(h);
  CHECK(*h == 0);
  auto ack = report(reg, "b", "q1", batch(1, 3), 0, t0);
  REQUIRE(ack);
  CHECK(*ack == 3);
  // A resent report (ack lost): 2 and 3 are duplicates, 4 is new.
  ack = report(reg, "b", "q1", batch(2, 4), 2, t0);
  REQUIRE(ack);
  CHECK(*ack == 4);
  CHECK(stored_seqs(reg.store_path("b")) == std::vector<std::uint64_t>{1, 2, 3, 4});
  CHECK(c.tasks == std::vector<std::string>(4, "b/system"));
  const auto* v = reg.find("b");
  REQUIRE(v);
  CHECK(v->duplicates == 2);
  CHECK(v->dropped == 2);
  CHECK(v->window.size() == 4);
  CHECK(v->window.back()["agent"] == "b");
  // Malformed input and a queue id that is not the hello's are refused, nothing stored.
  CHECK_FALSE(report(reg, "b", "q1", json{{{"task", "x"}}}, 0, t0));
  CHECK_FALSE(report(reg, "b", "other", batch(5, 5), 0, t0));
  CHECK_FALSE(hello(reg, "b", "bad id!", {}, 1000ms, "", t0));
  CHECK_FALSE(hello(reg, "a/b", "q1", {}, 1000ms, "", t0));
  CHECK(stored_seqs(reg.store_path("b")).size() == 4);
  // A new queue id (state directory recreated) starts at 0.
  h = hello(reg, "b", "q2", {}, 1000ms, "127.0.0.1:4001", t0);
  REQUIRE(h);
  CHECK(*h == 0);
  ack = report(reg, "b", "q2", batch(1, 2), 0, t0);
  REQUIRE(ack);
  CHECK(*ack == 2);
}

TEST_CASE("agent registry: the last seq survives a restart, a torn line is cut off",
          "[agent_registry]") {
  temp_dir d;
  std::string path;
  {
    agent_registry reg({d.path()});
    REQUIRE(hello(reg, "web-01", "q1", {}, 5000ms, "127.0.0.1:1"));
    REQUIRE(report(reg, "web-01", "q1", batch(1, 5), 3));
    path = reg.store_path("web-01");
  }
  // A crash mid-write: half a line at the end.
  { std::ofstream(path, std::ios::app) << "{\"queue_id\":\"q1\",\"seq\":6,\"drop"; }
  std::vector<std::string> warnings;
  agent_registry reg({d.path()}, [&](const std::string& w) { warnings.push_back(w); });
  // Known from the directory before it says hello.
  auto t = reg.table();
  REQUIRE(t["agents"].size() == 1);
  CHECK(t["agents"][0]["state"] == "offline");
  auto h = hello(reg, "web-01", "q1", {}, 5000ms, "127.0.0.1:2");
  REQUIRE(h);
  CHECK(*h == 5);
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].find(path + ":6: torn last line") != std::string::npos);
  CHECK(reg.find("web-01")->dropped == 3);
  CHECK(reg.find("web-01")->window.size() == 5);
  auto ack = report(reg, "web-01", "q1", batch(4, 7), 3);
  REQUIRE(ack);
  CHECK(*ack == 7);
  CHECK(stored_seqs(path) == std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6, 7});
  // Every line is whole JSON again.
  for (auto& l : lines_of(path)) CHECK(json::parse(l, nullptr, false).is_object());
}

TEST_CASE("agent registry: rotation keeps the dedupe state", "[agent_registry]") {
  temp_dir d;
  agent_registry_options o{d.path()};
  o.store_max_bytes = 4096;
  {
    agent_registry reg(o);
    REQUIRE(hello(reg, "a", "q1", {}, 1000ms, ""));
    for (std::uint64_t s = 1; s <= 40; s += 4) REQUIRE(report(reg, "a", "q1", batch(s, s + 3), 0));
    auto p = reg.store_path("a");
    CHECK(std::filesystem::exists(p + ".1"));
    CHECK(std::filesystem::file_size(p) <= 2 * 4096);
  }
  agent_registry reg(o);
  auto h = hello(reg, "a", "q1", {}, 1000ms, "");
  REQUIRE(h);
  CHECK(*h == 40);
  auto ack = report(reg, "a", "q1", batch(39, 41), 0);
  REQUIRE(ack);
  CHECK(*ack == 41);
}

TEST_CASE("agent registry: dead-man switch", "[agent_registry]") {
  temp_dir d;
  agent_registry reg({d.path()});
  collected c;
  collect(reg, c);
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(hello(reg, "b", "q1", {}, 5000ms, "127.0.0.1:9", t0));
  REQUIRE(report(reg, "b", "q1", batch(1, 1), 0, t0));
  CHECK(reg.sweep(t0 + 14900ms) == 0);
  CHECK(reg.sweep(t0 + 15200ms) == 1);
  CHECK(reg.sweep(t0 + 16000ms) == 0);  // once
  REQUIRE(c.tasks.back() == "agent:b");
  CHECK(c.statuses.back() == "critical");
  CHECK(c.messages.back() == "agent b silent for 15.2s (3 intervals of 5s)");
  CHECK(reg.table(t0 + 16000ms)["agents"][0]["state"] == "critical");
  // It reports again: recovery record, then the result.
  REQUIRE(report(reg, "b", "q1", batch(2, 2), 0, t0 + 17000ms));
  REQUIRE(c.tasks.size() >= 3);
  CHECK(c.tasks[c.tasks.size() - 2] == "agent:b");
  CHECK(c.statuses[c.statuses.size() - 2] == "ok");
  CHECK(c.had_previous[c.had_previous.size() - 2]);
  CHECK(reg.table(t0 + 17000ms)["agents"][0]["state"] == "ok");
  // Told to disconnect: no alarm.
  reg.retired("b");
  CHECK(reg.sweep(t0 + 60000ms) == 0);
  CHECK(reg.table(t0 + 60000ms)["agents"][0]["state"] == "disconnected");
}

TEST_CASE("agent registry: table and info", "[agent_registry]") {
  temp_dir d;
  agent_registry reg({d.path()});
  REQUIRE(hello(reg, "a", "q1",
                {{"os", "Debian"}, {"hostname", "h"}, {"cpu_count", 2}, {"mem_total", 400}}, 2000ms,
                "127.0.0.1:5555"));
  REQUIRE(report(reg, "a", "q1", json::array({result(1, "system", 7.5), result(2, "web")}), 0));
  auto row = reg.table()["agents"][0];
  CHECK(row["agent"] == "a");
  CHECK(row["address"] == "127.0.0.1:5555");
  CHECK(row["cpu"] == 7.5);
  CHECK(row["cpus"] == json::array({1.0, 2.0}));
  CHECK(row["mem_used"] == 100.0);
  CHECK(row["mem_total"] == 400.0);
  CHECK(row["load"] == json::array({0.5, 0.25, 0.125}));
  CHECK(row["state"] == "ok");
  CHECK(row["last_seq"] == 2);
  auto info = reg.info("a");
  CHECK(info["os"] == "Debian");
  CHECK(info["name"] == "a");
  CHECK(info["ip"] == "127.0.0.1");
  REQUIRE(reg.info_reply("a", {{"os", "Debian 12"}, {"name", "a"}, {"ip", "10.0.0.1"}}));
  CHECK(reg.info("a")["ip"] == "10.0.0.1");
  CHECK(reg.info("nobody").is_null());
  CHECK(reg.recent("a").size() == 2);
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
  std::vector<std::string> warnings;
  agent_registry reg({d.path()}, [&](const std::string& w) { warnings.push_back(w); });
  const std::string key = "0123456789abcdef0123";
  auto keys = d.write("agent-keys", "# name key\nweb-01 " + key + "\n\nlab\t" + key + "xy\n");
  std::filesystem::permissions(
      keys, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  // A listed agent must present its key, wherever it connects from.
  auto h = reg.hello(hello_of("web-01"), "127.0.0.1:1", true);
  REQUIRE_FALSE(h);
  CHECK_THAT(h.error(), Catch::Contains("must present its key"));
  h = reg.hello(hello_of("web-01", "0123456789abcdef0124"), "127.0.0.1:1", true);
  REQUIRE_FALSE(h);
  CHECK(h.error() == "wrong key for agent 'web-01'");
  CHECK_FALSE(reg.hello(hello_of("web-01", key + "0"), "127.0.0.1:1", true));  // longer
  CHECK_FALSE(reg.hello(hello_of("web-01", key.substr(1)), "127.0.0.1:1", true));
  CHECK(reg.find("web-01") == nullptr);  // refused hellos leave no trace in the view
  h = reg.hello(hello_of("web-01", key), "10.0.0.5:4000", false);
  REQUIRE(h);
  CHECK(reg.find("web-01")->keyed);
  // Beyond loopback an agent needs a key; on loopback a name without one is accepted.
  h = reg.hello(hello_of("other"), "10.0.0.6:4000", false);
  REQUIRE_FALSE(h);
  CHECK_THAT(h.error(), Catch::Contains("no key") && Catch::Contains(keys));
  REQUIRE(reg.hello(hello_of("other"), "127.0.0.1:4000", true));
  CHECK_FALSE(reg.find("other")->keyed);
  // The file is re-read when it changes; a broken file refuses everyone (fails closed).
  std::this_thread::sleep_for(10ms);
  d.write("agent-keys", "web-01 " + key + "\nweb-01 " + key + "\n");
  h = reg.hello(hello_of("other"), "127.0.0.1:4000", true);
  REQUIRE_FALSE(h);
  CHECK_THAT(h.error(), Catch::Contains(":2: agent 'web-01' is listed twice"));
  CHECK(reg.status_json()["keys_error"].is_string());
  std::this_thread::sleep_for(10ms);
  d.write("agent-keys", "other " + key + "\n");
  CHECK_FALSE(reg.hello(hello_of("other"), "127.0.0.1:4000", true));  // now it has a key
  REQUIRE(reg.hello(hello_of("other", key), "127.0.0.1:4000", true));
  CHECK(reg.status_json()["keys"] == 1);
}

TEST_CASE("agent registry: numbers beyond what the agent's queue wrote are refused",
          "[agent_registry]") {
  temp_dir d;
  std::vector<std::string> warnings;
  {
    agent_registry reg({d.path()}, [&](const std::string& w) { warnings.push_back(w); });
    REQUIRE(reg.hello(hello_of("b", std::nullopt, 11), "127.0.0.1:1", true));
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
    CHECK(stored_seqs(reg.store_path("b")).empty());
    auto ack = report(reg, "b", "q1", batch(1, 10), 0, steady::now(), 11);
    REQUIRE(ack);
    CHECK(*ack == 10);
    // A store that holds numbers the agent never wrote (forged before keys were configured):
    // the next hello rewinds to what the agent has, so its results are not skipped for ever.
    REQUIRE(reg.hello(hello_of("b", std::nullopt, 6), "127.0.0.1:2", true).value() == 5);
    REQUIRE_FALSE(warnings.empty());
    CHECK_THAT(warnings.back(), Catch::Contains("continuing from 5"));
    ack = report(reg, "b", "q1", batch(6, 7), 0, steady::now(), 8);
    REQUIRE(ack);
    CHECK(*ack == 7);
  }
  agent_registry reg({d.path()});
  CHECK(reg.hello(hello_of("b", std::nullopt, 8), "127.0.0.1:3", true).value() == 7);
}

TEST_CASE("agent registry: everything an agent sends is validated; the view stays usable",
          "[agent_registry]") {
  temp_dir d;
  agent_registry reg({d.path()});
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
  CHECK_FALSE(reg.hello(direct, "127.0.0.1:1", true));
  REQUIRE(hello(reg, "y", "q1", {{"os", "Debian"}}, 1000ms, "127.0.0.1:2"));
  CHECK_NOTHROW(reg.table());
  CHECK(reg.table()["agents"][0]["os"] == "Debian");
  CHECK_FALSE(reg.info_reply("y", {{"hostname", 7}}));
  CHECK_FALSE(reg.info_reply("y", {{"queue", {{"acked", "many"}}}}));
  CHECK(reg.info("y")["os"] == "Debian");  // unchanged by the refused reply

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
  CHECK(stored_seqs(reg.store_path("y")).empty());
}

TEST_CASE("agent registry: a store that cannot be written is visible, and gaps are counted",
          "[agent_registry]") {
  temp_dir d;
  std::vector<std::string> warnings;
  agent_registry reg({d.path()}, [&](const std::string& w) { warnings.push_back(w); });
  REQUIRE(hello(reg, "b", "q1", {}, 1000ms, "127.0.0.1:1"));
  REQUIRE(report(reg, "b", "q1", batch(1, 3), 0));
  // The disk is full: every write fails with ENOSPC.
  const auto path = reg.store_path("b");
  std::filesystem::rename(path, path + ".real");
  std::filesystem::create_symlink("/dev/full", path);
  auto t0 = steady::now();
  auto r = report(reg, "b", "q1", batch(4, 5), 0, t0);
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error(), Catch::Contains("No space left on device"));
  CHECK_FALSE(report(reg, "b", "q1", batch(4, 5), 0, t0 + 1s));  // retried: logged once
  auto said = std::count_if(warnings.begin(), warnings.end(), [](const std::string& w) {
    return w.find("cannot store its results") != std::string::npos;
  });
  CHECK(said == 1);
  auto row = reg.table()["agents"][0];
  CHECK_THAT(row["store_error"].get<std::string>(), Catch::Contains("No space left on device"));
  CHECK(row["store_failures"] == 2);
  CHECK(row["last_seq"] == 3);  // nothing acknowledged
  auto st = reg.status_json();
  CHECK(st["store_failures"] == 2);
  CHECK(st["store_failing"] == json::array({"b"}));
  CHECK_FALSE(report(reg, "b", "q1", batch(4, 5), 0, t0 + 11s));  // 10 s later: said again
  said = std::count_if(warnings.begin(), warnings.end(), [](const std::string& w) {
    return w.find("cannot store its results") != std::string::npos;
  });
  CHECK(said == 2);
  // Space again: stored, the error clears. Results 6..7 were dropped by the agent: a gap.
  std::filesystem::remove(path);
  std::filesystem::rename(path + ".real", path);
  auto ack = report(reg, "b", "q1", json::array({result(4), result(5), result(8)}), 2);
  REQUIRE(ack);
  CHECK(*ack == 8);
  row = reg.table()["agents"][0];
  CHECK(row["store_error"].is_null());
  CHECK(row["lost"] == 2);
  CHECK(row["dropped"] == 2);
  CHECK(reg.status_json()["store_failing"].empty());
  CHECK_THAT(warnings.back(), Catch::Contains("stored again"));
  // The gap count survives a restart (derived from the store).
  agent_registry again({d.path()});
  REQUIRE(hello(again, "b", "q1", {}, 1000ms, "127.0.0.1:2"));
  CHECK(again.table()["agents"][0]["lost"] == 2);
}
