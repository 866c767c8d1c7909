// The dispatcher with a scripted notifier: grouping, order, retries that carry later events,
// rejection, rate limit, age limit, and nothing sent before its outbox line is on disk.
#include <catch2/catch.hpp>

#include <deque>

#include <asio/post.hpp>

#include "alarms/dispatcher.hpp"

using namespace sonde::engine::alarms;
using namespace std::chrono_literals;
using json = nlohmann::json;
using steady = std::chrono::steady_clock;

namespace {

struct scripted final : notifier {
  struct call {
    steady::time_point at;
    std::vector<std::string> tasks;
  };
  scripted(asio::io_context& io, std::vector<call>& calls, std::deque<delivery_result>& script)
      : notifier(notifier_spec{"n", "webhook", json::object(), 1000ms}),
        io_(io),
        calls_(calls),
        script_(script) {}
  void send(const notification& n, std::function<void(delivery_result)> done) override {
    call c{steady::now(), {}};
    for (const auto& e : n.events) c.tasks.push_back(e["task"]);
    calls_.push_back(c);
    delivery_result r;
    r.what = delivery_result::outcome::delivered;
    if (!script_.empty()) {
      r = script_.front();
      script_.pop_front();
    }
    asio::post(io_, [done, r] { done(r); });
  }
  asio::io_context& io_;
  std::vector<call>& calls_;
  std::deque<delivery_result>& script_;
};

struct rig {
  asio::io_context io;
  std::vector<scripted::call> calls;
  std::deque<delivery_result> script;
  std::vector<std::uint64_t> done;
  std::vector<std::string> logs;
  dispatcher d{io,
               [this](const std::vector<std::uint64_t>& ids) {
                 done.insert(done.end(), ids.begin(), ids.end());
               },
               [this](const std::string& l) { logs.push_back(l); }};
  std::uint64_t next = 0;
  explicit rig(notifier_config c) {
    c.spec.name = "n";
    d.add(c, std::make_unique<scripted>(io, calls, script));
  }
  void add(const std::string& task, bool durable = true,
           std::chrono::system_clock::time_point created = std::chrono::system_clock::now()) {
    outbox_entry e;
    e.id = ++next;
    e.notifier = "n";
    e.created = created;
    e.event = json{{"task", task}};
    e.durable = durable;
    d.enqueue(std::move(e));
  }
  void run_for(std::chrono::milliseconds t) {
    io.restart();
    io.run_for(t);
  }
  json counters() { return d.describe()["notifiers"][0]; }
};

notifier_config config(std::chrono::milliseconds group_wait) {
  notifier_config c;
  c.group_wait = group_wait;
  c.retry_initial = 100ms;
  c.retry_max = 400ms;
  return c;
}

delivery_result outcome(delivery_result::outcome o) {
  delivery_result r;
  r.what = o;
  r.detail = "scripted";
  return r;
}

}  // namespace

TEST_CASE("dispatcher: events within group_wait go out as one message, in order",
          "[alarm][dispatcher]") {
  rig r(config(200ms));
  const auto t0 = steady::now();
  for (int i = 0; i < 5; ++i) r.add("t" + std::to_string(i));
  r.run_for(100ms);
  CHECK(r.calls.empty());  // the window is still open
  r.add("t5");
  r.run_for(300ms);
  REQUIRE(r.calls.size() == 1);
  CHECK(r.calls[0].tasks == std::vector<std::string>{"t0", "t1", "t2", "t3", "t4", "t5"});
  CHECK(r.calls[0].at - t0 >= 200ms);
  CHECK(r.done.size() == 6);
  CHECK(r.counters()["sent"] == 1);
  CHECK(r.counters()["events_sent"] == 6);
  CHECK(r.counters()["pending"] == 0);
}

