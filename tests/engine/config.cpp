// Task-file validation: every error positioned as FILE:LINE:COL, suggestions, nothing runs.
#include <catch2/catch.hpp>

#include "core/config.hpp"

#include "support/files.hpp"
#include "support/plugins.hpp"

using namespace sonde;
using namespace sonde::engine;
using sonde::test::plugins;

namespace {

std::vector<std::string> errors_of(const std::string& toml, std::string* path_out = nullptr) {
  static test::temp_dir dir;
  static int n = 0;
  auto path = dir.write("t" + std::to_string(++n) + ".toml", toml);
  if (path_out) *path_out = path;
  auto r = load_task_file(path, plugins());
  std::vector<std::string> out;
  if (!r)
    for (auto& e : r.error()) out.push_back(e.to_string().substr(path.size()));
  return out;
}
}  // namespace

TEST_CASE("config: a valid file loads with defaults applied", "[config]") {
  test::temp_dir dir;
  auto path = dir.write("ok.toml", R"(
[engine]
max_in_flight = 7

[defaults]
interval = "30s"
timeout = "2s"
close = "graceful"

[[task]]
name = "web"
type = "tcp"
target = "127.0.0.1:80"
warn = ["latency > 200ms"]
crit = "connect_time >= 1s"
tags = { team = "web" }

[[task]]
name = "slow"
type = "sleep"
target = "x"
interval = 10
delay = "5ms"
enabled = false
)");
  auto r = load_task_file(path, plugins());
  REQUIRE(r);
  CHECK(r->engine.max_in_flight == 7);
  REQUIRE(r->tasks.size() == 2);
  auto& web = r->tasks[0];
  CHECK(web.name == "web");
  CHECK(web.type == "tcp");
  CHECK(web.interval == std::chrono::seconds(30));
  CHECK(web.timeout == std::chrono::seconds(2));
  REQUIRE(web.warn.size() == 1);
  CHECK(web.warn[0].value == Approx(0.2));
  REQUIRE(web.crit.size() == 1);
  CHECK(web.tags.at("team") == "web");
  REQUIRE(web.options.size() == 1);  // 'close' from [defaults]
  CHECK(web.options[0].first == "close");
  CHECK(web.probe);
  CHECK(web.where.line == 10);
  auto& slow = r->tasks[1];
  CHECK(slow.interval == std::chrono::seconds(10));
  CHECK(slow.timeout == std::chrono::seconds(2));
  CHECK_FALSE(slow.enabled);
}

TEST_CASE("config: unknown keys are positioned and get a suggestion", "[config]") {
  auto e = errors_of(R"([[task]]
name = "a"
type = "tcp"
target = "127.0.0.1:80"
expct = "x"
)");
  REQUIRE(e.size() == 1);
  CHECK(e[0] == ":5:1: error: unknown key 'expct' for type 'tcp' (did you mean 'expect'?)");

  e = errors_of(R"([[tasks]]
name = "a"
)");
  REQUIRE(e.size() >= 1);
  CHECK_THAT(
      e[0], Catch::StartsWith(":1:3: error: unknown top-level key 'tasks' (did you mean 'task'?)"));
}

TEST_CASE("config: wrong types, bad durations and unknown probe types", "[config]") {
  auto e = errors_of(R"([[task]]
name = "a"
type = "tcpp"
target = "127.0.0.1:80"

[[task]]
name = "b"
type = "tcp"
target = "127.0.0.1:80"
interval = "10 sec"
tls = "yes"

[[task]]
name = "c"
type = "tcp"
target = "127.0.0.1:80"
interval = "1s"
timeout = "2s"
)");
  REQUIRE(e.size() == 4);
  CHECK_THAT(e[0],
             Catch::StartsWith(
                 ":3:8: error: unknown probe type 'tcpp' (did you mean 'tcp'?); available: "));
  CHECK(e[1] ==
        ":10:12: error: 'interval': invalid duration \"10 sec\": unknown unit \" sec\" (use us, "
        "ms, s, m, h or d)");
  CHECK(e[2] == ":11:7: error: option 'tls' must be a boolean (true or false), not a string");
  CHECK(e[3] == ":18:11: error: 'timeout' (2s) must not exceed 'interval' (1s)");
}

