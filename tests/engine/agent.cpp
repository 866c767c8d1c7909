// sonde agent against a small central on loopback (tests/support/fake_central.hpp): exactly
// once and in order across a central crash, the queue across agent restarts, the drop count,
// and the central's questions (info, disconnect). Real TCP, ports from bind(0).
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>

#include <sonde/system.hpp>
#include "agents/agent.hpp"
#include "core/output.hpp"

#include "support/fake_central.hpp"
#include "support/files.hpp"
#include "support/process.hpp"

using namespace sonde::engine;
using sonde::test::fake_central;
using sonde::test::temp_dir;
using sonde::test::wait_until;
using namespace std::chrono_literals;

namespace {

// An in-process agent on its own thread, fed synthetic results by a timer.
class agent_thread {
 public:
  agent_thread(const std::string& state_dir, unsigned short port, agent_queue_options qo = {},
               std::string name = "a1")
      : work_(io_.get_executor()), producer_(io_) {
    auto q = agent_queue::open(state_dir, qo, [](const std::string&) {});
    if (!q) throw std::runtime_error(q.error());
    queue_ = std::move(*q);
    agent_options o;
    o.name = std::move(name);
    o.server = {"127.0.0.1", port};
    o.retry_min = 50ms;
    o.retry_max = 200ms;
    o.reply_timeout = 3s;
    o.batch = 37;  // several reports per outage backlog
    agent_.emplace(io_, *queue_, o);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~agent_thread() { stop(); }
  void start() {
    asio::post(io_, [this] { agent_->start(); });
  }
  /// Push `n` results, one every `every`, numbered from `first` ("i" field, and a time field
  /// that encodes the number so order and original timestamps can be checked).
  void produce(int first, int n, std::chrono::milliseconds every) {
    asio::post(io_, [this, first, n, every] { tick(first, first + n, every); });
  }
  void push_now(int first, int n) {
    asio::post(io_, [this, first, n] {
      for (int i = first; i < first + n; ++i) agent_->push_json(record(i));
      ++pushed_batches_;
    });
  }
  bool produced(int batches) const { return pushed_batches_.load() >= batches; }
  /// The queue and the sender's counters (read them after stop()).
  const agent_queue& queue() const { return *queue_; }
  const agent_stats& stats() const { return agent_->stats(); }
  bool producing_done() const { return producer_done_.load(); }
  void stop() {
    if (!thread_.joinable()) return;
    asio::post(io_, [this] {
      agent_->stop();
      producer_.cancel();
      work_.reset();
      io_.stop();
    });
    thread_.join();
  }
  static std::string record(int i) {
    char t[64];
    std::snprintf(t, sizeof t, "2026-01-01T00:%02d:%02d.%06dZ", i / 3600 % 60, i / 60 % 60, i % 60);
    return std::string("{\"time\":\"") + t +
           "\",\"task\":\"t\",\"type\":\"synthetic\",\"i\":" + std::to_string(i) + "}";
  }

 private:
  void tick(int i, int end, std::chrono::milliseconds every) {
    if (i >= end) {
      producer_done_ = true;
      return;
    }
    agent_->push_json(record(i));
    producer_.expires_after(every);
    producer_.async_wait([this, i, end, every](asio::error_code ec) {
      if (!ec) tick(i + 1, end, every);
    });
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  asio::steady_timer producer_;
  std::unique_ptr<agent_queue> queue_;
  std::optional<agent> agent_;
  std::thread thread_;
  std::atomic<bool> producer_done_{false};
  std::atomic<int> pushed_batches_{0};
};

// Every stored result is number i = seq - 1 + offset, in order, exactly once.
void check_in_order(const std::vector<fake_central::stored>& got, std::uint64_t first_seq,
                    int first_i) {
  REQUIRE(!got.empty());
  CHECK(got.front().seq == first_seq);
  for (std::size_t k = 0; k < got.size(); ++k) {
    INFO("k = " << k);
    REQUIRE(got[k].seq == first_seq + k);
    REQUIRE(got[k].result["i"].get<int>() == first_i + static_cast<int>(k));
    auto expect = nlohmann::json::parse(agent_thread::record(first_i + static_cast<int>(k)));
    REQUIRE(got[k].result["time"] == expect["time"]);  // original timestamp kept
  }
}

// The real `sonde agent`, stderr to a file, with its exit status.
class agent_process {
 public:
  agent_process(std::vector<std::string> args, const std::string& log) {
    std::vector<std::string> argv{std::string(SONDE_TEST_BIN_DIR) + "/sonde", "agent"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargs;
    for (auto& a : argv) cargs.push_back(a.data());
    cargs.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawn(&pid_, cargs[0], &fa, nullptr, cargs.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw std::runtime_error("cannot start " + argv[0]);
  }
  ~agent_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  void signal(int sig) { ::kill(pid_, sig); }
  /// Wait up to `limit` for the exit; the status as waitpid reports it, or -1.
  int wait(std::chrono::milliseconds limit) {
    int status = -1;
    bool done = wait_until(
        [&] {
          if (pid_ <= 0) return true;
          return ::waitpid(pid_, &status, WNOHANG) == pid_;
        },
        limit);
    if (done) pid_ = -1;
    return done ? status : -1;
  }

 private:
  pid_t pid_ = -1;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("agent: every result arrives once and in order across a central crash",
          "[agent][integration]") {
  temp_dir d;
  auto central = std::make_unique<fake_central>(d.path() + "/store.jsonl");
  const unsigned short port = central->port();
  agent_thread a(d.path() + "/state", port);
  a.start();
  a.produce(0, 300, 4ms);
  REQUIRE(wait_until([&] { return central->count("a1") >= 60; }, 10s));
  central->kill();                     // mid-stream, like a crash
  std::this_thread::sleep_for(400ms);  // results pile up in the queue meanwhile
  // The new central stores the first report, then drops the connection unacknowledged; it
  // does not tell the agent its last seq, so the agent resends and the central must dedupe.
  central = std::make_unique<fake_central>(d.path() + "/store.jsonl", port, "", 1, false);
  REQUIRE(wait_until([&] { return a.producing_done() && central->count("a1") >= 300; }, 15s));
  std::this_thread::sleep_for(100ms);
  auto got = central->results("a1");
  CHECK(got.size() == 300);
  check_in_order(got, 1, 0);
  CHECK(central->duplicates() > 0);  // the unacknowledged report was resent and refused
  CHECK(central->dropped("a1") == 0);
}

TEST_CASE("agent: the drop count is exact when the bound is exceeded during an outage",
          "[agent][integration]") {
  temp_dir d;
  const unsigned short port = sonde::test::free_port();
  agent_queue_options qo;
  qo.max_records = 10;
  agent_thread a(d.path() + "/state", port, qo);
  a.start();
  a.push_now(0, 40);  // nobody listens: 30 are dropped
  REQUIRE(wait_until([&] { return a.produced(1); }, 5s));
  fake_central central(d.path() + "/store.jsonl", port);
  REQUIRE(wait_until([&] { return central.count("a1") >= 10; }, 10s));
  std::this_thread::sleep_for(100ms);
  auto got = central.results("a1");
  CHECK(got.size() == 10);
  check_in_order(got, 31, 30);
  CHECK(central.dropped("a1") == 30);
  CHECK(central.hello("a1").value()["dropped"] == 30);
}

TEST_CASE("agent: sonde agent keeps its queue across SIGKILL and restarts",
          "[agent][integration]") {
  temp_dir d;
  const unsigned short port = sonde::test::free_port();
  const std::string log = d.path() + "/agent.log";
  std::vector<std::string> args{"--server",    "127.0.0.1:" + std::to_string(port),
                                "--name",      "host-a",
                                "--interval",  "150ms",
                                "--state-dir", d.path() + "/state",
                                "--retry-max", "300ms"};
  auto killed_at = std::chrono::system_clock::now();
  {
    agent_process first(args, log);
    std::this_thread::sleep_for(1500ms);  // central down: everything is queued
    killed_at = std::chrono::system_clock::now();
    first.signal(SIGKILL);
    CHECK(first.wait(5s) != -1);
  }
  agent_process second(args, log);
  fake_central central(d.path() + "/store.jsonl", port);
  if (!wait_until([&] { return central.count("host-a") >= 12; }, 15s)) FAIL(slurp(log));
  second.signal(SIGTERM);
  int st = second.wait(10s);
  REQUIRE(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
  auto got = central.results("host-a");
  INFO(slurp(log));
  REQUIRE(got.size() >= 12);
  std::size_t before_kill = 0;
  std::string prev_time;
  for (std::size_t k = 0; k < got.size(); ++k) {
    REQUIRE(got[k].seq == k + 1);  // contiguous from 1: nothing lost, nothing twice
    CHECK(got[k].result["type"] == "system");
    std::string t = got[k].result["time"];
    CHECK(t > prev_time);  // original timestamps, in order
    prev_time = t;
    auto killed = sonde::engine::format_time_rfc3339(killed_at);
    if (t < killed) ++before_kill;
  }
  CHECK(before_kill >= 5);  // queued by the first process (about 1.5s / 150ms)
  CHECK(central.dropped("host-a") == 0);
  CHECK_THAT(slurp(log), Catch::Contains("unreachable") && Catch::Contains("retrying in") &&
                             Catch::Contains("results queued"));
}

TEST_CASE("agent: sonde agent answers info with real facts and obeys disconnect",
          "[agent][integration]") {
  temp_dir d;
  fake_central central(d.path() + "/store.jsonl", 0, "s3cret");
  const std::string log = d.path() + "/agent.log";
  ::setenv("SONDE_TOKEN", "s3cret", 1);
  agent_process p({"--server", "127.0.0.1:" + std::to_string(central.port()), "--name", "web-01",
                   "--interval", "1s", "--state-dir", d.path() + "/state"},
                  log);
  ::unsetenv("SONDE_TOKEN");
  REQUIRE(wait_until([&] { return central.count("web-01") >= 1; }, 10s));
  auto hello = central.hello("web-01").value();
  CHECK(hello["interval_ms"] == 1000);
  CHECK(hello["protocol"] == 1);
  central.send_event("web-01", {{"event", "info"}, {"id", 7}});
  REQUIRE(wait_until([&] { return central.info_reply(7).has_value(); }, 5s));
  auto facts = central.info_reply(7).value()["facts"];
  auto real = sonde::system::host_facts();
  CHECK(facts["name"] == "web-01");
  CHECK(facts["hostname"] == real.hostname);
  CHECK(facts["os"] == real.os);
  CHECK(facts["cpu_count"].get<unsigned>() == real.cpu_count);
  CHECK(facts["mem_total"].get<std::uint64_t>() == real.mem_total);
  CHECK(facts["ip"] == "127.0.0.1");
  central.send_event("web-01", {{"event", "disconnect"}, {"reason", "decommissioned"}});
  int st = p.wait(10s);
  INFO(slurp(log));
  REQUIRE(st != -1);
  REQUIRE(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
  CHECK_THAT(slurp(log), Catch::Contains("asked this agent to disconnect: decommissioned"));
}

TEST_CASE("agent: an acknowledgement beyond what the queue wrote is refused, not applied",
          "[agent][integration]") {
  temp_dir d;
  fake_central central(d.path() + "/store.jsonl");
  central.forge_ack(18446744073709551615ull);  // a forged report stored 2^64-1 at the central
  {
    agent_thread a(d.path() + "/state", central.port());
    a.start();
    a.push_now(0, 5);
    REQUIRE(wait_until([&] { return central.count("a1") >= 5; }, 10s));
    std::this_thread::sleep_for(200ms);
    a.stop();
    CHECK(a.stats().acks_refused >= 2);  // the hello's last_seq and the report's ack
    CHECK(a.queue().acked() == 0);
    CHECK(a.queue().next_seq() == 6);  // the counter did not wrap
    CHECK(a.queue().size() == 5);      // nothing forgotten on a forged ack
  }
  // The agent starts again (before: "inconsistent pointers") and delivers to an honest central.
  central.forge_ack(0);
  agent_thread a(d.path() + "/state", central.port());
  CHECK(a.queue().next_seq() == 6);
  a.start();
  a.push_now(5, 1);
  REQUIRE(wait_until([&] { return central.count("a1") >= 6; }, 10s));
  check_in_order(central.results("a1"), 1, 0);
}

TEST_CASE(
    "agent: results that cannot be queued are counted, leave a gap and are told to the "
    "central",
    "[agent][integration]") {
  temp_dir d;
  fake_central central(d.path() + "/store.jsonl");
  auto full = std::make_shared<std::atomic<bool>>(false);
  agent_queue_options qo;
  qo.fail_write = [full] { return full->load() ? ENOSPC : 0; };
  agent_thread a(d.path() + "/state", central.port(), qo);
  a.start();
  a.push_now(0, 3);
  REQUIRE(wait_until([&] { return central.count("a1") >= 3; }, 10s));
  full->store(true);  // the disk is full
  a.push_now(3, 4);
  // Nothing is queued, yet the central hears of the drops and why.
  REQUIRE(wait_until(
      [&] {
        auto r = central.last_report();
        return r && (*r)["dropped"] == 4 && (*r)["results"].empty();
      },
      10s));
  auto r = central.last_report().value();
  CHECK(r["problem"].get<std::string>().find("No space left on device") != std::string::npos);
  CHECK(central.dropped("a1") == 4);
  full->store(false);
  a.push_now(7, 1);
  REQUIRE(wait_until([&] { return central.count("a1") >= 4; }, 10s));
  auto got = central.results("a1");
  REQUIRE(got.size() == 4);
  CHECK(got[2].seq == 3);
  CHECK(got[3].seq == 8);  // 4..7 were never written: the gap shows the loss
  a.stop();
  CHECK(a.stats().queue_failures == 4);
  CHECK(a.queue().dropped() == 4);
}
