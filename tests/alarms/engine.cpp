// Alarms end to end: `sonde run` as a process, tasks against loopback ports the test opens and
// closes, notifications received by an in-test webhook receiver and an `exec` script. Faults:
// a receiver that refuses or stalls, SIGKILL with notifications pending, 1,000 tasks failing at
// once, a dependency chain, a flapping target, a maintenance window that opens and closes.
#include <signal.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>

#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "support/engine_run.hpp"
#include "support/files.hpp"
#include "support/http_servers.hpp"
#include "support/line_client.hpp"
#include "support/process.hpp"
#include "support/receiver.hpp"

using namespace std::chrono_literals;
using json = nlohmann::json;
using sonde::test::engine_run;
using sonde::test::receiver;
using sonde::test::switch_port;

namespace {

std::string tcp_task(const std::string& name, unsigned short port, const std::string& extra = "",
                     const std::string& interval = "200ms") {
  return "\n[[task]]\nname = \"" + name +
         "\"\ntype = \"tcp\"\ntarget = \"127.0.0.1:" + std::to_string(port) + "\"\ninterval = \"" +
         interval + "\"\ntimeout = \"" + interval + "\"\n" + extra + "\n";
}

std::string webhook(const receiver& r, const std::string& name = "hook",
                    const std::string& extra = "group_wait = \"0s\"") {
  return "\n[[notifier]]\nname = \"" + name + "\"\ntype = \"webhook\"\nurl = \"" + r.url() +
         "\"\ntimeout = \"2s\"\nretry_initial = \"200ms\"\nretry_max = \"1s\"\n" + extra + "\n";
}

// Events for `task` with the given state, in order.
std::vector<json> of(const std::vector<json>& events, const std::string& task,
                     const std::string& state = "") {
  std::vector<json> out;
  for (const auto& e : events)
    if (e.value("task", "") == task && (state.empty() || e.value("state", "") == state))
      out.push_back(e);
  return out;
}

// No event twice: (alarm_id, state, previous, time) is unique.
void check_no_duplicates(const std::vector<json>& events) {
  std::set<std::string> seen;
  for (const auto& e : events) {
    auto key = e.value("alarm_id", "") + "|" + e.value("state", "") + "|" +
               e.value("previous", "") + "|" + e.value("time", "");
    INFO(e.dump());
    CHECK(seen.insert(key).second);
  }
}

}  // namespace

TEST_CASE(
    "alarm e2e: a port closed by hand fires after exactly failure_threshold failures and "
    "resolves after success_threshold successes, one notification each",
    "[alarm][integration]") {
  sonde::test::temp_dir dir;
  receiver rx;
  switch_port svc;
  svc.open();
  engine_run eng(dir,
                 "[alarms]\nfailure_threshold = 3\nsuccess_threshold = 2\nnotify = "
                 "[\"hook\"]\nflap_window = 0\n" +
                     webhook(rx) + tcp_task("svc", svc.port()));
  std::this_thread::sleep_for(600ms);
  CHECK(rx.count() == 0);
  svc.close();
  REQUIRE(sonde::test::wait_until([&] { return rx.count() >= 1; }, 10s));
  auto firing = rx.events();
  REQUIRE(firing.size() == 1);
  const auto& f = firing[0];
  for (const char* k : {"time", "alarm_id", "task", "type", "target", "state", "severity",
                        "previous", "since", "reason", "message", "results"})
    CHECK(f.contains(k));
  CHECK(f["task"] == "svc");
  CHECK(f["type"] == "tcp");
  CHECK(f["state"] == "firing");
  CHECK(f["previous"] == "pending");
  CHECK(f["severity"] == "critical");
  CHECK(f["reason"] == "refused");
  REQUIRE(f["results"].size() == 3);  // exactly failure_threshold failures
  for (const auto& r : f["results"]) CHECK(r["status"] == "critical");
  auto alarms = eng.cmd({{"command", "alarms"}});
  REQUIRE(alarms["ok"] == true);
  REQUIRE(alarms["alarms"].size() == 1);
  CHECK(alarms["alarms"][0]["alarm_id"] == f["alarm_id"]);
  CHECK(alarms["alarms"][0]["notified"] == true);
  std::this_thread::sleep_for(800ms);
  CHECK(rx.count() == 1);  // no repeats while it keeps failing
  svc.open();
  REQUIRE(sonde::test::wait_until([&] { return rx.count() >= 2; }, 10s));
  std::this_thread::sleep_for(800ms);
  auto all = rx.events();
  REQUIRE(all.size() == 2);
  CHECK(all[1]["state"] == "ok");
  CHECK(all[1]["previous"] == "firing");
  CHECK(all[1]["alarm_id"] == f["alarm_id"]);
  CHECK(all[1]["results"].size() >= 2);
  CHECK(eng.cmd({{"command", "alarms"}})["alarms"].empty());
  auto n = eng.cmd({{"command", "notifiers"}});
  REQUIRE(n["notifiers"].size() == 1);
  CHECK(n["notifiers"][0]["sent"] == 2);
  CHECK(n["notifiers"][0]["pending"] == 0);
  auto reqs = rx.received();
  CHECK_THAT(reqs[0].headers, Catch::Contains("X-Sonde-Notification"));
}

