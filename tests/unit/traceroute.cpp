// traceroute_probe: option validation, answer matching against golden packets, loopback runs.
// Multi-hop paths are tested by tests/cli/traceroute_netns.sh, which also runs the hidden
// "[.traceroute-netns]" cases inside a network namespace with only lo (routes absent, echo
// replies disabled): no route, nobody answers, io_context destroyed mid-run.
#include <sonde/traceroute.hpp>

#include <catch2/catch.hpp>

#include "core/config.hpp"
#include "core/plugin_host.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <poll.h>

#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "support/c_abi.hpp"
#include "support/support.hpp"

using namespace sonde;
using namespace std::chrono_literals;
namespace tr = sonde::detail::traceroute;

namespace {

traceroute_probe make_trace(std::initializer_list<std::pair<const char*, option_value>> kv = {}) {
  option_set set;
  for (auto& [k, v] : kv) set.set(k, v);
  return test::make<traceroute_probe>(set);
}

tl::expected<traceroute_probe, probe_error> try_make(
    std::initializer_list<std::pair<const char*, option_value>> kv) {
  option_set set;
  for (auto& [k, v] : kv) set.set(k, v);
  return make_probe<traceroute_probe>(set);
}

using test::no_icmp_permission;

bool no_ipv6(const probe_result& r) {
  if (!r && r.error().code == probe_errc::unsupported) {
    WARN("skipped: " << r.error().message);
    return true;
  }
  return false;
}

/// A destination one hop away (loopback): reached at `hop`, every probe of that hop answered.
void check_reached(const probe_result& r, const std::string& addr, int hop = 1) {
  REQUIRE(r);
  INFO(r->message);
  CHECK(r->why == reason::none);
  CHECK(r->get("reached") == 1.0);
  CHECK(r->get("hops") == double(hop));
  CHECK(r->get("loss") == 0.0);
  CHECK(r->get("sent") >= 3.0);
  const double mn = *r->get("rtt_min"), avg = *r->get("rtt_avg"), mx = *r->get("rtt_max");
  CHECK(mn > 0);
  CHECK(mn <= avg);
  CHECK(avg <= mx);
  CHECK(mx < 1.0);
  CHECK(r->get("latency") == avg);
  REQUIRE(r->latency);
  const std::string h = "hop." + std::to_string(hop) + ".";
  CHECK(r->get(h + "loss") == 0.0);
  CHECK(r->get(h + "rtt_avg") == avg);
  CHECK_FALSE(r->get("hop." + std::to_string(hop + 1) + ".loss"));  // nothing beyond
  CHECK_THAT(r->message, Catch::StartsWith(addr + " reached in " + std::to_string(hop) +
                                           (hop == 1 ? " hop: " : " hops: ") + std::to_string(hop) +
                                           " " + addr + " "));
  CHECK_THAT(r->message, Catch::EndsWith(" ms"));
}

std::size_t open_fds() {
  std::size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d)) ++n;
    ::closedir(d);
  }
  return n;
}

