// tcp_probe: TLS (certificates made at test time) and send/expect exchanges against in-test
// loopback servers, each on its own io_context and thread.
#include <sonde/tcp.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/ssl/context.hpp>
#include <asio/ssl/stream.hpp>
#include <asio/write.hpp>

#include "support/support.hpp"
#include "support/tls_certs.hpp"

using namespace sonde;
using namespace std::chrono_literals;
using asio::experimental::as_tuple;
using asio::ip::tcp;

namespace {

/// What an in-test server does with each connection.
enum class behaviour {
  silent,             ///< read until the peer closes, never write
  banner,             ///< write `text`, then read until the peer closes
  banner_then_close,  ///< write `text`, then close (FIN)
  reply_after_read,   ///< read once, write `text`, then read until the peer closes
  close_at_once,      ///< close right after accepting
};

/// State shared by a server's thread and the test.
struct server_state {
  behaviour mode = behaviour::silent;
  std::string text;
  std::shared_ptr<asio::ssl::context> tls;  // null: plain TCP

  std::mutex mu;
  std::condition_variable cv;
  std::string received;              // every byte read, all connections
  std::vector<std::string> endings;  // per connection: "eof", "reset", "truncated", "tls: ..."

  void record_end(std::string how) {
    std::lock_guard lock(mu);
    endings.push_back(std::move(how));
    cv.notify_all();
  }
  void record_data(const char* p, std::size_t n) {
    std::lock_guard lock(mu);
    received.append(p, n);
  }
};

std::string ending_of(const asio::error_code& ec) {
  if (ec == asio::error::eof) return "eof";
  if (ec == asio::error::connection_reset) return "reset";
  if (ec == asio::ssl::error::stream_truncated) return "truncated";
  return ec.message();
}

template <class Stream>
asio::awaitable<void> converse(Stream& s, std::shared_ptr<server_state> st) {
  char buf[4096];
  auto write_text = [&]() {
    return asio::async_write(s, asio::buffer(st->text), as_tuple(asio::use_awaitable));
  };
  if (st->mode == behaviour::banner || st->mode == behaviour::banner_then_close) {
    auto [ec, n] = co_await write_text();
    if (ec || st->mode == behaviour::banner_then_close) {
      st->record_end(ec ? ending_of(ec) : "server closed");
      co_return;
    }
  }
  if (st->mode == behaviour::reply_after_read) {
    auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), as_tuple(asio::use_awaitable));
    st->record_data(buf, n);
    if (ec) {
      st->record_end(ending_of(ec));
      co_return;
    }
    auto [wec, wn] = co_await write_text();
    (void)wn;
  }
  while (true) {
    auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), as_tuple(asio::use_awaitable));
    st->record_data(buf, n);
    if (ec) {
      st->record_end(ending_of(ec));
      co_return;
    }
  }
}

asio::awaitable<void> serve(tcp::socket sock, std::shared_ptr<server_state> st) {
  if (st->mode == behaviour::close_at_once) {
    st->record_end("server closed");
    co_return;
  }
  if (!st->tls) {
    co_await converse(sock, st);
    co_return;
  }
  asio::ssl::stream<tcp::socket> stream(std::move(sock), *st->tls);
  auto [ec] = co_await stream.async_handshake(asio::ssl::stream_base::server,
                                              as_tuple(asio::use_awaitable));
  if (ec) {
    st->record_end("tls: " + ec.message());
    co_return;
  }
  co_await converse(stream, st);
}

asio::awaitable<void> accept_loop(tcp::acceptor* acc, std::shared_ptr<server_state> st) {
  while (true) {
    auto [ec, sock] = co_await acc->async_accept(as_tuple(asio::use_awaitable));
    if (ec) co_return;
    asio::co_spawn(acc->get_executor(), serve(std::move(sock), st), asio::detached);
  }
}

