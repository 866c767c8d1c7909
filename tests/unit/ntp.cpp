// ntp_probe against a real chronyd started by the test (never touching the clock: -x) and
// against in-test fault servers on loopback.
#include <sonde/ntp.hpp>

#include <unistd.h>

#include <catch2/catch.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <sonde/plugin.hpp>

#include "support/c_abi.hpp"
#include "support/files.hpp"
#include "support/process.hpp"
#include "support/support.hpp"

using namespace sonde;
using namespace std::chrono_literals;
using asio::ip::udp;
namespace ntpw = sonde::detail::ntp;

static_assert(probe<ntp_probe>);

namespace {

using bytes = std::vector<std::uint8_t>;
/// Given a request, the datagrams to send back (in order).
using responder = std::function<std::vector<bytes>(const bytes&)>;

/// A UDP server bound to `addr`:0 on its own thread, answering each request through `respond`
/// and recording the requests.
class fault_server {
 public:
  explicit fault_server(responder respond, const char* addr = "127.0.0.1")
      : sock_(io_, udp::endpoint(asio::ip::make_address(addr), 0)), respond_(std::move(respond)) {
    receive();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~fault_server() {
    io_.stop();
    thread_.join();
  }
  fault_server(const fault_server&) = delete;
  fault_server& operator=(const fault_server&) = delete;

  std::string target_text() const {
    auto ep = sock_.local_endpoint();
    auto a = ep.address();
    return (a.is_v6() ? "[" + a.to_string() + "]" : a.to_string()) + ":" +
           std::to_string(ep.port());
  }
  std::vector<bytes> requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }

 private:
  void receive() {
    sock_.async_receive_from(asio::buffer(buf_), from_, [this](asio::error_code ec, std::size_t n) {
      if (ec) return;
      bytes req(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(n));
      {
        std::lock_guard lock(mu_);
        requests_.push_back(req);
      }
      for (const auto& d : respond_(req)) {
        asio::error_code ignored;
        sock_.send_to(asio::buffer(d), from_, 0, ignored);
      }
      receive();
    });
  }