std::string read_file(const char* path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// ---- golden packets (generated with a small Python script from the RFC 791/792/8200 layouts)
// Router 10.99.2.2 -> 10.99.1.2: ICMP time exceeded quoting the IPv4 header of an echo request
// 10.99.1.2 -> 10.99.3.2 (TTL 1) and its first 8 bytes: identifier 0x1234, sequence 0x0001.
const std::uint8_t v4_time_exceeded[] = {
    0x45, 0x00, 0x00, 0x38, 0x1c, 0x46, 0x00, 0x00, 0x3f, 0x01, 0x47, 0xb6, 0x0a, 0x63,
    0x02, 0x02, 0x0a, 0x63, 0x01, 0x02, 0x0b, 0x00, 0x01, 0x10, 0x00, 0x00, 0x00, 0x00,
    0x45, 0x00, 0x00, 0x24, 0x1c, 0x46, 0x00, 0x00, 0x01, 0x01, 0x84, 0xca, 0x0a, 0x63,
    0x01, 0x02, 0x0a, 0x63, 0x03, 0x02, 0x08, 0x00, 0xd9, 0xba, 0x12, 0x34, 0x00, 0x01};
// The same router: host unreachable (type 3 code 1) for the request with sequence 0x0002.
const std::uint8_t v4_host_unreachable[] = {
    0x45, 0x00, 0x00, 0x38, 0x1c, 0x46, 0x00, 0x00, 0x3f, 0x01, 0x47, 0xb6, 0x0a, 0x63,
    0x02, 0x02, 0x0a, 0x63, 0x01, 0x02, 0x03, 0x01, 0x09, 0x0f, 0x00, 0x00, 0x00, 0x00,
    0x45, 0x00, 0x00, 0x24, 0x1c, 0x46, 0x00, 0x00, 0x01, 0x01, 0x84, 0xca, 0x0a, 0x63,
    0x01, 0x02, 0x0a, 0x63, 0x03, 0x02, 0x08, 0x00, 0xd9, 0xb9, 0x12, 0x34, 0x00, 0x02};
// ICMPv6 hop limit exceeded (as an ICMPv6 socket delivers it) quoting an echo request
// fd99:1::2 -> fd99:3::2, identifier 0x1234, sequence 0xffff, and 8 payload bytes.
const std::uint8_t v6_time_exceeded[] = {
    0x03, 0x00, 0xab, 0xcd, 0x00, 0x00, 0x00, 0x00, 0x60, 0x00, 0x00, 0x00, 0x00, 0x10, 0x3a, 0x01,
    0xfd, 0x99, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
    0xfd, 0x99, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
    0x80, 0x00, 0x00, 0x00, 0x12, 0x34, 0xff, 0xff, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07};
// ICMPv4 echo reply as a datagram socket delivers it: identifier 0x1234, sequence 0x0003,
// payload cookie 0x0123456789abcdef, send time 1, 16 zero bytes.
const std::uint8_t v4_echo_reply[] = {0x00, 0x00, 0x4f, 0xa2, 0x12, 0x34, 0x00, 0x03, 0x01, 0x23,
                                      0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x00, 0x00, 0x00, 0x00,
                                      0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};

std::array<std::uint8_t, 16> addr(const char* text) {
  std::array<std::uint8_t, 16> b{};
  auto a = asio::ip::make_address(text);
  if (a.is_v4()) {
    auto v = a.to_v4().to_bytes();
    std::copy(v.begin(), v.end(), b.begin());
  } else {
    b = a.to_v6().to_bytes();
  }
  return b;
}

tr::run_key key_v4(tr::probe_method m = tr::probe_method::icmp) {
  tr::run_key k;
  k.family = 4;
  k.destination = addr("10.99.3.2");
  k.method = m;
  k.identifier = 0x1234;
  k.first_sequence = 0xfffe;  // probe 0 = 0xfffe, 1 = 0xffff, 2 = 0x0000, 3 = 0x0001
  k.first_port = 33434;
  k.count = 90;
  k.cookie = 0x0123456789abcdefull;
  return k;
}

template <std::size_t N>
std::span<const std::uint8_t> bytes(const std::uint8_t (&a)[N]) {
  return {a, N};
}

std::span<const std::uint8_t> v4(const std::array<std::uint8_t, 16>& a) {
  return {a.data(), 4};
}

}  // namespace

// ---- options ---------------------------------------------------------------------------------

TEST_CASE("traceroute: defaults", "[traceroute]") {
  auto p = make_trace();
  CHECK(p.opts().method == "icmp");
  CHECK(p.opts().max_hops == 30);
  CHECK(p.opts().first_hop == 1);
  CHECK(p.opts().probes_per_hop == 3);
  CHECK(p.opts().port == 33434);
  CHECK(p.opts().size == 32);
  CHECK(p.opts().wait == duration(2s));
  CHECK(p.opts().packet_interval == duration(5ms));
  CHECK(p.opts().family == "auto");
}

