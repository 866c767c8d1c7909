// The notifiers against real receivers on loopback: in-test HTTP servers that record what they
// get and answer what the test says (webhook, slack, ntfy, telegram, pagerduty), a real SMTP
// server (aiosmtpd) with STARTTLS and AUTH required, and real child processes for `exec`.
// Every test drives the io_context on its own thread and asserts on the payload received.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include <asio/io_context.hpp>

#include <sonde/version.hpp>

#include "alarms/notifier.hpp"

#include "support/alarm_events.hpp"
#include "support/files.hpp"
#include "support/recording_http.hpp"
#include "support/smtp_server.hpp"
#include "support/tls_certs.hpp"

using namespace sonde::engine::alarms;
using namespace std::chrono_literals;
using json = nlohmann::json;
using outcome = delivery_result::outcome;
using sonde::test::alarm_event;
using sonde::test::canned_reply;
using sonde::test::recording_server;

namespace {

const char* outcome_name(outcome o) {
  switch (o) {
    case outcome::delivered:
      return "delivered";
    case outcome::retry:
      return "retry";
    case outcome::rejected:
      return "rejected";
  }
  return "?";
}

/// Makes notifiers on one io_context and runs deliveries to completion on this thread.
struct harness {
  asio::io_context io;

  std::unique_ptr<notifier> make(const std::string& type, json options,
                                 std::chrono::milliseconds timeout = 5s,
                                 const std::string& name = "ops") {
    notifier_spec spec{name, type, std::move(options), timeout};
    auto n = make_notifier(io, spec);
    if (!n) FAIL("make_notifier: " << n.error().message);
    return std::move(*n);
  }

  /// Send `msg` and run the loop until `done` ran; checks it ran once and not inside send().
  delivery_result deliver(notifier& n, const notification& msg, std::chrono::seconds limit = 30s) {
    int calls = 0;
    std::optional<delivery_result> out;
    n.send(msg, [&](delivery_result r) {
      ++calls;
      out = std::move(r);
    });
    REQUIRE(calls == 0);  // never inside send
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!out && std::chrono::steady_clock::now() < end) {
      if (io.stopped()) io.restart();
      io.run_one_for(50ms);
    }
    REQUIRE(out.has_value());
    // Let anything else queued run: done must not come twice.
    if (io.stopped()) io.restart();
    io.run_for(20ms);
    CHECK(calls == 1);
    INFO("outcome " << outcome_name(out->what) << ": " << out->detail);
    return *out;
  }
};

notification message(std::vector<json> events, std::uint64_t id = 7) {
  notification n;
  n.id = id;
  n.notifier = "ops";
  n.events = std::move(events);
  return n;
}

json firing_web() {
  return alarm_event("web", "firing", "pending", "critical");
}
json resolved_web() {
  return alarm_event("web", "ok", "firing", "", "HTTP 200");
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Check the headers every HTTP notifier sends.
void check_common_headers(const sonde::test::recorded_request& r, std::uint64_t id) {
  CHECK(r.header("X-Sonde-Notification") == std::to_string(id));
  CHECK(r.header("User-Agent") == std::string("sonde/") + sonde::version_string);
}

std::string validation_error(const std::string& type, json options) {
  notifier_spec spec{"n", type, std::move(options), 10s};
  auto r = validate_notifier(spec);
  if (r) FAIL("validated, expected an error: " << spec.options.dump());
  return r.error().message;
}

}  // namespace

// ---- types and validation --------------------------------------------------------------------

