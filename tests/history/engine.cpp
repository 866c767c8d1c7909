// History end to end: `sonde run` as a process records results, alarm events and maintenance
// time, and answers `history`, `uptime`, `percentiles` and `incidents` over the control
// channel, before and after a restart.
#include <sqlite3.h>

#include <catch2/catch.hpp>

#include <ctime>
#include <thread>

#include "support/engine_run.hpp"
#include "support/files.hpp"
#include "support/receiver.hpp"

using namespace std::chrono_literals;
using json = nlohmann::json;
using sonde::test::engine_run;
using sonde::test::switch_port;

namespace {

std::string tcp_task(const std::string& name, unsigned short port, const std::string& extra = "") {
  return "\n[[task]]\nname = \"" + name +
         "\"\ntype = \"tcp\"\ntarget = \"127.0.0.1:" + std::to_string(port) +
         "\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\n" + extra + "\n";
}

std::string utc(std::chrono::system_clock::time_point t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&tt));
  return buf;
}

}  // namespace

TEST_CASE("history e2e: results, alarm events and maintenance through sonde run",
          "[history][integration]") {
  sonde::test::temp_dir dir;
  switch_port up;
  up.open();
  switch_port closed;  // never opened: refused
  auto now = std::chrono::system_clock::now();
  std::string toml =
      "[alarms]\nfailure_threshold = 2\nsuccess_threshold = 1\nflap_window = 0\n"
      "[history]\ncommit_interval = \"100ms\"\n"
      "[[maintenance]]\nname = \"works\"\ntasks = [\"maint\"]\nstart = \"" +
      utc(now - 60s) + "\"\nduration = \"1h\"\n" + tcp_task("up", up.port()) +
      tcp_task("down", closed.port()) + tcp_task("maint", closed.port());
  engine_run eng(dir, toml);
  // Wait until the store holds a few results of each task.
  REQUIRE(sonde::test::wait_until(
      [&] {
        auto s = eng.cmd({{"command", "status"}});
        return s["history"]["state"] == "ok" && s["history"]["written"].get<int>() >= 30;
      },
      15s));
  std::this_thread::sleep_for(500ms);

  auto h = eng.cmd({{"command", "history"}, {"task", "up"}, {"since", "1m"}});
  REQUIRE(h["ok"] == true);
  CHECK(h["level"] == "raw");
  REQUIRE(h["points"].size() >= 5);
  for (const auto& p : h["points"]) {
    CHECK(p["status"] == "ok");
    CHECK(p["value"].get<double>() >= 0);
  }
  auto hd = eng.cmd({{"command", "history"}, {"task", "down"}, {"since", "1m"}});
  REQUIRE(hd["ok"] == true);
  CHECK(hd["points"][0]["status"] == "critical");
  CHECK(hd["points"][0]["reason"] == "refused");

  auto u = eng.cmd({{"command", "uptime"}, {"windows", {"1h", "24h"}}});
  REQUIRE(u["ok"] == true);
  std::map<std::string, json> by;
  for (const auto& t : u["tasks"]) by[t["task"]] = t["windows"]["1h"];
  REQUIRE(by.count("up"));
  REQUIRE(by.count("down"));
  REQUIRE(by.count("maint"));
  CHECK(by["up"]["uptime"].get<double>() == 100.0);
  CHECK(by["down"]["uptime"].get<double>() == 0.0);
  // Inside the maintenance window: counted apart, so there is no uptime to judge.
  CHECK(by["maint"]["critical"] == 0);
  CHECK(by["maint"]["maintenance"].get<int>() >= 3);
  CHECK(by["maint"]["uptime"].is_null());

  auto pc = eng.cmd({{"command", "percentiles"}, {"task", "up"}, {"since", "10m"}});
  REQUIRE(pc["ok"] == true);
  CHECK(pc["tasks"][0]["n"].get<int>() >= 5);
  CHECK(pc["tasks"][0]["p50"].get<double>() <= pc["tasks"][0]["max"].get<double>());

  // "down" fired (two failures); "maint" was held by its window but still recorded.
  REQUIRE(sonde::test::wait_until(
      [&] {
        auto i = eng.cmd({{"command", "incidents"}, {"task", "down"}});
        return i["ok"] == true && i["incidents"].size() == 1;
      },
      5s));
  auto inc = eng.cmd({{"command", "incidents"}, {"task", "down"}})["incidents"][0];
  CHECK(inc["end"].is_null());
  CHECK(inc["severity"] == "critical");
  CHECK(inc["reason"] == "refused");

  // Errors name what is wrong.
  auto bad = eng.cmd({{"command", "history"}, {"task", "nope"}});
  CHECK(bad["ok"] == false);
  CHECK(bad["error"].get<std::string>().find("nope") != std::string::npos);
  auto bad2 = eng.cmd({{"command", "history"}, {"task", "up"}, {"since", "yesterday"}});
  CHECK(bad2["ok"] == false);
  CHECK(bad2["error"].get<std::string>().find("since") != std::string::npos);
  auto bad3 = eng.cmd({{"command", "history"}});
  CHECK(bad3["ok"] == false);

  // A restart keeps everything and goes on adding.
  auto before = eng.cmd({{"command", "uptime"}, {"task", "up"}, {"windows", {"1h"}}});
  auto n_before = before["tasks"][0]["windows"]["1h"]["ok"].get<int>();
  eng.stop();
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2((eng.state_dir() + "/history.db").c_str(), &db, SQLITE_OPEN_READONLY,
                            nullptr) == SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))) == "ok");
    sqlite3_finalize(st);
    sqlite3_close(db);
  }
  eng.start();
  REQUIRE(sonde::test::wait_until(
      [&] {
        auto a = eng.cmd({{"command", "uptime"}, {"task", "up"}, {"windows", {"1h"}}});
        return a["ok"] == true && a["tasks"][0]["windows"]["1h"]["ok"].get<int>() > n_before;
      },
      10s));
  auto inc2 = eng.cmd({{"command", "incidents"}, {"task", "down"}});
  CHECK(inc2["incidents"].size() == 1);  // the same alarm continues after the restart
}
