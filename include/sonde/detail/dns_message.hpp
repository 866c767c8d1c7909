#pragma once
/// @file detail/dns_message.hpp
/// DNS message codec (RFC 1035, 3596, 2782, 6891, 8659, 3597): pure functions over byte spans,
/// no sockets.
///
/// - Encoding: a query with one question, the RD flag and an optional EDNS0 OPT record.
/// - Decoding: a whole message: header, question, answer, authority and additional sections.
///   Names may be compressed; a compression pointer must point strictly backwards (before the
///   pointer itself), at most `max_pointer_jumps` are followed per name, and a name is at most
///   255 bytes on the wire, so a hostile packet cannot loop or read out of bounds.
/// - RDATA of A, AAAA, MX, CNAME, TXT, NS, SOA, PTR, SRV, CAA and OPT is decoded and checked
///   against its declared length; any other type is kept as opaque bytes and presented in the
///   RFC 3597 form `\# <len> <hex>`.
/// - Presentation: `to_string(record)` gives the zone-file line
///   `www.example.test. 300 IN A 127.0.0.1`.
///
/// Every read is bounds-checked; malformed input returns a message_errc. All functions are
/// pure and thread-safe.

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <tl/expected.hpp>

namespace sonde::detail::dns {

/// Sizes and limits.
inline constexpr std::size_t header_size = 12;
inline constexpr std::size_t max_name_wire = 255;    ///< RFC 1035 2.3.4
inline constexpr std::size_t max_label = 63;         ///< RFC 1035 2.3.4
inline constexpr int max_pointer_jumps = 64;         ///< per name; more is treated as a loop
inline constexpr std::size_t max_udp_classic = 512;  ///< UDP payload without EDNS
inline constexpr std::size_t max_message = 65535;    ///< TCP length prefix limit

/// Record types with decoded RDATA (and a few well-known others for names).
namespace type {
inline constexpr std::uint16_t a = 1, ns = 2, cname = 5, soa = 6, ptr = 12, mx = 15, txt = 16,
                               aaaa = 28, srv = 33, opt = 41, caa = 257;
}  // namespace type
/// Classes.
inline constexpr std::uint16_t class_in = 1, class_ch = 3, class_hs = 4;

/// Why a buffer could not be encoded or decoded. Values are fixed and never reused.
enum class message_errc : std::uint8_t {
  truncated = 1,         ///< ends inside the header, a name, a record or its declared RDATA
  bad_label_type = 2,    ///< a label length byte with the reserved 0x40/0x80 prefixes
  pointer_loop = 3,      ///< a compression pointer not pointing backwards, or too many jumps
  name_too_long = 4,     ///< a name longer than 255 bytes on the wire
  bad_rdata = 5,         ///< RDATA that does not fit its type (wrong size, overrun, empty)
  output_too_small = 6,  ///< encode: the output buffer cannot hold the message
  invalid_name = 7,      ///< encode: empty label, label over 63 bytes or bad escape in a name
};

/// Stable human name of a message_errc ("compression pointer loop", ...).
constexpr std::string_view to_string(message_errc e) noexcept {
  switch (e) {
    case message_errc::truncated:
      return "truncated message";
    case message_errc::bad_label_type:
      return "reserved label type";
    case message_errc::pointer_loop:
      return "compression pointer loop";
    case message_errc::name_too_long:
      return "name longer than 255 bytes";
    case message_errc::bad_rdata:
      return "malformed RDATA";
    case message_errc::output_too_small:
      return "output buffer too small";
    case message_errc::invalid_name:
      return "invalid name";
  }
  return "unknown";
}

/// Response codes (RFC 1035, 6895); EDNS extends them to 12 bits.
namespace rcode {
inline constexpr std::uint16_t noerror = 0, formerr = 1, servfail = 2, nxdomain = 3, notimp = 4,
                               refused = 5, yxdomain = 6, yxrrset = 7, nxrrset = 8, notauth = 9,
                               notzone = 10, badvers = 16;
}  // namespace rcode

/// Name of a response code ("NXDOMAIN"); "RCODE<n>" for unnamed ones.
inline std::string rcode_name(std::uint16_t rc) {
  static constexpr std::string_view names[] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN",
                                               "NOTIMP",  "REFUSED", "YXDOMAIN", "YXRRSET",
                                               "NXRRSET", "NOTAUTH", "NOTZONE"};
  if (rc < std::size(names)) return std::string(names[rc]);
  if (rc == rcode::badvers) return "BADVERS";
  return "RCODE" + std::to_string(rc);
}