TEST_CASE("notifiers: types, option tables and validation errors that name the key", "[notifier]") {
  CHECK(notifier_types() == std::vector<std::string>{"webhook", "slack", "email", "ntfy",
                                                     "telegram", "pagerduty", "exec"});
  for (const auto& t : notifier_types()) {
    INFO(t);
    CHECK(!notifier_options(t).empty());
    for (const auto& o : notifier_options(t)) CHECK(!o.help.empty());
  }
  CHECK(notifier_options("carrier-pigeon").empty());

  CHECK(validation_error("webhok", {{"url", "http://127.0.0.1/"}}) ==
        "type: \"webhok\" is not a notifier type (did you mean 'webhook'?); types: webhook, "
        "slack, email, ntfy, telegram, pagerduty, exec");
  CHECK(validation_error("webhook", json::object()).starts_with("url: missing ("));
  CHECK(validation_error("webhook", {{"url", "ftp://127.0.0.1/"}}) ==
        "url: \"ftp://127.0.0.1/\" is not an http:// or https:// URL");
  CHECK(validation_error("webhook", {{"url", "http://u:p@127.0.0.1/"}}).find("credentials") !=
        std::string::npos);
  CHECK(validation_error("webhook", {{"url", "http://127.0.0.1/"}, {"method", "GET"}}) ==
        "method: \"GET\" is not one of POST, PUT, PATCH");
  CHECK(validation_error("webhook", {{"url", "http://127.0.0.1/"}, {"urll", "x"}}) ==
        "urll: unknown option for a webhook notifier (did you mean 'url'?)");
  CHECK(validation_error("webhook", {{"url", "http://127.0.0.1/"}, {"tls_verify", "yes"}}) ==
        "tls_verify: expected true or false");
  CHECK(validation_error("webhook", {{"url", "http://127.0.0.1/"}, {"body", "{taks}"}}) ==
        "body: unknown name 'taks' at column 2 (did you mean 'task'?)");
  CHECK(validation_error("webhook", {{"url", "http://127.0.0.1/"},
                                     {"headers", {{"X-A", "1\r\nX-Injected: 1"}}}}) ==
        "headers.X-A: must be printable ASCII on one line (no control characters)");
  CHECK(validation_error("webhook",
                         {{"url", "http://127.0.0.1/"}, {"headers", {{"content-type", "x"}}}}) ==
        "headers: set Content-Type with the 'content_type' option");
  CHECK(validation_error("slack", {{"url", "http://127.0.0.1/"}, {"text", "{summary"}}) ==
        "text: unclosed '{' at column 1 (write '{{' for a literal '{')");
  CHECK(validation_error("email",
                         {{"url", "http://127.0.0.1/"}, {"from", "a@b.c"}, {"to", {"d@e.f"}}})
            .starts_with("url: \"http://127.0.0.1/\" is not a usable SMTP URL"));
  CHECK(validation_error("email", {{"url", "smtp://127.0.0.1"},
                                   {"from", "a@b.c"},
                                   {"to", {"d@e.f"}},
                                   {"tls", "none"},
                                   {"username", "u"},
                                   {"password", "p"}}) ==
        "tls: \"none\" would send the password in clear: use starttls or smtps://");
  CHECK(
      validation_error(
          "email",
          {{"url", "smtps://127.0.0.1"}, {"from", "a@b.c"}, {"to", {"d@e.f"}}, {"tls", "none"}}) ==
      "tls: \"none\" contradicts the smtps:// URL, which is always TLS");
  CHECK(validation_error("email",
                         {{"url", "smtp://127.0.0.1"}, {"from", "a@b.c"}, {"to", json::array()}}) ==
        "to: no recipient (give a list of addresses)");
  CHECK(
      validation_error("email", {{"url", "smtp://127.0.0.1"}, {"from", "nobody"}, {"to", "d@e.f"}})
          .starts_with("from: \"nobody\" is not an e-mail address"));
  CHECK(validation_error("ntfy", {{"url", "http://127.0.0.1:8080/"}}).starts_with("url: no topic"));
  CHECK(validation_error("ntfy", {{"url", "http://127.0.0.1/t"}, {"priority", "loud"}}) ==
        "priority: \"loud\" is not 1-5, min, low, default, high, urgent or max");
  // A bad token is refused without being echoed.
  const auto tok =
      validation_error("telegram", {{"bot_token", "12345:secret/../x"}, {"chat_id", "1"}});
  CHECK(tok.starts_with("bot_token: not a bot token"));
  CHECK(tok.find("secret") == std::string::npos);
  CHECK(validation_error("telegram", {{"bot_token", "1:a"}, {"chat_id", "me"}})
            .starts_with("chat_id: \"me\""));
  CHECK(validation_error("telegram", {{"chat_id", "1"}}).starts_with("bot_token: missing"));
  CHECK(validation_error("pagerduty", {{"routing_key", "has space"}})
            .starts_with("routing_key: not"));
  CHECK(validation_error("exec", {{"command", json::array()}}).starts_with("command: empty"));
  CHECK(validation_error("exec", {{"command", {"./run.sh"}}}).find("relative path") !=
        std::string::npos);
  CHECK(validation_error("exec", {{"command", {"/bin/true"}}, {"env", {{"1X", "v"}}}})
            .starts_with("env: \"1X\" is not a variable name"));
  CHECK(validation_error("exec", {{"command", {std::string("/bin/tr\0ue", 10)}}}) ==
        "command: contains a NUL byte");

  // Good specs validate, and the dispatcher's common keys are tolerated.
  for (auto [type, opts] : std::vector<std::pair<std::string, json>>{
           {"webhook", {{"url", "https://hooks.example.com/x"}, {"group_wait", "10s"}}},
           {"slack", {{"url", "https://hooks.example.com/x"}, {"text", "{headline}"}}},
           {"email",
            {{"url", "smtps://mail.example.com"},
             {"from", "Sonde <s@example.com>"},
             {"to", "o@example.com"}}},
           {"ntfy",
            {{"url", "https://ntfy.sh/alerts"}, {"priority", "high"}, {"tags", {"warning"}}}},
           {"telegram", {{"bot_token", "123456:ABC-DEF_ghi"}, {"chat_id", "-1001234567890"}}},
           {"pagerduty", {{"routing_key", "0123456789abcdef0123456789abcdef"}}},
           {"exec", {{"command", {"logger", "-t", "sonde"}}, {"env", {{"TEAM", "ops"}}}}}}) {
    INFO(type);
    CHECK(validate_notifier({"n", type, opts, 10s}).has_value());
  }
}

