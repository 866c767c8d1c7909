// DNS message codec: golden packets captured from unbound 1.17 (the same bytes seed the fuzzer
// in fuzz/corpus/dns/), hand-made hostile packets, and the query encoder.
#include <sonde/detail/dns_message.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dns = sonde::detail::dns;
using dns::message_errc;

namespace {

std::vector<std::uint8_t> hex(std::string_view h) {
  std::vector<std::uint8_t> out;
  auto v = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
  for (std::size_t i = 0; i + 1 < h.size(); i += 2)
    out.push_back(static_cast<std::uint8_t>(v(h[i]) * 16 + v(h[i + 1])));
  return out;
}

// Replies of unbound to queries with id 0x1234, RD and EDNS 1232 (see fuzz/corpus/dns/).
const auto golden_a =
    hex("12348580000100020000000103777777076578616d706c6504746573740000010001c00c000100010000012c00"
        "047f000001c00c000100010000012c00047f00000200002904d0000000000000");
const auto golden_aaaa =
    hex("12348580000100010000000103777777076578616d706c65047465737400001c0001c00c001c00010000012c00"
        "100000000000000000000000000000000100002904d0000000000000");
const auto golden_mx =
    hex("123485800001000100000001076578616d706c65047465737400000f0001c00c000f00010000012c0009000a04"
        "6d61696cc00c00002904d0000000000000");
const auto golden_caa =
    hex("123485800001000100000001076578616d706c6504746573740001010001c00c010100010000012c0015000569"
        "7373756563612e6578616d706c652e6e657400002904d0000000000000");
const auto golden_soa =
    hex("123485800001000100000001076578616d706c6504746573740000060001c00c000600010000012c0026026e73"
        "c00c0a686f73746d6173746572c00c78a3f17500000e1000000258000151800000012c00002904d00000000000"
        "00");
const auto golden_ns =
    hex("123485800001000100000001076578616d706c6504746573740000020001c00c000200010000012c0005026e73"
        "c00c00002904d0000000000000");
const auto golden_cname =
    hex("12348580000100010000000105616c696173076578616d706c6504746573740000050001c00c00050001000001"
        "2c000603777777c01200002904d0000000000000");
const auto golden_txt =
    hex("12348580000100010000000103747874076578616d706c6504746573740000100001c00c001000010000012c00"
        "130b68656c6c6f20776f726c64067365636f6e6400002904d0000000000000");
const auto golden_ptr =
    hex("12348580000100010000000103707472076578616d706c65047465737400000c0001c00c000c00010000012c00"
        "0603777777c01000002904d0000000000000");
const auto golden_srv =
    hex("123485800001000100000001045f736970045f756470076578616d706c6504746573740000210001c00c002100"
        "010000012c0018000a001413c403736970076578616d706c6504746573740000002904d0000000000000");
const auto golden_nxdomain =
    hex("123485830001000000010001046e6f7065076578616d706c6504746573740000010001c011000600010000012c"
        "0026026e73c0110a686f73746d6173746572c01178a3f17500000e1000000258000151800000012c00002904d0"
        "000000000000");
const auto golden_unknown =
    hex("123485800001000100000001036f6464076578616d706c65047465737400ff000001c00cff0000010000012c00"
        "030a0b0c00002904d0000000000000");
const auto golden_tc =
    hex("12348780000100000000000103626967076578616d706c650474657374000010000100002904d000000000000"
        "0");

std::vector<std::string> answers(const std::vector<std::uint8_t>& pkt) {
  auto m = dns::decode(pkt);
  REQUIRE(m);
  std::vector<std::string> out;
  for (const auto& rr : m->answers) out.push_back(dns::to_string(rr));
  return out;
}

}  // namespace

