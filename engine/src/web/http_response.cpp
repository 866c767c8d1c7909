#include "web/http_response.hpp"

#include <cstdio>
#include <ctime>

namespace sonde::engine::web {

std::string_view reason_phrase(int status) {
  struct entry {
    int status;
    std::string_view phrase;
  };
  static constexpr entry table[] = {
      {100, "Continue"},
      {101, "Switching Protocols"},
      {200, "OK"},
      {201, "Created"},
      {202, "Accepted"},
      {204, "No Content"},
      {301, "Moved Permanently"},
      {302, "Found"},
      {304, "Not Modified"},
      {307, "Temporary Redirect"},
      {308, "Permanent Redirect"},
      {400, "Bad Request"},
      {401, "Unauthorized"},
      {403, "Forbidden"},
      {404, "Not Found"},
      {405, "Method Not Allowed"},
      {408, "Request Timeout"},
      {409, "Conflict"},
      {411, "Length Required"},
      {413, "Content Too Large"},
      {414, "URI Too Long"},
      {415, "Unsupported Media Type"},
      {417, "Expectation Failed"},
      {426, "Upgrade Required"},
      {429, "Too Many Requests"},
      {431, "Request Header Fields Too Large"},
      {500, "Internal Server Error"},
      {501, "Not Implemented"},
      {503, "Service Unavailable"},
      {505, "HTTP Version Not Supported"},
  };
  for (const auto& e : table)
    if (e.status == status) return e.phrase;
  return "Unknown";
}

std::string format_http_date(std::chrono::system_clock::time_point t) {
  static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7],
                tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buf;
}

namespace {

bool writable_header(const http_header& h) {
  if (!is_token(h.name) || iequals(h.name, "content-length") ||
      iequals(h.name, "transfer-encoding"))
    return false;
  for (unsigned char c : h.value)
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  return true;
}

}  // namespace

std::string serialize_response(int status, std::span<const http_header> headers,
                               std::string_view body, const response_options& options) {
  std::string out;
  std::size_t size = 64 + (options.head_only ? 0 : body.size());
  for (const auto& h : headers) size += h.name.size() + h.value.size() + 4;
  out.reserve(size);
  out += "HTTP/1.1 ";
  out += std::to_string(status);
  out += ' ';
  out += reason_phrase(status);
  out += "\r\n";
  for (const auto& h : headers) {
    if (!writable_header(h)) continue;
    out.append(h.name).append(": ").append(h.value).append("\r\n");
  }
  if (status >= 200 && status != 204 && status != 304)
    out.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
  if (options.date) out.append("Date: ").append(format_http_date(*options.date)).append("\r\n");
  out += "\r\n";
  if (!options.head_only && status >= 200 && status != 204 && status != 304) out += body;
  return out;
}

std::string websocket_accept_response(std::string_view key) {
  const http_header headers[] = {{"Upgrade", "websocket"},
                                 {"Connection", "Upgrade"},
                                 {"Sec-WebSocket-Accept", websocket_accept_key(key)}};
  return serialize_response(101, headers, {});
}

}  // namespace sonde::engine::web
