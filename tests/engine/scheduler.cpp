// Scheduler behaviour with the controllable "sleep" test plugin: in-flight limit, no overlap,
// spread of first runs, once mode, graceful stop, evaluation of conditions.
#include <catch2/catch.hpp>

#include <asio/steady_timer.hpp>

#include "core/config.hpp"
#include "core/scheduler.hpp"

#include "support/files.hpp"
#include "support/plugins.hpp"

using namespace sonde;
using namespace sonde::engine;
using sonde::test::plugins;
using namespace std::chrono_literals;

namespace {

task_file load(const std::string& toml) {
  test::temp_dir dir;
  auto r = load_task_file(dir.write("s.toml", toml), plugins());
  if (!r) FAIL(r.error()[0].to_string());
  return std::move(*r);
}

std::string sleep_tasks(int n, const char* interval, const char* delay, const char* timeout) {
  std::string s;
  for (int i = 0; i < n; ++i)
    s += "[[task]]\nname = \"t" + std::to_string(i) + "\"\ntype = \"sleep\"\ntarget = \"x\"\n" +
         "interval = \"" + interval + "\"\ntimeout = \"" + timeout + "\"\ndelay = \"" + delay +
         "\"\nvalue = " + std::to_string(i) + "\n";
  return s;
}

struct collect final : result_sink {
  std::vector<result_record> got;
  void on_result(const result_record& r) override { got.push_back(r); }
};
}  // namespace

TEST_CASE("scheduler: once mode runs every enabled task once within max_in_flight", "[scheduler]") {
  auto tf = load("[engine]\nmax_in_flight = 3\n" + sleep_tasks(10, "1s", "20ms", "1s"));
  asio::io_context io;
  scheduler s(io, tf.tasks, {3, true});
  collect c;
  s.add_sink(&c);
  bool idle = false;
  s.on_idle([&] { idle = true, io.stop(); });
  s.start();
  io.run_for(5s);
  CHECK(idle);
  REQUIRE(c.got.size() == 10);
  CHECK(s.stats().max_in_flight_seen == 3);
  for (auto& r : c.got) {
    CHECK(r.state == status::ok);
    for (auto& m : r.metrics)
      if (m.name == "concurrent") CHECK(m.value <= 3);
  }
}

TEST_CASE("scheduler: a task never overlaps itself, missed runs are skipped", "[scheduler]") {
  // max_in_flight 1 and two tasks each taking the whole interval: runs must queue, never overlap.
  auto tf = load("[engine]\nmax_in_flight = 1\n" + sleep_tasks(2, "40ms", "40ms", "40ms"));
  asio::io_context io;
  scheduler s(io, tf.tasks, {1, false});
  collect c;
  s.add_sink(&c);
  s.start();
  io.run_for(400ms);
  CHECK(s.stats().max_in_flight_seen == 1);
  CHECK(s.stats().skipped_overlap > 0);
  for (auto& r : c.got)
    for (auto& m : r.metrics)
      if (m.name == "concurrent") CHECK(m.value == 1);
}

TEST_CASE("scheduler: first runs are spread over the interval", "[scheduler]") {
  auto tf = load(sleep_tasks(5, "500ms", "1ms", "100ms"));
  asio::io_context io;
  scheduler s(io, tf.tasks, {100, false});
  collect c;
  s.add_sink(&c);
  auto t0 = std::chrono::system_clock::now();
  s.start();
  io.run_for(480ms);
  REQUIRE(c.got.size() == 5);
  // Task i starts about i * 100 ms after start.
  for (auto& r : c.got) {
    double expected_ms = 100.0 * (&r - &c.got[0]);
    double got_ms = std::chrono::duration<double, std::milli>(r.time - t0).count();
    CHECK(got_ms == Approx(expected_ms).margin(40));
  }
}

TEST_CASE("scheduler: repeated runs follow the interval and stop drains in-flight probes",
          "[scheduler]") {
  auto tf = load(sleep_tasks(1, "50ms", "30ms", "50ms"));
  asio::io_context io;
  scheduler s(io, tf.tasks, {10, false});
  collect c;
  s.add_sink(&c);
  s.start();
  asio::steady_timer stop_at(io, 275ms);  // mid-run: 6 runs started, the last one in flight
  bool stopped = false;
  stop_at.async_wait([&](asio::error_code) {
    CHECK(s.stats().in_flight == 1);
    s.stop([&] { stopped = true, io.stop(); }, 2000ms);
  });
  io.run_for(2s);
  CHECK(stopped);
  CHECK(s.stats().in_flight == 0);
  CHECK(c.got.size() == 6);
}