/// Parse a response-code name (case-insensitive) or a number 0-4095.
inline std::optional<std::uint16_t> parse_rcode(std::string_view s) {
  if (s.empty()) return std::nullopt;
  std::string up;
  for (char c : s) up += (c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c;
  for (std::uint16_t i = 0; i <= rcode::badvers; ++i)
    if (up.rfind("RCODE", 0) != 0 && rcode_name(i) == up) return i;
  if (up.find_first_not_of("0123456789") == std::string::npos && up.size() <= 4) {
    unsigned v = static_cast<unsigned>(std::stoul(up));
    if (v < 4096) return static_cast<std::uint16_t>(v);
  }
  return std::nullopt;
}

/// Mnemonic of a record type ("AAAA"); "TYPE<n>" (RFC 3597) for others.
inline std::string type_name(std::uint16_t t) {
  switch (t) {
    case type::a:
      return "A";
    case type::ns:
      return "NS";
    case type::cname:
      return "CNAME";
    case type::soa:
      return "SOA";
    case type::ptr:
      return "PTR";
    case type::mx:
      return "MX";
    case type::txt:
      return "TXT";
    case type::aaaa:
      return "AAAA";
    case type::srv:
      return "SRV";
    case type::opt:
      return "OPT";
    case type::caa:
      return "CAA";
    case 43:
      return "DS";
    case 46:
      return "RRSIG";
    case 47:
      return "NSEC";
    case 48:
      return "DNSKEY";
    case 50:
      return "NSEC3";
    case 52:
      return "TLSA";
    case 64:
      return "SVCB";
    case 65:
      return "HTTPS";
    case 255:
      return "ANY";
  }
  return "TYPE" + std::to_string(t);
}

/// Parse a record type mnemonic (case-insensitive, any type_name() result, or "TYPE<n>").
inline std::optional<std::uint16_t> parse_type(std::string_view s) {
  std::string up;
  for (char c : s) up += (c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c;
  static constexpr std::uint16_t known[] = {1,   2,  5,  6,  12, 15, 16, 28, 33, 41,
                                            257, 43, 46, 47, 48, 50, 52, 64, 65, 255};
  for (auto t : known)
    if (type_name(t) == up) return t;
  if (up.size() > 4 && up.size() <= 9 && up.rfind("TYPE", 0) == 0 &&
      up.find_first_not_of("0123456789", 4) == std::string::npos) {
    unsigned long v = std::stoul(up.substr(4));
    if (v <= 65535) return static_cast<std::uint16_t>(v);
  }
  return std::nullopt;
}

/// Mnemonic of a class ("IN"); "CLASS<n>" for others.
inline std::string class_name(std::uint16_t c) {
  switch (c) {
    case class_in:
      return "IN";
    case class_ch:
      return "CH";
    case class_hs:
      return "HS";
  }
  return "CLASS" + std::to_string(c);
}

/// The fixed header.
struct header {
  std::uint16_t id = 0;
  bool qr = false;  ///< response
  std::uint8_t opcode = 0;
  bool aa = false, tc = false, rd = false, ra = false, ad = false, cd = false;
  std::uint8_t rcode = 0;  ///< the low 4 bits; see message::full_rcode()
  std::uint16_t qdcount = 0, ancount = 0, nscount = 0, arcount = 0;
};

/// One question.
struct question {
  std::string name;  ///< presentation form, absolute ("www.example.test.")
  std::uint16_t qtype = 0;
  std::uint16_t qclass = 0;
};

/// RDATA of the decoded types.
struct a_data {
  std::array<std::uint8_t, 4> address{};
};
struct aaaa_data {
  std::array<std::uint8_t, 16> address{};
};
struct name_data {  ///< CNAME, NS, PTR
  std::string name;
};
struct mx_data {
  std::uint16_t preference = 0;
  std::string exchange;
};
struct txt_data {
  std::vector<std::string> strings;  ///< raw bytes of each character-string
};
struct soa_data {
  std::string mname, rname;
  std::uint32_t serial = 0, refresh = 0, retry = 0, expire = 0, minimum = 0;
};
struct srv_data {
  std::uint16_t priority = 0, weight = 0, port = 0;
  std::string target;
};
struct caa_data {
  std::uint8_t flags = 0;
  std::string tag;
  std::string value;  ///< raw bytes
};
struct edns_option {
  std::uint16_t code = 0;
  std::vector<std::uint8_t> data;
};
struct opt_data {
  std::vector<edns_option> options;
};
struct opaque_data {  ///< any other type, kept as bytes
  std::vector<std::uint8_t> bytes;
};

using rdata = std::variant<opaque_data, a_data, aaaa_data, name_data, mx_data, txt_data, soa_data,
                           srv_data, caa_data, opt_data>;

/// One resource record.
struct resource_record {
  std::string name;  ///< presentation form, absolute
  std::uint16_t rtype = 0;
  std::uint16_t rclass = 0;  ///< for OPT: the sender's UDP payload size
  std::uint32_t ttl = 0;     ///< for OPT: extended rcode, version and flags
  rdata data;
};

/// The EDNS0 facts of a message carrying an OPT record.
struct edns_info {
  std::uint16_t udp_size = 0;
  std::uint8_t extended_rcode = 0;  ///< upper 8 bits of the 12-bit rcode
  std::uint8_t version = 0;
  bool dnssec_ok = false;
};

/// A decoded message.
struct message {
  header hdr;
  std::vector<question> questions;
  std::vector<resource_record> answers, authority, additional;
  std::optional<edns_info> edns;

  /// The 12-bit response code (header rcode plus the OPT record's extended bits).
  std::uint16_t full_rcode() const noexcept {
    return static_cast<std::uint16_t>((edns ? edns->extended_rcode << 4 : 0) | hdr.rcode);
  }
};

/// What to put in a query.
struct query_spec {
  std::uint16_t id = 0;
  std::string_view name;  ///< presentation form; a trailing dot is optional; "." is the root
  std::uint16_t qtype = type::a;
  std::uint16_t qclass = class_in;
  bool recursion_desired = true;
  std::uint16_t edns_udp_size = 0;  ///< 0: no OPT record
};

namespace impl {
inline std::uint16_t get16(std::span<const std::uint8_t> b, std::size_t at) {
  return static_cast<std::uint16_t>((b[at] << 8) | b[at + 1]);
}
inline std::uint32_t get32(std::span<const std::uint8_t> b, std::size_t at) {
  return (std::uint32_t{b[at]} << 24) | (std::uint32_t{b[at + 1]} << 16) |
         (std::uint32_t{b[at + 2]} << 8) | std::uint32_t{b[at + 3]};
}
inline void put16(std::uint8_t* p, std::uint16_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}
/// Append one label byte in presentation form (RFC 1035 5.1 escapes).
inline void append_label_char(std::string& out, std::uint8_t c) {
  if (c == '.' || c == '\\' || c == '"' || c == ';' || c == '(' || c == ')' || c == '@' ||
      c == '$') {
    out += '\\';
    out += static_cast<char>(c);
  } else if (c <= 0x20 || c >= 0x7f) {
    out += '\\';
    out += static_cast<char>('0' + c / 100);
    out += static_cast<char>('0' + (c / 10) % 10);
    out += static_cast<char>('0' + c % 10);
  } else {
    out += static_cast<char>(c);
  }
}
}  // namespace impl

/// Read the (possibly compressed) name starting at `*pos` of `msg` into presentation form.
/// On success `*pos` is moved past the name as it appears in place (past the first pointer).
inline tl::expected<std::string, message_errc> read_name(std::span<const std::uint8_t> msg,
                                                         std::size_t* pos) {
  std::string out;
  out.reserve(32);  // most names fit: one allocation instead of growing
  std::size_t at = *pos;
  std::size_t end_in_place = 0;  // set at the first pointer
  bool jumped = false;
  int jumps = 0;
  std::size_t wire_len = 0;
  while (true) {
    if (at >= msg.size()) return tl::unexpected(message_errc::truncated);
    const std::uint8_t len = msg[at];
    if ((len & 0xC0) == 0xC0) {
      if (at + 1 >= msg.size()) return tl::unexpected(message_errc::truncated);
      const std::size_t target = static_cast<std::size_t>(((len & 0x3F) << 8) | msg[at + 1]);
      if (target >= at || ++jumps > max_pointer_jumps)
        return tl::unexpected(message_errc::pointer_loop);
      if (!jumped) end_in_place = at + 2;
      jumped = true;
      at = target;
      continue;
    }
    if (len & 0xC0) return tl::unexpected(message_errc::bad_label_type);
    wire_len += 1u + len;
    if (wire_len > max_name_wire) return tl::unexpected(message_errc::name_too_long);
    if (len == 0) {
      if (out.empty()) out = ".";
      *pos = jumped ? end_in_place : at + 1;
      return out;
    }
    if (at + 1 + len > msg.size()) return tl::unexpected(message_errc::truncated);
    const std::uint8_t* label = msg.data() + at + 1;
    const bool plain = std::all_of(label, label + len, [](std::uint8_t c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '-' || c == '_';
    });
    if (plain) {  // the common case: one append per label
      out.append(reinterpret_cast<const char*>(label), len);
    } else {
      for (std::size_t i = 0; i < len; ++i) impl::append_label_char(out, label[i]);
    }
    out += '.';
    at += 1u + len;
  }
}

/// Encode a presentation-form name (escapes `\.` `\\` `\DDD`; trailing dot optional) into
/// wire labels at `out`. Returns the number of bytes written.
inline tl::expected<std::size_t, message_errc> write_name(std::span<std::uint8_t> out,
                                                          std::string_view name) {
  std::array<std::uint8_t, max_name_wire> wire{};
  std::size_t n = 0;
  if (name == ".") name = {};
  std::size_t label_start = 0;
  std::size_t label_len = 0;
  auto close_label = [&]() -> bool {
    if (label_len == 0 || label_len > max_label) return false;
    wire[label_start] = static_cast<std::uint8_t>(label_len);
    label_len = 0;
    return true;
  };
  bool open = false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if (!open) {
      if (n + 1 >= max_name_wire) return tl::unexpected(message_errc::name_too_long);
      label_start = n++;
      open = true;
    }
    if (c == '.') {
      if (!close_label()) return tl::unexpected(message_errc::invalid_name);
      open = false;
      continue;
    }
    std::uint8_t byte = static_cast<std::uint8_t>(c);
    if (c == '\\') {
      if (++i >= name.size()) return tl::unexpected(message_errc::invalid_name);
      if (name[i] >= '0' && name[i] <= '9') {
        if (i + 2 >= name.size()) return tl::unexpected(message_errc::invalid_name);
        unsigned v = 0;
        for (int k = 0; k < 3; ++k) {
          char d = name[i + static_cast<std::size_t>(k)];
          if (d < '0' || d > '9') return tl::unexpected(message_errc::invalid_name);
          v = v * 10 + static_cast<unsigned>(d - '0');
        }
        if (v > 255) return tl::unexpected(message_errc::invalid_name);
        byte = static_cast<std::uint8_t>(v);
        i += 2;
      } else {
        byte = static_cast<std::uint8_t>(name[i]);
      }
    }
    if (n + 1 >= max_name_wire) return tl::unexpected(message_errc::name_too_long);
    wire[n++] = byte;
    ++label_len;
  }
  if (open && !close_label()) return tl::unexpected(message_errc::invalid_name);
  wire[n++] = 0;
  if (out.size() < n) return tl::unexpected(message_errc::output_too_small);
  std::copy_n(wire.begin(), n, out.begin());
  return n;
}

/// The canonical presentation form of a name (escapes normalised, trailing dot added), or an
/// error if it cannot be encoded.
inline tl::expected<std::string, message_errc> canonical_name(std::string_view name) {
  std::array<std::uint8_t, max_name_wire> wire{};
  auto n = write_name(wire, name);
  if (!n) return tl::unexpected(n.error());
  std::size_t pos = 0;
  return read_name(std::span<const std::uint8_t>(wire.data(), *n), &pos);
}

/// Case-insensitive (ASCII) comparison of two presentation-form names.
inline bool same_name(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x + 32);
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y + 32);
    if (x != y) return false;
  }
  return true;
}