TEST_CASE(
    "alarm e2e: a receiver that refuses, then stalls for a minute, then recovers gets "
    "everything, in order, none twice",
    "[alarm][integration][slow]") {
  sonde::test::temp_dir dir;
  receiver rx;
  switch_port a, b;
  a.open();
  b.open();
  rx.set_mode(receiver::mode::refuse);
  engine_run eng(dir,
                 "[alarms]\nfailure_threshold = 1\nsuccess_threshold = 1\nnotify = "
                 "[\"hook\"]\nflap_window = 0\n" +
                     webhook(rx) + tcp_task("a", a.port()) + tcp_task("b", b.port()));
  a.close();
  std::this_thread::sleep_for(700ms);
  a.open();
  std::this_thread::sleep_for(700ms);
  // Refused so far; now the receiver stalls: connections accepted, never answered.
  rx.set_mode(receiver::mode::stall);
  b.close();
  std::this_thread::sleep_for(700ms);
  b.open();
  std::this_thread::sleep_for(60s);
  CHECK(rx.count() == 0);
  auto n = eng.cmd({{"command", "notifiers"}});
  CHECK(n["notifiers"][0]["failed"].get<int>() >= 2);
  CHECK(n["notifiers"][0]["pending"] == 4);
  rx.set_mode(receiver::mode::up);
  REQUIRE(sonde::test::wait_until([&] { return rx.events().size() >= 4; }, 20s));
  std::this_thread::sleep_for(1s);
  auto ev = rx.events();
  REQUIRE(ev.size() == 4);
  check_no_duplicates(ev);
  // In the order they happened.
  CHECK(ev[0]["task"] == "a");
  CHECK(ev[0]["state"] == "firing");
  CHECK(ev[1]["task"] == "a");
  CHECK(ev[1]["state"] == "ok");
  CHECK(ev[2]["task"] == "b");
  CHECK(ev[2]["state"] == "firing");
  CHECK(ev[3]["task"] == "b");
  CHECK(ev[3]["state"] == "ok");
  n = eng.cmd({{"command", "notifiers"}});
  CHECK(n["notifiers"][0]["pending"] == 0);
  CHECK(n["notifiers"][0]["dropped"] == 0);
}

TEST_CASE(
    "alarm e2e: SIGKILL with notifications pending, after the restart all are delivered, "
    "none twice, and the firing alarm is not raised again",
    "[alarm][integration]") {
  sonde::test::temp_dir dir;
  receiver rx;
  switch_port a, b;
  rx.set_mode(receiver::mode::refuse);
  a.open();
  b.open();
  const std::string toml =
      "[alarms]\nfailure_threshold = 1\nsuccess_threshold = 1\nnotify = "
      "[\"hook\"]\nflap_window = 0\n" +
      webhook(rx) + tcp_task("a", a.port()) + tcp_task("b", b.port());
  engine_run eng(dir, toml);
  a.close();
  b.close();
  std::this_thread::sleep_for(600ms);
  b.open();  // b fires and resolves; a keeps firing
  std::this_thread::sleep_for(600ms);
  auto n = eng.cmd({{"command", "notifiers"}});
  REQUIRE(n["notifiers"][0]["pending"] == 3);
  eng.kill9();
  rx.set_mode(receiver::mode::up);
  eng.start();
  REQUIRE(sonde::test::wait_until([&] { return rx.events().size() >= 3; }, 15s));
  std::this_thread::sleep_for(1500ms);  // a keeps failing meanwhile: no new firing
  auto ev = rx.events();
  REQUIRE(ev.size() == 3);
  check_no_duplicates(ev);
  CHECK(of(ev, "a", "firing").size() == 1);
  CHECK(of(ev, "b", "firing").size() == 1);
  CHECK(of(ev, "b", "ok").size() == 1);
  auto alarms = eng.cmd({{"command", "alarms"}});
  REQUIRE(alarms["alarms"].size() == 1);
  CHECK(alarms["alarms"][0]["alarm_id"] == of(ev, "a", "firing")[0]["alarm_id"]);
  // Its resolution, after the restart, carries the same id.
  a.open();
  REQUIRE(sonde::test::wait_until([&] { return of(rx.events(), "a", "ok").size() == 1; }, 10s));
  CHECK(of(rx.events(), "a", "ok")[0]["alarm_id"] == of(ev, "a", "firing")[0]["alarm_id"]);
}

