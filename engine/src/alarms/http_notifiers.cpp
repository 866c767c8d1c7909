// The HTTP notifiers: webhook, slack, ntfy, telegram, pagerduty. Each renders its payload and
// hands one request at a time to a curl_sender; the outcome rules are judge_http's, with the
// receivers' own refinements (Telegram's retry_after, PagerDuty's one request per event).
#include <charconv>
#include <deque>

#include <asio/post.hpp>

#include "alarms/event_text.hpp"
#include "alarms/notifier_configs.hpp"
#include "alarms/transfer.hpp"
#include "control/control_request.hpp"

namespace sonde::engine::alarms {

namespace {

using json = nlohmann::json;
using outcome = delivery_result::outcome;
using done_fn = std::function<void(delivery_result)>;

/// What the HTTP notifiers share: the sender, the secrets kept out of `detail`, the request
/// every attempt starts from.
class http_notifier : public notifier {
 protected:
  http_notifier(asio::io_context& io, notifier_spec spec, bool tls_verify, std::string ca_file,
                std::vector<std::string> secrets)
      : notifier(std::move(spec)),
        io_(io),
        sender_(io),
        tls_verify_(tls_verify),
        ca_file_(std::move(ca_file)),
        secrets_(std::move(secrets)) {}

  http_request request(const notification& n, std::string url) const {
    http_request r;
    r.url = std::move(url);
    r.notification_id = n.id;
    r.tls_verify = tls_verify_;
    r.ca_file = ca_file_;
    r.timeout = spec_.timeout;
    if (n.test) r.headers.emplace_back("X-Sonde-Test: true");
    return r;
  }

  /// Send `r`; `judge` turns the reply into the outcome (judge_http by default); the detail is
  /// redacted before `done` sees it.
  void deliver(const http_request& r, done_fn done,
               std::function<delivery_result(const transfer_reply&)> judge = {}) {
    sender_.start(r,
                  [this, done = std::move(done), judge = std::move(judge)](transfer_reply reply) {
                    delivery_result res = judge ? judge(reply) : judge_http(reply, spec_.timeout);
                    res.detail = redact(std::move(res.detail), secrets_);
                    done(std::move(res));
                  });
  }

  /// `done(r)` from the loop, later; dropped if the notifier is destroyed first.
  void post_done(done_fn done, delivery_result r) {
    std::weak_ptr<bool> alive = alive_;
    r.detail = redact(std::move(r.detail), secrets_);
    asio::post(io_, [alive, done = std::move(done), r = std::move(r)]() mutable {
      if (alive.lock()) done(std::move(r));
    });
  }

  /// True (and `done` answered) when a message is already in flight.
  bool refuse_if_busy(done_fn& done) {
    if (!sender_.busy()) return false;
    post_done(std::move(done),
              {outcome::retry, "busy: the previous message is still in flight", {}});
    return true;
  }

  asio::io_context& io_;
  curl_sender sender_;
  bool tls_verify_;
  std::string ca_file_;
  std::vector<std::string> secrets_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// ---- webhook -------------------------------------------------------------------------------

class webhook_notifier final : public http_notifier {
 public:
  webhook_notifier(asio::io_context& io, notifier_spec spec, webhook_config c)
      : http_notifier(io, std::move(spec), c.tls_verify, c.ca_file, c.headers.secrets),
        c_(std::move(c)) {}

  void send(const notification& n, done_fn done) override {
    if (refuse_if_busy(done)) return;
    auto r = request(n, c_.url);
    r.method = c_.method;
    r.headers.insert(r.headers.end(), c_.headers.lines.begin(), c_.headers.lines.end());
    r.headers.push_back("Content-Type: " + c_.content_type);
    r.body =
        c_.body ? c_.body->render(context_of(n, spec_.name)) : json_text(message_json(n.events));
    deliver(r, std::move(done));
  }

 private:
  webhook_config c_;
};

// ---- slack ---------------------------------------------------------------------------------

class slack_notifier final : public http_notifier {
 public:
  /// Slack shows at most 40,000 characters of text.
  static constexpr std::size_t text_budget = 38000;

  slack_notifier(asio::io_context& io, notifier_spec spec, slack_config c)
      : http_notifier(io, std::move(spec), c.tls_verify, c.ca_file, {}), c_(std::move(c)) {}

  void send(const notification& n, done_fn done) override {
    if (refuse_if_busy(done)) return;
    auto r = request(n, c_.url);
    json p = {{"text", c_.text.render(context_of(n, spec_.name), text_budget)}};
    if (!c_.username.empty()) p["username"] = c_.username;
    if (!c_.channel.empty()) p["channel"] = c_.channel;
    if (!c_.icon_emoji.empty()) p["icon_emoji"] = c_.icon_emoji;
    r.headers.emplace_back("Content-Type: application/json");
    r.body = json_text(p);
    deliver(r, std::move(done));
  }

