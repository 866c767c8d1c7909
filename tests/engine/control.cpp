// The control server over real TCP on loopback: the seed message byte for byte, every command,
// 100 concurrent clients, a slow watcher, garbage input, reload with a good and a bad file,
// persistence across a restart, token rules. The engine runs in-process on its own io_context
// thread; the test talks to it through plain blocking sockets, as any client would.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <thread>

#include <asio/post.hpp>

#include "control/control.hpp"
#include "core/config.hpp"
#include "core/state.hpp"
#include "core/task_set.hpp"

#include "support/files.hpp"
#include "support/line_client.hpp"
#include "support/plugins.hpp"
#include "support/process.hpp"

using namespace sonde;
using namespace sonde::engine;
using sonde::test::plugins;
using json = nlohmann::json;
using sonde::test::line_client;
using namespace std::chrono_literals;

namespace {

std::string sleep_task(const std::string& name, const char* interval = "100ms",
                       const char* delay = "1ms", int value = 0) {
  return "[[task]]\nname = \"" + name + "\"\ntype = \"sleep\"\ntarget = \"x\"\ninterval = \"" +
         interval + "\"\ntimeout = \"" + interval + "\"\ndelay = \"" + delay +
         "\"\nvalue = " + std::to_string(value) + "\n";
}

// A whole engine: task file, scheduler, task set, control server on an io_context thread.
class test_engine {
 public:
  test_engine(const std::string& task_path, const std::string& state_dir, control_options co = {},
              state_writer::options wo = {}) {
    auto tf = load_task_file(task_path, plugins());
    if (!tf) throw std::runtime_error(tf.error().front().to_string());
    file_ = std::move(*tf);
    sched_ = std::make_unique<scheduler>(io_, file_.tasks, scheduler_options{1000, false});
    tasks_ = std::make_unique<task_set>(*sched_, plugins(), task_path, state_dir);
    tasks_->set_writer_options(std::move(wo));
    if (auto st = tasks_->load_state(); !st)
      throw std::runtime_error(st.error().front().to_string());
    co.listen = listen_address{"127.0.0.1", 0};
    server_ = std::make_unique<control_server>(io_, *sched_, *tasks_, plugins(), co);
    auto bound = server_->start();
    if (!bound) throw std::runtime_error(bound.error());
    port = bound->port;
    server_->on_shutdown([this] {
      shutdown_requested = true;
      sched_->stop([this] { server_->close([this] { io_.stop(); }); }, 2000ms);
    });
    sched_->start();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~test_engine() { stop(); }
  void stop() {
    if (!thread_.joinable()) return;
    // Let in-flight probes finish, as the engine does on SIGTERM (the test plugin counts them).
    asio::post(io_, [this] {
      if (sched_->stopping()) return;
      sched_->stop([this] { server_->close([this] { io_.stop(); }, 200ms); }, 2000ms);
    });
    thread_.join();
    server_.reset();
    tasks_.reset();
    sched_.reset();
  }
  // True once the io_context has stopped by itself (after `shutdown`).
  bool stopped() { return io_.stopped(); }

  unsigned short port = 0;
  std::atomic<bool> shutdown_requested{false};

 private:
  asio::io_context io_;
  task_file file_;
  std::unique_ptr<scheduler> sched_;
  std::unique_ptr<task_set> tasks_;
  std::unique_ptr<control_server> server_;
  std::thread thread_;
};

// Start a control server for the task file on `listen` with `token`: "" if it listened, else
// why not.
std::string start_error(const std::string& path, listen_address listen, std::string token) {
  auto tf = load_task_file(path, plugins());
  if (!tf) return tf.error().front().to_string();
  asio::io_context io;
  scheduler s(io, tf->tasks, {});
  task_set ts(s, plugins(), path, "");
  control_options co;
  co.listen = std::move(listen);
  co.token = std::move(token);
  control_server srv(io, s, ts, plugins(), co);
  auto r = srv.start();
  return r ? std::string() : r.error();
}

std::optional<json> find_task(const json& list, const std::string& name) {
  for (const auto& t : list["tasks"])
    if (t["name"] == name) return t;
  return std::nullopt;
}

// {"command": NAME}: a one-member initializer list would be a JSON array.
json req(const char* name) {
  json j = json::object();
  j["command"] = name;
  return j;
}

// Poll `f` until it returns true (bounded).
template <class F>
bool eventually(F f, std::chrono::milliseconds limit = 5000ms) {
  return test::wait_until(f, limit);
}

}  // namespace

TEST_CASE("control: request parsing, selectors, filters and the seed aliases", "[control]") {
  auto r = parse_request(R"({"command": "list", "seq": 7, "token": "t"})");
  REQUIRE(r);
  CHECK(r->command == "list");
  CHECK(r->seq == 7);
  CHECK(*r->token == "t");
  CHECK(parse_request("not json").error().message.find("malformed JSON") == 0);
  CHECK(parse_request("[1,2]").error().message.find("must be a JSON object") != std::string::npos);
  CHECK(parse_request("{}").error().message == "the request has no \"command\"");
  CHECK(parse_request(R"({"command": 3, "seq": "a"})").error().seq == "a");
  CHECK(!parse_request(R"({"command": "list", "protocol": 2})"));
  CHECK(parse_request(R"({"command": "list", "protocol": 1})"));
  // Hostile JSON: a key twice (the last would win), a NUL (would end the text early), nesting
  // deep enough to exhaust the stack in any recursive walk.
  CHECK_THAT(parse_request(R"({"command":"hello","command":"shutdown"})").error().message,
             Catch::Contains("the key \"command\" appears twice"));
  CHECK_THAT(parse_request(R"({"command":"list","x":{"a":1,"a":2}})").error().message,
             Catch::Contains("\"a\" appears twice"));
  CHECK(parse_request(R"({"command":"list","x":{"a":1},"y":{"a":2}})"));  // other objects
  std::string nul = std::string(R"({"command":"list"})") + '\0' + R"({"command":"shutdown"})";
  CHECK_THAT(parse_request(nul).error().message, Catch::Contains("NUL byte at offset 18"));
  std::string deep =
      R"({"command":"list","seq":)" + std::string(100000, '[') + std::string(100000, ']') + "}";
  CHECK_THAT(parse_request(deep).error().message, Catch::Contains("nested deeper than 64"));
  std::string ok_depth =
      R"({"command":"list","seq":)" + std::string(60, '[') + std::string(60, ']') + "}";
  CHECK(parse_request(ok_depth));
  // Brackets inside strings are not nesting.
  CHECK(parse_request(R"({"command":"list","seq":")" + std::string(1000, '[') + R"("})"));
  CHECK(!parse_request(R"({"command":"list"} {"command":"list"})"));  // exactly one value

  auto def = parse_task_definition(json::parse(
      R"({"command": "start", "service": "PING", "host": "example.com", "interval": 60, "service_id": 1})"));
  REQUIRE(def);
  CHECK(def->name == "ping-1");
  CHECK(def->id == 1);
  CHECK(def->fields ==
        json::parse(
            R"({"name": "ping-1", "type": "PING", "target": "example.com", "interval": 60})"));
  CHECK(!parse_task_definition(json::parse(R"({"type": "tcp", "service": "tcp"})")));
  CHECK(!parse_task_definition(json::parse(R"({"type": "tcp", "id": -1})")));
  CHECK(!parse_task_definition(json::parse(R"({"type": "tcp", "send": {"a": 1}})")));

  CHECK(parse_selector(json::parse(R"({"all": true})"))->all);
  CHECK(parse_selector(json::parse(R"({"name": ["a", "b"]})"))->names.size() == 2);
  CHECK(parse_selector(json::parse(R"({"service_id": 4})"))->ids == std::vector<std::int64_t>{4});
  CHECK(!parse_selector(json::parse(R"({})")));
  CHECK(!parse_selector(json::parse(R"({"all": true, "name": "a"})")));
  // Names and ids together would act on both: refused.
  CHECK_THAT(parse_selector(json::parse(R"({"name": "a", "id": 3})")).error(),
             Catch::Contains("not both"));
  CHECK_THAT(parse_selector(json::parse(R"({"task": "a", "service_id": [3]})")).error(),
             Catch::Contains("not both"));
  // Ids stay within what every JSON client reads exactly (2^53-1).
  CHECK(parse_selector(json::parse(R"({"id": 9007199254740991})"))->ids.front() ==
        9007199254740991);
  CHECK(!parse_selector(json::parse(R"({"id": 9007199254740992})")));
  CHECK(!parse_selector(json::parse(R"({"id": 18446744073709551615})")));
  CHECK(!parse_task_definition(json::parse(R"({"type": "tcp", "id": 9007199254740992})")));

  auto f =
      parse_watch_filter(json::parse(R"({"task": "a", "type": "TCP", "status": ["critical"]})"));
  REQUIRE(f);
  CHECK(f->matches("a", "tcp", "critical"));
  CHECK(!f->matches("a", "tcp", "ok"));
  CHECK(!f->matches("b", "tcp", "critical"));
  CHECK(!parse_watch_filter(json::parse(R"({"status": "bad"})")));

  CHECK(parse_listen_address("127.0.0.1:0")->port == 0);
  CHECK(parse_listen_address("[::1]:6543")->host == "::1");
  CHECK(!parse_listen_address("127.0.0.1"));
  CHECK(!parse_listen_address("127.0.0.1:70000"));
  CHECK(is_loopback_host("127.0.0.2"));
  CHECK(is_loopback_host("::1"));
  CHECK(!is_loopback_host("0.0.0.0"));
  CHECK(!is_loopback_host("127.0.0.1.example.com"));
  CHECK(token_equal("secret", "secret"));
  CHECK(!token_equal("secret", "secreT"));
  CHECK(!token_equal("secret", "secret2"));
}

TEST_CASE("control: the line splitter bounds lines and resynchronises", "[control]") {
  line_splitter s(8);
  s.feed("abc\r\nlonger-than-eight\nok\n");
  CHECK(s.next()->text == "abc");
  CHECK(s.next()->too_long);
  CHECK(s.next()->text == "ok");
  CHECK(!s.next());
  s.feed("0123456789");  // no newline yet, already too long: reported once, then skipped
  CHECK(s.next()->too_long);
  CHECK(!s.next());
  s.feed("more garbage\nx\n");
  CHECK(s.next()->text == "x");
  CHECK(s.buffered() == 0);
}

TEST_CASE("control: the seed message works byte for byte", "[control]") {
  test::temp_dir dir;
  test_engine e(dir.write("t.toml", sleep_task("file-task")), dir.path() + "/state");
  line_client c(e.port);
  c.send_raw(
      "{\"command\": \"start\", \"service\": \"PING\", \"host\": \"127.0.0.1\", \"interval\": 60, "
      "\"service_id\": 1}\n");
  auto r = c.reply();
  INFO(r.dump());
  CHECK(r["ok"] == true);
  CHECK(r["started"] == "ping-1");
  CHECK(r["id"] == 1);
  auto list = c.call(req("list"));
  auto t = find_task(list, "ping-1");
  REQUIRE(t);
  CHECK((*t)["type"] == "icmp");
  CHECK((*t)["target"] == "127.0.0.1");
  CHECK((*t)["interval"] == "1m");
  CHECK((*t)["id"] == 1);
  CHECK((*t)["origin"] == "control");
  // The same message again (a controller resending after a reconnect) changes nothing.
  c.send_raw(
      "{\"command\": \"start\", \"service\": \"PING\", \"host\": \"127.0.0.1\", \"interval\": 60, "
      "\"service_id\": 1}\n");
  r = c.reply();
  CHECK(r["ok"] == true);
  CHECK(r["unchanged"] == true);
  // Stopped by its id, as the seed's controller would.
  r = c.call({{"command", "stop"}, {"service_id", 1}});
  CHECK(r["ok"] == true);
  CHECK(r["stopped"] == json::array({"ping-1"}));
  CHECK(!find_task(c.call(req("list")), "ping-1"));
}

TEST_CASE("control: start validation errors read like the task file's", "[control]") {
  test::temp_dir dir;
  test_engine e(dir.write("t.toml", sleep_task("a")), "");
  line_client c(e.port);
  auto r = c.call({{"command", "start"}, {"type", "sleep"}, {"target", "x"}, {"delai", "1ms"}});
  CHECK(r["ok"] == false);
  CHECK(r["error"] == "unknown key 'delai' for type 'sleep' (did you mean 'delay'?)");
  r = c.call({{"command", "start"}, {"type", "slep"}, {"target", "x"}});
  CHECK_THAT(r["error"].get<std::string>(),
             Catch::Contains("unknown probe type 'slep' (did you mean 'sleep'?)"));
  r = c.call({{"command", "start"},
              {"type", "sleep"},
              {"target", "x"},
              {"interval", "1s"},
              {"timeout", "2s"}});
  CHECK(r["error"] == "'timeout' (2s) must not exceed 'interval' (1s)");
  r = c.call({{"command", "start"}, {"name", "a"}, {"type", "sleep"}, {"target", "x"}});
  CHECK_THAT(r["error"].get<std::string>(), Catch::Contains("a task named 'a' already exists"));
  r = c.call({{"command", "start"}, {"type", "sleep"}, {"target", "x"}, {"value", -1}});
  CHECK(r["error"] == "value must be >= 0");
  r = c.call({{"command", "start"},
              {"type", "sleep"},
              {"target", "x"},
              {"alarm", {{"failure_threshold", 1}}}});
  CHECK_THAT(r["error"].get<std::string>(),
             Catch::Contains("'alarm' is read from the task file only"));
  r = c.call({{"command", "start"}, {"type", "sleep"}, {"target", "x"}, {"id", 5}, {"name", "b"}});
  CHECK(r["ok"] == true);
  r = c.call({{"command", "start"}, {"type", "sleep"}, {"target", "x"}, {"id", 5}, {"name", "c"}});
  CHECK(r["error"] == "id 5 is already task 'b'");
  // Option texts are typed by the option table, as `sonde probe --set`.
  r = c.call({{"command", "start"},
              {"name", "d"},
              {"type", "sleep"},
              {"target", "x"},
              {"set", {{"delay", "2ms"}, {"value", "3"}}}});
  CHECK(r["ok"] == true);
  r = c.call({{"command", "start"},
              {"name", "e"},
              {"type", "sleep"},
              {"target", "x"},
              {"set", {{"value", "three"}}}});
  CHECK(r["ok"] == false);
}

TEST_CASE("control: stop, pause and resume by name, id and all", "[control]") {
  test::temp_dir dir;
  test_engine e(dir.write("t.toml", sleep_task("a", "50ms") + sleep_task("b", "50ms")), "");
  line_client c(e.port);
  REQUIRE(c.call({{"command", "start"},
                  {"name", "c"},
                  {"type", "sleep"},
                  {"target", "x"},
                  {"interval", "50ms"},
                  {"id", 3}})["ok"] == true);
  auto state_of = [&](const std::string& n) {
    auto t = find_task(c.call(req("list")), n);
    return t ? (*t)["state"].get<std::string>() : std::string("absent");
  };
  CHECK(c.call({{"command", "pause"}, {"name", "a"}})["paused"] == json::array({"a"}));
  CHECK(state_of("a") == "paused");
  CHECK(state_of("b") == "running");
  CHECK(c.call({{"command", "pause"}, {"id", 3}})["paused"] == json::array({"c"}));
  CHECK(state_of("c") == "paused");
  auto r = c.call({{"command", "pause"}, {"name", "nope"}});
  CHECK(r["ok"] == false);
  CHECK(r["error"] == "no task named 'nope'");
  r = c.call(req("pause"));
  CHECK_THAT(r["error"].get<std::string>(), Catch::Contains("name the tasks"));

  // A paused task produces no results; a resumed one does again.
  c.call({{"command", "pause"}, {"all", true}});
  line_client w(e.port);
  REQUIRE(w.call(req("watch"))["ok"] == true);
  w.set_timeout(100ms);
  while (w.read_line()) {  // runs that were in flight when paused finish
  }
  w.set_timeout(300ms);
  CHECK(!w.read_line());
  w.set_timeout(5000ms);
  CHECK(c.call({{"command", "resume"}, {"all", true}})["resumed"] == json::array({"a", "b", "c"}));
  auto l = w.read_line();
  REQUIRE(l);
  CHECK(json::parse(*l)["event"] == "result");

  CHECK(c.call({{"command", "stop"}, {"name", json::array({"a", "c"})}})["stopped"] ==
        json::array({"a", "c"}));
  CHECK(state_of("a") == "absent");
  CHECK(state_of("c") == "absent");
  CHECK(c.call(req("list"))["stopped"] == json::array({"a"}));
  CHECK(c.call({{"command", "stop"}, {"id", 3}})["error"] == "no task with id 3");
  CHECK(c.call({{"command", "stop"}, {"all", true}})["stopped"] == json::array({"b"}));
  CHECK(c.call(req("list"))["tasks"].empty());
}

TEST_CASE("control: list, status, clients, hello and export describe the engine", "[control]") {
  test::temp_dir dir;
  test_engine e(dir.write("t.toml", sleep_task("a", "50ms", "1ms", 7)), "");
  line_client c(e.port);
  REQUIRE(eventually([&] {
    auto t = find_task(c.call(req("list")), "a");
    return t && !(*t)["last"].is_null();
  }));
  auto t = *find_task(c.call(req("list")), "a");
  CHECK(t["origin"] == "file");
  CHECK(t["id"].is_null());
  CHECK(t["type"] == "sleep");
  CHECK(t["interval"] == "50ms");
  CHECK(t["last"]["status"] == "ok");
  CHECK(t["last"]["metrics"]["value"] == 7);
  CHECK(t["last"]["task"] == "a");

  auto s = c.call({{"command", "status"}, {"seq", 42}});
  CHECK(s["seq"] == 42);
  CHECK(s["protocol"] == 1);
  CHECK(s["tasks"]["total"] == 1);
  CHECK(s["tasks"]["running"] == 1);
  CHECK(s["results"]["total"].get<int>() >= 1);
  CHECK(s["clients"]["connected"] == 1);
  CHECK(s["uptime_s"].get<double>() > 0);
  bool has_sleep = false;
  for (const auto& p : s["plugins"])
    for (const auto& ty : p["types"]) has_sleep |= ty == "sleep";
  CHECK(has_sleep);
  // results per second are sampled each second
  REQUIRE(eventually(
      [&] { return c.call(req("status"))["results"]["per_second"].get<double>() > 5; }, 4000ms));

  auto h = c.call(req("hello"));
  CHECK(h["protocol"] == control_protocol_version);
  for (const char* cmd : {"start", "stop", "pause", "resume", "list", "status", "watch", "clients",
                          "reload", "shutdown", "export", "hello", "unwatch"})
    CHECK(h["commands"].contains(cmd));

  line_client w(e.port);
  REQUIRE(w.call({{"command", "watch"}, {"task", "a"}, {"queue", 10}})["ok"] == true);
  auto cl = c.call(req("clients"))["clients"];
  REQUIRE(cl.size() == 2);
  CHECK(cl[0]["watching"] == false);
  CHECK(cl[1]["watching"] == true);
  CHECK(cl[1]["queue_limit"] == 10);
  CHECK(cl[1]["filter"]["task"] == json::array({"a"}));
  CHECK_THAT(cl[1]["peer"].get<std::string>(), Catch::StartsWith("127.0.0.1:"));

  auto ex = c.call(req("export"))["toml"].get<std::string>();
  CHECK_THAT(
      ex, Catch::Contains("[[task]]\nname = \"a\"\ntype = \"sleep\"\ntarget = \"x\"\n"
                          "interval = \"50ms\"\ntimeout = \"50ms\"\ndelay = \"1ms\"\nvalue = 7\n"));
  // What export prints is a task file that loads back.
  auto path = dir.write("exported.toml", ex);
  auto back = load_task_file(path, plugins());
  REQUIRE(back);
  CHECK(back->tasks.size() == 1);
}

TEST_CASE("control: watch streams results, filtered by task, type and status", "[control]") {
  test::temp_dir dir;
  test_engine e(
      dir.write("t.toml", sleep_task("a", "20ms") + sleep_task("b", "20ms") +
                              "[[task]]\nname = \"late\"\ntype = \"sleep\"\ntarget = \"x\"\n"
                              "interval = \"20ms\"\ntimeout = \"5ms\"\ndelay = \"1s\"\n"),
      "");
  line_client w1(e.port), w2(e.port);
  REQUIRE(w1.call({{"command", "watch"}, {"task", "a"}})["ok"] == true);
  REQUIRE(w2.call({{"command", "watch"}, {"status", "critical"}})["ok"] == true);
  for (int i = 0; i < 10; ++i) {
    auto l = w1.read_line();
    REQUIRE(l);
    auto j = json::parse(*l);
    REQUIRE(j["event"] == "result");
    CHECK(j["result"]["task"] == "a");
    CHECK(j["result"]["status"] == "ok");
    CHECK(j["result"].contains("latency_ms"));
    auto l2 = w2.read_line();
    REQUIRE(l2);
    auto j2 = json::parse(*l2);
    CHECK(j2["result"]["task"] == "late");
    CHECK(j2["result"]["reason"] == "timeout");
  }
  // unwatch: replies, then no more results
  w1.send(req("unwatch"));
  REQUIRE(w1.reply()["watching"] == false);
  w1.set_timeout(200ms);
  while (w1.read_line()) {  // results already queued before the unwatch may still arrive
  }
  w1.set_timeout(200ms);
  CHECK(!w1.read_line());
}

TEST_CASE("control: garbage gets an error reply and the connection stays usable", "[control]") {
  test::temp_dir dir;
  control_options co;
  co.max_line = 1024;
  test_engine e(dir.write("t.toml", sleep_task("a")), "", co);
  line_client c(e.port);
  auto err_of = [&](std::string_view raw) {
    c.send_raw(raw);
    auto r = c.reply();
    CHECK(r["ok"] == false);
    return r["error"].get<std::string>();
  };
  CHECK_THAT(err_of("this is not json\n"), Catch::StartsWith("malformed JSON"));
  CHECK_THAT(err_of("{\"command\": \"list\"\n"), Catch::StartsWith("malformed JSON"));
  CHECK_THAT(err_of("[\"list\"]\n"), Catch::Contains("must be a JSON object"));
  CHECK_THAT(err_of("{\"cmd\": \"list\"}\n"), Catch::Contains("no \"command\""));
  CHECK_THAT(err_of(std::string("\x00\xff\xfe garbage\x01\n", 13)),
             Catch::StartsWith("malformed JSON"));
  auto unknown = err_of("{\"command\": \"lsit\"}\n");
  CHECK_THAT(unknown,
             Catch::StartsWith("unknown command 'lsit' (did you mean 'list'?); valid commands: "));
  for (const char* cmd : {"start", "stop", "pause", "resume", "list", "status", "watch", "clients",
                          "reload", "shutdown"})
    CHECK_THAT(unknown, Catch::Contains(cmd));
  CHECK_THAT(err_of(std::string(5000, 'x') + "\n"), Catch::Contains("longer than 1024 bytes"));
  // An overlong line sent in pieces, without a newline for a while, is skipped as one.
  c.send_raw("{\"command\": \"list\", \"pad\": \"" + std::string(2000, 'y'));
  c.send_raw(std::string(2000, 'y') + "\"}\n");
  CHECK_THAT(c.reply()["error"].get<std::string>(), Catch::Contains("longer than 1024 bytes"));
  // Blank lines are ignored; CRLF line ends are accepted; the connection still works.
  c.send_raw("\n\r\n   \n{\"command\": \"list\"}\r\n");
  auto r = c.reply();
  CHECK(r["ok"] == true);
  CHECK(r["tasks"].size() == 1);
  // Several requests in one packet get their replies in order.
  c.send_raw("{\"command\":\"hello\",\"seq\":1}\n{\"command\":\"status\",\"seq\":2}\n");
  CHECK(c.reply()["seq"] == 1);
  CHECK(c.reply()["seq"] == 2);
}

TEST_CASE("control: 100 concurrent clients are all served", "[control]") {
  test::temp_dir dir;
  test_engine e(dir.write("t.toml", sleep_task("a", "20ms")), "");
  std::vector<std::unique_ptr<line_client>> clients;
  for (int i = 0; i < 110; ++i) clients.push_back(std::make_unique<line_client>(e.port));
  // Every client sends before any reads: the server must handle them interleaved.
  for (std::size_t i = 0; i < clients.size(); ++i)
    clients[i]->send({{"command", i % 2 ? "status" : "list"}, {"seq", i}});
  for (std::size_t i = 0; i < clients.size(); ++i) {
    auto r = clients[i]->reply();
    CHECK(r["ok"] == true);
    CHECK(r["seq"] == i);
  }
  // Half of them watch at once.
  for (std::size_t i = 0; i < clients.size(); i += 2)
    REQUIRE(clients[i]->call(req("watch"))["ok"] == true);
  for (std::size_t i = 0; i < clients.size(); i += 2) {
    auto l = clients[i]->read_line();
    REQUIRE(l);
    CHECK(json::parse(*l)["event"] == "result");
  }
  line_client probe(e.port);
  auto st = probe.call(req("status"));
  CHECK(st["clients"]["connected"] == 111);
  CHECK(st["clients"]["watching"] == 55);
  clients.clear();
  CHECK(eventually([&] { return probe.call(req("status"))["clients"]["connected"] == 1; }));
  CHECK(probe.call(req("status"))["clients"]["watching"] == 0);
}

TEST_CASE("control: a slow watcher gets a bounded queue and a count of dropped results",
          "[control]") {
  test::temp_dir dir;
  std::string toml;
  for (int i = 0; i < 40; ++i) toml += sleep_task("t" + std::to_string(i), "2ms", "0ms");
  test_engine e(dir.write("t.toml", toml), "");
  line_client slow(e.port, 4096);
  REQUIRE(slow.call({{"command", "watch"}, {"queue", 8}})["ok"] == true);
  // It stops reading; the engine keeps producing ~20,000 results a second.
  line_client c(e.port);
  json w;
  REQUIRE(eventually(
      [&] {
        auto cl = c.call(req("clients"))["clients"];
        for (auto& x : cl)
          if (x["watching"] == true) w = x;
        return w["dropped"].get<std::uint64_t>() > 1000;
      },
      20000ms));
  CHECK(w["queue"].get<std::uint64_t>() <= 8);
  CHECK(c.call(req("status"))["clients"]["dropped_results"].get<std::uint64_t>() > 1000);
  // Once it reads again, it is told how many it missed.
  bool told = false;
  for (int i = 0; i < 200000 && !told; ++i) {
    auto l = slow.read_line();
    REQUIRE(l);
    auto j = json::parse(*l);
    if (j["event"] == "dropped") {
      told = true;
      CHECK(j["dropped"].get<std::uint64_t>() > 0);
      CHECK(j["total"].get<std::uint64_t>() >= j["dropped"].get<std::uint64_t>());
    }
  }
  CHECK(told);
}

TEST_CASE("control: clients that vanish mid-stream are cleaned up", "[control]") {
  test::temp_dir dir;
  std::string toml;
  for (int i = 0; i < 10; ++i) toml += sleep_task("t" + std::to_string(i), "5ms", "0ms");
  test_engine e(dir.write("t.toml", toml), "");
  line_client probe(e.port);
  for (int round = 0; round < 3; ++round) {
    std::vector<std::unique_ptr<line_client>> ws;
    for (int i = 0; i < 20; ++i) {
      ws.push_back(std::make_unique<line_client>(e.port, 4096));
      ws.back()->send(req("watch"));
    }
    REQUIRE(eventually([&] { return probe.call(req("status"))["clients"]["watching"] == 20; }));
    std::this_thread::sleep_for(100ms);  // mid-stream: queues and socket buffers are filling
    for (std::size_t i = 0; i < ws.size(); ++i)
      if (i % 2)
        ws[i]->abort();  // reset
      else
        ws[i].reset();  // orderly close
    CHECK(eventually([&] { return probe.call(req("status"))["clients"]["connected"] == 1; }));
  }
  auto st = probe.call(req("status"));
  CHECK(st["clients"]["watching"] == 0);
  CHECK(st["clients"]["connected"] == 1);
}

TEST_CASE("control: reload keeps unchanged tasks and refuses a file with errors", "[control]") {
  test::temp_dir dir;
  auto path = dir.write("t.toml", sleep_task("a", "50ms", "1ms", 1) + sleep_task("b", "50ms") +
                                      sleep_task("c", "50ms"));
  test_engine e(path, dir.path() + "/state");
  line_client c(e.port);
  REQUIRE(c.call({{"command", "start"}, {"name", "x"}, {"type", "sleep"}, {"target", "x"}})["ok"] ==
          true);
  REQUIRE(c.call({{"command", "pause"}, {"name", "a"}})["ok"] == true);
  REQUIRE(eventually([&] {
    auto t = find_task(c.call(req("list")), "a");
    return t && !(*t)["last"].is_null();
  }));
  auto before = (*find_task(c.call(req("list")), "a"))["last"];

  // a unchanged, b changed, c removed, d added
  dir.write("t.toml",
            sleep_task("a", "50ms", "1ms", 1) + sleep_task("b", "70ms") + sleep_task("d", "50ms"));
  auto r = c.call(req("reload"));
  INFO(r.dump());
  REQUIRE(r["ok"] == true);
  CHECK(r["added"] == json::array({"d"}));
  CHECK(r["changed"] == json::array({"b"}));
  CHECK(r["removed"] == json::array({"c"}));
  CHECK(r["unchanged"] == 1);
  auto list = c.call(req("list"));
  auto a = *find_task(list, "a");
  CHECK(a["state"] == "paused");  // kept its state...
  CHECK(a["last"] == before);     // ...and its last result (paused: no new one)
  CHECK((*find_task(list, "b"))["interval"] == "70ms");
  CHECK(!find_task(list, "c"));
  CHECK(find_task(list, "d"));
  CHECK(find_task(list, "x"));  // control-channel tasks are not the file's to remove

  // A file with errors is refused with positioned errors; nothing changes.
  dir.write("t.toml",
            sleep_task("a") +
                "[[task]]\nname = \"e\"\ntype = \"sleep\"\ntarget = \"x\"\ndelai = \"1ms\"\n");
  r = c.call(req("reload"));
  CHECK(r["ok"] == false);
  CHECK_THAT(r["error"].get<std::string>(),
             Catch::Contains("1 error in " + path + "; the running tasks are unchanged"));
  REQUIRE(r["errors"].size() == 1);
  CHECK(r["errors"][0] ==
        path + ":13:1: error: unknown key 'delai' for type 'sleep' (did you mean 'delay'?)");
  auto after = c.call(req("list"));
  CHECK(after["tasks"].size() == list["tasks"].size());
  CHECK((*find_task(after, "b"))["interval"] == "70ms");
  // A task file that now uses a control task's name is refused too.
  dir.write("t.toml", sleep_task("x"));
  r = c.call(req("reload"));
  CHECK(r["ok"] == false);
  CHECK_THAT(r["errors"][0].get<std::string>(),
             Catch::Contains("also a task started over the control channel"));
  // A directory (or FIFO, or device) where the task file was: refused, every task keeps running.
  std::filesystem::remove(path);
  std::filesystem::create_directory(path);
  r = c.call(req("reload"));
  CHECK(r["ok"] == false);
  CHECK_THAT(r["errors"][0].get<std::string>(), Catch::Contains("this is a directory"));
  CHECK(c.call(req("list"))["tasks"].size() == list["tasks"].size());
}

TEST_CASE("control: tasks started, stopped and paused survive a restart", "[control]") {
  test::temp_dir dir;
  auto path = dir.write("t.toml", sleep_task("a") + sleep_task("b") + sleep_task("c"));
  std::string state = dir.path() + "/state";
  {
    test_engine e(path, state);
    line_client c(e.port);
    REQUIRE(c.call({{"command", "start"},
                    {"name", "x"},
                    {"type", "sleep"},
                    {"target", "x"},
                    {"id", 7},
                    {"interval", "2s"},
                    {"tags", {{"team", "web"}}},
                    {"warn", "value > 3"},
                    {"value", 5}})["ok"] == true);
    REQUIRE(
        c.call({{"command", "start"}, {"name", "y"}, {"type", "sleep"}, {"target", "y"}})["ok"] ==
        true);
    REQUIRE(c.call({{"command", "stop"}, {"name", "a"}})["ok"] == true);
    REQUIRE(c.call({{"command", "stop"}, {"name", "y"}})["ok"] == true);
    REQUIRE(c.call({{"command", "pause"}, {"name", "b"}})["ok"] == true);
  }
  {
    test_engine e(path, state);
    line_client c(e.port);
    auto list = c.call(req("list"));
    CHECK(!find_task(list, "a"));
    CHECK(!find_task(list, "y"));
    REQUIRE(find_task(list, "x"));
    auto x = *find_task(list, "x");
    CHECK(x["id"] == 7);
    CHECK(x["interval"] == "2s");
    CHECK(x["tags"]["team"] == "web");
    CHECK(x["origin"] == "control");
    CHECK((*find_task(list, "b"))["state"] == "paused");
    CHECK((*find_task(list, "c"))["state"] == "running");
    CHECK(list["stopped"] == json::array({"a"}));
    CHECK_THAT(c.call(req("export"))["toml"].get<std::string>(),
               Catch::Contains("name = \"x\"") && Catch::Contains("warn = [\"value > 3\"]") &&
                   !Catch::Contains("name = \"a\""));
    // A stopped task-file task comes back by its name alone.
    auto r = c.call({{"command", "start"}, {"name", "a"}});
    CHECK(r["ok"] == true);
    CHECK(r["restored"] == true);
    CHECK(find_task(c.call(req("list")), "a"));
    // The id of a stopped task can be used again.
    CHECK(c.call({{"command", "stop"}, {"id", 7}})["ok"] == true);
  }
  {
    test_engine e(path, state);
    line_client c(e.port);
    auto list = c.call(req("list"));
    CHECK(find_task(list, "a"));
    CHECK(!find_task(list, "x"));
    CHECK(list["stopped"].empty());
  }
}

TEST_CASE("control: a corrupt state file is an error naming the file and line", "[control]") {
  test::temp_dir dir;
  auto path = dir.write("t.toml", sleep_task("a"));
  std::string state = dir.path() + "/state";
  std::filesystem::create_directories(state);
  std::ofstream(state_file_path(state))
      << "[state]\nversion = 1\n\n[[task]]\nname = \"x\"\ntype = \"sleep\"\ntarget = \n";
  auto tf = load_task_file(path, plugins());
  REQUIRE(tf);
  asio::io_context io;
  scheduler s(io, tf->tasks, {});
  task_set ts(s, plugins(), path, state);
  auto r = ts.load_state();
  REQUIRE(!r);
  CHECK_THAT(r.error().front().to_string(), Catch::StartsWith(state_file_path(state) + ":7:"));
  std::ofstream(state_file_path(state)) << "[state]\nversion = 1\nstopped = [1]\n";
  r = ts.load_state();
  REQUIRE(!r);
  CHECK(r.error().front().to_string() ==
        state_file_path(state) + ":3:12: error: 'stopped' entries must be task names");
  // A task file that now has a state task's name: both named.
  std::ofstream(state_file_path(state))
      << "[state]\nversion = 1\n[[task]]\nname = \"a\"\ntype = \"sleep\"\ntarget = \"x\"\n";
  r = ts.load_state();
  REQUIRE(!r);
  CHECK_THAT(
      r.error().front().to_string(),
      Catch::StartsWith(state_file_path(state) + ":3:1: error: task 'a'") && Catch::Contains(path));
  // Empty, foreign, or not a file at all: refused with what to do, never read as "no tasks".
  std::ofstream(state_file_path(state)) << "";
  r = ts.load_state();
  REQUIRE(!r);
  CHECK_THAT(r.error().front().to_string(),
             Catch::Contains("the state file is empty") && Catch::Contains("move it aside"));
  std::ofstream(state_file_path(state)) << "[[task]]\nname = \"z\"\ntype = \"sleep\"\n";
  r = ts.load_state();
  REQUIRE(!r);
  CHECK_THAT(r.error().front().to_string(), Catch::Contains("not a sonde state file"));
  std::filesystem::remove(state_file_path(state));
  std::filesystem::create_directory(state_file_path(state));
  r = ts.load_state();
  REQUIRE(!r);
  CHECK_THAT(r.error().front().to_string(),
             Catch::Contains("must be a regular file, and this is a directory"));
}

TEST_CASE("control: token rules", "[control]") {
  test::temp_dir dir;
  auto path = dir.write("t.toml", sleep_task("a"));
  control_options co;
  co.token = "s3cret";
  test_engine e(path, "", co);
  {
    line_client c(e.port);
    auto r = c.call(req("list"));
    CHECK(r["ok"] == false);
    CHECK_THAT(r["error"].get<std::string>(), Catch::StartsWith("a token is required"));
    CHECK(!c.read_line());
    CHECK(c.eof());  // closed
  }
  {
    line_client c(e.port);
    auto r = c.call({{"command", "list"}, {"token", "s3cres"}});
    CHECK(r["error"] == "wrong token");
    CHECK(!c.read_line());
    CHECK(c.eof());
  }
  {
    line_client c(e.port);
    c.send_raw("garbage before the token\n");
    CHECK(c.reply()["ok"] == false);
    CHECK(!c.read_line());
    CHECK(c.eof());
  }
  {
    line_client c(e.port);
    CHECK(c.call({{"command", "list"}, {"token", "s3cret"}})["ok"] == true);
    CHECK(c.call(req("status"))["ok"] == true);  // authenticated connection
    CHECK(c.call({{"command", "status"}, {"token", "wrong"}})["error"] == "wrong token");
    CHECK(!c.read_line());
    CHECK(c.eof());
  }
  // Beyond loopback without a token: refused before anything listens.
  CHECK_THAT(start_error(path, {"0.0.0.0", 0}, ""),
             Catch::StartsWith("refusing to listen on 0.0.0.0:0 without a token"));
}

TEST_CASE("control: shutdown replies, then the engine stops", "[control]") {
  test::temp_dir dir;
  test_engine e(dir.write("t.toml", sleep_task("a", "50ms", "30ms")), "");
  line_client w(e.port);
  REQUIRE(w.call(req("watch"))["ok"] == true);
  line_client c(e.port);
  auto r = c.call(req("shutdown"));
  CHECK(r["ok"] == true);
  CHECK(r["shutting_down"] == true);
  // The watcher hears about it, then the connection closes.
  bool told = false;
  for (int i = 0; i < 1000; ++i) {
    auto l = w.read_line();
    if (!l) break;
    told |= json::parse(*l)["event"] == "shutdown";
  }
  CHECK(told);
  CHECK(w.eof());
  CHECK(eventually([&] { return e.stopped(); }));
  CHECK(e.shutdown_requested);
}

namespace {

// A reply that says the change was made and saved.
bool c_ok(const json& r) {
  return r["ok"] == true && !r.contains("warning");
}

// A connection that says nothing (a hostile or broken client).
struct silent_client {
  int fd = -1;
  explicit silent_client(unsigned short port) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      throw std::runtime_error("connect failed");
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~silent_client() { ::close(fd); }
  silent_client(const silent_client&) = delete;
  // True once the engine closed the connection (read returns end of stream or a reset).
  bool closed_by_peer() {
    char b[256];
    while (true) {
      auto n = ::recv(fd, b, sizeof b, 0);
      if (n > 0) continue;  // a notice before the close
      return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
    }
  }
};

}  // namespace

TEST_CASE("control: connections that never speak cannot lock clients out", "[control]") {
  test::temp_dir dir;
  auto path = dir.write("t.toml", sleep_task("a"));
  control_options co;
  co.token = "s3cret";
  co.max_clients = 16;
  co.max_unauthenticated = 8;
  co.max_per_address = 6;
  co.auth_timeout = 60s;  // eviction, not the timeout, must make room here
  test_engine e(path, "", co);
  // An authenticated watcher holds a slot throughout and must never be evicted.
  line_client w(e.port);
  REQUIRE(w.call({{"command", "watch"}, {"token", "s3cret"}})["ok"] == true);
  // Waves of connections that never speak, as many as the engine takes; each wave has had its
  // chance (a second: the grace before an unauthenticated connection may be closed) before
  // the next arrives.
  std::vector<std::unique_ptr<silent_client>> silent;
  for (int wave = 0; wave < 3; ++wave) {
    for (int i = 0; i < 20; ++i) silent.push_back(std::make_unique<silent_client>(e.port));
    std::this_thread::sleep_for(1100ms);
  }
  // sondectl and agents still get in, again and again.
  for (int i = 0; i < 5; ++i) {
    line_client c(e.port);
    auto r = c.call({{"command", "status"}, {"token", "s3cret"}});
    REQUIRE(r["ok"] == true);
    CHECK(r["clients"]["evicted_unauthenticated"].get<int>() >= 10);
    CHECK(r["clients"]["connected"].get<int>() <= 16);
  }
  // The oldest silent connections were closed to make room.
  CHECK(silent.front()->closed_by_peer());
  CHECK(w.call(req("status"))["ok"] == true);  // the watcher is still connected
}

TEST_CASE("control: unauthenticated and idle connections time out", "[control]") {
  test::temp_dir dir;
  auto path = dir.write("t.toml", sleep_task("a", "1h"));
  control_options co;
  co.token = "s3cret";
  co.auth_timeout = 300ms;
  co.idle_timeout = 600ms;
  test_engine e(path, "", co);
  silent_client quiet(e.port);
  line_client idle(e.port);
  REQUIRE(idle.call({{"command", "list"}, {"token", "s3cret"}})["ok"] == true);
  line_client watcher(e.port);
  REQUIRE(watcher.call({{"command", "watch"}, {"token", "s3cret"}})["ok"] == true);
  CHECK(quiet.closed_by_peer());  // within auth_timeout (the receive timeout is 5 s)
  // The idle client is told why, then closed; the watcher (no results at a 1 h interval) stays.
  idle.set_timeout(5000ms);
  auto notice = idle.json_line();
  REQUIRE(notice);
  CHECK((*notice)["event"] == "closing");
  CHECK_THAT((*notice)["reason"].get<std::string>(), Catch::Contains("idle"));
  CHECK(!idle.read_line());
  CHECK(idle.eof());
  auto st = watcher.call(req("status"));
  CHECK(st["clients"]["auth_timeouts"] == 1);
  CHECK(st["clients"]["idle_closed"] == 1);
}

TEST_CASE("control: a weak token is refused beyond loopback", "[control]") {
  CHECK(check_token("sekrit", true));
  CHECK_THAT(check_token("x", false).error(), Catch::Contains("at least 16 characters"));
  CHECK_THAT(check_token("                ", true).error(), Catch::Contains("spaces"));
  CHECK_THAT(check_token("abc\tdefghijklmnopq", false).error(), Catch::Contains("control"));
  CHECK(check_token("0123456789abcdef", false));
  test::temp_dir dir;
  auto path = dir.write("t.toml", sleep_task("a"));
  CHECK_THAT(start_error(path, {"0.0.0.0", 0}, "x"), Catch::Contains("at least 16 characters"));
  CHECK(start_error(path, {"0.0.0.0", 0}, "0123456789abcdef").empty());
}

TEST_CASE("control: hostile requests get errors and change nothing", "[control]") {
  test::temp_dir dir;
  auto path = dir.write("t.toml", sleep_task("a"));
  test_engine e(path, dir.path() + "/state");
  line_client c(e.port);
  auto r = c.call(json::parse(R"({"command":"hello"})"));
  REQUIRE(r["ok"] == true);
  c.send_raw(R"({"command":"hello","command":"shutdown"})"
             "\n");
  r = c.reply();
  CHECK(r["ok"] == false);
  CHECK_THAT(r["error"].get<std::string>(), Catch::Contains("appears twice"));
  CHECK(!e.shutdown_requested);
  c.send_raw(std::string(R"({"command":"list"})") + '\0' + R"({"command":"shutdown"})" + "\n");
  CHECK_THAT(c.reply()["error"].get<std::string>(), Catch::Contains("NUL byte"));
  c.send_raw(R"({"command":"list","seq":)" + std::string(60000, '[') + "\n");
  CHECK_THAT(c.reply()["error"].get<std::string>(), Catch::Contains("nested deeper"));
  CHECK(!e.shutdown_requested);
  // Stop by name and id together is refused, and stops nothing.
  REQUIRE(c.call({{"command", "start"}, {"name", "b"}, {"type", "sleep"}, {"target", "x"}})["ok"] ==
          true);
  r = c.call({{"command", "stop"}, {"name", "a"}, {"id", 1}});
  CHECK(r["ok"] == false);
  auto list = c.call(req("list"));
  CHECK(find_task(list, "a"));
  CHECK(find_task(list, "b"));
  // After the largest addressable id, the next automatic one is the first free one.
  REQUIRE(c.call({{"command", "start"},
                  {"name", "top"},
                  {"type", "sleep"},
                  {"target", "x"},
                  {"id", 9007199254740991LL}})["ok"] == true);
  r = c.call({{"command", "start"}, {"name", "next"}, {"type", "sleep"}, {"target", "x"}});
  REQUIRE(r["ok"] == true);
  CHECK(r["id"] == 2);  // 1 is "b"
  CHECK(c.call({{"command", "stop"}, {"id", r["id"]}})["ok"] == true);
  // A watcher cannot ask for an unbounded queue.
  r = c.call({{"command", "watch"}, {"queue", 1000000}});
  CHECK(r["ok"] == false);
  CHECK_THAT(r["error"].get<std::string>(), Catch::Contains("from 1 to 100000"));
}

TEST_CASE("control: changes are written off the loop and acknowledged once on disk", "[control]") {
  test::temp_dir dir;
  auto path = dir.write("t.toml", sleep_task("a"));
  std::string state = dir.path() + "/state";
  std::atomic<int> writes{0};
  std::atomic<bool> slow{true};
  state_writer::options wo;
  wo.retry = 100ms;
  wo.before_write = [&] {
    if (slow) std::this_thread::sleep_for(800ms);  // a disk that takes its time
    ++writes;
  };
  {
    test_engine e(path, state, {}, wo);
    line_client a(e.port), b(e.port);
    a.send({{"command", "start"}, {"name", "x"}, {"type", "sleep"}, {"target", "x"}});
    // While the write is in progress the loop serves others and the task already runs.
    auto list = b.call(req("list"));
    CHECK(writes == 0);
    CHECK(find_task(list, "x"));
    auto r = a.reply();  // only after the write
    CHECK(r["ok"] == true);
    CHECK(!r.contains("warning"));
    CHECK(writes >= 1);
    slow = false;
    // 200 changes from one client: each acknowledged once written, none lost.
    for (int i = 0; i < 200; ++i)
      REQUIRE(c_ok(a.call({{"command", "start"},
                           {"name", "t" + std::to_string(i)},
                           {"type", "sleep"},
                           {"target", "x"},
                           {"interval", "1h"}})));
    for (int i = 0; i < 200; i += 2)
      REQUIRE(c_ok(a.call({{"command", "stop"}, {"name", "t" + std::to_string(i)}})));
    REQUIRE(c_ok(a.call({{"command", "pause"}, {"name", "a"}})));
    auto st = a.call(req("status"))["state"];
    CHECK(st["pending"] == 0);
    CHECK(st["failures"] == 0);
    CHECK(st["changes"].get<int>() >= 302);
    // The journal holds the changes (the state file is rewritten only when it grows large).
    CHECK(std::filesystem::exists(state_journal_path(state_file_path(state))));
  }
  {
    test_engine e(path, state);  // replays the journal, then folds it into the state file
    line_client c(e.port);
    auto list = c.call(req("list"));
    CHECK(find_task(list, "x"));
    for (int i = 0; i < 200; ++i)
      CHECK(find_task(list, "t" + std::to_string(i)).has_value() == (i % 2 == 1));
    CHECK((*find_task(list, "a"))["state"] == "paused");
  }
  CHECK(!std::filesystem::exists(state_journal_path(state_file_path(state))));
}

TEST_CASE("control: a state directory that cannot be written is reported and retried",
          "[control]") {
  test::temp_dir dir;
  auto path = dir.write("t.toml", sleep_task("a"));
  std::string state = dir.path() + "/state";
  state_writer::options wo;
  wo.retry = 100ms;
  {
    test_engine e(path, state, {}, wo);
    line_client c(e.port);
    // The state directory is replaced by a file: every write fails (ENOTDIR), as on a
    // broken or full disk.
    std::filesystem::remove_all(state);
    std::ofstream(state) << "not a directory";
    auto r = c.call({{"command", "start"}, {"name", "x"}, {"type", "sleep"}, {"target", "x"}});
    CHECK(r["ok"] == true);                                                         // in effect...
    CHECK_THAT(r["warning"].get<std::string>(), Catch::Contains("not yet saved"));  // ...not saved
    auto st = c.call(req("status"))["state"];
    CHECK(st["failures"].get<int>() >= 1);
    CHECK(st["error"].is_string());
    // The disk comes back: the retry writes everything.
    std::filesystem::remove(state);
    std::filesystem::create_directory(state);
    CHECK(eventually([&] { return c.call(req("status"))["state"]["error"].is_null(); }));
  }
  test_engine e(path, state);
  line_client c(e.port);
  CHECK(find_task(c.call(req("list")), "x"));
}

TEST_CASE("control: a hung disk delays a reply by persist_wait at most", "[control]") {
  test::temp_dir dir;
  auto path = dir.write("t.toml", sleep_task("a"));
  std::string state = dir.path() + "/state";
  state_writer::options wo;
  wo.before_write = [] { std::this_thread::sleep_for(1500ms); };
  control_options co;
  co.persist_wait = 200ms;
  test_engine e(path, state, co, wo);
  line_client c(e.port);
  auto r = c.call({{"command", "start"}, {"name", "x"}, {"type", "sleep"}, {"target", "x"}});
  CHECK(r["ok"] == true);
  CHECK_THAT(r["warning"].get<std::string>(), Catch::Contains("not yet on disk"));
  CHECK(c.call(req("status"))["ok"] == true);  // the connection goes on
  // The change is written when the disk gets to it.
  CHECK(eventually([&] { return c.call(req("status"))["state"]["pending"] == 0; }, 10000ms));
}

TEST_CASE("control: results queued for all watchers together are capped", "[control]") {
  test::temp_dir dir;
  auto path = dir.write("t.toml", sleep_task("a", "1ms", "0ms") + sleep_task("b", "1ms", "0ms"));
  control_options co;
  co.max_queued_bytes = 64 * 1024;
  co.watch_queue = 100000;
  test_engine e(path, "", co);
  std::vector<std::unique_ptr<line_client>> stuck;
  for (int i = 0; i < 4; ++i) {
    // Tiny receive buffers and never read: everything stays queued in the engine.
    stuck.push_back(std::make_unique<line_client>(e.port, 1024));
    REQUIRE(stuck.back()->call(req("watch"))["ok"] == true);
  }
  line_client c(e.port);
  CHECK(eventually([&] {
    return c.call(req("status"))["clients"]["dropped_results"].get<std::uint64_t>() > 1000;
  }));
  auto st = c.call(req("status"))["clients"];
  CHECK(st["queued_bytes"].get<std::size_t>() <= 64 * 1024 + 4096);
  // Gone watchers give their bytes back.
  for (auto& s : stuck) s->abort();
  CHECK(eventually([&] { return c.call(req("status"))["clients"]["queued_bytes"] == 0; }));
}

TEST_CASE(
    "state: a crash between rewriting the state file and removing the journal reverts "
    "nothing",
    "[control]") {
  test::temp_dir dir;
  auto path = dir.write("t.toml", sleep_task("f"));
  std::string state = dir.path() + "/state";
  std::filesystem::create_directories(state);
  auto task = [](const char* name) {
    return std::string("[[task]]\nname = \"") + name +
           "\"\ntype = \"sleep\"\ntarget = \"x\"\ninterval = \"1m\"\ntimeout = \"5s\"\n";
  };
  // The journal as the writer leaves it: b got id 5; later one batch stopped b and started a
  // with id 5 (both lines appended before the rewrite).
  state_record b{"b", task("b"), 5, false, false}, a{"a", task("a"), 5, false, false};
  std::ofstream(state_journal_path(state_file_path(state)))
      << format_state_record(b) << format_state_record(state_record{"b", {}, {}, false, false})
      << format_state_record(a);
  // The rewritten state file already has the batch; the journal was not yet removed.
  std::ofstream(state_file_path(state)) << format_state_file({{"a", a}});
  test_engine e(path, state);
  line_client c(e.port);
  auto list = c.call(req("list"));
  REQUIRE(find_task(list, "a"));
  CHECK((*find_task(list, "a"))["id"] == 5);
  CHECK(!find_task(list, "b"));
}

TEST_CASE("state: a torn last journal line is cut before the next append", "[control]") {
  test::temp_dir dir;
  auto path = dir.write("t.toml", sleep_task("f"));
  std::string state = dir.path() + "/state";
  {
    test_engine e(path, state);
    line_client c(e.port);
    REQUIRE(
        c_ok(c.call({{"command", "start"}, {"name", "x"}, {"type", "sleep"}, {"target", "x"}})));
  }
  // The engine folded the journal at its next start... simulate a crash mid-append instead.
  std::ofstream(state_journal_path(state_file_path(state)), std::ios::app)
      << R"({"name":"y","task":"[[task)";
  {
    test_engine e(path, state);  // warns about the torn line, rewrites the file
    line_client c(e.port);
    REQUIRE(
        c_ok(c.call({{"command", "start"}, {"name", "z"}, {"type", "sleep"}, {"target", "x"}})));
  }
  test_engine e(path, state);
  line_client c(e.port);
  auto list = c.call(req("list"));
  CHECK(find_task(list, "x"));
  CHECK(find_task(list, "z"));
  CHECK(!find_task(list, "y"));
}
