// Scheduler behaviour with the controllable "sleep" test plugin: in-flight limit, no overlap,
// spread of first runs, once mode, graceful stop, evaluation of conditions.
#include <catch2/catch.hpp>

#include <asio/steady_timer.hpp>

#include <sonde/engine/config.hpp>
#include <sonde/engine/scheduler.hpp>

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

TEST_CASE("scheduler: a task never overlaps itself; missed runs are skipped", "[scheduler]") {
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
