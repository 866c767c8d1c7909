// dns_probe against a real unbound started by the test (zone example.test. on loopback) and
// against in-test UDP fault servers.
#include <sonde/dns.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <vector>

#include <sonde/plugin.hpp>

#include "support/c_abi.hpp"
#include "support/dns_servers.hpp"
#include "support/support.hpp"

using namespace sonde;
using namespace std::chrono_literals;

static_assert(probe<dns_probe>);

namespace {

using test::opts;

probe_result run_dns(const option_set& set, const std::string& target,
                     std::chrono::milliseconds timeout = 3000ms) {
  auto p = test::make<dns_probe>(set);
  return test::run_probe(p, test::target_for<dns_probe>(target), timeout);
}

/// Run `query`/`type` against `server` and require a healthy observation.
observation ok_query(const std::string& server, const std::string& query, const std::string& type,
                     std::vector<std::string> expect = {}) {
  auto set = opts({{"query", query}, {"record_type", type}});
  if (!expect.empty()) set.set("expect_answers", expect);
  auto r = run_dns(set, server);
  REQUIRE(r);
  INFO(r->message);
  CHECK(r->why == reason::none);
  CHECK(r->get("rcode") == Approx(0));
  CHECK(r->get("tcp_fallback") == Approx(0));
  CHECK(r->latency);
  return *r;
}

}  // namespace

TEST_CASE("dns: every supported record type from unbound", "[dns][integration]") {
  test::unbound_server ub;
  auto a = ok_query(ub.v4(), "www.example.test", "A", {"127.0.0.1", "127.0.0.2"});
  CHECK(a.get("answer_count") == Approx(2));
  CHECK_THAT(a.message, Catch::Contains("www.example.test. 300 IN A 127.0.0.1") &&
                            Catch::Contains("www.example.test. 300 IN A 127.0.0.2") &&
                            Catch::StartsWith("NOERROR, 2 answers: "));
  auto aaaa = ok_query(ub.v4(), "www.example.test.", "aaaa", {"::1", "0:0::1"});
  CHECK_THAT(aaaa.message, Catch::Contains("IN AAAA ::1"));
  auto mx = ok_query(ub.v4(), "example.test", "MX", {"10 mail.example.test"});
  CHECK_THAT(mx.message, Catch::Contains("IN MX 10 mail.example.test."));
  auto cname = ok_query(ub.v4(), "alias.example.test", "CNAME", {"www.example.test."});
  CHECK_THAT(cname.message, Catch::Contains("IN CNAME www.example.test."));
  auto txt = ok_query(ub.v4(), "txt.example.test", "TXT", {"\"hello world\" \"second\""});
  CHECK_THAT(txt.message, Catch::Contains("IN TXT \"hello world\" \"second\""));
  ok_query(ub.v4(), "txt.example.test", "TXT", {"hello worldsecond"});  // concatenated text
  auto ns = ok_query(ub.v4(), "example.test", "NS", {"ns.example.test"});
  CHECK_THAT(ns.message, Catch::Contains("IN NS ns.example.test."));
  auto soa = ok_query(ub.v4(), "example.test", "SOA");
  CHECK_THAT(soa.message, Catch::Contains("IN SOA ns.example.test. hostmaster.example.test. "
                                          "2024010101 3600 600 86400 300"));
  auto ptr = ok_query(ub.v4(), "ptr.example.test", "PTR", {"WWW.EXAMPLE.TEST"});
  CHECK_THAT(ptr.message, Catch::Contains("IN PTR www.example.test."));
  auto srv = ok_query(ub.v4(), "_sip._udp.example.test", "SRV", {"10 20 5060 sip.example.test."});
  CHECK_THAT(srv.message, Catch::Contains("IN SRV 10 20 5060 sip.example.test."));
  auto caa = ok_query(ub.v4(), "example.test", "CAA", {"0 issue \"ca.example.net\""});
  CHECK_THAT(caa.message, Catch::Contains("IN CAA 0 issue \"ca.example.net\""));
  ok_query(ub.v4(), "example.test", "caa", {"ca.example.net"});  // the value alone
}

