// DNS message codec microbenchmarks: encoding a query, decoding a typical A reply, and decoding
// a reply with compressed names in several records and sections (what a probe pays per reply).
#include <sonde/detail/dns_message.hpp>

#include <benchmark/benchmark.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dns = sonde::detail::dns;

namespace {

std::vector<std::uint8_t> hex(std::string_view h) {
  std::vector<std::uint8_t> out;
  auto v = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
  for (std::size_t i = 0; i + 1 < h.size(); i += 2)
    out.push_back(static_cast<std::uint8_t>(v(h[i]) * 16 + v(h[i + 1])));
  return out;
}

void BM_dns_encode_query(benchmark::State& state) {
  std::array<std::uint8_t, 512> out{};
  dns::query_spec q;
  q.name = "www.example.test.";
  q.qtype = dns::type::a;
  q.edns_udp_size = 1232;
  std::uint16_t id = 0;
  for (auto _ : state) {
    q.id = ++id;
    auto n = dns::encode_query(out, q);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_dns_encode_query);

// unbound's reply to "www.example.test. IN A": two A records and an OPT record.
void BM_dns_decode_a(benchmark::State& state) {
  const auto pkt =
      hex("12348580000100020000000103777777076578616d706c6504746573740000010001c00c0001000100000"
          "12c00047f000001c00c000100010000012c00047f00000200002904d0000000000000");
  for (auto _ : state) {
    auto m = dns::decode(pkt);
    benchmark::DoNotOptimize(m);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * pkt.size()));
}
BENCHMARK(BM_dns_decode_a);

// A reply with compression everywhere: 4 MX answers, 2 NS in authority, 4 A/AAAA glue records
// and OPT. Optionally also formats every answer as the probe does for its message.
std::vector<std::uint8_t> compressed_reply() {
  std::vector<std::uint8_t> m = hex("beef81800001000400020005");
  auto name =
      hex("076578616d706c650474657374"
          "00");  // example.test. at offset 12
  m.insert(m.end(), name.begin(), name.end());
  m.insert(m.end(), {0, 15, 0, 1});
  std::vector<std::size_t> mx_names;
  for (int i = 0; i < 4; ++i) {
    // example.test. 300 IN MX 10 mxN.example.test.  (exchange: label + pointer to 12)
    m.insert(m.end(),
             {0xc0, 0x0c, 0, 15, 0, 1, 0, 0, 1, 0x2c, 0, 8, 0, static_cast<std::uint8_t>(10 * i)});
    mx_names.push_back(m.size());
    m.insert(m.end(), {3, 'm', 'x', static_cast<std::uint8_t>('0' + i), 0xc0, 0x0c});
  }
  std::vector<std::size_t> ns_names;
  for (int i = 0; i < 2; ++i) {
    m.insert(m.end(), {0xc0, 0x0c, 0, 2, 0, 1, 0, 0, 0x0e, 0x10, 0, 6});
    ns_names.push_back(m.size());
    m.insert(m.end(), {3, 'n', 's', static_cast<std::uint8_t>('0' + i), 0xc0, 0x0c});
  }
  for (int i = 0; i < 2; ++i) {
    auto at = ns_names[static_cast<std::size_t>(i)];
    m.insert(m.end(),
             {static_cast<std::uint8_t>(0xc0 | (at >> 8)), static_cast<std::uint8_t>(at), 0, 1, 0,
              1, 0, 0, 0x0e, 0x10, 0, 4, 192, 0, 2, static_cast<std::uint8_t>(i)});
    m.insert(m.end(), {static_cast<std::uint8_t>(0xc0 | (at >> 8)),
                       static_cast<std::uint8_t>(at),
                       0,
                       28,
                       0,
                       1,
                       0,
                       0,
                       0x0e,
                       0x10,
                       0,
                       16,
                       0x20,
                       0x01,
                       0x0d,
                       0xb8,
                       0,
                       0,
                       0,
                       0,
                       0,
                       0,
                       0,
                       0,
                       0,
                       0,
                       0,
                       static_cast<std::uint8_t>(i)});
  }
  m.insert(m.end(), {0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0});
  m[11] = 5;
  return m;
}

void BM_dns_decode_compressed(benchmark::State& state) {
  const auto pkt = compressed_reply();
  if (auto m = dns::decode(pkt); !m || m->answers.size() != 4 || m->additional.size() != 5) {
    state.SkipWithError("bad benchmark packet");
    return;
  }
  for (auto _ : state) {
    auto m = dns::decode(pkt);
    benchmark::DoNotOptimize(m);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * pkt.size()));
}
BENCHMARK(BM_dns_decode_compressed);

void BM_dns_decode_and_format(benchmark::State& state) {
  const auto pkt = compressed_reply();
  for (auto _ : state) {
    auto m = dns::decode(pkt);
    std::string list;
    for (const auto& rr : m->answers) {
      if (!list.empty()) list += "; ";
      list += dns::to_string(rr);
    }
    benchmark::DoNotOptimize(list);
  }
}
BENCHMARK(BM_dns_decode_and_format);

}  // namespace