 private:
  slack_config c_;
};

// ---- ntfy ----------------------------------------------------------------------------------

/// ntfy's priority for one event: 5 critical, 4 warning or flapping, 3 otherwise.
int ntfy_priority(const json& e) {
  const auto state = event_string(e, "state");
  if (state == "firing") return event_string(e, "severity") == "critical" ? 5 : 4;
  if (state == "flapping") return 4;
  return 3;
}

class ntfy_notifier final : public http_notifier {
 public:
  /// ntfy turns a message above 4,096 bytes into an attachment.
  static constexpr std::size_t message_budget = 3500;

  ntfy_notifier(asio::io_context& io, notifier_spec spec, ntfy_config c)
      : http_notifier(io, std::move(spec), c.tls_verify, c.ca_file, {c.token, c.password}),
        c_(std::move(c)) {}

  void send(const notification& n, done_fn done) override {
    if (refuse_if_busy(done)) return;
    const auto ctx = context_of(n, spec_.name);
    auto r = request(n, c_.url);
    r.headers.push_back("Title: " + header_value(c_.title.render(ctx, 1024), 250));
    int priority = c_.priority;
    if (priority == 0) {
      priority = n.events.empty() ? 3 : 1;
      for (const auto& e : n.events) priority = std::max(priority, ntfy_priority(e));
    }
    r.headers.push_back("Priority: " + std::to_string(priority));
    if (!c_.tags.empty()) {
      std::string tags;
      for (const auto& t : c_.tags) tags += (tags.empty() ? "" : ",") + t;
      r.headers.push_back("Tags: " + tags);
    }
    if (!c_.token.empty()) r.headers.push_back("Authorization: Bearer " + c_.token);
    r.username = c_.username;
    r.password = c_.password;
    r.headers.emplace_back("Content-Type: text/plain; charset=utf-8");
    r.body = c_.message.render(ctx, message_budget);
    deliver(r, std::move(done));
  }

 private:
  ntfy_config c_;
};

// ---- telegram ------------------------------------------------------------------------------

/// Telegram's answer refines judge_http: its description in `detail`, and
/// parameters.retry_after (seconds) on 429.
delivery_result judge_telegram(const transfer_reply& reply, std::chrono::milliseconds timeout) {
  delivery_result res = judge_http(reply, timeout);
  if (!reply.completed || reply.code == 0 || reply.body.empty() || reply.body_overflow) return res;
  auto body = parse_json_untrusted(reply.body, 8);
  if (!body || !body->is_object()) return res;
  if (auto d = body->find("description");
      d != body->end() && d->is_string() && res.what != outcome::delivered)
    res.detail = "HTTP " + std::to_string(reply.code) + ": " + one_line(d->get<std::string>(), 300);
  if (reply.code == 429) {
    auto params = body->find("parameters");
    if (params != body->end() && params->is_object()) {
      auto ra = params->find("retry_after");
      if (ra != params->end() && ra->is_number() && ra->get<double>() >= 0) {
        const double secs =
            std::min(ra->get<double>(),
                     static_cast<double>(transfer_limits::max_retry_after.count()) / 1000);
        res.retry_after = std::chrono::milliseconds(static_cast<std::int64_t>(secs * 1000));
      }
    }
  }
  return res;
}

class telegram_notifier final : public http_notifier {
 public:
  /// Telegram takes at most 4,096 characters of text.
  static constexpr std::size_t text_budget = 3500;
  static constexpr std::size_t text_bytes = 4096;

  telegram_notifier(asio::io_context& io, notifier_spec spec, telegram_config c)
      : http_notifier(io, std::move(spec), true, {}, {c.bot_token}), c_(std::move(c)) {
    url_ = c_.api_url + "/bot" + c_.bot_token + "/sendMessage";
    std::int64_t id = 0;
    const auto* end = c_.chat_id.data() + c_.chat_id.size();
    auto [p, ec] = std::from_chars(c_.chat_id.data(), end, id);
    chat_id_ = ec == std::errc() && p == end ? json(id) : json(c_.chat_id);
  }

  void send(const notification& n, done_fn done) override {
    if (refuse_if_busy(done)) return;
    auto r = request(n, url_);
    std::string text = c_.text.render(context_of(n, spec_.name), text_budget);
    text.resize(utf8_prefix(text, text_bytes));
    json p = {{"chat_id", chat_id_}, {"text", text}, {"disable_web_page_preview", true}};
    if (!c_.parse_mode.empty()) p["parse_mode"] = c_.parse_mode;
    r.headers.emplace_back("Content-Type: application/json");
    r.body = json_text(p);
    const auto timeout = spec_.timeout;
    deliver(r, std::move(done),
            [timeout](const transfer_reply& reply) { return judge_telegram(reply, timeout); });
  }

 private:
  telegram_config c_;
  std::string url_;
  json chat_id_;
};

// ---- pagerduty -----------------------------------------------------------------------------

class pagerduty_notifier final : public http_notifier {
 public:
  pagerduty_notifier(asio::io_context& io, notifier_spec spec, pagerduty_config c)
      : http_notifier(io, std::move(spec), true, {}, {c.routing_key}), c_(std::move(c)) {}