TEST_CASE("traceroute: option validation errors name the key", "[traceroute]") {
  struct bad {
    const char* key;
    option_value value;
  };
  for (const auto& b : std::vector<bad>{
           {"method", std::string("tcp")},
           {"max_hops", std::int64_t{0}},
           {"max_hops", std::int64_t{256}},
           {"probes_per_hop", std::int64_t{0}},
           {"probes_per_hop", std::int64_t{11}},
           {"port", std::int64_t{0}},
           {"port", std::int64_t{65536}},
           {"size", std::int64_t{15}},
           {"size", std::int64_t{65001}},
           {"wait", duration(0ms)},
           {"wait", duration(2h)},
           {"packet_interval", duration(-1ms)},
           {"packet_interval", duration(11s)},
           {"family", std::string("ipx")},
           {"first_hop", std::int64_t{0}},
           {"first_hop", std::int64_t{31}},  // beyond max_hops (30)
       }) {
    auto p = try_make({{b.key, b.value}});
    INFO(b.key);
    REQUIRE_FALSE(p);
    CHECK(p.error().code == probe_errc::invalid_option);
    CHECK(p.error().key == b.key);
    CHECK_THAT(p.error().message, Catch::Contains(b.key));
  }
  // A wrong type is refused too.
  auto wrong = try_make({{"max_hops", std::string("ten")}});
  REQUIRE_FALSE(wrong);
  CHECK(wrong.error().key == "max_hops");

  // UDP ports: one per probe, all within 65535. ICMP ignores the port.
  auto udp = try_make({{"method", std::string("udp")}, {"port", std::int64_t{65500}}});
  REQUIRE_FALSE(udp);
  CHECK(udp.error().key == "port");
  CHECK_THAT(udp.error().message, Catch::Contains("at most 65446"));
  CHECK(try_make({{"method", std::string("udp")}, {"port", std::int64_t{65446}}}));
  CHECK(try_make({{"port", std::int64_t{65500}}}));
  CHECK(try_make({{"method", std::string("UDP")}}));
  CHECK(try_make({{"first_hop", std::int64_t{5}}, {"max_hops", std::int64_t{5}}}));
  CHECK(try_make({{"packet_interval", duration(0ms)}}));
}

TEST_CASE("traceroute: a send schedule longer than the timeout is refused", "[traceroute]") {
  // 90 probes every 100ms: 8.9s to send.
  auto p = try_make({{"packet_interval", duration(100ms)}, {"timeout", duration(5s)}});
  REQUIRE_FALSE(p);
  CHECK(p.error().key == "packet_interval");
  CHECK_THAT(p.error().message, Catch::Contains("90 probes (30 hops x 3)"));
  CHECK(try_make({{"packet_interval", duration(100ms)}, {"timeout", duration(10s)}}));

  // Known only at run time: the deadline.
  auto q = make_trace({{"packet_interval", duration(10ms)}});
  auto r = test::run_probe(q, test::target_for<traceroute_probe>("127.0.0.1"), 200ms);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == probe_errc::invalid_option);
  CHECK(r.error().key == "packet_interval");
}

TEST_CASE("traceroute: option and metric tables", "[traceroute]") {
  std::vector<std::string> keys;
  for (const auto& o : traceroute_probe::option_table) keys.emplace_back(o.key);
  CHECK(keys == std::vector<std::string>{"method", "max_hops", "first_hop", "probes_per_hop",
                                         "port", "size", "wait", "packet_interval", "family"});
  // Every option in the table is read by options_from.
  option_set set;
  set.set("method", std::string("udp"));
  set.set("max_hops", std::int64_t{9});
  set.set("first_hop", std::int64_t{2});
  set.set("probes_per_hop", std::int64_t{1});
  set.set("port", std::int64_t{40000});
  set.set("size", std::int64_t{100});
  set.set("wait", duration(700ms));
  set.set("packet_interval", duration(1ms));
  set.set("family", std::string("ipv4"));
  auto p = make_probe<traceroute_probe>(set);
  REQUIRE(p);
  CHECK(p->opts().method == "udp");
  CHECK(p->opts().max_hops == 9);
  CHECK(p->opts().first_hop == 2);
  CHECK(p->opts().probes_per_hop == 1);
  CHECK(p->opts().port == 40000);
  CHECK(p->opts().size == 100);
  CHECK(p->opts().wait == duration(700ms));
  CHECK(p->opts().packet_interval == duration(1ms));
  CHECK(p->opts().family == "ipv4");

  std::map<std::string, std::string> units;
  for (const auto& m : traceroute_probe::metric_table) units[std::string(m.name)] = m.unit;
  CHECK(units == std::map<std::string, std::string>{{"latency", "s"},
                                                    {"hops", "count"},
                                                    {"reached", "count"},
                                                    {"sent", "count"},
                                                    {"rtt_min", "s"},
                                                    {"rtt_avg", "s"},
                                                    {"rtt_max", "s"},
                                                    {"loss", "%"},
                                                    {"hop.<n>.rtt_avg", "s"},
                                                    {"hop.<n>.loss", "%"}});
}

