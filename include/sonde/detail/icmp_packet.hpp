#pragma once
/// @file detail/icmp_packet.hpp
/// ICMP echo codec: pure functions over byte spans, no sockets.
///
/// - Encoding: ICMPv4 echo requests with their Internet checksum, ICMPv6 echo requests with the
///   checksum left 0 (the kernel fills it in on ICMPv6 sockets, raw or datagram).
/// - Decoding: what an ICMP socket delivers. An IPv4 raw socket's packet begins with the IP
///   header (its IHL is honoured, options skipped); an IPv4 datagram ("ping") socket and every
///   ICMPv6 socket deliver the ICMP message alone.
/// - ICMP errors (v4: destination unreachable 3, time exceeded 11, parameter problem 12;
///   v6: destination unreachable 1, packet too big 2, time exceeded 3, parameter problem 4)
///   are decoded together with the datagram they quote, so the identifier and sequence of the
///   original echo request can be matched (by ping and, later, traceroute).
/// - The probe payload: a 64-bit cookie and the send time, then a filler pattern.
///
/// Every read is bounds-checked; malformed input returns a packet_errc, never reads out of
/// bounds. All functions are pure and thread-safe.

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>

#include <tl/expected.hpp>

namespace sonde::detail::icmp {

/// ICMPv4 message types used here (RFC 792).
inline constexpr std::uint8_t v4_echo_reply = 0;
inline constexpr std::uint8_t v4_dest_unreachable = 3;
inline constexpr std::uint8_t v4_echo_request = 8;
inline constexpr std::uint8_t v4_time_exceeded = 11;
inline constexpr std::uint8_t v4_parameter_problem = 12;
/// ICMPv6 message types used here (RFC 4443).
inline constexpr std::uint8_t v6_dest_unreachable = 1;
inline constexpr std::uint8_t v6_packet_too_big = 2;
inline constexpr std::uint8_t v6_time_exceeded = 3;
inline constexpr std::uint8_t v6_parameter_problem = 4;
inline constexpr std::uint8_t v6_echo_request = 128;
inline constexpr std::uint8_t v6_echo_reply = 129;

/// IP protocol numbers.
inline constexpr std::uint8_t proto_icmp = 1;
inline constexpr std::uint8_t proto_icmpv6 = 58;

/// Sizes.
inline constexpr std::size_t header_size = 8;        ///< ICMP echo / error header
inline constexpr std::size_t ipv4_min_header = 20;   ///< IPv4 header without options
inline constexpr std::size_t ipv6_header_size = 40;  ///< fixed IPv6 header
inline constexpr std::size_t stamp_size = 16;        ///< probe payload: cookie + send time

/// Why a buffer could not be encoded or decoded. Values are fixed.
enum class packet_errc : std::uint8_t {
  truncated = 1,             ///< shorter than its headers or its declared length
  bad_ip_version = 2,        ///< the IP header's version is not the expected one
  bad_ip_header_length = 3,  ///< IHL below 5 or beyond the packet
  not_icmp = 4,              ///< the IPv4 header's protocol is not ICMP
  bad_checksum = 5,          ///< the ICMPv4 checksum does not verify
  fragment = 6,              ///< an IPv4 fragment (raw sockets deliver reassembled packets)
  not_echo = 7,              ///< a quoted message is not an echo request
  output_too_small = 8,      ///< encode: the output buffer cannot hold the packet
  payload_too_large = 9,     ///< encode: the packet would exceed 65535 bytes
};

/// Stable lower-case name of a packet_errc.
constexpr std::string_view to_string(packet_errc e) noexcept {
  switch (e) {
    case packet_errc::truncated:
      return "truncated";
    case packet_errc::bad_ip_version:
      return "bad IP version";
    case packet_errc::bad_ip_header_length:
      return "bad IP header length";
    case packet_errc::not_icmp:
      return "not ICMP";
    case packet_errc::bad_checksum:
      return "bad checksum";
    case packet_errc::fragment:
      return "fragment";
    case packet_errc::not_echo:
      return "not an echo request";
    case packet_errc::output_too_small:
      return "output buffer too small";
    case packet_errc::payload_too_large:
      return "payload too large";
  }
  return "unknown";
}

/// What a socket delivers, which decides where the ICMP message starts.
enum class wire_layout : std::uint8_t {
  ipv4_raw,       ///< IPv4 raw socket: IPv4 header (IHL*4 bytes), then ICMP
  ipv4_datagram,  ///< IPv4 datagram (ping) socket: ICMP only
  ipv6,           ///< any ICMPv6 socket: ICMPv6 only
};

/// The broad class of a decoded message.
enum class message_kind : std::uint8_t {
  echo_reply,    ///< an answer to an echo request
  echo_request,  ///< an echo request (raw IPv4 sockets see their own on loopback)
  error,         ///< an ICMP error quoting the datagram that caused it
  other,         ///< any other type (redirects, router advertisements...): ignore
};

/// The echo request an ICMP error quotes (identifier and sequence to match).
struct echo_ref {
  std::uint16_t identifier = 0;
  std::uint16_t sequence = 0;
};

/// The start of the datagram an ICMP error quotes.
struct quoted_datagram {
  int family = 0;                              ///< 4 or 6
  std::array<std::uint8_t, 16> source{};       ///< IPv4 uses the first 4 bytes
  std::array<std::uint8_t, 16> destination{};  ///< IPv4 uses the first 4 bytes
  std::uint8_t protocol = 0;     ///< upper-layer protocol (1 ICMP, 58 ICMPv6, 6 TCP...)
  std::uint8_t ttl = 0;          ///< TTL / hop limit as the reporting router saw it
  bool is_echo_request = false;  ///< the quote holds an ICMP echo request header...
  echo_ref echo;                 ///< ...with this identifier and sequence
};

/// A decoded ICMP message.
struct message {
  message_kind kind = message_kind::other;
  std::uint8_t type = 0;
  std::uint8_t code = 0;
  /// Echo messages: their identifier and sequence.
  std::uint16_t identifier = 0;
  std::uint16_t sequence = 0;
  /// Echo messages: the data after the 8-byte header. Errors: the quoted bytes.
  std::span<const std::uint8_t> payload;
  /// Errors: header bytes 4..7 (next-hop MTU for "fragmentation needed" / "packet too big",
  /// pointer for parameter problems).
  std::uint32_t rest = 0;
  /// ipv4_raw only: facts from the outer IPv4 header.
  bool has_ip_header = false;
  std::array<std::uint8_t, 4> ip_source{};
  std::array<std::uint8_t, 4> ip_destination{};
  std::uint8_t ip_ttl = 0;
  /// Errors: the quoted datagram.
  quoted_datagram quoted;
};

/// The probe payload's fixed part.
struct stamp {
  std::uint64_t cookie = 0;  ///< identifies the run that sent the request
  std::int64_t sent_ns = 0;  ///< CLOCK_REALTIME nanoseconds when it was sent
};

// ---- byte helpers (callers check bounds) ---------------------------------------------------

inline std::uint16_t load16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}
inline std::uint32_t load32(const std::uint8_t* p) noexcept {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}
inline std::uint64_t load64(const std::uint8_t* p) noexcept {
  return (std::uint64_t{load32(p)} << 32) | load32(p + 4);
}
inline void store16(std::uint8_t* p, std::uint16_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}
inline void store64(std::uint8_t* p, std::uint64_t v) noexcept {
  for (int i = 7; i >= 0; --i) {
    p[i] = static_cast<std::uint8_t>(v);
    v >>= 8;
  }
}