  void send(const notification& n, done_fn done) override {
    if (busy_) {
      post_done(std::move(done),
                {outcome::retry, "busy: the previous message is still in flight", {}});
      return;
    }
    run_ = run{};
    run_.id = n.id;
    run_.test = n.test;
    run_.total = n.events.size();
    for (std::size_t i = 0; i < n.events.size(); ++i)
      if (auto body = event_body(n.events[i])) run_.bodies.emplace_back(i + 1, std::move(*body));
    run_.done = std::move(done);
    // The timeout bounds the whole attempt, every request of a group included.
    run_.deadline = std::chrono::steady_clock::now() + spec_.timeout;
    if (run_.bodies.empty()) {
      finish({outcome::delivered,
              "nothing for PagerDuty: no event is firing, flapping or resolved",
              {}},
             true);
      return;
    }
    busy_ = true;
    next();
  }

 private:
  struct run {
    std::uint64_t id = 0;
    bool test = false;
    std::size_t total = 0;
    std::chrono::steady_clock::time_point deadline;
    std::deque<std::pair<std::size_t, std::string>> bodies;  // (event number, JSON)
    std::size_t sent = 0;
    std::string rejected;  // the first rejection's detail
    std::string last_detail;
    done_fn done;
  };

  /// The Events API v2 body of `e`, or nullopt when its state means nothing to PagerDuty.
  std::optional<std::string> event_body(const json& e) const {
    const auto state = event_string(e, "state");
    std::string action;
    if (state == "firing" || state == "flapping")
      action = "trigger";
    else if (is_resolved(e))
      action = "resolve";
    else
      return std::nullopt;
    std::string dedup(event_string(e, "alarm_id"));
    if (dedup.empty()) dedup = event_string(e, "task");
    const auto sev = event_string(e, "severity");
    json payload = {{"summary", one_line(summary_line(e), 1024)},
                    {"source", c_.source},
                    {"severity", sev == "critical" || sev == "warning" ? std::string(sev)
                                                                       : std::string("info")},
                    {"custom_details", e}};
    if (auto t = event_string(e, "time"); !t.empty()) payload["timestamp"] = t;
    if (auto t = event_string(e, "task"); !t.empty()) payload["component"] = t;
    if (auto t = event_string(e, "type"); !t.empty()) payload["class"] = t;
    json body = {{"routing_key", c_.routing_key},
                 {"event_action", action},
                 {"dedup_key", one_line(dedup, 255)},
                 {"client", "sonde"},
                 {"payload", std::move(payload)}};
    return json_text(body);
  }

  void next() {
    if (run_.bodies.empty()) {
      if (!run_.rejected.empty()) return finish({outcome::rejected, run_.rejected, {}}, false);
      return finish(
          {outcome::delivered,
           run_.total == 1 ? run_.last_detail
                           : run_.last_detail + " (" + std::to_string(run_.sent) + " events)",
           {}},
          false);
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        run_.deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return finish({outcome::retry, timed_out_text(spec_.timeout), {}}, false);
    auto r = request(notification{run_.id, spec_.name, {}, run_.test}, c_.url);
    r.timeout = left;
    r.headers.emplace_back("Content-Type: application/json");
    r.body = std::move(run_.bodies.front().second);
    const std::size_t number = run_.bodies.front().first;
    run_.bodies.pop_front();
    deliver(r, [this, number](delivery_result res) {
      const std::string where = run_.total == 1 ? std::string()
                                                : "event " + std::to_string(number) + " of " +
                                                      std::to_string(run_.total) + ": ";
      if (res.what == outcome::retry) {
        res.detail = where + res.detail;
        return finish(std::move(res), false);
      }
      if (res.what == outcome::rejected && run_.rejected.empty())
        run_.rejected = where + res.detail;
      if (res.what == outcome::delivered) {
        ++run_.sent;
        run_.last_detail = res.detail;
      }
      next();
    });
  }

  /// Report `res` once; `later` posts it (when called from send()).
  void finish(delivery_result res, bool later) {
    busy_ = false;
    auto done = std::move(run_.done);
    run_ = run{};
    if (later) return post_done(std::move(done), std::move(res));
    done(std::move(res));
  }

  pagerduty_config c_;
  bool busy_ = false;
  run run_;
};

}  // namespace

std::unique_ptr<notifier> make_webhook(asio::io_context& io, notifier_spec spec, webhook_config c) {
  return std::make_unique<webhook_notifier>(io, std::move(spec), std::move(c));
}
std::unique_ptr<notifier> make_slack(asio::io_context& io, notifier_spec spec, slack_config c) {
  return std::make_unique<slack_notifier>(io, std::move(spec), std::move(c));
}
std::unique_ptr<notifier> make_ntfy(asio::io_context& io, notifier_spec spec, ntfy_config c) {
  return std::make_unique<ntfy_notifier>(io, std::move(spec), std::move(c));
}
std::unique_ptr<notifier> make_telegram(asio::io_context& io, notifier_spec spec,
                                        telegram_config c) {
  return std::make_unique<telegram_notifier>(io, std::move(spec), std::move(c));
}
std::unique_ptr<notifier> make_pagerduty(asio::io_context& io, notifier_spec spec,
                                         pagerduty_config c) {
  return std::make_unique<pagerduty_notifier>(io, std::move(spec), std::move(c));
}

}  // namespace sonde::engine::alarms
