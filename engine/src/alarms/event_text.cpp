// Text of alarm events. Everything here may see text that came from a probed target (result
// messages) or from a receiver: bound every piece, never trust UTF-8, never throw.
#include "alarms/event_text.hpp"

#include <unistd.h>

#include <array>
#include <climits>
#include <utility>
#include <vector>

namespace sonde::engine::alarms {

namespace {

using json = nlohmann::json;

constexpr std::string_view replacement = "\xef\xbf\xbd";  // U+FFFD
constexpr std::string_view ellipsis = "\xe2\x80\xa6";     // U+2026

/// Length of the valid UTF-8 sequence at s[i], or 0 when the bytes there are not one.
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return 1;
  std::size_t len = 0;
  std::uint32_t cp = 0, min = 0;
  if ((b0 & 0xe0) == 0xc0) {
    len = 2, cp = b0 & 0x1fu, min = 0x80;
  } else if ((b0 & 0xf0) == 0xe0) {
    len = 3, cp = b0 & 0x0fu, min = 0x800;
  } else if ((b0 & 0xf8) == 0xf0) {
    len = 4, cp = b0 & 0x07u, min = 0x10000;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3fu);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return out;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
  return out;
}

/// "12.3 ms" from a result's latency_ms (number or null).
std::string latency_text(const json& v) {
  if (!v.is_number()) return {};
  const double ms = v.get<double>();
  if (!(ms >= 0 && ms < 1e12)) return {};
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.1f ms", ms);
  return buf;
}

void append_base64(std::string& out, std::string_view in) {
  static constexpr char table[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const std::uint32_t v = static_cast<unsigned char>(in[i]) << 16 |
                            static_cast<unsigned char>(in[i + 1]) << 8 |
                            static_cast<unsigned char>(in[i + 2]);
    out += table[v >> 18 & 63];
    out += table[v >> 12 & 63];
    out += table[v >> 6 & 63];
    out += table[v & 63];
  }
  if (const std::size_t rest = in.size() - i; rest > 0) {
    std::uint32_t v = static_cast<unsigned char>(in[i]) << 16;
    if (rest == 2) v |= static_cast<unsigned char>(in[i + 1]) << 8;
    out += table[v >> 18 & 63];
    out += table[v >> 12 & 63];
    out += rest == 2 ? table[v >> 6 & 63] : '=';
    out += '=';
  }
}

}  // namespace

std::string_view event_string(const json& event, std::string_view key) {
  if (!event.is_object()) return {};
  auto it = event.find(key);
  if (it == event.end() || !it->is_string()) return {};
  return it->get_ref<const std::string&>();
}

bool is_resolved(const json& event) {
  if (event_string(event, "state") != "ok") return false;
  const auto prev = event_string(event, "previous");
  return prev == "firing" || prev == "flapping" || prev == "silenced";
}

std::string state_label(const json& event) {
  const auto state = event_string(event, "state");
  if (state == "ok") return is_resolved(event) ? "RESOLVED" : "OK";
  if (state.empty()) return "EVENT";
  return upper(one_line(state, 24));
}

std::string summary_line(const json& event) {
  std::string out = state_label(event);
  const auto state = event_string(event, "state");
  const auto severity = event_string(event, "severity");
  if (!severity.empty() && state != "ok") out.append(" ").append(one_line(severity, 24));
  const auto task = one_line(event_string(event, "task"), 200);
  out.append(" ").append(task.empty() ? std::string_view("?") : std::string_view(task));
  const auto type = one_line(event_string(event, "type"), 40);
  const auto target = one_line(event_string(event, "target"), 300);
  if (!type.empty() || !target.empty())
    out += " (" + type + (type.empty() || target.empty() ? "" : " ") + target + ")";
  auto text = one_line(event_string(event, "message"), 500);
  if (text.empty()) text = one_line(event_string(event, "reason"), 40);
  if (!text.empty()) out += ": " + text;
  return out;
}

