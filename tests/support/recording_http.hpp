#pragma once
// A small HTTP/1.1 server on 127.0.0.1 in its own thread for the notifier tests: it records
// every request (method, target, headers, body) and answers with a configurable reply (status,
// headers, body), or stalls without answering, one connection at a time, closing after each
// reply. Every wait is bounded (poll in 50 ms steps; a stalled connection is held at most
// about 10 s, or until the client goes away).

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "http_servers.hpp"

namespace sonde::test {

/// One request as received.
struct recorded_request {
  std::string method, target;
  std::vector<std::pair<std::string, std::string>> headers;  ///< names as sent
  std::string body;
  /// The first header named `name` (case-insensitive), or "".
  std::string header(std::string_view name) const {
    for (const auto& [k, v] : headers) {
      if (k.size() != name.size()) continue;
      bool same = true;
      for (std::size_t i = 0; i < k.size() && same; ++i)
        same = std::tolower(static_cast<unsigned char>(k[i])) ==
               std::tolower(static_cast<unsigned char>(name[i]));
      if (same) return v;
    }
    return {};
  }
  bool has_header(std::string_view name) const {
    for (const auto& [k, v] : headers)
      if (k.size() == name.size() &&
          std::equal(k.begin(), k.end(), name.begin(), [](char a, char b) {
            return std::tolower(static_cast<unsigned char>(a)) ==
                   std::tolower(static_cast<unsigned char>(b));
          }))
        return true;
    return false;
  }
};

/// What the server answers.
struct canned_reply {
  canned_reply(int status_ = 200, std::string body_ = "ok",
               std::vector<std::pair<std::string, std::string>> headers_ = {}, bool stall_ = false,
               std::size_t repeat_ = 1)
      : status(status_),
        body(std::move(body_)),
        headers(std::move(headers_)),
        stall(stall_),
        repeat(repeat_) {}
  int status;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  bool stall;          ///< read the request, answer nothing, hold the connection
  std::size_t repeat;  ///< body repeated this many times (large bodies)
};

class recording_server {
 public:
  recording_server() {
    fd_ = listen_on_loopback(port_, "recording_server");
    thread_ = std::thread([this] { serve(); });
  }
  ~recording_server() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  recording_server(const recording_server&) = delete;
  recording_server& operator=(const recording_server&) = delete;

  std::string url(const std::string& path = "/") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  unsigned short port() const { return port_; }

  /// Answer every later request with `r` (after any queued replies).
  void reply_with(canned_reply r) {
    std::lock_guard<std::mutex> lock(mu_);
    default_ = std::move(r);
  }
  /// Answer the next requests with these, in order, then with the default.
  void queue(std::vector<canned_reply> rs) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& r : rs) queued_.push_back(std::move(r));
  }
  std::vector<recorded_request> requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  std::size_t count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_.size();
  }

 private:
  static std::string reason(int status) {
    switch (status) {
      case 200:
        return "OK";
      case 202:
        return "Accepted";
      case 301:
        return "Moved Permanently";
      case 400:
        return "Bad Request";
      case 404:
        return "Not Found";
      case 429:
        return "Too Many Requests";
      case 503:
        return "Service Unavailable";
      default:
        return "Status";
    }
  }

  bool wait_for(int fd, short events, int steps) {
    for (int i = 0; i < steps && !stop_; ++i) {
      pollfd p{fd, events, 0};
      if (::poll(&p, 1, 50) > 0) return true;
    }
    return false;
  }

  /// Read one request from `c`; false when the client sent nothing usable in time.
  bool read_request(int c, recorded_request& req) {
    std::string data;
    char buf[8192];
    std::size_t head_end = std::string::npos;
    while (head_end == std::string::npos) {
      if (!wait_for(c, POLLIN, 100)) return false;
      const ssize_t n = ::read(c, buf, sizeof buf);
      if (n <= 0) return false;
      data.append(buf, static_cast<std::size_t>(n));
      if (data.size() > (1u << 20)) return false;
      head_end = data.find("\r\n\r\n");
    }
    const std::string head = data.substr(0, head_end);
    std::string body = data.substr(head_end + 4);
    std::size_t pos = head.find("\r\n");
    const std::string line = head.substr(0, pos);
    const auto sp1 = line.find(' '), sp2 = line.rfind(' ');
    if (sp1 == std::string::npos || sp2 == sp1) return false;
    req.method = line.substr(0, sp1);
    req.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    while (pos != std::string::npos && pos < head.size()) {
      const std::size_t start = pos + 2;
      const std::size_t end = head.find("\r\n", start);
      const std::string h =
          head.substr(start, end == std::string::npos ? std::string::npos : end - start);
      const auto colon = h.find(':');
      if (colon != std::string::npos) {
        std::string v = h.substr(colon + 1);
        while (!v.empty() && v.front() == ' ') v.erase(0, 1);
        req.headers.emplace_back(h.substr(0, colon), v);
      }
      pos = end;
    }
    const std::string cl = req.header("Content-Length");
    const std::size_t want = cl.empty() ? 0 : std::stoul(cl);
    while (body.size() < want) {
      if (!wait_for(c, POLLIN, 100)) return false;
      const ssize_t n = ::read(c, buf, sizeof buf);
      if (n <= 0) return false;
      body.append(buf, static_cast<std::size_t>(n));
    }
    req.body = body.substr(0, want);
    return true;
  }

  void send_all(int c, const std::string& s) {
    std::size_t sent = 0;
    int idle = 0;
    while (sent < s.size() && !stop_ && idle < 200) {
      const ssize_t n = ::send(c, s.data() + sent, s.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        sent += static_cast<std::size_t>(n);
        idle = 0;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!wait_for(c, POLLOUT, 1)) ++idle;
      } else {
        return;  // the client went away
      }
    }
  }

  void serve() {
    while (!stop_) {
      if (!wait_for(fd_, POLLIN, 1)) continue;
      const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      recorded_request req;
      if (read_request(c, req)) {
        canned_reply r;
        {
          std::lock_guard<std::mutex> lock(mu_);
          requests_.push_back(req);
          if (!queued_.empty()) {
            r = std::move(queued_.front());
            queued_.pop_front();
          } else {
            r = default_;
          }
        }
        if (r.stall) {
          char buf[256];
          for (int i = 0; i < 200 && !stop_; ++i)  // until the client gives up, at most ~10 s
            if (wait_for(c, POLLIN, 1) && ::read(c, buf, sizeof buf) <= 0) break;
        } else {
          std::string body;
          for (std::size_t i = 0; i < r.repeat; ++i) body += r.body;
          std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " + reason(r.status) +
                            "\r\nContent-Length: " + std::to_string(body.size()) +
                            "\r\nConnection: close\r\n";
          for (const auto& [k, v] : r.headers) out += k + ": " + v + "\r\n";
          out += "\r\n" + body;
          send_all(c, out);
          ::shutdown(c, SHUT_WR);
          char buf[256];
          if (wait_for(c, POLLIN, 20)) (void)::read(c, buf, sizeof buf);
        }
      }
      ::close(c);
    }
  }

  int fd_ = -1;
  unsigned short port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<recorded_request> requests_;
  std::deque<canned_reply> queued_;
  canned_reply default_;
};

}  // namespace sonde::test
