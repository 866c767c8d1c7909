#pragma once
/// @file output.hpp
/// Result formatting: JSON lines (the result contract of design.md) and aligned text lines.

#include <cstdio>
#include <string>
#include <vector>

#include "core/scheduler.hpp"

namespace sonde::engine {

/// RFC 3339 UTC with microseconds: "2026-11-20T23:11:21.123456Z".
std::string format_time_rfc3339(std::chrono::system_clock::time_point t, int decimals = 6);
/// Append `s` to `out` as a JSON string literal (quotes included).
void append_json_string(std::string& out, std::string_view s);
/// Append a number in shortest round-trip form; non-finite numbers become null.
void append_json_number(std::string& out, double v);
/// The JSON object of a result (no trailing newline):
/// {"time","task","type","target","status","reason","latency_ms","message","metrics"}.
std::string to_json(const result_record& r);
/// "OK", "WARNING", "CRITICAL", "UNKNOWN"
std::string_view status_label(status s);

/// Writes one JSON object per line.
class json_sink final : public result_sink {
 public:
  json_sink(std::FILE* out, bool flush_each) : out_(out), flush_each_(flush_each) {}
  void on_result(const result_record& r) override;
  void flush() override { std::fflush(out_); }

 private:
  std::FILE* out_;
  bool flush_each_;
};

/// Writes one aligned, timestamped line per result; state changes are marked "(was ok)".
class text_sink final : public result_sink {
 public:
  text_sink(std::FILE* out, bool flush_each, const std::vector<task_spec>& tasks);
  void on_result(const result_record& r) override;
  void flush() override { std::fflush(out_); }

 private:
  std::FILE* out_;
  bool flush_each_;
  std::size_t name_w_ = 4, type_w_ = 4, target_w_ = 6;
};

}  // namespace sonde::engine