  asio::io_context io_;
  udp::socket sock_;
  responder respond_;
  std::array<std::uint8_t, 2048> buf_{};
  udp::endpoint from_;
  std::mutex mu_;
  std::vector<bytes> requests_;
  std::thread thread_;
};

/// A server reply to `req` with the server's clock `skew` ahead of ours; `edit` adjusts it.
bytes reply_to(const bytes& req, const std::function<void(ntpw::packet&)>& edit = {},
               std::chrono::milliseconds skew = 0ms) {
  ntpw::packet p;
  p.version = 4;
  p.mode = ntpw::mode_server;
  p.stratum = 2;
  p.poll = 6;
  p.precision = -20;
  p.root_delay = 0x00000800;       // 1/32 s
  p.root_dispersion = 0x00004000;  // 1/4 s
  p.reference_id = {192, 0, 2, 1};
  if (auto q = ntpw::decode(req)) p.origin_ts = q->transmit_ts;
  const auto now = std::chrono::system_clock::now() + skew;
  p.reference_ts = ntpw::to_ntp(now - 10s);
  p.receive_ts = ntpw::to_ntp(now);
  p.transmit_ts = ntpw::to_ntp(now);
  if (edit) edit(p);
  bytes out(ntpw::header_size);
  (void)ntpw::encode(p, out);
  return out;
}

using test::opts;

probe_result run_ntp(const std::string& target, std::chrono::milliseconds timeout = 2000ms,
                     const option_set& set = {}) {
  auto p = test::make<ntp_probe>(set);
  return test::run_probe(p, test::target_for<ntp_probe>(target), timeout);
}

/// chronyd serving its local clock at stratum 8 on 127.0.0.1:<free port>, never adjusting the
/// system clock (-x), with every file in a private temporary directory.
class chrony_server {
 public:
  chrony_server() : port_(test::free_port(SOCK_DGRAM)) {
    const auto& d = dir_.path();
    auto conf =
        dir_.write("chrony.conf", "port " + std::to_string(port_) +
                                      "\n"
                                      "bindaddress 127.0.0.1\n"
                                      "allow 127.0.0.1\n"
                                      "local stratum 8\n"
                                      "cmdport 0\n"
                                      "bindcmdaddress /\n"
                                      "pidfile " +
                                      d + "/chronyd.pid\n" + "driftfile " + d + "/chrony.drift\n");
    // -n: foreground; -x: never touch the clock; -l: log to the temp dir, not the test output.
    // As root, -u root keeps files in the temp dir writable (no drop to _chrony); otherwise -U
    // lets chronyd run unprivileged (nothing in this configuration needs privileges).
    std::vector<std::string> argv = {"chronyd", "-n", "-x", "-f", conf, "-l", d + "/chronyd.log"};
    if (geteuid() == 0) {
      argv.insert(argv.end(), {"-u", "root"});
    } else {
      argv.push_back("-U");
    }
    proc_ = std::make_unique<test::child_process>(argv);
  }
  unsigned short port() const { return port_; }
  std::string target_text() const { return "127.0.0.1:" + std::to_string(port_); }
  bool running() { return proc_->running(); }
  std::string log() const {
    std::ifstream in(dir_.path() + "/chronyd.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  test::temp_dir dir_;
  unsigned short port_;
  std::unique_ptr<test::child_process> proc_;
};

}  // namespace

TEST_CASE("ntp: options are validated", "[ntp]") {
  CHECK(make_probe<ntp_probe>({}));
  CHECK(make_probe<ntp_probe>(opts({{"version", std::int64_t{3}}})));
  auto bad = make_probe<ntp_probe>(opts({{"version", std::int64_t{5}}}));
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == probe_errc::invalid_option);
  CHECK(bad.error().key == "version");
  auto fam = make_probe<ntp_probe>(opts({{"family", std::string("ipx")}}));
  REQUIRE_FALSE(fam);
  CHECK(fam.error().key == "family");
  auto t = parse_target_for<ntp_probe>("pool.example.org");
  REQUIRE(t);
  CHECK(t->port == 123);
}

TEST_CASE("ntp: a real chronyd at local stratum 8 is ok", "[ntp][integration]") {
  if (!test::have_program("chronyd"))
    FAIL("chronyd not found: install the Debian package 'chrony' (apt-get install chrony)");
  chrony_server srv;
  std::optional<probe_result> last;
  const bool ready = test::wait_until(
      [&] {
        last = run_ntp(srv.target_text(), 200ms);
        return (*last && (*last)->why == reason::none) || !srv.running();
      },
      10s);
  INFO("chronyd log:\n" << srv.log());
  REQUIRE(srv.running());
  REQUIRE(ready);
  const auto& r = *last;
  REQUIRE(r);
  INFO(r->message);
  CHECK(r->why == reason::none);
  CHECK(r->get("stratum") == 8.0);
  REQUIRE(r->get("offset"));
  CHECK(std::abs(*r->get("offset")) < 1.0);
  REQUIRE(r->get("delay"));
  CHECK(*r->get("delay") >= 0.0);
  CHECK(*r->get("delay") < 1.0);
  CHECK(r->get("leap") == 0.0);
  CHECK(r->get("root_delay"));
  CHECK(r->get("root_dispersion"));
  CHECK(r->get("poll"));
  CHECK(*r->get("precision") > 0.0);
  CHECK(*r->get("precision") < 1.0);
  REQUIRE(r->latency);
  CHECK(*r->latency < 1s);
  CHECK_THAT(r->message, Catch::StartsWith("offset ") && Catch::Contains(", delay ") &&
                             Catch::Contains("stratum 8, refid 127.127.1.1"));

  // Version 3 works too.
  auto v3 = run_ntp(srv.target_text(), 1000ms, opts({{"version", std::int64_t{3}}}));
  REQUIRE(v3);
  CHECK(v3->why == reason::none);
}

TEST_CASE("ntp: a correct fault-server reply is ok, the offset follows the server clock",
          "[ntp][integration]") {
  fault_server srv([](const bytes& req) { return std::vector<bytes>{reply_to(req, {}, 2000ms)}; });
  auto r = run_ntp(srv.target_text());
  REQUIRE(r);
  INFO(r->message);
  CHECK(r->why == reason::none);
  CHECK(*r->get("offset") == Approx(2.0).margin(0.2));
  CHECK(*r->get("delay") >= -0.01);
  CHECK(r->get("stratum") == 2.0);
  CHECK(r->get("root_delay") == Approx(1.0 / 32));
  CHECK(r->get("root_dispersion") == Approx(0.25));
  CHECK(r->get("poll") == 64.0);
  CHECK(r->get("precision") == Approx(std::ldexp(1.0, -20)));
  CHECK_THAT(r->message,
             Catch::StartsWith("offset +2.") && Catch::EndsWith("stratum 2, refid 192.0.2.1"));
  // The request: 48 bytes, NTPv4 client, a non-zero transmit value and nothing else.
  auto reqs = srv.requests();
  REQUIRE(reqs.size() == 1);
  REQUIRE(reqs[0].size() == 48);
  CHECK(reqs[0][0] == 0x23);
  auto q = ntpw::decode(reqs[0]);
  REQUIRE(q);
  CHECK(q->transmit_ts != 0);
  CHECK(q->origin_ts == 0);
  CHECK(q->receive_ts == 0);
}

TEST_CASE("ntp: each request carries a different transmit value", "[ntp][integration]") {
  fault_server srv([](const bytes& req) { return std::vector<bytes>{reply_to(req)}; });
  for (int i = 0; i < 3; ++i) REQUIRE(run_ntp(srv.target_text()));
  auto reqs = srv.requests();
  REQUIRE(reqs.size() == 3);
  CHECK(ntpw::decode(reqs[0])->transmit_ts != ntpw::decode(reqs[1])->transmit_ts);
  CHECK(ntpw::decode(reqs[1])->transmit_ts != ntpw::decode(reqs[2])->transmit_ts);
}

TEST_CASE("ntp: version 3 requests say so", "[ntp][integration]") {
  fault_server srv([](const bytes& req) { return std::vector<bytes>{reply_to(req)}; });
  auto r = run_ntp(srv.target_text(), 2000ms, opts({{"version", std::int64_t{3}}}));
  REQUIRE(r);
  CHECK(r->why == reason::none);
  REQUIRE(srv.requests().size() == 1);
  CHECK(srv.requests()[0][0] == 0x1b);
}

TEST_CASE("ntp: a reply in the wrong mode is ignored until the deadline", "[ntp][integration]") {
  fault_server srv([](const bytes& req) {
    return std::vector<bytes>{reply_to(req, [](ntpw::packet& p) { p.mode = ntpw::mode_client; })};
  });
  auto start = clock::now();
  auto r = run_ntp(srv.target_text(), 300ms);
  auto took = clock::now() - start;
  REQUIRE(r);
  INFO(r->message);
  CHECK(r->why == reason::timeout);
  CHECK_THAT(r->message, Catch::Contains("ignored 1 datagram") && Catch::Contains("mode 3") &&
                             Catch::Contains("expected mode 4"));
  CHECK_FALSE(r->get("offset"));
  CHECK(took >= 290ms);
  CHECK(took < 2s);
}

TEST_CASE("ntp: a reply with the wrong origin timestamp is ignored", "[ntp][integration]") {
  fault_server srv([](const bytes& req) {
    return std::vector<bytes>{reply_to(req, [](ntpw::packet& p) { p.origin_ts ^= 1; })};
  });
  auto r = run_ntp(srv.target_text(), 300ms);
  REQUIRE(r);
  INFO(r->message);
  CHECK(r->why == reason::timeout);
  CHECK_THAT(r->message, Catch::Contains("origin timestamp") && Catch::Contains("spoofed"));
  CHECK_FALSE(r->get("stratum"));
}

TEST_CASE("ntp: a correct reply after wrong ones is accepted", "[ntp][integration]") {
  fault_server srv([](const bytes& req) {
    return std::vector<bytes>{
        reply_to(req, [](ntpw::packet& p) { p.origin_ts += 1; }),
        reply_to(req, [](ntpw::packet& p) { p.mode = ntpw::mode_broadcast; }),
        bytes(20, 0x24),
        reply_to(req, [](ntpw::packet& p) { p.stratum = 3; }),
    };
  });
  auto start = clock::now();
  auto r = run_ntp(srv.target_text(), 2000ms);
  REQUIRE(r);
  INFO(r->message);
  CHECK(r->why == reason::none);
  CHECK(r->get("stratum") == 3.0);
  CHECK(clock::now() - start < 1s);  // did not wait for the deadline
}

TEST_CASE("ntp: runs to one server reuse its socket, a late duplicate answers nothing",
          "[ntp][integration]") {
  // Every request is answered twice; the duplicate waits on the kept socket and is ignored by
  // the next run (its origin timestamp is the previous request's).
  std::atomic<int> n{0};
  fault_server srv([&](const bytes& req) {
    const auto stratum = static_cast<std::uint8_t>(2 + n++);
    auto reply = reply_to(req, [&](ntpw::packet& p) { p.stratum = stratum; });
    return std::vector<bytes>{reply, reply};
  });
  auto p = test::make<ntp_probe>(option_set{});
  asio::io_context io;
  auto rs = test::run_in_sequence(io, p, test::target_for<ntp_probe>(srv.target_text()), 3);
  REQUIRE(rs.size() == 3);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(rs[i]);
    INFO(rs[i]->message);
    CHECK(rs[i]->why == reason::none);
    CHECK(rs[i]->get("stratum") == 2.0 + i);
  }
  auto& kept = asio::use_service<detail::udp_session_cache>(io);
  CHECK(kept.reused() == 2);
  CHECK(kept.idle() == 1);
}