TEST_CASE("traceroute: targets take no port", "[traceroute]") {
  CHECK_FALSE(parse_target_for<traceroute_probe>("127.0.0.1:80"));
  CHECK(parse_target_for<traceroute_probe>("[::1]"));
  CHECK(parse_target_for<traceroute_probe>("localhost"));
}

// ---- matching (golden packets) ------------------------------------------------------------

TEST_CASE("traceroute: probe numbering wraps the sequence and bounds the ports",
          "[traceroute][wire]") {
  auto k = key_v4();
  CHECK(tr::sequence_of(k, 0) == 0xfffe);
  CHECK(tr::sequence_of(k, 3) == 0x0001);
  CHECK(tr::index_of_sequence(k, 0x0001) == 3u);
  CHECK(tr::index_of_sequence(k, 0xfffe) == 0u);
  CHECK(tr::index_of_sequence(k, 0xfffd) == std::nullopt);
  CHECK(tr::index_of_sequence(k, static_cast<std::uint16_t>(0xfffe + 90)) == std::nullopt);
  CHECK(tr::index_of_sequence(k, static_cast<std::uint16_t>(0xfffe + 89)) == 89u);
  CHECK(tr::port_of(k, 5) == 33439);
  CHECK(tr::index_of_port(k, 33434) == 0u);
  CHECK(tr::index_of_port(k, 33433) == std::nullopt);
  CHECK(tr::index_of_port(k, 33434 + 89) == 89u);
  CHECK(tr::index_of_port(k, 33434 + 90) == std::nullopt);
}

TEST_CASE("traceroute: an IPv4 time exceeded from a raw socket matches its probe",
          "[traceroute][wire]") {
  auto k = key_v4();
  const auto router = addr("10.99.2.2");
  auto a = tr::match_icmp_message(bytes(v4_time_exceeded), detail::icmp::wire_layout::ipv4_raw,
                                  v4(router), k);
  REQUIRE(a);
  CHECK(a->index == 3);  // sequence 0x0001
  CHECK(a->kind == tr::answer_kind::time_exceeded);
  CHECK(a->type == 11);
  CHECK(a->code == 0);
  CHECK(a->from == router);
  CHECK_FALSE(a->from_destination);
  CHECK(tr::hop_flag(4, a->type, a->code).empty());

  SECTION("another identifier is someone else's") {
    k.identifier = 0x1235;
    CHECK_FALSE(tr::match_icmp_message(bytes(v4_time_exceeded), detail::icmp::wire_layout::ipv4_raw,
                                       v4(router), k));
  }
  SECTION("a probe to another destination is someone else's") {
    k.destination = addr("10.99.3.3");
    CHECK_FALSE(tr::match_icmp_message(bytes(v4_time_exceeded), detail::icmp::wire_layout::ipv4_raw,
                                       v4(router), k));
  }
  SECTION("a sequence outside the run") {
    k.count = 3;
    CHECK_FALSE(tr::match_icmp_message(bytes(v4_time_exceeded), detail::icmp::wire_layout::ipv4_raw,
                                       v4(router), k));
  }
  SECTION("a UDP run ignores ICMP-socket messages") {
    k.method = tr::probe_method::udp;
    CHECK_FALSE(tr::match_icmp_message(bytes(v4_time_exceeded), detail::icmp::wire_layout::ipv4_raw,
                                       v4(router), k));
  }
  SECTION("every truncation and a flipped byte are rejected or harmless") {
    for (std::size_t n = 0; n < sizeof v4_time_exceeded; ++n)
      CHECK_FALSE(tr::match_icmp_message(bytes(v4_time_exceeded).first(n),
                                         detail::icmp::wire_layout::ipv4_raw, v4(router), k));
    std::vector<std::uint8_t> bad(std::begin(v4_time_exceeded), std::end(v4_time_exceeded));
    bad[22] ^= 0xff;  // the ICMP checksum
    CHECK_FALSE(tr::match_icmp_message(bad, detail::icmp::wire_layout::ipv4_raw, v4(router), k));
  }
}

