#pragma once
// HTTP test servers: a real nginx (plain HTTP, HTTPS with the test certificates, HTTP/2,
// redirects, basic auth, a rate-limited path, a large file) configured at test time in a
// private directory, and small in-test TCP servers for what nginx will not do (garbage instead
// of HTTP, a stall mid-header, a close right after accept, a canned response with any body or
// headers). Loopback only.

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "process.hpp"
#include "tls_certs.hpp"

namespace sonde::test {

/// nginx on 127.0.0.1 with one server per scenario. Throws (failing the test) with the package
/// to install when nginx is missing, or with nginx's error log when it does not start.
class nginx_server {
 public:
  unsigned short http_port = 0;     ///< plain HTTP: /, /redirect, /auth/, /slow/, /big.bin
  unsigned short valid_port = 0;    ///< HTTPS, certificate signed by the test CA
  unsigned short expired_port = 0;  ///< HTTPS, expired certificate signed by the test CA
  unsigned short self_port = 0;     ///< HTTPS, self-signed certificate
  unsigned short h2_port = 0;       ///< HTTPS + HTTP/2 (ALPN), valid certificate
  std::size_t big_size = 3u << 20;  ///< bytes of /big.bin
  std::string dir;

  nginx_server() {
    if (!have_program("nginx"))
      throw std::runtime_error("nginx not found: install the Debian package 'nginx'");
    const auto& certs = tls_certs();
    namespace fs = std::filesystem;
    std::string tmpl = (fs::temp_directory_path() / "sonde-nginx-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    dir = tmpl;
    // Workers run as an unprivileged user when nginx starts as root: they must read the files.
    fs::permissions(dir, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                             fs::perms::others_read | fs::perms::others_exec);
    fs::create_directories(dir + "/www/auth");
    std::ofstream(dir + "/www/index.html")
        << "<html><body>sonde test page: hello 42</body></html>\n";
    std::ofstream(dir + "/www/auth/index.html") << "secret area\n";
    {
      std::ofstream big(dir + "/www/big.bin", std::ios::binary);
      std::string chunk(64 * 1024, 'x');
      for (std::size_t i = 0; i < big_size / chunk.size(); ++i) big << chunk;
    }
    std::ofstream(dir + "/htpasswd") << "alice:{PLAIN}wonderland\n";
    // free_port() can race with other tests running in parallel (the port is taken again
    // before nginx binds it): start again on fresh ports when that happens.
    for (int attempt = 1;; ++attempt) {
      std::string why;
      if (start(certs, why)) break;
      if (attempt == 3 || why.find("Address already in use") == std::string::npos)
        throw std::runtime_error("nginx did not start: " + why);
    }
  }

 private:
  bool start(const test_certs& certs, std::string& why) {
    http_port = free_port();
    valid_port = free_port();
    expired_port = free_port();
    self_port = free_port();
    h2_port = free_port();
    auto tls_server = [&](unsigned short port, const cert_files& c, const std::string& extra) {
      return "  server {\n    listen 127.0.0.1:" + std::to_string(port) + " ssl" + extra +
             ";\n    ssl_certificate " + c.cert + ";\n    ssl_certificate_key " + c.key +
             ";\n    root " + dir + "/www;\n  }\n";
    };
    std::ofstream conf(dir + "/nginx.conf");
    conf << "worker_processes 1;\n"
         << "error_log " << dir << "/error.log warn;\n"
         << "pid " << dir << "/nginx.pid;\n"
         << "events { worker_connections 256; }\n"
         << "http {\n"
         << "  access_log off;\n"
         << "  default_type text/html;\n"
         << "  client_body_temp_path " << dir << "/body;\n"
         << "  proxy_temp_path " << dir << "/proxy;\n"
         << "  fastcgi_temp_path " << dir << "/fastcgi;\n"
         << "  uwsgi_temp_path " << dir << "/uwsgi;\n"
         << "  scgi_temp_path " << dir << "/scgi;\n"
         << "  server {\n"
         << "    listen 127.0.0.1:" << http_port << ";\n"
         << "    root " << dir << "/www;\n"
         << "    location = /redirect { return 302 /; }\n"
         << "    location = /loop { return 302 /loop; }\n"
         << "    location = /teapot { return 418 \"short and stout\"; }\n"
         << "    location /auth/ { auth_basic \"test\"; auth_basic_user_file " << dir
         << "/htpasswd; }\n"
         << "    location /slow/ { alias " << dir << "/www/; limit_rate 20k; }\n"
         << "  }\n"
         << tls_server(valid_port, certs.valid, "") << tls_server(expired_port, certs.expired, "")
         << tls_server(self_port, certs.self_signed, "")
         << tls_server(h2_port, certs.valid, " http2") << "}\n";
    conf.close();
    // Certificates live in a 0700 directory; the master reads them as root, that is enough.
    proc_ = std::make_unique<child_process>(std::vector<std::string>{
        "nginx", "-p", dir, "-c", dir + "/nginx.conf", "-g", "daemon off;"});
    bool up = wait_until([&] {
      return tcp_port_open(http_port) && tcp_port_open(valid_port) && tcp_port_open(expired_port) &&
             tcp_port_open(self_port) && tcp_port_open(h2_port);
    });
    if (up) return true;
    proc_.reset();
    std::ifstream log(dir + "/error.log");
    why.assign(std::istreambuf_iterator<char>(log), std::istreambuf_iterator<char>());
    return false;
  }

 public:
  ~nginx_server() {
    proc_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  nginx_server(const nginx_server&) = delete;
  nginx_server& operator=(const nginx_server&) = delete;

  std::string http(const std::string& path = "/") const {
    return "http://127.0.0.1:" + std::to_string(http_port) + path;
  }
  static std::string https(unsigned short port, const std::string& path = "/") {
    return "https://127.0.0.1:" + std::to_string(port) + path;
  }

 private:
  std::unique_ptr<child_process> proc_;
};

/// One nginx for the whole test run (started on first use).
inline nginx_server& shared_nginx() {
  static nginx_server s;
  return s;
}

/// What a fault_server does with each connection.
enum class fault {
  garbage,        ///< read the request, answer bytes that are not HTTP, close
  stall_headers,  ///< read the request, send half a status line and headers, then hang
  close_at_once,  ///< close right after accepting
};

/// A listening TCP socket on 127.0.0.1 with a free port (stored in `port`); throws naming
/// `who` when it cannot listen.
inline int listen_on_loopback(unsigned short& port, const char* who) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(fd, 16) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error(std::string(who) + ": cannot listen on 127.0.0.1");
  }
  port = ntohs(a.sin_port);
  return fd;
}

/// A blocking TCP server on 127.0.0.1:<port> in its own thread, for faults. Every wait is
/// bounded (poll with 50 ms steps; a connection is held at most 10 s).
class fault_server {
 public:
  explicit fault_server(fault mode) : mode_(mode) {
    fd_ = listen_on_loopback(port_, "fault_server");
    thread_ = std::thread([this] { serve(); });
  }
  ~fault_server() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  fault_server(const fault_server&) = delete;
  fault_server& operator=(const fault_server&) = delete;

