// libFuzzer target: notifier message templates and the text helpers that see outside text.
// Input: one byte choosing the render budget, then the template, then (after the first
// "\0\0") text that becomes the event's message and, when it parses as a JSON object, a
// second event with whatever shape it has. Checks the bounds (output <= template + budget),
// that output is valid UTF-8 whenever the template is, that a `|json` substitution inside a
// JSON string always yields valid JSON, and the e-mail encoders' line limits.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "alarms/email.hpp"
#include "alarms/event_text.hpp"
#include "alarms/template.hpp"
#include "control/control_request.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace a = sonde::engine::alarms;
  using json = nlohmann::json;
  if (size == 0) return 0;
  static constexpr std::size_t budgets[] = {0, 1, 2, 3, 7, 64, 1000, 4096};
  const std::size_t budget = budgets[data[0] % 8];
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  const auto cut = in.find(std::string_view("\0\0", 2));
  const std::string_view source = in.substr(0, cut);
  const std::string text(cut == std::string_view::npos ? std::string_view{} : in.substr(cut + 2));

  std::vector<json> events;
  events.push_back(json{{"task", text.substr(0, 40)},
                        {"state", "firing"},
                        {"previous", "pending"},
                        {"severity", "critical"},
                        {"message", text},
                        {"results", json::array({json{{"message", text}, {"latency_ms", 1.5}}})}});
  if (auto j = sonde::engine::parse_json_untrusted(text); j && j->is_object())
    events.push_back(std::move(*j));
  const a::template_context ctx{events, 1, "fuzz", "host"};

  if (auto t = a::message_template::compile(source)) {
    const auto out = t->render(ctx, budget);
    if (out.size() > source.size() + budget) __builtin_trap();
    if (a::valid_utf8(source) == source && a::valid_utf8(out) != out) __builtin_trap();
  }
  for (const auto& name : a::message_template::names()) {
    auto t = a::message_template::compile("{{\"v\": \"{" + name + "|json}\"}}");
    if (!t) __builtin_trap();
    const auto out = t->render(ctx, budget);
    if (json::parse(out, nullptr, false).is_discarded()) __builtin_trap();
  }

  const auto line = a::one_line(text, 100);
  if (line.size() > 100 || line.find_first_of("\r\n") != std::string::npos) __builtin_trap();
  const auto header = a::header_value(text, 200, "\r\n ");
  for (std::size_t p = 0, e; (e = header.find("\r\n", p)) != std::string::npos; p = e + 2)
    if (header[e + 2] != ' ') __builtin_trap();  // folded, never a new header line
  const auto qp = a::quoted_printable(text);
  for (std::size_t p = 0, e; p < qp.size(); p = e + 2) {
    e = qp.find("\r\n", p);
    if (e == std::string::npos || e - p > 76) __builtin_trap();
  }
  (void)a::parse_mailbox(text.substr(0, 300));
  return 0;
}
