// NTP packet codec: golden packets, timestamps and eras, offset/delay, reference ids.
#include <sonde/detail/ntp_packet.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <vector>

namespace ntp = sonde::detail::ntp;
using namespace std::chrono;

namespace {

/// A server reply as chrony 4.3 sent it on loopback (local stratum 8), with a known origin.
const std::vector<std::uint8_t> chrony_reply = {
    0x24, 0x08, 0x00, 0xe7,                          // LI 0, VN 4, mode 4; stratum 8; poll 0;
                                                     // precision -25
    0x00, 0x00, 0x00, 0x00,                          // root delay 0
    0x00, 0x00, 0x00, 0x0a,                          // root dispersion 10/65536 s
    0x7f, 0x7f, 0x01, 0x01,                          // refid 127.127.1.1
    0xeb, 0x2f, 0x6c, 0x20, 0x80, 0x00, 0x00, 0x00,  // reference
    0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0,  // origin = our cookie
    0xeb, 0x2f, 0x6c, 0x21, 0x40, 0x00, 0x00, 0x00,  // receive
    0xeb, 0x2f, 0x6c, 0x21, 0x40, 0x01, 0x00, 0x00,  // transmit
};

std::uint64_t ts(std::uint32_t secs, std::uint32_t frac = 0) {
  return static_cast<std::uint64_t>(secs) << 32 | frac;
}

}  // namespace

TEST_CASE("ntp packet: a client request is 48 bytes, mode 3, with our transmit value",
          "[ntp][wire]") {
  std::array<std::uint8_t, 64> out{};
  out.fill(0xee);
  auto n = ntp::encode_request(out, 4, 0x0102030405060708ull);
  REQUIRE(n);
  CHECK(*n == 48);
  CHECK(out[0] == 0x23);  // LI 0, VN 4, mode 3
  for (std::size_t i = 1; i < 40; ++i) CHECK(out[i] == 0);
  CHECK(out[40] == 0x01);
  CHECK(out[47] == 0x08);
  CHECK(out[48] == 0xee);  // past the header: untouched

  REQUIRE(ntp::encode_request(out, 3, 1));
  CHECK(out[0] == 0x1b);  // the classic SNTPv3 first byte
}

TEST_CASE("ntp packet: encode refuses a short buffer and out-of-range fields", "[ntp][wire]") {
  std::array<std::uint8_t, 47> small{};
  CHECK(ntp::encode_request(small, 4, 1).error() == ntp::packet_errc::output_too_small);
  std::array<std::uint8_t, 48> out{};
  ntp::packet p;
  p.leap = 4;
  CHECK(ntp::encode(p, out).error() == ntp::packet_errc::bad_field);
  p.leap = 0;
  p.mode = 8;
  CHECK(ntp::encode(p, out).error() == ntp::packet_errc::bad_field);
}

TEST_CASE("ntp packet: decode a golden chrony reply", "[ntp][wire]") {
  auto p = ntp::decode(chrony_reply);
  REQUIRE(p);
  CHECK(p->leap == 0);
  CHECK(p->version == 4);
  CHECK(p->mode == ntp::mode_server);
  CHECK(p->stratum == 8);
  CHECK(p->poll == 0);
  CHECK(p->precision == -25);
  CHECK(p->root_delay == 0);
  CHECK(ntp::short_to_seconds(p->root_dispersion) == Approx(10.0 / 65536));
  CHECK(ntp::refid_text(p->stratum, p->reference_id) == "127.127.1.1");
  CHECK(p->reference_ts == ts(0xeb2f6c20, 0x80000000));
  CHECK(p->origin_ts == 0x123456789abcdef0ull);
  CHECK(p->receive_ts == ts(0xeb2f6c21, 0x40000000));
  CHECK(p->transmit_ts == ts(0xeb2f6c21, 0x40010000));
  CHECK(ntp::log2_to_seconds(p->precision) == Approx(1.0 / (1 << 25)));
}