  unsigned short port() const { return port_; }
  std::string url(const std::string& path = "/") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }

 private:
  bool wait_readable(int fd, int step_limit) {
    for (int i = 0; i < step_limit && !stop_; ++i) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) > 0) return true;
    }
    return false;
  }
  void serve() {
    while (!stop_) {
      if (!wait_readable(fd_, 1)) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      if (mode_ != fault::close_at_once) {
        char buf[4096];
        if (wait_readable(c, 40)) (void)::read(c, buf, sizeof buf);
        const char* text = mode_ == fault::garbage
                               ? "SSH-2.0-OpenSSH_9.2 this is not HTTP at all\r\n\r\n"
                               : "HTTP/1.1 200 OK\r\nContent-Type: text/pl";
        (void)::send(c, text, std::char_traits<char>::length(text), MSG_NOSIGNAL);
        if (mode_ == fault::stall_headers) {
          for (int i = 0; i < 200 && !stop_; ++i) {  // hold up to 10 s or until the peer goes
            if (wait_readable(c, 1) && ::read(c, buf, sizeof buf) <= 0) break;
          }
        }
      }
      ::close(c);
    }
  }

  fault mode_;
  int fd_ = -1;
  unsigned short port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

/// A blocking HTTP/1.x server on 127.0.0.1:<port> in its own thread that answers every request
/// with the same raw bytes (status line, headers and body exactly as given), then closes: for
/// bodies and headers nginx cannot be told to send (a 10 MB header line, 3,000 headers). Every
/// wait is bounded (poll in 50 ms steps; a connection is held at most about 10 s).
class canned_server {
 public:
  explicit canned_server(std::string response) : response_(std::move(response)) {
    fd_ = listen_on_loopback(port_, "canned_server");
    thread_ = std::thread([this] { serve(); });
  }
  /// An HTTP/1.1 200 response with `body` and a Content-Length.
  static std::string ok(const std::string& body, const std::string& extra_headers = "") {
    return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n" + extra_headers + "Connection: close\r\n\r\n" +
           body;
  }
  ~canned_server() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  canned_server(const canned_server&) = delete;
  canned_server& operator=(const canned_server&) = delete;

  std::string url(const std::string& path = "/") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }

 private:
  bool wait_for(int fd, short events, int steps) {
    for (int i = 0; i < steps && !stop_; ++i) {
      pollfd p{fd, events, 0};
      if (::poll(&p, 1, 50) > 0) return true;
    }
    return false;
  }
  void serve() {
    while (!stop_) {
      if (!wait_for(fd_, POLLIN, 1)) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (c < 0) continue;
      char buf[4096];
      if (wait_for(c, POLLIN, 40)) (void)::read(c, buf, sizeof buf);
      std::size_t sent = 0;
      int idle = 0;
      while (sent < response_.size() && !stop_ && idle < 200) {
        ssize_t n = ::send(c, response_.data() + sent, response_.size() - sent, MSG_NOSIGNAL);
        if (n > 0) {
          sent += static_cast<std::size_t>(n);
          idle = 0;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          if (!wait_for(c, POLLOUT, 1)) ++idle;
        } else {
          break;  // the client went away (it stopped the transfer)
        }
      }
      ::shutdown(c, SHUT_WR);
      if (wait_for(c, POLLIN, 20)) (void)::read(c, buf, sizeof buf);  // let the client close first
      ::close(c);
    }
  }

  std::string response_;
  int fd_ = -1;
  unsigned short port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace sonde::test
