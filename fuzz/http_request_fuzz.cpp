// libFuzzer target: the web server's HTTP/1.1 request parser (engine/src/web/http_request.hpp),
// which reads whatever a client sends. Input: one byte choosing the limits (the defaults, or
// small ones the fuzzer can reach), one byte seeding where the input is split, then the bytes
// of the connection. Checks that feeding the bytes split anywhere (and byte by byte) gives the
// same requests and the same error as feeding them whole; that the parser never holds more than
// its limits allow; that `need_more` always takes the whole input; and that what it accepts
// keeps its promises (no ".." segment or control character in a path, header names are tokens,
// values hold no CR/LF/NUL, the body matches Content-Length, a bounded body).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "web/http_request.hpp"

namespace w = sonde::engine::web;

namespace {

struct outcome {
  std::vector<w::http_request> requests;
  w::parse_status last = w::parse_status::need_more;
  w::http_error error;
};

void check_request(const w::http_request& r, const w::http_limits& lim) {
  if (r.target.size() > lim.max_request_line || r.body.size() > lim.max_body ||
      r.headers.size() > lim.max_headers)
    __builtin_trap();
  if (r.version_minor != 0 && r.version_minor != 1) __builtin_trap();
  if (r.path != "*") {
    if (r.path.empty() || r.path[0] != '/') __builtin_trap();
    std::string_view rest(r.path);
    while (true) {
      std::size_t slash = rest.find('/');
      if (rest.substr(0, slash) == "..") __builtin_trap();
      if (slash == std::string_view::npos) break;
      rest.remove_prefix(slash + 1);
    }
    for (unsigned char c : r.path)
      if (c < 0x20 || c == 0x7f) __builtin_trap();
  }
  for (const auto& q : r.query)
    if (q.key.find('\0') != std::string::npos || q.value.find('\0') != std::string::npos)
      __builtin_trap();
  std::size_t stored = 0;
  for (const auto& h : r.headers) {
    if (!w::is_token(h.name)) __builtin_trap();
    for (unsigned char c : h.value)
      if ((c < 0x20 && c != '\t') || c == 0x7f) __builtin_trap();
    stored += h.name.size() + h.value.size();
  }
  if (stored > lim.max_header_bytes) __builtin_trap();
  auto cl = r.header("content-length");
  if (cl && r.chunked) __builtin_trap();
  if (cl && !r.chunked) {
    // The first element of the (possibly repeated) value is the length.
    std::uint64_t v = 0;
    for (char c : *cl) {
      if (c < '0' || c > '9') break;
      v = v * 10 + static_cast<unsigned>(c - '0');
    }
    if (v != r.body.size()) __builtin_trap();
  }
  if (!cl && !r.chunked && !r.body.empty()) __builtin_trap();
}

// Feeds `data` in pieces whose sizes come from `seed` (0: whole, 1: byte by byte).
outcome run(std::string_view data, const w::http_limits& lim, std::uint32_t seed) {
  w::request_parser p(lim);
  outcome o;
  const std::size_t bound = lim.max_request_line + lim.max_header_bytes + lim.max_body +
                            std::max(lim.max_chunk_line, lim.max_trailer_bytes);
  std::size_t off = 0;
  do {
    std::size_t n = data.size() - off;
    if (seed == 1) {
      n = std::min<std::size_t>(n, 1);
    } else if (seed > 1) {
      seed = seed * 1103515245u + 12345u;
      n = std::min<std::size_t>(n, 1 + (seed >> 16) % 64);
    }
    std::string_view piece = data.substr(off, n);
    off += n;
    while (true) {
      auto r = p.feed(piece);
      if (r.consumed > piece.size() || p.buffered_bytes() > bound) __builtin_trap();
      piece.remove_prefix(r.consumed);
      o.last = r.status;
      if (r.status == w::parse_status::error) {
        o.error = p.error();
        if (o.error.reason.empty() || o.error.status < 400 || o.error.status > 599)
          __builtin_trap();
        return o;
      }
      if (r.status == w::parse_status::need_more) {
        if (!piece.empty()) __builtin_trap();
        break;
      }
      check_request(p.request(), lim);
      o.requests.push_back(std::move(p.request()));
      if (piece.empty()) break;
    }
  } while (off < data.size());
  return o;
}

bool same(const w::http_request& a, const w::http_request& b) {
  if (a.method != b.method || a.target != b.target || a.path != b.path ||
      a.raw_query != b.raw_query || a.version_minor != b.version_minor || a.body != b.body ||
      a.keep_alive != b.keep_alive || a.expect_continue != b.expect_continue ||
      a.chunked != b.chunked || a.headers.size() != b.headers.size() ||
      a.query.size() != b.query.size())
    return false;
  for (std::size_t i = 0; i < a.headers.size(); ++i)
    if (a.headers[i].name != b.headers[i].name || a.headers[i].value != b.headers[i].value)
      return false;
  for (std::size_t i = 0; i < a.query.size(); ++i)
    if (a.query[i].key != b.query[i].key || a.query[i].value != b.query[i].value) return false;
  return true;
}

void compare(const outcome& a, const outcome& b) {
  if (a.last != b.last || a.requests.size() != b.requests.size()) __builtin_trap();
  if (a.last == w::parse_status::error &&
      (a.error.status != b.error.status || a.error.reason != b.error.reason))
    __builtin_trap();
  for (std::size_t i = 0; i < a.requests.size(); ++i)
    if (!same(a.requests[i], b.requests[i])) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  w::http_limits lim;
  if (data[0] & 1) {
    lim.max_request_line = 64;
    lim.max_header_bytes = 160;
    lim.max_headers = 5;
    lim.max_body = 48;
    lim.max_chunk_line = 16;
    lim.max_trailer_bytes = 40;
  }
  const std::string_view in(reinterpret_cast<const char*>(data) + 2, size - 2);
  const outcome whole = run(in, lim, 0);
  compare(whole, run(in, lim, 2u + data[1]));
  if (in.size() <= 4096) compare(whole, run(in, lim, 1));
  // The WebSocket handshake check never fails on a parsed request in an unexpected way.
  for (const auto& r : whole.requests) {
    auto key = w::websocket_upgrade_key(r);
    if (key && (key->size() != 24 || w::websocket_accept_key(*key).size() != 28)) __builtin_trap();
    if (!key && key.error().status != 400 && key.error().status != 426) __builtin_trap();
  }
  return 0;
}