// ---- checksum and encoding -----------------------------------------------------------------

/// The Internet checksum (RFC 1071) of `data`: the one's complement of the one's-complement sum
/// of its 16-bit big-endian words (an odd last byte is padded with zero). A message that
/// carries its correct checksum sums to 0.
inline std::uint16_t internet_checksum(std::span<const std::uint8_t> data) noexcept {
  // The one's-complement sum is byte-order independent (RFC 1071 2.B): add native-order words
  // eight bytes at a time (wide loads the compiler can vectorise) and swap once at the end.
  std::uint64_t sum = 0;
  const std::uint8_t* p = data.data();
  std::size_t n = data.size();
  for (; n >= 8; p += 8, n -= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    sum += (w & 0xffffffffu) + (w >> 32);  // < 2^33 per step: no overflow below 2^31 steps
  }
  if (n >= 4) {
    std::uint32_t w;
    std::memcpy(&w, p, 4);
    sum += w;
    p += 4;
    n -= 4;
  }
  if (n >= 2) {
    std::uint16_t w;
    std::memcpy(&w, p, 2);
    sum += w;
    p += 2;
    n -= 2;
  }
  if (n) {
    std::uint16_t w = 0;  // an odd last byte is padded with a zero byte after it
    std::memcpy(&w, p, 1);
    sum += w;
  }
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  auto r = static_cast<std::uint16_t>(sum);
  if constexpr (std::endian::native == std::endian::little)
    r = static_cast<std::uint16_t>((r >> 8) | (r << 8));
  return static_cast<std::uint16_t>(~r);
}

