// The central side of agents without sockets (engine/src/agent_registry.cpp): exactly-once
// storage across restarts, torn lines, rotation, the live view and the dead-man switch.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <sonde/engine/agent_registry.hpp>
#include <sonde/engine/output.hpp>

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
  CHECK_FALSE(reg.report("b", "q1", batch(1, 2), 0, t0));  // no hello yet
  auto h = reg.hello("b", "q1", {{"os", "Linux"}}, 1000ms, "127.0.0.1:4000", t0);
  REQUIRE(h);
  CHECK(*h == 0);
  auto ack = reg.report("b", "q1", batch(1, 3), 0, t0);
  REQUIRE(ack);
  CHECK(*ack == 3);
  // A resent report (ack lost): 2 and 3 are duplicates, 4 is new.
  ack = reg.report("b", "q1", batch(2, 4), 2, t0);
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
  CHECK_FALSE(reg.report("b", "q1", json{{{"task", "x"}}}, 0, t0));
  CHECK_FALSE(reg.report("b", "other", batch(5, 5), 0, t0));
  CHECK_FALSE(reg.hello("b", "bad id!", {}, 1000ms, "", t0));
  CHECK_FALSE(reg.hello("a/b", "q1", {}, 1000ms, "", t0));
  CHECK(stored_seqs(reg.store_path("b")).size() == 4);
  // A new queue id (state directory recreated) starts at 0.
  h = reg.hello("b", "q2", {}, 1000ms, "127.0.0.1:4001", t0);
  REQUIRE(h);
  CHECK(*h == 0);
  ack = reg.report("b", "q2", batch(1, 2), 0, t0);
  REQUIRE(ack);
  CHECK(*ack == 2);
}

TEST_CASE("agent registry: the last seq survives a restart, a torn line is cut off",
          "[agent_registry]") {
  temp_dir d;
  std::string path;
  {
    agent_registry reg({d.path()});
    REQUIRE(reg.hello("web-01", "q1", {}, 5000ms, "127.0.0.1:1"));
    REQUIRE(reg.report("web-01", "q1", batch(1, 5), 3));
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
  auto h = reg.hello("web-01", "q1", {}, 5000ms, "127.0.0.1:2");
  REQUIRE(h);
  CHECK(*h == 5);
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].find(path + ":6: torn last line") != std::string::npos);
  CHECK(reg.find("web-01")->dropped == 3);
  CHECK(reg.find("web-01")->window.size() == 5);
  auto ack = reg.report("web-01", "q1", batch(4, 7), 3);
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
    REQUIRE(reg.hello("a", "q1", {}, 1000ms, ""));
    for (std::uint64_t s = 1; s <= 40; s += 4) REQUIRE(reg.report("a", "q1", batch(s, s + 3), 0));
    auto p = reg.store_path("a");
    CHECK(std::filesystem::exists(p + ".1"));
    CHECK(std::filesystem::file_size(p) <= 2 * 4096);
  }
  agent_registry reg(o);
  auto h = reg.hello("a", "q1", {}, 1000ms, "");
  REQUIRE(h);
  CHECK(*h == 40);
  auto ack = reg.report("a", "q1", batch(39, 41), 0);
  REQUIRE(ack);
  CHECK(*ack == 41);
}

TEST_CASE("agent registry: dead-man switch", "[agent_registry]") {
  temp_dir d;
  agent_registry reg({d.path()});
  collected c;
  collect(reg, c);
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(reg.hello("b", "q1", {}, 5000ms, "127.0.0.1:9", t0));
  REQUIRE(reg.report("b", "q1", batch(1, 1), 0, t0));
  CHECK(reg.sweep(t0 + 14900ms) == 0);
  CHECK(reg.sweep(t0 + 15200ms) == 1);
  CHECK(reg.sweep(t0 + 16000ms) == 0);  // once
  REQUIRE(c.tasks.back() == "agent:b");
  CHECK(c.statuses.back() == "critical");
  CHECK(c.messages.back() == "agent b silent for 15.2s (3 intervals of 5s)");
  CHECK(reg.table(t0 + 16000ms)["agents"][0]["state"] == "critical");
  // It reports again: recovery record, then the result.
  REQUIRE(reg.report("b", "q1", batch(2, 2), 0, t0 + 17000ms));
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
  REQUIRE(reg.hello("a", "q1",
                    {{"os", "Debian"}, {"hostname", "h"}, {"cpu_count", 2}, {"mem_total", 400}},
                    2000ms, "127.0.0.1:5555"));
  REQUIRE(reg.report("a", "q1", json::array({result(1, "system", 7.5), result(2, "web")}), 0));
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
  reg.info_reply("a", {{"os", "Debian 12"}, {"name", "a"}, {"ip", "10.0.0.1"}});
  CHECK(reg.info("a")["ip"] == "10.0.0.1");
  CHECK(reg.info("nobody").is_null());
  CHECK(reg.recent("a").size() == 2);
}
