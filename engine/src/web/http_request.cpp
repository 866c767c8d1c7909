#include "web/http_request.hpp"

#include <openssl/evp.h>

#include <cstring>

namespace sonde::engine::web {

namespace {

constexpr char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c;
}

constexpr bool is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

constexpr bool is_ows(char c) {
  return c == ' ' || c == '\t';
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Calls f(element) for each element of a comma-separated list, whitespace trimmed; empty
// elements are passed too (callers decide).
template <class F>
void for_each_element(std::string_view list, F&& f) {
  while (true) {
    std::size_t comma = list.find(',');
    f(trim_ows(list.substr(0, comma)));
    if (comma == std::string_view::npos) return;
    list.remove_prefix(comma + 1);
  }
}

// Percent-decodes `in` into `out`. Refuses invalid escapes and %00; with `plus_space`, '+' is a
// space (query strings).
bool percent_decode(std::string_view in, bool plus_space, std::string& out) {
  out.clear();
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      char d = static_cast<char>(hi * 16 + lo);
      if (d == '\0') return false;
      out.push_back(d);
      i += 2;
    } else if (c == '+' && plus_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return true;
}

// A header value's bytes: HTAB, visible ASCII, SP, obs-text. No NUL, CR, LF or other controls.
bool valid_field_value(std::string_view v) {
  for (unsigned char c : v)
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  return true;
}

// Host: reg-name, IPv4 or [IPv6] with an optional port; empty is allowed (RFC 9112 3.2).
bool valid_host(std::string_view h) {
  for (unsigned char c : h) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c != '\0' && std::strchr("-._~!$&'()*+,;=:[]%", c) != nullptr);
    if (!ok) return false;
  }
  return true;
}