TEST_CASE("dns: a missing expected answer is a mismatch naming it", "[dns][integration]") {
  test::unbound_server ub;
  auto r = run_dns(opts({{"query", std::string("www.example.test")},
                         {"expect_answers", std::vector<std::string>{"127.0.0.1", "127.0.0.9"}}}),
                   ub.v4());
  REQUIRE(r);
  CHECK(r->why == reason::mismatch);
  CHECK_THAT(r->message, Catch::Contains("expected answer \"127.0.0.9\" not found") &&
                             Catch::Contains("IN A 127.0.0.1"));
  CHECK(r->get("rcode") == Approx(0));
  CHECK(r->get("answer_count") == Approx(2));
}

TEST_CASE("dns: NXDOMAIN is critical by default and ok when expected", "[dns][integration]") {
  test::unbound_server ub;
  auto r = run_dns(opts({{"query", std::string("nope.example.test")}}), ub.v4());
  REQUIRE(r);
  CHECK(r->why == reason::mismatch);
  CHECK_THAT(r->message, Catch::StartsWith("rcode NXDOMAIN, expected NOERROR"));
  CHECK(r->get("rcode") == Approx(3));
  CHECK(r->get("answer_count") == Approx(0));

  r = run_dns(opts({{"query", std::string("nope.example.test")},
                    {"expect_rcode", std::string("nxdomain")}}),
              ub.v4());
  REQUIRE(r);
  CHECK(r->why == reason::none);
  CHECK(r->message == "NXDOMAIN, 0 answers");
  CHECK(r->get("rcode") == Approx(3));
}

TEST_CASE("dns: names outside the zone are REFUSED", "[dns][integration]") {
  test::unbound_server ub;
  auto r = run_dns(opts({{"query", std::string("example.com")}}), ub.v4());
  REQUIRE(r);
  CHECK(r->why == reason::mismatch);
  CHECK(r->get("rcode") == Approx(5));
  CHECK_THAT(r->message, Catch::Contains("rcode REFUSED"));
  r = run_dns(opts({{"query", std::string("example.com")},
                    {"expect_rcode", std::string("REFUSED")},
                    {"recursion_desired", false}}),
              ub.v4());
  REQUIRE(r);
  CHECK(r->why == reason::none);
}

TEST_CASE("dns: a truncated UDP reply is retried over TCP", "[dns][integration]") {
  test::unbound_server ub;
  auto r = run_dns(
      opts({{"query", std::string("big.example.test")}, {"record_type", std::string("TXT")}}),
      ub.v4());
  REQUIRE(r);
  INFO(r->message);
  CHECK(r->why == reason::none);
  CHECK(r->get("tcp_fallback") == Approx(1));
  CHECK(r->get("answer_count") == Approx(test::big_txt_records));
  CHECK_THAT(r->message, Catch::Contains("more)"));  // the list is cut, the count is not

  // Without EDNS (512 bytes) as well.
  r = run_dns(opts({{"query", std::string("big.example.test")},
                    {"record_type", std::string("TXT")},
                    {"edns_udp_size", std::int64_t{0}}}),
              ub.v4());
  REQUIRE(r);
  CHECK(r->why == reason::none);
  CHECK(r->get("tcp_fallback") == Approx(1));
}

TEST_CASE("dns: transport tcp and an IPv6 server", "[dns][integration]") {
  test::unbound_server ub;
  auto r = run_dns(opts({{"query", std::string("www.example.test")},
                         {"transport", std::string("tcp")},
                         {"expect_answers", std::vector<std::string>{"127.0.0.2"}}}),
                   ub.v4());
  REQUIRE(r);
  CHECK(r->why == reason::none);
  CHECK(r->get("tcp_fallback") == Approx(0));
  CHECK(r->get("answer_count") == Approx(2));

  auto v6 = ok_query(ub.v6(), "www.example.test", "AAAA", {"::1"});
  CHECK(v6.get("answer_count") == Approx(1));
  r = run_dns(opts({{"query", std::string("big.example.test")},
                    {"record_type", std::string("TXT")},
                    {"transport", std::string("tcp")}}),
              ub.v6());
  REQUIRE(r);
  CHECK(r->why == reason::none);
  CHECK(r->get("answer_count") == Approx(test::big_txt_records));
}

TEST_CASE("dns: a closed port is refused, over UDP and TCP", "[dns][integration]") {
  auto port = std::to_string(test::closed_port());
  auto r = run_dns(opts({{"query", std::string("www.example.test")}}), "127.0.0.1:" + port);
  REQUIRE(r);
  CHECK(r->why == reason::refused);
  CHECK_THAT(r->message, Catch::Contains("port unreachable"));
  r = run_dns(opts({{"query", std::string("www.example.test")}, {"transport", std::string("tcp")}}),
              "[::1]:" + port);
  REQUIRE(r);
  CHECK(r->why == reason::refused);
}

