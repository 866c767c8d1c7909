// udp_probe against real loopback sockets: an in-test UDP server on its own thread.
#include <sonde/udp.hpp>

#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <sonde/plugin.hpp>
#include <sonde/plugin_export.hpp>

#include "support/c_abi.hpp"
#include "support/support.hpp"

using namespace sonde;
using namespace std::chrono_literals;
using asio::ip::udp;

static_assert(probe<udp_probe>);

namespace {

/// A UDP server bound to `addr`:0 with its own io_context and thread. It records every
/// datagram; unless silent it answers each with `prefix + datagram`.
class udp_server {
 public:
  explicit udp_server(std::string prefix = "", bool answer = true, const char* addr = "127.0.0.1")
      : sock_(io_, udp::endpoint(asio::ip::make_address(addr), 0)),
        prefix_(std::move(prefix)),
        answer_(answer) {
    receive();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~udp_server() {
    io_.stop();
    thread_.join();
  }
  udp_server(const udp_server&) = delete;
  udp_server& operator=(const udp_server&) = delete;

  unsigned short port() const { return sock_.local_endpoint().port(); }
  /// "127.0.0.1:port" or "[::1]:port".
  std::string target_text() const {
    auto a = sock_.local_endpoint().address();
    return (a.is_v6() ? "[" + a.to_string() + "]" : a.to_string()) + ":" + std::to_string(port());
  }
  std::vector<std::string> received() {
    std::lock_guard lock(mu_);
    return received_;
  }

 private:
  void receive() {
    sock_.async_receive_from(asio::buffer(buf_), from_, [this](asio::error_code ec, std::size_t n) {
      if (ec) return;
      std::string d(buf_.data(), n);
      {
        std::lock_guard lock(mu_);
        received_.push_back(d);
      }
      if (answer_) {
        reply_ = prefix_ + d;
        asio::error_code ignored;
        sock_.send_to(asio::buffer(reply_), from_, 0, ignored);
      }
      receive();
    });
  }

  asio::io_context io_;
  udp::socket sock_;
  std::string prefix_;
  bool answer_;
  std::array<char, 65536> buf_{};
  udp::endpoint from_;
  std::string reply_;
  std::mutex mu_;
  std::vector<std::string> received_;
  std::thread thread_;
};

/// A loopback UDP port nothing is bound to.
unsigned short closed_udp_port() {
  asio::io_context io;
  udp::socket s(io, udp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return s.local_endpoint().port();
}

/// A UDP server on 127.0.0.1 whose replies follow a script: for a request "x" it sends each
/// reply of `script["x"]` ("{}" stands for the request) after its delay. Plain blocking
/// sockets on a thread; stops within 20 ms of destruction.
class scripted_udp_server {
 public:
  using step = std::pair<std::chrono::milliseconds, std::string>;
  explicit scripted_udp_server(std::map<std::string, std::vector<step>> script)
      : script_(std::move(script)) {
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      throw std::runtime_error("scripted_udp_server: bind failed");
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { loop(); });
  }
  ~scripted_udp_server() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  scripted_udp_server(const scripted_udp_server&) = delete;
  scripted_udp_server& operator=(const scripted_udp_server&) = delete;
  std::string target_text() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  struct pending {
    clock::time_point at;
    sockaddr_in to;
    std::string data;
  };
  void loop() {
    std::vector<pending> queue;
    std::array<char, 2048> buf{};
    while (!stop_) {
      auto now = clock::now();
      for (auto it = queue.begin(); it != queue.end();) {
        if (it->at <= now) {
          ::sendto(fd_, it->data.data(), it->data.size(), 0,
                   reinterpret_cast<const sockaddr*>(&it->to), sizeof it->to);
          it = queue.erase(it);
        } else {
          ++it;
        }
      }
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 5) <= 0) continue;
      sockaddr_in from{};
      socklen_t len = sizeof from;
      auto n = ::recvfrom(fd_, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n < 0) continue;
      std::string req(buf.data(), static_cast<std::size_t>(n));
      auto it = script_.find(req);
      if (it == script_.end()) continue;
      for (auto& [delay, text] : it->second) {
        std::string out = text;
        if (auto pos = out.find("{}"); pos != std::string::npos) out.replace(pos, 2, req);
        queue.push_back({clock::now() + delay, from, out});
      }
    }
  }
  std::map<std::string, std::vector<step>> script_;
  int fd_ = -1;
  unsigned short port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

using test::opts;

probe_result run_udp(const option_set& set, const std::string& target,
                     std::chrono::milliseconds timeout = 2000ms) {
  auto p = test::make<udp_probe>(set);
  return test::run_probe(p, test::target_for<udp_probe>(target), timeout);
}

}  // namespace

