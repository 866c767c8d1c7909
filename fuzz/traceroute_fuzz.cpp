// libFuzzer target: traceroute answer matching (ICMP messages in every socket layout, error-queue
// entries, UDP replies) against a fixed run key. Coroutine-free: only the detail headers.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

#include <sonde/detail/traceroute_match.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace sonde::detail;
  std::span<const std::uint8_t> in(data, size);
  for (int family : {4, 6}) {
    traceroute::run_key k;
    k.family = family;
    k.destination = {10, 99, 3, 2};
    k.identifier = 0x1234;
    k.first_sequence = 0xfffe;
    k.first_port = 33434;
    k.count = 90;
    k.cookie = 0x0123456789abcdefull;
    const auto from = in.first(std::min<std::size_t>(in.size(), traceroute::address_size(family)));
    for (auto layout :
         {icmp::wire_layout::ipv4_raw, icmp::wire_layout::ipv4_datagram, icmp::wire_layout::ipv6}) {
      if (auto a = traceroute::match_icmp_message(in, layout, from, k)) {
        if (a->index >= k.count) __builtin_trap();
        (void)traceroute::hop_flag(family, a->type, a->code);
      }
    }
    traceroute::queued_error e;
    e.origin = family == 6 ? traceroute::error_origin::icmp6 : traceroute::error_origin::icmp;
    e.type = size > 0 ? in[0] : 0;
    e.code = size > 1 ? in[1] : 0;
    e.offender = from;
    e.original_destination = from;
    e.original_port = size > 3 ? static_cast<std::uint16_t>(in[2] << 8 | in[3]) : 0;
    e.payload = in;
    for (auto m : {traceroute::probe_method::icmp, traceroute::probe_method::udp}) {
      k.method = m;
      if (auto a = traceroute::match_queued_error(e, k); a && a->index >= k.count) __builtin_trap();
      if (auto a = traceroute::match_udp_reply(from, e.original_port, k); a && a->index >= k.count)
        __builtin_trap();
    }
  }
  return 0;
}
