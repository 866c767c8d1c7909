// The alarm state machine, rule by rule: thresholds, severity, renotify and ack, flapping,
// silences, dependencies, restart, removal. Pure logic: results in, events out.
#include <catch2/catch.hpp>

#include "alarms/machine.hpp"

using namespace sonde;
using namespace sonde::engine;
using namespace sonde::engine::alarms;
using namespace std::chrono_literals;

namespace {

struct harness {
  alarm_policy p;
  alarm_track t;
  alarm_context ctx;
  task_spec spec;
  std::chrono::system_clock::time_point now =
      std::chrono::system_clock::time_point(std::chrono::seconds(1'800'000'000));
  std::vector<alarm_event> all;

  harness() { spec.name = "web"; }
  // Feed one result; return the events it made.
  std::vector<alarm_event> feed(status s, std::string msg = "") {
    result_record r;
    r.time = now;
    r.task = &spec;
    r.state = s;
    r.why = s == status::ok ? reason::none : reason::refused;
    r.latency_ms = 1.5;
    r.message = msg.empty() ? std::string(to_string(s)) : msg;
    std::vector<alarm_event> out;
    t.on_result(p, r, ctx, now, out);
    now += 10s;
    all.insert(all.end(), out.begin(), out.end());
    return out;
  }
  std::vector<alarm_event> again() {
    std::vector<alarm_event> out;
    t.reconsider(p, ctx, now, out);
    all.insert(all.end(), out.begin(), out.end());
    return out;
  }
  std::size_t notified() const {
    std::size_t n = 0;
    for (const auto& e : all) n += e.notify;
    return n;
  }
};

}  // namespace

TEST_CASE(
    "alarm: fires after exactly failure_threshold failures, resolves after "
    "success_threshold successes, one notification each",
    "[alarm]") {
  harness h;
  h.p.failure_threshold = 3;
  h.p.success_threshold = 2;
  for (int i = 0; i < 5; ++i) CHECK(h.feed(status::ok).empty());
  auto e1 = h.feed(status::critical, "connection refused");
  REQUIRE(e1.size() == 1);
  CHECK(e1[0].state == alarm_state::pending);
  CHECK(e1[0].previous == alarm_state::ok);
  CHECK_FALSE(e1[0].notify);
  const std::string id = e1[0].alarm_id;
  CHECK(id.size() == 16);
  CHECK(h.feed(status::critical).empty());  // 2 of 3
  auto e3 = h.feed(status::critical, "connection refused");
  REQUIRE(e3.size() == 1);
  CHECK(e3[0].state == alarm_state::firing);
  CHECK(e3[0].previous == alarm_state::pending);
  CHECK(e3[0].severity == alarm_severity::critical);
  CHECK(e3[0].notify);
  CHECK(e3[0].alarm_id == id);
  CHECK(e3[0].why == reason::refused);
  CHECK(e3[0].results.size() == 3);
  for (int i = 0; i < 4; ++i) CHECK(h.feed(status::critical).empty());  // no repeats
  CHECK(h.feed(status::ok).empty());                                    // 1 of 2
  auto r = h.feed(status::ok, "connected");
  REQUIRE(r.size() == 1);
  CHECK(r[0].state == alarm_state::ok);
  CHECK(r[0].previous == alarm_state::firing);
  CHECK(r[0].notify);
  CHECK(r[0].alarm_id == id);  // the same id from firing to resolved
  CHECK(r[0].message == "connected");
  CHECK(h.notified() == 2);
  CHECK(h.t.quiet());
  // The next alarm has a new id.
  h.p.failure_threshold = 1;
  auto n = h.feed(status::warning);
  REQUIRE(n.size() == 1);
  CHECK(n[0].state == alarm_state::firing);
  CHECK(n[0].severity == alarm_severity::warning);
  CHECK(n[0].alarm_id != id);
}

TEST_CASE("alarm: a failure streak below the threshold is pending and never notified", "[alarm]") {
  harness h;
  h.p.failure_threshold = 3;
  h.feed(status::critical);
  h.feed(status::critical);
  auto back = h.feed(status::ok);
  REQUIRE(back.size() == 1);
  CHECK(back[0].state == alarm_state::ok);
  CHECK(back[0].previous == alarm_state::pending);
  CHECK_FALSE(back[0].notify);
  CHECK(h.notified() == 0);
  // The streak starts again from zero.
  h.feed(status::critical);
  h.feed(status::critical);
  CHECK(h.t.state() == alarm_state::pending);
}

TEST_CASE("alarm: a severity change while firing is notified, unknown counts as critical",
          "[alarm]") {
  harness h;
  h.p.failure_threshold = 1;
  auto f = h.feed(status::warning);
  REQUIRE(f.size() == 1);
  CHECK(f[0].severity == alarm_severity::warning);
  auto c = h.feed(status::critical);
  REQUIRE(c.size() == 1);
  CHECK(c[0].state == alarm_state::firing);
  CHECK(c[0].previous == alarm_state::firing);
  CHECK(c[0].severity == alarm_severity::critical);
  CHECK(c[0].notify);
  CHECK(h.feed(status::unknown).empty());  // still critical
  CHECK(h.notified() == 2);
}

TEST_CASE("alarm: renotify repeats a firing notification, ack stops it until resolved", "[alarm]") {
  harness h;
  h.p.failure_threshold = 1;
  h.p.success_threshold = 1;
  h.p.renotify = 30s;  // results come every 10 s
  h.feed(status::critical);
  CHECK(h.feed(status::critical).empty());  // 10 s
  CHECK(h.feed(status::critical).empty());  // 20 s
  auto re = h.feed(status::critical);       // 30 s
  REQUIRE(re.size() == 1);
  CHECK(re[0].notify);
  CHECK(re[0].state == alarm_state::firing);
  CHECK(h.t.ack());
  for (int i = 0; i < 10; ++i) CHECK(h.feed(status::critical).empty());
  auto ok = h.feed(status::ok);
  REQUIRE(ok.size() == 1);
  CHECK(ok[0].notify);  // the resolution is still sent
  CHECK(ok[0].acknowledged);
  CHECK_FALSE(h.t.acked());
  CHECK_FALSE(h.t.ack());  // nothing to acknowledge
}

TEST_CASE(
    "alarm: flapping is notified once, holds firing and resolved, and ends with a "
    "resolution",
    "[alarm]") {
  harness h;
  h.p.failure_threshold = 2;
  h.p.success_threshold = 2;
  h.p.flap_window = 11;
  h.p.flap_high = 50;
  h.p.flap_low = 25;
  for (int i = 0; i < 11; ++i) h.feed(status::ok);
  // Alternate: every result differs from the one before.
  std::size_t flaps = 0;
  for (int i = 0; i < 20; ++i)
    for (auto& e : h.feed(i % 2 ? status::ok : status::critical))
      if (e.state == alarm_state::flapping) {
        ++flaps;
        CHECK(e.notify);
      }
  CHECK(flaps == 1);
  CHECK(h.t.flapping());
  CHECK(h.t.state() == alarm_state::flapping);
  CHECK(h.notified() == 1);
  CHECK(h.t.flap_percent() > 50);
  // Steady ok: the share of changes falls below flap_low, flapping ends in a resolution.
  std::vector<alarm_event> end;
  for (int i = 0; i < 11 && h.t.flapping(); ++i) end = h.feed(status::ok);
  REQUIRE_FALSE(h.t.flapping());
  REQUIRE(end.size() == 1);
  CHECK(end[0].state == alarm_state::ok);
  CHECK(end[0].previous == alarm_state::flapping);
  CHECK(end[0].notify);
  CHECK(h.notified() == 2);
}

TEST_CASE(
    "alarm: a silence holds the firing, lifted while failing, it is notified then, a "
    "notified alarm's resolution goes out even while silenced",
    "[alarm]") {
  harness h;
  h.p.failure_threshold = 1;
  h.p.success_threshold = 1;
  h.ctx.silenced_by = "silence 1 (deploy)";
  auto s = h.feed(status::critical);
  REQUIRE(s.size() == 1);
  CHECK(s[0].state == alarm_state::silenced);
  CHECK_FALSE(s[0].notify);
  CHECK(s[0].held_by == "silence 1 (deploy)");
  h.ctx = {};
  auto f = h.again();
  REQUIRE(f.size() == 1);
  CHECK(f[0].state == alarm_state::firing);
  CHECK(f[0].previous == alarm_state::silenced);
  CHECK(f[0].notify);
  // Silenced again, then it resolves: the resolution is sent (the firing was).
  h.ctx.silenced_by = "maintenance nightly";
  auto s2 = h.again();
  REQUIRE(s2.size() == 1);
  CHECK(s2[0].state == alarm_state::silenced);
  CHECK_FALSE(s2[0].notify);
  auto ok = h.feed(status::ok);
  REQUIRE(ok.size() == 1);
  CHECK(ok[0].state == alarm_state::ok);
  CHECK(ok[0].notify);
  // A silenced alarm that resolves without ever being notified sends nothing.
  h.feed(status::critical);
  auto quiet = h.feed(status::ok);
  REQUIRE(quiet.size() == 1);
  CHECK_FALSE(quiet[0].notify);
  CHECK(h.notified() == 2);
}

TEST_CASE(
    "alarm: a failing parent holds the child's firing, when the parent recovers and the "
    "child still fails, the child is notified",
    "[alarm]") {
  harness h;
  h.p.failure_threshold = 1;
  h.ctx.blocked_by = "depends_on gw (firing)";
  auto f = h.feed(status::critical);
  REQUIRE(f.size() == 1);
  CHECK(f[0].state == alarm_state::firing);  // still judged
  CHECK_FALSE(f[0].notify);
  CHECK(f[0].held_by == "depends_on gw (firing)");
  CHECK(h.feed(status::critical).empty());
  h.ctx = {};
  auto n = h.again();
  REQUIRE(n.size() == 1);
  CHECK(n[0].notify);
  CHECK(n[0].state == alarm_state::firing);
  CHECK(n[0].held_by.empty());
}

TEST_CASE(
    "alarm: state survives save and restore: a firing alarm is neither forgotten nor "
    "raised twice",
    "[alarm]") {
  harness h;
  h.p.failure_threshold = 2;
  h.p.flap_window = 5;
  h.feed(status::critical);
  h.feed(status::critical);
  REQUIRE(h.t.state() == alarm_state::firing);
  REQUIRE(h.t.notified());
  auto saved = h.t.save();
  alarm_track back;
  REQUIRE(back.restore(nlohmann::json::parse(saved.dump())));
  CHECK(back.state() == alarm_state::firing);
  CHECK(back.alarm_id() == h.t.alarm_id());
  CHECK(back.notified());
  CHECK(back.results().size() == h.t.results().size());
  h.t = back;
  CHECK(h.feed(status::critical).empty());  // not raised twice
  h.feed(status::ok);
  auto r = h.feed(status::ok);
  REQUIRE(r.size() == 1);
  CHECK(r[0].notify);  // not forgotten
  // Damaged saves are refused, not half-applied.
  alarm_track t2;
  auto bad = saved;
  bad["cond"] = "sideways";
  CHECK_FALSE(t2.restore(bad));
  bad = saved;
  bad["ring"] = "0x9";
  CHECK_FALSE(t2.restore(bad));
  CHECK_FALSE(t2.restore(nlohmann::json::array()));
  CHECK(t2.quiet());
}

TEST_CASE("alarm: a removed task's notified alarm is resolved, an unnotified one just ends",
          "[alarm]") {
  harness h;
  h.p.failure_threshold = 1;
  h.feed(status::critical);
  std::vector<alarm_event> out;
  h.t.retire(h.now, "task removed", out);
  REQUIRE(out.size() == 1);
  CHECK(out[0].state == alarm_state::ok);
  CHECK(out[0].notify);
  CHECK(out[0].message == "task removed");
  CHECK(h.t.quiet());
  h.p.failure_threshold = 3;
  h.feed(status::critical);
  out.clear();
  h.t.retire(h.now, "task removed", out);
  REQUIRE(out.size() == 1);
  CHECK_FALSE(out[0].notify);
}

TEST_CASE("alarm: the event JSON has the fields of the design", "[alarm]") {
  harness h;
  h.p.failure_threshold = 1;
  auto f = h.feed(status::critical, "connection refused");
  REQUIRE(f.size() == 1);
  auto j = event_json(f[0], "web", "tcp", "127.0.0.1:9");
  for (const char* k : {"time", "alarm_id", "task", "type", "target", "state", "severity",
                        "previous", "since", "reason", "message", "results"})
    CHECK(j.contains(k));
  CHECK(j["state"] == "firing");
  CHECK(j["previous"] == "ok");  // failure_threshold 1: straight to firing
  CHECK(j["severity"] == "critical");
  CHECK(j["reason"] == "refused");
  CHECK(j["task"] == "web");
  CHECK(j["results"].size() == 1);
  CHECK(j["results"][0]["status"] == "critical");
  CHECK(j["results"][0]["latency_ms"] == 1.5);
}
