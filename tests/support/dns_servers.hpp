#pragma once
// DNS servers for tests: a real unbound on loopback serving the zone "example.test." (every
// record type dns_probe supports, a name whose reply needs TCP, everything else REFUSED), and a
// scriptable in-test UDP "fault server" that answers queries with whatever datagrams a test
// hands it (malformed, wrong id, wrong question, nothing...).

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/ip/udp.hpp>

#include <sonde/detail/dns_message.hpp>

#include "files.hpp"
#include "process.hpp"

namespace sonde::test {

/// Number of TXT records of "big.example.test.": about 2.9 KB, more than any UDP size the
/// probe advertises by default (1232), so its UDP reply is truncated and TCP is needed.
inline constexpr int big_txt_records = 40;

/// unbound in the foreground (`unbound -d -c conf`) on 127.0.0.1 and ::1, a free port, with a
/// config written to a temporary directory. No remote control, no chroot, no user switch, no
/// queries leave the machine: "." is a refuse zone and only loopback clients are allowed.
/// Throws std::runtime_error naming the Debian package when unbound is not installed, and
/// with unbound's log when it does not come up.
class unbound_server {
 public:
  unbound_server() {
    if (!have_program("unbound"))
      throw std::runtime_error(
          "unbound is not installed: install the Debian package 'unbound' (apt-get install "
          "unbound) to run the DNS integration tests");
    for (int attempt = 0; attempt < 3; ++attempt) {
      port_ = free_port(SOCK_STREAM);
      const std::string conf = dir_.write("unbound.conf", config());
      proc_ =
          std::make_unique<child_process>(std::vector<std::string>{"unbound", "-d", "-c", conf});
      bool up = wait_until([&] { return !proc_->running() || tcp_port_open(port_); },
                           std::chrono::milliseconds(10000));
      if (up && proc_->running()) return;
      proc_->stop();  // most likely the port was taken in between: try another one
    }
    throw std::runtime_error("unbound did not start; its log:\n" + log());
  }
  unbound_server(const unbound_server&) = delete;
  unbound_server& operator=(const unbound_server&) = delete;
  ~unbound_server() {
    if (proc_) proc_->stop();
  }

  unsigned short port() const { return port_; }
  std::string v4() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string v6() const { return "[::1]:" + std::to_string(port_); }
  std::string log() const {
    std::ifstream in(dir_.path() + "/unbound.log");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  std::string config() const {
    std::string c = R"(server:
  interface: 127.0.0.1
  interface: ::1
  port: )" + std::to_string(port_) +
                    R"(
  do-ip4: yes
  do-ip6: yes
  do-udp: yes
  do-tcp: yes
  num-threads: 1
  so-reuseport: no
  chroot: ""
  username: ""
  directory: ")" + dir_.path() +
                    R"("
  pidfile: ")" + dir_.path() +
                    R"(/unbound.pid"
  logfile: ")" + dir_.path() +
                    R"(/unbound.log"
  use-syslog: no
  verbosity: 1
  do-not-query-localhost: yes
  module-config: "iterator"
  access-control: 0.0.0.0/0 refuse
  access-control: ::/0 refuse
  access-control: 127.0.0.0/8 allow
  access-control: ::1/128 allow
  local-zone: "." refuse
  local-zone: "example.test." static
  local-data: 'example.test. 300 IN SOA ns.example.test. hostmaster.example.test. 2024010101 3600 600 86400 300'
  local-data: 'example.test. 300 IN NS ns.example.test.'
  local-data: 'example.test. 300 IN MX 10 mail.example.test.'
  local-data: 'example.test. 300 IN CAA 0 issue "ca.example.net"'
  local-data: 'www.example.test. 300 IN A 127.0.0.1'
  local-data: 'www.example.test. 300 IN A 127.0.0.2'
  local-data: 'www.example.test. 300 IN AAAA ::1'
  local-data: 'alias.example.test. 300 IN CNAME www.example.test.'
  local-data: 'txt.example.test. 300 IN TXT "hello world" "second"'
  local-data: 'ptr.example.test. 300 IN PTR www.example.test.'
  local-data: '_sip._udp.example.test. 300 IN SRV 10 20 5060 sip.example.test.'
)";
    for (int i = 1; i <= big_txt_records; ++i)
      c += "  local-data: 'big.example.test. 300 IN TXT \"record " + std::to_string(i) +
           " abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnop\"'\n";
    c += "remote-control:\n  control-enable: no\n";
    return c;
  }