TEST_CASE("traceroute: an unreachable error ends the path with a flag", "[traceroute][wire]") {
  auto k = key_v4();
  const auto router = addr("10.99.2.2");
  auto a = tr::match_icmp_message(bytes(v4_host_unreachable), detail::icmp::wire_layout::ipv4_raw,
                                  v4(router), k);
  REQUIRE(a);
  CHECK(a->index == 4);  // sequence 0x0002
  CHECK(a->kind == tr::answer_kind::error);
  CHECK(tr::hop_flag(4, a->type, a->code) == "!H");
  CHECK_FALSE(a->from_destination);
  // The same error from the destination itself means it was reached.
  auto d = tr::match_icmp_message(bytes(v4_host_unreachable), detail::icmp::wire_layout::ipv4_raw,
                                  v4(k.destination), k);
  REQUIRE(d);
  CHECK(d->from_destination);
}

TEST_CASE("traceroute: an ICMPv6 hop limit exceeded matches its probe", "[traceroute][wire]") {
  tr::run_key k;
  k.family = 6;
  k.destination = addr("fd99:3::2");
  k.identifier = 0x1234;
  k.first_sequence = 0xfff0;
  k.count = 30;
  const auto router = addr("fd99:1::1");
  auto a = tr::match_icmp_message(bytes(v6_time_exceeded), detail::icmp::wire_layout::ipv6,
                                  std::span<const std::uint8_t>(router), k);
  REQUIRE(a);
  CHECK(a->index == 15);
  CHECK(a->kind == tr::answer_kind::time_exceeded);
  CHECK(a->from == router);
  CHECK(tr::hop_flag(6, 1, 4).empty());  // port unreachable: the normal end of a UDP trace
  CHECK(tr::hop_flag(6, 1, 0) == "!N");
  CHECK(tr::hop_flag(6, 1, 1) == "!X");
  CHECK(tr::hop_flag(6, 2, 0) == "!F");
  CHECK(tr::hop_flag(4, 3, 0) == "!N");
  CHECK(tr::hop_flag(4, 3, 2) == "!P");
  CHECK(tr::hop_flag(4, 3, 3).empty());
  CHECK(tr::hop_flag(4, 3, 13) == "!X");
  CHECK(tr::hop_flag(4, 3, 8) == "!8");
  CHECK(tr::hop_flag(4, 11, 1) == "!T");
}

TEST_CASE("traceroute: echo replies must come from the destination with the run's cookie",
          "[traceroute][wire]") {
  auto k = key_v4();
  auto a = tr::match_icmp_message(bytes(v4_echo_reply), detail::icmp::wire_layout::ipv4_datagram,
                                  v4(k.destination), k);
  REQUIRE(a);
  CHECK(a->index == 5);  // sequence 0x0003
  CHECK(a->kind == tr::answer_kind::reply);
  CHECK(a->from_destination);
  const auto other = addr("10.99.3.3");
  CHECK_FALSE(tr::match_icmp_message(bytes(v4_echo_reply), detail::icmp::wire_layout::ipv4_datagram,
                                     v4(other), k));
  k.cookie ^= 1;
  CHECK_FALSE(tr::match_icmp_message(bytes(v4_echo_reply), detail::icmp::wire_layout::ipv4_datagram,
                                     v4(k.destination), k));
}

