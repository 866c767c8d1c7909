#pragma once
/// @file http_request.hpp
/// An incremental HTTP/1.1 request parser (RFC 9112) for sonde's web server, without sockets:
/// bytes go in, split anywhere, several pipelined requests possibly in one buffer; out come
/// "need more", one complete request, or an error carrying the status to answer. Every limit is
/// an option and checked before anything past it is buffered, so a connection's memory is at
/// most the sum of the limits. Pure code over bytes, fuzzed (fuzz/http_request_fuzz.cpp).
/// This header and its source must not include ASIO: the fuzzers are built with a compiler
/// that cannot compile sonde's coroutine headers. See docs/architecture.md "Web codecs".

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <tl/expected.hpp>

namespace sonde::engine::web {

/// What one request may hold. Every byte count includes the line terminators (CRLF).
struct http_limits {
  std::size_t max_request_line = 8 * 1024;   ///< method, target, version; 414 past it
  std::size_t max_header_bytes = 16 * 1024;  ///< all header lines and the empty line; 431
  std::size_t max_headers = 100;             ///< header fields; 431 past it
  std::size_t max_body = 1024 * 1024;        ///< decoded body (Content-Length or chunked); 413
  std::size_t max_chunk_line = 1024;         ///< one chunk-size line with its extensions; 400
  std::size_t max_trailer_bytes = 4 * 1024;  ///< the chunked trailer section; 431
};

/// A status to answer and a short reason (a static string, for logs and the response body).
/// The connection is not reusable after an error: answer, then close.
struct http_error {
  int status = 400;
  std::string_view reason;
};

struct http_header {
  std::string name;   ///< as received (a token)
  std::string value;  ///< surrounding whitespace removed; no CR, LF, NUL or other controls
};

struct query_param {
  std::string key;    ///< percent-decoded, '+' read as a space
  std::string value;  ///< percent-decoded, '+' read as a space; empty for "?flag"
};

/// ASCII case-insensitive equality (header names, tokens).
bool iequals(std::string_view a, std::string_view b);

/// True when `s` is an RFC 9110 token (header names, methods, transfer codings).
bool is_token(std::string_view s);

/// True when the comma-separated list `list` holds `token` (case-insensitive, whitespace
/// around elements ignored), as in `Connection: keep-alive, Upgrade`.
bool list_has_token(std::string_view list, std::string_view token);

struct http_request {
  std::string method;     ///< GET, HEAD, POST, PUT, DELETE, OPTIONS or PATCH
  std::string target;     ///< the request-target as received
  std::string path;       ///< percent-decoded path ("*" for OPTIONS *); never a ".." segment
  std::string raw_query;  ///< after '?', not decoded
  std::vector<query_param> query;
  int version_minor = 1;             ///< HTTP/1.<minor>: 0 or 1
  std::vector<http_header> headers;  ///< in order received (trailers are not kept)
  std::string body;                  ///< decoded body (chunked framing removed)
  bool keep_alive = true;        ///< the connection may carry another request after the response
  bool expect_continue = false;  ///< HTTP/1.1 with "Expect: 100-continue"
  bool chunked = false;          ///< the body came with Transfer-Encoding: chunked

  /// The first header of that name (case-insensitive), if any.
  std::optional<std::string_view> header(std::string_view name) const;
  /// How many headers have that name.
  std::size_t header_count(std::string_view name) const;
  /// The first query parameter of that key (case-sensitive), if any.
  std::optional<std::string_view> query_value(std::string_view key) const;
};

enum class parse_status { need_more, complete, error };

struct parse_result {
  parse_status status = parse_status::need_more;
  std::size_t consumed = 0;  ///< bytes of the input used; the rest belongs to the next request
};

/// One connection's request parser. Feed it what arrives; it consumes bytes up to the end of one
/// request at most. On `complete`, `request()` holds the request (move from it freely) and the
/// unconsumed bytes start the next one: the next `feed` starts a new request. On `error` it stays
/// failed. Not thread-safe; one per connection.
///
/// Strict where leniency lets two parsers disagree about message boundaries (request smuggling):
/// lines end in CRLF (a bare LF or CR is refused), no whitespace before a header's colon, no
/// obs-fold, Content-Length and Transfer-Encoding never together, differing Content-Lengths
/// refused, chunked the only transfer coding, Transfer-Encoding refused in HTTP/1.0.
class request_parser {
 public:
  explicit request_parser(const http_limits& limits = {});