bool known_method(std::string_view m) {
  for (std::string_view k : {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
    if (m == k) return true;
  return false;
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s)
    if (!is_tchar(c)) return false;
  return true;
}

bool list_has_token(std::string_view list, std::string_view token) {
  bool found = false;
  for_each_element(list, [&](std::string_view e) { found = found || iequals(e, token); });
  return found;
}

std::optional<std::string_view> http_request::header(std::string_view name) const {
  for (const auto& h : headers)
    if (iequals(h.name, name)) return std::string_view(h.value);
  return std::nullopt;
}

std::size_t http_request::header_count(std::string_view name) const {
  std::size_t n = 0;
  for (const auto& h : headers) n += iequals(h.name, name) ? 1 : 0;
  return n;
}

std::optional<std::string_view> http_request::query_value(std::string_view key) const {
  for (const auto& q : query)
    if (q.key == key) return std::string_view(q.value);
  return std::nullopt;
}

tl::expected<std::string, http_error> decode_path(std::string_view raw) {
  if (raw.empty() || raw.front() != '/') return tl::unexpected(http_error{400, "invalid path"});
  std::string out;
  if (!percent_decode(raw, false, out))
    return tl::unexpected(http_error{400, "invalid percent-encoding in path"});
  for (unsigned char c : out)
    if (c < 0x20 || c == 0x7f) return tl::unexpected(http_error{400, "control character in path"});
  std::string_view rest(out);
  while (!rest.empty()) {
    std::size_t slash = rest.find('/');
    if (rest.substr(0, slash) == "..")
      return tl::unexpected(http_error{400, "'..' segment in path"});
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
  }
  return out;
}

tl::expected<std::vector<query_param>, http_error> parse_query(std::string_view raw) {
  std::vector<query_param> out;
  while (!raw.empty()) {
    std::size_t amp = raw.find('&');
    std::string_view pair = raw.substr(0, amp);
    raw.remove_prefix(amp == std::string_view::npos ? raw.size() : amp + 1);
    if (pair.empty()) continue;
    std::size_t eq = pair.find('=');
    query_param q;
    if (!percent_decode(pair.substr(0, eq), true, q.key) ||
        (eq != std::string_view::npos && !percent_decode(pair.substr(eq + 1), true, q.value)))
      return tl::unexpected(http_error{400, "invalid percent-encoding in query"});
    out.push_back(std::move(q));
  }
  return out;
}

// --- request_parser --------------------------------------------------------------------------

request_parser::request_parser(const http_limits& limits) : limits_(limits) {}

void request_parser::start() {
  req_ = http_request{};
  line_.clear();
  header_bytes_ = 0;
  header_stored_ = 0;
  empty_lines_ = 0;
  remaining_ = 0;
  state_ = state::request_line;
}

bool request_parser::fail(int status, std::string_view reason) {
  error_ = http_error{status, reason};
  state_ = state::failed;
  line_.clear();
  return false;
}

std::size_t request_parser::buffered_bytes() const {
  return line_.size() + header_stored_ + req_.body.size();
}

bool request_parser::take_line(std::string_view in, std::size_t& pos, std::size_t limit, int status,
                               std::string_view reason) {
  const char* start = in.data() + pos;
  std::size_t avail = in.size() - pos;
  const void* nl = avail ? std::memchr(start, '\n', avail) : nullptr;
  std::size_t n = nl ? static_cast<std::size_t>(static_cast<const char*>(nl) - start) + 1 : avail;
  // Without its LF the line will be at least one byte longer than what is here.
  std::size_t at_least = line_.size() + n + (nl ? 0 : 1);
  if (at_least > limit) return fail(status, reason);
  line_.append(start, n);
  pos += n;
  if (!nl) return false;
  // A whole line: it must end in CRLF and hold no other CR.
  if (line_.size() < 2 || line_[line_.size() - 2] != '\r')
    return fail(400, "line not terminated by CRLF");
  if (std::memchr(line_.data(), '\r', line_.size() - 2) != nullptr)
    return fail(400, "bare CR in line");
  return true;
}

parse_result request_parser::feed(std::string_view in) {
  if (state_ == state::failed) return {parse_status::error, 0};
  if (state_ == state::complete) start();
  std::size_t pos = 0;
  while (true) {
    switch (state_) {
      case state::request_line: {
        if (!take_line(in, pos, limits_.max_request_line, 414, "request line too long")) break;
        std::string_view line(line_.data(), line_.size() - 2);
        if (line.empty()) {
          // RFC 9112 2.2: empty lines before a request are ignored (a few of them).
          if (++empty_lines_ > 8) {
            fail(400, "too many empty lines");
            break;
          }
          line_.clear();
          continue;
        }
        if (!on_request_line(line)) break;
        line_.clear();
        state_ = state::headers;
        continue;
      }
      case state::headers: {
        if (!take_line(in, pos, limits_.max_header_bytes - header_bytes_, 431,
                       "header section too large"))
          break;
        header_bytes_ += line_.size();
        std::string_view line(line_.data(), line_.size() - 2);
        bool ok = line.empty() ? on_head_end() : on_header_line(line);
        if (!ok) break;
        line_.clear();
        continue;
      }
      case state::body: {
        std::size_t n =
            static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, in.size() - pos));
        req_.body.append(in.data() + pos, n);
        pos += n;
        remaining_ -= n;
        if (remaining_ == 0) {
          state_ = state::complete;
          continue;
        }
        break;
      }
      case state::chunk_size: {
        if (!take_line(in, pos, limits_.max_chunk_line, 400, "chunk size line too long")) break;
        if (!on_chunk_size_line(std::string_view(line_.data(), line_.size() - 2))) break;
        line_.clear();
        continue;
      }
      case state::chunk_data: {
        std::size_t n =
            static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, in.size() - pos));
        req_.body.append(in.data() + pos, n);
        pos += n;
        remaining_ -= n;
        if (remaining_ == 0) {
          state_ = state::chunk_data_cr;
          continue;
        }
        break;
      }
      case state::chunk_data_cr:
      case state::chunk_data_lf: {
        if (pos == in.size()) break;
        char want = state_ == state::chunk_data_cr ? '\r' : '\n';
        if (in[pos++] != want) {
          fail(400, "chunk data not followed by CRLF");
          break;
        }
        state_ = state_ == state::chunk_data_cr ? state::chunk_data_lf : state::chunk_size;
        continue;
      }
      case state::trailers: {
        if (!take_line(in, pos, limits_.max_trailer_bytes - header_bytes_, 431,
                       "trailer section too large"))
          break;
        header_bytes_ += line_.size();
        std::string_view line(line_.data(), line_.size() - 2);
        if (line.empty()) {
          line_.clear();
          state_ = state::complete;
          continue;
        }
        if (!on_trailer_line(line)) break;
        line_.clear();
        continue;
      }
      case state::complete:
        return {parse_status::complete, pos};
      case state::failed:
        return {parse_status::error, pos};
    }
    // A state broke out of the switch: out of input, or failed.
    if (state_ == state::failed) return {parse_status::error, pos};
    return {parse_status::need_more, pos};
  }
}

