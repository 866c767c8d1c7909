#pragma once
// A notification receiver for the alarm tests: a small threaded HTTP/1.1 server on loopback
// that records the requests it accepted (answered 2xx) and can be switched, while it runs, to
// refuse connections (listening socket closed), stall (accept and read, never answer; those
// requests are closed unanswered and never count), or answer with an error status. Real
// receivers do not misbehave on cue; this one exists for those faults.

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace sonde::test {

class receiver {
 public:
  enum class mode { up, refuse, stall, error };
  struct request {
    std::string method, path, headers, body;
    nlohmann::json json() const { return nlohmann::json::parse(body, nullptr, false); }
  };

  receiver() {
    open_listener(0);
    thread_ = std::thread([this] { loop(); });
  }
  ~receiver() {
    stop_ = true;
    thread_.join();
    if (listen_fd_ >= 0) ::close(listen_fd_);
    for (auto& c : conns_) ::close(c.fd);
  }
  receiver(const receiver&) = delete;
  receiver& operator=(const receiver&) = delete;

  unsigned short port() const { return port_; }
  std::string url(const std::string& path = "/hook") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  void set_mode(mode m, int status = 503) {
    std::lock_guard lk(mu_);
    mode_ = m;
    status_ = status;
  }
  std::vector<request> received() const {
    std::lock_guard lk(mu_);
    return got_;
  }
  std::size_t count() const {
    std::lock_guard lk(mu_);
    return got_.size();
  }
  /// Connections that reached the server but were not answered 2xx (refused ones never do).
  std::size_t unanswered() const { return unanswered_; }
  /// Every alarm event received, in order: webhook bodies are one event or {"events": [...]}.
  std::vector<nlohmann::json> events() const {
    std::vector<nlohmann::json> out;
    for (const auto& r : received()) {
      auto j = r.json();
      if (j.is_object() && j.contains("events"))
        for (auto& e : j["events"]) out.push_back(e);
      else if (j.is_object())
        out.push_back(j);
    }
    return out;
  }

 private:
  struct conn {
    int fd;
    std::string in;
    bool answered = false;
  };

  void open_listener(unsigned short port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(listen_fd_, 512) != 0)
      throw std::runtime_error("receiver: cannot listen on loopback");
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }

  // A whole request in `in`: headers and Content-Length bytes of body.
  static bool complete(const std::string& in, request& r) {
    auto end = in.find("\r\n\r\n");
    if (end == std::string::npos) return false;
    r.headers = in.substr(0, end);
    std::size_t len = 0;
    auto lower = r.headers;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (auto p = lower.find("content-length:"); p != std::string::npos)
      len = std::stoul(lower.substr(p + 15));
    if (in.size() < end + 4 + len) return false;
    r.body = in.substr(end + 4, len);
    auto sp = r.headers.find(' ');
    r.method = r.headers.substr(0, sp);
    r.path = r.headers.substr(sp + 1, r.headers.find(' ', sp + 1) - sp - 1);
    return true;
  }

  void loop() {
    while (!stop_) {
      mode m;
      int status;
      {
        std::lock_guard lk(mu_);
        m = mode_;
        status = status_;
      }
      if (m == mode::refuse && listen_fd_ >= 0) {
        ::close(listen_fd_);
        listen_fd_ = -1;
      } else if (m != mode::refuse && listen_fd_ < 0) {
        open_listener(port_);
      }
      if (stalled_ && m != mode::stall) {  // a stall is over: its requests end unanswered
        for (auto& c : conns_)
          if (!c.answered) {
            ::close(c.fd);
            c.fd = -1;
            ++unanswered_;
          }
        std::erase_if(conns_, [](const conn& c) { return c.fd < 0; });
      }
      stalled_ = m == mode::stall;
      std::vector<pollfd> fds;
      if (listen_fd_ >= 0) fds.push_back({listen_fd_, POLLIN, 0});
      for (auto& c : conns_) fds.push_back({c.fd, POLLIN, 0});
      ::poll(fds.data(), fds.size(), 20);
      if (listen_fd_ >= 0)
        while (true) {
          int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
          if (fd < 0) break;
          conns_.push_back({fd, {}});
        }
      for (auto it = conns_.begin(); it != conns_.end();) {
        char buf[65536];
        auto n = ::recv(it->fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN)) {
          if (!it->answered) ++unanswered_;
          ::close(it->fd);
          it = conns_.erase(it);
          continue;
        }
        if (n > 0) it->in.append(buf, static_cast<std::size_t>(n));
        request r;
        if (!it->answered && m != mode::stall && complete(it->in, r)) {
          std::string reply;
          if (m == mode::up) {
            {
              std::lock_guard lk(mu_);
              got_.push_back(r);
            }
            reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
          } else {
            reply = "HTTP/1.1 " + std::to_string(status) +
                    " Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy";
            ++unanswered_;
          }
          (void)::send(it->fd, reply.data(), reply.size(), MSG_NOSIGNAL);
          it->answered = true;
          ::shutdown(it->fd, SHUT_WR);
        }
        ++it;
      }
    }
  }

  mutable std::mutex mu_;
  mode mode_ = mode::up;
  int status_ = 503;
  std::vector<request> got_;
  std::vector<conn> conns_;
  int listen_fd_ = -1;
  unsigned short port_ = 0;
  bool stalled_ = false;
  std::atomic<std::size_t> unanswered_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

/// A TCP port the test opens and closes by hand (a service going down and up).
class switch_port {
 public:
  switch_port() {
    open();
    close();
  }
  ~switch_port() { close(); }
  unsigned short port() const { return port_; }
  void open() {
    if (fd_ >= 0) return;
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port_);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 4096) != 0)
      throw std::runtime_error("switch_port: cannot listen");
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    // Accepted connections are drained by the kernel backlog; close them as they come.
    drain_ = std::thread([fd = fd_] {
      while (true) {
        int c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) return;
        ::close(c);
      }
    });
  }
  void close() {
    if (fd_ < 0) return;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    fd_ = -1;
    if (drain_.joinable()) drain_.join();
  }

 private:
  int fd_ = -1;
  unsigned short port_ = 0;
  std::thread drain_;
};

}  // namespace sonde::test