TEST_CASE("traceroute: error-queue entries match by sequence (ICMP) or port (UDP)",
          "[traceroute][wire]") {
  auto k = key_v4();
  const auto router = addr("10.99.1.1");
  // What a datagram ICMP socket's error queue returns: the original echo request.
  const std::uint8_t echo[] = {0x08, 0x00, 0x00, 0x00, 0x12, 0x34, 0xff, 0xff, 0xaa, 0xbb};
  tr::queued_error e;
  e.origin = tr::error_origin::icmp;
  e.type = 11;
  e.code = 0;
  e.offender = v4(router);
  e.original_destination = v4(k.destination);
  e.payload = bytes(echo);
  auto a = tr::match_queued_error(e, k);
  REQUIRE(a);
  CHECK(a->index == 1);
  CHECK(a->kind == tr::answer_kind::time_exceeded);
  CHECK(a->from == router);

  auto wrong = e;
  wrong.origin = tr::error_origin::icmp6;
  CHECK_FALSE(tr::match_queued_error(wrong, k));
  wrong = e;
  wrong.origin = tr::error_origin::local;
  CHECK_FALSE(tr::match_queued_error(wrong, k));
  wrong = e;
  const auto elsewhere = addr("10.99.3.9");
  wrong.original_destination = v4(elsewhere);
  CHECK_FALSE(tr::match_queued_error(wrong, k));
  wrong = e;
  wrong.payload = bytes(echo).first(7);
  CHECK_FALSE(tr::match_queued_error(wrong, k));
  wrong = e;
  wrong.original_destination = {};
  CHECK_FALSE(tr::match_queued_error(wrong, k));

  // UDP: the probed port names the probe; the payload may be cut off by the router.
  auto ku = key_v4(tr::probe_method::udp);
  tr::queued_error u;
  u.origin = tr::error_origin::icmp;
  u.type = 3;
  u.code = 3;
  u.offender = v4(ku.destination);
  u.original_destination = v4(ku.destination);
  u.original_port = 33434 + 7;
  auto b = tr::match_queued_error(u, ku);
  REQUIRE(b);
  CHECK(b->index == 7);
  CHECK(b->kind == tr::answer_kind::error);
  CHECK(b->from_destination);
  u.original_port = 33434 + 90;
  CHECK_FALSE(tr::match_queued_error(u, ku));
  u.original_port = 33433;
  CHECK_FALSE(tr::match_queued_error(u, ku));

  // UDP data from the destination's probed port.
  auto c = tr::match_udp_reply(v4(ku.destination), 33434 + 2, ku);
  REQUIRE(c);
  CHECK(c->index == 2);
  CHECK(c->kind == tr::answer_kind::reply);
  CHECK_FALSE(tr::match_udp_reply(v4(router), 33434 + 2, ku));
  CHECK_FALSE(tr::match_udp_reply(v4(ku.destination), 53, ku));
}

// ---- loopback runs ----------------------------------------------------------------------------

TEST_CASE("traceroute: 127.0.0.1 is reached in 1 hop (ICMP and UDP)", "[traceroute][integration]") {
  for (const char* m : {"icmp", "udp"}) {
    INFO(m);
    auto p = make_trace({{"method", std::string(m)}});
    auto r = test::run_probe(p, test::target_for<traceroute_probe>("127.0.0.1"));
    if (no_icmp_permission(r)) continue;
    check_reached(r, "127.0.0.1");
  }
}

TEST_CASE("traceroute: ::1 is reached in 1 hop (ICMP and UDP)", "[traceroute][integration]") {
  for (const char* m : {"icmp", "udp"}) {
    INFO(m);
    auto p = make_trace({{"method", std::string(m)}});
    auto r = test::run_probe(p, test::target_for<traceroute_probe>("::1"));
    if (no_icmp_permission(r) || no_ipv6(r)) continue;
    check_reached(r, "::1");
  }
}

TEST_CASE("traceroute: first_hop, one probe per hop, big packets, names and mapped addresses",
          "[traceroute][integration]") {
  for (const char* m : {"icmp", "udp"}) {
    INFO(m);
    // Starting at TTL 2, the destination answers the first probe sent: hop 2.
    auto p = make_trace({{"method", std::string(m)}, {"first_hop", std::int64_t{2}}});
    auto r = test::run_probe(p, test::target_for<traceroute_probe>("127.0.0.1"));
    if (no_icmp_permission(r)) continue;
    check_reached(r, "127.0.0.1", 2);
    CHECK_FALSE(r->get("hop.1.loss"));

    auto one = make_trace({{"method", std::string(m)},
                           {"probes_per_hop", std::int64_t{1}},
                           {"size", std::int64_t{9000}},
                           {"family", std::string("ipv4")}});
    auto r1 = test::run_probe(one, test::target_for<traceroute_probe>("localhost"));
    REQUIRE(r1);
    INFO(r1->message);
    CHECK(r1->get("reached") == 1.0);
    CHECK(r1->get("sent") >= 1.0);
    CHECK_THAT(r1->message, Catch::StartsWith("127.0.0.1 reached in 1 hop: 1 127.0.0.1 "));

    auto mapped = make_trace({{"method", std::string(m)}, {"probes_per_hop", std::int64_t{1}}});
    auto r2 = test::run_probe(mapped, test::target_for<traceroute_probe>("::ffff:127.0.0.1"));
    REQUIRE(r2);
    CHECK_THAT(r2->message, Catch::StartsWith("127.0.0.1 reached in 1 hop"));
  }
}

