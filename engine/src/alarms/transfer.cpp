// One libcurl transfer per attempt on the loop. The call's state lives in a shared object owned
// by the sender; the loop's handlers hold weak references, so destroying the sender (or the
// notifier around it) cancels cleanly: curl forgets the handle, the timers' handlers find
// nothing and return.
#include "alarms/transfer.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <string_view>

#include <asio/post.hpp>
#include <asio/steady_timer.hpp>

#include <sonde/detail/curl_service.hpp>
#include <sonde/duration.hpp>
#include <sonde/version.hpp>

#include "alarms/event_text.hpp"

namespace sonde::engine::alarms {

using namespace std::chrono_literals;

struct curl_sender::call {
  call(asio::io_context& io, detail::curl_service& s)
      : svc(s), wake(io, asio::steady_timer::time_point::max()), backstop(io) {
    errbuf[0] = '\0';
  }
  ~call() {
    tr.waiter = nullptr;
    if (tr.easy) {
      svc.cancel(tr);
      svc.release_easy(tr.easy);
    }
    curl_slist_free_all(headers);
    curl_slist_free_all(recipients);
  }
  call(const call&) = delete;
  call& operator=(const call&) = delete;

  detail::curl_service& svc;
  detail::curl_transfer tr;
  asio::steady_timer wake, backstop;
  bool http = true;
  bool timed_out = false;
  bool early = false;   // failed before curl ran it: `reply` is already filled in
  std::string payload;  // HTTP body (curl does not copy POSTFIELDS) or the mail to upload
  std::size_t upload_pos = 0;
  curl_slist* headers = nullptr;
  curl_slist* recipients = nullptr;
  std::size_t header_bytes = 0;
  std::size_t body_bytes = 0;
  char errbuf[CURL_ERROR_SIZE];
  transfer_reply reply;
  std::function<void(transfer_reply)> done;
};

namespace {

using call = curl_sender::call;

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    if (c != prefix[i]) return false;
  }
  return true;
}

/// Retry-After: delta-seconds or an HTTP date; capped at max_retry_after, never negative.
std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() &&
         (v.back() == ' ' || v.back() == '\t' || v.back() == '\r' || v.back() == '\n'))
    v.remove_suffix(1);
  if (v.empty() || v.size() > 64) return std::nullopt;
  const auto cap = transfer_limits::max_retry_after;
  if (v.find_first_not_of("0123456789") == std::string_view::npos) {
    std::int64_t secs = 0;
    for (char c : v) {
      secs = secs * 10 + (c - '0');
      if (secs > cap.count() / 1000) return cap;
    }
    return std::chrono::milliseconds(secs * 1000);
  }
  const std::string text(v);
  const std::time_t when = curl_getdate(text.c_str(), nullptr);
  if (when < 0) return std::nullopt;
  const std::time_t now = std::time(nullptr);
  if (when <= now) return std::chrono::milliseconds(0);
  const auto delta = std::chrono::seconds(when - now);
  return delta > cap ? cap : std::chrono::duration_cast<std::chrono::milliseconds>(delta);
}

std::size_t on_header(char* p, std::size_t, std::size_t n, void* ud) {
  auto& c = *static_cast<call*>(ud);
  const std::string_view line(p, n);
  if (c.http && line.starts_with("HTTP/")) {  // a new response (redirect, 1xx)
    c.header_bytes = 0;
    c.reply.retry_after.reset();
  }
  c.header_bytes += n;
  if (c.header_bytes > transfer_limits::header_bytes) {
    c.reply.header_overflow = true;
    return 0;  // CURLE_WRITE_ERROR: stop
  }
  if (c.http) {
    constexpr std::string_view name = "retry-after:";
    if (starts_with_nocase(line, name))
      c.reply.retry_after = parse_retry_after(line.substr(name.size()));
  } else {
    // SMTP: libcurl hands every server reply line to the header callback. The reply to QUIT
    // (221) says nothing about the message: keep the one before it.
    if (auto l = one_line(line, 300); !l.empty() && !l.starts_with("221"))
      c.reply.last_line = std::move(l);
  }
  return n;
}

std::size_t on_body(char* p, std::size_t, std::size_t n, void* ud) {
  auto& c = *static_cast<call*>(ud);
  if (c.reply.body.size() < transfer_limits::kept_body)
    c.reply.body.append(p, std::min(n, transfer_limits::kept_body - c.reply.body.size()));
  c.body_bytes += n;
  if (c.body_bytes > transfer_limits::read_body) {
    c.reply.body_overflow = true;
    return 0;  // enough: the status line is what counts
  }
  return n;
}

std::size_t on_read(char* buf, std::size_t size, std::size_t nitems, void* ud) {
  auto& c = *static_cast<call*>(ud);
  const std::size_t room = size * nitems;
  const std::size_t n = std::min(room, c.payload.size() - c.upload_pos);
  std::memcpy(buf, c.payload.data() + c.upload_pos, n);
  c.upload_pos += n;
  return n;
}