TEST_CASE("dns_message: decodes the header, question and EDNS of a real reply", "[dns][wire]") {
  auto m = dns::decode(golden_a);
  REQUIRE(m);
  CHECK(m->hdr.id == 0x1234);
  CHECK(m->hdr.qr);
  CHECK(m->hdr.aa);
  CHECK(m->hdr.rd);
  CHECK(m->hdr.ra);
  CHECK_FALSE(m->hdr.tc);
  CHECK(m->full_rcode() == dns::rcode::noerror);
  REQUIRE(m->questions.size() == 1);
  CHECK(m->questions[0].name == "www.example.test.");
  CHECK(m->questions[0].qtype == dns::type::a);
  CHECK(dns::to_string(m->questions[0]) == "www.example.test. IN A");
  CHECK(m->answers.size() == 2);
  CHECK(m->authority.empty());
  REQUIRE(m->additional.size() == 1);
  REQUIRE(m->edns);
  CHECK(m->edns->udp_size == 1232);
  CHECK(m->edns->version == 0);
  CHECK_FALSE(m->edns->dnssec_ok);
  CHECK(dns::to_string(m->additional[0]) == ". OPT ; EDNS: udp 1232, version 0, 0 options");
}

TEST_CASE("dns_message: presents every supported record type", "[dns][wire]") {
  CHECK(answers(golden_a) == std::vector<std::string>{"www.example.test. 300 IN A 127.0.0.1",
                                                      "www.example.test. 300 IN A 127.0.0.2"});
  CHECK(answers(golden_aaaa) == std::vector<std::string>{"www.example.test. 300 IN AAAA ::1"});
  CHECK(answers(golden_mx) ==
        std::vector<std::string>{"example.test. 300 IN MX 10 mail.example.test."});
  CHECK(answers(golden_caa) ==
        std::vector<std::string>{"example.test. 300 IN CAA 0 issue \"ca.example.net\""});
  CHECK(answers(golden_soa) ==
        std::vector<std::string>{"example.test. 300 IN SOA ns.example.test. "
                                 "hostmaster.example.test. 2024010101 3600 600 86400 300"});
  CHECK(answers(golden_ns) == std::vector<std::string>{"example.test. 300 IN NS ns.example.test."});
  CHECK(answers(golden_cname) ==
        std::vector<std::string>{"alias.example.test. 300 IN CNAME www.example.test."});
  CHECK(answers(golden_txt) ==
        std::vector<std::string>{"txt.example.test. 300 IN TXT \"hello world\" \"second\""});
  CHECK(answers(golden_ptr) ==
        std::vector<std::string>{"ptr.example.test. 300 IN PTR www.example.test."});
  CHECK(
      answers(golden_srv) ==
      std::vector<std::string>{"_sip._udp.example.test. 300 IN SRV 10 20 5060 sip.example.test."});
  // RFC 3597 for types without a decoder.
  CHECK(answers(golden_unknown) ==
        std::vector<std::string>{"odd.example.test. 300 IN TYPE65280 \\# 3 0A0B0C"});
}

TEST_CASE("dns_message: structured RDATA fields", "[dns][wire]") {
  auto soa = dns::decode(golden_soa);
  REQUIRE(soa);
  auto* s = std::get_if<dns::soa_data>(&soa->answers[0].data);
  REQUIRE(s);
  CHECK(s->serial == 2024010101u);
  CHECK(s->minimum == 300u);
  auto srv = dns::decode(golden_srv);
  REQUIRE(srv);
  auto* v = std::get_if<dns::srv_data>(&srv->answers[0].data);
  REQUIRE(v);
  CHECK(v->port == 5060);
  CHECK(v->target == "sip.example.test.");
  auto txt = dns::decode(golden_txt);
  REQUIRE(txt);
  auto* t = std::get_if<dns::txt_data>(&txt->answers[0].data);
  REQUIRE(t);
  CHECK(t->strings == std::vector<std::string>{"hello world", "second"});
}

TEST_CASE("dns_message: NXDOMAIN with an SOA in the authority section", "[dns][wire]") {
  auto m = dns::decode(golden_nxdomain);
  REQUIRE(m);
  CHECK(m->full_rcode() == dns::rcode::nxdomain);
  CHECK(m->answers.empty());
  REQUIRE(m->authority.size() == 1);
  CHECK(m->authority[0].rtype == dns::type::soa);
  CHECK(dns::rcode_name(m->full_rcode()) == "NXDOMAIN");
}

TEST_CASE("dns_message: a truncated (TC) reply decodes with its flag", "[dns][wire]") {
  auto m = dns::decode(golden_tc);
  REQUIRE(m);
  CHECK(m->hdr.tc);
  CHECK(m->answers.empty());
}