TEST_CASE("ntp packet: encode and decode round-trip every field", "[ntp][wire]") {
  ntp::packet p;
  p.leap = 3;
  p.version = 3;
  p.mode = 4;
  p.stratum = 16;
  p.poll = -3;
  p.precision = -20;
  p.root_delay = 0x00018000;
  p.root_dispersion = 0x12345678;
  p.reference_id = {'I', 'N', 'I', 'T'};
  p.reference_ts = 1;
  p.origin_ts = 2;
  p.receive_ts = ~0ull;
  p.transmit_ts = 0x8000000000000000ull;
  std::array<std::uint8_t, 48> out{};
  REQUIRE(ntp::encode(p, out));
  auto q = ntp::decode(out);
  REQUIRE(q);
  CHECK(q->leap == 3);
  CHECK(q->version == 3);
  CHECK(q->mode == 4);
  CHECK(q->stratum == 16);
  CHECK(q->poll == -3);
  CHECK(q->precision == -20);
  CHECK(ntp::short_to_seconds(q->root_delay) == 1.5);
  CHECK(q->root_dispersion == 0x12345678);
  CHECK(q->reference_ts == 1);
  CHECK(q->origin_ts == 2);
  CHECK(q->receive_ts == ~0ull);
  CHECK(q->transmit_ts == 0x8000000000000000ull);
  CHECK(ntp::refid_text(q->stratum, q->reference_id) == "INIT");
}