/// A TCP (or TLS) server on `addr`:0 with its own io_context and thread.
class test_server {
 public:
  test_server(behaviour mode, std::string text = "", const char* addr = "127.0.0.1")
      : acc_(io_, tcp::endpoint(asio::ip::make_address(addr), 0)),
        st_(std::make_shared<server_state>()) {
    st_->mode = mode;
    st_->text = std::move(text);
  }
  /// Serve TLS with this certificate and key (PEM files).
  test_server& with_tls(const test::cert_files& c) {
    st_->tls = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
    st_->tls->use_certificate_chain_file(c.cert);
    st_->tls->use_private_key_file(c.key, asio::ssl::context::pem);
    return *this;
  }
  /// Start serving (call once, after configuring).
  test_server& start() {
    asio::co_spawn(io_, accept_loop(&acc_, st_), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
    return *this;
  }
  ~test_server() {
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }
  test_server(const test_server&) = delete;
  test_server& operator=(const test_server&) = delete;

  std::string target_text() const {
    auto ep = acc_.local_endpoint();
    auto a = ep.address();
    return (a.is_v6() ? "[" + a.to_string() + "]" : a.to_string()) + ":" +
           std::to_string(ep.port());
  }
  /// How the first connection ended, waiting up to 2 s for it; "" if it has not ended.
  std::string first_ending() {
    std::unique_lock lock(st_->mu);
    st_->cv.wait_for(lock, 2s, [&] { return !st_->endings.empty(); });
    return st_->endings.empty() ? "" : st_->endings.front();
  }
  std::string received() {
    std::lock_guard lock(st_->mu);
    return st_->received;
  }

 private:
  asio::io_context io_;
  tcp::acceptor acc_;
  std::shared_ptr<server_state> st_;
  std::thread thread_;
};

using test::opts;

probe_result run_tcp(const option_set& set, const std::string& target,
                     std::chrono::milliseconds timeout = 2000ms) {
  auto p = test::make<tcp_probe>(set);
  return test::run_probe(p, test::target_for<tcp_probe>(target), timeout);
}

/// Seconds from now until `tp`.
double seconds_until(std::chrono::system_clock::time_point tp) {
  return std::chrono::duration<double>(tp - std::chrono::system_clock::now()).count();
}

option_set tls_opts(bool verify = true) {
  return opts({{"tls", true}, {"tls_verify", verify}, {"ca_file", test::tls_certs().ca}});
}

}  // namespace

// --- TLS ------------------------------------------------------------------------------------

TEST_CASE("tcp: TLS with a valid certificate is ok with expiry and handshake time",
          "[tcp][tls][integration]") {
  const auto& certs = test::tls_certs();
  test_server srv(behaviour::silent);
  srv.with_tls(certs.valid).start();
  SECTION("verified against the IP address") {
    auto r = run_tcp(tls_opts(), srv.target_text());
    REQUIRE(r);
    CHECK(r->why == reason::none);
    CHECK_THAT(r->message, Catch::Contains("(TLS)"));
    REQUIRE(r->get("tls.cert_expiry"));
    CHECK(*r->get("tls.cert_expiry") == Approx(seconds_until(certs.valid.not_after)).margin(60));
    CHECK(*r->get("tls.cert_expiry") > 29 * 86400.0);
    REQUIRE(r->get("tls.handshake_time"));
    CHECK(*r->get("tls.handshake_time") > 0);
    CHECK(*r->get("tls.handshake_time") < 2.0);
    CHECK(r->get("connect_time"));
  }
  SECTION("verified against server_name localhost") {
    auto set = tls_opts();
    set.set("server_name", std::string("localhost"));
    auto r = run_tcp(set, srv.target_text());
    REQUIRE(r);
    CHECK(r->why == reason::none);
    CHECK(r->message.find("(TLS)") != std::string::npos);
  }
}

