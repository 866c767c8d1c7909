#pragma once
/// @file detail/ntp_packet.hpp
/// NTP packet codec (RFC 5905 section 7.3; SNTP rules of RFC 4330): pure functions over byte
/// spans, no sockets.
///
/// - Encoding: any 48-byte header, and the client-mode (3) request an SNTP client sends.
/// - Decoding: the 48-byte header. Extension fields and a MAC may follow (RFC 7822); they are
///   neither read nor required, so any datagram of at least 48 bytes decodes.
/// - Timestamps: the 64-bit NTP format (32.32 fixed point seconds since 1900-01-01) to and from
///   std::chrono::system_clock, with era handling (a timestamp is placed in the era that puts it
///   nearest a pivot time, so 2036 and later work), and the on-wire offset/delay computation.
/// - Reference ids as text: ASCII for stratum 0 (kiss codes) and 1 (clock sources like "GPS"),
///   IPv4 dotted quad for stratum 2 and above.
///
/// Every read is bounds-checked; malformed input returns a packet_errc, never reads out of
/// bounds. All functions are pure and thread-safe.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include <tl/expected.hpp>

namespace sonde::detail::ntp {

/// Size of the fixed NTP header; also the whole client request.
inline constexpr std::size_t header_size = 48;
/// Seconds from the NTP prime epoch (1900-01-01) to the Unix epoch (1970-01-01).
inline constexpr std::int64_t unix_epoch_offset = 2'208'988'800;

/// Association modes (RFC 5905 figure 10).
inline constexpr std::uint8_t mode_symmetric_active = 1;
inline constexpr std::uint8_t mode_symmetric_passive = 2;
inline constexpr std::uint8_t mode_client = 3;
inline constexpr std::uint8_t mode_server = 4;
inline constexpr std::uint8_t mode_broadcast = 5;
inline constexpr std::uint8_t mode_control = 6;
inline constexpr std::uint8_t mode_private = 7;

/// Leap indicator values.
inline constexpr std::uint8_t leap_none = 0;
inline constexpr std::uint8_t leap_add_second = 1;
inline constexpr std::uint8_t leap_del_second = 2;
inline constexpr std::uint8_t leap_unsynchronised = 3;

/// Stratum 16 (and the reserved 17-255) means "unsynchronised".
inline constexpr std::uint8_t stratum_unsynchronised = 16;

/// Why a buffer could not be encoded or decoded. Values are fixed.
enum class packet_errc : std::uint8_t {
  truncated = 1,         ///< fewer than 48 bytes
  output_too_small = 2,  ///< encode: the output buffer is shorter than 48 bytes
  bad_field = 3,         ///< encode: leap > 3, version > 7 or mode > 7
};

/// Stable lower-case description of a packet_errc.
constexpr std::string_view to_string(packet_errc e) noexcept {
  switch (e) {
    case packet_errc::truncated:
      return "truncated";
    case packet_errc::output_too_small:
      return "output buffer too small";
    case packet_errc::bad_field:
      return "field out of range";
  }
  return "unknown";
}

/// The 48-byte NTP header. Timestamps are raw 64-bit NTP values (seconds << 32 | fraction);
/// root delay and dispersion are raw 32-bit NTP short values (16.16 seconds).
struct packet {
  std::uint8_t leap = 0;              ///< leap indicator, 0-3
  std::uint8_t version = 4;           ///< 0-7; NTPv4 is 4
  std::uint8_t mode = 0;              ///< 0-7; client 3, server 4
  std::uint8_t stratum = 0;           ///< 0 kiss-o'-death, 1 primary, 2-15 secondary, 16 unsync
  std::int8_t poll = 0;               ///< log2 of the poll interval in seconds
  std::int8_t precision = 0;          ///< log2 of the clock precision in seconds
  std::uint32_t root_delay = 0;       ///< NTP short format
  std::uint32_t root_dispersion = 0;  ///< NTP short format
  std::array<std::uint8_t, 4> reference_id{};  ///< as on the wire
  std::uint64_t reference_ts = 0;              ///< when the clock was last set
  std::uint64_t origin_ts = 0;    ///< T1 as the client sent it (its transmit timestamp)
  std::uint64_t receive_ts = 0;   ///< T2: request arrived at the server
  std::uint64_t transmit_ts = 0;  ///< T3: reply left the server
};

namespace io {
inline std::uint32_t get32(std::span<const std::uint8_t> b, std::size_t at) noexcept {
  return static_cast<std::uint32_t>(b[at]) << 24 | static_cast<std::uint32_t>(b[at + 1]) << 16 |
         static_cast<std::uint32_t>(b[at + 2]) << 8 | static_cast<std::uint32_t>(b[at + 3]);
}
inline std::uint64_t get64(std::span<const std::uint8_t> b, std::size_t at) noexcept {
  return static_cast<std::uint64_t>(get32(b, at)) << 32 | get32(b, at + 4);
}
inline void put32(std::span<std::uint8_t> b, std::size_t at, std::uint32_t v) noexcept {
  b[at] = static_cast<std::uint8_t>(v >> 24);
  b[at + 1] = static_cast<std::uint8_t>(v >> 16);
  b[at + 2] = static_cast<std::uint8_t>(v >> 8);
  b[at + 3] = static_cast<std::uint8_t>(v);
}
inline void put64(std::span<std::uint8_t> b, std::size_t at, std::uint64_t v) noexcept {
  put32(b, at, static_cast<std::uint32_t>(v >> 32));
  put32(b, at + 4, static_cast<std::uint32_t>(v));
}
}  // namespace io

/// Write the 48-byte header of `p` to the start of `out`. Returns the bytes written (48), or
/// output_too_small / bad_field. Bytes of `out` past 48 are untouched.
inline tl::expected<std::size_t, packet_errc> encode(const packet& p,
                                                     std::span<std::uint8_t> out) noexcept {
  if (out.size() < header_size) return tl::unexpected(packet_errc::output_too_small);
  if (p.leap > 3 || p.version > 7 || p.mode > 7) return tl::unexpected(packet_errc::bad_field);
  out[0] = static_cast<std::uint8_t>(p.leap << 6 | p.version << 3 | p.mode);
  out[1] = p.stratum;
  out[2] = static_cast<std::uint8_t>(p.poll);
  out[3] = static_cast<std::uint8_t>(p.precision);
  io::put32(out, 4, p.root_delay);
  io::put32(out, 8, p.root_dispersion);
  for (std::size_t i = 0; i < 4; ++i) out[12 + i] = p.reference_id[i];
  io::put64(out, 16, p.reference_ts);
  io::put64(out, 24, p.origin_ts);
  io::put64(out, 32, p.receive_ts);
  io::put64(out, 40, p.transmit_ts);
  return header_size;
}

/// Write an SNTP client request (mode 3, `version` 1-7, leap 0, everything else zero except the
/// transmit timestamp) to `out`. RFC 4330 only needs the transmit timestamp, which the server
/// echoes as the reply's origin timestamp; sending an unpredictable value there (rather than the
/// clock) lets the client reject spoofed and stale replies and reveals nothing about its clock.
inline tl::expected<std::size_t, packet_errc> encode_request(std::span<std::uint8_t> out,
                                                             std::uint8_t version,
                                                             std::uint64_t transmit) noexcept {
  packet p;
  p.version = version;
  p.mode = mode_client;
  p.transmit_ts = transmit;
  return encode(p, out);
}

/// Decode the 48-byte header at the start of `in`. Anything after it (extension fields, MAC)
/// is ignored. Fails only with `truncated`: every bit pattern of 48 bytes is a header; judging
/// the values (mode, stratum, timestamps) is the caller's business.
inline tl::expected<packet, packet_errc> decode(std::span<const std::uint8_t> in) noexcept {
  if (in.size() < header_size) return tl::unexpected(packet_errc::truncated);
  packet p;
  p.leap = static_cast<std::uint8_t>(in[0] >> 6);
  p.version = static_cast<std::uint8_t>((in[0] >> 3) & 7);
  p.mode = static_cast<std::uint8_t>(in[0] & 7);
  p.stratum = in[1];
  p.poll = static_cast<std::int8_t>(in[2]);
  p.precision = static_cast<std::int8_t>(in[3]);
  p.root_delay = io::get32(in, 4);
  p.root_dispersion = io::get32(in, 8);
  for (std::size_t i = 0; i < 4; ++i) p.reference_id[i] = in[12 + i];
  p.reference_ts = io::get64(in, 16);
  p.origin_ts = io::get64(in, 24);
  p.receive_ts = io::get64(in, 32);
  p.transmit_ts = io::get64(in, 40);
  return p;
}

/// An NTP short value (16.16 fixed point) in seconds.
constexpr double short_to_seconds(std::uint32_t v) noexcept {
  return static_cast<double>(v) / 65536.0;
}

/// 2^`log2` seconds, for poll and precision.
constexpr double log2_to_seconds(std::int8_t log2) noexcept {
  double r = 1.0;
  if (log2 >= 0) {
    for (int i = 0; i < log2; ++i) r *= 2.0;
  } else {
    for (int i = 0; i > log2; --i) r /= 2.0;
  }
  return r;
}

/// A system_clock time as a 64-bit NTP timestamp (the era number is dropped, as on the wire).
/// Times before 1900 wrap; nanoseconds are rounded down to the 2^-32 s resolution.
inline std::uint64_t to_ntp(std::chrono::system_clock::time_point t) noexcept {
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  std::int64_t secs = ns / 1'000'000'000;
  std::int64_t frac_ns = ns % 1'000'000'000;
  if (frac_ns < 0) {
    frac_ns += 1'000'000'000;
    --secs;
  }
  const auto ntp_secs = static_cast<std::uint64_t>(secs + unix_epoch_offset) & 0xffffffffu;
  const auto frac = (static_cast<std::uint64_t>(frac_ns) << 32) / 1'000'000'000u;
  return ntp_secs << 32 | frac;
}

/// A 64-bit NTP timestamp as a system_clock time, in the era (136-year span) that puts it
/// nearest `pivot`, so timestamps after the 2036 rollover come out right when the pivot is
/// recent (RFC 5905 section 6). Fractions round to the nearest nanosecond.
inline std::chrono::system_clock::time_point from_ntp(
    std::uint64_t ts, std::chrono::system_clock::time_point pivot) noexcept {
  namespace chr = std::chrono;
  const std::int64_t pivot_secs =
      chr::floor<chr::seconds>(pivot.time_since_epoch()).count() + unix_epoch_offset;
  constexpr std::int64_t era = std::int64_t{1} << 32;
  const std::int64_t pivot_era = pivot_secs >= 0 ? pivot_secs / era : (pivot_secs + 1) / era - 1;
  std::int64_t secs = pivot_era * era + static_cast<std::int64_t>(ts >> 32);
  if (secs - pivot_secs > era / 2) secs -= era;
  if (pivot_secs - secs > era / 2) secs += era;
  const auto frac = ts & 0xffffffffu;
  const auto frac_ns = static_cast<std::int64_t>((frac * 1'000'000'000u + (1u << 31)) >> 32);
  return chr::system_clock::time_point(chr::duration_cast<chr::system_clock::duration>(
      chr::nanoseconds((secs - unix_epoch_offset) * 1'000'000'000 + frac_ns)));
}

/// `a - b` in seconds for two NTP timestamps within 68 years of each other, era-independent
/// (the 64-bit difference wraps like RFC 5905's arithmetic).
constexpr double diff_seconds(std::uint64_t a, std::uint64_t b) noexcept {
  return static_cast<double>(static_cast<std::int64_t>(a - b)) / 4294967296.0;
}

/// Clock offset and round-trip delay of one exchange, in seconds.
struct sample {
  double offset = 0;  ///< server clock minus ours: ((T2-T1)+(T3-T4))/2
  double delay = 0;   ///< network round trip: (T4-T1)-(T3-T2)
};

/// On-wire computation of RFC 5905 section 8 from the client's send time `t1`, the server's
/// receive `t2` and transmit `t3` times, and the client's receive time `t4` (all NTP
/// timestamps). Differences are taken first, so eras cancel out.
constexpr sample compute_sample(std::uint64_t t1, std::uint64_t t2, std::uint64_t t3,
                                std::uint64_t t4) noexcept {
  const double d21 = diff_seconds(t2, t1), d34 = diff_seconds(t3, t4);
  const double d41 = diff_seconds(t4, t1), d32 = diff_seconds(t3, t2);
  return sample{(d21 + d34) / 2, d41 - d32};
}

/// The reference id as ASCII text: up to 4 characters, trailing NULs dropped, other
/// non-printable bytes as \xHH.
inline std::string refid_ascii(const std::array<std::uint8_t, 4>& id) {
  std::size_t n = 4;
  while (n > 0 && id[n - 1] == 0) --n;
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = id[i];
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      static constexpr char digits[] = "0123456789abcdef";
      out += "\\x";
      out += digits[c >> 4];
      out += digits[c & 15];
    }
  }
  return out;
}

/// The reference id as an IPv4 dotted quad.
inline std::string refid_ipv4(const std::array<std::uint8_t, 4>& id) {
  return std::to_string(id[0]) + "." + std::to_string(id[1]) + "." + std::to_string(id[2]) + "." +
         std::to_string(id[3]);
}

/// The reference id as people read it for `stratum`: ASCII for 0 (the kiss code) and 1 (the
/// reference clock, "GPS"); an IPv4 address for 2-15 (for IPv6 upstreams it is the first four
/// bytes of an MD5 hash, still shown dotted, as ntpq does); for 16 and above ASCII when all
/// four bytes are printable (chrony and ntpd say "INIT"), otherwise dotted.
inline std::string refid_text(std::uint8_t stratum, const std::array<std::uint8_t, 4>& id) {
  if (stratum <= 1) return refid_ascii(id);
  if (stratum >= stratum_unsynchronised) {
    bool printable = true;
    for (auto c : id) printable = printable && c >= 0x20 && c < 0x7f;
    if (printable) return refid_ascii(id);
  }
  return refid_ipv4(id);
}

/// What a kiss-o'-death code means (RFC 5905 section 7.4, RFC 8915 for NTSN); "" if unknown.
constexpr std::string_view kiss_meaning(std::string_view code) noexcept {
  struct entry {
    std::string_view code, meaning;
  };
  constexpr entry table[] = {
      {"ACST", "the association belongs to a unicast server"},
      {"AUTH", "server authentication failed"},
      {"AUTO", "autokey sequence failed"},
      {"BCST", "the association belongs to a broadcast server"},
      {"CRYP", "cryptographic authentication or identification failed"},
      {"DENY", "access denied by remote server"},
      {"DROP", "lost peer in symmetric mode"},
      {"RSTR", "access denied due to local policy"},
      {"INIT", "the association has not yet synchronized for the first time"},
      {"MCST", "the association belongs to a dynamically discovered server"},
      {"NKEY", "no key found"},
      {"NTSN", "NTS negative acknowledgement"},
      {"RATE", "rate exceeded: the server asks to reduce the poll rate"},
      {"RMOT", "alteration of association from a remote host running ntpdc"},
      {"STEP", "a step change in system time has occurred"},
  };
  for (const auto& e : table)
    if (e.code == code) return e.meaning;
  return "";
}

/// Name of a mode value for messages ("server", "client"...).
constexpr std::string_view mode_name(std::uint8_t mode) noexcept {
  switch (mode) {
    case 0:
      return "reserved";
    case mode_symmetric_active:
      return "symmetric active";
    case mode_symmetric_passive:
      return "symmetric passive";
    case mode_client:
      return "client";
    case mode_server:
      return "server";
    case mode_broadcast:
      return "broadcast";
    case mode_control:
      return "control";
    case mode_private:
      return "private";
  }
  return "invalid";
}

}  // namespace sonde::detail::ntp