TEST_CASE("dns: malformed replies are protocol errors with the decoder's reason", "[dns][fault]") {
  SECTION("answer count beyond the data") {
    test::dns_fault_server srv([](const std::vector<std::uint8_t>& q) {
      auto rep = test::dns_reply(q, {});
      rep[7] = 3;  // claims three answers, carries none
      return std::vector<std::vector<std::uint8_t>>{rep};
    });
    auto r = run_dns(opts({{"query", std::string("www.example.test")}}), srv.target_text());
    REQUIRE(r);
    CHECK(r->why == reason::protocol);
    CHECK(r->message == "malformed reply: truncated message");
  }
  SECTION("a packet shorter than the header") {
    test::dns_fault_server srv([](const std::vector<std::uint8_t>& q) {
      return std::vector<std::vector<std::uint8_t>>{{q[0], q[1], 0x81, 0x80, 0}};
    });
    auto r = run_dns(opts({{"query", std::string("www.example.test")}}), srv.target_text());
    REQUIRE(r);
    CHECK(r->why == reason::protocol);
    CHECK(r->message == "malformed reply: truncated message (5 bytes)");
  }
  SECTION("a compression pointer loop") {
    test::dns_fault_server srv([](const std::vector<std::uint8_t>& q) {
      auto rep = test::dns_reply(q, {});
      const auto self = rep.size();  // an answer whose name points at itself
      std::vector<std::uint8_t> rr = {static_cast<std::uint8_t>(0xc0 | (self >> 8)),
                                      static_cast<std::uint8_t>(self),
                                      0,
                                      1,
                                      0,
                                      1,
                                      0,
                                      0,
                                      0,
                                      1,
                                      0,
                                      4,
                                      1,
                                      2,
                                      3,
                                      4};
      rep.insert(rep.end(), rr.begin(), rr.end());
      rep[7] = 1;
      return std::vector<std::vector<std::uint8_t>>{rep};
    });
    auto r = run_dns(opts({{"query", std::string("www.example.test")}}), srv.target_text());
    REQUIRE(r);
    CHECK(r->why == reason::protocol);
    CHECK(r->message == "malformed reply: compression pointer loop");
  }
  SECTION("malformed RDATA") {
    test::dns_fault_server srv([](const std::vector<std::uint8_t>& q) {
      auto rr = test::a_record(1, 2, 3, 4);
      rr[11] = 3;  // RDLENGTH 3 for an A record
      rr.pop_back();
      return std::vector<std::vector<std::uint8_t>>{test::dns_reply(q, {rr})};
    });
    auto r = run_dns(opts({{"query", std::string("www.example.test")}}), srv.target_text());
    REQUIRE(r);
    CHECK(r->why == reason::protocol);
    CHECK(r->message == "malformed reply: malformed RDATA");
  }
}

TEST_CASE("dns: a reply with another id is ignored and the right one is taken", "[dns][fault]") {
  test::dns_fault_server srv([](const std::vector<std::uint8_t>& q) {
    return std::vector<std::vector<std::uint8_t>>{
        test::dns_reply(q, {test::a_record(10, 9, 9, 9)}, 0x5a5a),
        test::dns_reply(q, {test::a_record(127, 0, 0, 2)})};
  });
  auto r = run_dns(opts({{"query", std::string("www.example.test")},
                         {"expect_answers", std::vector<std::string>{"127.0.0.2"}}}),
                   srv.target_text());
  REQUIRE(r);
  CHECK(r->why == reason::none);
  CHECK_THAT(r->message, Catch::Contains("127.0.0.2") && !Catch::Contains("10.9.9.9"));
}