TEST_CASE("udp: closed port is refused by ICMP port unreachable", "[udp][integration]") {
  auto start = clock::now();
  auto r = run_udp({}, "127.0.0.1:" + std::to_string(closed_udp_port()));
  REQUIRE(r);
  CHECK(r->why == reason::refused);
  CHECK(r->message == "port unreachable (ICMP)");
  CHECK(r->latency);  // time until the ICMP error
  CHECK_FALSE(r->get("rtt"));
  CHECK(clock::now() - start < 1s);  // not a timeout in disguise
}

TEST_CASE("udp: a silent server without expect is ok: open or filtered", "[udp][integration]") {
  udp_server srv("", false);
  auto start = clock::now();
  auto r = run_udp({}, srv.target_text(), 200ms);
  auto took = clock::now() - start;
  REQUIRE(r);
  CHECK(r->why == reason::none);
  CHECK(r->message == "no reply: open or filtered");
  CHECK_FALSE(r->latency);
  CHECK_FALSE(r->get("latency"));
  CHECK_FALSE(r->get("rtt"));
  CHECK(took >= 190ms);
  CHECK(took < 1500ms);
  // The server did get the (empty, by default) datagram.
  auto got = srv.received();
  REQUIRE(got.size() == 1);
  CHECK(got[0].empty());
}

TEST_CASE("udp: a silent server with expect is a timeout", "[udp][integration]") {
  udp_server srv("", false);
  auto r = run_udp(opts({{"send", std::string("hello")}, {"expect", std::string("world")}}),
                   srv.target_text(), 200ms);
  REQUIRE(r);
  CHECK(r->why == reason::timeout);
  CHECK_THAT(r->message, Catch::Contains("no reply") && Catch::Contains("world"));
  CHECK_FALSE(r->latency);
}

TEST_CASE("udp: a reply without expect is ok with rtt and reply_bytes", "[udp][integration]") {
  udp_server srv("pong:");
  auto r = run_udp(opts({{"send", std::string("ping")}}), srv.target_text());
  REQUIRE(r);
  CHECK(r->why == reason::none);
  REQUIRE(r->latency);
  REQUIRE(r->get("rtt"));
  CHECK(*r->get("rtt") > 0);
  CHECK(*r->get("rtt") < 1.0);
  CHECK(*r->get("latency") == Approx(*r->get("rtt")));
  CHECK(r->get("reply_bytes") == Approx(9));
  CHECK_THAT(r->message, Catch::Contains("9 bytes"));
  CHECK(srv.received() == std::vector<std::string>{"ping"});
}

TEST_CASE("udp: expect matches a substring of the reply", "[udp][integration]") {
  udp_server srv("pong:");
  auto r =
      run_udp(opts({{"send", std::string("status\\r\\n")}, {"expect", std::string("pong:st")}}),
              srv.target_text());
  REQUIRE(r);
  CHECK(r->why == reason::none);
  CHECK_THAT(r->message, Catch::Contains("pong:st"));
  CHECK(srv.received() == std::vector<std::string>{"status\r\n"});
  CHECK(r->get("reply_bytes") == Approx(13));
}

