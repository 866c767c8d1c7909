// Plugin discovery and refusal rules, and plugins doing real I/O on one io_context.
#include <catch2/catch.hpp>

#include <asio/ip/tcp.hpp>

#include "core/config.hpp"
#include "core/plugin_host.hpp"
#include "core/scheduler.hpp"

#include "support/support.hpp"

using namespace sonde;
using namespace sonde::engine;

namespace {
const std::string real_dir = SONDE_TEST_PLUGIN_DIR;
const std::string bad_dir = std::string(SONDE_TEST_FIXTURE_DIR) + "/plugins-bad";
const std::string test_dir = std::string(SONDE_TEST_FIXTURE_DIR) + "/plugins-test";

const plugin_problem* problem_for(const plugin_host& h, const std::string& file) {
  for (auto& p : h.problems())
    if (p.path.ends_with("/" + file)) return &p;
  return nullptr;
}
}  // namespace

TEST_CASE("plugins: bad files are refused by name while the good ones load", "[plugins]") {
  plugin_host host;
  host.load_dirs({{real_dir, "test"}, {bad_dir, "test"}});
  REQUIRE(host.find("tcp"));
  CHECK(host.find("tcp")->plugin->path == real_dir + "/sonde-tcp.so");

  auto* abi = problem_for(host, "sonde-badabi.so");
  REQUIRE(abi);
  CHECK_THAT(abi->message, Catch::Contains(bad_dir + "/sonde-badabi.so") &&
                               Catch::Contains("built for plugin ABI 2") &&
                               Catch::Contains("speaks ABI 1"));

  auto* fp = problem_for(host, "sonde-badfingerprint.so");
  REQUIRE(fp);
  CHECK_THAT(fp->message, Catch::Contains("sonde-badfingerprint.so") &&
                              Catch::Contains("build fingerprint 'sonde 0.1.0; gcc-0.0.0") &&
                              Catch::Contains("should be '"));

  auto* notp = problem_for(host, "sonde-notaplugin.so");
  REQUIRE(notp);
  CHECK_THAT(notp->message,
             Catch::Contains("sonde-notaplugin.so") && Catch::Contains("not a sonde plugin"));

  auto* junk = problem_for(host, "sonde-garbage.so");
  REQUIRE(junk);
  CHECK_THAT(junk->message, Catch::Contains("sonde-garbage.so") &&
                                Catch::Contains("cannot load it as a shared object"));

  auto* dup = problem_for(host, "sonde-duptcp.so");
  REQUIRE(dup);
  CHECK_THAT(dup->message, Catch::Contains("probe type 'tcp' is already provided by " + real_dir +
                                           "/sonde-tcp.so"));
  CHECK(host.problems().size() == 5);
}

TEST_CASE("plugins: seed names and aliases resolve, a file name seen earlier is shadowed",
          "[plugins]") {
  plugin_host host;
  host.load_dirs({{real_dir, "a"}, {real_dir + "/.", "b"}});
  REQUIRE(host.find("TCP"));
  CHECK(std::string(host.find("TCP")->type->name) == "tcp");
  CHECK(host.find("nonexistent") == nullptr);
  CHECK_FALSE(host.shadowed().empty());
  CHECK(host.problems().empty());
}

TEST_CASE("plugins: search path order is flags, environment, task file, install, build tree",
          "[plugins]") {
  setenv("SONDE_PLUGIN_PATH", "/env/one:/env/two", 1);
  auto dirs = plugin_search_path({"/cli"}, {"/conf"});
  unsetenv("SONDE_PLUGIN_PATH");
  REQUIRE(dirs.size() >= 5);
  CHECK(dirs[0].path == "/cli");
  CHECK(dirs[1].path == "/env/one");
  CHECK(dirs[2].path == "/env/two");
  CHECK(dirs[3].path == "/conf");
  CHECK(dirs[4].origin == "install");
  CHECK(dirs.back().origin == "beside the binary");
}

TEST_CASE("plugins: two plugins do real I/O on one io_context", "[plugins][integration]") {
  plugin_host host;
  host.load_dirs({{real_dir, "test"}, {test_dir, "test"}});
  REQUIRE(host.find("tcp"));
  REQUIRE(host.find("sleep"));

  asio::io_context srv;
  asio::ip::tcp::acceptor acc(srv, {asio::ip::make_address("127.0.0.1"), 0});
  auto port = std::to_string(acc.local_endpoint().port());
  auto tcp_ok = create_probe(*host.find("tcp"), "127.0.0.1:" + port, {});
  auto tcp_refused =
      create_probe(*host.find("tcp"), "127.0.0.1:" + std::to_string(test::closed_port()), {});
  auto sleeper =
      create_probe(*host.find("sleep"), "x", {{"delay", duration(std::chrono::milliseconds(30))}});
  REQUIRE(tcp_ok);
  REQUIRE(tcp_refused);
  REQUIRE(sleeper);

  asio::io_context io;
  std::vector<std::pair<int, int>> done;  // (which, reason)
  struct ctx_t {
    std::vector<std::pair<int, int>>* done;
    int which;
  } c0{&done, 0}, c1{&done, 1}, c2{&done, 2};
  auto cb = [](void* u, const sonde_result* r) {
    auto* c = static_cast<ctx_t*>(u);
    c->done->emplace_back(c->which, r->has_observation ? r->reason : -1);
  };
  auto dl = std::chrono::duration_cast<std::chrono::nanoseconds>(
                (std::chrono::steady_clock::now() + std::chrono::seconds(2)).time_since_epoch())
                .count();
  (*sleeper)->type()->run((*sleeper)->handle(), &io, dl, cb, &c2);
  (*tcp_ok)->type()->run((*tcp_ok)->handle(), &io, dl, cb, &c0);
  (*tcp_refused)->type()->run((*tcp_refused)->handle(), &io, dl, cb, &c1);
  io.run();
  REQUIRE(done.size() == 3);
  std::sort(done.begin(), done.end());
  CHECK(done[0] == std::pair{0, int(reason::none)});
  CHECK(done[1] == std::pair{1, int(reason::refused)});
  CHECK(done[2] == std::pair{2, int(reason::none)});
}

TEST_CASE("plugins: create errors come back with the key that is wrong", "[plugins]") {
  plugin_host host;
  host.load_dirs({{real_dir, "test"}});
  auto bad_target = create_probe(*host.find("tcp"), "127.0.0.1", {});
  REQUIRE_FALSE(bad_target);
  CHECK(bad_target.error().key == "target");
  CHECK_THAT(bad_target.error().message, Catch::Contains("port is required"));
  auto bad_opt = create_probe(*host.find("tcp"), "127.0.0.1:80", {{"close", std::string("slam")}});
  REQUIRE_FALSE(bad_opt);
  CHECK(bad_opt.error().key == "close");
}