TEST_CASE("dns_message: every prefix of a real reply is rejected, never overread", "[dns][wire]") {
  // Cutting the packet anywhere before the OPT record's end must give `truncated` (ASan checks
  // the reads). Cutting right after a complete record would decode with fewer sections, but
  // the header's counts forbid that here.
  for (std::size_t n = 0; n < golden_soa.size(); ++n) {
    std::vector<std::uint8_t> cut(golden_soa.begin(), golden_soa.begin() + static_cast<long>(n));
    auto m = dns::decode(cut);
    INFO("prefix of " << n << " bytes");
    REQUIRE_FALSE(m);
    CHECK(m.error() == message_errc::truncated);
  }
}

TEST_CASE("dns_message: compression pointers must point backwards", "[dns][wire]") {
  // Header with one answer; the answer's name is a pointer to itself (offset 12).
  auto self = hex("123481800000000100000000c00c000100010000012c00047f000001");
  auto m = dns::decode(self);
  REQUIRE_FALSE(m);
  CHECK(m.error() == message_errc::pointer_loop);
  CHECK(dns::to_string(m.error()) == std::string("compression pointer loop"));

  // Two names pointing at each other: the first pointer goes forwards.
  auto pair =
      hex("123481800000000200000000c00e"
          "c00c"
          "000100010000012c00047f000001");
  m = dns::decode(pair);
  REQUIRE_FALSE(m);
  CHECK(m.error() == message_errc::pointer_loop);

  // A pointer beyond the end of the message.
  auto beyond = hex("123481800000000100000000c0ff000100010000012c00047f000001");
  m = dns::decode(beyond);
  REQUIRE_FALSE(m);
  CHECK(m.error() == message_errc::pointer_loop);

  // A backward chain of pointers is fine.
  auto chain =
      hex("12348180000100010000000001610000010001"
          "c00c"
          "000100010000012c00047f000001");
  m = dns::decode(chain);
  REQUIRE(m);
  CHECK(m->answers[0].name == "a.");
}

TEST_CASE("dns_message: label and name limits", "[dns][wire]") {
  // A 0x40 label type is reserved.
  auto reserved =
      hex("123481800001000000000000"
          "4161"
          "0000010001");
  auto m = dns::decode(reserved);
  REQUIRE_FALSE(m);
  CHECK(m.error() == message_errc::bad_label_type);

  // 5 labels of 63 bytes = 320 bytes on the wire: too long.
  std::vector<std::uint8_t> pkt = hex("123481800001000000000000");
  for (int l = 0; l < 5; ++l) {
    pkt.push_back(63);
    pkt.insert(pkt.end(), 63, 'x');
  }
  pkt.insert(pkt.end(), {0, 0, 1, 0, 1});
  m = dns::decode(pkt);
  REQUIRE_FALSE(m);
  CHECK(m.error() == message_errc::name_too_long);

  // Label bytes that need escaping in presentation form.
  auto odd =
      hex("123481800001000000000000"
          "03612e62"
          "025c20"
          "00"
          "00010001");
  m = dns::decode(odd);
  REQUIRE(m);
  CHECK(m->questions[0].name == "a\\.b.\\\\\\032.");
}

TEST_CASE("dns_message: RDATA that does not fit its type is bad_rdata", "[dns][wire]") {
  // A record with 3 bytes of RDATA.
  auto short_a =
      hex("123481800000000100000000"
          "00"
          "000100010000012c0003"
          "7f0000");
  auto m = dns::decode(short_a);
  REQUIRE_FALSE(m);
  CHECK(m.error() == message_errc::bad_rdata);
  // MX whose exchange name runs past its RDATA length.
  auto long_mx =
      hex("123481800000000100000000"
          "00"
          "000f00010000012c0004"
          "000a"
          "0161"
          "00");
  m = dns::decode(long_mx);
  REQUIRE_FALSE(m);
  CHECK(m.error() == message_errc::bad_rdata);
  // TXT whose string length runs past the RDATA.
  auto bad_txt =
      hex("123481800000000100000000"
          "00"
          "001000010000012c0002"
          "0561");
  m = dns::decode(bad_txt);
  REQUIRE_FALSE(m);
  CHECK(m.error() == message_errc::bad_rdata);
  // CAA with an empty tag.
  auto bad_caa =
      hex("123481800000000100000000"
          "00"
          "010100010000012c0002"
          "0000");
  m = dns::decode(bad_caa);
  REQUIRE_FALSE(m);
  CHECK(m.error() == message_errc::bad_rdata);
  // RDATA length beyond the message.
  auto overrun =
      hex("123481800000000100000000"
          "00"
          "000100010000012c0010"
          "7f000001");
  m = dns::decode(overrun);
  REQUIRE_FALSE(m);
  CHECK(m.error() == message_errc::truncated);
  // Empty unknown RDATA is fine and shown as "\# 0".
  auto empty =
      hex("123481800000000100000000"
          "00"
          "ff0000010000012c0000");
  m = dns::decode(empty);
  REQUIRE(m);
  CHECK(dns::rdata_to_string(m->answers[0]) == "\\# 0");
}