TEST_CASE("traceroute: a name of the wrong family does not resolve", "[traceroute]") {
  auto p = make_trace({{"family", std::string("ipv6")}});
  auto r = test::run_probe(p, test::target_for<traceroute_probe>("127.0.0.1"));
  REQUIRE(r);
  CHECK(r->why == reason::resolve);
  CHECK_FALSE(r->get("reached"));
}

TEST_CASE("traceroute: UDP data from the probed port counts as reaching the destination",
          "[traceroute][integration]") {
  // An echo server on a loopback UDP port: the probe's port is its port.
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  socklen_t len = sizeof sa;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0);
  const int port = ntohs(sa.sin_port);
  std::thread echo([fd] {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, 3000) != 1) return;
    char buf[2048];
    sockaddr_storage from{};
    socklen_t flen = sizeof from;
    const ssize_t n = ::recvfrom(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &flen);
    if (n > 0)
      ::sendto(fd, buf, static_cast<std::size_t>(n), 0, reinterpret_cast<sockaddr*>(&from), flen);
  });
  auto p = make_trace({{"method", std::string("udp")},
                       {"port", std::int64_t{port}},
                       {"max_hops", std::int64_t{1}},
                       {"probes_per_hop", std::int64_t{1}}});
  auto r = test::run_probe(p, test::target_for<traceroute_probe>("127.0.0.1"));
  echo.join();
  ::close(fd);
  REQUIRE(r);
  INFO(r->message);
  CHECK(r->why == reason::none);
  CHECK(r->get("reached") == 1.0);
  CHECK(r->get("hops") == 1.0);
  CHECK(r->get("sent") == 1.0);
}

TEST_CASE("traceroute: concurrent runs on one io_context each get their own answers",
          "[traceroute][integration]") {
  const std::size_t fds_before = open_fds();
  std::vector<std::optional<probe_result>> out(40);
  std::vector<std::string> targets;
  {
    asio::io_context io;
    std::vector<traceroute_probe> probes{make_trace(),
                                         make_trace({{"method", std::string("udp")}})};
    const auto dl = clock::now() + 3s;
    for (std::size_t i = 0; i < out.size(); ++i) {
      targets.push_back("127.0.3." + std::to_string(i + 1));
      asio::co_spawn(
          io,
          [](const traceroute_probe* p, target t, deadline d,
             std::optional<probe_result>* o) -> asio::awaitable<void> {
            *o = co_await p->run(std::move(t), d);
          }(&probes[i % 2], test::target_for<traceroute_probe>(targets.back()), dl, &out[i]),
          asio::detached);
    }
    io.run();
  }
  for (std::size_t i = 0; i < out.size(); ++i) {
    REQUIRE(out[i]);
    if (no_icmp_permission(*out[i])) continue;
    check_reached(*out[i], targets[i]);
  }
  CHECK(open_fds() == fds_before);  // every run closed its socket (and the io_context is gone)
}