std::string headline(std::span<const json> events) {
  if (events.empty()) return "no alarms";
  if (events.size() == 1) {
    const auto& e = events.front();
    std::string out = state_label(e);
    const auto severity = event_string(e, "severity");
    if (!severity.empty() && event_string(e, "state") != "ok")
      out.append(" ").append(one_line(severity, 24));
    const auto task = one_line(event_string(e, "task"), 200);
    return out + ": " + (task.empty() ? std::string("?") : task);
  }
  // Counts per label, in order of first appearance; at most a few distinct labels matter.
  std::vector<std::pair<std::string, std::size_t>> counts;
  for (const auto& e : events) {
    auto label = lower(state_label(e));
    bool found = false;
    for (auto& [l, n] : counts)
      if (l == label) {
        ++n;
        found = true;
        break;
      }
    if (!found && counts.size() < 8) counts.emplace_back(std::move(label), 1);
  }
  std::string out = std::to_string(events.size()) + " alarms:";
  for (std::size_t i = 0; i < counts.size(); ++i)
    out += (i ? ", " : " ") + std::to_string(counts[i].second) + " " + counts[i].first;
  return out;
}

std::string summary_text(std::span<const json> events, std::size_t limit) {
  std::string out;
  for (const auto& e : events) {
    if (out.size() > limit) break;
    if (!out.empty()) out += '\n';
    out += summary_line(e);
  }
  return out;
}

std::string details_text(std::span<const json> events, std::size_t limit) {
  std::string out;
  for (const auto& e : events) {
    if (out.size() > limit) break;
    if (!out.empty()) out += "\n\n";
    out += summary_line(e);
    const auto since = one_line(event_string(e, "since"), 64);
    const auto previous = one_line(event_string(e, "previous"), 24);
    if (!since.empty())
      out += "\n  since:   " + since + (previous.empty() ? "" : " (before: " + previous + ")");
    const auto time = one_line(event_string(e, "time"), 64);
    if (!time.empty()) out += "\n  time:    " + time;
    const auto reason = one_line(event_string(e, "reason"), 40);
    if (!reason.empty()) out += "\n  reason:  " + reason;
    const auto id = one_line(event_string(e, "alarm_id"), 128);
    if (!id.empty()) out += "\n  alarm:   " + id;
    if (!e.is_object()) continue;
    auto results = e.find("results");
    if (results == e.end() || !results->is_array() || results->empty()) continue;
    out += "\n  recent results:";
    std::size_t shown = 0;
    for (const auto& r : *results) {
      if (++shown > 20 || out.size() > limit) break;
      std::string line = "\n    " + one_line(event_string(r, "time"), 64);
      for (auto part :
           {one_line(event_string(r, "status"), 24), one_line(event_string(r, "reason"), 40),
            r.is_object() ? latency_text(r.value("latency_ms", json())) : std::string(),
            one_line(event_string(r, "message"), 300)})
        if (!part.empty()) line += " " + part;
      out += line;
    }
  }
  return out;
}

std::string json_text(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string events_json(std::span<const json> events, std::size_t limit) {
  std::string out = "[";
  for (std::size_t i = 0; i < events.size() && out.size() <= limit; ++i) {
    if (i) out += ',';
    out += json_text(events[i]);
  }
  out += ']';
  return out;
}

json message_json(std::span<const json> events) {
  if (events.size() == 1) return events.front();
  json arr = json::array();
  for (const auto& e : events) arr.push_back(e);
  return json{{"events", std::move(arr)}};
}

const std::string& host_name() {
  static const std::string name = [] {
    std::array<char, 256> buf{};
    if (::gethostname(buf.data(), buf.size() - 1) != 0 || buf[0] == '\0')
      return std::string("localhost");
    return one_line(std::string_view(buf.data()), 253);
  }();
  return name;
}

std::size_t utf8_prefix(std::string_view s, std::size_t max) {
  if (s.size() <= max) return s.size();
  std::size_t n = max;
  // Step back over continuation bytes to the start of the character that crosses `max`.
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xc0) == 0x80 && max - n < 4) --n;
  return n;
}

