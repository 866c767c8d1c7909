#pragma once
/// @file options.hpp
/// Typed probe option values, option tables and metric tables shared by every checker.
///
/// Each checker declares `option_table` (key, type, default, help) and `metric_table`; the
/// engine validates task files against them, `sonde plugins --describe` prints them, and the
/// checker's `options_from()` turns an `option_set` into its `options` struct.

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <tl/expected.hpp>

#include "duration.hpp"
#include "error.hpp"

namespace sonde {

/// The type of an option value. Values are fixed (they cross the plugin ABI).
enum class option_type : int {
  boolean = 1,
  integer = 2,
  number = 3,  ///< floating point
  string = 4,
  duration = 5,     ///< "250ms", "10s", ...
  string_list = 6,  ///< array of strings; a single string is accepted as a one-element list
};

/// Human name of an option type, for error messages and docs.
constexpr std::string_view to_string(option_type t) noexcept {
  switch (t) {
    case option_type::boolean:
      return "boolean";
    case option_type::integer:
      return "integer";
    case option_type::number:
      return "number";
    case option_type::string:
      return "string";
    case option_type::duration:
      return "duration";
    case option_type::string_list:
      return "list of strings";
  }
  return "?";
}

/// One entry of a checker's option table.
struct option_spec {
  std::string_view key;
  option_type type;
  std::string_view default_value;  ///< as text, "" when there is no default
  std::string_view help;
};

/// One entry of a checker's metric table. `name` may hold a placeholder such as "cpu.<n>".
struct metric_spec {
  std::string_view name;
  std::string_view unit;  ///< "s", "bytes", "%", "count", "code"
  std::string_view help;
};

/// A symbolic value of a metric usable in conditions ("rcode == NXDOMAIN").
struct metric_enum {
  std::string_view metric;
  std::string_view name;
  double value;
};

/// A typed option value.
using option_value =
    std::variant<bool, std::int64_t, double, std::string, duration, std::vector<std::string>>;

/// The option values given for one probe, already checked against the option table's types.
class option_set {
 public:
  /// Add or replace a value.
  void set(std::string key, option_value v) {
    for (auto& kv : values_) {
      if (kv.first == key) {
        kv.second = std::move(v);
        return;
      }
    }
    values_.emplace_back(std::move(key), std::move(v));
  }
  /// The value for `key`, or nullptr.
  const option_value* find(std::string_view key) const {
    for (auto& kv : values_)
      if (kv.first == key) return &kv.second;
    return nullptr;
  }
  const std::vector<std::pair<std::string, option_value>>& values() const { return values_; }

  /// Read `key` into `out` if present. The type was checked by whoever built the set; a
  /// mismatch here is reported as an invalid_option error rather than trusted.
  template <class T>
  tl::expected<void, probe_error> get(std::string_view key, T& out) const {
    const option_value* v = find(key);
    if (!v) return {};
    if constexpr (std::is_same_v<T, int> || std::is_same_v<T, unsigned> ||
                  std::is_same_v<T, std::int64_t>) {
      if (auto* i = std::get_if<std::int64_t>(v)) {
        out = static_cast<T>(*i);
        return {};
      }
    } else if constexpr (std::is_same_v<T, double>) {
      if (auto* d = std::get_if<double>(v)) {
        out = *d;
        return {};
      }
      if (auto* i = std::get_if<std::int64_t>(v)) {
        out = static_cast<double>(*i);
        return {};
      }
    } else {
      if (auto* x = std::get_if<T>(v)) {
        out = *x;
        return {};
      }
    }
    return tl::unexpected(
        option_error(std::string(key), "option '" + std::string(key) + "' has the wrong type"));
  }

 private:
  std::vector<std::pair<std::string, option_value>> values_;
};

/// Parse option text (from `--set key=value` or a control message) as `type`.
/// Lists are comma-separated. Errors name the key.
inline tl::expected<option_value, std::string> parse_option_text(std::string_view key,
                                                                 option_type type,
                                                                 std::string_view text) {
  std::string k(key);
  std::string t(text);
  switch (type) {
    case option_type::boolean:
      if (t == "true" || t == "yes" || t == "on" || t == "1") return option_value(true);
      if (t == "false" || t == "no" || t == "off" || t == "0") return option_value(false);
      return tl::unexpected("option '" + k + "': \"" + t + "\" is not a boolean (true or false)");
    case option_type::integer: {
      if (t.empty()) return tl::unexpected("option '" + k + "': empty value, expected an integer");
      char* end = nullptr;
      errno = 0;
      long long v = std::strtoll(t.c_str(), &end, 10);
      if (*end != '\0' || errno == ERANGE)
        return tl::unexpected("option '" + k + "': \"" + t + "\" is not an integer");
      return option_value(static_cast<std::int64_t>(v));
    }
    case option_type::number: {
      char* end = nullptr;
      double v = std::strtod(t.c_str(), &end);
      if (t.empty() || *end != '\0')
        return tl::unexpected("option '" + k + "': \"" + t + "\" is not a number");
      return option_value(v);
    }
    case option_type::string:
      return option_value(t);
    case option_type::duration: {
      auto d = parse_duration(t);
      if (!d) return tl::unexpected("option '" + k + "': " + d.error());
      return option_value(*d);
    }
    case option_type::string_list: {
      std::vector<std::string> items;
      std::size_t pos = 0;
      while (true) {
        auto comma = t.find(',', pos);
        items.push_back(t.substr(pos, comma - pos));
        if (comma == std::string::npos) break;
        pos = comma + 1;
      }
      return option_value(std::move(items));
    }
  }
  return tl::unexpected("option '" + k + "': unsupported type");
}

}  // namespace sonde