// ---- webhook ---------------------------------------------------------------------------------

TEST_CASE("notifiers: webhook posts the event as JSON, or {\"events\": [...]} for a group",
          "[notifier]") {
  recording_server server;
  harness h;
  auto n = h.make("webhook", {{"url", server.url("/hook?x=1")}});

  auto r = h.deliver(*n, message({firing_web()}, 11));
  CHECK(r.what == outcome::delivered);
  CHECK(r.detail == "HTTP 200: ok");
  const auto group = std::vector<json>{
      firing_web(), alarm_event("dns", "firing", "pending", "warning"), resolved_web()};
  r = h.deliver(*n, message(group, 12));
  CHECK(r.what == outcome::delivered);

  const auto reqs = server.requests();
  REQUIRE(reqs.size() == 2);
  CHECK(reqs[0].method == "POST");
  CHECK(reqs[0].target == "/hook?x=1");
  CHECK(reqs[0].header("Content-Type") == "application/json");
  check_common_headers(reqs[0], 11);
  CHECK(json::parse(reqs[0].body) == firing_web());
  check_common_headers(reqs[1], 12);
  CHECK(json::parse(reqs[1].body) == json{{"events", group}});
}

TEST_CASE("notifiers: webhook with a method, custom headers and a templated body", "[notifier]") {
  recording_server server;
  harness h;
  auto n = h.make("webhook",
                  {{"url", server.url("/put")},
                   {"method", "put"},
                   {"headers", {{"Authorization", "Bearer s3cr3t-token"}, {"X-Team", "ops"}}},
                   {"content_type", "text/plain; charset=utf-8"},
                   {"body", "{{\"alert\": \"{headline|json}\", \"n\": {count}, \"id\": {id}}}"}});
  auto msg = message({alarm_event("web", "firing", "pending", "critical", "said \"no\"\n")}, 99);
  msg.test = true;
  server.reply_with({401, "invalid token s3cr3t-token"});
  auto r = h.deliver(*n, msg);
  CHECK(r.what == outcome::rejected);
  CHECK(r.detail == "HTTP 401: invalid token <redacted>");  // the secret header never shows
  server.reply_with({204, ""});
  r = h.deliver(*n, msg);
  CHECK(r.what == outcome::delivered);
  CHECK(r.detail == "HTTP 204");
  const auto req = server.requests().back();
  CHECK(req.method == "PUT");
  CHECK(req.header("Authorization") == "Bearer s3cr3t-token");
  CHECK(req.header("X-Team") == "ops");
  CHECK(req.header("X-Sonde-Test") == "true");
  CHECK(req.header("Content-Type") == "text/plain; charset=utf-8");
  CHECK(json::parse(req.body) == json{{"alert", "FIRING critical: web"}, {"n", 1}, {"id", 99}});
}

// ---- outcomes ----------------------------------------------------------------------------------

TEST_CASE("notifiers: outcomes of HTTP replies, refusals and stalls", "[notifier]") {
  recording_server server;
  harness h;
  auto n = h.make("webhook", {{"url", server.url("/")}}, 1s);
  const auto msg = message({firing_web()});

  SECTION("503 with Retry-After retries after that delay") {
    server.reply_with({503, "down for maintenance", {{"Retry-After", "120"}}});
    auto r = h.deliver(*n, msg);
    CHECK(r.what == outcome::retry);
    CHECK(r.detail == "HTTP 503: down for maintenance");
    REQUIRE(r.retry_after.has_value());
    CHECK(*r.retry_after == 120s);
  }
  SECTION("429 with an absurd Retry-After is capped at an hour; 500 and 408 retry") {
    server.queue(
        {{429, "slow down", {{"Retry-After", "99999999999999999999"}}}, {500, "oops"}, {408, ""}});
    auto r = h.deliver(*n, msg);
    CHECK(r.what == outcome::retry);
    CHECK(r.retry_after == std::optional<std::chrono::milliseconds>(1h));
    r = h.deliver(*n, msg);
    CHECK((r.what == outcome::retry && r.detail == "HTTP 500: oops" && !r.retry_after));
    r = h.deliver(*n, msg);
    CHECK((r.what == outcome::retry && r.detail == "HTTP 408"));
  }
  SECTION("400 and 404 are rejected with the start of the body") {
    server.queue({{400, "{\"error\": \"bad\npayload\"}"}, {404, std::string(5000, 'n')}});
    auto r = h.deliver(*n, msg);
    CHECK(r.what == outcome::rejected);
    CHECK(r.detail == "HTTP 400: {\"error\": \"bad payload\"}");
    r = h.deliver(*n, msg);
    CHECK(r.what == outcome::rejected);
    CHECK(r.detail.size() <= 1024 + 10);
  }
  SECTION("a huge body from the receiver is not read to the end") {
    server.reply_with({200, std::string(64 * 1024, 'y'), {}, false, 64});  // 4 MiB
    auto r = h.deliver(*n, msg);
    CHECK(r.what == outcome::delivered);
    CHECK(r.detail.size() <= 1024 + 10);
  }
  SECTION("a redirect into another scheme is not followed") {
    server.reply_with({301, "", {{"Location", "ftp://127.0.0.1/x"}}});
    auto r = h.deliver(*n, msg);
    CHECK(r.what == outcome::rejected);
    CHECK(
        r.detail ==
        "HTTP 301: redirect not followed (Protocol \"ftp\" not supported or disabled in libcurl)");
  }
  SECTION("a stalled receiver retries after the timeout") {
    server.reply_with({200, "", {}, true});
    const auto t0 = std::chrono::steady_clock::now();
    auto r = h.deliver(*n, msg);
    const auto took = std::chrono::steady_clock::now() - t0;
    CHECK(r.what == outcome::retry);
    CHECK(r.detail == "timed out after 1s");
    CHECK(took >= 900ms);
    CHECK(took < 3500ms);
  }
  CHECK(server.count() >= 1);
}

