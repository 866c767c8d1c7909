// The agent commands of the control server in-process (engine/src/agent_commands.cpp): hello,
// reports beyond the control line limit, dedupe, acks once the history store has the results,
// info round trip, a second connection with the same name, disconnect. Real TCP on loopback;
// the tests speak the agent protocol through blocking sockets (the real `sonde agent` against
// a real central: tests/cli/agents.sh and tests/history/agents.cpp).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <ctime>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

#include <catch2/catch.hpp>

#include <asio/post.hpp>

#include "agents/agent_commands.hpp"
#include "core/config.hpp"
#include "core/task_set.hpp"
#include "history/store.hpp"

#include "support/files.hpp"
#include "support/history_db.hpp"
#include "support/line_client.hpp"
#include "support/plugins.hpp"
#include "support/process.hpp"

using namespace sonde::engine;
using sonde::test::plugins;
using sonde::test::temp_dir;
using json = nlohmann::json;
using client = sonde::test::line_client;
using namespace std::chrono_literals;

namespace {

// A central: empty task file, scheduler, control server, history store, agent registry and
// commands. With `open_store` false the store is started later (`open_store()`).
class central {
 public:
  explicit central(const temp_dir& d, bool open_now = true) {
    auto path = d.write("central.toml", "");
    auto tf = load_task_file(path, plugins());
    if (!tf) throw std::runtime_error(tf.error().front().to_string());
    file_ = std::move(*tf);
    sched_ = std::make_unique<scheduler>(io_, file_.tasks, scheduler_options{1000, false});
    tasks_ = std::make_unique<task_set>(*sched_, plugins(), path, d.path() + "/state");
    control_options co;
    co.listen = listen_address{"127.0.0.1", 0};
    server_ = std::make_unique<control_server>(io_, *sched_, *tasks_, plugins(), co);
    auto bound = server_->start();
    if (!bound) throw std::runtime_error(bound.error());
    port = bound->port;
    history::store_options so;
    so.path = d.path() + "/state/history.db";
    store_ = std::make_unique<history::store>(io_, so);
    db_path = so.path;
    agent_registry_options ro;
    ro.state_dir = d.path() + "/state";
    ro.store = store_.get();
    reg_ = std::make_unique<agent_registry>(ro);
    reg_->on_result([this](const result_record& r) {
      std::lock_guard<std::mutex> g(m_);
      delivered_.push_back(r.task->name);
    });
    svc_ = std::make_unique<agent_service>(io_, *server_, *reg_);
    sched_->start();
    thread_ = std::thread([this] { io_.run(); });
    if (open_now) open_store();
  }
  // Start the store and wait until the registry has its positions (on the loop's thread).
  void open_store() {
    store_->start([this](tl::expected<std::vector<history::agent_position>, std::string> r) {
      reg_->store_ready(std::move(r));
      ready_ = true;
    });
    if (!sonde::test::wait_until([this] { return ready_.load(); }, 10s))
      throw std::runtime_error("the history store did not open");
  }
  ~central() {
    asio::post(io_, [this] {
      svc_->stop();
      sched_->stop([this] { server_->close([this] { io_.stop(); }, 200ms); }, 500ms);
    });
    thread_.join();
    svc_.reset();
    reg_.reset();
    store_->stop();
    server_.reset();
    tasks_.reset();
    sched_.reset();
  }
  std::vector<std::string> delivered() {
    std::lock_guard<std::mutex> g(m_);
    return delivered_;
  }
  unsigned short port = 0;
  std::string db_path;

 private:
  asio::io_context io_;
  task_file file_;
  std::unique_ptr<scheduler> sched_;
  std::unique_ptr<task_set> tasks_;
  std::unique_ptr<control_server> server_;
  std::unique_ptr<history::store> store_;
  std::unique_ptr<agent_registry> reg_;
  std::unique_ptr<agent_service> svc_;
  std::thread thread_;
  std::mutex m_;
  std::vector<std::string> delivered_;
  std::atomic<bool> ready_{false};
};

// Distinct times, one second apart from an hour ago (history keeps one result per task and
// millisecond).
std::string time_of(std::uint64_t seq) {
  static const std::time_t base = std::time(nullptr) - 3600;
  std::time_t t = base + static_cast<std::time_t>(seq);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char b[48];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S.123456Z", &tm);
  return b;
}

json results(std::uint64_t from, std::uint64_t to) {
  json a = json::array();
  for (auto s = from; s <= to; ++s)
    a.push_back({{"seq", s},
                 {"time", time_of(s)},
                 {"task", "system"},
                 {"type", "system"},
                 {"target", "localhost"},
                 {"status", "ok"},
                 {"reason", nullptr},
                 {"message", std::string(300, 'm')},
                 {"metrics", {{"cpu.total", 1.0}, {"mem.used", 2.0}, {"mem.total", 4.0}}}});
  return a;
}

json hello(const std::string& name) {
  return {{"command", "agent_hello"},
          {"protocol", 1},
          {"agent", name},
          {"seq", 1},
          {"queue_id", "q1"},
          {"next_seq", 1000},
          {"interval_ms", 1000},
          {"facts", {{"os", "TestOS"}}}};
}

}  // namespace