/// Sockets close-on-exec: an `exec` notifier's child must not inherit them.
curl_socket_t on_open_socket(void*, curlsocktype, curl_sockaddr* a) {
  return ::socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

void common_options(call& c, const std::string& url, std::chrono::milliseconds timeout,
                    bool tls_verify, const std::string& ca_file) {
  CURL* e = c.tr.easy;
  curl_easy_setopt(e, CURLOPT_URL, url.c_str());
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
  curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c.errbuf);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, &on_open_socket);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, &c);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &c);
  curl_easy_setopt(e, CURLOPT_PROXY, "");  // environment proxies are not used
  const long ms = static_cast<long>(timeout.count() < 1 ? 1 : timeout.count());
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, ms);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ms);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, tls_verify ? 1L : 0L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, tls_verify ? 2L : 0L);
  if (!ca_file.empty()) curl_easy_setopt(e, CURLOPT_CAINFO, ca_file.c_str());
}

}  // namespace

curl_sender::curl_sender(asio::io_context& io) : io_(io) {}

curl_sender::~curl_sender() {
  cancel();
}

void curl_sender::cancel() {
  current_.reset();
}

void curl_sender::start(const http_request& r, std::function<void(transfer_reply)> done) {
  cancel();
  auto& svc = asio::use_service<detail::curl_service>(io_);
  auto c = std::make_shared<call>(io_, svc);
  c->done = std::move(done);
  current_ = c;
  if (!svc.ok()) return fail_soon(c, "curl_multi_init failed");
  c->tr.easy = svc.acquire_easy();
  if (!c->tr.easy) return fail_soon(c, "curl_easy_init failed");
  common_options(*c, r.url, r.timeout, r.tls_verify, r.ca_file);
  CURL* e = c->tr.easy;
  const bool tls = r.url.starts_with("https:");
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, tls ? "https" : "http");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, tls ? "https" : "http");
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, transfer_limits::max_redirects);
  curl_easy_setopt(e, CURLOPT_POSTREDIR,
                   static_cast<long>(CURL_REDIR_POST_301 | CURL_REDIR_POST_302));
  curl_easy_setopt(e, CURLOPT_USERAGENT, "sonde/" SONDE_VERSION_STRING);
  c->payload = r.body;
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(c->payload.size()));
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->payload.data());
  if (r.method != "POST") curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r.method.c_str());
  for (const auto& h : r.headers) c->headers = curl_slist_append(c->headers, h.c_str());
  c->headers = curl_slist_append(
      c->headers, ("X-Sonde-Notification: " + std::to_string(r.notification_id)).c_str());
  c->headers = curl_slist_append(c->headers, "Expect:");  // no 100-continue round trip
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
  if (!r.username.empty()) {
    curl_easy_setopt(e, CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BASIC));
    curl_easy_setopt(e, CURLOPT_USERNAME, r.username.c_str());
    curl_easy_setopt(e, CURLOPT_PASSWORD, r.password.c_str());
  }
  launch(std::move(c), r.timeout);
}

void curl_sender::start(const smtp_request& r, std::function<void(transfer_reply)> done) {
  cancel();
  auto& svc = asio::use_service<detail::curl_service>(io_);
  auto c = std::make_shared<call>(io_, svc);
  c->done = std::move(done);
  c->http = false;
  current_ = c;
  if (!svc.ok()) return fail_soon(c, "curl_multi_init failed");
  c->tr.easy = svc.acquire_easy();
  if (!c->tr.easy) return fail_soon(c, "curl_easy_init failed");
  common_options(*c, r.url, r.timeout, r.tls_verify, r.ca_file);
  CURL* e = c->tr.easy;
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
  curl_easy_setopt(e, CURLOPT_USE_SSL,
                   static_cast<long>(r.require_tls ? CURLUSESSL_ALL : CURLUSESSL_NONE));
  if (!r.username.empty()) {
    curl_easy_setopt(e, CURLOPT_USERNAME, r.username.c_str());
    curl_easy_setopt(e, CURLOPT_PASSWORD, r.password.c_str());
  }
  const std::string from = "<" + r.mail_from + ">";
  curl_easy_setopt(e, CURLOPT_MAIL_FROM, from.c_str());
  for (const auto& to : r.recipients)
    c->recipients = curl_slist_append(c->recipients, ("<" + to + ">").c_str());
  curl_easy_setopt(e, CURLOPT_MAIL_RCPT, c->recipients);
  c->payload = r.message;
  curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(e, CURLOPT_READFUNCTION, &on_read);
  curl_easy_setopt(e, CURLOPT_READDATA, c.get());
  curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(c->payload.size()));
  launch(std::move(c), r.timeout);
}