TEST_CASE("notifiers: connection refused retries, destroying a notifier cancels silently",
          "[notifier]") {
  harness h;
  unsigned short closed = 0;
  {
    const int fd = sonde::test::listen_on_loopback(closed, "closed port");
    ::close(fd);
  }
  auto n = h.make("webhook", {{"url", "http://127.0.0.1:" + std::to_string(closed) + "/"}});
  auto r = h.deliver(*n, message({firing_web()}));
  CHECK(r.what == outcome::retry);
  CHECK(r.detail == "connection refused");

  recording_server server;
  server.reply_with({200, "", {}, true});
  auto stalled = h.make("webhook", {{"url", server.url("/")}}, 2s);
  bool called = false;
  stalled->send(message({firing_web()}), [&](delivery_result) { called = true; });
  REQUIRE(sonde::test::wait_until([&] {
    if (h.io.stopped()) h.io.restart();
    h.io.poll();
    return server.count() == 1;
  }));
  stalled.reset();  // in flight
  h.io.restart();
  h.io.run_for(300ms);
  CHECK(!called);
}

// ---- slack, ntfy, telegram, pagerduty --------------------------------------------------------

TEST_CASE("notifiers: slack posts text and the optional fields", "[notifier]") {
  recording_server server;
  harness h;
  auto n = h.make("slack", {{"url", server.url("/services/T0/B0/XXXX")},
                            {"username", "sonde"},
                            {"channel", "#ops"},
                            {"icon_emoji", ":rotating_light:"}});
  auto r = h.deliver(*n, message({firing_web(), resolved_web()}, 5));
  CHECK(r.what == outcome::delivered);
  auto plain = h.make("slack", {{"url", server.url("/plain")}, {"text", "*{headline}*"}});
  CHECK(h.deliver(*plain, message({firing_web()}, 6)).what == outcome::delivered);

  const auto reqs = server.requests();
  REQUIRE(reqs.size() == 2);
  check_common_headers(reqs[0], 5);
  CHECK(reqs[0].target == "/services/T0/B0/XXXX");
  CHECK(reqs[0].header("Content-Type") == "application/json");
  CHECK(json::parse(reqs[0].body) ==
        json{{"text",
              "FIRING critical web (http http://127.0.0.1/): connection refused\n"
              "RESOLVED web (http http://127.0.0.1/): HTTP 200"},
             {"username", "sonde"},
             {"channel", "#ops"},
             {"icon_emoji", ":rotating_light:"}});
  CHECK(json::parse(reqs[1].body) == json{{"text", "*FIRING critical: web*"}});
}

TEST_CASE("notifiers: ntfy publishes with Title, Priority and Tags headers", "[notifier]") {
  recording_server server;
  harness h;
  auto n = h.make("ntfy", {{"url", server.url("/alerts")},
                           {"token", "tk_abcdef123456"},
                           {"tags", {"warning", "sonde"}}});
  CHECK(h.deliver(*n, message({firing_web()}, 1)).what == outcome::delivered);
  CHECK(h.deliver(*n, message({resolved_web()}, 2)).what == outcome::delivered);
  CHECK(h.deliver(*n, message({alarm_event("dns", "firing", "pending", "warning")}, 3)).what ==
        outcome::delivered);
  auto custom = h.make("ntfy", {{"url", server.url("/alerts")},
                                {"username", "alice"},
                                {"password", "wonderland"},
                                {"priority", "min"},
                                {"title", "Alarme {task} \xe2\x80\x94 \xc3\xa9tat {state}"},
                                {"message", "{count} event(s): {message}"}});
  CHECK(h.deliver(*custom, message({firing_web()}, 4)).what == outcome::delivered);

  const auto reqs = server.requests();
  REQUIRE(reqs.size() == 4);
  CHECK(reqs[0].method == "POST");
  CHECK(reqs[0].target == "/alerts");
  check_common_headers(reqs[0], 1);
  CHECK(reqs[0].header("Title") == "FIRING critical: web");
  CHECK(reqs[0].header("Priority") == "5");
  CHECK(reqs[0].header("Tags") == "warning,sonde");
  CHECK(reqs[0].header("Authorization") == "Bearer tk_abcdef123456");
  CHECK(reqs[0].body == "FIRING critical web (http http://127.0.0.1/): connection refused");
  CHECK(reqs[1].header("Title") == "RESOLVED: web");
  CHECK(reqs[1].header("Priority") == "3");
  CHECK(reqs[2].header("Priority") == "4");
  CHECK(reqs[3].header("Priority") == "1");
  CHECK(reqs[3].header("Authorization") == "Basic YWxpY2U6d29uZGVybGFuZA==");
  // Non-ASCII titles travel as RFC 2047 words: "Alarme web — état firing"
  CHECK(reqs[3].header("Title") == "=?UTF-8?B?QWxhcm1lIHdlYiDigJQgw6l0YXQgZmlyaW5n?=");
  CHECK(reqs[3].body == "1 event(s): connection refused");
}

