// Message templates: a list of (literal, substitution) pieces made once; rendering appends
// literals and bounded, escaped values. Values that cost something to build (summary, details,
// events) are built once per rendering, and only up to what the budget can still take.
#include "alarms/template.hpp"

#include <algorithm>
#include <array>
#include <optional>

#include "alarms/event_text.hpp"

namespace sonde::engine::alarms {

namespace {

using json = nlohmann::json;

enum field_index : int {
  f_time,
  f_alarm_id,
  f_task,
  f_type,
  f_target,
  f_state,
  f_severity,
  f_previous,
  f_since,
  f_reason,
  f_message,
  f_results,
  f_count,
  f_summary,
  f_headline,
  f_details,
  f_events,
  f_engine,
  f_id,
  f_notifier,
  f_end
};

constexpr int first_message_field = f_count;  // before it: fields of the first event
constexpr std::string_view ellipsis = "\xe2\x80\xa6";

/// 1-based column (in characters) of byte `pos` of `text`.
std::size_t column_of(std::string_view text, std::size_t pos) {
  std::size_t col = 1;
  for (std::size_t i = 0; i < pos && i < text.size(); ++i)
    if ((static_cast<unsigned char>(text[i]) & 0xc0) != 0x80) ++col;
  return col;
}

/// `s` in single quotes for an error message: at most 24 characters, controls escaped.
std::string quoted(std::string_view s) {
  std::string out = "'";
  std::size_t shown = 0;
  for (unsigned char c : s) {
    if (++shown > 24) {
      out += "...";
      break;
    }
    if (c < 0x20 || c == 0x7f) {
      static constexpr char digits[] = "0123456789abcdef";
      out += "\\x";
      out += digits[c >> 4];
      out += digits[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "'";
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string suggestion(std::string_view word, const std::vector<std::string>& candidates) {
  if (word.size() > 32) return {};
  std::string best;
  std::size_t best_d = word.size() <= 3 ? 1 : 2;
  for (const auto& c : candidates) {
    const std::size_t d = edit_distance(word, c);
    if (d <= best_d && (best.empty() || d < best_d)) {
      best = c;
      best_d = d;
    }
  }
  return best.empty() ? std::string() : std::string("did you mean '").append(best).append("'?");
}

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/// The raw text of field `f` for `ctx`, built up to about `limit` bytes.
std::string field_value(int f, const template_context& ctx, std::size_t limit) {
  if (f < first_message_field) {
    if (ctx.events.empty()) return {};
    const auto& e = ctx.events.front();
    if (!e.is_object()) return {};
    auto it = e.find(message_template::names()[static_cast<std::size_t>(f)]);
    if (it == e.end() || it->is_null()) return {};
    if (it->is_string()) return it->get<std::string>();
    return json_text(*it);
  }
  switch (f) {
    case f_count:
      return std::to_string(ctx.events.size());
    case f_summary:
      return summary_text(ctx.events, limit);
    case f_headline:
      return headline(ctx.events);
    case f_details:
      return details_text(ctx.events, limit);
    case f_events:
      return events_json(ctx.events, limit);
    case f_engine:
      return std::string(ctx.engine);
    case f_id:
      return std::to_string(ctx.id);
    case f_notifier:
      return std::string(ctx.notifier);
    default:
      return {};
  }
}

}  // namespace

const std::vector<std::string>& message_template::names() {
  static const std::vector<std::string> n = {
      "time",     "alarm_id", "task",   "type",    "target",  "state",   "severity",
      "previous", "since",    "reason", "message", "results", "count",   "summary",
      "headline", "details",  "events", "engine",  "id",      "notifier"};
  return n;
}

tl::expected<message_template, template_error> message_template::compile(std::string_view text) {
  // "<what> at column <n>[ (<hint>)]"
  auto fail = [&](std::size_t pos, std::string what,
                  std::string hint = {}) -> tl::unexpected<template_error> {
    const std::size_t col = column_of(text, pos);
    what.append(" at column ").append(std::to_string(col));
    if (!hint.empty()) what.append(" (").append(hint).append(")");
    return tl::unexpected(template_error{col, std::move(what)});
  };
  if (text.size() > template_limits::source_bytes)
    return tl::unexpected(template_error{0, "template is " + std::to_string(text.size()) +
                                                " bytes long, the limit is " +
                                                std::to_string(template_limits::source_bytes)});
  message_template t;
  std::string literal;
  for (std::size_t i = 0; i < text.size();) {
    const char c = text[i];
    if (c == '\0') return fail(i, "NUL byte");
    if (c == '}') {
      if (i + 1 < text.size() && text[i + 1] == '}') {
        literal += '}';
        i += 2;
        continue;
      }
      return fail(i, "single '}'", "write '}}' for a literal '}'");
    }
    if (c != '{') {
      literal += c;
      ++i;
      continue;
    }
    if (i + 1 < text.size() && text[i + 1] == '{') {
      literal += '{';
      i += 2;
      continue;
    }
    const std::size_t open = i;
    const std::size_t close = text.find_first_of("{}", open + 1);
    if (close == std::string_view::npos || text[close] != '}')
      return fail(open, "unclosed '{'", "write '{{' for a literal '{'");
    const std::string_view inside = text.substr(open + 1, close - open - 1);
    const std::size_t bar = inside.find('|');
    const std::string_view name = inside.substr(0, bar);
    if (name.empty())
      return inside.empty() ? fail(open, "empty name in '{}'", "write '{{' for a literal '{'")
                            : fail(open, "missing name before '|'");
    if (!std::all_of(name.begin(), name.end(), is_name_char))
      return fail(open, "'{' followed by " + quoted(name) + ", which is not a name",
                  "write '{{' for a literal '{'");
    const auto& all = names();
    const auto found = std::find(all.begin(), all.end(), name);
    if (found == all.end())
      return fail(open + 1, "unknown name " + quoted(name), suggestion(name, all));
    piece p{std::move(literal), static_cast<int>(found - all.begin()), filter::none};
    literal.clear();
    if (bar != std::string_view::npos) {
      const std::string_view f = inside.substr(bar + 1);
      if (f == "json")
        p.how = filter::json;
      else if (f == "html")
        p.how = filter::html;
      else {
        auto hint = suggestion(f, {"json", "html"});
        return fail(open + 2 + bar, "unknown filter " + quoted(f),
                    hint.empty() ? std::string("filters: json, html") : hint);
      }
    }
    t.pieces_.push_back(std::move(p));
    i = close + 1;
  }
  if (!literal.empty() || t.pieces_.empty()) t.pieces_.push_back(piece{std::move(literal)});
  return t;
}

bool message_template::uses(std::string_view name) const {
  const auto& all = names();
  const auto found = std::find(all.begin(), all.end(), name);
  if (found == all.end()) return false;
  const int f = static_cast<int>(found - all.begin());
  return std::any_of(pieces_.begin(), pieces_.end(), [f](const piece& p) { return p.field == f; });
}

std::string message_template::render(const template_context& ctx, std::size_t budget) const {
  std::string out;
  std::array<std::optional<std::string>, f_end> cache;
  std::size_t left = budget;
  // Appends `v` filtered, within `max` bytes; false when it had to cut.
  auto put = [&out](std::string_view v, filter how, std::size_t max) {
    switch (how) {
      case filter::json:
        return append_json_escaped(out, v, max);
      case filter::html:
        return append_html_escaped(out, v, max);
      case filter::none:
        break;
    }
    const std::string clean = valid_utf8(v);
    const std::size_t n = utf8_prefix(clean, max);
    out.append(clean, 0, n);
    return n == clean.size();
  };
  for (const auto& p : pieces_) {
    out += p.literal;
    if (p.field < 0) continue;
    auto& value = cache[static_cast<std::size_t>(p.field)];
    if (!value) value = field_value(p.field, ctx, left + 1);
    const std::size_t start = out.size();
    if (!put(*value, p.how, left)) {
      out.resize(start);
      const bool room = left >= ellipsis.size();
      put(*value, p.how, room ? left - ellipsis.size() : left);
      if (room) out += ellipsis;
    }
    left -= out.size() - start;
  }
  return out;
}

}  // namespace sonde::engine::alarms
