// Message templates and the text of alarm events: names, filters, literal braces, groups,
// compile errors with their column, and the bounds on what one rendering produces.
#include <catch2/catch.hpp>

#include "alarms/email.hpp"
#include "alarms/event_text.hpp"
#include "alarms/template.hpp"

#include "support/alarm_events.hpp"

using namespace sonde::engine::alarms;
using json = nlohmann::json;
using sonde::test::alarm_event;

namespace {

std::string render(std::string_view text, const std::vector<json>& events,
                   std::size_t budget = template_limits::default_budget) {
  auto t = message_template::compile(text);
  if (!t) FAIL("does not compile: " << t.error().message);
  return t->render(template_context{events, 42, "ops", "monitor-1"}, budget);
}

std::string compile_error(std::string_view text) {
  auto t = message_template::compile(text);
  if (t) FAIL("compiled, expected an error: " << text);
  return t.error().message;
}

bool valid_utf8_text(const std::string& s) {
  return valid_utf8(s) == s;
}

}  // namespace

TEST_CASE("template: event fields, message names and literal braces", "[notifier][template]") {
  const std::vector<json> one = {alarm_event("web", "firing", "pending", "critical")};
  CHECK(render("{task} is {state} ({severity}) since {since}, was {previous}", one) ==
        "web is firing (critical) since 2026-12-03T13:33:30Z, was pending");
  CHECK(render("{type} {target} {reason}: {message} [{alarm_id}] at {time}", one) ==
        "http http://127.0.0.1/ refused: connection refused [web-17] at "
        "2026-12-03T13:33:30.250Z");
  CHECK(render("#{id} by {notifier} on {engine}: {count} event", one) ==
        "#42 by ops on monitor-1: 1 event");
  CHECK(render("{{\"literal\": {{}}}}", one) == "{\"literal\": {}}");
  CHECK(render("no substitution", one) == "no substitution");
  CHECK(render("", one).empty());
  // null renders as nothing; results as a JSON array
  const std::vector<json> resolved = {alarm_event("web", "ok", "firing", "", "HTTP 200")};
  CHECK(render("[{severity}][{reason}]", resolved) == "[][]");
  CHECK(json::parse(render("{results}", one)) == one[0]["results"]);
  CHECK(render("{headline}", one) == "FIRING critical: web");
  CHECK(render("{headline}", resolved) == "RESOLVED: web");
  CHECK(render("{summary}", one) ==
        "FIRING critical web (http http://127.0.0.1/): connection refused");
  CHECK(render("{summary}", resolved) == "RESOLVED web (http http://127.0.0.1/): HTTP 200");
}

TEST_CASE("template: a group renders its first event's fields and every event's summary",
          "[notifier][template]") {
  const std::vector<json> group = {alarm_event("web", "firing", "pending", "critical"),
                                   alarm_event("dns", "firing", "pending", "warning", "timeout"),
                                   alarm_event("db", "ok", "firing", "", "HTTP 200")};
  CHECK(render("{count} {task}", group) == "3 web");
  CHECK(render("{headline}", group) == "3 alarms: 2 firing, 1 resolved");
  CHECK(render("{summary}", group) ==
        "FIRING critical web (http http://127.0.0.1/): connection refused\n"
        "FIRING warning dns (http http://127.0.0.1/): timeout\n"
        "RESOLVED db (http http://127.0.0.1/): HTTP 200");
  CHECK(json::parse(render("{events}", group)) == json(group));
  const auto details = render("{details}", group);
  CHECK(details.find("FIRING warning dns") != std::string::npos);
  CHECK(details.find("recent results:") != std::string::npos);
  CHECK(details.find("2026-12-03T13:33:10.125Z critical refused") != std::string::npos);
  CHECK(details.find("12.5 ms") != std::string::npos);  // the resolved event's result
}

TEST_CASE("template: json and html filters escape hostile text", "[notifier][template]") {
  const std::string nasty = "say \"hi\"\\ <b>&'\n\r\t\x01 \xff\xfe end";
  const std::vector<json> one = {alarm_event("web", "firing", "pending", "critical", nasty)};
  const auto body = render("{{\"text\": \"{message|json}\", \"n\": {count}}}", one);
  const auto parsed = json::parse(body);  // throws (fails) if not valid JSON
  CHECK(parsed["text"] == "say \"hi\"\\ <b>&'\n\r\t\x01 \xef\xbf\xbd\xef\xbf\xbd end");
  CHECK(parsed["n"] == 1);
  CHECK(render("<i>{message|html}</i>", one).find("&lt;b&gt;&amp;&#39;") != std::string::npos);
  CHECK(render("{events|json}", one).find("\\\"alarm_id\\\"") != std::string::npos);
  // Raw substitutions keep the text but never invalid UTF-8.
  CHECK(valid_utf8_text(render("{message}", one)));
  // One-line names stay on one line whatever the message holds.
  const auto summary = render("{summary}", one);
  CHECK(summary.find('\n') == std::string::npos);
  CHECK(summary.find('\r') == std::string::npos);
}

