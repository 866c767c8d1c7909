// The alarm sections of a task file: values, positioned errors with suggestions, references
// between tasks, and maintenance windows in their time zones.
#include <catch2/catch.hpp>

#include <date/date.h>

#include "alarms/maintenance.hpp"
#include "core/config.hpp"

#include "support/files.hpp"
#include "support/plugins.hpp"

using namespace sonde;
using namespace sonde::engine;
using namespace sonde::engine::alarms;
using namespace std::chrono_literals;
using sonde::test::plugins;

namespace {

std::string errors_text(const std::string& toml) {
  static test::temp_dir dir;
  static int n = 0;
  auto path = dir.write("a" + std::to_string(++n) + ".toml", toml);
  auto r = load_task_file(path, plugins());
  std::string out;
  if (!r)
    for (auto& e : r.error()) out += e.to_string().substr(path.size()) + "\n";
  return out;
}

const char* tasks = R"(
[[task]]
name = "gw"
type = "tcp"
target = "127.0.0.1:1"

[[task]]
name = "web"
type = "tcp"
target = "127.0.0.1:2"
)";

}  // namespace

TEST_CASE("alarm config: defaults, overrides, notifiers and windows load", "[alarm][config]") {
  test::temp_dir dir;
  auto path = dir.write("ok.toml", R"(
[alarms]
failure_threshold = 2
renotify = "1h"
notify = ["ops"]

[[notifier]]
name = "ops"
type = "exec"
command = ["/bin/true"]
group_wait = "0s"
rate_limit = "20/1h"

[[maintenance]]
name = "nightly"
tasks = ["web"]
start = "02:00"
duration = "1h"
days = ["mon", "weekends"]
timezone = "Europe/Berlin"

[[task]]
name = "gw"
type = "tcp"
target = "127.0.0.1:1"

[[task]]
name = "web"
type = "tcp"
target = "127.0.0.1:2"
alarm = { success_threshold = 5, depends_on = "gw", flap_window = 0 }
)");
  auto r = load_task_file(path, plugins());
  REQUIRE(r);
  const auto& a = r->alarms;
  CHECK(a.defaults->failure_threshold == 2);
  CHECK(a.defaults->renotify == 1h);
  CHECK(a.defaults->notify == std::vector<std::string>{"ops"});
  REQUIRE(a.notifiers.size() == 1);
  CHECK(a.notifiers[0].group_wait == 0ms);
  CHECK(a.notifiers[0].rate_count == 20);
  CHECK(a.notifiers[0].rate_period == 1h);
  CHECK(a.notifiers[0].spec.options["command"][0] == "/bin/true");
  REQUIRE(a.maintenance.size() == 1);
  CHECK(a.maintenance[0].days == (1u | 0x60u));
  CHECK(a.maintenance[0].start_seconds == 7200);
  CHECK(a.maintenance[0].zone == "Europe/Berlin");
  REQUIRE(r->tasks.size() == 2);
  CHECK_FALSE(r->tasks[0].alarm);  // the defaults apply
  REQUIRE(r->tasks[1].alarm);
  CHECK(r->tasks[1].alarm->success_threshold == 5);
  CHECK(r->tasks[1].alarm->failure_threshold == 2);  // from [alarms]
  CHECK(r->tasks[1].alarm->depends_on == "gw");
  CHECK(r->tasks[1].alarm->notify == std::vector<std::string>{"ops"});
  CHECK(r->tasks[1].alarm->flap_window == 0);
}