TEST_CASE("alarm e2e: 1,000 tasks failing at once make one grouped message per notifier",
          "[alarm][integration]") {
  sonde::test::temp_dir dir;
  receiver rx;
  const auto closed = sonde::test::free_port();
  const std::string out = dir.path() + "/exec.out";
  std::string toml =
      "[engine]\nmax_in_flight = 2000\n[alarms]\nfailure_threshold = "
      "1\nnotify = [\"hook\", \"script\"]\nflap_window = 0\n" +
      webhook(rx, "hook", "group_wait = \"4s\"") +
      "\n[[notifier]]\nname = \"script\"\ntype = \"exec\"\ngroup_wait = "
      "\"4s\"\ncommand = [\"/bin/sh\", \"-c\", \"cat >> " +
      out + "; echo >> " + out + "\"]\n";
  for (int i = 0; i < 1000; ++i) toml += tcp_task("t" + std::to_string(i), closed, "", "1s");
  engine_run eng(dir, toml);
  REQUIRE(sonde::test::wait_until([&] { return rx.count() >= 1; }, 20s));
  std::this_thread::sleep_for(2s);
  auto reqs = rx.received();
  REQUIRE(reqs.size() == 1);
  auto body = reqs[0].json();
  REQUIRE(body.contains("events"));
  CHECK(body["events"].size() == 1000);
  std::set<std::string> tasks;
  for (const auto& e : body["events"]) tasks.insert(e["task"].get<std::string>());
  CHECK(tasks.size() == 1000);
  // The script got the same group as one JSON document on stdin.
  REQUIRE(sonde::test::wait_until(
      [&] {
        std::ifstream f(out);
        return f.good() && f.peek() != std::ifstream::traits_type::eof();
      },
      10s));
  std::this_thread::sleep_for(500ms);
  std::ifstream f(out);
  std::string line;
  std::vector<json> docs;
  while (std::getline(f, line))
    if (!line.empty()) docs.push_back(json::parse(line));
  REQUIRE(docs.size() == 1);
  CHECK(docs[0]["events"].size() == 1000);
}

TEST_CASE(
    "alarm e2e: a dependency chain pages for the root only, a child that still fails "
    "after its parent recovers is notified then",
    "[alarm][integration]") {
  sonde::test::temp_dir dir;
  receiver rx;
  switch_port gw, web, app;
  gw.open();
  web.open();
  app.open();
  engine_run eng(
      dir,
      "[alarms]\nfailure_threshold = 2\nsuccess_threshold = 1\nnotify = [\"hook\"]\nflap_window = "
      "0\n" +
          webhook(rx) + tcp_task("gw", gw.port()) +
          tcp_task("web", web.port(), "alarm = { depends_on = \"gw\" }") +
          tcp_task("app", app.port(), "alarm = { depends_on = \"web\" }"));
  std::this_thread::sleep_for(500ms);
  gw.close();
  web.close();
  app.close();
  REQUIRE(sonde::test::wait_until([&] { return rx.count() >= 1; }, 10s));
  std::this_thread::sleep_for(1500ms);
  auto ev = rx.events();
  REQUIRE(ev.size() == 1);
  CHECK(ev[0]["task"] == "gw");
  auto alarms = eng.cmd({{"command", "alarms"}});
  CHECK(alarms["alarms"].size() == 3);  // all judged and shown, two held
  for (const auto& a : alarms["alarms"])
    if (a["task"] != "gw") CHECK(a.contains("blocked_by"));
  // The gateway recovers, web and app stay down: web is notified now; app is still held by
  // web, which fires.
  gw.open();
  REQUIRE(sonde::test::wait_until([&] { return rx.events().size() >= 3; }, 10s));
  std::this_thread::sleep_for(1s);
  ev = rx.events();
  REQUIRE(ev.size() == 3);
  CHECK(of(ev, "gw", "ok").size() == 1);
  CHECK(of(ev, "web", "firing").size() == 1);
  CHECK(of(ev, "app").empty());
  // Everything recovers, app first: only web's resolution (app was never notified).
  app.open();
  REQUIRE(sonde::test::wait_until(
      [&] {
        return eng.cmd({{"command", "alarms"}, {"task", "app"}})["alarms"].empty();
      },
      10s));
  web.open();
  REQUIRE(sonde::test::wait_until([&] { return rx.events().size() >= 4; }, 10s));
  std::this_thread::sleep_for(1s);
  ev = rx.events();
  for (const auto& e : ev)
    UNSCOPED_INFO(e["task"].dump() + " " + e["previous"].dump() + " -> " + e["state"].dump() + " " +
                  e["time"].dump());
  REQUIRE(ev.size() == 4);
  CHECK(of(ev, "web", "ok").size() == 1);
  CHECK(of(ev, "app").empty());
}

