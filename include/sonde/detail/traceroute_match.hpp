#pragma once
/// @file detail/traceroute_match.hpp
/// Matching traceroute answers to the probes that caused them: pure functions over bytes and
/// addresses, no sockets, no coroutines (the fuzz target and benchmarks include this header
/// alone).
///
/// A traceroute run numbers its probes 0..count-1. The number travels in the probe itself:
/// - ICMP method: the echo sequence number is `first_sequence + index` (mod 65536), the echo
///   identifier is the run's (a datagram socket's port, or a random value on a raw socket);
/// - UDP method: the destination port is `first_port + index` (the classic traceroute scheme).
/// Routers quote the probe's IP header and at least its first 8 payload bytes (RFC 792, RFC
/// 4443), which hold the identifier and sequence, or the UDP ports; the quoted destination
/// must be the run's destination. Answers arrive three ways:
/// - on an ICMP socket as ICMP messages (raw sockets: every ICMP error; datagram sockets: the
///   echo replies), decoded by match_icmp_message();
/// - on a datagram socket's error queue (IP_RECVERR / IPV6_RECVERR): the original probe's
///   payload, its destination address and port, and the ICMP type, code and sender from the
///   sock_extended_err, matched by match_queued_error();
/// - for UDP, a datagram the destination sent back from the probed port (match_udp_reply()).
///
/// All functions are pure and thread-safe; malformed input yields std::nullopt.

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "icmp_packet.hpp"