/// Encode a query into `out`. Returns its size. Errors: invalid_name, name_too_long,
/// output_too_small.
inline tl::expected<std::size_t, message_errc> encode_query(std::span<std::uint8_t> out,
                                                            const query_spec& q) {
  if (out.size() < header_size) return tl::unexpected(message_errc::output_too_small);
  std::uint8_t* p = out.data();
  impl::put16(p, q.id);
  p[2] = q.recursion_desired ? 0x01 : 0x00;
  p[3] = 0;
  impl::put16(p + 4, 1);
  impl::put16(p + 6, 0);
  impl::put16(p + 8, 0);
  impl::put16(p + 10, q.edns_udp_size ? 1 : 0);
  auto n = write_name(out.subspan(header_size), q.name);
  if (!n) return tl::unexpected(n.error());
  std::size_t at = header_size + *n;
  if (out.size() < at + 4) return tl::unexpected(message_errc::output_too_small);
  impl::put16(p + at, q.qtype);
  impl::put16(p + at + 2, q.qclass);
  at += 4;
  if (q.edns_udp_size) {
    if (out.size() < at + 11) return tl::unexpected(message_errc::output_too_small);
    p[at] = 0;  // root name
    impl::put16(p + at + 1, type::opt);
    impl::put16(p + at + 3, q.edns_udp_size);
    impl::put16(p + at + 5, 0);  // extended rcode, version 0
    impl::put16(p + at + 7, 0);  // flags
    impl::put16(p + at + 9, 0);  // no options
    at += 11;
  }
  return at;
}