TEST_CASE("alarm e2e: a flapping target is notified once as flapping, not on every change",
          "[alarm][integration]") {
  sonde::test::temp_dir dir;
  receiver rx;
  // Every other connection is answered "up", the rest "down": the status changes every run.
  unsigned short port = 0;
  const int lfd = sonde::test::listen_on_loopback(port, "flapper");
  std::thread flapper([lfd] {
    for (int i = 0;; ++i) {
      int c = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) return;
      const char* say = i % 2 ? "down\n" : "up\n";
      (void)::send(c, say, std::strlen(say), MSG_NOSIGNAL);
      ::close(c);
    }
  });
  {
    engine_run eng(dir,
                   "[alarms]\nfailure_threshold = 2\nsuccess_threshold = 2\nnotify = "
                   "[\"hook\"]\nflap_window = 10\nflap_high = 50\nflap_low = 25\n" +
                       webhook(rx) + tcp_task("flappy", port, "expect = \"up\"", "100ms"));
    REQUIRE(sonde::test::wait_until([&] { return rx.count() >= 1; }, 10s));
    std::this_thread::sleep_for(2s);  // 20 more changes
    auto ev = rx.events();
    REQUIRE(ev.size() == 1);
    CHECK(ev[0]["state"] == "flapping");
    auto a = eng.cmd({{"command", "alarms"}});
    REQUIRE(a["alarms"].size() == 1);
    CHECK(a["alarms"][0]["state"] == "flapping");
  }
  ::shutdown(lfd, SHUT_RDWR);
  ::close(lfd);
  flapper.join();
}

TEST_CASE(
    "alarm e2e: a maintenance window that opens and closes during the test holds the "
    "firing, which is notified when the window ends",
    "[alarm][integration]") {
  sonde::test::temp_dir dir;
  receiver rx;
  switch_port svc;
  svc.open();
  // Whole seconds: the window's start is written to the file without a fraction.
  auto start = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now() + 3s);
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(start.time_since_epoch()).count();
  std::time_t tt = secs;
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&tt));
  engine_run eng(dir,
                 std::string("[alarms]\nfailure_threshold = 1\nsuccess_threshold = "
                             "1\nnotify = [\"hook\"]\nflap_window = 0\n") +
                     webhook(rx) + "\n[[maintenance]]\nname = \"upgrade\"\ntasks = [\"svc\"]\n" +
                     "start = \"" + when + "\"\nduration = \"5s\"\n" + tcp_task("svc", svc.port()));
  std::this_thread::sleep_until(start + 500ms);
  auto a = eng.cmd({{"command", "alarms"}});
  REQUIRE(a["maintenance_open"].size() == 1);
  svc.close();  // down during the window: judged, shown as silenced, not notified
  std::this_thread::sleep_for(1s);
  a = eng.cmd({{"command", "alarms"}});
  REQUIRE(a["alarms"].size() == 1);
  CHECK(a["alarms"][0]["state"] == "silenced");
  CHECK(rx.count() == 0);
  // The window ends while the service is still down: the firing goes out then.
  REQUIRE(sonde::test::wait_until([&] { return rx.count() >= 1; }, 10s));
  for (const auto& e : rx.events())
    UNSCOPED_INFO(e["task"].dump() + " " + e["previous"].dump() + " -> " + e["state"].dump() + " " +
                  e["time"].dump());
  CHECK(std::chrono::system_clock::now() >= start + 5s);
  auto ev = rx.events();
  REQUIRE(ev.size() == 1);
  CHECK(ev[0]["state"] == "firing");
  CHECK(ev[0]["previous"] == "silenced");
  svc.open();
  REQUIRE(sonde::test::wait_until([&] { return rx.count() >= 2; }, 10s));
  CHECK(rx.events()[1]["state"] == "ok");
}