TEST_CASE("agent central: hello, big reports, dedupe, info, replace, disconnect",
          "[agent_central]") {
  temp_dir d;
  central c(d);
  client a(c.port);
  auto r = a.call(hello("x"));
  REQUIRE(r["ok"] == true);
  CHECK(r["last_seq"] == 0);
  CHECK(r["seq"] == 1);

  // 300 results: a line of about 150 KB, beyond the control channel's 64 KiB line limit.
  json rep{{"command", "report"}, {"agent", "x"}, {"queue_id", "q1"},          {"next_seq", 1000},
           {"dropped", 0},        {"seq", 2},     {"results", results(1, 300)}};
  REQUIRE(rep.dump().size() > 65536);
  r = a.call(rep);
  REQUIRE(r["ok"] == true);
  CHECK(r["ack"] == 300);
  rep["results"] = results(299, 301);  // resent after a lost ack, plus one new
  r = a.call(rep);
  CHECK(r["ack"] == 301);
  auto got = c.delivered();
  CHECK(got.size() == 301);
  CHECK(got.front() == "x/system");
  {
    // Acknowledged means stored: every result once, in order, with its queue position.
    sonde::test::history_db db(c.db_path);
    std::vector<std::uint64_t> want;
    for (std::uint64_t s = 1; s <= 301; ++s) want.push_back(s);
    CHECK(db.seqs("x") == want);
    CHECK(db.position("x", "q1") == 301);
  }

  client ctl(c.port);
  r = ctl.call(
      {{"command", "report"}, {"queue_id", "q1"}, {"next_seq", 2}, {"results", results(1, 1)}});
  CHECK(r["ok"] == false);
  CHECK(r["error"] == "agent_hello first");
  r = ctl.call({{"command", "agents"}});
  REQUIRE(r["agents"].size() == 1);
  CHECK(r["agents"][0]["agent"] == "x");
  CHECK(r["agents"][0]["stored"] == 301);
  CHECK(r["agents"][0]["duplicates"] == 2);
  CHECK(r["agents"][0]["state"] == "ok");
  CHECK(r["agents"][0]["connected"] == true);

  // info: the event goes to the agent, its answer comes back to the asker as an event.
  r = ctl.call({{"command", "agent"}, {"agent", "x"}, {"action", "info"}});
  REQUIRE(r["pending"] == true);
  auto id = r["id"];
  auto ev = a.json_line();
  REQUIRE(ev);
  CHECK((*ev)["event"] == "info");
  CHECK((*ev)["id"] == id);
  r = a.call({{"command", "info_reply"},
              {"agent", "x"},
              {"id", id},
              {"seq", 3},
              {"facts", {{"os", "TestOS 2"}, {"name", "x"}, {"ip", "127.0.0.1"}}}});
  CHECK(r["ok"] == true);
  ev = ctl.json_line();
  REQUIRE(ev);
  CHECK((*ev)["event"] == "agent_info");
  CHECK((*ev)["id"] == id);
  CHECK((*ev)["facts"]["os"] == "TestOS 2");

  r = ctl.call({{"command", "agent"}, {"agent", "nobody"}, {"action", "info"}});
  CHECK(r["ok"] == false);
  r = ctl.call({{"command", "agent"}, {"agent", "x"}, {"action", "reboot"}});
  CHECK(r["ok"] == false);

  // A second connection with the same name replaces the first, which is closed.
  client a2(c.port);
  r = a2.call(hello("x"));
  CHECK(r["last_seq"] == 301);
  CHECK_FALSE(a.json_line());
  CHECK(a.eof());

  // disconnect: the event, then the connection closes; the agent shows as disconnected.
  r = ctl.call({{"command", "agent"}, {"agent", "x"}, {"action", "disconnect"}, {"reason", "bye"}});
  CHECK(r["ok"] == true);
  ev = a2.json_line();
  REQUIRE(ev);
  CHECK((*ev)["event"] == "disconnect");
  CHECK((*ev)["reason"] == "bye");
  CHECK_FALSE(a2.json_line());
  CHECK(a2.eof());
  r = ctl.call({{"command", "agents"}});
  CHECK(r["agents"][0]["state"] == "disconnected");
  CHECK(r["agents"][0]["connected"] == false);
  r = ctl.call({{"command", "agent"}, {"agent", "x"}, {"action", "info"}});
  CHECK(r["ok"] == false);
}

TEST_CASE("agent central: agent_hello waits for the history store", "[agent_central]") {
  temp_dir d;
  central c(d, /*open_now=*/false);
  client a(c.port);
  auto r = a.call(hello("x"));
  CHECK(r["ok"] == false);
  CHECK(r["error"] == "the central's history store is starting; try again");
  c.open_store();
  // Agents retry with backoff (a new connection): accepted once the store is open.
  client again(c.port);
  r = again.call(hello("x"));
  CHECK(r["ok"] == true);
  CHECK(r["last_seq"] == 0);
}