TEST_CASE("notifiers: telegram sendMessage, 429 retry_after, and the token never shows",
          "[notifier]") {
  recording_server server;
  harness h;
  const std::string token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
  auto n = h.make("telegram", {{"bot_token", token},
                               {"chat_id", "-1001234567890"},
                               {"api_url", server.url("/tg/")},
                               {"parse_mode", "html"},
                               {"text", "<b>{headline|html}</b>\n{message|html}"}});
  server.queue(
      {{200, R"({"ok":true,"result":{"message_id":1}})"},
       {429,
        R"({"ok":false,"error_code":429,"description":"Too Many Requests: retry after 35","parameters":{"retry_after":35}})"},
       {400, R"({"ok":false,"error_code":400,"description":"Bad Request: chat not found for bot)" +
                 token + R"("})"}});
  auto msg = message({alarm_event("web", "firing", "pending", "critical", "a<b")}, 8);
  auto r = h.deliver(*n, msg);
  CHECK(r.what == outcome::delivered);
  r = h.deliver(*n, msg);
  CHECK(r.what == outcome::retry);
  REQUIRE(r.retry_after.has_value());
  CHECK(*r.retry_after == 35s);
  CHECK(r.detail == "HTTP 429: Too Many Requests: retry after 35");
  r = h.deliver(*n, msg);
  CHECK(r.what == outcome::rejected);
  CHECK(r.detail == "HTTP 400: Bad Request: chat not found for bot<redacted>");

  const auto reqs = server.requests();
  REQUIRE(reqs.size() == 3);
  CHECK(reqs[0].target == "/tg/bot" + token + "/sendMessage");
  check_common_headers(reqs[0], 8);
  CHECK(json::parse(reqs[0].body) == json{{"chat_id", -1001234567890},
                                          {"text", "<b>FIRING critical: web</b>\na&lt;b"},
                                          {"parse_mode", "HTML"},
                                          {"disable_web_page_preview", true}});

  // A refused connection says so without the URL (which holds the token).
  unsigned short closed = 0;
  ::close(sonde::test::listen_on_loopback(closed, "closed port"));
  auto down = h.make("telegram", {{"bot_token", token},
                                  {"chat_id", "@sonde_alerts"},
                                  {"api_url", "http://127.0.0.1:" + std::to_string(closed)}});
  r = h.deliver(*down, msg);
  CHECK(r.what == outcome::retry);
  CHECK(r.detail.find("AAHdqTcv") == std::string::npos);
  CHECK(r.detail == "connection refused");
}