  parse_result feed(std::string_view in);

  /// The request being parsed; complete after `feed` returned `complete`.
  http_request& request() { return req_; }
  const http_request& request() const { return req_; }
  /// Why parsing failed, after `feed` returned `error`.
  const http_error& error() const { return error_; }
  /// True once the header section is parsed and checked (the body may still be coming). A server
  /// answers "100 Continue" then, if `request().expect_continue`.
  bool head_complete() const { return state_ > state::headers && state_ != state::failed; }
  /// Bytes held in buffers now (the partial line, stored headers, the body): never more than
  /// the limits allow.
  std::size_t buffered_bytes() const;
  const http_limits& limits() const { return limits_; }

 private:
  enum class state {
    request_line,
    headers,
    body,           // Content-Length body
    chunk_size,     // a chunk-size line
    chunk_data,     // chunk payload
    chunk_data_cr,  // the CR after a chunk's data
    chunk_data_lf,  // the LF after a chunk's data
    trailers,       // the trailer section after the last chunk
    complete,
    failed,
  };

  void start();
  bool fail(int status, std::string_view reason);
  // Takes bytes of one line into line_; returns true when line_ holds a whole line.
  bool take_line(std::string_view in, std::size_t& pos, std::size_t limit, int status,
                 std::string_view reason);
  bool on_request_line(std::string_view line);
  bool on_header_line(std::string_view line);
  bool on_head_end();
  bool on_chunk_size_line(std::string_view line);
  bool on_trailer_line(std::string_view line);

  http_limits limits_;
  state state_ = state::request_line;
  http_request req_;
  http_error error_;
  std::string line_;               // the current line, with its CRLF once complete
  std::size_t header_bytes_ = 0;   // header (or trailer) section bytes so far
  std::size_t header_stored_ = 0;  // bytes of stored header names and values
  std::size_t empty_lines_ = 0;    // empty lines before the request line
  std::uint64_t remaining_ = 0;    // body or chunk bytes still to read
};

/// Percent-decodes a request path: refuses invalid escapes, %00 and other control characters,
/// and a path that decodes to hold a ".." segment ("/a/../b", "/a/%2e%2e/b"). The raw path
/// must start with '/'.
tl::expected<std::string, http_error> decode_path(std::string_view raw);

/// Splits a query string at '&' into key=value pairs (empty pairs skipped), each percent-decoded
/// with '+' as a space. Invalid escapes and %00 are refused.
tl::expected<std::vector<query_param>, http_error> parse_query(std::string_view raw);

/// RFC 6455 section 4.2.1: checks that a parsed request is a WebSocket opening handshake
/// (GET, HTTP/1.1, Host, `Upgrade: websocket`, `Connection: Upgrade`, one `Sec-WebSocket-Key`
/// that is base64 of 16 bytes, `Sec-WebSocket-Version: 13`) and returns the key. Errors: 426
/// when the request is not an upgrade to websocket or asks for another version (answer with
/// `Upgrade: websocket` and `Sec-WebSocket-Version: 13`), 400 for the rest.
tl::expected<std::string_view, http_error> websocket_upgrade_key(const http_request& req);

/// The Sec-WebSocket-Accept value for a client's key: base64(SHA-1(key + the RFC 6455 GUID)).
std::string websocket_accept_key(std::string_view key);

}  // namespace sonde::engine::web