TEST_CASE("dispatcher: a retry carries the failed events first and later ones after",
          "[alarm][dispatcher]") {
  rig r(config(0ms));
  r.script = {outcome(delivery_result::outcome::retry), outcome(delivery_result::outcome::retry)};
  r.add("a");
  r.run_for(20ms);
  r.add("b");
  r.run_for(1000ms);
  REQUIRE(r.calls.size() == 3);
  CHECK(r.calls[0].tasks == std::vector<std::string>{"a"});
  CHECK(r.calls[1].tasks == std::vector<std::string>{"a", "b"});
  CHECK(r.calls[2].tasks == std::vector<std::string>{"a", "b"});
  // Backoff: about 100 ms, then about 200 ms (half fixed, half random).
  CHECK(r.calls[1].at - r.calls[0].at >= 50ms);
  CHECK(r.calls[2].at - r.calls[1].at >= 100ms);
  auto c = r.counters();
  CHECK(c["failed"] == 2);
  CHECK(c["retried"] == 2);
  CHECK(c["sent"] == 1);
  CHECK(c["pending"] == 0);
  CHECK(r.done == std::vector<std::uint64_t>{1, 2});
}

TEST_CASE("dispatcher: Retry-After from the receiver sets the next attempt",
          "[alarm][dispatcher]") {
  rig r(config(0ms));
  auto ra = outcome(delivery_result::outcome::retry);
  ra.retry_after = 300ms;
  r.script = {ra};
  r.add("a");
  r.run_for(800ms);
  REQUIRE(r.calls.size() == 2);
  CHECK(r.calls[1].at - r.calls[0].at >= 300ms);
}

TEST_CASE("dispatcher: a rejected message is dropped and counted, the next goes on",
          "[alarm][dispatcher]") {
  rig r(config(0ms));
  r.script = {outcome(delivery_result::outcome::rejected)};
  r.add("a");
  r.run_for(50ms);
  r.add("b");
  r.run_for(50ms);
  REQUIRE(r.calls.size() == 2);
  auto c = r.counters();
  CHECK(c["rejected"] == 1);
  CHECK(c["dropped"] == 1);
  CHECK(c["sent"] == 1);
  CHECK(r.done == std::vector<std::uint64_t>{1, 2});
  REQUIRE_FALSE(r.logs.empty());
  CHECK_THAT(r.logs[0], Catch::Contains("rejected"));
}

TEST_CASE("dispatcher: rate_limit holds messages and sends what waited together",
          "[alarm][dispatcher]") {
  auto c = config(0ms);
  c.rate_count = 2;
  c.rate_period = 600ms;
  rig r(c);
  r.add("a");
  r.run_for(30ms);
  r.add("b");
  r.run_for(30ms);
  r.add("c");
  r.run_for(30ms);
  r.add("d");
  r.run_for(100ms);
  REQUIRE(r.calls.size() == 2);  // the third waits for the window
  r.run_for(700ms);
  REQUIRE(r.calls.size() == 3);
  CHECK(r.calls[2].tasks == std::vector<std::string>{"c", "d"});
  CHECK(r.calls[2].at - r.calls[0].at >= 600ms);
}

TEST_CASE("dispatcher: events older than max_age are dropped as expired, not sent",
          "[alarm][dispatcher]") {
  auto c = config(0ms);
  c.max_age = 1h;
  rig r(c);
  r.add("old", true, std::chrono::system_clock::now() - 2h);
  r.add("new");
  r.run_for(50ms);
  REQUIRE(r.calls.size() == 1);
  CHECK(r.calls[0].tasks == std::vector<std::string>{"new"});
  CHECK(r.counters()["expired"] == 1);
  CHECK(r.counters()["dropped"] == 1);
  CHECK(r.done.size() == 2);
}

TEST_CASE("dispatcher: nothing is sent before its outbox line is on disk", "[alarm][dispatcher]") {
  rig r(config(0ms));
  r.add("a", false);
  r.add("b", true);
  r.run_for(50ms);
  CHECK(r.calls.empty());  // b waits behind a: order first
  r.d.durable("n", 1);
  r.run_for(50ms);
  REQUIRE(r.calls.size() == 1);
  CHECK(r.calls[0].tasks == std::vector<std::string>{"a", "b"});
}