TEST_CASE("tcp: TLS with an expired certificate fails verification with negative expiry",
          "[tcp][tls][integration]") {
  const auto& certs = test::tls_certs();
  test_server srv(behaviour::silent);
  srv.with_tls(certs.expired).start();
  const double expected = seconds_until(certs.expired.not_after);
  REQUIRE(expected < 0);

  auto r = run_tcp(tls_opts(true), srv.target_text());
  REQUIRE(r);
  CHECK(r->why == reason::tls);
  CHECK_THAT(r->message, Catch::Contains("expired"));
  REQUIRE(r->get("tls.cert_expiry"));
  CHECK(*r->get("tls.cert_expiry") < 0);
  CHECK(*r->get("tls.cert_expiry") == Approx(expected).margin(60));

  auto lax = run_tcp(tls_opts(false), srv.target_text());
  REQUIRE(lax);
  CHECK(lax->why == reason::none);
  REQUIRE(lax->get("tls.cert_expiry"));
  CHECK(*lax->get("tls.cert_expiry") < 0);
  CHECK(*lax->get("tls.cert_expiry") == Approx(expected).margin(60));
}

TEST_CASE("tcp: TLS with a self-signed certificate", "[tcp][tls][integration]") {
  const auto& certs = test::tls_certs();
  test_server srv(behaviour::silent);
  srv.with_tls(certs.self_signed).start();

  auto r = run_tcp(tls_opts(true), srv.target_text());
  REQUIRE(r);
  CHECK(r->why == reason::tls);
  CHECK_THAT(r->message, Catch::Contains("self-signed") || Catch::Contains("self signed") ||
                             Catch::Contains("unable to get"));
  REQUIRE(r->get("tls.cert_expiry"));
  CHECK(*r->get("tls.cert_expiry") ==
        Approx(seconds_until(certs.self_signed.not_after)).margin(60));

  auto lax = run_tcp(tls_opts(false), srv.target_text());
  REQUIRE(lax);
  CHECK(lax->why == reason::none);
}

TEST_CASE("tcp: TLS server_name mismatch fails verification", "[tcp][tls][integration]") {
  test_server srv(behaviour::silent);
  srv.with_tls(test::tls_certs().valid).start();
  auto set = tls_opts(true);
  set.set("server_name", std::string("wrong.example"));
  auto r = run_tcp(set, srv.target_text());
  REQUIRE(r);
  CHECK(r->why == reason::tls);
  CHECK_THAT(r->message, Catch::Contains("hostname mismatch") && Catch::Contains("wrong.example"));

  set.set("tls_verify", false);
  auto lax = run_tcp(set, srv.target_text());
  REQUIRE(lax);
  CHECK(lax->why == reason::none);
}

TEST_CASE("tcp: TLS to a server that is not TLS fails fast with a clear message",
          "[tcp][tls][integration]") {
  SECTION("the server closes at once") {
    test_server srv(behaviour::close_at_once);
    srv.start();
    auto t0 = clock::now();
    auto r = run_tcp(tls_opts(), srv.target_text(), 3000ms);
    REQUIRE(r);
    CHECK(clock::now() - t0 < 1s);
    CHECK(r->why == reason::tls);
    // Closing with the ClientHello unread makes the server's kernel answer with RST.
    CHECK_THAT(r->message, Catch::Contains("TLS handshake failed") &&
                               (Catch::Contains("closed") || Catch::Contains("reset")) &&
                               Catch::Contains("not a TLS server"));
    CHECK_FALSE(r->get("tls.cert_expiry"));
  }
  SECTION("the server sends garbage") {
    test_server srv(behaviour::banner, "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n");
    srv.start();
    auto t0 = clock::now();
    auto r = run_tcp(tls_opts(), srv.target_text(), 3000ms);
    REQUIRE(r);
    CHECK(clock::now() - t0 < 1s);
    CHECK(r->why == reason::tls);
    CHECK_THAT(r->message,
               Catch::Contains("TLS handshake failed") && Catch::Contains("not a TLS server"));
  }
  SECTION("the server says nothing: a timeout, not a hang") {
    test_server srv(behaviour::silent);
    srv.start();
    auto t0 = clock::now();
    auto r = run_tcp(tls_opts(), srv.target_text(), 300ms);
    REQUIRE(r);
    CHECK(clock::now() - t0 < 1500ms);
    CHECK(r->why == reason::timeout);
    CHECK_THAT(r->message, Catch::Contains("TLS handshake timed out"));
  }
}

