// libFuzzer target: the ICMP reply decoder in every socket layout, and ICMP error quotes.
#include <cstddef>
#include <cstdint>
#include <span>

#include <sonde/detail/icmp_packet.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace sonde::detail::icmp;
  std::span<const std::uint8_t> in(data, size);
  for (auto layout : {wire_layout::ipv4_raw, wire_layout::ipv4_datagram, wire_layout::ipv6}) {
    auto m = decode(in, layout);
    if (m) {
      (void)read_stamp(m->payload);
    }
  }
  return 0;
}