TEST_CASE("template: compile errors say what and at which column", "[notifier][template]") {
  CHECK(compile_error("hello {taks}") == "unknown name 'taks' at column 8 (did you mean 'task'?)");
  CHECK(compile_error("{state} {unknown_thing}") == "unknown name 'unknown_thing' at column 10");
  CHECK(compile_error("é {task") == "unclosed '{' at column 3 (write '{{' for a literal '{')");
  CHECK(compile_error("a } b") == "single '}' at column 3 (write '}}' for a literal '}')");
  CHECK(compile_error("x {}") == "empty name in '{}' at column 3 (write '{{' for a literal '{')");
  CHECK(compile_error("{task|jsn}") == "unknown filter 'jsn' at column 7 (did you mean 'json'?)");
  CHECK(compile_error("{task|upper}") ==
        "unknown filter 'upper' at column 7 (filters: json, html)");
  CHECK(compile_error("{\"text\": 1}") ==
        "'{' followed by '\"text\": 1', which is not a name at column 1 (write '{{' for a "
        "literal '{')");
  CHECK(compile_error("{|json}") == "missing name before '|' at column 1");
  CHECK(compile_error(std::string("a\0b", 3)) == "NUL byte at column 2");
  auto long_text = message_template::compile(std::string(template_limits::source_bytes + 1, 'x'));
  REQUIRE(!long_text);
  CHECK(long_text.error().message == "template is 16385 bytes long, the limit is 16384");
  CHECK(message_template::compile("{events|html}").has_value());
  CHECK(message_template::compile("{message|json}").value().uses("message"));
  CHECK(!message_template::compile("{message|json}").value().uses("events"));
}

TEST_CASE("template: output is bounded and cuts keep JSON valid", "[notifier][template]") {
  const std::string huge(200000, 'x');
  const std::string wide = std::string(1000, 'a') + "\xe2\x82\xac\"\n" + std::string(5000, 'b');
  const std::vector<json> one = {alarm_event("web", "firing", "pending", "critical", huge)};
  // Literal text always survives; substitutions share the budget.
  const auto out = render("[{message}][{message}][{task}]", one, 1000);
  CHECK(out.size() <= 1000 + 8);
  CHECK(out.starts_with("[x"));
  CHECK(out.ends_with("]"));
  CHECK(out.find("\xe2\x80\xa6") != std::string::npos);  // the cut is marked
  // A cut inside an escape or a character never splits it.
  for (std::size_t budget = 990; budget < 1020; ++budget) {
    const std::vector<json> w = {alarm_event("web", "firing", "pending", "critical", wide)};
    const auto body = render("{{\"m\": \"{message|json}\"}}", w, budget);
    REQUIRE_NOTHROW(json::parse(body));
    CHECK(valid_utf8_text(body));
    CHECK(body.size() <= budget + 9);
  }
  // Many events: summary, details and events stop near the budget.
  std::vector<json> many;
  for (int i = 0; i < 5000; ++i)
    many.push_back(
        alarm_event(std::string("t").append(std::to_string(i)), "firing", "pending", "critical"));
  for (const char* name : {"{summary}", "{details}", "{events}", "{events|json}"})
    CHECK(render(name, many, 4096).size() <= 4096);
  CHECK(render("{summary}", many).size() <= template_limits::default_budget);
  // Budget 0: names render as nothing.
  CHECK(render("a{task}b", one, 0) == "ab");
}

TEST_CASE("event text: one_line, header values and addresses", "[notifier][template]") {
  CHECK(one_line("  a\r\n\tb  c \x7f", 100) == "a b c");
  CHECK(one_line(std::string(50, 'x'), 10) == std::string(7, 'x') + "\xe2\x80\xa6");
  CHECK(header_value("plain ascii", 100) == "plain ascii");
  CHECK(header_value("Alarm \xc3\xa9t\xc3\xa9", 100) == "=?UTF-8?B?QWxhcm0gw6l0w6k=?=");
  const auto folded = header_value(std::string(60, 'a') + "\xc3\xa9", 100, "\r\n ");
  CHECK(folded.find("?=\r\n =?UTF-8?B?") != std::string::npos);
  CHECK(parse_mailbox("ops@example.com").value().address == "ops@example.com");
  auto named = parse_mailbox("Sonde Alerts <alerts@example.com>").value();
  CHECK(named.display == "Sonde Alerts");
  CHECK(named.address == "alerts@example.com");
  CHECK(format_mailbox(named) == "\"Sonde Alerts\" <alerts@example.com>");
  CHECK(!parse_mailbox("no at sign"));
  CHECK(!parse_mailbox("a@b\r\nBcc: x@y"));  // header injection
  CHECK(parse_mailbox("x <a@b>\n").error().find("control character") != std::string::npos);
  CHECK(rfc5322_date(std::chrono::sys_days{std::chrono::year{2026} / 12 / 3} +
                     std::chrono::hours(13) + std::chrono::minutes(33) +
                     std::chrono::seconds(30)) == "Thu, 03 Dec 2026 13:33:30 +0000");
  const auto qp = quoted_printable("caf\xc3\xa9 = ok \nline two  \n" + std::string(200, 'z'));
  CHECK(qp.starts_with("caf=C3=A9 =3D ok=20\r\nline two =20\r\n"));
  for (std::size_t p = 0, e; (e = qp.find("\r\n", p)) != std::string::npos; p = e + 2)
    CHECK(e - p <= 76);
}