std::string valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t len = utf8_sequence(s, i);
    if (len == 0) {
      out += replacement;
      ++i;
    } else {
      out.append(s.substr(i, len));
      i += len;
    }
  }
  return out;
}

std::string one_line(std::string_view s, std::size_t max) {
  std::string out;
  out.reserve(std::min(s.size(), max + 8));
  bool space = false;
  for (std::size_t i = 0; i < s.size() && out.size() <= max + 4;) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f || c == ' ') {
      space = !out.empty();
      ++i;
      continue;
    }
    if (space) {
      out += ' ';
      space = false;
    }
    const std::size_t len = utf8_sequence(s, i);
    if (len == 0) {
      out += replacement;
      ++i;
    } else if (len == 2 && c == 0xc2 && static_cast<unsigned char>(s[i + 1]) < 0xa0) {
      out += ' ';  // C1 controls (U+0080-U+009F) read as a space
      i += 2;
    } else {
      out.append(s.substr(i, len));
      i += len;
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  if (out.size() > max) {
    const std::size_t keep = max >= ellipsis.size() ? utf8_prefix(out, max - ellipsis.size()) : 0;
    out.resize(keep);
    while (!out.empty() && out.back() == ' ') out.pop_back();
    if (max >= ellipsis.size()) out += ellipsis;
  }
  return out;
}

bool append_json_escaped(std::string& out, std::string_view s, std::size_t max) {
  std::size_t used = 0;
  char buf[8];
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::string_view piece;
    std::size_t step = 1;
    switch (c) {
      case '"':
        piece = "\\\"";
        break;
      case '\\':
        piece = "\\\\";
        break;
      case '\n':
        piece = "\\n";
        break;
      case '\r':
        piece = "\\r";
        break;
      case '\t':
        piece = "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          piece = std::string_view(buf, 6);
        } else if (const std::size_t len = utf8_sequence(s, i); len == 0) {
          piece = "\\ufffd";
        } else {
          piece = s.substr(i, len);
          step = len;
        }
    }
    if (used + piece.size() > max) return false;
    out.append(piece);
    used += piece.size();
    i += step;
  }
  return true;
}

bool append_html_escaped(std::string& out, std::string_view s, std::size_t max) {
  std::size_t used = 0;
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::string_view piece;
    std::size_t step = 1;
    switch (c) {
      case '&':
        piece = "&amp;";
        break;
      case '<':
        piece = "&lt;";
        break;
      case '>':
        piece = "&gt;";
        break;
      case '"':
        piece = "&quot;";
        break;
      case '\'':
        piece = "&#39;";
        break;
      default:
        if (const std::size_t len = utf8_sequence(s, i); len == 0) {
          piece = replacement;
        } else {
          piece = s.substr(i, len);
          step = len;
        }
    }
    if (used + piece.size() > max) return false;
    out.append(piece);
    used += piece.size();
    i += step;
  }
  return true;
}

bool is_printable_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x20 || c > 0x7e) return false;
  return true;
}

std::string header_value(std::string_view s, std::size_t max, std::string_view separator) {
  std::string text = one_line(s, max);
  if (is_printable_ascii(text)) return text;
  // RFC 2047: "=?UTF-8?B?" + base64 + "?=" is 12 characters of overhead; 45 bytes of text make
  // 60 base64 characters, 72 in all (the limit is 75). Never split a UTF-8 character.
  std::string out;
  std::string_view rest = text;
  while (!rest.empty()) {
    std::size_t n = utf8_prefix(rest, 45);
    if (n == 0) n = std::min<std::size_t>(rest.size(), 4);  // cannot happen with valid UTF-8
    if (!out.empty()) out += separator;
    out += "=?UTF-8?B?";
    append_base64(out, rest.substr(0, n));
    out += "?=";
    rest.remove_prefix(n);
  }
  return out;
}

}  // namespace sonde::engine::alarms
