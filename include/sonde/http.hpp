#pragma once
/// @file http.hpp
/// http_probe and https_probe: HTTP(S) checks through libcurl's multi interface on the
/// caller's io_context (detail/curl_service.hpp): no thread and no blocking call per probe.
///
/// The target is a URL (`http://host[:port]/path?query`, `https://...`; without a scheme the
/// probe's own is assumed). The host is resolved with sonde::resolve (c-ares, cancellable) and
/// handed to curl with CURLOPT_CONNECT_TO, so curl never resolves it; `server_name` replaces
/// the URL's host in the Host header, SNI and certificate check while the connection still goes
/// to the target's address. Every probe uses a fresh connection (no reuse, no TLS session
/// resumption), closed with RST, so connect and TLS times are real and no TIME_WAIT piles up.
///
/// Metrics (seconds unless noted): `latency`, `status_code` (code), `phase.resolve`,
/// `phase.connect`, `phase.tls`, `phase.ttfb`, `phase.transfer`, `body_bytes` (bytes),
/// `tls.cert_expiry` (s until the peer certificate's notAfter, negative once expired; also read
/// when verification fails or is off), `redirects` (count), `http_version` (1.0, 1.1, 2, 3).

#include <curl/curl.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <re2/re2.h>
#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "detail/curl_service.hpp"
#include "detail/net.hpp"
#include "probe.hpp"
#include "resolve.hpp"
#include "version.hpp"

namespace sonde {

/// Limits of the HTTP checkers, all documented in docs/probes/http.md.
struct http_limits {
  /// Largest `max_body` accepted (64 MiB). A probe keeps at most this many body bytes in
  /// memory; blackbox_exporter and check_curl likewise read whole bodies only for body checks.
  static constexpr std::int64_t max_body = std::int64_t{64} << 20;
  /// Body bytes `body_regex` searches: the first 1 MiB (the default `max_body`). RE2 runs in
  /// time linear in these bytes, on the engine's thread: about 2-3 ms per MiB for ordinary
  /// patterns, up to ~0.3 s per MiB for one whose DFA overflows RE2's cache (measured).
  static constexpr std::size_t regex_window = std::size_t{1} << 20;
  /// RE2's memory budget for one compiled `body_regex` (program and lazily built DFA cache;
  /// RE2's own default). A pattern too large for it is refused when the task loads.
  static constexpr std::int64_t regex_memory = std::int64_t{8} << 20;
  /// Most RE2 program instructions in a `body_regex`: the linear factor's constant is the
  /// program size when RE2 falls back from its DFA, so `.{1000}x` (8,005 instructions) could
  /// cost 20 s per MiB. `\pL+` is 1,198; `.{600}` is 4,805.
  static constexpr int regex_program_size = 5000;
  /// Most bytes of one response's header block (status line and header lines). libcurl 7.88
  /// refuses a single header line above 100 KiB (as "Out of memory"); this limit, the same
  /// 100 KiB for the whole block, is enforced here and reported as a protocol failure.
  static constexpr std::size_t header_bytes = std::size_t{100} << 10;
};

namespace detail {

/// A URL split into the parts the HTTP checker needs. `rest` is the path and query ("/" when
/// the URL has none); the fragment is dropped.
struct http_url {
  bool tls = false;
  std::string host;  ///< without brackets
  std::uint16_t port = 0;
  std::string rest = "/";
  bool host_is_v6 = false;
};

/// Parse `text` as an http(s) URL. Without "scheme://", `default_tls` picks the scheme.
/// Errors are sentences quoting the input. Pure function, thread-safe.
inline tl::expected<http_url, std::string> parse_http_url(std::string_view text, bool default_tls) {
  // The URL is echoed shortened so that the reason survives any message size limit.
  auto fail = [&](std::string why) -> tl::unexpected<std::string> {
    return tl::unexpected("invalid URL " + quote_input(text) + ": " + why);
  };
  if (text.empty()) return fail("empty");
  if (text.find_first_of(" \t\r\n") != std::string_view::npos) return fail("contains a space");
  http_url u;
  std::string_view rest = text;
  if (auto p = rest.find("://"); p != std::string_view::npos) {
    std::string scheme(rest.substr(0, p));
    for (auto& c : scheme) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    if (scheme == "http")
      u.tls = false;
    else if (scheme == "https")
      u.tls = true;
    else
      return fail("scheme " + quote_input(scheme) + " is not http or https");
    rest = rest.substr(p + 3);
  } else {
    u.tls = default_tls;
  }
  auto end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, end);
  std::string_view tail = end == std::string_view::npos ? std::string_view{} : rest.substr(end);
  if (authority.find('@') != std::string_view::npos)
    return fail("credentials in the URL are not supported (use 'username' and 'password')");
  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return fail("missing ']' after IPv6 address");
    u.host = std::string(authority.substr(1, close - 1));
    if (!is_ipv6_literal(u.host)) return fail(quote_input(u.host) + " is not an IPv6 address");
    u.host_is_v6 = true;
    auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return fail("expected ':port' after ']'");
      port_text = after.substr(1);
      if (port_text.empty()) return fail("empty port after ':'");
    }
  } else {
    auto colon = authority.find(':');
    u.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) return fail("empty port after ':'");
    }
    if (u.host.empty()) return fail("missing host");
    if (!is_ipv4_literal(u.host)) {
      if (u.host.find_first_not_of("0123456789.") == std::string::npos)
        return fail(quote_input(u.host) + " is not a valid IPv4 address");
      if (auto why = check_host_name(u.host); !why.empty()) return fail(why);
    }
  }
  if (!port_text.empty()) {
    unsigned long p = 0;
    for (char c : port_text) {
      if (c < '0' || c > '9') return fail("port " + quote_input(port_text) + " is not a number");
      p = p * 10 + static_cast<unsigned long>(c - '0');
      if (p > 65535) break;
    }
    if (p == 0 || p > 65535) return fail("port must be 1-65535");
    u.port = static_cast<std::uint16_t>(p);
  } else {
    u.port = u.tls ? 443 : 80;
  }
  tail = tail.substr(0, tail.find('#'));
  if (tail.empty())
    u.rest = "/";
  else if (tail.front() == '?')
    u.rest = "/" + std::string(tail);
  else
    u.rest = std::string(tail);
  return u;
}