bool request_parser::on_request_line(std::string_view line) {
  std::size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return fail(400, "malformed request line");
  std::size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return fail(400, "malformed request line");
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method)) return fail(400, "invalid method");
  if (target.empty()) return fail(400, "empty request target");
  // HTTP-version = "HTTP/" DIGIT "." DIGIT (case-sensitive)
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' ||
      version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9')
    return fail(400, "malformed HTTP version");
  if (version[5] != '1' || (version[7] != '0' && version[7] != '1'))
    return fail(505, "HTTP version not supported");
  if (!known_method(method)) return fail(501, "method not implemented");
  for (unsigned char c : target)
    if (c <= 0x20 || c >= 0x7f || c == '#') return fail(400, "invalid character in target");

  std::string_view path_and_query;
  if (target == "*") {
    if (method != "OPTIONS") return fail(400, "'*' target is for OPTIONS only");
  } else if (target.front() == '/') {
    path_and_query = target;
  } else {
    // absolute-form (RFC 9112 3.2.2): the scheme and authority are dropped.
    std::size_t colon = target.find("://");
    std::string_view scheme = target.substr(0, colon);
    if (colon == std::string_view::npos || (!iequals(scheme, "http") && !iequals(scheme, "https")))
      return fail(400, "invalid request target");
    std::string_view rest = target.substr(colon + 3);
    std::size_t end = rest.find_first_of("/?");
    std::string_view authority = rest.substr(0, end);
    if (authority.empty() || !valid_host(authority)) return fail(400, "invalid request target");
    rest.remove_prefix(end == std::string_view::npos ? rest.size() : end);
    path_and_query = rest;
  }

  req_.method = method;
  req_.target = target;
  req_.version_minor = version[7] - '0';
  if (target == "*") {
    req_.path.assign(1, '*');  // not = "*": GCC 12 reports a false -Wrestrict
    return true;
  }
  std::size_t q = path_and_query.find('?');
  std::string_view raw_path = path_and_query.substr(0, q);
  if (raw_path.empty()) raw_path = "/";  // "http://host" or "http://host?x"
  auto path = decode_path(raw_path);
  if (!path) return fail(path.error().status, path.error().reason);
  req_.path = std::move(*path);
  if (q != std::string_view::npos) {
    req_.raw_query = path_and_query.substr(q + 1);
    auto query = parse_query(req_.raw_query);
    if (!query) return fail(query.error().status, query.error().reason);
    req_.query = std::move(*query);
  }
  return true;
}

bool request_parser::on_header_line(std::string_view line) {
  if (req_.headers.size() >= limits_.max_headers) return fail(431, "too many headers");
  if (is_ows(line.front())) return fail(400, "obsolete line folding");
  std::size_t colon = line.find(':');
  if (colon == std::string_view::npos) return fail(400, "header without colon");
  std::string_view name = line.substr(0, colon);
  if (!is_token(name)) return fail(400, "invalid header name");
  std::string_view value = trim_ows(line.substr(colon + 1));
  if (!valid_field_value(value)) return fail(400, "invalid character in header value");
  req_.headers.push_back(http_header{std::string(name), std::string(value)});
  header_stored_ += name.size() + value.size();
  return true;
}

bool request_parser::on_trailer_line(std::string_view line) {
  if (is_ows(line.front())) return fail(400, "obsolete line folding");
  std::size_t colon = line.find(':');
  if (colon == std::string_view::npos || !is_token(line.substr(0, colon)))
    return fail(400, "invalid trailer field");
  if (!valid_field_value(line.substr(colon + 1)))
    return fail(400, "invalid character in trailer value");
  return true;  // trailers are checked and dropped
}

bool request_parser::on_head_end() {
  const bool v11 = req_.version_minor == 1;

  std::size_t hosts = req_.header_count("host");
  if (hosts > 1) return fail(400, "more than one Host header");
  if (hosts == 0 && v11) return fail(400, "missing Host header");
  if (hosts == 1 && !valid_host(*req_.header("host"))) return fail(400, "invalid Host header");

  bool has_te = req_.header_count("transfer-encoding") > 0;
  bool has_cl = req_.header_count("content-length") > 0;
  if (has_te && has_cl) return fail(400, "both Content-Length and Transfer-Encoding");

  if (has_te) {
    if (!v11) return fail(400, "Transfer-Encoding in HTTP/1.0");
    std::size_t chunked = 0, other = 0;
    for (const auto& h : req_.headers) {
      if (!iequals(h.name, "transfer-encoding")) continue;
      for_each_element(h.value, [&](std::string_view e) {
        if (e.empty()) return;
        (iequals(e, "chunked") ? chunked : other)++;
      });
    }
    if (other > 0) return fail(501, "unsupported Transfer-Encoding");
    if (chunked != 1) return fail(400, "invalid Transfer-Encoding");
    req_.chunked = true;
  }

  std::optional<std::uint64_t> length;
  if (has_cl) {
    bool bad = false, differ = false, overflow = false;
    for (const auto& h : req_.headers) {
      if (!iequals(h.name, "content-length")) continue;
      for_each_element(h.value, [&](std::string_view e) {
        if (e.empty()) {
          bad = true;
          return;
        }
        std::uint64_t v = 0;
        for (char c : e) {
          if (c < '0' || c > '9') {
            bad = true;
            return;
          }
          if (v > (UINT64_MAX - 9) / 10) {
            overflow = true;
            return;
          }
          v = v * 10 + static_cast<unsigned>(c - '0');
        }
        if (length && *length != v) differ = true;
        length = v;
      });
    }
    if (bad) return fail(400, "invalid Content-Length");
    if (overflow) return fail(400, "Content-Length overflows");
    if (differ) return fail(400, "differing Content-Length values");
  }

  bool close = false, keep = false;
  for (const auto& h : req_.headers) {
    if (!iequals(h.name, "connection")) continue;
    close = close || list_has_token(h.value, "close");
    keep = keep || list_has_token(h.value, "keep-alive");
  }
  req_.keep_alive = !close && (v11 || keep);

  if (auto expect = req_.header("expect"); expect && v11) {
    // RFC 9110 10.1.1: 100-continue is the only expectation; an HTTP/1.0 one is ignored.
    if (req_.header_count("expect") != 1 || !iequals(*expect, "100-continue"))
      return fail(417, "unsupported expectation");
    req_.expect_continue = true;
  }

  if (req_.chunked) {
    state_ = state::chunk_size;
  } else if (length && *length > 0) {
    if (*length > limits_.max_body) return fail(413, "body too large");
    remaining_ = *length;
    state_ = state::body;
  } else {
    state_ = state::complete;
  }
  return true;
}