void curl_sender::fail_soon(std::shared_ptr<call> c, std::string why) {
  std::weak_ptr<call> w = c;
  c->early = true;
  c->reply.completed = true;
  c->reply.result = CURLE_FAILED_INIT;
  c->reply.error = std::move(why);
  asio::post(io_, [this, w] {
    if (auto self = w.lock()) finish(self);
  });
}

void curl_sender::launch(std::shared_ptr<call> c, std::chrono::milliseconds timeout) {
  c->tr.waiter = &c->wake;
  if (c->svc.start(c->tr) != CURLM_OK) return fail_soon(c, "curl refused the transfer");
  std::weak_ptr<call> w = c;
  // The service cancels `wake` when curl reports completion; the backstop cancels it when
  // curl's own timeout did not fire in time.
  c->wake.async_wait([this, w](asio::error_code) {
    if (auto self = w.lock()) finish(self);
  });
  c->backstop.expires_after(timeout + transfer_limits::backstop);
  c->backstop.async_wait([w](asio::error_code ec) {
    if (ec) return;
    if (auto self = w.lock()) {
      self->timed_out = true;
      self->svc.cancel(self->tr);
      self->wake.cancel();
    }
  });
}

void curl_sender::finish(const std::shared_ptr<call>& c) {
  if (!c->done) return;  // finished already
  c->backstop.cancel();
  auto& reply = c->reply;
  if (c->tr.easy && !c->early) {
    reply.completed = c->tr.done && !c->timed_out;
    reply.result = c->tr.result;
    curl_easy_getinfo(c->tr.easy, CURLINFO_RESPONSE_CODE, &reply.code);
    curl_easy_getinfo(c->tr.easy, CURLINFO_OS_ERRNO, &reply.os_errno);
    if (reply.completed && reply.result != CURLE_OK)
      reply.error = one_line(c->errbuf[0] ? c->errbuf : curl_easy_strerror(reply.result), 300);
  }
  if (c->tr.easy) {
    c->tr.waiter = nullptr;
    c->svc.cancel(c->tr);
    c->svc.release_easy(c->tr.easy);
    c->tr.easy = nullptr;
  }
  auto done = std::move(c->done);
  c->done = nullptr;
  if (current_ == c) current_.reset();
  done(std::move(reply));  // may destroy this sender: touch nothing after
}

std::string timed_out_text(std::chrono::milliseconds timeout) {
  return "timed out after " + format_duration(timeout);
}

delivery_result judge_http(const transfer_reply& r, std::chrono::milliseconds timeout) {
  using outcome = delivery_result::outcome;
  delivery_result out;
  out.what = outcome::retry;
  if (!r.completed) {
    out.detail = timed_out_text(timeout);
    return out;
  }
  const std::string status = "HTTP " + std::to_string(r.code);
  // A body larger than we read still came with its status: judge that.
  const bool failed = r.result != CURLE_OK && !(r.body_overflow && r.code > 0);
  if (failed) {
    if (r.header_overflow) {
      out.detail =
          "response header larger than " + std::to_string(transfer_limits::header_bytes) + " bytes";
    } else if (r.code >= 300 && r.code < 400) {
      out.what = outcome::rejected;
      out.detail = status + ": redirect not followed (" + r.error + ")";
    } else if (r.result == CURLE_OPERATION_TIMEDOUT) {
      out.detail = timed_out_text(timeout);
    } else if (r.result == CURLE_COULDNT_CONNECT && r.os_errno == ECONNREFUSED) {
      out.detail = "connection refused";
    } else {
      out.detail = r.error.empty() ? std::string(curl_easy_strerror(r.result)) : r.error;
    }
    return out;
  }
  const long code = r.code;
  const std::string excerpt = one_line(
      std::string_view(r.body).substr(0, utf8_prefix(r.body, transfer_limits::detail_body)),
      transfer_limits::detail_body);
  out.detail = excerpt.empty() ? status : status + ": " + excerpt;
  if (code >= 200 && code < 300) {
    out.what = outcome::delivered;
  } else if (code == 408 || code == 429 || (code >= 500 && code < 600)) {
    out.what = outcome::retry;
    if (code == 429 || code == 503) out.retry_after = r.retry_after;
  } else if (code >= 300 && code < 500) {
    out.what = outcome::rejected;
  } else {
    out.what = outcome::retry;  // no status, or one outside HTTP's range
  }
  return out;
}

std::string redact(std::string text, const std::vector<std::string>& secrets) {
  for (const auto& s : secrets) {
    if (s.empty()) continue;
    for (std::size_t p = text.find(s); p != std::string::npos; p = text.find(s, p + 10))
      text.replace(p, s.size(), "<redacted>");
  }
  return text;
}

}  // namespace sonde::engine::alarms