TEST_CASE("ntp packet: short input is truncated, extension fields are ignored", "[ntp][wire]") {
  for (std::size_t n : {0u, 1u, 20u, 47u}) {
    auto p = ntp::decode(std::span<const std::uint8_t>(chrony_reply.data(), n));
    REQUIRE_FALSE(p);
    CHECK(p.error() == ntp::packet_errc::truncated);
  }
  auto longer = chrony_reply;
  longer.insert(longer.end(), {0x02, 0x04, 0x00, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  longer.insert(longer.end(), 20, 0xab);  // a MAC
  auto p = ntp::decode(longer);
  REQUIRE(p);
  CHECK(p->transmit_ts == ts(0xeb2f6c21, 0x40010000));
  CHECK(ntp::to_string(ntp::packet_errc::truncated) == "truncated");
}

TEST_CASE("ntp packet: timestamps convert to and from system_clock", "[ntp][wire]") {
  // The Unix epoch is NTP second 2208988800.
  CHECK(ntp::to_ntp(system_clock::time_point{}) == ts(2208988800u));
  const auto t = system_clock::time_point(seconds(1'700'000'000) + milliseconds(500));
  CHECK(ntp::to_ntp(t) == ts(1'700'000'000u + 2208988800u, 0x80000000u));
  // Round trip is exact to the nanosecond.
  const auto now = time_point_cast<nanoseconds>(system_clock::now());
  CHECK(ntp::from_ntp(ntp::to_ntp(now), now) == now);
  const auto odd = system_clock::time_point(nanoseconds(1'234'567'890'123'456'789ll));
  CHECK(ntp::from_ntp(ntp::to_ntp(odd), odd) == odd);
  // Before 1970 (but after 1900).
  const auto old = system_clock::time_point(-seconds(86400 * 365 * 10) + nanoseconds(7));
  CHECK(ntp::from_ntp(ntp::to_ntp(old), old) == old);
}

TEST_CASE("ntp packet: era handling across the 2036 rollover", "[ntp][wire]") {
  // Era 0 ends at 2036-02-07T06:28:16Z = Unix 2085978496.
  const auto rollover = system_clock::time_point(seconds(2'085'978'496));
  CHECK(ntp::to_ntp(rollover) == 0);  // second 0 of era 1
  CHECK(ntp::to_ntp(rollover - seconds(1)) == ts(0xffffffffu));
  // With a pivot just before the rollover, a small timestamp is just after it, and vice versa.
  CHECK(ntp::from_ntp(ts(10), rollover - seconds(5)) == rollover + seconds(10));
  CHECK(ntp::from_ntp(ts(0xfffffff0u), rollover + seconds(5)) == rollover - seconds(16));
  // Far from the rollover, the pivot's own era is used.
  const auto y2024 = system_clock::time_point(seconds(1'700'000'000));
  CHECK(ntp::from_ntp(ntp::to_ntp(y2024), y2024 + hours(24 * 365 * 60)) == y2024);
  const auto y2050 = system_clock::time_point(seconds(2'524'608'000));
  CHECK(ntp::from_ntp(ntp::to_ntp(y2050), y2050 - hours(24)) == y2050);
}

TEST_CASE("ntp packet: offset and delay follow RFC 5905", "[ntp][wire]") {
  // Client sends at 100.0, server receives at 100.6 and sends at 100.7 on a clock 0.5 s ahead
  // (100.1 and 100.2 on ours), client receives at 100.3: offset +0.5, delay 0.2.
  const double frac = 4294967296.0;
  auto at = [&](double s) { return static_cast<std::uint64_t>(s * frac); };
  auto s = ntp::compute_sample(at(100.0), at(100.6), at(100.7), at(100.3));
  CHECK(s.offset == Approx(0.5).margin(1e-9));
  CHECK(s.delay == Approx(0.2).margin(1e-9));
  // A clock behind: negative offset.
  s = ntp::compute_sample(at(100.0), at(99.1), at(99.1), at(100.2));
  CHECK(s.offset == Approx(-1.0).margin(1e-9));
  CHECK(s.delay == Approx(0.2).margin(1e-9));
  // Across the era rollover the differences still come out right: T1 is the last second of
  // era 0, T2 = T3 is 1.5 s later, T4 2 s later.
  s = ntp::compute_sample(ts(0xffffffffu, 0), ts(0, 0x80000000u), ts(0, 0x80000000u), ts(1, 0));
  CHECK(s.offset == Approx(0.5));
  CHECK(s.delay == Approx(2.0));
  CHECK(ntp::diff_seconds(ts(5), ts(7)) == -2.0);
}

TEST_CASE("ntp packet: reference ids as text by stratum", "[ntp][wire]") {
  CHECK(ntp::refid_text(1, {'G', 'P', 'S', 0}) == "GPS");
  CHECK(ntp::refid_text(1, {'P', 'P', 'S', 0}) == "PPS");
  CHECK(ntp::refid_text(0, {'R', 'A', 'T', 'E'}) == "RATE");
  CHECK(ntp::refid_text(0, {'D', 'E', 'N', 'Y'}) == "DENY");
  CHECK(ntp::refid_text(0, {'R', 'S', 'T', 'R'}) == "RSTR");
  CHECK(ntp::refid_text(0, {0, 0, 0, 0}).empty());
  CHECK(ntp::refid_text(0, {'A', 0x01, 'B', 0}) == "A\\x01B");
  CHECK(ntp::refid_text(2, {192, 0, 2, 1}) == "192.0.2.1");
  CHECK(ntp::refid_text(8, {127, 127, 1, 1}) == "127.127.1.1");
  CHECK(ntp::refid_text(15, {'G', 'P', 'S', 0}) == "71.80.83.0");
  CHECK(ntp::refid_text(16, {'I', 'N', 'I', 'T'}) == "INIT");
  CHECK(ntp::refid_text(16, {0, 0, 0, 0}) == "0.0.0.0");
  CHECK(ntp::kiss_meaning("RATE").find("rate") != std::string_view::npos);
  CHECK(ntp::kiss_meaning("DENY").find("denied") != std::string_view::npos);
  CHECK(ntp::kiss_meaning("XXXX").empty());
  CHECK(ntp::mode_name(4) == "server");
  CHECK(ntp::mode_name(3) == "client");
}

TEST_CASE("ntp packet: short format and log2 values in seconds", "[ntp][wire]") {
  CHECK(ntp::short_to_seconds(0x00010000) == 1.0);
  CHECK(ntp::short_to_seconds(0x00004000) == 0.25);
  CHECK(ntp::short_to_seconds(0xffffffff) == Approx(65536.0).epsilon(1e-4));
  CHECK(ntp::log2_to_seconds(6) == 64.0);
  CHECK(ntp::log2_to_seconds(0) == 1.0);
  CHECK(ntp::log2_to_seconds(-20) == Approx(9.5367431640625e-07));
  CHECK(ntp::log2_to_seconds(-128) > 0.0);
  CHECK(ntp::log2_to_seconds(127) > 1e38);
}
