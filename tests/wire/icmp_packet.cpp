// ICMP echo codec: golden packets (checksums computed by hand), malformed and truncated input.
#include <sonde/detail/icmp_packet.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <vector>

using namespace sonde::detail::icmp;
using bytes = std::vector<std::uint8_t>;

namespace {

bytes concat(std::initializer_list<bytes> parts) {
  bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

std::span<const std::uint8_t> view(const bytes& b) {
  return {b.data(), b.size()};
}

// Echo request id 0x1234 seq 1 payload "abcd". Checksum by hand: 0x0800 + 0x1234 + 0x0001 +
// 0x6162 + 0x6364 = 0xdefb, complement 0x2104.
const bytes golden_v4_request = {0x08, 0x00, 0x21, 0x04, 0x12, 0x34,
                                 0x00, 0x01, 0x61, 0x62, 0x63, 0x64};
// The matching echo reply: 0x0000 + ... = 0xd6fb, complement 0x2904.
const bytes golden_v4_reply = {0x00, 0x00, 0x29, 0x04, 0x12, 0x34,
                               0x00, 0x01, 0x61, 0x62, 0x63, 0x64};
// IPv4 header 127.0.0.5 -> 127.0.0.1, total length 32, DF, TTL 64, protocol 1.
const bytes ip_header_v4 = {0x45, 0x00, 0x00, 0x20, 0x00, 0x00, 0x40, 0x00, 0x40, 0x01,
                            0x00, 0x00, 0x7f, 0x00, 0x00, 0x05, 0x7f, 0x00, 0x00, 0x01};

}  // namespace

TEST_CASE("icmp_packet: Internet checksum matches RFC 1071 and odd lengths", "[icmp][wire]") {
  // RFC 1071 section 3 example: sum 0x2ddf0 -> folded 0xddf2 -> checksum 0x220d.
  const bytes rfc = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
  CHECK(internet_checksum(view(rfc)) == 0x220d);
  // Odd length: 0x0102 + 0x0300 = 0x0402 -> 0xfbfd.
  const bytes odd = {0x01, 0x02, 0x03};
  CHECK(internet_checksum(view(odd)) == 0xfbfd);
  CHECK(internet_checksum({}) == 0xffff);
  // A message carrying its checksum sums to zero.
  CHECK(internet_checksum(view(golden_v4_request)) == 0);
  CHECK(internet_checksum(view(golden_v4_reply)) == 0);
}

TEST_CASE("icmp_packet: encode ICMPv4 echo request (golden)", "[icmp][wire]") {
  const bytes payload = {'a', 'b', 'c', 'd'};
  bytes out(64, 0xee);
  auto n = encode_echo_v4(out, 0x1234, 1, view(payload));
  REQUIRE(n);
  REQUIRE(*n == 12);
  out.resize(*n);
  CHECK(out == golden_v4_request);
}

TEST_CASE("icmp_packet: encode ICMPv6 echo request leaves the checksum to the kernel",
          "[icmp][wire]") {
  const bytes payload = {'a', 'b', 'c', 'd'};
  bytes out(12);
  auto n = encode_echo_v6(out, 0x1234, 0xfffe, view(payload));
  REQUIRE(n);
  CHECK(out == bytes{0x80, 0x00, 0x00, 0x00, 0x12, 0x34, 0xff, 0xfe, 'a', 'b', 'c', 'd'});
}

TEST_CASE("icmp_packet: encode refuses small buffers and oversized payloads", "[icmp][wire]") {
  const bytes payload(100, 1);
  bytes out(107);
  CHECK(encode_echo_v4(out, 1, 1, view(payload)).error() == packet_errc::output_too_small);
  CHECK(encode_echo_v6(out, 1, 1, view(payload)).error() == packet_errc::output_too_small);
  const bytes huge(65535 - 8 + 1);
  bytes big(70000);
  CHECK(encode_echo_v4(big, 1, 1, view(huge)).error() == packet_errc::payload_too_large);
  bytes tiny(7);
  CHECK(write_echo_header(tiny, 4, 1, 1).error() == packet_errc::output_too_small);
}

TEST_CASE("icmp_packet: in-place header without checksum for datagram sockets", "[icmp][wire]") {
  bytes pkt = golden_v4_request;
  pkt[2] = pkt[3] = 0x55;
  REQUIRE(write_echo_header(pkt, 4, 0x1234, 1, false));
  CHECK(pkt[2] == 0);
  CHECK(pkt[3] == 0);
  REQUIRE(write_echo_header(pkt, 4, 0x1234, 1));
  CHECK(pkt == golden_v4_request);
}

TEST_CASE("icmp_packet: probe stamp round trip and layout", "[icmp][wire]") {
  bytes payload(56);
  REQUIRE(write_stamp(payload, {0x0102030405060708ull, 0x1122334455667788ll}));
  fill_pattern(payload);
  CHECK(payload[0] == 0x01);
  CHECK(payload[7] == 0x08);
  CHECK(payload[8] == 0x11);
  CHECK(payload[15] == 0x88);
  CHECK(payload[16] == 16);
  CHECK(payload[55] == 55);
  auto s = read_stamp(view(payload));
  REQUIRE(s);
  CHECK(s->cookie == 0x0102030405060708ull);
  CHECK(s->sent_ns == 0x1122334455667788ll);
  bytes short_payload(15);
  CHECK_FALSE(write_stamp(short_payload, {}));
  CHECK_FALSE(read_stamp(view(short_payload)));
}

TEST_CASE("icmp_packet: decode echo reply from an IPv4 raw socket", "[icmp][wire]") {
  const bytes pkt = concat({ip_header_v4, golden_v4_reply});
  auto m = decode(view(pkt), wire_layout::ipv4_raw);
  REQUIRE(m);
  CHECK(m->kind == message_kind::echo_reply);
  CHECK(m->identifier == 0x1234);
  CHECK(m->sequence == 1);
  CHECK(m->payload.size() == 4);
  CHECK(m->payload[0] == 'a');
  CHECK(m->has_ip_header);
  CHECK(m->ip_ttl == 64);
  CHECK(m->ip_source == std::array<std::uint8_t, 4>{127, 0, 0, 5});
  CHECK(m->ip_destination == std::array<std::uint8_t, 4>{127, 0, 0, 1});
}

TEST_CASE("icmp_packet: IPv4 header with options (IHL 6) is honoured", "[icmp][wire]") {
  bytes ip = ip_header_v4;
  ip[0] = 0x46;                                    // IHL 6: 24 bytes
  ip[3] = 0x24;                                    // total 36
  const bytes options = {0x01, 0x01, 0x01, 0x00};  // NOP NOP NOP EOL
  const bytes pkt = concat({ip, options, golden_v4_reply});
  auto m = decode(view(pkt), wire_layout::ipv4_raw);
  REQUIRE(m);
  CHECK(m->kind == message_kind::echo_reply);
  CHECK(m->identifier == 0x1234);
  CHECK(m->payload.size() == 4);
  // Read as if IHL were 5, the options would be taken for the ICMP header: checksum fails.
  bytes wrong = pkt;
  wrong[0] = 0x45;
  CHECK_FALSE(decode(view(wrong), wire_layout::ipv4_raw));
}

TEST_CASE("icmp_packet: bytes beyond the IPv4 total length are ignored", "[icmp][wire]") {
  bytes pkt = concat({ip_header_v4, golden_v4_reply, bytes{0, 0, 0, 0}});
  auto m = decode(view(pkt), wire_layout::ipv4_raw);
  REQUIRE(m);
  CHECK(m->payload.size() == 4);
}

TEST_CASE("icmp_packet: decode from datagram and ICMPv6 sockets (no IP header)", "[icmp][wire]") {
  auto m = decode(view(golden_v4_reply), wire_layout::ipv4_datagram);
  REQUIRE(m);
  CHECK(m->kind == message_kind::echo_reply);
  CHECK_FALSE(m->has_ip_header);
  CHECK(m->sequence == 1);

  const bytes v6 = {0x81, 0x00, 0xab, 0xcd, 0x00, 0x07, 0x01, 0x02, 'x', 'y'};
  auto m6 = decode(view(v6), wire_layout::ipv6);
  REQUIRE(m6);  // ICMPv6 checksums are the kernel's business
  CHECK(m6->kind == message_kind::echo_reply);
  CHECK(m6->identifier == 7);
  CHECK(m6->sequence == 0x0102);
  CHECK(m6->payload.size() == 2);

  // Our own echo request (raw IPv4 sockets see it on loopback) and other types.
  auto req = decode(view(golden_v4_request), wire_layout::ipv4_datagram);
  REQUIRE(req);
  CHECK(req->kind == message_kind::echo_request);
  const bytes v6_req = {0x80, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x01};
  CHECK(decode(view(v6_req), wire_layout::ipv6)->kind == message_kind::echo_request);
  const bytes router_adv = {134, 0, 0, 0, 0, 0, 0, 0};
  CHECK(decode(view(router_adv), wire_layout::ipv6)->kind == message_kind::other);
}

TEST_CASE("icmp_packet: ICMPv4 host unreachable with the embedded original", "[icmp][wire]") {
  // Outer: 10.0.0.1 -> 127.0.0.1, total 56. ICMP type 3 code 1, checksum 0xbb98 (computed over
  // the 36 ICMP bytes). Quote: the original header 127.0.0.1 -> 192.0.2.9 and its echo request.
  const bytes outer = {0x45, 0x00, 0x00, 0x38, 0x00, 0x00, 0x00, 0x00, 0x40, 0x01,
                       0x00, 0x00, 0x0a, 0x00, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01};
  const bytes icmp_hdr = {0x03, 0x01, 0xbb, 0x98, 0x00, 0x00, 0x00, 0x00};
  const bytes quoted_ip = {0x45, 0x00, 0x00, 0x20, 0x00, 0x00, 0x40, 0x00, 0x40, 0x01,
                           0x00, 0x00, 0x7f, 0x00, 0x00, 0x01, 0xc0, 0x00, 0x02, 0x09};
  const bytes quoted_echo = {0x08, 0x00, 0x21, 0x04, 0x12, 0x34, 0x00, 0x01};
  const bytes pkt = concat({outer, icmp_hdr, quoted_ip, quoted_echo});
  REQUIRE(internet_checksum(std::span(pkt).subspan(20)) == 0);

  auto m = decode(view(pkt), wire_layout::ipv4_raw);
  REQUIRE(m);
  CHECK(m->kind == message_kind::error);
  CHECK(m->type == 3);
  CHECK(m->code == 1);
  CHECK(m->ip_source == std::array<std::uint8_t, 4>{10, 0, 0, 1});
  CHECK(m->quoted.family == 4);
  CHECK(m->quoted.protocol == 1);
  CHECK(m->quoted.is_echo_request);
  CHECK(m->quoted.echo.identifier == 0x1234);
  CHECK(m->quoted.echo.sequence == 1);
  CHECK(m->quoted.destination[0] == 192);
  CHECK(m->quoted.destination[3] == 9);
  CHECK(m->quoted.ttl == 64);
  CHECK(describe_error(4, m->type, m->code) == "host unreachable");

  // The same error from a datagram socket's point of view (no outer header).
  auto d = decode(std::span(pkt).subspan(20), wire_layout::ipv4_datagram);
  REQUIRE(d);
  CHECK(d->quoted.echo.sequence == 1);

  // Every prefix is rejected without reading past it.
  for (std::size_t n = 0; n < pkt.size(); ++n)
    CHECK_FALSE(decode(std::span(pkt).first(n), wire_layout::ipv4_raw));
}

TEST_CASE("icmp_packet: time exceeded quoting an original with IP options", "[icmp][wire]") {
  bytes quoted_ip = {0x47, 0x00, 0x00, 0x28, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01,
                     0x00, 0x00, 0x7f, 0x00, 0x00, 0x01, 0xc0, 0x00, 0x02, 0x09,
                     0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00};  // IHL 7
  const bytes quoted_echo = {0x08, 0x00, 0x00, 0x00, 0xbe, 0xef, 0x00, 0x2a};
  bytes icmp = concat({bytes{11, 0, 0, 0, 0, 0, 0, 0}, quoted_ip, quoted_echo});
  const auto c = internet_checksum(icmp);
  icmp[2] = static_cast<std::uint8_t>(c >> 8);
  icmp[3] = static_cast<std::uint8_t>(c);
  auto m = decode(view(icmp), wire_layout::ipv4_datagram);
  REQUIRE(m);
  CHECK(m->kind == message_kind::error);
  CHECK(m->quoted.is_echo_request);
  CHECK(m->quoted.echo.identifier == 0xbeef);
  CHECK(m->quoted.echo.sequence == 42);
  CHECK(describe_error(4, 11, 0) == "time to live exceeded in transit");
}

TEST_CASE("icmp_packet: errors quoting other protocols decode without an echo", "[icmp][wire]") {
  // Port unreachable quoting a UDP datagram.
  bytes quoted_ip = {0x45, 0x00, 0x00, 0x20, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
                     0x00, 0x00, 0x7f, 0x00, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01};
  const bytes udp = {0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00};
  bytes icmp = concat({bytes{3, 3, 0, 0, 0, 0, 0, 0}, quoted_ip, udp});
  const auto c = internet_checksum(icmp);
  icmp[2] = static_cast<std::uint8_t>(c >> 8);
  icmp[3] = static_cast<std::uint8_t>(c);
  auto m = decode(view(icmp), wire_layout::ipv4_datagram);
  REQUIRE(m);
  CHECK(m->kind == message_kind::error);
  CHECK(m->quoted.protocol == 17);
  CHECK_FALSE(m->quoted.is_echo_request);
}

TEST_CASE("icmp_packet: malformed IPv4 packets are rejected with a reason", "[icmp][wire]") {
  const bytes good = concat({ip_header_v4, golden_v4_reply});
  auto with = [&](std::size_t at, std::uint8_t v) {
    bytes b = good;
    b[at] = v;
    return b;
  };
  CHECK(decode(view(with(0, 0x65)), wire_layout::ipv4_raw).error() == packet_errc::bad_ip_version);
  CHECK(decode(view(with(0, 0x44)), wire_layout::ipv4_raw).error() ==
        packet_errc::bad_ip_header_length);
  CHECK(decode(view(with(0, 0x4f)), wire_layout::ipv4_raw).error() == packet_errc::truncated);
  CHECK(decode(view(with(3, 0x21)), wire_layout::ipv4_raw).error() == packet_errc::truncated);
  CHECK(decode(view(with(3, 0x10)), wire_layout::ipv4_raw).error() ==
        packet_errc::bad_ip_header_length);
  CHECK(decode(view(with(9, 6)), wire_layout::ipv4_raw).error() == packet_errc::not_icmp);
  CHECK(decode(view(with(6, 0x20)), wire_layout::ipv4_raw).error() == packet_errc::fragment);
  CHECK(decode(view(with(7, 0x10)), wire_layout::ipv4_raw).error() == packet_errc::fragment);
  CHECK(decode(view(with(25, 0x35)), wire_layout::ipv4_raw).error() == packet_errc::bad_checksum);
  // Every prefix of a valid packet.
  for (std::size_t n = 0; n < good.size(); ++n)
    CHECK(decode(std::span(good).first(n), wire_layout::ipv4_raw).error() ==
          packet_errc::truncated);
  for (std::size_t n = 0; n < 8; ++n)
    CHECK(decode(std::span(golden_v4_reply).first(n), wire_layout::ipv4_datagram).error() ==
          packet_errc::truncated);
}

TEST_CASE("icmp_packet: ICMPv6 address unreachable with the embedded original", "[icmp][wire]") {
  const bytes icmp_hdr = {0x01, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  bytes ip6 = {0x60, 0x00, 0x00, 0x00, 0x00, 0x10, 0x3a, 0x40};
  const bytes src = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};              // ::1
  const bytes dst = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9};  // 2001:db8::9
  const bytes echo = {0x80, 0x00, 0x12, 0x34, 0xab, 0xcd, 0x00, 0x07, 1, 2, 3, 4, 5, 6, 7, 8};
  const bytes pkt = concat({icmp_hdr, ip6, src, dst, echo});
  auto m = decode(view(pkt), wire_layout::ipv6);
  REQUIRE(m);
  CHECK(m->kind == message_kind::error);
  CHECK(m->type == 1);
  CHECK(m->quoted.family == 6);
  CHECK(m->quoted.protocol == 58);
  CHECK(m->quoted.ttl == 64);
  CHECK(m->quoted.is_echo_request);
  CHECK(m->quoted.echo.identifier == 0xabcd);
  CHECK(m->quoted.echo.sequence == 7);
  CHECK(m->quoted.destination[0] == 0x20);
  CHECK(m->quoted.destination[15] == 9);
  CHECK(describe_error(6, 1, 3) == "address unreachable");
  CHECK(describe_error(6, 3, 0) == "hop limit exceeded in transit");