namespace sonde::detail::traceroute {

/// How probes are sent.
enum class probe_method : std::uint8_t {
  icmp = 1,  ///< ICMP / ICMPv6 echo requests
  udp = 2,   ///< UDP datagrams to increasing ports
};

/// What an answer says about its probe.
enum class answer_kind : std::uint8_t {
  time_exceeded = 1,  ///< a router on the way: TTL / hop limit exceeded in transit
  reply = 2,          ///< the destination answered: echo reply, or UDP data from the probed port
  error = 3,          ///< another ICMP error: unreachable (port, host, network, prohibited...),
                      ///< packet too big, parameter problem, reassembly time exceeded
};

/// Where an error-queue entry came from (the values of linux/errqueue.h SO_EE_ORIGIN_*).
enum class error_origin : std::uint8_t {
  local = 1,  ///< the local stack (no route, message too long...): ee_errno says why
  icmp = 2,   ///< an ICMPv4 message
  icmp6 = 3,  ///< an ICMPv6 message
};

/// What identifies a run's probes and answers.
struct run_key {
  int family = 4;                              ///< 4 or 6
  std::array<std::uint8_t, 16> destination{};  ///< IPv4 uses the first 4 bytes
  probe_method method = probe_method::icmp;
  std::uint16_t identifier = 0;      ///< ICMP: the echo identifier
  std::uint16_t first_sequence = 0;  ///< ICMP: sequence of probe 0
  std::uint16_t first_port = 0;      ///< UDP: destination port of probe 0
  std::size_t count = 0;             ///< probes in the run
  std::uint64_t cookie = 0;          ///< ICMP: payload cookie that echo replies must carry
};

/// An answer matched to probe `index`.
struct answer {
  std::size_t index = 0;
  answer_kind kind = answer_kind::error;
  std::uint8_t type = 0;                ///< ICMP type (0 for UDP data)
  std::uint8_t code = 0;                ///< ICMP code
  std::array<std::uint8_t, 16> from{};  ///< who answered (IPv4: first 4 bytes)
  bool from_destination = false;        ///< `from` is the run's destination
};

/// An entry read from a socket's error queue (the parts of sock_extended_err and the message).
struct queued_error {
  error_origin origin = error_origin::icmp;
  std::uint8_t type = 0;                               ///< ee_type
  std::uint8_t code = 0;                               ///< ee_code
  std::span<const std::uint8_t> offender;              ///< SO_EE_OFFENDER's address bytes (4 or 16)
  std::span<const std::uint8_t> original_destination;  ///< msg_name's address bytes
  std::uint16_t original_port = 0;                     ///< msg_name's port (UDP: the probed port)
  std::span<const std::uint8_t> payload;               ///< the original probe's payload as quoted
};

/// Bytes of an address of `family` (4 or 6).
constexpr std::size_t address_size(int family) noexcept {
  return family == 6 ? 16 : 4;
}

/// True when `a` holds exactly the run's destination address.
inline bool is_destination(const run_key& k, std::span<const std::uint8_t> a) noexcept {
  return a.size() == address_size(k.family) &&
         std::memcmp(a.data(), k.destination.data(), a.size()) == 0;
}

/// The echo sequence number of probe `index`.
constexpr std::uint16_t sequence_of(const run_key& k, std::size_t index) noexcept {
  return static_cast<std::uint16_t>(k.first_sequence + index);
}
/// The destination port of probe `index` (UDP).
constexpr std::uint16_t port_of(const run_key& k, std::size_t index) noexcept {
  return static_cast<std::uint16_t>(k.first_port + index);
}
/// The probe with echo sequence `seq`, or nullopt.
constexpr std::optional<std::size_t> index_of_sequence(const run_key& k,
                                                       std::uint16_t seq) noexcept {
  const std::size_t i = static_cast<std::uint16_t>(seq - k.first_sequence);
  if (i < k.count) return i;
  return std::nullopt;
}
/// The probe sent to UDP port `port`, or nullopt.
constexpr std::optional<std::size_t> index_of_port(const run_key& k, std::uint16_t port) noexcept {
  if (port < k.first_port) return std::nullopt;
  const std::size_t i = std::size_t{port} - k.first_port;
  if (i < k.count) return i;
  return std::nullopt;
}

/// True for "time to live exceeded in transit" (ICMPv4 11/0) and "hop limit exceeded in
/// transit" (ICMPv6 3/0): the answers of the routers along the path. Fragment reassembly time
/// exceeded (code 1) comes from the destination and counts as an error.
constexpr bool is_time_exceeded(int family, std::uint8_t type, std::uint8_t code) noexcept {
  return code == 0 && type == (family == 6 ? icmp::v6_time_exceeded : icmp::v4_time_exceeded);
}

/// True for ICMP port unreachable (v4 3/3, v6 1/4): how a UDP probe's destination answers.
constexpr bool is_port_unreachable(int family, std::uint8_t type, std::uint8_t code) noexcept {
  return family == 6 ? type == icmp::v6_dest_unreachable && code == 4
                     : type == icmp::v4_dest_unreachable && code == 3;
}

namespace impl {
inline answer make_answer(const run_key& k, std::size_t index, std::uint8_t type, std::uint8_t code,
                          std::span<const std::uint8_t> from) {
  answer a;
  a.index = index;
  a.type = type;
  a.code = code;
  if (from.size() == address_size(k.family)) std::memcpy(a.from.data(), from.data(), from.size());
  a.from_destination = is_destination(k, from);
  a.kind = is_time_exceeded(k.family, type, code) ? answer_kind::time_exceeded : answer_kind::error;
  return a;
}
}  // namespace impl

/// Match one datagram received on an ICMP socket of `layout` from address `from` (msg_name's
/// address bytes) to a probe of an ICMP-method run. An echo reply matches when its identifier,
/// sequence and payload cookie are the run's and it comes from the destination; an ICMP error
/// matches when it quotes an echo request with the run's identifier and a sequence in range,
/// sent to the run's destination. Everything else (other traffic a raw socket sees, malformed
/// packets) returns nullopt.
inline std::optional<answer> match_icmp_message(std::span<const std::uint8_t> datagram,
                                                icmp::wire_layout layout,
                                                std::span<const std::uint8_t> from,
                                                const run_key& k) {
  if (k.method != probe_method::icmp) return std::nullopt;
  auto m = icmp::decode(datagram, layout);
  if (!m) return std::nullopt;
  if (m->kind == icmp::message_kind::echo_reply) {
    if (m->identifier != k.identifier || !is_destination(k, from)) return std::nullopt;
    auto i = index_of_sequence(k, m->sequence);
    auto st = icmp::read_stamp(m->payload);
    if (!i || !st || st->cookie != k.cookie) return std::nullopt;
    answer a = impl::make_answer(k, *i, m->type, m->code, from);
    a.kind = answer_kind::reply;
    return a;
  }
  if (m->kind != icmp::message_kind::error || !m->quoted.is_echo_request) return std::nullopt;
  if (m->quoted.echo.identifier != k.identifier ||
      std::memcmp(m->quoted.destination.data(), k.destination.data(), address_size(k.family)) != 0)
    return std::nullopt;
  auto i = index_of_sequence(k, m->quoted.echo.sequence);
  if (!i) return std::nullopt;
  return impl::make_answer(k, *i, m->type, m->code, from);
}

/// Match an ICMP error read from a datagram socket's error queue. ICMP method: the payload is
/// the original echo request (the kernel put the socket's identifier in it), matched by
/// identifier and sequence. UDP method: the original destination port names the probe. The
/// original destination must be the run's. Local errors (origin local) return nullopt: the
/// caller handles them with ee_errno.
inline std::optional<answer> match_queued_error(const queued_error& e, const run_key& k) {
  if (e.origin != (k.family == 6 ? error_origin::icmp6 : error_origin::icmp)) return std::nullopt;
  if (!is_destination(k, e.original_destination)) return std::nullopt;
  std::optional<std::size_t> i;
  if (k.method == probe_method::icmp) {
    auto echo = icmp::decode_echo_request_header(e.payload, k.family);
    if (!echo || echo->identifier != k.identifier) return std::nullopt;
    i = index_of_sequence(k, echo->sequence);
  } else {
    i = index_of_port(k, e.original_port);
  }
  if (!i) return std::nullopt;
  return impl::make_answer(k, *i, e.type, e.code, e.offender);
}

/// Match a UDP datagram received from `from`:`port` (UDP method): the destination answered a
/// probe from the port it was sent to.
inline std::optional<answer> match_udp_reply(std::span<const std::uint8_t> from, std::uint16_t port,
                                             const run_key& k) {
  if (k.method != probe_method::udp || !is_destination(k, from)) return std::nullopt;
  auto i = index_of_port(k, port);
  if (!i) return std::nullopt;
  answer a = impl::make_answer(k, *i, 0, 0, from);
  a.kind = answer_kind::reply;
  return a;
}

/// The traceroute-style flag of an ICMP error ("!N" network unreachable, "!H" host
/// unreachable, "!P" protocol unreachable, "!F" fragmentation needed / packet too big, "!S"
/// source route failed, "!X" administratively prohibited, "!U" address unreachable (v6), "!R"
/// reject route (v6), "!T" reassembly timeout, "!Z" parameter problem, otherwise "!<code>").
/// Port unreachable, the normal end of a UDP trace, has no flag (""); so have time exceeded
/// and replies.
inline std::string hop_flag(int family, std::uint8_t type, std::uint8_t code) {
  if (is_time_exceeded(family, type, code) || is_port_unreachable(family, type, code)) return "";
  if (family == 6) {
    switch (type) {
      case icmp::v6_dest_unreachable:
        switch (code) {
          case 0:
            return "!N";
          case 1:
            return "!X";
          case 2:
            return "!S";
          case 3:
            return "!U";
          case 5:
          case 6:
            return "!R";
          default:
            return "!" + std::to_string(code);
        }
      case icmp::v6_packet_too_big:
        return "!F";
      case icmp::v6_time_exceeded:
        return "!T";
      case icmp::v6_parameter_problem:
        return "!Z";
      default:
        return type == icmp::v6_echo_reply ? "" : "!?";
    }
  }
  switch (type) {
    case icmp::v4_dest_unreachable:
      switch (code) {
        case 0:
        case 6:
        case 11:
          return "!N";
        case 1:
        case 7:
        case 12:
          return "!H";
        case 2:
          return "!P";
        case 4:
          return "!F";
        case 5:
          return "!S";
        case 9:
        case 10:
        case 13:
          return "!X";
        default:
          return "!" + std::to_string(code);
      }
    case icmp::v4_time_exceeded:
      return "!T";
    case icmp::v4_parameter_problem:
      return "!Z";
    default:
      return type == icmp::v4_echo_reply ? "" : "!?";
  }
}

}  // namespace sonde::detail::traceroute
