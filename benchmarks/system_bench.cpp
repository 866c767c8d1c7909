// system checker microbenchmarks: the cost of one run's work on this machine (reading and
// parsing /proc and /sys, statvfs, computing rates), and the parsers alone on recorded text.
// Goal: an agent at a 5 s interval costs under 0.5% of one core, i.e. under 25 ms per run.
#include <sonde/system.hpp>

#include <benchmark/benchmark.h>

#include <string>
#include <vector>

namespace sys = sonde::detail::sys;

namespace {

/// Everything one run does after its wait: both readings' file work plus the instant values.
void BM_system_run_work_live(benchmark::State& state) {
  sonde::system::name_filter none;
  auto prev = sonde::system::read_counters("/", none, none);
  for (auto _ : state) {
    auto cur = sonde::system::read_counters("/", none, none);
    sonde::observation obs;
    std::vector<std::string> errors, missing;
    sonde::system::add_instant("/", none, true, {}, obs, errors, missing);
    sonde::system::add_rates(prev, cur, obs, true);
    benchmark::DoNotOptimize(obs.metrics.data());
    prev = std::move(cur);
  }
}
BENCHMARK(BM_system_run_work_live)->Unit(benchmark::kMicrosecond);

void BM_system_read_counters_live(benchmark::State& state) {
  sonde::system::name_filter none;
  for (auto _ : state) {
    auto c = sonde::system::read_counters("/", none, none);
    benchmark::DoNotOptimize(c.cpus.data());
  }
}
BENCHMARK(BM_system_read_counters_live)->Unit(benchmark::kMicrosecond);

void BM_system_host_facts_live(benchmark::State& state) {
  for (auto _ : state) {
    auto f = sonde::system::host_facts();
    benchmark::DoNotOptimize(f.hostname.data());
  }
}
BENCHMARK(BM_system_host_facts_live)->Unit(benchmark::kMicrosecond);

/// A 64-CPU /proc/stat, as on a large server.
std::string big_stat() {
  std::string s = "cpu  123456789 1234 2345678 987654321 12345 0 2345 678 0 0\n";
  for (int i = 0; i < 64; ++i)
    s += "cpu" + std::to_string(i) + " 1928374 19 36651 15432098 192 0 36 10 0 0\n";
  s += "intr 1234567890 0 0 0\nctxt 987654321\nbtime 1700000000\nprocesses 12345\n";
  return s;
}

void BM_system_parse_stat_64cpu(benchmark::State& state) {
  const auto text = big_stat();
  for (auto _ : state) {
    auto r = sys::parse_stat(text);
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_system_parse_stat_64cpu);

void BM_system_parse_meminfo(benchmark::State& state) {
  std::string text;
  for (const char* k :
       {"MemTotal",     "MemFree",        "MemAvailable", "Buffers",      "Cached",
        "SwapCached",   "Active",         "Inactive",     "Active(anon)", "Inactive(anon)",
        "Active(file)", "Inactive(file)", "Unevictable",  "Mlocked",      "SwapTotal",
        "SwapFree",     "Dirty",          "Writeback",    "AnonPages",    "Mapped",
        "Shmem",        "KReclaimable",   "Slab",         "SReclaimable", "SUnreclaim",
        "KernelStack",  "PageTables",     "NFS_Unstable", "Bounce",       "WritebackTmp",
        "CommitLimit",  "Committed_AS",   "VmallocTotal", "VmallocUsed",  "VmallocChunk",
        "Percpu"})
    text += std::string(k) + ":        16384000 kB\n";
  for (auto _ : state) {
    auto r = sys::parse_meminfo(text);
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_system_parse_meminfo);

}  // namespace