TEST_CASE("ntp: kiss-o'-death RATE is critical and names the code", "[ntp][integration]") {
  fault_server srv([](const bytes& req) {
    return std::vector<bytes>{reply_to(req, [](ntpw::packet& p) {
      p.stratum = 0;
      p.reference_id = {'R', 'A', 'T', 'E'};
      p.receive_ts = p.transmit_ts = 0;
    })};
  });
  auto r = run_ntp(srv.target_text());
  REQUIRE(r);
  INFO(r->message);
  CHECK(r->why == reason::mismatch);
  CHECK_THAT(r->message, Catch::StartsWith("kiss-o'-death RATE") && Catch::Contains("rate"));
  CHECK(r->get("stratum") == 0.0);
  CHECK_FALSE(r->get("offset"));
  CHECK(r->latency);
}

TEST_CASE("ntp: kiss-o'-death DENY", "[ntp][integration]") {
  fault_server srv([](const bytes& req) {
    return std::vector<bytes>{reply_to(req, [](ntpw::packet& p) {
      p.stratum = 0;
      p.reference_id = {'D', 'E', 'N', 'Y'};
    })};
  });
  auto r = run_ntp(srv.target_text());
  REQUIRE(r);
  CHECK(r->why == reason::mismatch);
  CHECK_THAT(r->message, Catch::Contains("DENY") && Catch::Contains("access denied"));
}