TEST_CASE("dns: a reply to another question is ignored", "[dns][fault]") {
  SECTION("followed by the right reply") {
    test::dns_fault_server srv([](const std::vector<std::uint8_t>& q) {
      return std::vector<std::vector<std::uint8_t>>{
          test::dns_reply(q, {test::a_record(10, 9, 9, 9)}, 0, "other.example.test."),
          test::dns_reply(q, {test::a_record(127, 0, 0, 3)})};
    });
    auto r = run_dns(opts({{"query", std::string("www.example.test")}}), srv.target_text());
    REQUIRE(r);
    CHECK(r->why == reason::none);
    CHECK_THAT(r->message, Catch::Contains("127.0.0.3") && !Catch::Contains("10.9.9.9"));
  }
  SECTION("alone: the probe keeps waiting and times out") {
    test::dns_fault_server srv([](const std::vector<std::uint8_t>& q) {
      return std::vector<std::vector<std::uint8_t>>{
          test::dns_reply(q, {test::a_record(10, 9, 9, 9)}, 0, "other.example.test."),
          test::dns_reply(q, {test::a_record(10, 9, 9, 8)}, 1)};
    });
    auto r = run_dns(opts({{"query", std::string("www.example.test")}}), srv.target_text(), 300ms);
    REQUIRE(r);
    CHECK(r->why == reason::timeout);
    CHECK_THAT(r->message, Catch::Contains("2 unmatched replies ignored"));
  }
}

TEST_CASE("dns: silence is a timeout", "[dns][fault]") {
  test::dns_fault_server srv(
      [](const std::vector<std::uint8_t>&) { return std::vector<std::vector<std::uint8_t>>{}; });
  auto start = clock::now();
  auto r = run_dns(opts({{"query", std::string("www.example.test")}}), srv.target_text(), 200ms);
  auto took = clock::now() - start;
  REQUIRE(r);
  CHECK(r->why == reason::timeout);
  CHECK_THAT(r->message, Catch::Contains("no reply from 127.0.0.1 port"));
  CHECK_FALSE(r->latency);
  CHECK(took >= 190ms);
  CHECK(took < 1500ms);
  CHECK(srv.queries() == 1);
}

TEST_CASE("dns: each run uses a fresh random id", "[dns][fault]") {
  std::mutex mu;
  std::vector<std::uint16_t> ids;
  test::dns_fault_server srv([&](const std::vector<std::uint8_t>& q) {
    std::lock_guard lock(mu);
    ids.push_back(static_cast<std::uint16_t>((q[0] << 8) | q[1]));
    return std::vector<std::vector<std::uint8_t>>{test::dns_reply(q, {})};
  });
  for (int i = 0; i < 8; ++i) {
    auto r = run_dns(opts({{"query", std::string("www.example.test")}}), srv.target_text());
    REQUIRE(r);
    CHECK(r->why == reason::none);
  }
  std::lock_guard lock(mu);
  REQUIRE(ids.size() == 8);
  std::sort(ids.begin(), ids.end());
  CHECK(std::unique(ids.begin(), ids.end()) - ids.begin() >= 7);  // 16 bits: a repeat is rare
}

TEST_CASE("dns: runs to one server reuse its socket, a late duplicate answers nothing",
          "[dns][fault]") {
  // Every query is answered twice: the duplicate stays queued on the kept socket and is read
  // (and ignored: another id) by the next run, which takes only its own answer.
  std::atomic<int> n{0};
  test::dns_fault_server srv([&](const std::vector<std::uint8_t>& q) {
    const auto i = static_cast<std::uint8_t>(++n);
    auto reply = test::dns_reply(q, {test::a_record(127, 0, 0, i)});
    return std::vector<std::vector<std::uint8_t>>{reply, reply};
  });
  auto p = test::make<dns_probe>(opts({{"query", std::string("www.example.test")}}));
  asio::io_context io;
  auto rs = test::run_in_sequence(io, p, test::target_for<dns_probe>(srv.target_text()), 3);
  REQUIRE(rs.size() == 3);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(rs[i]);
    INFO(rs[i]->message);
    CHECK(rs[i]->why == reason::none);
    CHECK_THAT(rs[i]->message, Catch::Contains("127.0.0." + std::to_string(i + 1)));
  }
  CHECK(srv.queries() == 3);
  CHECK(srv.source_ports().size() == 1);  // one socket for all three
  auto& kept = asio::use_service<detail::udp_session_cache>(io);
  CHECK(kept.reused() == 2);
  CHECK(kept.idle() == 1);
}