  // Quotes shorter than the IPv6 header plus the echo header are rejected.
  for (std::size_t n = 0; n < 8 + 40 + 8; ++n)
    CHECK_FALSE(decode(std::span(pkt).first(n), wire_layout::ipv6));
  CHECK(decode(std::span(pkt).first(8 + 40 + 8), wire_layout::ipv6));
}

TEST_CASE("icmp_packet: ICMPv6 quote with a destination-options header", "[icmp][wire]") {
  const bytes icmp_hdr = {0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  bytes ip6 = {0x60, 0x00, 0x00, 0x00, 0x00, 0x18, 60, 0x01};  // next header: dest options
  const bytes addrs(32, 0);
  const bytes dest_opts = {58, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00};  // PadN, next ICMPv6
  const bytes echo = {0x80, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02};
  const bytes pkt = concat({icmp_hdr, ip6, addrs, dest_opts, echo});
  auto m = decode(view(pkt), wire_layout::ipv6);
  REQUIRE(m);
  CHECK(m->quoted.protocol == 58);
  CHECK(m->quoted.is_echo_request);
  CHECK(m->quoted.echo.sequence == 2);
  // The extension header claims more bytes than the quote has.
  bytes longer = pkt;
  longer[8 + 40 + 1] = 10;
  CHECK(decode(view(longer), wire_layout::ipv6).error() == packet_errc::truncated);
  // Wrong inner version.
  bytes v4inside = pkt;
  v4inside[8] = 0x45;
  CHECK(decode(view(v4inside), wire_layout::ipv6).error() == packet_errc::bad_ip_version);
}

TEST_CASE("icmp_packet: error-queue data is the original echo request", "[icmp][wire]") {
  auto e = decode_echo_request_header(view(golden_v4_request), 4);
  REQUIRE(e);
  CHECK(e->identifier == 0x1234);
  CHECK(e->sequence == 1);
  CHECK(decode_echo_request_header(view(golden_v4_reply), 4).error() == packet_errc::not_echo);
  CHECK(decode_echo_request_header(view(golden_v4_request), 6).error() == packet_errc::not_echo);
  CHECK(decode_echo_request_header(std::span(golden_v4_request).first(7), 4).error() ==
        packet_errc::truncated);
}

TEST_CASE("icmp_packet: random input never reads out of bounds", "[icmp][wire]") {
  std::mt19937 rng(12345);
  bytes buf;
  for (int i = 0; i < 20000; ++i) {
    buf.resize(rng() % 120);
    for (auto& b : buf) b = static_cast<std::uint8_t>(rng());
    if (!buf.empty() && i % 2) buf[0] = static_cast<std::uint8_t>(0x40 | (rng() % 16));
    for (auto layout : {wire_layout::ipv4_raw, wire_layout::ipv4_datagram, wire_layout::ipv6}) {
      auto m = decode(view(buf), layout);
      if (m) {
        CHECK(m->payload.data() >= buf.data());
        CHECK(m->payload.data() + m->payload.size() <= buf.data() + buf.size());
      }
    }
    (void)decode_quote(view(buf), 4);
    (void)decode_quote(view(buf), 6);
  }
}