TEST_CASE("notifiers: pagerduty triggers and resolves with the alarm id as dedup_key",
          "[notifier]") {
  recording_server server;
  server.reply_with(
      {202, R"({"status":"success","message":"Event processed","dedup_key":"web-17"})"});
  harness h;
  const std::string key = "R0123456789abcdef0123456789abcde";
  auto n = h.make("pagerduty",
                  {{"routing_key", key}, {"url", server.url("/v2/enqueue")}, {"source", "mon-1"}});
  auto r = h.deliver(*n, message({firing_web()}, 1));
  CHECK(r.what == outcome::delivered);
  r = h.deliver(*n, message({resolved_web()}, 2));
  CHECK(r.what == outcome::delivered);
  // A group: one POST per event, in order; pending says nothing to PagerDuty.
  r = h.deliver(
      *n, message({alarm_event("dns", "firing", "pending", "warning"),
                   alarm_event("db", "pending", "ok"), alarm_event("ntp", "flapping", "firing")},
                  3));
  CHECK(r.what == outcome::delivered);
  CHECK(r.detail.ends_with("(2 events)"));

  const auto reqs = server.requests();
  REQUIRE(reqs.size() == 4);
  const auto trigger = json::parse(reqs[0].body);
  const auto resolve = json::parse(reqs[1].body);
  check_common_headers(reqs[0], 1);
  CHECK(reqs[0].target == "/v2/enqueue");
  CHECK(trigger["routing_key"] == key);
  CHECK(trigger["event_action"] == "trigger");
  CHECK(trigger["dedup_key"] == "web-17");
  CHECK(trigger["payload"]["summary"] ==
        "FIRING critical web (http http://127.0.0.1/): connection refused");
  CHECK(trigger["payload"]["source"] == "mon-1");
  CHECK(trigger["payload"]["severity"] == "critical");
  CHECK(trigger["payload"]["timestamp"] == "2026-12-03T13:33:30.250Z");
  CHECK(trigger["payload"]["custom_details"] == firing_web());
  CHECK(resolve["event_action"] == "resolve");
  CHECK(resolve["dedup_key"] == trigger["dedup_key"]);
  CHECK(json::parse(reqs[2].body)["dedup_key"] == "dns-17");
  CHECK(json::parse(reqs[2].body)["payload"]["severity"] == "warning");
  CHECK(json::parse(reqs[3].body)["dedup_key"] == "ntp-17");
  CHECK(json::parse(reqs[3].body)["event_action"] == "trigger");
  CHECK(json::parse(reqs[3].body)["payload"]["severity"] == "info");

  // One failing event makes the whole group retry; a refused one rejects it at the end.
  server.queue({{202, "{}"}, {503, "busy"}});
  r = h.deliver(*n, message({firing_web(), alarm_event("dns", "firing", "pending", "warning"),
                             resolved_web()}));
  CHECK(r.what == outcome::retry);
  CHECK(r.detail == "event 2 of 3: HTTP 503: busy");
  CHECK(server.count() == 6);
  server.queue({{400, R"({"status":"invalid event","message":"Event object is invalid, key )" +
                          key + "\"}"}});
  r = h.deliver(*n, message({firing_web(), resolved_web()}));
  CHECK(r.what == outcome::rejected);
  CHECK(r.detail ==
        "event 1 of 2: HTTP 400: {\"status\":\"invalid event\",\"message\":\"Event "
        "object is invalid, key <redacted>\"}");
  CHECK(r.detail.find(key) == std::string::npos);
  CHECK(server.count() == 8);  // the second event was still sent
}

// ---- email -----------------------------------------------------------------------------------

TEST_CASE("notifiers: email through a real SMTP server with STARTTLS and AUTH required",
          "[notifier][email]") {
  sonde::test::smtp_server smtp(sonde::test::smtp_server::mode::starttls, "sonde", "p4ss w0rd");
  harness h;
  const auto& certs = sonde::test::tls_certs();
  json opts = {{"url", smtp.url()},
               {"from", "Sonde Alerts <sonde@example.com>"},
               {"to", {"ops@example.com", "Oncall <oncall@example.org>"}},
               {"username", "sonde"},
               {"password", "p4ss w0rd"},
               {"ca_file", certs.ca}};
  auto n = h.make("email", opts, 10s);
  const auto group = std::vector<json>{
      firing_web(), alarm_event("caf\xc3\xa9", "firing", "pending", "warning", "d\xc3\xa9lai"),
      resolved_web()};
  auto r = h.deliver(*n, message({firing_web()}, 31));
  CHECK(r.what == outcome::delivered);
  CHECK(r.detail == "SMTP 250 2.0.0 Message accepted for delivery");
  r = h.deliver(*n, message(group, 32));
  CHECK(r.what == outcome::delivered);

  const auto msgs = smtp.messages();
  REQUIRE(msgs.size() == 2);
  const auto meta = json::parse(msgs[0].second);
  CHECK(meta["tls"] == true);
  CHECK(meta["authenticated"] == true);
  CHECK(meta["mail_from"] == "sonde@example.com");
  CHECK(meta["rcpt_tos"] == json{"ops@example.com", "oncall@example.org"});
  const std::string& raw = msgs[0].first;
  CHECK(raw.find("\r\nSubject: [sonde] FIRING critical: web\r\n") != std::string::npos);
  CHECK(raw.find("From: \"Sonde Alerts\" <sonde@example.com>\r\n") != std::string::npos);
  CHECK(raw.find("\r\nTo: ops@example.com,\r\n \"Oncall\" <oncall@example.org>\r\n") !=
        std::string::npos);
  CHECK(raw.starts_with("Date: "));
  CHECK(raw.find(" +0000\r\n") != std::string::npos);
  CHECK(raw.find("\r\nMessage-ID: <sonde.31.") != std::string::npos);
  CHECK(raw.find("\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n"
                 "Content-Transfer-Encoding: quoted-printable\r\n") != std::string::npos);
  CHECK(raw.find("\r\nX-Sonde-Notification: 31\r\n") != std::string::npos);
  CHECK(raw.find("\r\n\r\nFIRING critical web (http http://127.0.0.1/): connection refused\r\n") !=
        std::string::npos);
  CHECK(raw.find("  reason:  refused") != std::string::npos);
  // Every line ends in CRLF (no bare LF).
  for (std::size_t p = raw.find('\n'); p != std::string::npos; p = raw.find('\n', p + 1))
    CHECK(raw[p - 1] == '\r');
  // The group: subject counts, non-ASCII travels encoded.
  const std::string& raw2 = msgs[1].first;
  CHECK(raw2.find("\r\nSubject: [sonde] 3 alarms: 2 firing, 1 resolved\r\n") != std::string::npos);
  CHECK(raw2.find("FIRING warning caf=C3=A9 (http http://127.0.0.1/): d=C3=A9lai") !=
        std::string::npos);
  CHECK(raw2.find("RESOLVED web") != std::string::npos);
}

