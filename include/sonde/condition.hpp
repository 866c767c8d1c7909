#pragma once
/// @file condition.hpp
/// warn/crit conditions: "<metric> <op> <value>", e.g. "latency > 200ms", "loss >= 50%".

#include <cmath>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <tl/expected.hpp>

#include "duration.hpp"

namespace sonde {

/// Comparison operators of a condition.
enum class compare_op { lt, le, gt, ge, eq, ne };

/// The operator's text ("<", "<=", ...).
constexpr std::string_view to_string(compare_op op) noexcept {
  switch (op) {
    case compare_op::lt:
      return "<";
    case compare_op::le:
      return "<=";
    case compare_op::gt:
      return ">";
    case compare_op::ge:
      return ">=";
    case compare_op::eq:
      return "==";
    case compare_op::ne:
      return "!=";
  }
  return "?";
}

/// A parsed condition. `value` is in the metric's fixed unit (seconds, bytes, percent).
struct condition {
  std::string metric;
  compare_op op = compare_op::gt;
  double value = 0;
  std::string text;  ///< the condition as written, for messages

  /// True when `observed` satisfies the comparison. NaN never satisfies.
  bool holds(double observed) const noexcept {
    switch (op) {
      case compare_op::lt:
        return observed < value;
      case compare_op::le:
        return observed <= value;
      case compare_op::gt:
        return observed > value;
      case compare_op::ge:
        return observed >= value;
      case compare_op::eq:
        return observed == value;
      case compare_op::ne:
        return !std::isnan(observed) && observed != value;
    }
    return false;
  }
};

/// Resolves a symbolic value ("NXDOMAIN") for a metric to its number, if the metric has names.
using enum_resolver =
    std::function<std::optional<double>(std::string_view metric, std::string_view name)>;

namespace detail {
/// Multiplier that converts a value with unit `u` to the metric's base unit, or nullopt.
inline std::optional<double> condition_unit_scale(std::string_view u) {
  if (u.empty() || u == "%") return 1.0;
  if (double ns = duration_unit_ns(u); ns != 0) return ns / 1e9;  // durations -> seconds
  if (u == "B") return 1.0;
  if (u == "KB" || u == "KiB" || u == "kB") return 1024.0;
  if (u == "MB" || u == "MiB") return 1024.0 * 1024;
  if (u == "GB" || u == "GiB") return 1024.0 * 1024 * 1024;
  if (u == "TB" || u == "TiB") return 1024.0 * 1024 * 1024 * 1024;
  return std::nullopt;
}
inline bool is_metric_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-' || c == '/';
}
}  // namespace detail

/// Parse "<metric> <op> <value>". Values take duration units (us, ms, s, m, h, d -> seconds),
/// `%`, or size units (B, KB, MB, GB, TB; binary multiples). A bare word is looked up with
/// `names` (e.g. "rcode == NXDOMAIN"). Errors quote the condition. Thread-safe.
inline tl::expected<condition, std::string> parse_condition(std::string_view text,
                                                            const enum_resolver& names = {}) {
  auto fail = [&](std::string why) -> tl::unexpected<std::string> {
    return tl::unexpected("invalid condition \"" + std::string(text) + "\": " + why);
  };
  condition c;
  c.text = std::string(text);
  std::size_t i = 0;
  auto skip_ws = [&] {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
  };
  skip_ws();
  std::size_t m0 = i;
  while (i < text.size() && detail::is_metric_char(text[i])) ++i;
  c.metric = std::string(text.substr(m0, i - m0));
  if (c.metric.empty()) return fail("expected a metric name first, as in \"latency > 200ms\"");
  skip_ws();
  auto rest = text.substr(i);
  if (rest.starts_with("<="))
    c.op = compare_op::le, i += 2;
  else if (rest.starts_with(">="))
    c.op = compare_op::ge, i += 2;
  else if (rest.starts_with("=="))
    c.op = compare_op::eq, i += 2;
  else if (rest.starts_with("!="))
    c.op = compare_op::ne, i += 2;
  else if (rest.starts_with("<"))
    c.op = compare_op::lt, i += 1;
  else if (rest.starts_with(">"))
    c.op = compare_op::gt, i += 1;
  else if (rest.starts_with("="))
    return fail("use '==' to compare for equality");
  else
    return fail("expected an operator (<, <=, >, >=, ==, !=) after \"" + c.metric + "\"");
  skip_ws();
  auto value = text.substr(i);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (value.empty()) return fail("missing value after the operator");
  // number part
  std::size_t j = 0;
  if (j < value.size() && (value[j] == '-' || value[j] == '+')) ++j;
  std::size_t digits0 = j;
  while (j < value.size() &&
         (detail::is_digit(value[j]) || value[j] == '.' || value[j] == 'e' ||
          ((value[j] == '-' || value[j] == '+') && j > 0 && value[j - 1] == 'e')))
    ++j;
  if (j == digits0) {  // a symbolic value
    if (names) {
      if (auto v = names(c.metric, value)) {
        c.value = *v;
        return c;
      }
    }
    return fail("\"" + std::string(value) + "\" is not a number" +
                (names ? " or a known name for metric \"" + c.metric + "\"" : std::string()));
  }
  std::string num(value.substr(0, j));
  char* end = nullptr;
  double v = std::strtod(num.c_str(), &end);
  if (end != num.c_str() + num.size() || !std::isfinite(v))
    return fail("malformed number \"" + num + "\"");
  auto unit = value.substr(j);
  while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  auto scale = detail::condition_unit_scale(unit);
  if (!scale)
    return fail("unknown unit \"" + std::string(unit) +
                "\" (durations: us, ms, s, m, h, d; sizes: B, KB, MB, GB; or %)");
  c.value = v * *scale;
  return c;
}

}  // namespace sonde
