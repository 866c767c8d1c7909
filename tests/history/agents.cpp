// The central's agent reports in the history store, end to end: the real `sonde run` central
// and real `sonde agent` processes on loopback, the central SIGKILLed mid-stream and restarted
// on the same state directory; then history.db is read with sqlite3: every report stored
// exactly once, in order, with the agents' queue positions beside them.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "support/files.hpp"
#include "support/history_db.hpp"
#include "support/line_client.hpp"
#include "support/process.hpp"

extern char** environ;

using sonde::test::temp_dir;
using sonde::test::wait_until;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

// A `sonde` process with stdout and stderr appended to files.
class sonde_process {
 public:
  sonde_process(std::vector<std::string> args, const std::string& log) {
    std::vector<std::string> argv{std::string(SONDE_TEST_BIN_DIR) + "/sonde"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargs;
    for (auto& a : argv) cargs.push_back(a.data());
    cargs.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, (log + ".out").c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    posix_spawn_file_actions_addopen(&fa, 2, (log + ".err").c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    int rc = posix_spawn(&pid_, cargs[0], &fa, nullptr, cargs.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw std::runtime_error("cannot start " + argv[0]);
  }
  sonde_process(const sonde_process&) = delete;
  sonde_process& operator=(const sonde_process&) = delete;
  ~sonde_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  void signal(int sig) { ::kill(pid_, sig); }
  /// Wait up to `limit` for the exit: its status as waitpid reports it, or -1.
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

// `stored` of an agent in the central's `agents` table (results stored by this run), or -1.
long long stored_now(unsigned short port, const std::string& agent) {
  try {
    sonde::test::line_client c(port);
    auto r = c.call({{"command", "agents"}});
    for (const auto& a : r["agents"])
      if (a["agent"] == agent) return a["stored"].get<long long>();
  } catch (const std::exception&) {
  }
  return -1;
}

}  // namespace

TEST_CASE("two agents and a SIGKILLed central: every report stored exactly once, in order",
          "[agent_central][history][integration]") {
  temp_dir d;
  const std::string tasks = d.write("central.toml", "");
  const std::string state = d.path() + "/central-state";
  const unsigned short port = sonde::test::free_port();
  const std::string addr = "127.0.0.1:" + std::to_string(port);
  auto start_central = [&] {
    auto c = std::make_unique<sonde_process>(
        std::vector<std::string>{"run", tasks, "--quiet", "--control", addr, "--state-dir", state},
        d.path() + "/central");
    REQUIRE(wait_until([&] { return sonde::test::tcp_port_open(port); }, 10s));
    return c;
  };
  const std::vector<std::string> names{"a", "b"};
  auto central = start_central();
  std::vector<std::unique_ptr<sonde_process>> agents;
  for (const auto& n : names)
    agents.push_back(std::make_unique<sonde_process>(
        std::vector<std::string>{"agent", "--server", addr, "--name", n, "--interval", "100ms",
                                 "--state-dir", d.path() + "/agent-" + n, "--retry-max", "1s"},
        d.path() + "/agent-" + n));

  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> jitter(100, 700);
  for (int round = 0; round < 2; ++round) {
    INFO("round " << round << "; central: " << slurp(d.path() + "/central.err"));
    // Both agents deliver to this central, then it dies at an arbitrary moment mid-stream.
    REQUIRE(
        wait_until([&] { return stored_now(port, "a") > 2 && stored_now(port, "b") > 2; }, 20s));
    std::this_thread::sleep_for(std::chrono::milliseconds(jitter(rng)));
    central->signal(SIGKILL);
    REQUIRE(central->wait(5s) != -1);
    std::this_thread::sleep_for(std::chrono::milliseconds(jitter(rng)));
    central = start_central();
  }
  // The last central: the agents catch up on what queued during the outages, and go on.
  REQUIRE(wait_until([&] { return stored_now(port, "a") > 5 && stored_now(port, "b") > 5; }, 20s));
  std::this_thread::sleep_for(1500ms);
  for (auto& a : agents) a->signal(SIGTERM);
  for (auto& a : agents) CHECK(a->wait(15s) == 0);
  central->signal(SIGTERM);
  REQUIRE(central->wait(15s) == 0);

  sonde::test::history_db db(state + "/history.db");
  CHECK(db.text("PRAGMA integrity_check") == "ok");
  for (const auto& n : names) {
    INFO("agent " << n << "; its log: " << slurp(d.path() + "/agent-" + n + ".err"));
    auto meta = json::parse(slurp(d.path() + "/agent-" + n + "/meta.json"));
    const auto acked = meta["acked"].get<std::uint64_t>();
    const auto next = meta["next"].get<std::uint64_t>();
    const auto dropped = meta["dropped"].get<std::uint64_t>();
    const auto qid = meta["queue_id"].get<std::string>();
    auto rows = db.agent_rows(n);
    REQUIRE(!rows.empty());
    // In time order the numbers only grow: stored in the order the agent produced them.
    std::uint64_t gaps = 0;
    bool increasing = true;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      CHECK(rows[i].task == n + "/system");
      if (i > 0 && rows[i].seq <= rows[i - 1].seq) increasing = false;
      if (i > 0 && rows[i].seq > rows[i - 1].seq + 1) gaps += rows[i].seq - rows[i - 1].seq - 1;
    }
    CHECK(increasing);
    // 1..N: nothing twice, nothing missing but what the agent itself dropped.
    CHECK(rows.front().seq == 1);
    CHECK(gaps <= dropped);
    CHECK(rows.size() + gaps == rows.back().seq);
    CHECK(db.text("SELECT count(DISTINCT seq) FROM result JOIN task ON result.task = task.id "
                  "WHERE task.name = '" +
                  n + "/system'") == std::to_string(rows.size()));
    // Everything the agent saw acknowledged is stored; nothing it never sent is.
    CHECK(rows.back().seq >= acked);
    CHECK(rows.back().seq < next);
    // The queue position was committed with the rows.
    CHECK(db.position(n, qid) == static_cast<std::int64_t>(rows.back().seq));
    // Three centrals in a row stored this agent's results (about 10 a second).
    CHECK(rows.size() >= 30);
  }
}
