// NTP codec microbenchmarks: encoding the client request, decoding a server reply, the
// on-wire offset/delay computation, and the timestamp conversions the probe does per run.
#include <sonde/detail/ntp_packet.hpp>

#include <benchmark/benchmark.h>

#include <array>
#include <chrono>
#include <cstdint>

namespace ntp = sonde::detail::ntp;

namespace {

/// A stratum-2 server reply (48 bytes) to the request with transmit value `cookie`.
std::array<std::uint8_t, ntp::header_size> server_reply(std::uint64_t cookie) {
  ntp::packet p;
  p.mode = ntp::mode_server;
  p.stratum = 2;
  p.poll = 6;
  p.precision = -20;
  p.root_delay = 0x800;
  p.root_dispersion = 0x4000;
  p.reference_id = {192, 0, 2, 1};
  const auto now = ntp::to_ntp(std::chrono::system_clock::now());
  p.reference_ts = now - (std::uint64_t{10} << 32);
  p.origin_ts = cookie;
  p.receive_ts = now;
  p.transmit_ts = now + 4295;  // about 1 us later
  std::array<std::uint8_t, ntp::header_size> out{};
  (void)ntp::encode(p, out);
  return out;
}

void BM_ntp_encode_request(benchmark::State& state) {
  std::array<std::uint8_t, ntp::header_size> out{};
  std::uint64_t cookie = 0x9e3779b97f4a7c15ull;
  for (auto _ : state) {
    auto n = ntp::encode_request(out, 4, cookie++);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_ntp_encode_request);

void BM_ntp_decode_reply(benchmark::State& state) {
  const auto reply = server_reply(0x0123456789abcdefull);
  for (auto _ : state) {
    benchmark::DoNotOptimize(reply.data());
    auto p = ntp::decode(reply);
    benchmark::DoNotOptimize(p);
  }
}
BENCHMARK(BM_ntp_decode_reply);

void BM_ntp_compute_sample(benchmark::State& state) {
  std::uint64_t t1 = 0xeb2f6c2100000000ull, t2 = t1 + 40000, t3 = t2 + 8000, t4 = t1 + 90000;
  for (auto _ : state) {
    benchmark::DoNotOptimize(t1);
    auto s = ntp::compute_sample(t1, t2, t3, t4);
    benchmark::DoNotOptimize(s);
  }
}
BENCHMARK(BM_ntp_compute_sample);

/// What the probe does per accepted reply: decode, convert T1/T4, offset and delay, refid text.
void BM_ntp_reply_to_sample(benchmark::State& state) {
  const auto reply = server_reply(42);
  const auto t1 = std::chrono::system_clock::now();
  const auto t4 = t1 + std::chrono::microseconds(20);
  for (auto _ : state) {
    benchmark::DoNotOptimize(reply.data());
    auto p = ntp::decode(reply);
    auto s = ntp::compute_sample(ntp::to_ntp(t1), p->receive_ts, p->transmit_ts, ntp::to_ntp(t4));
    auto refid = ntp::refid_text(p->stratum, p->reference_id);
    benchmark::DoNotOptimize(s);
    benchmark::DoNotOptimize(refid);
  }
}
BENCHMARK(BM_ntp_reply_to_sample);

void BM_ntp_timestamp_round_trip(benchmark::State& state) {
  auto t = std::chrono::system_clock::now();
  for (auto _ : state) {
    benchmark::DoNotOptimize(t);
    auto back = ntp::from_ntp(ntp::to_ntp(t), t);
    benchmark::DoNotOptimize(back);
  }
}
BENCHMARK(BM_ntp_timestamp_round_trip);

}  // namespace