TEST_CASE("scheduler: evaluation turns reasons and conditions into statuses", "[scheduler]") {
  auto tf = load(R"([[task]]
name = "w"
type = "sleep"
target = "x"
value = 5
warn = "value >= 5"
crit = "value > 10"

[[task]]
name = "c"
type = "sleep"
target = "x"
value = 11
warn = "value >= 5"
crit = ["latency > 1h", "value > 10"]

[[task]]
name = "t"
type = "sleep"
target = "x"
delay = "2s"
timeout = "20ms"
)");
  asio::io_context io;
  scheduler s(io, tf.tasks, {10, true});
  collect c;
  s.add_sink(&c);
  s.on_idle([&] { io.stop(); });
  s.start();
  io.run_for(3s);
  REQUIRE(c.got.size() == 3);
  std::map<std::string, const result_record*> by;
  for (auto& r : c.got) by[r.task->name] = &r;
  CHECK(by["w"]->state == status::warning);
  CHECK(by["w"]->why == reason::condition);
  CHECK_THAT(by["w"]->message, Catch::StartsWith("value >= 5 (value = 5)"));
  CHECK(by["c"]->state == status::critical);
  CHECK_THAT(by["c"]->message, Catch::StartsWith("value > 10 (value = 11)"));
  CHECK(by["t"]->state == status::critical);
  CHECK(by["t"]->why == reason::timeout);
}

TEST_CASE("scheduler: tasks are added, paused, resumed and removed while running", "[scheduler]") {
  auto tf = load(sleep_tasks(2, "20ms", "1ms", "20ms"));
  auto extra = load(R"([[task]]
name = "x"
type = "sleep"
target = "x"
interval = "20ms"
timeout = "20ms"
delay = "10ms"
value = 9
)");
  asio::io_context io;
  scheduler s(io, tf.tasks, {100, false});
  // Names are copied: a removed task's definition is freed with it.
  struct names final : result_sink {
    std::vector<std::string> got;
    void on_result(const result_record& r) override { got.push_back(r.task->name); }
  } c;
  s.add_sink(&c);
  s.start();
  io.run_for(100ms);
  auto count = [&](const std::string& name) {
    return std::count(c.got.begin(), c.got.end(), name);
  };
  CHECK(count("t0") >= 3);
  REQUIRE(s.add(extra.tasks[0]));
  CHECK(!s.add(extra.tasks[0]));  // names are unique
  CHECK(s.size() == 3);
  io.run_for(15ms);  // an added task runs at once
  CHECK(count("x") == 1);
  REQUIRE(s.find("x"));
  REQUIRE(s.find("x")->last_result());
  CHECK(s.find("x")->last_result()->metrics[0].value == 9);

  REQUIRE(s.pause("t0"));
  CHECK(s.find("t0")->paused());
  io.run_for(10ms);  // a run in flight may still finish
  auto paused_at = count("t0");
  io.run_for(100ms);
  CHECK(count("t0") == paused_at);
  CHECK(count("t1") >= 4);
  REQUIRE(s.resume("t0"));
  io.run_for(5ms);
  CHECK(count("t0") == paused_at + 1);  // resumed: runs at once

  // Removed while its run is in flight: the run finishes, its result is dropped.
  io.run_for(12ms);
  auto x_before = count("x");
  REQUIRE(s.remove("x"));
  CHECK(!s.find("x"));
  CHECK(!s.remove("x"));
  io.run_for(60ms);
  CHECK(count("x") <= x_before + 1);
  auto x_after = count("x");
  io.run_for(60ms);
  CHECK(count("x") == x_after);
  CHECK(s.size() == 2);
  CHECK(s.stats().in_flight <= 2);

  // A removed slot is reused, with its old schedule forgotten.
  extra.tasks[0].name = "y";
  REQUIRE(s.add(extra.tasks[0]));
  io.run_for(50ms);
  CHECK(count("y") >= 2);
  CHECK(count("y") <= 4);
  std::vector<std::string> names;
  s.for_each([&](const scheduled_task& t) { names.push_back(t.spec().name); });
  CHECK(names == std::vector<std::string>{"t0", "t1", "y"});
  bool stopped = false;
  s.stop([&] { stopped = true; }, 1000ms);
  io.run_for(200ms);
  CHECK(stopped);
}

TEST_CASE("scheduler: resuming many tasks spreads their first runs", "[scheduler]") {
  auto tf = load(sleep_tasks(4, "400ms", "1ms", "100ms"));
  asio::io_context io;
  scheduler s(io, tf.tasks, {100, false});
  collect c;
  s.add_sink(&c);
  for (auto& t : tf.tasks) s.pause(t.name);
  s.start();
  io.run_for(50ms);
  CHECK(c.got.empty());  // paused before start: nothing runs
  io.restart();          // it ran out of work
  auto t0 = std::chrono::system_clock::now();
  s.resume(std::vector<std::string>{"t0", "t1", "t2", "t3"});
  io.run_for(380ms);
  REQUIRE(c.got.size() == 4);
  for (std::size_t i = 0; i < 4; ++i) {
    double got_ms = std::chrono::duration<double, std::milli>(c.got[i].time - t0).count();
    CHECK(got_ms == Approx(100.0 * static_cast<double>(i)).margin(40));
  }
}