TEST_CASE("ntp: stratum 16 is critical: unsynchronised", "[ntp][integration]") {
  fault_server srv([](const bytes& req) {
    return std::vector<bytes>{reply_to(req, [](ntpw::packet& p) {
      p.stratum = 16;
      p.reference_id = {'I', 'N', 'I', 'T'};
    })};
  });
  auto r = run_ntp(srv.target_text());
  REQUIRE(r);
  INFO(r->message);
  CHECK(r->why == reason::mismatch);
  CHECK_THAT(r->message,
             Catch::Contains("unsynchronised (stratum 16)") && Catch::Contains("refid INIT"));
  CHECK(r->get("stratum") == 16.0);
  CHECK(r->get("offset"));  // still measured
}

TEST_CASE("ntp: leap indicator 3 is critical: unsynchronised", "[ntp][integration]") {
  fault_server srv([](const bytes& req) {
    return std::vector<bytes>{reply_to(req, [](ntpw::packet& p) { p.leap = 3; })};
  });
  auto r = run_ntp(srv.target_text());
  REQUIRE(r);
  INFO(r->message);
  CHECK(r->why == reason::mismatch);
  CHECK_THAT(r->message, Catch::Contains("leap indicator 3"));
  CHECK(r->get("leap") == 3.0);
}

TEST_CASE("ntp: leap indicator 1 (leap second pending) is healthy", "[ntp][integration]") {
  fault_server srv([](const bytes& req) {
    return std::vector<bytes>{reply_to(req, [](ntpw::packet& p) { p.leap = 1; })};
  });
  auto r = run_ntp(srv.target_text());
  REQUIRE(r);
  CHECK(r->why == reason::none);
  CHECK(r->get("leap") == 1.0);
}