TEST_CASE("udp: expect mismatch reports an excerpt of the reply", "[udp][integration]") {
  udp_server srv("pong:");
  auto r = run_udp(opts({{"send", std::string("hi\\x01")}, {"expect", std::string("HELLO")}}),
                   srv.target_text());
  REQUIRE(r);
  CHECK(r->why == reason::mismatch);
  CHECK_THAT(r->message, Catch::Contains("HELLO") && Catch::Contains("pong:hi\\x01"));
  CHECK(r->latency);
  CHECK(r->get("rtt"));
}

TEST_CASE("udp: expect only searches the first max_reply bytes", "[udp][integration]") {
  udp_server srv(std::string(100, 'a'));
  auto set = opts({{"send", std::string("needle")},
                   {"expect", std::string("needle")},
                   {"max_reply", std::int64_t{50}}});
  auto r = run_udp(set, srv.target_text());
  REQUIRE(r);
  CHECK(r->why == reason::mismatch);
  CHECK(r->get("reply_bytes") == Approx(106));  // the datagram's real size
  set.set("max_reply", std::int64_t{106});
  r = run_udp(set, srv.target_text());
  REQUIRE(r);
  CHECK(r->why == reason::none);
}

TEST_CASE("udp: send_hex bytes arrive exactly", "[udp][integration]") {
  udp_server srv("", false);
  auto r = run_udp(opts({{"send_hex", std::string("00 ff 0a:41 7f")}}), srv.target_text(), 100ms);
  REQUIRE(r);
  CHECK(r->why == reason::none);
  auto got = srv.received();
  REQUIRE(got.size() == 1);
  CHECK(got[0] == std::string("\0\xff\n\x41\x7f", 5));
}

TEST_CASE("udp: IPv6 loopback works", "[udp][integration]") {
  udp_server srv("v6:", true, "::1");
  auto r = run_udp(opts({{"send", std::string("x")}, {"expect", std::string("v6:x")}}),
                   srv.target_text());
  REQUIRE(r);
  CHECK(r->why == reason::none);
  auto closed = run_udp({}, "[::1]:" + std::to_string(closed_udp_port()));
  REQUIRE(closed);
  CHECK(closed->why == reason::refused);
}

TEST_CASE("udp: host names resolve through sonde::resolve", "[udp][integration]") {
  udp_server srv("ok:");
  auto r = run_udp(opts({{"family", std::string("ipv4")}, {"expect", std::string("ok:")}}),
                   "localhost:" + std::to_string(srv.port()));
  REQUIRE(r);
  CHECK(r->why == reason::none);

  auto wrong = run_udp(opts({{"family", std::string("ipv6")}}), "127.0.0.1:9");
  REQUIRE(wrong);
  CHECK(wrong->why == reason::resolve);
}

TEST_CASE("udp: a socket that got an ICMP error serves the next run to that port",
          "[udp][integration]") {
  asio::io_context io;
  auto p = test::make<udp_probe>(opts({{"send", std::string("x")}}));
  auto results = test::run_in_sequence(
      io, p, test::target_for<udp_probe>("127.0.0.1:" + std::to_string(closed_udp_port())), 50,
      2000ms);
  REQUIRE(results.size() == 50);
  for (auto& r : results) {
    REQUIRE(r);
    CHECK(r->why == reason::refused);
  }
  auto st = detail::udp_pool_stats(io);
  CHECK(st.reused == 49);  // one socket for all fifty runs
  CHECK(st.idle == 1);
}