TEST_CASE("notifiers: email subject encoding, refused credentials and a server without STARTTLS",
          "[notifier][email]") {
  const auto& certs = sonde::test::tls_certs();
  harness h;
  SECTION("non-ASCII subject as RFC 2047, wrong password rejected") {
    sonde::test::smtp_server smtp(sonde::test::smtp_server::mode::starttls, "sonde", "right");
    json opts = {{"url", smtp.url()},
                 {"from", "sonde@example.com"},
                 {"to", "ops@example.com"},
                 {"username", "sonde"},
                 {"password", "right"},
                 {"ca_file", certs.ca},
                 {"subject", "Alarme \xc3\xa9tat {state}"},
                 {"body", "{message}\n.\nfin"}};
    auto n = h.make("email", opts, 10s);
    CHECK(h.deliver(*n, message({firing_web()})).what == outcome::delivered);
    const auto msgs = smtp.messages();
    REQUIRE(msgs.size() == 1);
    CHECK(msgs[0].first.find("\r\nSubject: =?UTF-8?B?QWxhcm1lIMOpdGF0IGZpcmluZw==?=\r\n") !=
          std::string::npos);
    // A lone "." line survives the SMTP dot (curl stuffs it, the server unstuffs it).
    CHECK(msgs[0].first.find("\r\n\r\nconnection refused\r\n.\r\nfin\r\n") != std::string::npos);

    opts["password"] = "wrong";
    auto bad = h.make("email", opts, 10s);
    auto r = h.deliver(*bad, message({firing_web()}));
    CHECK(r.what == outcome::rejected);
    CHECK(r.detail == "authentication refused: 535 5.7.8 Authentication credentials invalid");
    CHECK(smtp.messages().size() == 1);
  }
  SECTION("starttls required but not offered: retry, nothing sent in clear") {
    sonde::test::smtp_server smtp(sonde::test::smtp_server::mode::plain);
    auto n = h.make("email",
                    {{"url", smtp.url()}, {"from", "sonde@example.com"}, {"to", "ops@example.com"}},
                    10s);
    auto r = h.deliver(*n, message({firing_web()}));
    CHECK(r.what == outcome::retry);
    CHECK(r.detail == "the server does not offer STARTTLS, which tls = \"starttls\" requires");
    CHECK(smtp.messages().empty());
    // tls = "none" is the explicit way to send in clear.
    auto clear = h.make("email",
                        {{"url", smtp.url()},
                         {"from", "sonde@example.com"},
                         {"to", "ops@example.com"},
                         {"tls", "none"}},
                        10s);
    CHECK(h.deliver(*clear, message({firing_web()})).what == outcome::delivered);
    REQUIRE(smtp.messages().size() == 1);
    CHECK(json::parse(smtp.messages()[0].second)["tls"] == false);
  }
  SECTION("a server certificate from an unknown CA is refused") {
    sonde::test::smtp_server smtp(sonde::test::smtp_server::mode::starttls);
    auto n = h.make("email",
                    {{"url", smtp.url()}, {"from", "sonde@example.com"}, {"to", "ops@example.com"}},
                    10s);
    auto r = h.deliver(*n, message({firing_web()}));
    CHECK(r.what == outcome::retry);
    CHECK(r.detail == "SSL certificate problem: unable to get local issuer certificate");
    CHECK(smtp.messages().empty());
  }
}

// ---- exec ------------------------------------------------------------------------------------

namespace {

bool process_gone(pid_t pid) {
  // Reaped (not a zombie of ours) and not running.
  return ::waitpid(pid, nullptr, WNOHANG) < 0 && ::kill(pid, 0) < 0 && errno == ESRCH;
}

}  // namespace