TEST_CASE("tcp: expect over TLS reads the banner", "[tcp][tls][integration]") {
  test_server srv(behaviour::banner, "220 smtp.test ESMTP ready\r\n");
  srv.with_tls(test::tls_certs().valid).start();
  auto set = tls_opts();
  set.set("expect", std::string("ESMTP"));
  auto r = run_tcp(set, srv.target_text());
  REQUIRE(r);
  CHECK(r->why == reason::none);
  CHECK_THAT(r->message, Catch::Contains("ESMTP"));
  CHECK(r->get("reply_bytes") == Approx(27));
}

TEST_CASE("tcp: close over TLS", "[tcp][tls][integration]") {
  test_server srv(behaviour::silent);
  srv.with_tls(test::tls_certs().valid).start();
  SECTION("graceful sends close_notify and FIN") {
    auto set = tls_opts();
    set.set("close", std::string("graceful"));
    auto t0 = clock::now();
    auto r = run_tcp(set, srv.target_text());
    REQUIRE(r);
    CHECK(r->why == reason::none);
    CHECK(clock::now() - t0 < 1s);  // does not wait for the peer's close_notify
    CHECK(srv.first_ending() == "eof");
  }
  SECTION("reset (the default) sends RST") {
    auto r = run_tcp(tls_opts(), srv.target_text());
    REQUIRE(r);
    CHECK(r->why == reason::none);
    // The RST may overtake the client's Finished: then the server's handshake sees it.
    CHECK_THAT(srv.first_ending(), Catch::Matches("(tls: )?[Cc]onnection reset.*|reset"));
  }
}

// --- send / expect over plain TCP ------------------------------------------------------------

TEST_CASE("tcp: expect matches a banner", "[tcp][integration]") {
  test_server srv(behaviour::banner, "SSH-2.0-sonde_test\r\n");
  srv.start();
  auto r = run_tcp(opts({{"expect", std::string("SSH-2.0")}}), srv.target_text());
  REQUIRE(r);
  CHECK(r->why == reason::none);
  CHECK_THAT(r->message, Catch::Contains("SSH-2.0"));
  CHECK(r->get("reply_bytes") == Approx(20));
}

TEST_CASE("tcp: send then expect the answer", "[tcp][integration]") {
  test_server srv(behaviour::reply_after_read, "+PONG\r\n");
  srv.start();
  auto r = run_tcp(opts({{"send", std::string("PING\\r\\n")}, {"expect", std::string("+PONG")}}),
                   srv.target_text());
  REQUIRE(r);
  CHECK(r->why == reason::none);
  CHECK(srv.first_ending() == "reset");
  CHECK(srv.received() == "PING\r\n");
}

TEST_CASE("tcp: send without expect delivers the bytes", "[tcp][integration]") {
  test_server srv(behaviour::silent);
  srv.start();
  auto r =
      run_tcp(opts({{"send", std::string("hello\\x00\\xff")}, {"close", std::string("graceful")}}),
              srv.target_text());
  REQUIRE(r);
  CHECK(r->why == reason::none);
  CHECK(srv.first_ending() == "eof");
  CHECK(srv.received() == std::string("hello\0\xff", 7));
}