TEST_CASE("alarm config: every mistake is positioned, with a suggestion where one is likely",
          "[alarm][config]") {
  auto e = errors_text(std::string(R"(
[alarms]
failur_threshold = 3
flap_low = 60
)") + tasks);
  CHECK_THAT(e, Catch::Contains(":3:1: error: unknown key 'failur_threshold' in [alarms] (did "
                                "you mean 'failure_threshold'?)"));
  CHECK_THAT(e, Catch::Contains("'flap_low' (60%) must be below 'flap_high' (50%)"));

  e = errors_text(R"(
[[notifier]]
name = "ops"
type = "exec"
command = ["/bin/true"]

[[task]]
name = "web"
type = "tcp"
target = "127.0.0.1:2"
alarm = { notify = ["opps"], failure_threshold = 0 }
)");
  CHECK_THAT(e, Catch::Contains("no [[notifier]] is named 'opps' (did you mean 'ops'?)"));
  CHECK_THAT(e, Catch::Contains("'failure_threshold' must be an integer from 1 to 1000"));
  CHECK_THAT(e, Catch::Contains(":11:"));

  e = errors_text(R"(
[[notifier]]
name = "ops"
type = "webhok"

[[notifier]]
name = "ops2"
type = "exec"
comand = ["x"]
rate_limit = "lots"
)");
  CHECK_THAT(e, Catch::Contains(":4:8: error: unknown notifier type 'webhok' (did you mean "
                                "'webhook'?)"));
  CHECK_THAT(e, Catch::Contains(":9:1: error: unknown key 'comand' for notifier type 'exec' (did "
                                "you mean 'command'?)"));
  CHECK_THAT(e, Catch::Contains("'rate_limit' must be \"COUNT/PERIOD\""));
  CHECK_THAT(e, Catch::Contains("needs 'command'"));

  e = errors_text(std::string("[defaults]\nalarm = { failure_threshold = 2 }\n") + tasks);
  CHECK_THAT(e, Catch::Contains("alarm defaults go in [alarms]"));
}

TEST_CASE("alarm config: depends_on names a task, not itself, without cycles", "[alarm][config]") {
  auto e = errors_text(R"(
[[task]]
name = "gw"
type = "tcp"
target = "127.0.0.1:1"
alarm = { depends_on = "wbe" }

[[task]]
name = "web"
type = "tcp"
target = "127.0.0.1:2"
alarm = { depends_on = "web" }
)");
  CHECK_THAT(e, Catch::Contains(":6:24: error: 'depends_on': no task is named 'wbe' (did you "
                                "mean 'web'?)"));
  CHECK_THAT(e, Catch::Contains(":12:24: error: task 'web' cannot depend on itself"));
  e = errors_text(R"(
[[task]]
name = "a"
type = "tcp"
target = "127.0.0.1:1"
alarm = { depends_on = "b" }

[[task]]
name = "b"
type = "tcp"
target = "127.0.0.1:2"
alarm = { depends_on = "c" }

[[task]]
name = "c"
type = "tcp"
target = "127.0.0.1:3"
alarm = { depends_on = "a" }
)");
  CHECK_THAT(e, Catch::Contains("'depends_on' makes a cycle: a -> b -> c -> a"));
}

TEST_CASE("alarm config: maintenance windows are checked", "[alarm][config]") {
  auto e = errors_text(std::string(R"(
[[maintenance]]
tasks = ["wbe"]
start = "02:00"
duration = "1h"
days = ["mnday"]
timezone = "Mars/Olympus"

[[maintenance]]
tags = { env = "staging" }
start = "yesterday"
duration = "1h"
)") + tasks);
  CHECK_THAT(e, Catch::Contains(":3:10: error: [[maintenance]] names no task 'wbe' (did you mean "
                                "'web'?)") ||
                    Catch::Contains("unknown day 'mnday'"));
  CHECK_THAT(e, Catch::Contains("unknown day 'mnday'"));
  CHECK_THAT(e, Catch::Contains(":7:12: error: 'timezone': unknown time zone 'Mars/Olympus'"));
  CHECK_THAT(e, Catch::Contains(":11:9: error: 'start' must be a date and time"));
}

TEST_CASE("maintenance: weekly windows follow the time zone across daylight-saving changes",
          "[alarm]") {
  using namespace date;
  maintenance_window w;
  w.name = "nightly";
  w.tasks = {"web"};
  w.zone = "Europe/Berlin";
  w.days = 0x7f;               // daily
  w.start_seconds = 2 * 3600;  // 02:00 local
  w.length = std::chrono::hours(1);
  auto at = [](sys_days d, int h, int m) {
    return std::chrono::system_clock::time_point(d + std::chrono::hours(h) +
                                                 std::chrono::minutes(m));
  };
  // Winter (UTC+1): 02:00-03:00 local is 01:00-02:00 UTC.
  auto s = window_at(w, at(2026_y / December / 3, 0, 30));
  CHECK_FALSE(s.open);
  CHECK(s.next_change == at(2026_y / December / 3, 1, 0));
  s = window_at(w, at(2026_y / December / 3, 1, 30));
  CHECK(s.open);
  CHECK(s.next_change == at(2026_y / December / 3, 2, 0));
  // Summer (UTC+2): 00:00-01:00 UTC.
  CHECK(window_at(w, at(2026_y / July / 1, 0, 30)).open);
  CHECK_FALSE(window_at(w, at(2026_y / July / 1, 1, 30)).open);
  // 2026-03-29: 02:00 local does not exist (clocks jump to 03:00 at 01:00 UTC): the window
  // begins at the transition and still ends an hour later.
  s = window_at(w, at(2026_y / March / 29, 0, 59));
  CHECK_FALSE(s.open);
  CHECK(s.next_change == at(2026_y / March / 29, 1, 0));
  CHECK(window_at(w, at(2026_y / March / 29, 1, 30)).open);
  // Only on the days given.
  w.days = 1u << 3;  // Thursday; 2026-12-03 is a Thursday
  CHECK(window_at(w, at(2026_y / December / 3, 1, 30)).open);
  CHECK_FALSE(window_at(w, at(2026_y / December / 4, 1, 30)).open);
  CHECK(window_at(w, at(2026_y / December / 4, 1, 30)).next_change ==
        at(2026_y / December / 10, 1, 0));
}

TEST_CASE("maintenance: one-off windows, local to their zone or absolute", "[alarm]") {
  using namespace date;
  maintenance_window w;
  w.tasks = {"web"};
  w.zone = "America/New_York";
  w.length = std::chrono::minutes(90);
  // 2026-12-24 22:00 in New York is 2026-12-25 03:00 UTC.
  w.start_seconds =
      std::chrono::duration_cast<std::chrono::seconds>(
          (local_days(2026_y / December / 24) + std::chrono::hours(22)).time_since_epoch())
          .count();
  auto utc = [](sys_days d, int h, int m) {
    return std::chrono::system_clock::time_point(d + std::chrono::hours(h) +
                                                 std::chrono::minutes(m));
  };
  auto s = window_at(w, utc(2026_y / December / 25, 2, 0));
  CHECK_FALSE(s.open);
  CHECK(s.next_change == utc(2026_y / December / 25, 3, 0));
  CHECK(window_at(w, utc(2026_y / December / 25, 4, 29)).open);
  s = window_at(w, utc(2026_y / December / 25, 4, 30));
  CHECK_FALSE(s.open);
  CHECK(s.next_change == std::chrono::system_clock::time_point::max());
  w.absolute = true;
  w.start_seconds =
      std::chrono::duration_cast<std::chrono::seconds>(
          (sys_days(2026_y / December / 25) + std::chrono::hours(3)).time_since_epoch())
          .count();
  CHECK(window_at(w, utc(2026_y / December / 25, 3, 1)).open);
}