TEST_CASE("dns: a run without an answer does not keep its socket", "[dns][fault]") {
  std::atomic<int> n{0};
  test::dns_fault_server srv([&](const std::vector<std::uint8_t>& q) {
    // The first query is not answered, the others are.
    if (++n == 1) return std::vector<std::vector<std::uint8_t>>{};
    return std::vector<std::vector<std::uint8_t>>{
        test::dns_reply(q, {test::a_record(127, 0, 0, 7)})};
  });
  auto p = test::make<dns_probe>(opts({{"query", std::string("www.example.test")}}));
  asio::io_context io;
  auto t = test::target_for<dns_probe>(srv.target_text());
  auto rs = test::run_in_sequence(io, p, t, 1, 200ms);
  REQUIRE(rs.front());
  CHECK(rs.front()->why == reason::timeout);
  auto& kept = asio::use_service<detail::udp_session_cache>(io);
  CHECK(kept.idle() == 0);
  rs = test::run_in_sequence(io, p, t, 2);
  for (auto& r : rs) {
    REQUIRE(r);
    CHECK(r->why == reason::none);
  }
  CHECK(srv.source_ports().size() == 2);  // a new socket after the timeout, then kept
  CHECK(kept.reused() == 1);
}

TEST_CASE("dns: option errors name the key", "[dns]") {
  auto err = [](const option_set& set) {
    auto p = make_probe<dns_probe>(set);
    REQUIRE_FALSE(p);
    CHECK(p.error().code == probe_errc::invalid_option);
    return p.error();
  };
  auto missing = err({});
  CHECK(missing.key == "query");
  CHECK_THAT(missing.message, Catch::Contains("'query' is required"));
  CHECK(err(opts({{"query", std::string("")}})).key == "query");
  CHECK(err(opts({{"query", std::string("a..b")}})).key == "query");
  CHECK(err(opts({{"query", std::string("x")}, {"record_type", std::string("HINFO")}})).key ==
        "record_type");
  CHECK(err(opts({{"query", std::string("x")}, {"transport", std::string("doh")}})).key ==
        "transport");
  CHECK(err(opts({{"query", std::string("x")}, {"expect_rcode", std::string("BOGUS")}})).key ==
        "expect_rcode");
  CHECK(err(opts({{"query", std::string("x")}, {"family", std::string("ipx")}})).key == "family");
  CHECK(err(opts({{"query", std::string("x")}, {"edns_udp_size", std::int64_t{100}}})).key ==
        "edns_udp_size");
  CHECK(err(opts({{"query", std::string("x")}, {"recursion_desired", std::string("yes")}})).key ==
        "recursion_desired");
  CHECK(err(opts({{"query", std::string("x")}, {"expect_answers", std::vector<std::string>{""}}}))
            .key == "expect_answers");
  auto p = make_probe<dns_probe>(opts({{"query", std::string("WWW.Example.Test")}}));
  REQUIRE(p);
  CHECK(p->query_name() == "WWW.Example.Test.");
}

TEST_CASE("dns: target defaults to port 53", "[dns]") {
  auto t = parse_target_for<dns_probe>("127.0.0.1");
  REQUIRE(t);
  CHECK(t->port == 53);
  t = parse_target_for<dns_probe>("[::1]:5353");
  REQUIRE(t);
  CHECK(t->port == 5353);
}

TEST_CASE("dns: the plugin runs through the C ABI", "[dns][plugins][integration]") {
  const sonde_plugin_descriptor* d = test::plugin_descriptor("dns");
  REQUIRE(d->type_count == 1);
  const sonde_probe_type& t = d->types[0];
  CHECK(std::string(t.name) == "dns");
  CHECK(std::string(t.target_form) == "host[:port]");
  bool nxdomain = false;
  for (std::size_t i = 0; i < t.enum_count; ++i)
    if (std::string(t.enums[i].metric) == "rcode" && std::string(t.enums[i].name) == "NXDOMAIN")
      nxdomain = t.enums[i].value == 3;
  CHECK(nxdomain);

  test::unbound_server ub;
  sonde_option o[2]{};
  o[0].key = "query";
  o[0].value.type = SONDE_VALUE_STRING;
  o[0].value.string = "nope.example.test";
  o[1].key = "expect_rcode";
  o[1].value.type = SONDE_VALUE_STRING;
  o[1].value.string = "NXDOMAIN";
  void* inst = nullptr;
  sonde_error e{};
  REQUIRE(t.create(ub.v4().c_str(), o, 2, &inst, &e) == 0);
  auto out = test::run_c(t, inst, 3s);
  t.destroy(inst);
  REQUIRE(out.done);
  CHECK(out.reason == 0);
  CHECK(out.message == "NXDOMAIN, 0 answers");

  CHECK(t.create(ub.v4().c_str(), o + 1, 1, &inst, &e) != 0);
  CHECK(std::string(e.key) == "query");
}