TEST_CASE("udp: a reused socket drains what the last run left queued", "[udp][integration]") {
  // Each request gets two datagrams; the second is still queued when the next run starts.
  scripted_udp_server srv({{"a", {{0ms, "first:{}"}, {20ms, "second:{}"}}},
                           {"b", {{0ms, "first:{}"}, {20ms, "second:{}"}}}});
  asio::io_context io;
  auto pa =
      test::make<udp_probe>(opts({{"send", std::string("a")}, {"expect", std::string("first:a")}}));
  auto ra =
      test::run_in_sequence(io, pa, test::target_for<udp_probe>(srv.target_text()), 1, 2000ms);
  REQUIRE(ra.at(0));
  CHECK(ra[0]->why == reason::none);
  std::this_thread::sleep_for(80ms);  // "second:a" arrives on the pooled socket
  auto pb =
      test::make<udp_probe>(opts({{"send", std::string("b")}, {"expect", std::string("first:b")}}));
  auto rb =
      test::run_in_sequence(io, pb, test::target_for<udp_probe>(srv.target_text()), 1, 2000ms);
  REQUIRE(rb.at(0));
  CHECK(rb[0]->why == reason::none);
  CHECK(rb[0]->message == "reply contains \"first:b\"");
  CHECK(detail::udp_pool_stats(io).reused == 1);
}

TEST_CASE("udp: a run without an answer never passes its socket on", "[udp][integration]") {
  // "slow" is answered after 150 ms, long after its run gave up at 40 ms; "next" is answered
  // after 300 ms. Had the next run inherited the socket, the late "late:slow" would be its reply.
  scripted_udp_server srv({{"slow", {{150ms, "late:{}"}}}, {"next", {{300ms, "fresh:{}"}}}});
  asio::io_context io;
  auto slow = test::make<udp_probe>(opts({{"send", std::string("slow")}}));
  auto r1 =
      test::run_in_sequence(io, slow, test::target_for<udp_probe>(srv.target_text()), 1, 40ms);
  REQUIRE(r1.at(0));
  CHECK(r1[0]->message == "no reply: open or filtered");
  auto next = test::make<udp_probe>(
      opts({{"send", std::string("next")}, {"expect", std::string("fresh:")}}));
  auto r2 =
      test::run_in_sequence(io, next, test::target_for<udp_probe>(srv.target_text()), 1, 2000ms);
  REQUIRE(r2.at(0));
  CHECK(r2[0]->why == reason::none);
  CHECK_THAT(r2[0]->message, Catch::Contains("fresh:"));
  CHECK(detail::udp_pool_stats(io).reused == 0);
}

TEST_CASE("udp: option errors name the key", "[udp]") {
  auto err = [](const option_set& set) {
    auto p = make_probe<udp_probe>(set);
    REQUIRE_FALSE(p);
    CHECK(p.error().code == probe_errc::invalid_option);
    return p.error();
  };
  auto both = err(opts({{"send", std::string("a")}, {"send_hex", std::string("61")}}));
  CHECK_THAT(both.message, Catch::Contains("'send'") && Catch::Contains("'send_hex'"));
  CHECK(both.key == "send_hex");
  // Both keys present is an error even when one is empty.
  auto both_empty = err(opts({{"send", std::string("")}, {"send_hex", std::string("61")}}));
  CHECK_THAT(both_empty.message, Catch::Contains("mutually exclusive"));
  {
    udp_probe::options o;
    o.send = "a";
    o.send_hex = "61";
    auto p = udp_probe::make(o);
    REQUIRE_FALSE(p);
    CHECK_THAT(p.error().message, Catch::Contains("'send'") && Catch::Contains("'send_hex'"));
  }
  CHECK(err(opts({{"send_hex", std::string("0g")}})).key == "send_hex");
  CHECK(err(opts({{"send_hex", std::string("abc")}})).key == "send_hex");
  CHECK(err(opts({{"send", std::string("bad\\q")}})).key == "send");
  CHECK(err(opts({{"expect", std::string("\\x4")}})).key == "expect");
  CHECK(err(opts({{"family", std::string("ipx")}})).key == "family");
  CHECK(err(opts({{"max_reply", std::int64_t{0}}})).key == "max_reply");
  CHECK(err(opts({{"max_reply", std::int64_t{70000}}})).key == "max_reply");
  CHECK(err(opts({{"max_reply", std::string("big")}})).key == "max_reply");
}

