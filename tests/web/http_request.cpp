// The web server's HTTP/1.1 request parser and response writer (engine/src/web/), without
// sockets: limits and the status each one answers, smuggling-prone framing refused, splits
// anywhere, pipelining, chunked bodies, paths and queries, the WebSocket handshake check.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "web/http_request.hpp"
#include "web/http_response.hpp"

using namespace sonde::engine::web;

namespace {

struct outcome {
  std::vector<http_request> requests;
  parse_status last = parse_status::need_more;
  http_error error;
  std::size_t max_buffered = 0;
};

// Feeds `data` in pieces of `step` bytes (0: all at once), taking every complete request.
outcome run(std::string_view data, std::size_t step = 0, const http_limits& limits = {}) {
  request_parser p(limits);
  outcome o;
  std::size_t off = 0;
  do {
    std::size_t n = step ? std::min(step, data.size() - off) : data.size() - off;
    std::string_view piece = data.substr(off, n);
    off += n;
    while (true) {
      auto r = p.feed(piece);
      o.max_buffered = std::max(o.max_buffered, p.buffered_bytes());
      o.last = r.status;
      piece.remove_prefix(r.consumed);
      if (r.status == parse_status::error) {
        o.error = p.error();
        return o;
      }
      if (r.status == parse_status::need_more) {
        REQUIRE(piece.empty());
        break;
      }
      o.requests.push_back(std::move(p.request()));
      if (piece.empty()) break;
    }
  } while (off < data.size());
  return o;
}

bool same(const http_request& a, const http_request& b) {
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

// One request parsed whole; fails the test unless it is complete.
http_request one(std::string_view data, const http_limits& limits = {}) {
  auto o = run(data, 0, limits);
  INFO(std::string(o.error.reason));
  REQUIRE(o.requests.size() == 1);
  return std::move(o.requests[0]);
}

// The status of the error `data` ends in, fed whole and byte by byte (which must agree).
int status_of(std::string_view data, const http_limits& limits = {}) {
  auto whole = run(data, 0, limits);
  auto bytes = run(data, 1, limits);
  CHECK(whole.last == bytes.last);
  CHECK(whole.error.status == bytes.error.status);
  CHECK(whole.error.reason == bytes.error.reason);
  if (whole.last != parse_status::error) return whole.last == parse_status::complete ? 0 : -1;
  return whole.error.status;
}

std::string get(std::string_view target, std::string_view extra = "") {
  return "GET " + std::string(target) + " HTTP/1.1\r\nHost: x\r\n" + std::string(extra) + "\r\n";
}

}  // namespace

TEST_CASE("http: a simple request", "[web][http]") {
  auto r =
      one("GET /metrics?a=1 HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/7.88\r\n"
          "X-Empty:\r\nX-Spaces:   padded value \t\r\n\r\n");
  CHECK(r.method == "GET");
  CHECK(r.target == "/metrics?a=1");
  CHECK(r.path == "/metrics");
  CHECK(r.raw_query == "a=1");
  CHECK(r.version_minor == 1);
  CHECK(r.headers.size() == 4);
  CHECK(r.header("HOST") == "localhost:8080");
  CHECK(r.header("user-agent") == "curl/7.88");
  CHECK(r.header("x-empty") == "");
  CHECK(r.header("X-Spaces") == "padded value");
  CHECK_FALSE(r.header("accept"));
  CHECK(r.header_count("Host") == 1);
  CHECK(r.keep_alive);
  CHECK_FALSE(r.expect_continue);
  CHECK(r.body.empty());
}

TEST_CASE("http: path decoding and query parameters", "[web][http]") {
  auto r = one(get("/a%20b/%C3%A9+c?x=1&y=hello+world&z=%2B%26&flag&&empty=&=v&k=a=b"));
  CHECK(r.path == "/a b/\xC3\xA9+c");  // '+' is a space only in the query
  REQUIRE(r.query.size() == 7);
  CHECK(r.query_value("x") == "1");
  CHECK(r.query_value("y") == "hello world");
  CHECK(r.query_value("z") == "+&");
  CHECK(r.query_value("flag") == "");
  CHECK(r.query_value("empty") == "");
  CHECK(r.query_value("") == "v");
  CHECK(r.query_value("k") == "a=b");
  CHECK_FALSE(r.query_value("missing"));

  CHECK(one(get("/a..b/..c/c..")).path == "/a..b/..c/c..");
  CHECK(one(get("/./x")).path == "/./x");
  for (auto bad :
       {"/%00", "/a%zz", "/a%4", "/a%", "/..", "/../etc/passwd", "/a/../b", "/a/%2e%2e/b",
        "/a/%2E%2e", "/a/..%2fb", "/a%0Ab", "/a%7f", "/x?a=%00", "/x?a=%g0", "/x#frag", "/a\x7f"})
    CHECK(status_of(get(bad)) == 400);
  CHECK(status_of("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n") == 400);

  CHECK(decode_path("/a%2Fb") == "/a/b");
  CHECK_FALSE(decode_path("relative"));
  auto q = parse_query("a+b=c+d");
  REQUIRE(q);
  CHECK(q->at(0).key == "a b");
  CHECK(q->at(0).value == "c d");
}

TEST_CASE("http: request target forms", "[web][http]") {
  auto abs = one(get("http://example.com:8080/x/y?q=1"));
  CHECK(abs.path == "/x/y");
  CHECK(abs.query_value("q") == "1");
  CHECK(one(get("HTTPS://example.com")).path == "/");
  CHECK(one("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").path == "*");
  CHECK(status_of(get("*")) == 400);
  CHECK(status_of(get("example.com/x")) == 400);
  CHECK(status_of(get("ftp://example.com/x")) == 400);
  CHECK(status_of(get("http:///x")) == 400);
  CHECK(status_of(get("http://user@host/x")) == 400);
}

TEST_CASE("http: split anywhere equals whole, byte by byte included", "[web][http]") {
  const std::string stream =
      "\r\nGET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"
      "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world"
      "PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n"
      "GET /d HTTP/1.0\r\n\r\n";
  auto whole = run(stream);
  REQUIRE(whole.requests.size() == 4);
  CHECK(whole.last == parse_status::complete);
  for (std::size_t step = 1; step <= 17; ++step) {
    auto split = run(stream, step);
    REQUIRE(split.requests.size() == whole.requests.size());
    for (std::size_t i = 0; i < whole.requests.size(); ++i)
      CHECK(same(whole.requests[i], split.requests[i]));
  }
  // An error is the same whichever way the bytes come.
  const std::string bad = stream + "GET /e HTTP/1.1\r\nHost: h\r\nBad Name: v\r\n\r\n";
  auto w = run(bad), b = run(bad, 1);
  CHECK(w.requests.size() == 4);
  CHECK(b.requests.size() == 4);
  CHECK(w.error.status == 400);
  CHECK(b.error.reason == w.error.reason);
}

TEST_CASE("http: pipelined requests and consumed bytes", "[web][http]") {
  const std::string a = get("/one"),
                    b = "POST /two HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz";
  const std::string both = a + b + "GET /thr";
  request_parser p;
  auto r1 = p.feed(both);
  REQUIRE(r1.status == parse_status::complete);
  CHECK(r1.consumed == a.size());
  CHECK(p.request().path == "/one");
  auto r2 = p.feed(std::string_view(both).substr(r1.consumed));
  REQUIRE(r2.status == parse_status::complete);
  CHECK(r2.consumed == b.size());
  CHECK(p.request().path == "/two");
  CHECK(p.request().body == "xyz");
  auto r3 = p.feed(std::string_view(both).substr(r1.consumed + r2.consumed));
  CHECK(r3.status == parse_status::need_more);
  CHECK(r3.consumed == 8);
  auto r4 = p.feed("ee HTTP/1.1\r\nHost: h\r\n\r\n");
  REQUIRE(r4.status == parse_status::complete);
  CHECK(p.request().path == "/three");
}

TEST_CASE("http: chunked bodies", "[web][http]") {
  auto r =
      one("POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
          "4;name=value;other\r\nWiki\r\n5 ; ext\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n"
          "000\r\nX-Trailer: t\r\nOther: u\r\n\r\n");
  CHECK(r.chunked);
  CHECK(r.body == "Wikipedia in\r\n\r\nchunks.");
  CHECK(r.header_count("x-trailer") == 0);  // trailers are dropped
  CHECK(one("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n")
            .body.empty());
  CHECK(one("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked,\r\n\r\n0\r\n\r\n").chunked);

  const std::string head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (auto bad : {"x\r\n", "\r\n", "-1\r\n", "0x5\r\nhello\r\n0\r\n\r\n", "5 \r\nhello\r\n",
                   "5\r\nhelloX\r\n", "5\r\nhello\n0\r\n\r\n", "5\n", "5;a\x01\r\n",
                   "0\r\n bad\r\n\r\n", "0\r\nbad\r\n\r\n", "0\r\nX: a\x7f\r\n\r\n"})
    CHECK(status_of(head + bad) == 400);
  CHECK(status_of(head + "5\r\nhel") == -1);
  CHECK(status_of(head + "5\r\nhello\r\n0\r\n\r\n") == 0);
}

TEST_CASE("http: Content-Length rules", "[web][http]") {
  auto post = [](std::string_view cl_headers, std::string_view body = "hello") {
    return "POST / HTTP/1.1\r\nHost: h\r\n" + std::string(cl_headers) + "\r\n" + std::string(body);
  };
  CHECK(one(post("Content-Length: 5\r\n")).body == "hello");
  CHECK(one(post("Content-Length: 005\r\n")).body == "hello");
  CHECK(one(post("Content-Length: 5\r\ncontent-length: 5\r\n")).body == "hello");
  CHECK(one(post("Content-Length: 5, 5\r\n")).body == "hello");
  CHECK(one(post("Content-Length: 0\r\n", "")).body.empty());
  CHECK(status_of(post("Content-Length: 5\r\nContent-Length: 6\r\n")) == 400);
  CHECK(status_of(post("Content-Length: 5, 6\r\n")) == 400);
  CHECK(status_of(post("Content-Length: -5\r\n")) == 400);
  CHECK(status_of(post("Content-Length: +5\r\n")) == 400);
  CHECK(status_of(post("Content-Length: 5x\r\n")) == 400);
  CHECK(status_of(post("Content-Length: 0x5\r\n")) == 400);
  CHECK(status_of(post("Content-Length:\r\n")) == 400);
  CHECK(status_of(post("Content-Length: 5,\r\n")) == 400);
  CHECK(status_of(post("Content-Length: 99999999999999999999999\r\n")) == 400);
  CHECK(status_of(post("Content-Length: 18446744073709551616\r\n")) == 400);
  CHECK(status_of(post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n")) == 400);
  CHECK(status_of(post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n")) == 400);
}

TEST_CASE("http: Transfer-Encoding other than chunked", "[web][http]") {
  auto post = [](std::string_view te, std::string_view version = "1.1") {
    return "POST / HTTP/" + std::string(version) +
           "\r\nHost: h\r\nTransfer-Encoding: " + std::string(te) + "\r\n\r\n0\r\n\r\n";
  };
  CHECK(status_of(post("gzip")) == 501);
  CHECK(status_of(post("gzip, chunked")) == 501);
  CHECK(status_of(post("identity")) == 501);
  CHECK(status_of(post("chunked;q=1")) == 501);
  CHECK(status_of(post("chunked, chunked")) == 400);
  CHECK(status_of(post("")) == 400);
  CHECK(status_of(post("chunked", "1.0")) == 400);
  CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n") == 400);
}

TEST_CASE("http: limits and the status each one answers", "[web][http]") {
  http_limits small;
  small.max_request_line = 64;
  small.max_header_bytes = 128;
  small.max_headers = 4;
  small.max_body = 32;
  small.max_chunk_line = 16;
  small.max_trailer_bytes = 24;
  const std::size_t bound =
      small.max_request_line + small.max_header_bytes + small.max_body + small.max_trailer_bytes;

  SECTION("request line: the limit includes CRLF; 414 past it") {
    // "GET " + target + " HTTP/1.1\r\n" is 15 bytes around the target.
    std::string at_limit = "/" + std::string(64 - 15 - 1, 'a');
    CHECK(status_of("GET " + at_limit + " HTTP/1.1\r\nHost: h\r\n\r\n", small) == 0);
    CHECK(status_of("GET " + at_limit + "a HTTP/1.1\r\nHost: h\r\n\r\n", small) == 414);
    // Refused before the line ends: nothing past the limit is kept.
    auto o = run("GET /" + std::string(10000, 'a'), 7, small);
    CHECK(o.error.status == 414);
    CHECK(o.max_buffered <= small.max_request_line);
    CHECK(status_of("GET /" + std::string(8200, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n") == 414);
  }
  SECTION("header bytes: 431 past the total") {
    // "Host: h\r\n" (9) + "X: " + v + "\r\n" + "\r\n" (2)
    std::string v(128 - 9 - 5 - 2, 'v');
    CHECK(status_of("GET / HTTP/1.1\r\nHost: h\r\nX: " + v + "\r\n\r\n", small) == 0);
    CHECK(status_of("GET / HTTP/1.1\r\nHost: h\r\nX: " + v + "v\r\n\r\n", small) == 431);
    auto o = run("GET / HTTP/1.1\r\nX: " + std::string(100000, 'v'), 3, small);
    CHECK(o.error.status == 431);
    CHECK(o.max_buffered <= bound);
    std::string big;
    for (int i = 0; i < 20; ++i)
      big += "X-" + std::to_string(i) + ": " + std::string(900, 'v') + "\r\n";
    CHECK(status_of(get("/", big)) == 431);  // 18 KiB with the default 16 KiB
  }
  SECTION("header count: 431 past the count") {
    std::string four = "Host: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n";
    CHECK(status_of("GET / HTTP/1.1\r\n" + four + "\r\n", small) == 0);
    CHECK(status_of("GET / HTTP/1.1\r\n" + four + "D: 4\r\n\r\n", small) == 431);
    std::string many;
    for (int i = 0; i < 99; ++i) many += "H" + std::to_string(i) + ": x\r\n";
    CHECK(status_of(get("/", many)) == 0);  // 100 with Host
    CHECK(status_of(get("/", many + "One-More: x\r\n")) == 431);
  }
  SECTION("body: 413 from Content-Length before the body is read") {
    CHECK(
        status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 32\r\n\r\n" + std::string(32, 'b'),
                  small) == 0);
    request_parser p(small);
    auto r = p.feed("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 33\r\n\r\n");
    CHECK(r.status == parse_status::error);
    CHECK(p.error().status == 413);
    CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1048577\r\n\r\n") == 413);
    CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1048576\r\n\r\n") == -1);
  }
  SECTION("body: 413 for chunked bodies, counted over all chunks") {
    const std::string head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    CHECK(status_of(head + "10\r\n" + std::string(16, 'a') + "\r\n10\r\n" + std::string(16, 'a') +
                        "\r\n0\r\n\r\n",
                    small) == 0);
    CHECK(status_of(head + "10\r\n" + std::string(16, 'a') + "\r\n11\r\n", small) == 413);
    CHECK(status_of(head + "fffffffffffffffffffffffff\r\n", small) == 400);  // line > 16
    CHECK(status_of(head + "fffffffffffff\r\n", small) == 413);
    CHECK(status_of(head + "10000000000000000000\r\n") == 413);  // would overflow 64 bits
    auto o = run(head + "10\r\n" + std::string(16, 'a') + "\r\n10\r\n" + std::string(100, 'a'), 5,
                 small);
    CHECK(o.error.status == 400);  // 16 bytes taken, then no CRLF
    CHECK(o.max_buffered <= bound);
  }
  SECTION("chunk line and trailers are bounded") {
    const std::string head = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    CHECK(status_of(head + "1;" + std::string(12, 'e') + "\r\na\r\n0\r\n\r\n", small) == 0);
    CHECK(status_of(head + "1;" + std::string(13, 'e') + "\r\na\r\n0\r\n\r\n", small) == 400);
    CHECK(status_of(head + "0\r\nT: " + std::string(17, 't') + "\r\n\r\n", small) == 0);
    CHECK(status_of(head + "0\r\nT: " + std::string(18, 't') + "\r\n\r\n", small) == 431);
    auto o = run(head + "0\r\n" + std::string(5000, 't'), 1, small);
    CHECK(o.error.status == 431);
    CHECK(o.max_buffered <= bound);
  }
}

TEST_CASE("http: header syntax that could smuggle", "[web][http]") {
  CHECK(status_of(get("/", "X: a\r\n folded\r\n")) == 400);       // obs-fold
  CHECK(status_of(get("/", "X: a\r\n\tfolded\r\n")) == 400);      // obs-fold
  CHECK(status_of("GET / HTTP/1.1\r\n Host: h\r\n\r\n") == 400);  // space before the first
  CHECK(status_of(get("/", "X : a\r\n")) == 400);                 // whitespace before the colon
  CHECK(status_of(get("/", "X\t: a\r\n")) == 400);
  CHECK(status_of(get("/", ": a\r\n")) == 400);
  CHECK(status_of(get("/", "X(y): a\r\n")) == 400);
  CHECK(status_of(get("/", "X\r\n")) == 400);
  CHECK(status_of(get("/", std::string("X: a\0b\r\n", 8))) == 400);
  CHECK(status_of(get("/", "X: a\rb\r\n")) == 400);  // bare CR
  CHECK(status_of(get("/", "X: a\x01\r\n")) == 400);
  CHECK(status_of(get("/", "X: a\x7f\r\n")) == 400);
  CHECK(status_of("GET / HTTP/1.1\nHost: h\r\n\r\n") == 400);  // bare LF
  CHECK(status_of("GET / HTTP/1.1\r\nHost: h\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: h\r\n\n") == 400);
  CHECK(status_of(get("/", "X: caf\xC3\xA9\r\n")) == 0);  // obs-text is allowed
  CHECK(status_of(get("/", "X: a\tb\r\n")) == 0);
}

TEST_CASE("http: request line, version and method", "[web][http]") {
  CHECK(status_of("GET / HTTP/2.0\r\nHost: h\r\n\r\n") == 505);
  CHECK(status_of("GET / HTTP/1.2\r\nHost: h\r\n\r\n") == 505);
  CHECK(status_of("GET / HTTP/0.9\r\nHost: h\r\n\r\n") == 505);
  CHECK(status_of("GET / HTTP/1.10\r\nHost: h\r\n\r\n") == 400);
  CHECK(status_of("GET / http/1.1\r\nHost: h\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1\r\nHost: h\r\n\r\n") == 400);
  CHECK(status_of("GET /\r\n\r\n") == 400);  // HTTP/0.9 form
  CHECK(status_of("GET  / HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1 \r\nHost: h\r\n\r\n") == 400);
  CHECK(status_of("G(T / HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
  CHECK(status_of("BREW / HTTP/1.1\r\nHost: h\r\n\r\n") == 501);
  CHECK(status_of("get / HTTP/1.1\r\nHost: h\r\n\r\n") == 501);  // methods are case-sensitive
  CHECK(status_of("TRACE / HTTP/1.1\r\nHost: h\r\n\r\n") == 501);
  CHECK(status_of("CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n") == 501);
  for (auto m : {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
    CHECK(one(std::string(m) + " / HTTP/1.1\r\nHost: h\r\n\r\n").method == m);
  // A few empty lines before a request are ignored; many are not.
  CHECK(one("\r\n\r\n" + get("/")).path == "/");
  std::string crlfs;
  for (int i = 0; i < 9; ++i) crlfs += "\r\n";
  CHECK(status_of(crlfs + get("/")) == 400);
}

TEST_CASE("http: Host", "[web][http]") {
  CHECK(status_of("GET / HTTP/1.1\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: a b\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n") == 0);
  CHECK(status_of("GET / HTTP/1.1\r\nHost:\r\n\r\n") == 0);  // RFC 9112 3.2
  CHECK(status_of("GET / HTTP/1.0\r\n\r\n") == 0);
}

TEST_CASE("http: Connection semantics in 1.0 and 1.1", "[web][http]") {
  CHECK(one("GET / HTTP/1.1\r\nHost: h\r\n\r\n").keep_alive);
  CHECK_FALSE(one("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keep_alive);
  CHECK_FALSE(one("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, CLOSE\r\n\r\n").keep_alive);
  CHECK_FALSE(one("GET / HTTP/1.0\r\n\r\n").keep_alive);
  CHECK(one("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
  CHECK(one("GET / HTTP/1.0\r\nConnection: foo\r\nConnection: keep-alive\r\n\r\n").keep_alive);
  CHECK_FALSE(one("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
  CHECK(list_has_token("keep-alive ,  Upgrade", "upgrade"));
  CHECK_FALSE(list_has_token("keep-alive, upgrades", "upgrade"));
}

TEST_CASE("http: Expect: 100-continue", "[web][http]") {
  request_parser p;
  auto r =
      p.feed("POST /x HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 4\r\n\r\n");
  CHECK(r.status == parse_status::need_more);
  CHECK(p.head_complete());
  CHECK(p.request().expect_continue);
  CHECK(p.feed("body").status == parse_status::complete);
  CHECK(p.request().body == "body");
  CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nExpect: something\r\n\r\n") == 417);
  CHECK_FALSE(one("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
  // Too large: refused before the client sends the body.
  request_parser q;
  CHECK(q.feed("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: "
               "2000000\r\n\r\n")
            .status == parse_status::error);
  CHECK(q.error().status == 413);
}

TEST_CASE("http: an error is final", "[web][http]") {
  request_parser p;
  CHECK(p.feed("GET / HTTP/9.9\r\n").status == parse_status::error);
  CHECK(p.error().status == 505);
  CHECK_FALSE(p.head_complete());
  CHECK_FALSE(p.error().reason.empty());
  CHECK(p.feed(get("/")).status == parse_status::error);
  CHECK(p.error().status == 505);
}

TEST_CASE("http: WebSocket handshake (RFC 6455 1.3 and 4.2.1)", "[web][http][websocket]") {
  // The value printed in RFC 6455 sections 1.3 and 4.2.2 for the RFC's sample nonce.
  CHECK(websocket_accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  CHECK(websocket_accept_key("x3JJHMbDL1EzLkh9GBhXDw==") == "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
  const std::string rfc =
      "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
      "Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
      "Sec-WebSocket-Version: 13\r\n\r\n";
  const auto req = one(rfc);
  auto key = websocket_upgrade_key(req);
  REQUIRE(key);
  CHECK(*key == "dGhlIHNhbXBsZSBub25jZQ==");
  auto resp = websocket_accept_response(*key);
  CHECK(resp ==
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n");

  // The status the check answers once `from` is replaced by `to` (0: accepted).
  auto with = [&](std::string_view from, std::string_view to) {
    std::string s = rfc;
    s.replace(s.find(from), from.size(), to);
    const auto r = one(s);
    auto k = websocket_upgrade_key(r);
    return k ? 0 : k.error().status;
  };
  CHECK(with("Upgrade: websocket", "Upgrade: WebSocket") == 0);
  CHECK(with("Connection: Upgrade", "Connection: keep-alive, Upgrade") == 0);
  CHECK(with("Upgrade: websocket", "Upgrade: h2c") == 426);
  CHECK(with("Connection: Upgrade", "Connection: keep-alive") == 426);
  CHECK(with("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8") == 426);
  CHECK(with("Sec-WebSocket-Version: 13", "X: y") == 426);
  CHECK(with("GET /chat", "POST /chat") == 400);
  CHECK(with("GET /chat HTTP/1.1", "GET /chat HTTP/1.0") == 400);
  CHECK(with("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ=") == 400);
  CHECK(with("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25j*Q==") == 400);
  CHECK(with("dGhlIHNhbXBsZSBub25jZQ==",
             "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==") == 400);
  CHECK(with("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "X: y") == 400);
}

TEST_CASE("http: response serializer", "[web][http]") {
  std::vector<http_header> h = {{"Content-Type", "text/plain"},
                                {"X-Bad", "a\r\nInjected: 1"},
                                {"Bad Name", "x"},
                                {"Content-Length", "999"}};
  CHECK(serialize_response(200, h, "hello") ==
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello");
  CHECK(serialize_response(404, {}, "", {.head_only = true, .date = {}}) ==
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
  CHECK(serialize_response(200, {}, "abc", {.head_only = true, .date = {}}) ==
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n");
  CHECK(serialize_response(204, {}, "ignored") == "HTTP/1.1 204 No Content\r\n\r\n");
  CHECK(serialize_response(100, {}, {}) == "HTTP/1.1 100 Continue\r\n\r\n");
  const auto t = std::chrono::system_clock::from_time_t(784111777);
  CHECK(format_http_date(t) == "Sun, 06 Nov 1994 08:49:37 GMT");
  CHECK(serialize_response(431, {}, "x", {.head_only = false, .date = t}) ==
        "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 1\r\n"
        "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\nx");
  for (int s : {400, 405, 413, 414, 417, 426, 431, 501, 505}) CHECK(reason_phrase(s) != "Unknown");
}