/// Decode only the fixed header (for cheap id matching). Error: truncated.
inline tl::expected<header, message_errc> decode_header(std::span<const std::uint8_t> msg) {
  if (msg.size() < header_size) return tl::unexpected(message_errc::truncated);
  header h;
  h.id = impl::get16(msg, 0);
  const std::uint8_t f1 = msg[2], f2 = msg[3];
  h.qr = f1 & 0x80;
  h.opcode = static_cast<std::uint8_t>((f1 >> 3) & 0x0F);
  h.aa = f1 & 0x04;
  h.tc = f1 & 0x02;
  h.rd = f1 & 0x01;
  h.ra = f2 & 0x80;
  h.ad = f2 & 0x20;
  h.cd = f2 & 0x10;
  h.rcode = f2 & 0x0F;
  h.qdcount = impl::get16(msg, 4);
  h.ancount = impl::get16(msg, 6);
  h.nscount = impl::get16(msg, 8);
  h.arcount = impl::get16(msg, 10);
  return h;
}

namespace impl {
/// Decode the RDATA of `rr` occupying msg[at, at + len).
inline tl::expected<void, message_errc> decode_rdata(std::span<const std::uint8_t> msg,
                                                     std::size_t at, std::size_t len,
                                                     resource_record& rr) {
  const std::size_t end = at + len;
  // A name inside RDATA must end inside it; `exact` names must end exactly at `end`.
  auto name_in = [&](std::size_t* pos) -> tl::expected<std::string, message_errc> {
    auto n = read_name(msg.first(end), pos);
    if (!n)
      return tl::unexpected(n.error() == message_errc::truncated ? message_errc::bad_rdata
                                                                 : n.error());
    return n;
  };
  auto bad = [] { return tl::unexpected(message_errc::bad_rdata); };
  switch (rr.rtype) {
    case type::a: {
      if (len != 4) return bad();
      a_data d;
      std::copy_n(msg.begin() + static_cast<std::ptrdiff_t>(at), 4, d.address.begin());
      rr.data = d;
      return {};
    }
    case type::aaaa: {
      if (len != 16) return bad();
      aaaa_data d;
      std::copy_n(msg.begin() + static_cast<std::ptrdiff_t>(at), 16, d.address.begin());
      rr.data = d;
      return {};
    }
    case type::cname:
    case type::ns:
    case type::ptr: {
      std::size_t pos = at;
      auto n = name_in(&pos);
      if (!n) return tl::unexpected(n.error());
      if (pos != end) return bad();
      rr.data = name_data{std::move(*n)};
      return {};
    }
    case type::mx: {
      if (len < 3) return bad();
      std::size_t pos = at + 2;
      auto n = name_in(&pos);
      if (!n) return tl::unexpected(n.error());
      if (pos != end) return bad();
      rr.data = mx_data{get16(msg, at), std::move(*n)};
      return {};
    }
    case type::srv: {
      if (len < 7) return bad();
      std::size_t pos = at + 6;
      auto n = name_in(&pos);
      if (!n) return tl::unexpected(n.error());
      if (pos != end) return bad();
      rr.data = srv_data{get16(msg, at), get16(msg, at + 2), get16(msg, at + 4), std::move(*n)};
      return {};
    }
    case type::soa: {
      std::size_t pos = at;
      auto m = name_in(&pos);
      if (!m) return tl::unexpected(m.error());
      auto r = name_in(&pos);
      if (!r) return tl::unexpected(r.error());
      if (end - pos != 20) return bad();
      rr.data = soa_data{std::move(*m),       std::move(*r),       get32(msg, pos),
                         get32(msg, pos + 4), get32(msg, pos + 8), get32(msg, pos + 12),
                         get32(msg, pos + 16)};
      return {};
    }
    case type::txt: {
      if (len == 0) return bad();
      txt_data d;
      std::size_t pos = at;
      while (pos < end) {
        const std::size_t n = msg[pos];
        if (pos + 1 + n > end) return bad();
        d.strings.emplace_back(reinterpret_cast<const char*>(msg.data() + pos + 1), n);
        pos += 1 + n;
      }
      rr.data = std::move(d);
      return {};
    }
    case type::caa: {
      if (len < 2) return bad();
      const std::size_t tag_len = msg[at + 1];
      if (tag_len == 0 || 2 + tag_len > len) return bad();
      caa_data d;
      d.flags = msg[at];
      d.tag.assign(reinterpret_cast<const char*>(msg.data() + at + 2), tag_len);
      d.value.assign(reinterpret_cast<const char*>(msg.data() + at + 2 + tag_len),
                     len - 2 - tag_len);
      rr.data = std::move(d);
      return {};
    }
    case type::opt: {
      opt_data d;
      std::size_t pos = at;
      while (pos < end) {
        if (end - pos < 4) return bad();
        const std::uint16_t code = get16(msg, pos), n = get16(msg, pos + 2);
        if (end - pos - 4 < n) return bad();
        d.options.push_back(edns_option{
            code,
            std::vector<std::uint8_t>(msg.begin() + static_cast<std::ptrdiff_t>(pos + 4),
                                      msg.begin() + static_cast<std::ptrdiff_t>(pos + 4 + n))});
        pos += 4u + n;
      }
      rr.data = std::move(d);
      return {};
    }
    default:
      rr.data =
          opaque_data{std::vector<std::uint8_t>(msg.begin() + static_cast<std::ptrdiff_t>(at),
                                                msg.begin() + static_cast<std::ptrdiff_t>(end))};
      return {};
  }
}

inline tl::expected<void, message_errc> decode_records(std::span<const std::uint8_t> msg,
                                                       std::size_t* pos, std::uint16_t count,
                                                       std::vector<resource_record>& out) {
  // Each record takes at least 11 bytes: do not reserve for counts the message cannot hold.
  out.reserve(std::min<std::size_t>(count, (msg.size() - std::min(msg.size(), *pos)) / 11));
  for (std::uint16_t i = 0; i < count; ++i) {
    resource_record rr;
    auto name = read_name(msg, pos);
    if (!name) return tl::unexpected(name.error());
    rr.name = std::move(*name);
    if (msg.size() - *pos < 10) return tl::unexpected(message_errc::truncated);
    rr.rtype = get16(msg, *pos);
    rr.rclass = get16(msg, *pos + 2);
    rr.ttl = get32(msg, *pos + 4);
    const std::size_t len = get16(msg, *pos + 8);
    *pos += 10;
    if (msg.size() - *pos < len) return tl::unexpected(message_errc::truncated);
    if (auto r = decode_rdata(msg, *pos, len, rr); !r) return tl::unexpected(r.error());
    *pos += len;
    out.push_back(std::move(rr));
  }
  return {};
}
}  // namespace impl