TEST_CASE("udp: the target needs a port", "[udp]") {
  auto t = parse_target_for<udp_probe>("127.0.0.1");
  REQUIRE_FALSE(t);
  CHECK(t.error().code == probe_errc::invalid_target);
  CHECK(parse_target_for<udp_probe>("[::1]:53"));
}

TEST_CASE("udp: the plugin runs through the C ABI", "[udp][plugins][integration]") {
  const sonde_plugin_descriptor* d = test::plugin_descriptor("udp");
  REQUIRE(d->type_count == 1);
  const sonde_probe_type& t = d->types[0];
  CHECK(std::string(t.name) == "udp");
  CHECK(t.alias_count == 0);  // "UDP" is accepted by the engine's seed-name lookup
  CHECK(std::string(t.target_form) == "host:port");

  udp_server srv("re:");
  sonde_option o[2]{};
  o[0].key = "send";
  o[0].value.type = SONDE_VALUE_STRING;
  o[0].value.string = "abc";
  o[1].key = "expect";
  o[1].value.type = SONDE_VALUE_STRING;
  o[1].value.string = "re:abc";
  void* inst = nullptr;
  sonde_error e{};
  REQUIRE(t.create(srv.target_text().c_str(), o, 2, &inst, &e) == 0);
  auto out = test::run_c(t, inst, 2s);
  t.destroy(inst);
  REQUIRE(out.done);
  CHECK(out.reason == 0);
  CHECK_THAT(out.message, Catch::Contains("re:abc"));

  sonde_option both[2]{};
  both[0] = o[0];
  both[1].key = "send_hex";
  both[1].value.type = SONDE_VALUE_STRING;
  both[1].value.string = "00";
  CHECK(t.create(srv.target_text().c_str(), both, 2, &inst, &e) != 0);
  CHECK(std::string(e.key) == "send_hex");
}

TEST_CASE("udp: the plugin adapter reuses a validated probe only for identical options",
          "[udp][plugins]") {
  using adapter = detail::probe_adapter<udp_probe>;
  auto str = [](const char* key, const char* v) {
    sonde_option o{};
    o.key = key;
    o.value.type = SONDE_VALUE_STRING;
    o.value.string = v;
    return o;
  };
  auto make = [](std::vector<sonde_option> opts, const char* target) {
    void* h = nullptr;
    sonde_error err{};
    REQUIRE(adapter::create(target, opts.data(), opts.size(), &h, &err) == 0);
    return std::unique_ptr<adapter::instance>(static_cast<adapter::instance*>(h));
  };
  auto a = make({str("send", "ping"), str("expect", "pong")}, "127.0.0.1:7");
  auto b = make({str("send", "ping"), str("expect", "pong")}, "127.0.0.2:8");
  auto c = make({str("send", "ping"), str("expect", "PONG")}, "127.0.0.3:9");
  auto d = make({str("send", "ping")}, "127.0.0.4:10");
  CHECK(a->probe.opts().expect == "pong");
  CHECK(b->probe.opts().expect == "pong");
  CHECK(b->where.host == "127.0.0.2");  // the target is always the task's own
  CHECK(b->where.port == 8);
  CHECK(c->probe.opts().expect == "PONG");
  CHECK(d->probe.opts().expect.empty());
  // An invalid option list is refused even right after a valid one, and then again.
  for (int i = 0; i < 2; ++i) {
    auto bad = std::vector<sonde_option>{str("send", "a"), str("send_hex", "00")};
    void* h = nullptr;
    sonde_error err{};
    CHECK(adapter::create("127.0.0.1:7", bad.data(), bad.size(), &h, &err) != 0);
    CHECK(h == nullptr);
    CHECK(std::string(err.message).find("send") != std::string::npos);
  }
  auto e = make({str("send", "ping"), str("expect", "pong")}, "127.0.0.5:11");
  CHECK(e->probe.opts().expect == "pong");
}
