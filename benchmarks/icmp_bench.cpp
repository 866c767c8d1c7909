// ICMP echo codec microbenchmarks: encoding a request and decoding the reply as each socket
// kind delivers it (IPv4 raw with the IP header, IPv4 datagram, ICMPv6).
#include <sonde/detail/icmp_packet.hpp>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

namespace icmp = sonde::detail::icmp;

namespace {

/// A 56-byte probe payload (stamp + pattern), as icmp_probe sends by default.
std::vector<std::uint8_t> probe_packet(std::size_t payload = 56) {
  std::vector<std::uint8_t> pkt(icmp::header_size + payload);
  auto body = std::span<std::uint8_t>(pkt).subspan(icmp::header_size);
  icmp::write_stamp(body, {0x0123456789abcdefull, 1'700'000'000'000'000'000ll});
  icmp::fill_pattern(body);
  return pkt;
}

/// The echo reply to `request` as a raw IPv4 socket sees it (20-byte header first).
std::vector<std::uint8_t> raw_v4_reply(std::vector<std::uint8_t> request) {
  request[0] = icmp::v4_echo_reply;
  request[2] = request[3] = 0;
  const auto c = icmp::internet_checksum(request);
  request[2] = static_cast<std::uint8_t>(c >> 8);
  request[3] = static_cast<std::uint8_t>(c);
  const auto total = static_cast<std::uint16_t>(20 + request.size());
  std::vector<std::uint8_t> pkt = {0x45,
                                   0,
                                   static_cast<std::uint8_t>(total >> 8),
                                   static_cast<std::uint8_t>(total),
                                   0,
                                   0,
                                   0x40,
                                   0,
                                   64,
                                   1,
                                   0,
                                   0,
                                   127,
                                   0,
                                   0,
                                   5,
                                   127,
                                   0,
                                   0,
                                   1};
  pkt.insert(pkt.end(), request.begin(), request.end());
  return pkt;
}

void BM_icmp_encode_v4(benchmark::State& state) {
  auto pkt = probe_packet(static_cast<std::size_t>(state.range(0)));
  std::uint16_t seq = 0;
  for (auto _ : state) {
    auto body = std::span<std::uint8_t>(pkt).subspan(icmp::header_size);
    icmp::write_stamp(body, {0x0123456789abcdefull, static_cast<std::int64_t>(seq)});
    auto n = icmp::write_echo_header(pkt, 4, 0x1234, ++seq);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_icmp_encode_v4)->Arg(56)->Arg(1400);

void BM_icmp_encode_v6(benchmark::State& state) {
  auto pkt = probe_packet();
  std::uint16_t seq = 0;
  for (auto _ : state) {
    auto body = std::span<std::uint8_t>(pkt).subspan(icmp::header_size);
    icmp::write_stamp(body, {0x0123456789abcdefull, static_cast<std::int64_t>(seq)});
    auto n = icmp::write_echo_header(pkt, 6, 0x1234, ++seq);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_icmp_encode_v6);

void BM_icmp_encode_v4_copy(benchmark::State& state) {
  const auto payload = probe_packet();
  std::vector<std::uint8_t> out(128);
  for (auto _ : state) {
    auto n =
        icmp::encode_echo_v4(out, 0x1234, 7, std::span<const std::uint8_t>(payload).subspan(8));
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_icmp_encode_v4_copy);

void decode_loop(benchmark::State& state, const std::vector<std::uint8_t>& pkt,
                 icmp::wire_layout layout) {
  for (auto _ : state) {
    auto m = icmp::decode(pkt, layout);
    auto s = icmp::read_stamp(m->payload);
    benchmark::DoNotOptimize(m);
    benchmark::DoNotOptimize(s);
  }
}

void BM_icmp_decode_v4_raw(benchmark::State& state) {
  decode_loop(state, raw_v4_reply(probe_packet()), icmp::wire_layout::ipv4_raw);
}
BENCHMARK(BM_icmp_decode_v4_raw);

void BM_icmp_decode_v4_dgram(benchmark::State& state) {
  auto pkt = raw_v4_reply(probe_packet());
  pkt.erase(pkt.begin(), pkt.begin() + 20);
  decode_loop(state, pkt, icmp::wire_layout::ipv4_datagram);
}
BENCHMARK(BM_icmp_decode_v4_dgram);

void BM_icmp_decode_v6(benchmark::State& state) {
  auto pkt = probe_packet();
  pkt[0] = icmp::v6_echo_reply;
  decode_loop(state, pkt, icmp::wire_layout::ipv6);
}
BENCHMARK(BM_icmp_decode_v6);

void BM_icmp_decode_v4_error(benchmark::State& state) {
  // Host unreachable quoting the request: what traceroute will decode for every hop.
  auto request = probe_packet();
  icmp::write_echo_header(request, 4, 0x1234, 9);
  std::vector<std::uint8_t> icmp_msg = {3,    1, 0, 0, 0, 0, 0,   0, 0x45, 0, 0,   84, 0, 0,
                                        0x40, 0, 1, 1, 0, 0, 127, 0, 0,    1, 192, 0,  2, 9};
  icmp_msg.insert(icmp_msg.end(), request.begin(), request.begin() + 8);
  const auto c = icmp::internet_checksum(icmp_msg);
  icmp_msg[2] = static_cast<std::uint8_t>(c >> 8);
  icmp_msg[3] = static_cast<std::uint8_t>(c);
  for (auto _ : state) {
    auto m = icmp::decode(icmp_msg, icmp::wire_layout::ipv4_datagram);
    benchmark::DoNotOptimize(m);
  }
}
BENCHMARK(BM_icmp_decode_v4_error);

}  // namespace