/// Write an echo-request header into the first 8 bytes of `packet` (header followed by the
/// payload, already in place). family 4: the checksum covers the whole packet; family 6: the
/// checksum is left 0 for the kernel. `checksum` false leaves an ICMPv4 checksum 0 too (IPv4
/// datagram sockets compute it themselves). Returns the packet size, or output_too_small when
/// `packet` is shorter than 8 bytes.
inline tl::expected<std::size_t, packet_errc> write_echo_header(std::span<std::uint8_t> packet,
                                                                int family, std::uint16_t id,
                                                                std::uint16_t seq,
                                                                bool checksum = true) noexcept {
  if (packet.size() < header_size) return tl::unexpected(packet_errc::output_too_small);
  std::uint8_t* p = packet.data();
  p[0] = family == 6 ? v6_echo_request : v4_echo_request;
  p[1] = 0;
  p[2] = p[3] = 0;
  store16(p + 4, id);
  store16(p + 6, seq);
  if (family != 6 && checksum) store16(p + 2, internet_checksum(packet));
  return packet.size();
}

namespace impl {
inline tl::expected<std::size_t, packet_errc> encode_echo(std::span<std::uint8_t> out, int family,
                                                          std::uint16_t id, std::uint16_t seq,
                                                          std::span<const std::uint8_t> payload) {
  if (payload.size() > 65535 - header_size) return tl::unexpected(packet_errc::payload_too_large);
  const std::size_t n = header_size + payload.size();
  if (out.size() < n) return tl::unexpected(packet_errc::output_too_small);
  for (std::size_t i = 0; i < payload.size(); ++i) out[header_size + i] = payload[i];
  return write_echo_header(out.first(n), family, id, seq);
}
}  // namespace impl

/// Encode an ICMPv4 echo request (type 8) with its checksum into `out`. Returns the number of
/// bytes written, or output_too_small / payload_too_large.
inline tl::expected<std::size_t, packet_errc> encode_echo_v4(
    std::span<std::uint8_t> out, std::uint16_t id, std::uint16_t seq,
    std::span<const std::uint8_t> payload) {
  return impl::encode_echo(out, 4, id, seq, payload);
}

/// Encode an ICMPv6 echo request (type 128) into `out`, checksum 0 (the kernel computes it over
/// the IPv6 pseudo-header). Returns the number of bytes written, or an error as encode_echo_v4.
inline tl::expected<std::size_t, packet_errc> encode_echo_v6(
    std::span<std::uint8_t> out, std::uint16_t id, std::uint16_t seq,
    std::span<const std::uint8_t> payload) {
  return impl::encode_echo(out, 6, id, seq, payload);
}

/// Write the probe stamp (cookie, send time; big-endian) into the first 16 bytes of `payload`.
/// Returns false when `payload` is shorter than 16 bytes.
inline bool write_stamp(std::span<std::uint8_t> payload, stamp s) noexcept {
  if (payload.size() < stamp_size) return false;
  store64(payload.data(), s.cookie);
  store64(payload.data() + 8, static_cast<std::uint64_t>(s.sent_ns));
  return true;
}

/// Fill `payload` after the stamp with the classic ping pattern (byte i = i mod 256).
inline void fill_pattern(std::span<std::uint8_t> payload) noexcept {
  for (std::size_t i = stamp_size; i < payload.size(); ++i)
    payload[i] = static_cast<std::uint8_t>(i);
}

/// Read the probe stamp from an echo payload, or nullopt when it is shorter than 16 bytes.
inline std::optional<stamp> read_stamp(std::span<const std::uint8_t> payload) noexcept {
  if (payload.size() < stamp_size) return std::nullopt;
  return stamp{load64(payload.data()), static_cast<std::int64_t>(load64(payload.data() + 8))};
}

// ---- decoding ------------------------------------------------------------------------------

/// Read the identifier and sequence of an echo request of `family` (4 or 6) from the start of
/// `icmp` (the ICMP header). Used for the quotes of ICMP errors, and for what a datagram
/// socket's error queue returns (the original ICMP message). Errors: truncated (under 8 bytes),
/// not_echo (another type).
inline tl::expected<echo_ref, packet_errc> decode_echo_request_header(
    std::span<const std::uint8_t> icmp, int family) noexcept {
  if (icmp.size() < header_size) return tl::unexpected(packet_errc::truncated);
  if (icmp[0] != (family == 6 ? v6_echo_request : v4_echo_request) || icmp[1] != 0)
    return tl::unexpected(packet_errc::not_echo);
  return echo_ref{load16(icmp.data() + 4), load16(icmp.data() + 6)};
}