TEST_CASE("config: duplicate names, missing keys, bad targets and bad conditions", "[config]") {
  auto e = errors_of(R"([[task]]
name = "a"
type = "tcp"
target = "127.0.0.1:80"

[[task]]
name = "a"
type = "tcp"
target = "127.0.0.1"

[[task]]
type = "tcp"

[[task]]
name = "d"
type = "tcp"
target = "127.0.0.1:80"
warn = ["latncy > 1s", "latency >> 1"]
)");
  REQUIRE(e.size() == 5);
  CHECK(e[0].find(":7:8: error: duplicate task name 'a' (first defined at ") == 0);
  CHECK(e[1] == ":11:1: error: task has no 'name'");
  CHECK(e[2] == ":11:1: error: task '' has no 'target'");
  CHECK_THAT(e[3], Catch::StartsWith(":18:9: error: invalid condition \"latncy > 1s\": type 'tcp' "
                                     "has no metric 'latncy' (did you mean 'latency'?)"));
  CHECK_THAT(e[4], Catch::StartsWith(":18:24: error: invalid condition \"latency >> 1\""));
  // The bad target is reported by the plugin, at the target's position.
  auto e2 = errors_of(R"([[task]]
name = "x"
type = "tcp"
target = "127.0.0.1"
)");
  REQUIRE(e2.size() == 1);
  CHECK(
      e2[0] ==
      ":4:10: error: invalid target \"127.0.0.1\": a port is required (host:port, or [IPv6]:port)");
}

TEST_CASE("config: TOML syntax errors and unreadable files are positioned", "[config]") {
  auto e = errors_of("[[task]]\nname = \"a\ntype = 1\n");
  REQUIRE(e.size() == 1);
  CHECK_THAT(e[0], Catch::StartsWith(":2:"));
  auto missing = load_task_file("/nonexistent/tasks.toml", plugins());
  REQUIRE_FALSE(missing);
  CHECK_THAT(missing.error()[0].to_string(),
             Catch::StartsWith("/nonexistent/tasks.toml: error: cannot open task file"));
}

TEST_CASE("config: an option error from the plugin points at the option", "[config]") {
  auto e = errors_of(R"([[task]]
name = "a"
type = "tcp"
target = "127.0.0.1:80"
close = "slam"
)");
  REQUIRE(e.size() == 1);
  CHECK(e[0] == ":5:9: error: close must be \"reset\" or \"graceful\"");
}

TEST_CASE("config: [defaults] keys must exist in some probe type", "[config]") {
  auto e = errors_of(R"([defaults]
intervall = "5s"
name = "x"
)");
  REQUIRE(e.size() == 2);
  CHECK(e[0] == ":2:1: error: unknown key 'intervall' in [defaults] (did you mean 'interval'?)");
  CHECK(e[1] == ":3:1: error: 'name' cannot have a default (it is specific to each task)");
}

TEST_CASE("config: closest() suggests within a small edit distance only", "[config]") {
  CHECK(closest("expct_status", {"expect_status", "timeout"}) == "expect_status");
  CHECK(closest("zzzzzz", {"expect_status", "timeout"}).empty());
  CHECK(closest("tpc", {"http", "icmp", "ntp", "tcp", "udp"}) == "tcp");  // a swap is one edit
}

TEST_CASE("config: a checker refuses a schedule that cannot finish within the timeout",
          "[config][icmp]") {
  auto e = errors_of(R"([[task]]
name = "p"
type = "ping"
target = "127.0.0.1"
timeout = "1s"
count = 5
packet_interval = "300ms"
)");
  REQUIRE(e.size() == 1);
  CHECK(e[0] ==
        ":7:19: error: option 'packet_interval': 5 requests every 300ms take 1.2s to send, "
        "not less than the timeout (1s); lower count or packet_interval, or raise the timeout");
}

TEST_CASE("config: metric patterns: <n> is a number, other placeholders one segment", "[config]") {
  CHECK(metric_matches("latency", "latency"));
  CHECK_FALSE(metric_matches("latency", "latency.x"));
  CHECK(metric_matches("cpu.<n>", "cpu.0"));
  CHECK(metric_matches("cpu.<n>", "cpu.17"));
  CHECK_FALSE(metric_matches("cpu.<n>", "cpu.totl"));  // a typo must not validate
  CHECK_FALSE(metric_matches("cpu.<n>", "cpu."));
  CHECK_FALSE(metric_matches("cpu.<n>", "cpu.1.user"));
  CHECK(metric_matches("hop.<n>.loss", "hop.3.loss"));
  CHECK_FALSE(metric_matches("hop.<n>.loss", "hop.x.loss"));
  CHECK(metric_matches("net.<iface>.rx_bytes", "net.eth0.rx_bytes"));
  CHECK(metric_matches("net.<iface>.rx_bytes", "net.br-lan.rx_bytes"));
  CHECK_FALSE(metric_matches("net.<iface>.rx_bytes", "net.eth0.tx_bytes"));
}
