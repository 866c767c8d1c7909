// [history]. See history_config.hpp and docs/history.md.
#include "history/history_config.hpp"

#include <filesystem>

#include "core/toml_util.hpp"

namespace sonde::engine::history {

void read_history_section(const std::string& path, const toml::table& doc, history_settings& out,
                          std::vector<config_error>& errors) {
  auto* n = doc.get("history");
  if (!n) return;
  auto* t = n->as_table();
  if (!t) {
    errors.push_back({pos_of(path, n->source()), "'history' must be a table: [history]"});
    return;
  }
  static const std::vector<std::string> keys = {
      "enabled", "path", "raw", "minute", "hour", "day", "alarms", "queue", "commit_interval"};
  for (auto&& [k, v] : *t) {
    std::string key(k.str());
    auto where = pos_of(path, v.source());
    auto retention = [&](std::chrono::seconds& dst, std::chrono::seconds floor) {
      auto d = duration_from_node(v);
      if (!d) {
        errors.push_back({where, "[history] " + key + ": " + d.error()});
        return;
      }
      auto s = std::chrono::duration_cast<std::chrono::seconds>(*d);
      if (s < floor) {
        errors.push_back({where, "[history] " + key + " must be at least " +
                                     std::to_string(floor.count()) + "s (it is " +
                                     std::to_string(s.count()) + "s)"});
        return;
      }
      dst = s;
    };
    if (key == "enabled") {
      if (auto b = v.value_exact<bool>())
        out.enabled = *b;
      else
        errors.push_back({where, "[history] enabled must be true or false"});
    } else if (key == "path") {
      auto s = v.value_exact<std::string>();
      if (!s || s->empty()) {
        errors.push_back({where, "[history] path must be a non-empty string (a file name)"});
        continue;
      }
      std::filesystem::path p(*s);
      if (p.is_relative()) p = std::filesystem::absolute(path).parent_path() / p;
      out.path = p.lexically_normal().string();
    } else if (key == "raw") {
      retention(out.raw, std::chrono::hours(1));
    } else if (key == "minute") {
      retention(out.minute, std::chrono::hours(2));
    } else if (key == "hour") {
      retention(out.hour, std::chrono::hours(48));
    } else if (key == "day") {
      retention(out.day, std::chrono::hours(24 * 7));
    } else if (key == "alarms") {
      if (auto s = v.value_exact<std::string>(); s && *s == "forever") {
        out.alarms.reset();
      } else {
        std::chrono::seconds d{};
        retention(d, std::chrono::hours(24));
        if (d.count()) out.alarms = d;
      }
    } else if (key == "queue") {
      auto i = v.value_exact<std::int64_t>();
      if (!i || *i < 100 || *i > 10000000)
        errors.push_back({where, "[history] queue must be a whole number from 100 to 10000000"});
      else
        out.queue = static_cast<std::size_t>(*i);
    } else if (key == "commit_interval") {
      auto d = duration_from_node(v);
      if (!d || *d < std::chrono::milliseconds(10) || *d > std::chrono::seconds(60))
        errors.push_back({where, "[history] commit_interval must be a duration from 10ms to 60s"});
      else
        out.commit_interval = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
    } else {
      errors.push_back({pos_of(path, k.source()),
                        "unknown key '" + key + "' in [history]" + did_you_mean(key, keys)});
    }
  }
}

}  // namespace sonde::engine::history