/// Decode the datagram quoted by an ICMP error (its IP header and the first bytes of its
/// payload). IPv4: the quote's IHL is honoured. IPv6: hop-by-hop, routing, destination-options
/// and fragment extension headers are skipped. A quote of an ICMP echo request fills `echo`;
/// quotes of other protocols decode with is_echo_request false. Errors: truncated (shorter
/// than its IP header, or an ICMP quote shorter than 8 bytes), bad_ip_version,
/// bad_ip_header_length.
inline tl::expected<quoted_datagram, packet_errc> decode_quote(std::span<const std::uint8_t> q,
                                                               int family) noexcept {
  quoted_datagram out;
  out.family = family;
  std::span<const std::uint8_t> upper;
  if (family == 4) {
    if (q.size() < ipv4_min_header) return tl::unexpected(packet_errc::truncated);
    if ((q[0] >> 4) != 4) return tl::unexpected(packet_errc::bad_ip_version);
    const std::size_t ihl = std::size_t{q[0] & 0x0fu} * 4;
    if (ihl < ipv4_min_header) return tl::unexpected(packet_errc::bad_ip_header_length);
    if (ihl > q.size()) return tl::unexpected(packet_errc::truncated);
    out.ttl = q[8];
    out.protocol = q[9];
    for (int i = 0; i < 4; ++i) {
      out.source[i] = q[12 + i];
      out.destination[i] = q[16 + i];
    }
    if ((load16(q.data() + 6) & 0x1fff) != 0) return out;  // later fragment: no ICMP header
    upper = q.subspan(ihl);
    if (out.protocol != proto_icmp) return out;
  } else {
    if (q.size() < ipv6_header_size) return tl::unexpected(packet_errc::truncated);
    if ((q[0] >> 4) != 6) return tl::unexpected(packet_errc::bad_ip_version);
    out.ttl = q[7];
    for (int i = 0; i < 16; ++i) {
      out.source[i] = q[8 + i];
      out.destination[i] = q[24 + i];
    }
    std::uint8_t next = q[6];
    std::size_t off = ipv6_header_size;
    for (int hops = 0; hops < 8; ++hops) {
      if (next == 0 || next == 43 || next == 60) {  // hop-by-hop, routing, destination options
        if (q.size() < off + 2) return tl::unexpected(packet_errc::truncated);
        const std::size_t len = (std::size_t{q[off + 1]} + 1) * 8;
        next = q[off];
        off += len;
      } else if (next == 44) {  // fragment header
        if (q.size() < off + 8) return tl::unexpected(packet_errc::truncated);
        const bool later_fragment = (load16(q.data() + off + 2) & 0xfff8) != 0;
        next = q[off];
        off += 8;
        if (later_fragment) {
          out.protocol = next;
          return out;
        }
      } else {
        break;
      }
    }
    out.protocol = next;
    if (next != proto_icmpv6) return out;
    if (off > q.size()) return tl::unexpected(packet_errc::truncated);
    upper = q.subspan(off);
  }
  // An ICMP quote must carry the 8-byte header (RFC 792 / RFC 4443 guarantee at least that).
  if (upper.size() < header_size) return tl::unexpected(packet_errc::truncated);
  auto echo = decode_echo_request_header(upper, family);
  if (echo) {
    out.is_echo_request = true;
    out.echo = *echo;
  }
  return out;
}

namespace impl {
inline bool is_v4_error(std::uint8_t t) {
  return t == v4_dest_unreachable || t == v4_time_exceeded || t == v4_parameter_problem;
}
inline bool is_v6_error(std::uint8_t t) {
  return t == v6_dest_unreachable || t == v6_packet_too_big || t == v6_time_exceeded ||
         t == v6_parameter_problem;
}
}  // namespace impl