TEST_CASE("notifiers: exec writes the message to the program's stdin", "[notifier][exec]") {
  sonde::test::temp_dir dir;
  harness h;
  const std::string out = dir.path() + "/in.json";
  auto n = h.make(
      "exec",
      {{"command",
        {"/bin/sh", "-c", "cat > \"$1\"; env > \"$1.env\"; exec ls -l /proc/self/fd > \"$1.fds\"",
         "sh", out}},
       {"env", {{"TEAM", "ops"}}}});
  // A descriptor the engine forgot to mark close-on-exec must not reach the child either.
  const int careless = ::open("/dev/null", O_RDONLY);
  REQUIRE(careless >= 0);
  auto r = h.deliver(*n, message({firing_web()}, 21));
  ::close(careless);
  CHECK(r.what == outcome::delivered);
  CHECK(r.detail == "exit status 0");
  CHECK(json::parse(read_file(out)) == firing_web());
  const auto env = read_file(out + ".env");
  CHECK(env.find("TEAM=ops\n") != std::string::npos);
  CHECK(env.find("SONDE_NOTIFICATION_ID=21\n") != std::string::npos);
  CHECK(env.find("SONDE_NOTIFIER=ops\n") != std::string::npos);
  CHECK(env.find("HOME=") == std::string::npos);  // a minimal environment
  // Only stdin, stdout and stderr reach the child (ls itself opens /proc/self/fd as 3).
  std::istringstream fds(read_file(out + ".fds"));
  int listed = 0;
  for (std::string line; std::getline(fds, line);) {
    const auto arrow = line.find(" -> ");
    if (arrow == std::string::npos) continue;
    ++listed;
    const auto before = line.substr(0, arrow);
    const auto fd = std::stoi(before.substr(before.rfind(' ') + 1));
    INFO(line);
    if (fd == 0) CHECK(line.find("pipe:") != std::string::npos);
    if (fd == 2) CHECK(line.find("pipe:") != std::string::npos);
    if (fd > 2) CHECK(line.find("/proc/") != std::string::npos);
  }
  CHECK(listed == 4);

  const auto group = std::vector<json>{firing_web(), resolved_web()};
  CHECK(h.deliver(*n, message(group, 22)).what == outcome::delivered);
  CHECK(json::parse(read_file(out)) == json{{"events", group}});
}

TEST_CASE("notifiers: exec failures retry with stderr's last line", "[notifier][exec]") {
  harness h;
  auto fail = h.make(
      "exec",
      {{"command", {"/bin/sh", "-c", "echo first >&2; echo 'no route to pager' >&2; exit 1"}}});
  auto r = h.deliver(*fail, message({firing_web()}));
  CHECK(r.what == outcome::retry);
  CHECK(r.detail == "exit status 1: no route to pager");

  auto killed = h.make("exec", {{"command", {"/bin/sh", "-c", "kill -TERM $$"}}});
  r = h.deliver(*killed, message({firing_web()}));
  CHECK(r.what == outcome::retry);
  CHECK(r.detail == "killed by signal 15 (SIGTERM)");

  auto missing = h.make("exec", {{"command", {"/nonexistent/notify"}}});
  r = h.deliver(*missing, message({firing_web()}));
  CHECK(r.what == outcome::retry);
  CHECK(r.detail == "cannot run \"/nonexistent/notify\": No such file or directory");

  // A program that never reads stdin and floods stdout: no SIGPIPE, output bounded.
  auto noisy =
      h.make("exec", {{"command", {"/bin/sh", "-c", "head -c 3000000 /dev/zero; exit 0"}}});
  auto big = message({firing_web()});
  for (int i = 0; i < 2000; ++i) big.events.push_back(firing_web());  // ~1 MB of stdin
  r = h.deliver(*noisy, big);
  CHECK(r.what == outcome::delivered);
  // One that closes its stdin at once and lives on: the engine's writes meet EPIPE (a
  // SIGPIPE would end this test program, which does not ignore it).
  auto closer = h.make("exec", {{"command", {"/bin/sh", "-c", "exec 0<&-; sleep 0.3; exit 3"}}});
  r = h.deliver(*closer, big);
  CHECK(r.what == outcome::retry);
  CHECK(r.detail == "exit status 3");
}

TEST_CASE("notifiers: exec past its timeout is killed with its group, no zombie left",
          "[notifier][exec]") {
  sonde::test::temp_dir dir;
  harness h;
  const std::string pids = dir.path() + "/pids";
  auto n = h.make(
      "exec", {{"command", {"/bin/sh", "-c", "sleep 30 & echo $$ $! > \"$1\"; wait", "sh", pids}}},
      1s);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = h.deliver(*n, message({firing_web()}));
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(r.what == outcome::retry);
  CHECK(r.detail == "timed out after 1s");
  CHECK(took < 3s);
  pid_t shell = 0, sleeper = 0;
  std::istringstream(read_file(pids)) >> shell >> sleeper;
  REQUIRE(shell > 0);
  REQUIRE(sleeper > 0);
  CHECK(process_gone(shell));
  // The grandchild was in the group: killed too (init reaps it).
  CHECK(sonde::test::wait_until([&] { return ::kill(sleeper, 0) < 0; }, 3000ms));

  // Destroying the notifier mid-run kills and reaps the child without calling done.
  auto slow =
      h.make("exec",
             {{"command", {"/bin/sh", "-c", "echo $$ > \"$1\"; exec sleep 30", "sh", pids + "2"}}});
  bool called = false;
  slow->send(message({firing_web()}), [&](delivery_result) { called = true; });
  REQUIRE(sonde::test::wait_until([&] {
    if (h.io.stopped()) h.io.restart();
    h.io.poll();
    return !read_file(pids + "2").empty();
  }));
  pid_t child = 0;
  std::istringstream(read_file(pids + "2")) >> child;
  slow.reset();
  CHECK(process_gone(child));
  h.io.restart();
  h.io.run_for(100ms);
  CHECK(!called);
}
