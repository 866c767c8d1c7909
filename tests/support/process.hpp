#pragma once
// Real servers for integration tests: spawn a daemon in the foreground (nginx, unbound,
// chronyd...) with a config written at test time, wait until it answers, and stop it (SIGTERM,
// then SIGKILL) when the fixture goes away. Only loopback addresses are ever configured.

#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/udp.hpp>

extern char** environ;

namespace sonde::test {

/// True if `program` is found on PATH (or is an executable path).
inline bool have_program(const std::string& program) {
  if (program.find('/') != std::string::npos) return access(program.c_str(), X_OK) == 0;
  std::string path = getenv("PATH") ? getenv("PATH") : "/usr/sbin:/usr/bin:/sbin:/bin";
  path += ":/usr/sbin:/sbin";
  std::size_t pos = 0;
  while (pos <= path.size()) {
    auto colon = path.find(':', pos);
    auto dir = path.substr(pos, colon - pos);
    if (!dir.empty() && access((dir + "/" + program).c_str(), X_OK) == 0) return true;
    if (colon == std::string::npos) break;
    pos = colon + 1;
  }
  return false;
}

/// A child process, stopped and reaped on destruction.
class child_process {
 public:
  /// Start `argv` (argv[0] is looked up on PATH, plus /usr/sbin and /sbin).
  explicit child_process(std::vector<std::string> argv) {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    std::string path = std::string(getenv("PATH") ? getenv("PATH") : "") + ":/usr/sbin:/sbin";
    setenv("PATH", path.c_str(), 1);
    if (posix_spawnp(&pid_, args[0], nullptr, nullptr, args.data(), environ) != 0)
      throw std::runtime_error("cannot start " + argv[0]);
  }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process() { stop(); }

  /// SIGTERM, wait up to 3 s, then SIGKILL; reaps the child. Idempotent.
  void stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    for (int i = 0; i < 300; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  /// True while the child has not exited.
  bool running() {
    if (pid_ <= 0) return false;
    if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    return true;
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

/// A free loopback port for `SOCK_STREAM` or `SOCK_DGRAM` (bound and released; tiny race).
inline unsigned short free_port(int type = SOCK_STREAM) {
  asio::io_context io;
  if (type == SOCK_DGRAM) {
    asio::ip::udp::socket s(io, {asio::ip::make_address("127.0.0.1"), 0});
    return s.local_endpoint().port();
  }
  asio::ip::tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();
}

/// Poll `ready` every 20 ms until it returns true or `limit` passes.
inline bool wait_until(const std::function<bool()>& ready,
                       std::chrono::milliseconds limit = std::chrono::milliseconds(10000)) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (ready()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

/// True once something accepts TCP connections on 127.0.0.1:`port`.
inline bool tcp_port_open(unsigned short port) {
  asio::io_context io;
  asio::ip::tcp::socket s(io);
  asio::error_code ec;
  s.connect({asio::ip::make_address("127.0.0.1"), port}, ec);
  return !ec;
}

}  // namespace sonde::test
