#pragma once
// `sonde run` as a child process for end-to-end tests: a task file in a temporary directory,
// its state in dir/state, a free loopback control port, and one-request helpers.
#include <signal.h>

#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/files.hpp"
#include "support/line_client.hpp"
#include "support/process.hpp"

namespace sonde::test {

class engine_run {
 public:
  /// Writes `toml` as dir/tasks.toml and starts the engine (extra arguments appended).
  engine_run(temp_dir& dir, const std::string& toml, std::vector<std::string> extra = {})
      : dir_(dir), extra_(std::move(extra)) {
    file_ = dir.write("tasks.toml", toml);
    start();
  }
  ~engine_run() {
    if (proc_) proc_->stop();
  }
  void start() {
    using namespace std::chrono_literals;
    ctl_ = free_port();
    std::vector<std::string> argv{std::string(SONDE_TEST_BIN_DIR) + "/sonde",
                                  "run",
                                  file_,
                                  "--quiet",
                                  "--control",
                                  "127.0.0.1:" + std::to_string(ctl_),
                                  "--state-dir",
                                  state_dir()};
    argv.insert(argv.end(), extra_.begin(), extra_.end());
    proc_ = std::make_unique<child_process>(argv);
    REQUIRE(wait_until([&] { return tcp_port_open(ctl_); }, 10s));
  }
  /// SIGTERM and wait for the exit.
  void stop() {
    if (proc_) proc_->stop();
    proc_.reset();
  }
  void kill9() {
    using namespace std::chrono_literals;
    ::kill(proc_->pid(), SIGKILL);
    REQUIRE(wait_until([&] { return !proc_->running(); }, 5s));
    proc_.reset();
  }
  std::string state_dir() const { return dir_.path() + "/state"; }
  unsigned short port() const { return ctl_; }
  nlohmann::json cmd(nlohmann::json req) {
    line_client c(ctl_);
    c.send(req);
    auto r = c.json_line();
    REQUIRE(r);
    return *r;
  }

 private:
  temp_dir& dir_;
  std::vector<std::string> extra_;
  std::string file_;
  unsigned short ctl_ = 0;
  std::unique_ptr<child_process> proc_;
};

}  // namespace sonde::test