/// "host" or "[v6]" for URLs and CONNECT_TO entries.
inline std::string bracketed(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

/// One accepted range of status codes.
struct status_range {
  int lo, hi;
};

/// Parse `expect_status` items: "200", "200-299", "2xx". Error: a sentence naming the item.
inline tl::expected<std::vector<status_range>, std::string> parse_status_ranges(
    const std::vector<std::string>& items) {
  std::vector<status_range> out;
  auto number = [](std::string_view s) -> int {
    if (s.size() != 3) return -1;
    int v = 0;
    for (char c : s) {
      if (c < '0' || c > '9') return -1;
      v = v * 10 + (c - '0');
    }
    return v >= 100 && v <= 999 ? v : -1;
  };
  for (const auto& raw : items) {
    std::string_view s = raw;
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
    status_range r{-1, -1};
    if (s.size() == 3 && s[0] >= '1' && s[0] <= '9' && (s[1] == 'x' || s[1] == 'X') &&
        (s[2] == 'x' || s[2] == 'X')) {
      r.lo = (s[0] - '0') * 100;
      r.hi = r.lo + 99;
    } else if (auto dash = s.find('-'); dash != std::string_view::npos) {
      r.lo = number(s.substr(0, dash));
      r.hi = number(s.substr(dash + 1));
      if (r.lo > r.hi) r.lo = -1;
    } else {
      r.lo = r.hi = number(s);
    }
    if (r.lo < 0 || r.hi < 0)
      return tl::unexpected("expect_status: \"" + raw +
                            "\" is not a status code (100-999), a range such as \"200-299\" or "
                            "a class such as \"2xx\"");
    out.push_back(r);
  }
  if (out.empty()) return tl::unexpected(std::string("expect_status: the list is empty"));
  return out;
}

/// How a failed curl transfer is reported.
inline reason classify_curl(CURLcode rc, long os_errno) {
  switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
      return reason::timeout;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
      return reason::resolve;
    case CURLE_COULDNT_CONNECT:
      if (os_errno == ECONNREFUSED) return reason::refused;
      if (os_errno == ETIMEDOUT) return reason::timeout;
      if (os_errno == ENETUNREACH || os_errno == EHOSTUNREACH || os_errno == ENETDOWN ||
          os_errno == EADDRNOTAVAIL)
        return reason::unreachable;
      return reason::refused;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_USE_SSL_FAILED:
      return reason::tls;
    case CURLE_UNSUPPORTED_PROTOCOL:  // includes "Received HTTP/0.9 when not allowed"
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_RANGE_ERROR:
    case CURLE_PROXY:
      return reason::protocol;
    case CURLE_TOO_MANY_REDIRECTS:
      return reason::mismatch;
    default:
      return reason::error;
  }
}

/// Per-run state the curl callbacks write to; lives in the run coroutine's frame.
struct http_run_state {
  /// Kept body bytes (only when a body check needs them; at most `keep` of them). A vector, not
  /// a string: std::string::reserve rounds up to twice the old capacity, a vector's is exact.
  std::vector<char>* body = nullptr;
  std::size_t bytes = 0;  ///< body bytes received (at most `limit`)
  std::size_t limit = 0;  ///< max_body
  std::size_t keep = 0;   ///< most bytes kept in `body` (<= limit)
  bool overflow = false;  ///< the body went past `limit`: the transfer was stopped
  // Response header accounting (per response: a redirect or 1xx starts again).
  std::size_t header_bytes = 0;  ///< bytes of the current response's header block
  std::size_t header_limit = http_limits::header_bytes;
  std::int64_t content_length = -1;  ///< from the last response's Content-Length, -1: none
  bool header_overflow = false;      ///< header block went past header_limit: stopped
  bool headers_complete = false;     ///< the current response's header block has ended
  int socket_errno = 0;              ///< errno of a failed socket() in curl's transfer
  bool have_expiry = false;
  double cert_expiry = 0;
  int verify_error = 0;  ///< first X509 verification error seen, 0 if none
};