TEST_CASE("tcp: expect mismatch reports an excerpt", "[tcp][integration]") {
  SECTION("the server answers something else and closes") {
    test_server srv(behaviour::banner_then_close, "220 welcome\r\n");
    srv.start();
    auto r = run_tcp(opts({{"expect", std::string("SSH-")}}), srv.target_text());
    REQUIRE(r);
    CHECK(r->why == reason::mismatch);
    CHECK_THAT(r->message, Catch::Contains("SSH-") && Catch::Contains("220 welcome\\r\\n") &&
                               Catch::Contains("closed"));
    CHECK(r->get("reply_bytes") == Approx(13));
  }
  SECTION("the server sends more than max_reply without it") {
    test_server srv(behaviour::banner, std::string(100, 'x'));
    srv.start();
    auto r = run_tcp(opts({{"expect", std::string("y")}, {"max_reply", std::int64_t{50}}}),
                     srv.target_text());
    REQUIRE(r);
    CHECK(r->why == reason::mismatch);
    CHECK_THAT(r->message, Catch::Contains("within 50 bytes"));
    CHECK(r->get("reply_bytes") == Approx(50));
  }
}

TEST_CASE("tcp: expect times out when the server is silent", "[tcp][integration]") {
  test_server srv(behaviour::silent);
  srv.start();
  auto t0 = clock::now();
  auto r = run_tcp(opts({{"send", std::string("hi\\n")}, {"expect", std::string("hello")}}),
                   srv.target_text(), 300ms);
  REQUIRE(r);
  CHECK(clock::now() - t0 >= 290ms);
  CHECK(clock::now() - t0 < 1500ms);
  CHECK(r->why == reason::timeout);
  CHECK_THAT(r->message, Catch::Contains("timed out waiting for \"hello\""));
  CHECK(r->latency);
}

TEST_CASE("tcp: expect when the server closes before answering", "[tcp][integration]") {
  test_server srv(behaviour::close_at_once);
  srv.start();
  auto r = run_tcp(opts({{"expect", std::string("hello")}}), srv.target_text());
  REQUIRE(r);
  CHECK(r->why == reason::mismatch);
  CHECK_THAT(r->message, Catch::Contains("connection closed after \"\""));
  CHECK(r->get("reply_bytes") == Approx(0));
}

TEST_CASE("tcp: IPv6 loopback connect", "[tcp][integration]") {
  test_server srv(behaviour::banner, "hi6\n", "::1");
  srv.start();
  auto r = run_tcp(opts({{"expect", std::string("hi6")}}), srv.target_text());
  REQUIRE(r);
  CHECK(r->why == reason::none);
  auto plain = run_tcp({}, srv.target_text());
  REQUIRE(plain);
  CHECK(plain->why == reason::none);
  CHECK_THAT(plain->message, Catch::Contains("::1"));
}

TEST_CASE("tcp: close = graceful sends FIN, reset sends RST", "[tcp][integration]") {
  SECTION("graceful") {
    test_server srv(behaviour::silent);
    srv.start();
    auto r = run_tcp(opts({{"close", std::string("graceful")}}), srv.target_text());
    REQUIRE(r);
    CHECK(r->why == reason::none);
    CHECK(srv.first_ending() == "eof");
  }
  SECTION("reset, also after a failed expect") {
    test_server srv(behaviour::banner, "nope\n");
    srv.start();
    auto r = run_tcp(opts({{"expect", std::string("yes")}}), srv.target_text(), 200ms);
    REQUIRE(r);
    CHECK(r->why == reason::timeout);
    CHECK(srv.first_ending() == "reset");
  }
}

TEST_CASE("tcp: option errors name the key", "[tcp]") {
  auto key_of = [](const option_set& set) {
    auto p = make_probe<tcp_probe>(set);
    REQUIRE_FALSE(p);
    return p.error().key;
  };
  CHECK(key_of(opts({{"send", std::string("\\q")}})) == "send");
  CHECK(key_of(opts({{"expect", std::string("\\x")}})) == "expect");
  CHECK(key_of(opts({{"close", std::string("slam")}})) == "close");
  CHECK(key_of(opts({{"family", std::string("ipv5")}})) == "family");
  CHECK(key_of(opts({{"max_reply", std::int64_t{0}}})) == "max_reply");
  CHECK(key_of(opts({{"server_name", std::string("x")}})) == "server_name");
  CHECK(key_of(opts({{"tls", true}, {"ca_file", std::string("/nonexistent/ca.pem")}})) ==
        "ca_file");
}
