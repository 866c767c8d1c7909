// Microbenchmarks of the engine's per-task and per-result paths: target, duration and condition
// parsing, condition evaluation, result evaluation and JSON formatting, and the scheduler
// driving instant probes (its own overhead per run, without any I/O).
#include <benchmark/benchmark.h>

#include <asio/post.hpp>

#include <sonde/condition.hpp>
#include <sonde/duration.hpp>
#include <sonde/target.hpp>
#include "alarms/alarm_manager.hpp"
#include "core/output.hpp"
#include "core/scheduler.hpp"

using namespace sonde;
using namespace sonde::engine;

static void bm_parse_target_ipv4_port(benchmark::State& st) {
  for (auto _ : st) benchmark::DoNotOptimize(parse_target("127.0.0.1:8080", port_rule::required));
}
BENCHMARK(bm_parse_target_ipv4_port);

static void bm_parse_target_ipv6_bracketed(benchmark::State& st) {
  for (auto _ : st)
    benchmark::DoNotOptimize(parse_target("[2001:db8::1]:53", port_rule::optional, 53));
}
BENCHMARK(bm_parse_target_ipv6_bracketed);

static void bm_parse_target_name(benchmark::State& st) {
  for (auto _ : st)
    benchmark::DoNotOptimize(parse_target("www.example.com:443", port_rule::required));
}
BENCHMARK(bm_parse_target_name);

static void bm_parse_duration_simple(benchmark::State& st) {
  for (auto _ : st) benchmark::DoNotOptimize(parse_duration("250ms"));
}
BENCHMARK(bm_parse_duration_simple);

static void bm_parse_duration_compound(benchmark::State& st) {
  for (auto _ : st) benchmark::DoNotOptimize(parse_duration("1h30m15.5s"));
}
BENCHMARK(bm_parse_duration_compound);

static void bm_parse_condition(benchmark::State& st) {
  for (auto _ : st) benchmark::DoNotOptimize(parse_condition("rtt_avg > 200ms"));
}
BENCHMARK(bm_parse_condition);

static void bm_condition_holds(benchmark::State& st) {
  auto c = *parse_condition("loss >= 50%");
  double v = 10;
  for (auto _ : st) {
    benchmark::DoNotOptimize(c.holds(v));
    v += 1e-9;
  }
}
BENCHMARK(bm_condition_holds);

namespace {
sonde_probe_type instant_type() {
  sonde_probe_type t{};
  t.name = "instant";
  t.destroy = [](void*) {};
  t.run = [](void*, void* io, std::int64_t, sonde_result_fn done, void* user) {
    asio::post(*static_cast<asio::io_context*>(io), [done, user] {
      static const sonde_metric m[] = {{"rtt_avg", 0.0001}, {"loss", 0}};
      sonde_result r{};
      r.has_observation = 1;
      r.latency_ns = 100000;
      r.message = "ok";
      r.metrics = m;
      r.metric_count = 2;
      done(user, &r);
    });
  };
  return t;
}
const sonde_probe_type instant = instant_type();
int dummy_handle;

std::vector<task_spec> instant_tasks(std::size_t n) {
  std::vector<task_spec> tasks(n);
  for (std::size_t i = 0; i < n; ++i) {
    tasks[i].name = "t" + std::to_string(i);
    tasks[i].type = "instant";
    tasks[i].target = "127.0.0.1";
    tasks[i].interval = std::chrono::seconds(60);
    tasks[i].timeout = std::chrono::seconds(1);
    tasks[i].probe = std::make_shared<probe_instance>(&instant, &dummy_handle);
    tasks[i].warn.push_back(*parse_condition("loss > 10%"));
    tasks[i].crit.push_back(*parse_condition("rtt_avg > 1s"));
  }
  return tasks;
}
}  // namespace

static void bm_evaluate(benchmark::State& st) {
  auto tasks = instant_tasks(1);
  static const sonde_metric m[] = {{"rtt_avg", 0.0001}, {"loss", 0}, {"sent", 1}, {"received", 1}};
  sonde_result r{};
  r.has_observation = 1;
  r.latency_ns = 100000;
  r.message = "1/1 replies";
  r.metrics = m;
  r.metric_count = 4;
  for (auto _ : st) benchmark::DoNotOptimize(evaluate(tasks[0], r));
}
BENCHMARK(bm_evaluate);

static void bm_to_json(benchmark::State& st) {
  auto tasks = instant_tasks(1);
  result_record rec;
  rec.task = &tasks[0];
  rec.time = std::chrono::system_clock::now();
  rec.state = status::ok;
  rec.latency_ms = 0.1234;
  rec.message = "1/1 replies, rtt 0.052 ms";
  rec.metrics = {{"rtt_avg", 5.2e-5}, {"loss", 0}, {"sent", 1}, {"received", 1}};
  for (auto _ : st) benchmark::DoNotOptimize(to_json(rec));
}
BENCHMARK(bm_to_json);

// Scheduler overhead per run: N tasks in once mode, 64 in flight, probes that complete at once.
static void bm_scheduler_once(benchmark::State& st) {
  const auto n = static_cast<std::size_t>(st.range(0));
  for (auto _ : st) {
    st.PauseTiming();
    auto tasks = instant_tasks(n);
    asio::io_context io(1);
    scheduler s(io, tasks, {64, true});
    s.on_idle([&] { io.stop(); });
    st.ResumeTiming();
    s.start();
    io.run();
    if (s.stats().completed != n) st.SkipWithError("not all tasks completed");
    st.PauseTiming();
    tasks.clear();
    st.ResumeTiming();
  }
  st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * n));
}
BENCHMARK(bm_scheduler_once)->Arg(1000)->Arg(10000)->Unit(benchmark::kMillisecond);

// The alarm manager's cost per result (engine/src/alarms/alarm_manager.cpp) on 10,000 tasks,
// round-robin like a scheduler at a steady rate: all ok (the common case: a lookup and the
// flap window), and all firing (the track's full update, no event after the first).
static void bm_alarm_result(benchmark::State& st, status s) {
  asio::io_context io;
  std::vector<task_spec> none;
  scheduler sched(io, none, scheduler_options{});
  alarms::alarm_settings settings;
  alarms::alarm_manager mgr(io, sched, settings, alarms::alarm_manager_options{});
  (void)mgr.start();
  std::vector<task_spec> specs(10000);
  std::vector<result_record> results(specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    specs[i].name = "task-" + std::to_string(i);
    specs[i].type = "icmp";
    specs[i].target = "127.0.0.1";
    results[i].task = &specs[i];
    results[i].state = s;
    results[i].why = s == status::ok ? reason::none : reason::timeout;
    results[i].message = s == status::ok ? "3/3 replies" : "no reply";
    results[i].latency_ms = 0.05;
  }
  for (auto& r : results) mgr.on_result(r);  // first sight of every task (and its firing)
  std::size_t i = 0;
  for (auto _ : st) {
    mgr.on_result(results[i]);
    if (++i == results.size()) i = 0;
  }
}
BENCHMARK_CAPTURE(bm_alarm_result, ok, status::ok);
BENCHMARK_CAPTURE(bm_alarm_result, firing, status::critical);