bool request_parser::on_chunk_size_line(std::string_view line) {
  // chunk-size [ BWS ";" chunk-ext ]; extensions are ignored
  std::size_t i = 0;
  std::uint64_t size = 0;
  bool too_big = false;
  while (i < line.size() && hex_value(line[i]) >= 0) {
    if (size > limits_.max_body || size > (UINT64_MAX >> 4))
      too_big = true;
    else
      size = size * 16 + static_cast<unsigned>(hex_value(line[i]));
    ++i;
  }
  if (i == 0) return fail(400, "invalid chunk size");
  std::size_t j = i;
  while (j < line.size() && is_ows(line[j])) ++j;
  if (j < line.size()) {
    if (line[j] != ';') return fail(400, "invalid chunk size");
    if (!valid_field_value(line.substr(j))) return fail(400, "invalid chunk extension");
  } else if (j != i) {
    return fail(400, "invalid chunk size");  // whitespace without an extension
  }
  if (too_big || size > limits_.max_body - req_.body.size()) return fail(413, "body too large");
  if (size == 0) {
    header_bytes_ = 0;
    state_ = state::trailers;
  } else {
    remaining_ = size;
    state_ = state::chunk_data;
  }
  return true;
}

// --- WebSocket handshake -------------------------------------------------------------------

tl::expected<std::string_view, http_error> websocket_upgrade_key(const http_request& req) {
  bool upgrade = false, connection = false;
  for (const auto& h : req.headers) {
    if (iequals(h.name, "upgrade")) upgrade = upgrade || list_has_token(h.value, "websocket");
    if (iequals(h.name, "connection"))
      connection = connection || list_has_token(h.value, "upgrade");
  }
  if (!upgrade || !connection) return tl::unexpected(http_error{426, "websocket upgrade required"});
  if (req.method != "GET") return tl::unexpected(http_error{400, "websocket handshake is a GET"});
  if (req.version_minor < 1)
    return tl::unexpected(http_error{400, "websocket handshake needs HTTP/1.1"});
  auto version = req.header("sec-websocket-version");
  if (req.header_count("sec-websocket-version") != 1 || *version != "13")
    return tl::unexpected(http_error{426, "unsupported websocket version"});
  auto key = req.header("sec-websocket-key");
  if (req.header_count("sec-websocket-key") != 1)
    return tl::unexpected(http_error{400, "missing Sec-WebSocket-Key"});
  // base64 of 16 bytes: 22 characters of the alphabet, then "==".
  bool ok = key->size() == 24 && key->substr(22) == "==";
  for (std::size_t i = 0; ok && i < 22; ++i) {
    char c = (*key)[i];
    ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
  }
  if (!ok) return tl::unexpected(http_error{400, "invalid Sec-WebSocket-Key"});
  return *key;
}

std::string websocket_accept_key(std::string_view key) {
  static constexpr std::string_view guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  std::string input;
  input.reserve(key.size() + guid.size());
  input.append(key).append(guid);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_Digest(input.data(), input.size(), digest, &digest_len, EVP_sha1(), nullptr) != 1)
    return {};
  unsigned char out[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
  int n = EVP_EncodeBlock(out, digest, static_cast<int>(digest_len));
  return std::string(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
}

}  // namespace sonde::engine::web
