// libFuzzer target: the DNS message decoder and the presentation of every decoded record, the
// path every reply from the network takes in dns_probe.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include <sonde/detail/dns_message.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace dns = sonde::detail::dns;
  std::span<const std::uint8_t> in(data, size);
  (void)dns::decode_header(in);
  auto m = dns::decode(in);
  if (!m) {
    (void)dns::to_string(m.error());
    return 0;
  }
  std::size_t total = 0;
  for (const auto& q : m->questions) {
    total += dns::to_string(q).size();
    // A decoded name must survive the encoder (it is what a probe would send back).
    (void)dns::canonical_name(q.name);
  }
  for (const auto* section : {&m->answers, &m->authority, &m->additional})
    for (const auto& rr : *section) total += dns::to_string(rr).size();
  total += dns::rcode_name(m->full_rcode()).size();
  asm volatile("" : : "g"(total) : "memory");  // keep the formatting work observable
  return 0;
}
