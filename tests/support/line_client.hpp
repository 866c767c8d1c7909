#pragma once
// A blocking client for the control protocol's JSON lines, with receive timeouts.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace sonde::test {

using json = nlohmann::json;

class line_client {
 public:
  explicit line_client(unsigned short port, int rcvbuf = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (rcvbuf > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      throw std::runtime_error("connect failed");
    set_timeout(std::chrono::milliseconds(5000));
  }
  ~line_client() {
    if (fd_ >= 0) ::close(fd_);
  }
  line_client(const line_client&) = delete;
  line_client& operator=(const line_client&) = delete;

  void set_timeout(std::chrono::milliseconds t) {
    timeval tv{static_cast<time_t>(t.count() / 1000),
               static_cast<suseconds_t>(t.count() % 1000 * 1000)};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  void send_raw(std::string_view s) {
    while (!s.empty()) {
      auto n = ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
      if (n <= 0) throw std::runtime_error("send failed");
      s.remove_prefix(static_cast<std::size_t>(n));
    }
  }
  void send(const json& j) { send_raw(j.dump() + "\n"); }
  // One line, or nullopt on timeout or when the peer closed (then `eof()` is true).
  std::optional<std::string> read_line() {
    while (true) {
      auto nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string l = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return l;
      }
      char tmp[65536];
      auto n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n == 0) eof_ = true;
      if (n <= 0) return std::nullopt;
      buf_.append(tmp, static_cast<std::size_t>(n));
    }
  }
  // The next line as JSON; nullopt on timeout or end of stream.
  std::optional<json> json_line() {
    auto l = read_line();
    if (!l) return std::nullopt;
    return json::parse(*l);
  }
  // The next reply (a line with "ok"), skipping streamed results and notices.
  json reply() {
    for (int i = 0; i < 100000; ++i) {
      auto l = read_line();
      if (!l) throw std::runtime_error(eof_ ? "connection closed" : "no reply within the timeout");
      auto j = json::parse(*l);
      if (j.contains("ok")) return j;
    }
    throw std::runtime_error("no reply");
  }
  json call(const json& req) {
    send(req);
    return reply();
  }
  bool eof() const { return eof_; }
  // Close with a reset, like a client that crashes.
  void abort() {
    linger l{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  std::string buf_;
  bool eof_ = false;
};

}  // namespace sonde::test