/// Make room for `n` more kept bytes without growing past what is needed: the whole
/// Content-Length (bounded by `keep`) at once when it is known, otherwise by half the current
/// size (at least 16 KiB), never beyond `keep`. Peak memory stays below 2.5 x `keep` even while
/// the vector moves, instead of doubling into a buffer twice the limit.
inline void http_reserve(http_run_state& s, std::size_t n) {
  auto& b = *s.body;
  const std::size_t need = b.size() + n;
  if (need <= b.capacity()) return;
  std::size_t want = 0;
  if (s.content_length > 0 && static_cast<std::uint64_t>(s.content_length) >= need)
    want = static_cast<std::size_t>(s.content_length);
  else
    want = b.capacity() < (std::size_t{16} << 10) ? std::size_t{16} << 10
                                                  : b.capacity() + b.capacity() / 2;
  if (want > s.keep) want = s.keep;
  if (want < need) want = need;
  b.reserve(want);
}

inline std::size_t http_on_write(char* p, std::size_t, std::size_t n, void* ud) {
  auto& s = *static_cast<http_run_state*>(ud);
  std::size_t room = s.limit - s.bytes;
  std::size_t take = n < room ? n : room;
  if (s.body && s.body->size() < s.keep) {
    const std::size_t kept = std::min(take, s.keep - s.body->size());
    http_reserve(s, kept);
    s.body->insert(s.body->end(), p, p + kept);
  }
  s.bytes += take;
  if (take < n) {
    s.overflow = true;
    return 0;  // CURLE_WRITE_ERROR: stop the transfer
  }
  return n;
}

/// Header callback: counts the bytes of each response's header block against `header_limit`
/// (stopping the transfer past it) and reads Content-Length for http_reserve.
inline std::size_t http_on_header(char* p, std::size_t, std::size_t n, void* ud) {
  auto& s = *static_cast<http_run_state*>(ud);
  const std::string_view line(p, n);
  if (line.starts_with("HTTP/")) {  // a new response (redirect, 1xx, HTTP/2 pseudo line)
    s.header_bytes = 0;
    s.content_length = -1;
    s.headers_complete = false;
  }
  s.header_bytes += n;
  if (s.header_bytes > s.header_limit) {
    s.header_overflow = true;
    return 0;  // CURLE_WRITE_ERROR: stop the transfer
  }
  if (line == "\r\n" || line == "\n") {
    s.headers_complete = true;
    return n;
  }
  constexpr std::string_view name = "content-length:";
  if (line.size() > name.size()) {
    bool match = true;
    for (std::size_t i = 0; i < name.size() && match; ++i) {
      char c = line[i];
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
      match = c == name[i];
    }
    if (match) {
      std::int64_t v = 0;
      std::size_t i = name.size(), digits = 0;
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
      for (; i < line.size() && line[i] >= '0' && line[i] <= '9' && digits < 18; ++i, ++digits)
        v = v * 10 + (line[i] - '0');
      s.content_length = digits > 0 ? v : -1;
    }
  }
  return n;
}

/// curl's socket(), recording errno: a transfer that fails to connect because the monitor ran
/// out of descriptors is the monitor's failure (see local_exhaustion_error), not the target's.
inline curl_socket_t http_on_open_socket(void* ud, curlsocktype, curl_sockaddr* a) {
  const curl_socket_t fd = ::socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
  if (fd == CURL_SOCKET_BAD) static_cast<http_run_state*>(ud)->socket_errno = errno;
  return fd;
}

inline int http_ex_index() {
  static const int idx = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return idx;
}

/// Records the leaf certificate's expiry and the first verification error, then returns
/// OpenSSL's own verdict: curl's verification behaviour is unchanged.
inline int http_on_verify(int ok, X509_STORE_CTX* sc) {
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(sc, SSL_get_ex_data_X509_STORE_CTX_idx()));
  if (!ssl) return ok;
  auto* st =
      static_cast<http_run_state*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), http_ex_index()));
  if (!st) return ok;
  if (!st->have_expiry) {
    if (X509* leaf = X509_STORE_CTX_get0_cert(sc)) {
      int days = 0, secs = 0;
      if (ASN1_TIME_diff(&days, &secs, nullptr, X509_get0_notAfter(leaf)) == 1) {
        st->cert_expiry = static_cast<double>(days) * 86400.0 + secs;
        st->have_expiry = true;
      }
    }
  }
  if (!ok && st->verify_error == 0) st->verify_error = X509_STORE_CTX_get_error(sc);
  return ok;
}

inline CURLcode http_on_ssl_ctx(CURL*, void* ssl_ctx, void* ud) {
  auto* ctx = static_cast<SSL_CTX*>(ssl_ctx);
  SSL_CTX_set_ex_data(ctx, http_ex_index(), ud);
  SSL_CTX_set_verify(ctx, SSL_CTX_get_verify_mode(ctx), &http_on_verify);
  return CURLE_OK;
}