/// Decode a whole message. Bytes after the last record are ignored. Errors: truncated,
/// bad_label_type, pointer_loop, name_too_long, bad_rdata.
inline tl::expected<message, message_errc> decode(std::span<const std::uint8_t> msg) {
  auto h = decode_header(msg);
  if (!h) return tl::unexpected(h.error());
  message m;
  m.hdr = *h;
  std::size_t pos = header_size;
  m.questions.reserve(std::min<std::size_t>(h->qdcount, 4));
  for (std::uint16_t i = 0; i < h->qdcount; ++i) {
    auto name = read_name(msg, &pos);
    if (!name) return tl::unexpected(name.error());
    if (msg.size() - pos < 4) return tl::unexpected(message_errc::truncated);
    m.questions.push_back(
        question{std::move(*name), impl::get16(msg, pos), impl::get16(msg, pos + 2)});
    pos += 4;
  }
  for (auto [count, out] : {std::pair{h->ancount, &m.answers}, std::pair{h->nscount, &m.authority},
                            std::pair{h->arcount, &m.additional}}) {
    if (auto r = impl::decode_records(msg, &pos, count, *out); !r) return tl::unexpected(r.error());
  }
  for (const auto& rr : m.additional) {
    if (rr.rtype == type::opt) {
      m.edns = edns_info{rr.rclass, static_cast<std::uint8_t>(rr.ttl >> 24),
                         static_cast<std::uint8_t>(rr.ttl >> 16), (rr.ttl & 0x8000u) != 0};
      break;
    }
  }
  return m;
}