TEST_CASE(
    "alarm e2e: silence, unsilence and ack over the control channel, watchers get "
    "alarm events",
    "[alarm][integration]") {
  sonde::test::temp_dir dir;
  receiver rx;
  switch_port svc;
  svc.open();
  engine_run eng(dir,
                 "[alarms]\nfailure_threshold = 1\nsuccess_threshold = 1\nrenotify = "
                 "\"1s\"\nnotify = [\"hook\"]\nflap_window = 0\n" +
                     webhook(rx) + tcp_task("svc", svc.port(), "tags = { team = \"web\" }"));
  sonde::test::line_client w(eng.port());
  w.send({{"command", "watch"}, {"alarms", true}, {"results", false}});
  auto wr = w.json_line();
  REQUIRE(wr);
  REQUIRE((*wr)["ok"] == true);
  auto sil = eng.cmd(
      {{"command", "silence"}, {"tags", {{"team", "web"}}}, {"for", "1h"}, {"reason", "deploy"}});
  REQUIRE(sil["ok"] == true);
  CHECK(sil["covers"] == 1);
  svc.close();
  auto ev = w.json_line();
  REQUIRE(ev);
  CHECK((*ev)["event"] == "alarm");
  CHECK((*ev)["alarm"]["state"] == "silenced");
  CHECK((*ev)["alarm"]["held_by"] == "silence " + sil["id"].dump() + " (deploy)");
  std::this_thread::sleep_for(500ms);
  CHECK(rx.count() == 0);
  CHECK(eng.cmd({{"command", "unsilence"}, {"id", 999}})["ok"] == false);
  REQUIRE(eng.cmd({{"command", "unsilence"}, {"id", sil["id"]}})["ok"] == true);
  REQUIRE(sonde::test::wait_until([&] { return rx.count() >= 1; }, 5s));
  // renotify 1s: repeated until acknowledged.
  REQUIRE(sonde::test::wait_until([&] { return rx.count() >= 2; }, 5s));
  auto alarm_id = rx.events()[0]["alarm_id"];
  CHECK(rx.events()[1]["alarm_id"] == alarm_id);
  CHECK(eng.cmd({{"command", "ack"}, {"alarm_id", "nope"}})["ok"] == false);
  auto ack = eng.cmd({{"command", "ack"}, {"alarm_id", alarm_id}});
  REQUIRE(ack["ok"] == true);
  const auto after_ack = rx.count();
  std::this_thread::sleep_for(2500ms);
  CHECK(rx.count() == after_ack);
  svc.open();
  REQUIRE(sonde::test::wait_until([&] { return rx.count() >= after_ack + 1; }, 5s));
  CHECK(rx.events().back()["state"] == "ok");
  CHECK(rx.events().back()["alarm_id"] == alarm_id);
  // The watcher saw firing (unsilenced), renotifies and the resolution too.
  bool saw_ok = false;
  for (int i = 0; i < 20 && !saw_ok; ++i) {
    auto e = w.json_line();
    if (!e) break;
    saw_ok = (*e)["alarm"]["state"] == "ok";
  }
  CHECK(saw_ok);
}

TEST_CASE("alarm e2e: reload applies new [alarms] defaults and maintenance windows",
          "[alarm][integration]") {
  sonde::test::temp_dir dir;
  receiver rx;
  switch_port svc;
  svc.open();
  auto file = [&](int threshold, const std::string& extra) {
    return "[alarms]\nfailure_threshold = " + std::to_string(threshold) +
           "\nsuccess_threshold = 1\nnotify = [\"hook\"]\nflap_window = 0\n" + webhook(rx) + extra +
           tcp_task("svc", svc.port());
  };
  engine_run eng(dir, file(50, ""));
  dir.write("tasks.toml", file(1,
                               "\n[[maintenance]]\nname = \"now\"\ntasks = [\"svc\"]\nstart = "
                               "\"2000-01-01T00:00:00Z\"\nduration = \"366d\"\n"));
  // (A one-off window in 2000 is long over: it exists but is closed.)
  auto r = eng.cmd({{"command", "reload"}});
  REQUIRE(r["ok"] == true);
  svc.close();
  REQUIRE(sonde::test::wait_until([&] { return rx.count() >= 1; }, 5s));
  auto ev = rx.events();
  CHECK(ev[0]["state"] == "firing");
  CHECK(ev[0]["results"].size() == 1);  // the reloaded threshold, not 50
  CHECK(eng.cmd({{"command", "alarms"}})["maintenance_open"].empty());
}
