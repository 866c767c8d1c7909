// Result formatting. Hand-written JSON: this is the hot path of `sonde run` at high rates.
#include <charconv>
#include <cmath>
#include <ctime>

#include <sonde/duration.hpp>
#include "core/output.hpp"

namespace sonde::engine {

std::string format_time_rfc3339(std::chrono::system_clock::time_point t, int decimals) {
  using namespace std::chrono;
  auto ns = duration_cast<nanoseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ns / 1'000'000'000);
  long frac = static_cast<long>(ns % 1'000'000'000);
  if (frac < 0) {
    frac += 1'000'000'000;
    --secs;
  }
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  if (decimals > 0) {
    long div = 1;
    for (int i = decimals; i < 9; ++i) div *= 10;
    n += static_cast<std::size_t>(
        std::snprintf(buf + n, sizeof buf - n, ".%0*ld", decimals, frac / div));
  }
  buf[n++] = 'Z';
  return std::string(buf, n);
}

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char b[8];
          std::snprintf(b, sizeof b, "\\u%04x", c);
          out += b;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

void append_json_number(std::string& out, double v) {
  if (!std::isfinite(v)) {
    out += "null";
    return;
  }
  char buf[32];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, p);
}

std::string_view status_label(status s) {
  switch (s) {
    case status::ok:
      return "OK";
    case status::warning:
      return "WARNING";
    case status::critical:
      return "CRITICAL";
    case status::unknown:
      return "UNKNOWN";
  }
  return "UNKNOWN";
}

std::string to_json(const result_record& r) {
  std::string o;
  o.reserve(256);
  o += "{\"time\":\"";
  o += format_time_rfc3339(r.time);
  o += "\",\"task\":";
  append_json_string(o, r.task->name);
  o += ",\"type\":";
  append_json_string(o, r.task->type);
  o += ",\"target\":";
  append_json_string(o, r.task->target);
  o += ",\"status\":\"";
  o += to_string(r.state);
  o += "\",\"reason\":";
  if (r.why == reason::none) {
    o += "null";
  } else {
    o += '"';
    o += to_string(r.why);
    o += '"';
  }
  o += ",\"latency_ms\":";
  if (r.latency_ms)
    append_json_number(o, *r.latency_ms);
  else
    o += "null";
  o += ",\"message\":";
  append_json_string(o, r.message);
  o += ",\"metrics\":{";
  bool first = true;
  for (const auto& m : r.metrics) {
    if (!first) o += ',';
    first = false;
    append_json_string(o, m.name);
    o += ':';
    append_json_number(o, m.value);
  }
  o += "}}";
  return o;
}

void json_sink::on_result(const result_record& r) {
  std::string line = to_json(r);
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), out_);
  if (flush_each_) std::fflush(out_);
}

text_sink::text_sink(std::FILE* out, bool flush_each, const std::vector<task_spec>& tasks)
    : out_(out), flush_each_(flush_each) {
  for (const auto& t : tasks) {
    name_w_ = std::max(name_w_, std::min<std::size_t>(t.name.size(), 24));
    type_w_ = std::max(type_w_, std::min<std::size_t>(t.type.size(), 10));
    target_w_ = std::max(target_w_, std::min<std::size_t>(t.target.size(), 32));
  }
}

void text_sink::on_result(const result_record& r) {
  std::string lat = r.latency_ms
                        ? format_duration(duration(static_cast<std::int64_t>(*r.latency_ms * 1e6)))
                        : std::string("-");
  std::string msg;
  if (r.why != reason::none && r.why != reason::condition) {
    msg = std::string(to_string(r.why)) + ": ";
  }
  msg += r.message;
  if (r.previous) msg += " (was " + std::string(to_string(*r.previous)) + ")";
  std::fprintf(out_, "%s  %-8s  %-*s  %-*s  %-*s  %8s  %s\n",
               format_time_rfc3339(r.time, 3).c_str(), std::string(status_label(r.state)).c_str(),
               static_cast<int>(name_w_), r.task->name.c_str(), static_cast<int>(type_w_),
               r.task->type.c_str(), static_cast<int>(target_w_), r.task->target.c_str(),
               lat.c_str(), msg.c_str());
  if (flush_each_) std::fflush(out_);
}

}  // namespace sonde::engine