TEST_CASE("dns_message: encodes a query byte for byte", "[dns][wire]") {
  std::vector<std::uint8_t> out(512);
  dns::query_spec q;
  q.id = 0x1234;
  q.name = "www.example.test";
  q.qtype = dns::type::a;
  q.edns_udp_size = 1232;
  auto n = dns::encode_query(out, q);
  REQUIRE(n);
  out.resize(*n);
  CHECK(out == hex("12340100000100000000000103777777076578616d706c650474657374000001000100"
                   "002904d0000000000000"));

  // Without EDNS and RD, with a trailing dot: the same name.
  std::vector<std::uint8_t> out2(512);
  q.name = "www.example.test.";
  q.recursion_desired = false;
  q.edns_udp_size = 0;
  n = dns::encode_query(out2, q);
  REQUIRE(n);
  out2.resize(*n);
  CHECK(out2 == hex("12340000000100000000000003777777076578616d706c6504746573740000010001"));

  // The root.
  q.name = ".";
  n = dns::encode_query(out2, q);
  REQUIRE(n);
  CHECK(*n == 12 + 1 + 4);
}

TEST_CASE("dns_message: query names are validated", "[dns][wire]") {
  std::vector<std::uint8_t> out(512);
  dns::query_spec q;
  for (std::string_view bad : {"a..b", ".a", "a\\", "a\\99", "a\\256"}) {
    q.name = bad;
    auto n = dns::encode_query(out, q);
    INFO(bad);
    REQUIRE_FALSE(n);
    CHECK(n.error() == message_errc::invalid_name);
  }
  std::string long_label(64, 'x');
  q.name = long_label;
  CHECK(dns::encode_query(out, q).error() == message_errc::invalid_name);
  std::string long_name;
  for (int i = 0; i < 5; ++i) long_name += std::string(60, 'y') + ".";
  q.name = long_name;
  CHECK(dns::encode_query(out, q).error() == message_errc::name_too_long);
  q.name = "ok.example";
  std::vector<std::uint8_t> tiny(20);
  CHECK(dns::encode_query(tiny, q).error() == message_errc::output_too_small);

  CHECK(dns::canonical_name("WWW.Example.test") == std::string("WWW.Example.test."));
  CHECK(dns::canonical_name("a\\.b.c") == std::string("a\\.b.c."));
  CHECK(dns::canonical_name("\\097b") == std::string("ab."));
  CHECK(dns::same_name("WWW.Example.TEST.", "www.example.test."));
}

TEST_CASE("dns_message: type, class and rcode names", "[dns][wire]") {
  CHECK(dns::parse_type("aaaa") == dns::type::aaaa);
  CHECK(dns::parse_type("Caa") == dns::type::caa);
  CHECK(dns::parse_type("TYPE65280") == 65280);
  CHECK_FALSE(dns::parse_type("TYPE99999"));
  CHECK_FALSE(dns::parse_type("bogus"));
  CHECK(dns::type_name(65280) == "TYPE65280");
  CHECK(dns::class_name(3) == "CH");
  CHECK(dns::class_name(99) == "CLASS99");
  CHECK(dns::parse_rcode("nxdomain") == dns::rcode::nxdomain);
  CHECK(dns::parse_rcode("REFUSED") == dns::rcode::refused);
  CHECK(dns::parse_rcode("0") == 0);
  CHECK_FALSE(dns::parse_rcode("RCODE12"));
  CHECK_FALSE(dns::parse_rcode("nope"));
  CHECK(dns::rcode_name(12) == "RCODE12");
}