TEST_CASE("ntp: a truncated reply is a protocol failure", "[ntp][integration]") {
  fault_server srv([](const bytes& req) {
    auto full = reply_to(req);
    full.resize(30);
    return std::vector<bytes>{full};
  });
  auto r = run_ntp(srv.target_text(), 300ms);
  REQUIRE(r);
  INFO(r->message);
  CHECK(r->why == reason::protocol);
  CHECK_THAT(r->message, Catch::Contains("malformed reply: 30 bytes") && Catch::Contains("48"));
}

TEST_CASE("ntp: a reply with a zero transmit timestamp is a protocol failure",
          "[ntp][integration]") {
  fault_server srv([](const bytes& req) {
    return std::vector<bytes>{reply_to(req, [](ntpw::packet& p) { p.transmit_ts = 0; })};
  });
  auto r = run_ntp(srv.target_text());
  REQUIRE(r);
  CHECK(r->why == reason::protocol);
  CHECK_THAT(r->message, Catch::Contains("transmit timestamp is zero"));
}

TEST_CASE("ntp: extension fields after the header are ignored", "[ntp][integration]") {
  fault_server srv([](const bytes& req) {
    auto full = reply_to(req);
    full.insert(full.end(), 68, 0x5a);
    return std::vector<bytes>{full};
  });
  auto r = run_ntp(srv.target_text());
  REQUIRE(r);
  CHECK(r->why == reason::none);
}

TEST_CASE("ntp: a closed port is refused", "[ntp][integration]") {
  auto start = clock::now();
  auto r = run_ntp("127.0.0.1:" + std::to_string(test::free_port(SOCK_DGRAM)));
  REQUIRE(r);
  CHECK(r->why == reason::refused);
  CHECK(r->message == "port unreachable (ICMP)");
  CHECK(clock::now() - start < 1s);
}

TEST_CASE("ntp: a silent server is a timeout", "[ntp][integration]") {
  fault_server srv([](const bytes&) { return std::vector<bytes>{}; });
  auto r = run_ntp(srv.target_text(), 200ms);
  REQUIRE(r);
  CHECK(r->why == reason::timeout);
  CHECK(r->message == "no reply by the deadline");
  CHECK_FALSE(r->latency);
}

TEST_CASE("ntp: IPv6 loopback", "[ntp][integration]") {
  fault_server srv([](const bytes& req) { return std::vector<bytes>{reply_to(req)}; }, "::1");
  auto r = run_ntp(srv.target_text());
  REQUIRE(r);
  INFO(r->message);
  CHECK(r->why == reason::none);
  CHECK(r->get("stratum") == 2.0);
  // family = ipv4 refuses an IPv6 literal.
  auto v4 = run_ntp(srv.target_text(), 500ms, opts({{"family", std::string("ipv4")}}));
  REQUIRE(v4);
  CHECK(v4->why == reason::resolve);
}

TEST_CASE("ntp: the plugin runs through the C ABI", "[ntp][plugins][integration]") {
  const sonde_plugin_descriptor* d = test::plugin_descriptor("ntp");
  REQUIRE(d->type_count == 1);
  const sonde_probe_type& t = d->types[0];
  CHECK(std::string(t.name) == "ntp");
  CHECK(std::string(t.target_form) == "host[:port]");

  fault_server srv([](const bytes& req) { return std::vector<bytes>{reply_to(req)}; });
  void* inst = nullptr;
  sonde_error e{};
  REQUIRE(t.create(srv.target_text().c_str(), nullptr, 0, &inst, &e) == 0);
  auto out = test::run_c(t, inst, 2s);
  t.destroy(inst);
  REQUIRE(out.done);
  CHECK(out.reason == 0);
  CHECK_THAT(out.message, Catch::Contains("refid 192.0.2.1"));

  sonde_option bad{};
  bad.key = "version";
  bad.value.type = SONDE_VALUE_INT;
  bad.value.integer = 2;
  CHECK(t.create(srv.target_text().c_str(), &bad, 1, &inst, &e) != 0);
  CHECK(std::string(e.key) == "version");
}