/// RST on close: no TIME_WAIT on the monitor for its many short connections.
inline int http_on_sockopt(void*, curl_socket_t fd, curlsocktype) {
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  return CURL_SOCKOPT_OK;
}

struct slist_deleter {
  void operator()(curl_slist* l) const noexcept { curl_slist_free_all(l); }
};

}  // namespace detail

/// HTTP/HTTPS checker (see the file comment). `Secure` only changes the kind name and the
/// scheme assumed for targets without one; https requires an https:// URL.
/// Thread safety: a probe may be run concurrently on one io_context (one curl multi handle per
/// io_context); it is immutable after make().
template <bool Secure>
class basic_http_probe {
 public:
  static constexpr std::string_view kind = Secure ? "https" : "http";
  static constexpr std::string_view summary =
      Secure ? "HTTPS request check: status, body, phase timings, certificate expiry"
             : "HTTP(S) request check: status, body, redirects, phase timings";
  static constexpr std::string_view target_form =
      Secure ? "URL: https://host[:port]/path (scheme optional)"
             : "URL: http://host[:port]/path or https://... (scheme optional)";
  static constexpr port_rule target_ports = port_rule::optional;
  static constexpr std::uint16_t default_port = Secure ? 443 : 80;

  /// Options, with their defaults.
  struct options {
    std::string method = "GET";                         ///< request method
    std::vector<std::string> headers;                   ///< extra "Name: value" request headers
    std::string body;                                   ///< request body
    std::vector<std::string> expect_status{"200-399"};  ///< accepted codes / ranges / classes
    std::string body_contains;                          ///< the body must contain this
    std::string body_regex;                             ///< the body must match (RE2 syntax)
    std::int64_t follow_redirects = 5;                  ///< most redirects followed; 0: none
    bool tls_verify = true;                             ///< verify certificate chain and name
    std::string ca_file;                                ///< PEM CA bundle instead of the system's
    std::string server_name;                            ///< Host, SNI and verified name
    std::string proxy;                                  ///< proxy URL; "" for none (env ignored)
    std::string http_version = "1.1";                   ///< "1.1", "2" or "auto"
    std::string username;                               ///< basic auth user
    std::string password;                               ///< basic auth password
    std::string bearer_token;                           ///< "Authorization: Bearer <token>"
    std::int64_t max_body = 1 << 20;                    ///< most body bytes read (<= 64 MiB)
  };

  static constexpr option_spec option_table[] = {
      {"method", option_type::string, "GET", "Request method (GET, HEAD, POST, PUT, ...)"},
      {"headers", option_type::string_list, "", "Extra request headers, each \"Name: value\""},
      {"body", option_type::string, "", "Request body (sent with the method given)"},
      {"expect_status", option_type::string_list, "200-399",
       "Accepted status codes: codes, ranges (\"200-299\") or classes (\"2xx\")"},
      {"body_contains", option_type::string, "", "Substring the response body must contain"},
      {"body_regex", option_type::string, "",
       "Regular expression (RE2 syntax: no backreferences or lookaround) searched in the first "
       "1 MiB of the response body"},
      {"follow_redirects", option_type::integer, "5",
       "Most redirects to follow; 0 judges the redirect response itself"},
      {"tls_verify", option_type::boolean, "true",
       "Verify the certificate chain and host name (reason 'tls' on failure)"},
      {"ca_file", option_type::string, "",
       "PEM file of CA certificates to trust instead of the system store"},
      {"server_name", option_type::string, "",
       "Host header, TLS SNI and verified name; the connection still goes to the target's "
       "address"},
      {"proxy", option_type::string, "",
       "Proxy URL (http://host:port, socks5://...); environment proxies are ignored"},
      {"http_version", option_type::string, "1.1",
       "\"1.1\", \"2\" (ALPN over TLS, prior knowledge in cleartext) or \"auto\""},
      {"username", option_type::string, "", "User name for HTTP basic authentication"},
      {"password", option_type::string, "", "Password for HTTP basic authentication"},
      {"bearer_token", option_type::string, "", "Token sent as \"Authorization: Bearer ...\""},
      {"max_body", option_type::integer, "1048576",
       "Most response body bytes to read (at most 67108864); a longer body stops the transfer "
       "(reason mismatch)"},
  };
  static constexpr metric_spec metric_table[] = {
      {"latency", "s", "Whole run: resolution, connection, TLS, request and response"},
      {"status_code", "code", "HTTP status code of the last response"},
      {"phase.resolve", "s", "Name resolution of the target host"},
      {"phase.connect", "s", "TCP handshake"},
      {"phase.tls", "s", "TLS handshake (https)"},
      {"phase.ttfb", "s", "From the request being sent to the first response byte"},
      {"phase.transfer", "s", "From the first response byte to the end of the response"},
      {"body_bytes", "bytes", "Response body bytes received (at most max_body)"},
      {"tls.cert_expiry", "s", "Time until the server certificate expires; negative once expired"},
      {"redirects", "count", "Redirects followed"},
      {"http_version", "count", "HTTP version of the last response: 1, 1.1, 2 or 3"},
  };