namespace impl {
inline void append_quoted(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      out += '\\';
      out += static_cast<char>('0' + c / 100);
      out += static_cast<char>('0' + (c / 10) % 10);
      out += static_cast<char>('0' + c % 10);
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
}
inline void append_hex(std::string& out, std::span<const std::uint8_t> b) {
  static constexpr char digits[] = "0123456789ABCDEF";
  for (auto c : b) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
}
}  // namespace impl

/// The RDATA in presentation form ("10 mail.example.test.", "\"text\"", "\# 3 0A0B0C").
inline std::string rdata_to_string(const resource_record& rr) {
  std::string out;
  std::visit(
      [&](const auto& d) {
        using T = std::decay_t<decltype(d)>;
        if constexpr (std::is_same_v<T, a_data>) {
          char buf[INET_ADDRSTRLEN];
          if (inet_ntop(AF_INET, d.address.data(), buf, sizeof buf)) out = buf;
        } else if constexpr (std::is_same_v<T, aaaa_data>) {
          char buf[INET6_ADDRSTRLEN];
          if (inet_ntop(AF_INET6, d.address.data(), buf, sizeof buf)) out = buf;
        } else if constexpr (std::is_same_v<T, name_data>) {
          out = d.name;
        } else if constexpr (std::is_same_v<T, mx_data>) {
          out = std::to_string(d.preference) + " " + d.exchange;
        } else if constexpr (std::is_same_v<T, txt_data>) {
          for (std::size_t i = 0; i < d.strings.size(); ++i) {
            if (i) out += ' ';
            impl::append_quoted(out, d.strings[i]);
          }
        } else if constexpr (std::is_same_v<T, soa_data>) {
          out = d.mname + " " + d.rname + " " + std::to_string(d.serial) + " " +
                std::to_string(d.refresh) + " " + std::to_string(d.retry) + " " +
                std::to_string(d.expire) + " " + std::to_string(d.minimum);
        } else if constexpr (std::is_same_v<T, srv_data>) {
          out = std::to_string(d.priority) + " " + std::to_string(d.weight) + " " +
                std::to_string(d.port) + " " + d.target;
        } else if constexpr (std::is_same_v<T, caa_data>) {
          out = std::to_string(d.flags) + " ";
          for (unsigned char c : d.tag) impl::append_label_char(out, c);
          out += ' ';
          impl::append_quoted(out, d.value);
        } else if constexpr (std::is_same_v<T, opt_data>) {
          out = "; EDNS: udp " + std::to_string(rr.rclass) + ", version " +
                std::to_string((rr.ttl >> 16) & 0xFF) + ((rr.ttl & 0x8000u) ? ", do" : "") + ", " +
                std::to_string(d.options.size()) + " options";
        } else {
          out = "\\# " + std::to_string(d.bytes.size());
          if (!d.bytes.empty()) {
            out += ' ';
            impl::append_hex(out, d.bytes);
          }
        }
      },
      rr.data);
  return out;
}

/// The record in presentation form: "www.example.test. 300 IN A 127.0.0.1".
inline std::string to_string(const resource_record& rr) {
  if (rr.rtype == type::opt) return rr.name + " OPT " + rdata_to_string(rr);
  return rr.name + " " + std::to_string(rr.ttl) + " " + class_name(rr.rclass) + " " +
         type_name(rr.rtype) + " " + rdata_to_string(rr);
}

/// The question in presentation form: "www.example.test. IN A".
inline std::string to_string(const question& q) {
  return q.name + " " + class_name(q.qclass) + " " + type_name(q.qtype);
}

}  // namespace sonde::detail::dns
