#pragma once
/// @file target.hpp
/// Target parsing: host names, IPv4, IPv6 (bare or bracketed), optional `:port`.

#include <arpa/inet.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include <tl/expected.hpp>

namespace sonde {

/// What kind of host a target names.
enum class host_kind { name, ipv4, ipv6 };

/// Whether a target form takes a port.
enum class port_rule {
  forbidden,  ///< "host" only (icmp)
  optional,   ///< "host" or "host:port" (dns, ntp): a default port applies
  required,   ///< "host:port" (tcp, udp)
};

/// A parsed probe target. `host` never carries brackets; IPv6 zone ids are kept ("fe80::1%eth0").
struct target {
  std::string host;
  std::uint16_t port = 0;  ///< 0 when the target has none and no default applies
  host_kind kind = host_kind::name;

  /// Canonical text: "host", "host:port", "[v6]:port".
  std::string to_string() const {
    std::string h = kind == host_kind::ipv6 && port ? "[" + host + "]" : host;
    return port ? h + ":" + std::to_string(port) : h;
  }
};

namespace detail {
/// Dotted-quad IPv4 ("127.0.0.1") into network-order bytes; exactly what inet_pton(AF_INET)
/// accepts (four decimal octets up to 255, no leading zeros), at a fraction of its cost: every
/// run of a probe against a literal address parses it.
inline bool parse_ipv4(std::string_view s, unsigned char (&out)[4]) noexcept {
  std::size_t i = 0;
  for (int octet = 0; octet < 4; ++octet) {
    if (octet > 0) {
      if (i >= s.size() || s[i] != '.') return false;
      ++i;
    }
    const std::size_t start = i;
    unsigned v = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9' && i - start < 3)
      v = v * 10 + static_cast<unsigned>(s[i++] - '0');
    const std::size_t len = i - start;
    if (len == 0 || v > 255 || (len > 1 && s[start] == '0')) return false;
    out[octet] = static_cast<unsigned char>(v);
  }
  return i == s.size();
}
inline bool is_ipv4_literal(const std::string& s) {
  unsigned char buf[4];
  return parse_ipv4(s, buf);
}
inline bool is_ipv6_literal(const std::string& s) {
  std::string addr = s.substr(0, s.find('%'));
  unsigned char buf[16];
  return inet_pton(AF_INET6, addr.c_str(), buf) == 1;
}
/// `text` in double quotes for an error message: non-printable bytes escaped, and shortened to
/// `max` characters plus its length when longer, so that a huge input cannot push the reason
/// that follows it out of a bounded message ("...\" (10000 characters)"). Pure function.
inline std::string quote_input(std::string_view text, std::size_t max = 64) {
  std::string out = "\"";
  std::size_t shown = 0;
  for (unsigned char c : text) {
    if (shown == max) break;
    ++shown;
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      static constexpr char digits[] = "0123456789abcdef";
      out += "\\x";
      out += digits[c >> 4];
      out += digits[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (shown < text.size()) out += "...";
  out += '"';
  if (shown < text.size()) out += " (" + std::to_string(text.size()) + " characters)";
  return out;
}
/// RFC 1123 host name check (underscores allowed, as in SRV-style names).
inline std::string check_host_name(std::string_view h) {
  if (h.size() > 253) return "host name longer than 253 characters";
  std::size_t label = 0;
  for (std::size_t i = 0; i < h.size(); ++i) {
    char c = h[i];
    if (c == '.') {
      if (label == 0) return "empty label in host name";
      label = 0;
      continue;
    }
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    if (!ok) {
      const auto u = static_cast<unsigned char>(c);
      std::string shown(1, c);
      if (u < 0x20 || u >= 0x7f) {
        static constexpr char digits[] = "0123456789abcdef";
        shown = std::string("\\x") + digits[u >> 4] + digits[u & 15];
      }
      return "character '" + shown + "' is not allowed in a host name";
    }
    if (++label > 63) return "label longer than 63 characters in host name";
  }
  return {};
}
}  // namespace detail

/// Parse `text` as a target. With port_rule::optional, `default_port` fills a missing port.
/// Errors are sentences that quote the input (shortened by detail::quote_input: the reason is
/// never lost behind a long target). Thread-safe (pure function).
inline tl::expected<target, std::string> parse_target(std::string_view text, port_rule rule,
                                                      std::uint16_t default_port = 0) {
  auto fail = [&](std::string why) -> tl::unexpected<std::string> {
    return tl::unexpected("invalid target " + detail::quote_input(text) + ": " + why);
  };
  if (text.empty()) return fail("empty");
  // One pass: reject spaces and '/', count the colons (a target is parsed for every task of a
  // task file, so this stays cheap).
  std::size_t colons = 0, first_colon = std::string_view::npos;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '/')
      return fail("contains a space or '/' (give a host, an IP address or host:port)");
    if (c == ':' && colons++ == 0) first_colon = i;
  }
  target t;
  std::string_view host_part = text;
  std::string_view port_part;
  bool has_port = false;
  if (text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) return fail("missing ']' after IPv6 address");
    host_part = text.substr(1, close - 1);
    auto rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return fail("expected ':port' after ']'");
      port_part = rest.substr(1);
      has_port = true;
    }
    t.host = std::string(host_part);
    if (!detail::is_ipv6_literal(t.host))
      return fail(detail::quote_input(t.host) + " is not an IPv6 address");
    t.kind = host_kind::ipv6;
  } else {
    if (colons > 1) {  // bare IPv6 literal, no port possible
      t.host = std::string(text);
      if (!detail::is_ipv6_literal(t.host))
        return fail("not an IPv6 address (write IPv6 with a port as [addr]:port)");
      t.kind = host_kind::ipv6;
    } else {
      if (colons == 1) {
        host_part = text.substr(0, first_colon);
        port_part = text.substr(first_colon + 1);
        has_port = true;
      }
      t.host = std::string(host_part);
      if (t.host.empty()) return fail("missing host");
      if (detail::is_ipv4_literal(t.host)) {
        t.kind = host_kind::ipv4;
      } else {
        bool all_numeric = t.host.find_first_not_of("0123456789.") == std::string::npos;
        if (all_numeric) return fail(detail::quote_input(t.host) + " is not a valid IPv4 address");
        if (auto why = detail::check_host_name(t.host); !why.empty()) return fail(why);
        t.kind = host_kind::name;
      }
    }
  }
  if (has_port) {
    if (rule == port_rule::forbidden) return fail("this probe type takes a host without a port");
    if (port_part.empty()) return fail("empty port after ':'");
    unsigned long p = 0;
    for (char c : port_part) {
      if (c < '0' || c > '9')
        return fail("port " + detail::quote_input(port_part) + " is not a number");
      p = p * 10 + static_cast<unsigned long>(c - '0');
      if (p > 65535) break;
    }
    if (p == 0 || p > 65535) return fail("port must be 1-65535");
    t.port = static_cast<std::uint16_t>(p);
  } else if (rule == port_rule::required) {
    return fail("a port is required (host:port, or [IPv6]:port)");
  } else if (rule == port_rule::optional) {
    t.port = default_port;
  }
  return t;
}

}  // namespace sonde
