// libFuzzer target: the NTP header decoder, and everything the probe derives from a decoded
// reply (reference id text, kiss meaning, short/log2 values, timestamps, offset and delay).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>

#include <sonde/detail/ntp_packet.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace ntp = sonde::detail::ntp;
  auto p = ntp::decode(std::span<const std::uint8_t>(data, size));
  if (!p) return 0;
  auto refid = ntp::refid_text(p->stratum, p->reference_id);
  (void)ntp::kiss_meaning(refid);
  (void)ntp::mode_name(p->mode);
  (void)ntp::short_to_seconds(p->root_delay);
  (void)ntp::short_to_seconds(p->root_dispersion);
  (void)ntp::log2_to_seconds(p->poll);
  (void)ntp::log2_to_seconds(p->precision);
  // A fixed pivot inside system_clock's range (2024) keeps the conversion in range.
  const auto pivot = std::chrono::system_clock::time_point(std::chrono::seconds(1'700'000'000));
  (void)ntp::from_ntp(p->transmit_ts, pivot);
  (void)ntp::from_ntp(p->reference_ts, pivot);
  (void)ntp::compute_sample(p->origin_ts, p->receive_ts, p->transmit_ts, p->reference_ts);
  // Re-encoding what was decoded gives the same 48 bytes back.
  std::uint8_t out[ntp::header_size];
  auto n = ntp::encode(*p, out);
  if (!n || *n != ntp::header_size) __builtin_trap();
  for (std::size_t i = 0; i < ntp::header_size; ++i)
    if (out[i] != data[i]) __builtin_trap();
  return 0;
}