  temp_dir dir_;
  unsigned short port_ = 0;
  std::unique_ptr<child_process> proc_;
};

/// A UDP server on 127.0.0.1:0 with its own thread. For each query datagram it sends the
/// datagrams `script(query)` returns, in order (none: silence). Records the queries.
class dns_fault_server {
 public:
  using script =
      std::function<std::vector<std::vector<std::uint8_t>>(const std::vector<std::uint8_t>& query)>;

  explicit dns_fault_server(script s)
      : sock_(io_, asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.1"), 0)),
        script_(std::move(s)) {
    receive();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~dns_fault_server() {
    io_.stop();
    thread_.join();
  }
  dns_fault_server(const dns_fault_server&) = delete;
  dns_fault_server& operator=(const dns_fault_server&) = delete;

  std::string target_text() const {
    return "127.0.0.1:" + std::to_string(sock_.local_endpoint().port());
  }
  std::size_t queries() {
    std::lock_guard lock(mu_);
    return queries_;
  }
  /// The distinct source ports the queries came from.
  std::set<unsigned short> source_ports() {
    std::lock_guard lock(mu_);
    return ports_;
  }

 private:
  void receive() {
    sock_.async_receive_from(asio::buffer(buf_), from_, [this](asio::error_code ec, std::size_t n) {
      if (ec) return;
      {
        std::lock_guard lock(mu_);
        ++queries_;
        ports_.insert(from_.port());
      }
      std::vector<std::uint8_t> q(buf_.begin(), buf_.begin() + static_cast<long>(n));
      for (const auto& d : script_(q)) {
        asio::error_code ignored;
        sock_.send_to(asio::buffer(d), from_, 0, ignored);
      }
      receive();
    });
  }

  asio::io_context io_;
  asio::ip::udp::socket sock_;
  script script_;
  std::array<std::uint8_t, 65536> buf_{};
  asio::ip::udp::endpoint from_;
  std::mutex mu_;
  std::size_t queries_ = 0;
  std::set<unsigned short> ports_;
  std::thread thread_;
};

/// A reply to `query` (its id and question unless overridden) with the given raw answer
/// records. `id_xor` changes the id; `qname` replaces the question name.
inline std::vector<std::uint8_t> dns_reply(const std::vector<std::uint8_t>& query,
                                           const std::vector<std::vector<std::uint8_t>>& rrs,
                                           std::uint16_t id_xor = 0, std::string qname = "",
                                           std::uint8_t rcode = 0) {
  namespace dns = sonde::detail::dns;
  auto m = dns::decode(query);
  if (!m || m->questions.empty()) throw std::runtime_error("fault server: bad query");
  dns::query_spec spec;
  spec.id = static_cast<std::uint16_t>(m->hdr.id ^ id_xor);
  spec.name = qname.empty() ? m->questions[0].name : qname;
  spec.qtype = m->questions[0].qtype;
  std::vector<std::uint8_t> out(512);
  auto n = dns::encode_query(out, spec);
  if (!n) throw std::runtime_error("fault server: cannot encode");
  out.resize(*n);
  out[2] = 0x81;  // QR, RD
  out[3] = static_cast<std::uint8_t>(0x80 | rcode);
  out[7] = static_cast<std::uint8_t>(rrs.size());
  for (const auto& rr : rrs) out.insert(out.end(), rr.begin(), rr.end());
  return out;
}

/// An A record for the question name (a pointer to offset 12) with address a.b.c.d.
inline std::vector<std::uint8_t> a_record(std::uint8_t a, std::uint8_t b, std::uint8_t c,
                                          std::uint8_t d) {
  return {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x01, 0x2c, 0, 4, a, b, c, d};
}

}  // namespace sonde::test