TEST_CASE("traceroute: the plugin provides traceroute over the C ABI",
          "[traceroute][plugins][integration]") {
  engine::plugin_host host;
  host.load_dirs({{SONDE_TEST_PLUGIN_DIR, "test"}});
  const auto* e = host.find("traceroute");
  REQUIRE(e);
  CHECK(e->type->option_count == std::size(traceroute_probe::option_table));
  CHECK(e->type->metric_count == std::size(traceroute_probe::metric_table));

  auto bad = engine::create_probe(*e, "127.0.0.1", {{"max_hops", std::int64_t{0}}});
  REQUIRE_FALSE(bad);
  CHECK(bad.error().key == "max_hops");
  auto probe = engine::create_probe(*e, "127.0.0.1", {{"method", std::string("udp")}});
  REQUIRE(probe);
  auto out = test::run_c(*(*probe)->type(), (*probe)->handle(), 2s);
  REQUIRE(out.done);
  INFO(out.message);
  CHECK(out.has_observation == 1);
  CHECK(out.reason == int(reason::none));
  CHECK(out.metric("reached") == 1.0);
  CHECK(out.metric("hops") == 1.0);
}

// ---- in a namespace with only lo (tests/cli/traceroute_netns.sh) --------------------------

namespace {
void require_private_netns() {
  std::istringstream routes(read_file("/proc/net/route"));
  std::string line;
  std::getline(routes, line);  // header
  const bool has_routes = static_cast<bool>(std::getline(routes, line));
  INFO("run through tests/cli/traceroute_netns.sh: needs a network namespace with only lo");
  REQUIRE_FALSE(has_routes);
  REQUIRE(read_file("/proc/sys/net/ipv4/icmp_echo_ignore_all").substr(0, 1) == "1");
}
}  // namespace

TEST_CASE("traceroute: no route to the target is unreachable", "[.traceroute-netns]") {
  require_private_netns();
  for (const char* m : {"icmp", "udp"}) {
    INFO(m);
    auto p = make_trace({{"method", std::string(m)}});
    const auto t0 = clock::now();
    auto r = test::run_probe(p, test::target_for<traceroute_probe>("10.99.9.9"));
    if (no_icmp_permission(r)) continue;
    REQUIRE(r);
    INFO(r->message);
    CHECK(r->why == reason::unreachable);
    CHECK(r->message == "10.99.9.9 not reached: sending failed: Network is unreachable");
    CHECK(r->get("reached") == 0.0);
    CHECK(r->get("hops") == 0.0);
    CHECK(r->get("sent") == 1.0);  // the first failure stops the run
    CHECK(clock::now() - t0 < 500ms);
  }
}

TEST_CASE("traceroute: nobody answering is a timeout", "[.traceroute-netns]") {
  require_private_netns();
  // Echo replies are off: ICMP probes to loopback go unanswered.
  auto p = make_trace({{"max_hops", std::int64_t{3}}, {"wait", duration(200ms)}});
  const auto t0 = clock::now();
  auto r = test::run_probe(p, test::target_for<traceroute_probe>("127.0.0.1"));
  if (no_icmp_permission(r)) return;
  REQUIRE(r);
  INFO(r->message);
  CHECK(r->why == reason::timeout);
  CHECK(r->message.starts_with("127.0.0.1 not reached: no hop answered 9 probes within "));
  CHECK_THAT(r->message, Catch::EndsWith(" (1-3 *)"));
  CHECK(r->get("reached") == 0.0);
  CHECK(r->get("hops") == 0.0);
  CHECK(r->get("loss") == 100.0);
  CHECK(r->get("hop.3.loss") == 100.0);
  CHECK_FALSE(r->latency);
  // The last probe (sent 8 x 5ms after the first) waited its 200ms: that, not the 2s timeout,
  // ends the run.
  const auto elapsed = clock::now() - t0;
  CHECK(elapsed >= 240ms);
  CHECK(elapsed < 1500ms);
}

TEST_CASE("traceroute: destroying the io_context mid-run leaves nothing behind",
          "[.traceroute-netns]") {
  require_private_netns();
  const std::size_t fds_before = open_fds();
  {
    asio::io_context io;
    auto p = make_trace();
    std::optional<probe_result> out;
    asio::co_spawn(
        io,
        [](const traceroute_probe* pp, target t,
           std::optional<probe_result>* o) -> asio::awaitable<void> {
          *o = co_await pp->run(std::move(t), clock::now() + 5s);
        }(&p, test::target_for<traceroute_probe>("127.0.0.1"), &out),
        asio::detached);
    io.run_for(100ms);
    CHECK_FALSE(out);
  }
  CHECK(open_fds() == fds_before);
}