/// Decode one datagram as received from an ICMP socket of the given layout.
/// ipv4_raw: the IPv4 header is checked (version 4, IHL >= 5 and within the packet, total
/// length within the packet, protocol ICMP, not a fragment); bytes beyond the total length are
/// ignored. IPv4 checksums are verified (raw sockets deliver packets the kernel has not
/// checked); ICMPv6 checksums need the pseudo-header and are verified by the kernel.
/// Errors: see packet_errc.
inline tl::expected<message, packet_errc> decode(std::span<const std::uint8_t> data,
                                                 wire_layout layout) noexcept {
  message m;
  std::span<const std::uint8_t> icmp = data;
  if (layout == wire_layout::ipv4_raw) {
    if (data.size() < ipv4_min_header) return tl::unexpected(packet_errc::truncated);
    if ((data[0] >> 4) != 4) return tl::unexpected(packet_errc::bad_ip_version);
    const std::size_t ihl = std::size_t{data[0] & 0x0fu} * 4;
    if (ihl < ipv4_min_header) return tl::unexpected(packet_errc::bad_ip_header_length);
    if (ihl > data.size()) return tl::unexpected(packet_errc::truncated);
    const std::size_t total = load16(data.data() + 2);
    if (total < ihl) return tl::unexpected(packet_errc::bad_ip_header_length);
    if (total > data.size()) return tl::unexpected(packet_errc::truncated);
    if ((load16(data.data() + 6) & 0x3fff) != 0) return tl::unexpected(packet_errc::fragment);
    if (data[9] != proto_icmp) return tl::unexpected(packet_errc::not_icmp);
    m.has_ip_header = true;
    m.ip_ttl = data[8];
    for (int i = 0; i < 4; ++i) {
      m.ip_source[i] = data[12 + i];
      m.ip_destination[i] = data[16 + i];
    }
    icmp = data.subspan(ihl, total - ihl);
  }
  if (icmp.size() < header_size) return tl::unexpected(packet_errc::truncated);
  const int family = layout == wire_layout::ipv6 ? 6 : 4;
  if (family == 4 && internet_checksum(icmp) != 0) return tl::unexpected(packet_errc::bad_checksum);
  m.type = icmp[0];
  m.code = icmp[1];
  const std::uint8_t reply = family == 6 ? v6_echo_reply : v4_echo_reply;
  const std::uint8_t request = family == 6 ? v6_echo_request : v4_echo_request;
  if (m.type == reply || m.type == request) {
    m.kind = m.type == reply ? message_kind::echo_reply : message_kind::echo_request;
    m.identifier = load16(icmp.data() + 4);
    m.sequence = load16(icmp.data() + 6);
    m.payload = icmp.subspan(header_size);
    return m;
  }
  if (family == 6 ? impl::is_v6_error(m.type) : impl::is_v4_error(m.type)) {
    m.kind = message_kind::error;
    m.rest = load32(icmp.data() + 4);
    m.payload = icmp.subspan(header_size);
    auto q = decode_quote(m.payload, family);
    if (!q) return tl::unexpected(q.error());
    m.quoted = *q;
    return m;
  }
  m.kind = message_kind::other;
  m.payload = icmp.subspan(header_size);
  return m;
}

/// A short description of an ICMP error for messages ("host unreachable", "time to live
/// exceeded in transit"). Unknown codes get a generic text for their type.
constexpr std::string_view describe_error(int family, std::uint8_t type, std::uint8_t code) {
  if (family == 6) {
    switch (type) {
      case v6_dest_unreachable:
        switch (code) {
          case 0:
            return "no route to destination";
          case 1:
            return "communication administratively prohibited";
          case 2:
            return "beyond scope of source address";
          case 3:
            return "address unreachable";
          case 4:
            return "port unreachable";
          case 5:
            return "source address failed ingress/egress policy";
          case 6:
            return "reject route to destination";
          default:
            return "destination unreachable";
        }
      case v6_packet_too_big:
        return "packet too big";
      case v6_time_exceeded:
        return code == 1 ? "fragment reassembly time exceeded" : "hop limit exceeded in transit";
      case v6_parameter_problem:
        return "parameter problem";
      default:
        return "ICMPv6 error";
    }
  }
  switch (type) {
    case v4_dest_unreachable:
      switch (code) {
        case 0:
          return "network unreachable";
        case 1:
          return "host unreachable";
        case 2:
          return "protocol unreachable";
        case 3:
          return "port unreachable";
        case 4:
          return "fragmentation needed";
        case 5:
          return "source route failed";
        case 6:
          return "destination network unknown";
        case 7:
          return "destination host unknown";
        case 9:
          return "network administratively prohibited";
        case 10:
          return "host administratively prohibited";
        case 11:
          return "network unreachable for TOS";
        case 12:
          return "host unreachable for TOS";
        case 13:
          return "communication administratively prohibited";
        case 14:
          return "host precedence violation";
        case 15:
          return "precedence cutoff in effect";
        default:
          return "destination unreachable";
      }
    case v4_time_exceeded:
      return code == 1 ? "fragment reassembly time exceeded" : "time to live exceeded in transit";
    case v4_parameter_problem:
      return "parameter problem";
    default:
      return "ICMP error";
  }
}

}  // namespace sonde::detail::icmp
