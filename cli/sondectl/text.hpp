#pragma once
/// @file text.hpp
/// Small text helpers shared by sondectl's table printers.

#include <cctype>
#include <string>

#include <nlohmann/json.hpp>

namespace sonde::sondectl {

/// `j[key]` as text: strings as they are, other values as JSON, `fallback` when null or absent.
inline std::string text(const nlohmann::json& j, const char* key, const char* fallback = "-") {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (it->is_string()) return it->get<std::string>();
  return it->dump();
}

/// ASCII upper case ("critical" -> "CRITICAL").
inline std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace sonde::sondectl
