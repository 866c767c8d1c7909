// The `email` notifier: the message from email.hpp, submitted over SMTP by libcurl on the
// loop (STARTTLS required unless tls = "none"; smtps:// is TLS from the first byte).
#include <asio/post.hpp>

#include "alarms/event_text.hpp"
#include "alarms/notifier_configs.hpp"
#include "alarms/transfer.hpp"

namespace sonde::engine::alarms {

namespace {

using outcome = delivery_result::outcome;
using done_fn = std::function<void(delivery_result)>;

/// A short tag that tells messages of different engines on one host apart, the same for every
/// attempt of one message: FNV-1a over what identifies the message.
std::string message_tag(const notification& n) {
  std::uint64_t h = 1469598103934665603ull;
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
    h ^= 0xff;
    h *= 1099511628211ull;
  };
  mix(n.notifier);
  for (const auto& e : n.events) {
    mix(event_string(e, "alarm_id"));
    mix(event_string(e, "time"));
    mix(event_string(e, "state"));
  }
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

/// SMTP outcome: 2xx delivered; 5xx replies and refused credentials rejected (the server said
/// no to this message or these credentials); 4xx replies, transport errors, TLS failures and
/// timeouts retry.
delivery_result judge_smtp(const transfer_reply& r, std::chrono::milliseconds timeout) {
  delivery_result out;
  out.what = outcome::retry;
  if (!r.completed) {
    out.detail = timed_out_text(timeout);
    return out;
  }
  const std::string reply = r.last_line.empty() ? std::string() : ": " + r.last_line;
  // "SMTP 550 5.1.1 <x@example.com>: Recipient address rejected", or "SMTP 550" alone.
  auto smtp_detail = [&r](long code) {
    const std::string c = std::to_string(code);
    if (r.last_line.starts_with(c)) return "SMTP " + r.last_line;
    return r.last_line.empty() ? "SMTP " + c : "SMTP " + c + ": " + r.last_line;
  };
  if (r.result == CURLE_OK) {
    out.what = outcome::delivered;
    out.detail = r.last_line.empty() ? std::string("SMTP 250") : "SMTP " + r.last_line;
    return out;
  }
  switch (r.result) {
    case CURLE_LOGIN_DENIED:
      out.what = outcome::rejected;
      out.detail = "authentication refused" + reply;
      return out;
    case CURLE_USE_SSL_FAILED:
      out.detail = "the server does not offer STARTTLS, which tls = \"starttls\" requires";
      return out;
    case CURLE_OPERATION_TIMEDOUT:
      out.detail = timed_out_text(timeout);
      return out;
    case CURLE_COULDNT_CONNECT:
      out.detail = r.os_errno == ECONNREFUSED ? std::string("connection refused") : r.error;
      return out;
    default:
      break;
  }
  if (r.code >= 500 && r.code < 600) {
    out.what = outcome::rejected;
    out.detail = smtp_detail(r.code);
  } else if (r.code >= 400 && r.code < 500) {
    out.detail = smtp_detail(r.code);
  } else {
    out.detail = r.error.empty() ? std::string(curl_easy_strerror(r.result)) : r.error;
  }
  return out;
}

class email_notifier final : public notifier {
 public:
  /// Bounds of what one message carries.
  static constexpr std::size_t subject_budget = 1024;
  static constexpr std::size_t body_budget = 256 * 1024;

  email_notifier(asio::io_context& io, notifier_spec spec, email_config c)
      : notifier(std::move(spec)), io_(io), sender_(io), c_(std::move(c)) {}

  void send(const notification& n, done_fn done) override {
    if (sender_.busy()) {
      std::weak_ptr<bool> alive = alive_;
      asio::post(io_, [alive, done = std::move(done)] {
        if (alive.lock())
          done({outcome::retry, "busy: the previous message is still in flight", {}});
      });
      return;
    }
    const auto ctx = context_of(n, spec_.name);
    email_message m;
    m.from = c_.from;
    m.to = c_.to;
    m.subject = c_.subject.render(ctx, subject_budget);
    m.body = c_.body.render(ctx, body_budget);
    m.id = n.id;
    m.id_tag = message_tag(n);
    m.host = host_name();
    m.test = n.test;
    m.date = std::chrono::system_clock::now();

    smtp_request r;
    r.url = c_.url;
    r.require_tls = c_.require_tls;
    r.tls_verify = c_.tls_verify;
    r.ca_file = c_.ca_file;
    r.username = c_.username;
    r.password = c_.password;
    r.mail_from = c_.from.address;
    for (const auto& t : c_.to) r.recipients.push_back(t.address);
    r.message = compose_email(m);
    r.timeout = spec_.timeout;
    sender_.start(r, [this, done = std::move(done)](transfer_reply reply) {
      auto res = judge_smtp(reply, spec_.timeout);
      res.detail = redact(std::move(res.detail), {c_.password});
      done(std::move(res));
    });
  }

 private:
  asio::io_context& io_;
  curl_sender sender_;
  email_config c_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace

std::unique_ptr<notifier> make_email(asio::io_context& io, notifier_spec spec, email_config c) {
  return std::make_unique<email_notifier>(io, std::move(spec), std::move(c));
}

}  // namespace sonde::engine::alarms
