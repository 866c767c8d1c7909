#pragma once
/// @file http_response.hpp
/// Writing HTTP/1.1 responses for sonde's web server: the status line, headers, a
/// Content-Length the caller cannot get wrong, an optional Date, and the WebSocket 101 answer.
/// No ASIO here (see http_request.hpp).

#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "web/http_request.hpp"

namespace sonde::engine::web {

/// The standard reason phrase of a status ("Not Found"); "Unknown" for one it does not know.
std::string_view reason_phrase(int status);

/// IMF-fixdate (RFC 9110 5.6.7), e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
std::string format_http_date(std::chrono::system_clock::time_point t);

struct response_options {
  /// Answering HEAD: Content-Length is the body's, the body is not written.
  bool head_only = false;
  /// Adds a Date header with this time.
  std::optional<std::chrono::system_clock::time_point> date;
};

/// "HTTP/1.1 <status> <reason>", the headers, then Content-Length (except for 1xx, 204 and 304),
/// Date when asked, the empty line and the body. A header given with an invalid name (not a
/// token) or a value holding CR, LF, NUL or another control character is left out, never
/// written: a value that came from a request cannot add lines to the response. A
/// Content-Length or Transfer-Encoding given by the caller is left out too (the length is
/// always the body's).
std::string serialize_response(int status, std::span<const http_header> headers,
                               std::string_view body, const response_options& options = {});

/// The 101 answer to a checked opening handshake (`websocket_upgrade_key`): Upgrade,
/// Connection and Sec-WebSocket-Accept.
std::string websocket_accept_response(std::string_view key);

}  // namespace sonde::engine::web
