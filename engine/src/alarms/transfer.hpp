#pragma once
/// @file transfer.hpp
/// One delivery attempt over libcurl (HTTP(S) or SMTP(S)) on the engine's loop, through the
/// io_context's sonde::detail::curl_service: a fresh easy handle from the service's pool per
/// attempt, a fresh connection (no reuse), sockets opened close-on-exec, libcurl's own timeout
/// plus a backstop timer, and every byte a receiver sends bounded (`transfer_limits`).
/// The outcome rules shared by the HTTP notifiers live here too (judge_http).
///
/// Thread safety: none; use from the io_context's thread. A curl_sender must be destroyed
/// before its io_context.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <curl/curl.h>
#include <asio/io_context.hpp>

#include "alarms/notifier.hpp"

namespace sonde::engine::alarms {

/// What a receiver may send back, at most (docs/notifiers.md).
struct transfer_limits {
  static constexpr std::size_t header_bytes = 64 * 1024;  ///< one response's header block
  static constexpr std::size_t kept_body = 16 * 1024;     ///< body bytes kept for parsing
  static constexpr std::size_t read_body = 1024 * 1024;   ///< body bytes read before stopping
  static constexpr std::size_t detail_body = 1024;        ///< body bytes shown in `detail`
  static constexpr long max_redirects = 3;                ///< same scheme only
  static constexpr std::chrono::milliseconds max_retry_after{std::chrono::hours(1)};
  static constexpr std::chrono::milliseconds backstop{2000};  ///< added to the timeout
};

/// One HTTP request. The URL is already validated and normalized.
struct http_request {
  std::string url;
  std::string method = "POST";       ///< POST, PUT or PATCH
  std::vector<std::string> headers;  ///< "Name: value" lines, already sanitized
  std::string body;
  std::uint64_t notification_id = 0;  ///< sent as X-Sonde-Notification
  bool tls_verify = true;
  std::string ca_file;
  std::string username, password;  ///< HTTP basic authentication when username is set
  std::chrono::milliseconds timeout{10000};
};

/// One SMTP submission.
struct smtp_request {
  std::string url;          ///< smtp://host:port or smtps://host:port
  bool require_tls = true;  ///< STARTTLS required on smtp:// (smtps:// is always TLS)
  bool tls_verify = true;
  std::string ca_file;
  std::string username, password;
  std::string mail_from;                ///< bare address
  std::vector<std::string> recipients;  ///< bare addresses
  std::string message;                  ///< the whole RFC 5322 message, CRLF line endings
  std::chrono::milliseconds timeout{10000};
};

/// How a transfer ended, as libcurl and the receiver said it.
struct transfer_reply {
  bool completed = false;  ///< libcurl finished it (false: the backstop stopped it)
  CURLcode result = CURLE_OK;
  long code = 0;                 ///< HTTP status or last SMTP reply code, 0 when none
  long os_errno = 0;             ///< errno of a failed connect
  std::string error;             ///< libcurl's message when result != CURLE_OK
  std::string body;              ///< the first kept_body bytes of the response body (HTTP)
  bool body_overflow = false;    ///< the body passed read_body: the transfer was stopped
  bool header_overflow = false;  ///< a header block passed header_bytes: stopped
  std::optional<std::chrono::milliseconds> retry_after;  ///< Retry-After (HTTP), capped
  std::string last_line;  ///< the last reply line from the server (SMTP), one line, bounded
};

/// Runs one transfer at a time.
class curl_sender {
 public:
  explicit curl_sender(asio::io_context& io);
  ~curl_sender();  ///< cancels a transfer in flight without calling its callback
  curl_sender(const curl_sender&) = delete;
  curl_sender& operator=(const curl_sender&) = delete;

  /// Start `r`; `done` runs once on the loop, never inside this call, unless the transfer is
  /// cancelled (cancel() or destruction) first. Starting while busy cancels the previous one.
  void start(const http_request& r, std::function<void(transfer_reply)> done);
  /// Start `r`, like the HTTP overload.
  void start(const smtp_request& r, std::function<void(transfer_reply)> done);
  /// Stop the transfer in flight, if any, without calling its callback.
  void cancel();
  bool busy() const { return current_ != nullptr; }

  struct call;

 private:
  void launch(std::shared_ptr<call> c, std::chrono::milliseconds timeout);
  void finish(const std::shared_ptr<call>& c);
  void fail_soon(std::shared_ptr<call> c, std::string why);

  asio::io_context& io_;
  std::shared_ptr<call> current_;
};

/// The outcome of an HTTP reply: 2xx delivered; 408, 429, 5xx, transport errors and timeouts
/// retry (with retry_after from Retry-After on 429 and 503); a redirect that was not followed
/// and other 4xx are rejected. `detail` is "HTTP 503: <first KiB of the body on one line>",
/// "connection refused", "timed out after 10s"... (not yet redacted).
delivery_result judge_http(const transfer_reply& r, std::chrono::milliseconds timeout);

/// "timed out after 10s".
std::string timed_out_text(std::chrono::milliseconds timeout);

/// `text` with each of `secrets` (non-empty ones) replaced by "<redacted>".
std::string redact(std::string text, const std::vector<std::string>& secrets);

}  // namespace sonde::engine::alarms