  /// Read options from an option_set (types already checked).
  static tl::expected<options, probe_error> options_from(const option_set& set) {
    options o;
    for (auto r :
         {set.get("method", o.method), set.get("headers", o.headers), set.get("body", o.body),
          set.get("expect_status", o.expect_status), set.get("body_contains", o.body_contains),
          set.get("body_regex", o.body_regex), set.get("follow_redirects", o.follow_redirects),
          set.get("tls_verify", o.tls_verify), set.get("ca_file", o.ca_file),
          set.get("server_name", o.server_name), set.get("proxy", o.proxy),
          set.get("http_version", o.http_version), set.get("username", o.username),
          set.get("password", o.password), set.get("bearer_token", o.bearer_token),
          set.get("max_body", o.max_body)})
      if (!r) return tl::unexpected(r.error());
    return o;
  }

  /// Validate options and build the probe. Errors name the bad key.
  static tl::expected<basic_http_probe, probe_error> make(options o) {
    basic_http_probe p;
    if (o.method.empty() || o.method.find_first_of(" \t\r\n") != std::string::npos)
      return tl::unexpected(option_error("method", "method must be one token such as GET"));
    for (auto& c : o.method) c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c);
    for (const auto& h : o.headers) {
      auto colon = h.find(':');
      if (colon == std::string::npos || colon == 0 ||
          h.find_first_of("\r\n") != std::string::npos ||
          h.substr(0, colon).find_first_of(" \t") != std::string::npos)
        return tl::unexpected(option_error(
            "headers", "header \"" + detail::excerpt(h) + "\" is not \"Name: value\""));
    }
    auto ranges = detail::parse_status_ranges(o.expect_status);
    if (!ranges) return tl::unexpected(option_error("expect_status", ranges.error()));
    p.ranges_ = std::move(*ranges);
    if (!o.body_regex.empty()) {
      // RE2: linear time in the input, no recursion (std::regex overflowed the stack on a
      // 300 KB body and backtracked exponentially).
      RE2::Options ro;
      ro.set_log_errors(false);
      ro.set_max_mem(http_limits::regex_memory);
      auto re = std::make_shared<const RE2>(o.body_regex, ro);
      if (!re->ok()) {
        // RE2's text ends with the offending piece, which may be the whole (long) pattern.
        std::string why = re->error();
        const std::string& arg = re->error_arg();
        if (arg.size() > 64 && why.ends_with(arg))
          why = why.substr(0, why.size() - arg.size()) + detail::quote_input(arg);
        return tl::unexpected(option_error("body_regex", "body_regex " +
                                                             detail::quote_input(o.body_regex) +
                                                             " is not a valid RE2 regular "
                                                             "expression: " +
                                                             why));
      }
      if (re->ProgramSize() > http_limits::regex_program_size)
        return tl::unexpected(option_error(
            "body_regex", "body_regex " + detail::quote_input(o.body_regex) + " is too complex: " +
                              std::to_string(re->ProgramSize()) + " RE2 instructions, at most " +
                              std::to_string(http_limits::regex_program_size) +
                              " (use smaller repetition counts)"));
      p.regex_ = std::move(re);
    }
    if ((o.follow_redirects < 0) || (o.follow_redirects > 50))
      return tl::unexpected(option_error("follow_redirects", "follow_redirects must be 0 to 50"));
    if (o.http_version != "1.1" && o.http_version != "2" && o.http_version != "auto")
      return tl::unexpected(
          option_error("http_version", "http_version must be \"1.1\", \"2\" or \"auto\", not " +
                                           detail::quote_input(o.http_version)));
    if ((o.max_body < 0) || (o.max_body > http_limits::max_body))
      return tl::unexpected(option_error(
          "max_body", "max_body must be 0 to " + std::to_string(http_limits::max_body) +
                          " (64 MiB), not " + std::to_string(o.max_body)));
    if (!o.server_name.empty()) {
      std::string why =
          detail::is_ipv4_literal(o.server_name) || detail::is_ipv6_literal(o.server_name)
              ? std::string()
              : detail::check_host_name(o.server_name);
      if (!why.empty()) return tl::unexpected(option_error("server_name", "server_name: " + why));
    }
    if (!o.ca_file.empty() && ::access(o.ca_file.c_str(), R_OK) != 0)
      return tl::unexpected(
          option_error("ca_file", "cannot read CA file " + detail::quote_input(o.ca_file)));
    if (!o.bearer_token.empty() && !o.username.empty())
      return tl::unexpected(option_error(
          "bearer_token", "give either 'bearer_token' or 'username'/'password', not both"));
    if (!o.password.empty() && o.username.empty())
      return tl::unexpected(option_error("password", "'password' needs 'username'"));
    curl_slist* list = nullptr;
    for (const auto& h : o.headers) {
      curl_slist* next = curl_slist_append(list, h.c_str());
      if (!next) {
        curl_slist_free_all(list);
        return tl::unexpected(probe_error{probe_errc::resource, "headers", "out of memory"});
      }
      list = next;
    }
    p.headers_.reset(list, detail::slist_deleter{});
    p.opts_ = std::move(o);
    return p;
  }

  const options& opts() const noexcept { return opts_; }

  /// Run once against `t` (from parse_target_for: the URL), finishing by `dl`. Never throws
  /// for network conditions; a probe_error only for a target that is not a usable URL
  /// (invalid_target) or when curl cannot allocate its handles (resource).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
  // GCC 12 false positive: it sees asio's recycling frame allocator inlined into this coroutine
  // and its sized operator delete, and cannot tell they pair up.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
  asio::awaitable<probe_result> run(target t, deadline dl) const {
    observation obs;
    obs.start = detail::wall_now();
    obs.metrics.reserve(std::size(metric_table));
    const auto t0 = clock::now();
    auto finish = [&](observation& o) -> probe_result {
      if (!o.latency) o.latency = clock::now() - t0;
      return std::move(o);
    };
    auto ex = co_await asio::this_coro::executor;

    // A target from parse_target_for carries the whole URL in `host`; a plain host/port target
    // (built by hand) means "/" on that host.
    detail::http_url url;
    if (t.host.find("://") != std::string::npos) {
      auto u = detail::parse_http_url(t.host, Secure);
      if (!u)
        co_return tl::unexpected(probe_error{probe_errc::invalid_target, "target", u.error()});
      url = std::move(*u);
    } else {
      url.tls = Secure;
      url.host = t.host;
      url.host_is_v6 = t.kind == host_kind::ipv6;
      url.port = t.port ? t.port : default_port;
    }
    if (Secure && !url.tls)
      co_return tl::unexpected(probe_error{probe_errc::invalid_target, "target",
                                           "an https probe needs an https:// URL"});

    auto& svc = asio::use_service<detail::curl_service>(detail::io_context_of(ex));
    if (!svc.ok())
      co_return tl::unexpected(probe_error{probe_errc::resource, "", "curl_multi_init failed"});

    // Resolve ourselves (c-ares, cancellable) unless a proxy does it.
    const std::string& name = opts_.server_name.empty() ? url.host : opts_.server_name;
    std::string connect_to;
    clock::duration resolve_time{};
    if (opts_.proxy.empty()) {
      const auto r0 = clock::now();
      auto addrs = co_await resolve(url.host, address_family::any, dl);
      resolve_time = clock::now() - r0;
      if (!addrs) {
        obs.set("phase.resolve", seconds(resolve_time));
        obs.fail(dl <= clock::now() ? reason::timeout : reason::resolve, addrs.error());
        co_return finish(obs);
      }
      const auto port = std::to_string(url.port);
      connect_to = detail::bracketed(name) + ":" + port + ":" +
                   detail::bracketed((*addrs)[0].to_string()) + ":" + port;
    }
    std::string effective = (url.tls ? "https://" : "http://") + detail::bracketed(name) + ":" +
                            std::to_string(url.port) + url.rest;

    std::vector<char> body;
    detail::http_run_state st;
    st.limit = static_cast<std::size_t>(opts_.max_body);
    // body_contains searches the whole body (up to max_body), body_regex its first window.
    if (!opts_.body_contains.empty())
      st.keep = st.limit;
    else if (regex_)
      st.keep = std::min(st.limit, http_limits::regex_window);
    if (st.keep > 0) st.body = &body;
    char errbuf[CURL_ERROR_SIZE];
    errbuf[0] = '\0';
    curl_slist connect_node{connect_to.data(), nullptr};

    detail::curl_transfer tr;
    tr.easy = svc.acquire_easy();
    if (!tr.easy)
      co_return tl::unexpected(probe_error{probe_errc::resource, "", "curl_easy_init failed"});
    asio::steady_timer wake(ex, clock::time_point::max());
    struct cleanup {  // the coroutine may be destroyed while curl still runs the transfer
      detail::curl_service& svc;
      detail::curl_transfer& tr;
      ~cleanup() {
        tr.waiter = nullptr;
        svc.cancel(tr);
        svc.release_easy(tr.easy);
      }
    } on_exit{svc, tr};
    configure(tr.easy, effective, connect_to.empty() ? nullptr : &connect_node, st, errbuf, url.tls,
              dl);

    tr.waiter = &wake;
    detail::watchdog dog(ex, dl, [&svc, &tr, &wake] {
      svc.cancel(tr);
      wake.cancel();
    });
    if (svc.start(tr) != CURLM_OK) {
      obs.fail(reason::error, "curl refused the transfer");
      co_return finish(obs);
    }
    if (!tr.done && !dog.fired())
      (void)co_await wake.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
    dog.disarm();
    obs.latency = clock::now() - t0;
    if (tr.done && tr.result == CURLE_COULDNT_CONNECT)
      if (auto e = sonde::local_exhaustion_error(st.socket_errno,
                                                 "opening a TCP socket for " + effective))
        co_return tl::unexpected(std::move(*e));
    report(tr, st, obs, errbuf, dog.fired() && !tr.done, resolve_time);
    if (obs.why == reason::none && !tr.done) obs.fail(reason::timeout, "timed out");
    if (obs.why == reason::none) judge(obs, body, st);
    co_return finish(obs);
  }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

 private:
  basic_http_probe() = default;

  void configure(CURL* e, const std::string& url, curl_slist* connect_to,
                 detail::http_run_state& st, char* errbuf, bool tls, deadline dl) const {
    curl_easy_setopt(e, CURLOPT_URL, url.c_str());
    if (connect_to) curl_easy_setopt(e, CURLOPT_CONNECT_TO, connect_to);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_SESSIONID_CACHE, 0L);
    curl_easy_setopt(e, CURLOPT_SOCKOPTFUNCTION, &detail::http_on_sockopt);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &detail::http_on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &st);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &detail::http_on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &st);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, &detail::http_on_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, &st);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "sonde/" SONDE_VERSION_STRING);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(detail::remaining(dl)).count();
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(ms < 1 ? 1 : ms));
    if (opts_.follow_redirects > 0) {
      curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
      curl_easy_setopt(e, CURLOPT_MAXREDIRS, static_cast<long>(opts_.follow_redirects));
    }
    if (headers_) curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers_.get());
    if (opts_.method == "HEAD") {
      curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
      if (!opts_.body.empty() || opts_.method == "POST") {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                         static_cast<curl_off_t>(opts_.body.size()));
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, opts_.body.data());
      }
      if (opts_.method != "GET" && opts_.method != "POST")
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, opts_.method.c_str());
      else if (opts_.method == "GET" && !opts_.body.empty())
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "GET");
    }
    if (!opts_.username.empty()) {
      curl_easy_setopt(e, CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BASIC));
      curl_easy_setopt(e, CURLOPT_USERNAME, opts_.username.c_str());
      curl_easy_setopt(e, CURLOPT_PASSWORD, opts_.password.c_str());
    } else if (!opts_.bearer_token.empty()) {
      curl_easy_setopt(e, CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BEARER));
      curl_easy_setopt(e, CURLOPT_XOAUTH2_BEARER, opts_.bearer_token.c_str());
    }
    curl_easy_setopt(e, CURLOPT_PROXY, opts_.proxy.c_str());  // "": no proxy, env ignored
    long version = CURL_HTTP_VERSION_1_1;
    if (opts_.http_version == "2")
      version = tls ? CURL_HTTP_VERSION_2TLS : CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE;
    else if (opts_.http_version == "auto")
      version = CURL_HTTP_VERSION_2TLS;
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, version);
    if (tls) {
      curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, opts_.tls_verify ? 1L : 0L);
      curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, opts_.tls_verify ? 2L : 0L);
      if (!opts_.ca_file.empty()) curl_easy_setopt(e, CURLOPT_CAINFO, opts_.ca_file.c_str());
      curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, &detail::http_on_ssl_ctx);
      curl_easy_setopt(e, CURLOPT_SSL_CTX_DATA, &st);
    }
  }

  /// Metrics from curl's timings and counters, and the reason when the transfer failed.
  static void report(const detail::curl_transfer& tr, const detail::http_run_state& st,
                     observation& obs, const char* errbuf, bool watchdog_fired,
                     clock::duration resolve_time) {
    CURL* e = tr.easy;
    curl_off_t name_us = 0, connect_us = 0, app_us = 0, pre_us = 0, start_us = 0, total_us = 0;
    curl_easy_getinfo(e, CURLINFO_NAMELOOKUP_TIME_T, &name_us);
    curl_easy_getinfo(e, CURLINFO_CONNECT_TIME_T, &connect_us);
    curl_easy_getinfo(e, CURLINFO_APPCONNECT_TIME_T, &app_us);
    curl_easy_getinfo(e, CURLINFO_PRETRANSFER_TIME_T, &pre_us);
    curl_easy_getinfo(e, CURLINFO_STARTTRANSFER_TIME_T, &start_us);
    curl_easy_getinfo(e, CURLINFO_TOTAL_TIME_T, &total_us);
    auto secs = [](curl_off_t a, curl_off_t b) {
      return a > b ? static_cast<double>(a - b) / 1e6 : 0.0;
    };
    obs.set("phase.resolve", seconds(resolve_time) + static_cast<double>(name_us) / 1e6);
    if (connect_us > 0) obs.set("phase.connect", secs(connect_us, name_us));
    if (app_us > 0) obs.set("phase.tls", secs(app_us, connect_us));
    if (start_us > 0) {
      obs.set("phase.ttfb", secs(start_us, pre_us));
      obs.set("phase.transfer", secs(total_us, start_us));
    }
    long code = 0, redirects = 0, version = 0, os_errno = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_getinfo(e, CURLINFO_REDIRECT_COUNT, &redirects);
    curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &version);
    curl_easy_getinfo(e, CURLINFO_OS_ERRNO, &os_errno);
    if (code > 0) {
      obs.set("status_code", static_cast<double>(code));
      obs.set("http_version", version == CURL_HTTP_VERSION_1_0   ? 1.0
                              : version == CURL_HTTP_VERSION_1_1 ? 1.1
                              : version == CURL_HTTP_VERSION_2_0 ? 2.0
                              : version == CURL_HTTP_VERSION_3   ? 3.0
                                                                 : 0.0);
    }
    obs.set("body_bytes", static_cast<double>(st.bytes));
    obs.set("redirects", static_cast<double>(redirects));
    if (st.have_expiry) obs.set("tls.cert_expiry", st.cert_expiry);

    if (watchdog_fired) {
      obs.fail(reason::timeout, "timed out (deadline passed)");
      return;
    }
    if (!tr.done || tr.result == CURLE_OK) return;
    if (st.overflow) {
      obs.fail(reason::mismatch, "body larger than max_body (" + std::to_string(st.limit) +
                                     " bytes): transfer stopped after " + std::to_string(st.bytes) +
                                     " bytes");
      return;
    }
    // Our own limit, or libcurl's (a single header line above 100 KiB fails inside curl with
    // CURLE_OUT_OF_MEMORY before our callback sees it): both are the server's oversized
    // header, not a lack of memory on the monitor.
    if (st.header_overflow || (tr.result == CURLE_OUT_OF_MEMORY && !st.headers_complete &&
                               connect_us > 0 && st.bytes == 0)) {
      obs.fail(reason::protocol,
               "response header too large (limit " + std::to_string(st.header_limit) + " bytes)");
      return;
    }
    std::string why = errbuf[0] ? errbuf : curl_easy_strerror(tr.result);
    if (tr.result == CURLE_PEER_FAILED_VERIFICATION && st.verify_error != 0 &&
        why.find(X509_verify_cert_error_string(st.verify_error)) == std::string::npos)
      why += std::string(" (") + X509_verify_cert_error_string(st.verify_error) + ")";
    obs.fail(detail::classify_curl(tr.result, os_errno), why);
  }

  /// Status and body checks on a completed transfer.
  void judge(observation& obs, const std::vector<char>& kept,
             const detail::http_run_state& st) const {
    const std::string_view body(kept.data(), kept.size());
    const int code = static_cast<int>(obs.get("status_code").value_or(0));
    bool status_ok = false;
    for (const auto& r : ranges_) status_ok = status_ok || (code >= r.lo && code <= r.hi);
    const std::string status = "HTTP " + std::to_string(code);
    if (!status_ok) {
      std::string want;
      for (const auto& s : opts_.expect_status) want += (want.empty() ? "" : ", ") + s;
      obs.fail(reason::mismatch, status + ", expected " + want);
      return;
    }
    if (st.body) {
      if (!opts_.body_contains.empty() && body.find(opts_.body_contains) == body.npos) {
        obs.fail(reason::mismatch, status + ": body does not contain \"" +
                                       detail::excerpt(opts_.body_contains) + "\"; got \"" +
                                       detail::excerpt(body) + "\"");
        return;
      }
      // The regex sees the first regex_window bytes (body_contains may have kept more).
      const auto window = body.substr(0, http_limits::regex_window);
      if (regex_ && !RE2::PartialMatch(re2::StringPiece(window.data(), window.size()), *regex_)) {
        obs.fail(reason::mismatch, status + ": body does not match /" +
                                       detail::excerpt(opts_.body_regex) + "/; got \"" +
                                       detail::excerpt(body) + "\"");
        return;
      }
    }
    obs.message = status + ", " + std::to_string(st.bytes) + " bytes";
  }

  options opts_;
  std::vector<detail::status_range> ranges_;
  std::shared_ptr<const RE2> regex_;
  std::shared_ptr<curl_slist> headers_;
};

/// The `http` checker: http:// or https:// URLs, scheme optional (http assumed).
using http_probe = basic_http_probe<false>;
/// The `https` checker: https:// URLs, scheme optional (https assumed).
using https_probe = basic_http_probe<true>;

namespace detail {
/// Targets of the HTTP checkers are URLs: the normalized URL travels in `target::host`.
template <bool Secure>
tl::expected<target, probe_error> parse_http_target(std::string_view text) {
  auto u = parse_http_url(text, Secure);
  if (!u) return tl::unexpected(probe_error{probe_errc::invalid_target, "target", u.error()});
  if (Secure && !u->tls)
    return tl::unexpected(
        probe_error{probe_errc::invalid_target, "target",
                    "invalid URL " + quote_input(text) + ": an https probe needs an https:// URL"});
  target t;
  t.host = (u->tls ? "https://" : "http://") + bracketed(u->host) + ":" + std::to_string(u->port) +
           u->rest;
  t.port = u->port;
  t.kind = host_kind::name;
  return t;
}
}  // namespace detail

/// URL targets for `http`.
template <>
inline tl::expected<target, probe_error> parse_target_for<http_probe>(std::string_view text) {
  return detail::parse_http_target<false>(text);
}
/// URL targets for `https`.
template <>
inline tl::expected<target, probe_error> parse_target_for<https_probe>(std::string_view text) {
  return detail::parse_http_target<true>(text);
}

}  // namespace sonde
