// The alarm sections of a task file. See alarm_config.hpp and docs/alarms.md.
#include "alarms/alarm_config.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <map>
#include <set>

#include <date/tz.h>

#include "core/toml_util.hpp"

namespace sonde::engine::alarms {

using ms = std::chrono::milliseconds;

const std::vector<std::string>& policy_keys() {
  static const std::vector<std::string> k = {
      "failure_threshold", "success_threshold", "renotify",  "notify",
      "depends_on",        "flap_window",       "flap_high", "flap_low"};
  return k;
}

const std::vector<std::string>& notifier_common_keys() {
  static const std::vector<std::string> k = {"name",      "type",      "group_wait",
                                             "max_age",   "timeout",   "retry_initial",
                                             "retry_max", "rate_limit"};
  return k;
}

bool parse_rate_limit(const std::string& text, int& count, ms& period) {
  auto slash = text.find('/');
  if (slash == std::string::npos || slash == 0) return false;
  int n = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + slash, n);
  if (ec != std::errc() || p != text.data() + slash || n < 1 || n > 100000) return false;
  auto d = parse_duration(text.substr(slash + 1));
  if (!d || *d < std::chrono::seconds(1) || *d > std::chrono::hours(24 * 7)) return false;
  count = n;
  period = std::chrono::duration_cast<ms>(*d);
  return true;
}

namespace {

std::string where_text(const source_pos& p) {
  return p.file + ":" + std::to_string(p.line) + ":" + std::to_string(p.column);
}

bool valid_name(const std::string& s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '-' || c == '.';
  });
}

// One key of a policy table ([alarms] or a task's `alarm`) into `p`. False: unknown key.
bool read_policy_key(const std::string& path, const std::string& key, const toml::node& v,
                     alarm_policy& p, const alarm_settings* settings, bool in_defaults,
                     std::vector<config_error>& errors) {
  auto vpos = pos_of(path, v.source());
  auto err = [&](std::string m) { errors.push_back({vpos, std::move(m)}); };
  auto integer = [&](int lo, int hi, int& dst) {
    auto i = v.value_exact<std::int64_t>();
    if (!i || *i < lo || *i > hi)
      err("'" + key + "' must be an integer from " + std::to_string(lo) + " to " +
          std::to_string(hi));
    else
      dst = static_cast<int>(*i);
  };
  auto percent = [&](double& dst) {
    auto d = v.value<double>();
    if (!d || !(*d >= 0 && *d <= 100))
      err("'" + key + "' must be a percentage from 0 to 100");
    else
      dst = *d;
  };
  if (key == "failure_threshold") {
    integer(1, 1000, p.failure_threshold);
  } else if (key == "success_threshold") {
    integer(1, 1000, p.success_threshold);
  } else if (key == "renotify") {
    auto d = duration_from_node(v);
    if (!d || (*d != duration::zero() && *d < std::chrono::seconds(1)) ||
        *d > std::chrono::hours(24 * 30))
      err("'renotify' must be \"0s\" (never) or a duration from 1s to 30d" +
          (d ? std::string() : ": " + d.error()));
    else
      p.renotify = std::chrono::duration_cast<ms>(*d);
  } else if (key == "notify") {
    std::vector<std::string> names;
    bool ok = true;
    if (auto s = v.value_exact<std::string>())
      names.push_back(*s);
    else if (auto* arr = v.as_array()) {
      for (auto& e : *arr) {
        auto s2 = e.value_exact<std::string>();
        if (!s2) {
          ok = false;
          break;
        }
        names.push_back(*s2);
      }
    } else
      ok = false;
    if (!ok) {
      err("'notify' must be a list of notifier names, e.g. notify = [\"ops\"]");
    } else {
      std::vector<std::string> known;
      if (settings)
        for (const auto& n : settings->notifiers) known.push_back(n.spec.name);
      for (const auto& n : names) {
        if (std::find(known.begin(), known.end(), n) != known.end()) continue;
        err("'notify': no [[notifier]] is named '" + n + "'" + did_you_mean(n, known) +
            (known.empty() ? std::string("; none is defined") : std::string()));
        ok = false;
      }
      std::set<std::string> seen(names.begin(), names.end());
      if (seen.size() != names.size()) {
        err("'notify' names a notifier twice");
        ok = false;
      }
      if (ok) p.notify = std::move(names);
    }
  } else if (key == "depends_on") {
    auto s = v.value_exact<std::string>();
    if (in_defaults)
      err("'depends_on' belongs to a task's alarm table, not to [alarms]");
    else if (!s || s->empty())
      err("'depends_on' must be a task name");
    else
      p.depends_on = *s;
  } else if (key == "flap_window") {
    auto i = v.value_exact<std::int64_t>();
    if (!i || (*i != 0 && (*i < 3 || *i > 1000)))
      err("'flap_window' must be 0 (no flap detection) or an integer from 3 to 1000");
    else
      p.flap_window = static_cast<int>(*i);
  } else if (key == "flap_high") {
    percent(p.flap_high);
  } else if (key == "flap_low") {
    percent(p.flap_low);
  } else {
    return false;
  }
  return true;
}

void read_policy_table(const std::string& path, const toml::table& t, alarm_policy& p,
                       const alarm_settings* settings, bool in_defaults, const std::string& what,
                       std::vector<config_error>& errors) {
  for (auto&& [k, v] : t) {
    std::string key(k.str());
    if (!read_policy_key(path, key, v, p, settings, in_defaults, errors))
      errors.push_back({pos_of(path, k.source()),
                        "unknown key '" + key + "' in " + what + did_you_mean(key, policy_keys())});
  }
  if (p.flap_low >= p.flap_high && p.flap_window > 0)
    errors.push_back({pos_of(path, t.source()),
                      what + ": 'flap_low' (" + std::to_string(static_cast<int>(p.flap_low)) +
                          "%) must be below 'flap_high' (" +
                          std::to_string(static_cast<int>(p.flap_high)) + "%)"});
}

std::string kind_text(option_kind k) {
  switch (k) {
    case option_kind::string:
      return "a string";
    case option_kind::boolean:
      return "true or false";
    case option_kind::integer:
      return "an integer";
    case option_kind::duration:
      return "a duration such as \"10s\"";
    case option_kind::string_list:
      return "a list of strings";
    case option_kind::string_table:
      return "a table of strings, e.g. { Key = \"value\" }";
  }
  return "a value";
}

// A notifier option from TOML to JSON by its kind; nullopt when the value is not of that kind.
std::optional<nlohmann::json> option_json(option_kind k, const toml::node& v) {
  switch (k) {
    case option_kind::string:
      if (auto s = v.value_exact<std::string>()) return nlohmann::json(*s);
      return std::nullopt;
    case option_kind::boolean:
      if (auto b = v.value_exact<bool>()) return nlohmann::json(*b);
      return std::nullopt;
    case option_kind::integer:
      if (auto i = v.value_exact<std::int64_t>()) return nlohmann::json(*i);
      return std::nullopt;
    case option_kind::duration: {
      auto s = v.value_exact<std::string>();
      if (!s || !parse_duration(*s)) return std::nullopt;
      return nlohmann::json(*s);
    }
    case option_kind::string_list: {
      auto out = nlohmann::json::array();
      if (auto s = v.value_exact<std::string>()) return out.push_back(*s), out;
      auto* arr = v.as_array();
      if (!arr) return std::nullopt;
      for (auto& e : *arr) {
        auto s2 = e.value_exact<std::string>();
        if (!s2) return std::nullopt;
        out.push_back(*s2);
      }
      return out;
    }
    case option_kind::string_table: {
      auto* t = v.as_table();
      if (!t) return std::nullopt;
      auto out = nlohmann::json::object();
      for (auto&& [k2, v2] : *t) {
        auto s = v2.value_exact<std::string>();
        if (!s) return std::nullopt;
        out[std::string(k2.str())] = *s;
      }
      return out;
    }
  }
  return std::nullopt;
}

void read_notifier(const std::string& path, const toml::table& t, alarm_settings& out,
                   std::vector<config_error>& errors) {
  notifier_config nc;
  const auto tpos = pos_of(path, t.source());
  nc.file = where_text(tpos);
  const std::size_t before = errors.size();
  auto err = [&](source_pos p, std::string m) { errors.push_back({std::move(p), std::move(m)}); };
  std::map<std::string, source_pos> key_pos;
  // name and type first: the type decides which keys exist.
  if (auto* n = t.get("name")) {
    auto s = n->value_exact<std::string>();
    if (!s || !valid_name(*s))
      err(pos_of(path, n->source()),
          "notifier 'name' must be 1 to 64 letters, digits, '_', '-' or '.'");
    else
      nc.spec.name = *s;
  } else {
    err(tpos, "[[notifier]] has no 'name'");
  }
  for (const auto& other : out.notifiers)
    if (!nc.spec.name.empty() && other.spec.name == nc.spec.name)
      err(pos_of(path, t.get("name")->source()),
          "duplicate notifier name '" + nc.spec.name + "' (first defined at " + other.file + ")");
  const auto& types = notifier_types();
  if (auto* n = t.get("type")) {
    auto s = n->value_exact<std::string>();
    if (!s || std::find(types.begin(), types.end(), *s) == types.end()) {
      std::string list;
      for (const auto& ty : types) list += (list.empty() ? "" : ", ") + ty;
      err(pos_of(path, n->source()), "unknown notifier type" +
                                         (s ? " '" + *s + "'" + did_you_mean(*s, types) : "") +
                                         "; expected one of " + list);
    } else {
      nc.spec.type = *s;
    }
  } else {
    err(tpos,
        "[[notifier]] has no 'type' (webhook, slack, email, ntfy, telegram, pagerduty, exec)");
  }
  const auto& opts = notifier_options(nc.spec.type);
  for (auto&& [k, v] : t) {
    std::string key(k.str());
    auto vpos = pos_of(path, v.source());
    key_pos[key] = vpos;
    if (key == "name" || key == "type") continue;
    auto dur = [&](ms lo, ms hi, ms& dst, const std::string& range) {
      auto d = duration_from_node(v);
      if (!d || *d < lo || *d > hi)
        err(vpos, "'" + key + "' must be a duration from " + range +
                      (d ? std::string() : ": " + d.error()));
      else
        dst = std::chrono::duration_cast<ms>(*d);
    };
    if (key == "group_wait") {
      dur(ms(0), std::chrono::hours(1), nc.group_wait, "0s to 1h");
    } else if (key == "max_age") {
      dur(std::chrono::minutes(1), std::chrono::hours(24 * 30), nc.max_age, "1m to 30d");
    } else if (key == "timeout") {
      dur(ms(100), std::chrono::minutes(5), nc.spec.timeout, "100ms to 5m");
    } else if (key == "retry_initial") {
      dur(ms(100), std::chrono::hours(1), nc.retry_initial, "100ms to 1h");
    } else if (key == "retry_max") {
      dur(ms(100), std::chrono::hours(24), nc.retry_max, "100ms to 1d");
    } else if (key == "rate_limit") {
      auto s = v.value_exact<std::string>();
      if (!s || !parse_rate_limit(*s, nc.rate_count, nc.rate_period))
        err(vpos,
            "'rate_limit' must be \"COUNT/PERIOD\" such as \"20/1h\" (COUNT 1 to 100000, PERIOD "
            "1s to 7d)");
    } else if (nc.spec.type.empty()) {
      continue;  // unknown type: its options cannot be judged
    } else {
      auto o = std::find_if(opts.begin(), opts.end(),
                            [&](const notifier_option& x) { return x.key == key; });
      if (o == opts.end()) {
        std::vector<std::string> cands = notifier_common_keys();
        for (const auto& x : opts) cands.push_back(x.key);
        err(pos_of(path, k.source()), "unknown key '" + key + "' for notifier type '" +
                                          nc.spec.type + "'" + did_you_mean(key, cands));
        continue;
      }
      auto j = option_json(o->kind, v);
      if (!j)
        err(vpos, "'" + key + "' must be " + kind_text(o->kind) + ", not " + node_type_name(v));
      else
        nc.spec.options[key] = std::move(*j);
    }
  }
  if (nc.retry_max < nc.retry_initial)
    err(tpos, "'retry_max' must not be shorter than 'retry_initial'");
  if (!nc.spec.type.empty()) {
    for (const auto& o : opts)
      if (o.required && !nc.spec.options.contains(o.key))
        err(tpos, "notifier '" + nc.spec.name + "' (" + nc.spec.type + ") needs '" + o.key +
                      "': " + o.help);
    if (errors.size() == before) {
      auto ok = validate_notifier(nc.spec);
      if (!ok) {
        auto it = key_pos.find(ok.error().key);
        err(it != key_pos.end() ? it->second : tpos,
            "notifier '" + nc.spec.name + "': " + ok.error().message);
      }
    }
  }
  if (errors.size() == before) out.notifiers.push_back(std::move(nc));
}

// "14:00" / "14:00:30" -> seconds of the day.
std::optional<std::int64_t> time_of_day(const std::string& s) {
  int h = 0, m = 0, sec = 0;
  char tail = 0;
  int n = std::sscanf(s.c_str(), "%2d:%2d:%2d%c", &h, &m, &sec, &tail);
  if (n == 2 && s.size() == 5) n = 3, sec = 0;
  if (n != 3 || (s.size() != 8 && s.size() != 5)) return std::nullopt;
  if (h < 0 || h > 23 || m < 0 || m > 59 || sec < 0 || sec > 59) return std::nullopt;
  return h * 3600 + m * 60 + sec;
}

// "2026-12-03T14:00[:00][Z|+01:00]" -> local or UTC seconds since the epoch.
std::optional<std::int64_t> date_time(const std::string& text, bool& absolute) {
  std::string s = text;
  if (s.size() >= 11 && (s[10] == ' ')) s[10] = 'T';
  int y = 0, mo = 0, d = 0;
  if (s.size() < 16 || std::sscanf(s.c_str(), "%4d-%2d-%2d", &y, &mo, &d) != 3 || s[4] != '-' ||
      s[7] != '-' || s[10] != 'T')
    return std::nullopt;
  std::string rest = s.substr(11);
  std::string clock = rest.substr(0, rest.size() >= 8 && rest[5] == ':' ? 8 : 5);
  auto tod = time_of_day(clock);
  if (!tod) return std::nullopt;
  std::string zone = rest.substr(clock.size());
  std::int64_t offset = 0;
  absolute = false;
  if (zone == "Z" || zone == "z") {
    absolute = true;
  } else if (!zone.empty()) {
    int zh = 0, zm = 0;
    if (zone.size() != 6 || (zone[0] != '+' && zone[0] != '-') ||
        std::sscanf(zone.c_str() + 1, "%2d:%2d", &zh, &zm) != 2 || zh > 23 || zm > 59)
      return std::nullopt;
    offset = (zh * 3600 + zm * 60) * (zone[0] == '-' ? -1 : 1);
    absolute = true;
  }
  auto ymd =
      date::year{y} / date::month{static_cast<unsigned>(mo)} / date::day{static_cast<unsigned>(d)};
  if (!ymd.ok() || y < 1970 || y > 9999) return std::nullopt;
  auto days = date::sys_days(ymd).time_since_epoch().count();
  return static_cast<std::int64_t>(days) * 86400 + *tod - offset;
}

std::string toml_text(const toml::node& n) {
  if (auto s = n.value_exact<std::string>()) return *s;
  auto two = [](unsigned v) { return (v < 10 ? "0" : "") + std::to_string(v); };
  auto tm = [&](const toml::time& t) {
    return two(t.hour) + ":" + two(t.minute) + ":" + two(t.second);
  };
  if (auto t = n.value_exact<toml::time>()) return tm(*t);
  if (auto dt = n.value_exact<toml::date_time>()) {
    std::string s = std::to_string(dt->date.year) + "-" + two(dt->date.month) + "-" +
                    two(dt->date.day) + "T" + tm(dt->time);
    if (dt->offset) {
      int off = dt->offset->minutes;
      std::string sign = off < 0 ? "-" : "+";
      off = std::abs(off);
      s += sign + two(static_cast<unsigned>(off / 60)) + ":" + two(static_cast<unsigned>(off % 60));
    }
    return s;
  }
  return {};
}

void read_maintenance(const std::string& path, const toml::table& t, std::size_t index,
                      alarm_settings& out, std::vector<config_error>& errors) {
  maintenance_window w;
  const auto tpos = pos_of(path, t.source());
  w.where = where_text(tpos);
  w.name = "maintenance " + std::to_string(index + 1);
  const std::size_t before = errors.size();
  auto err = [&](source_pos p, std::string m) { errors.push_back({std::move(p), std::move(m)}); };
  static const std::vector<std::string> keys = {"name",     "tasks", "tags",    "start",
                                                "duration", "days",  "timezone"};
  const toml::node* start = nullptr;
  for (auto&& [k, v] : t) {
    std::string key(k.str());
    auto vpos = pos_of(path, v.source());
    if (key == "name") {
      auto s = v.value_exact<std::string>();
      if (!s || s->empty() || s->size() > 200)
        err(vpos, "'name' must be a string of 1 to 200 characters");
      else
        w.name = *s;
    } else if (key == "tasks") {
      bool ok = true;
      if (auto s = v.value_exact<std::string>())
        w.tasks.push_back(*s);
      else if (auto* arr = v.as_array()) {
        for (auto& e : *arr)
          if (auto s2 = e.value_exact<std::string>())
            w.tasks.push_back(*s2);
          else
            ok = false;
      } else
        ok = false;
      if (!ok) err(vpos, "'tasks' must be a list of task names");
    } else if (key == "tags") {
      auto* tt = v.as_table();
      if (!tt) {
        err(vpos, "'tags' must be a table of strings, e.g. tags = { env = \"staging\" }");
        continue;
      }
      for (auto&& [k2, v2] : *tt) {
        if (auto s = v2.value_exact<std::string>())
          w.tags[std::string(k2.str())] = *s;
        else
          err(pos_of(path, v2.source()), "tag '" + std::string(k2.str()) + "' must be a string");
      }
    } else if (key == "start") {
      start = &v;
    } else if (key == "duration") {
      auto d = duration_from_node(v);
      if (!d || *d < std::chrono::seconds(1) || *d > std::chrono::hours(24 * 366))
        err(vpos, "'duration' must be a duration from 1s to 366d" +
                      (d ? std::string() : ": " + d.error()));
      else
        w.length = std::chrono::duration_cast<std::chrono::seconds>(*d);
    } else if (key == "days") {
      static const std::vector<std::string> names = {"mon", "tue", "wed", "thu",
                                                     "fri", "sat", "sun"};
      std::vector<std::string> given;
      if (auto s = v.value_exact<std::string>())
        given.push_back(*s);
      else if (auto* arr = v.as_array())
        for (auto& e : *arr) given.push_back(e.value_exact<std::string>().value_or("?"));
      if (given.empty()) err(vpos, "'days' must be a list such as [\"mon\", \"fri\"] or \"daily\"");
      for (auto d : given) {
        std::transform(d.begin(), d.end(), d.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        if (d == "daily") {
          w.days |= 0x7f;
          continue;
        }
        if (d == "weekdays") {
          w.days |= 0x1f;
          continue;
        }
        if (d == "weekends") {
          w.days |= 0x60;
          continue;
        }
        auto it = std::find(names.begin(), names.end(), d.substr(0, 3));
        static const std::vector<std::string> full = {"monday", "tuesday",  "wednesday", "thursday",
                                                      "friday", "saturday", "sunday"};
        if (it == names.end() ||
            (d.size() != 3 && std::find(full.begin(), full.end(), d) == full.end())) {
          auto all = names;
          all.insert(all.end(), {"daily", "weekdays", "weekends"});
          err(vpos,
              "'days': unknown day '" + d + "'" + did_you_mean(d, all) +
                  "; expected mon, tue, wed, thu, fri, sat, sun, daily, weekdays or weekends");
          continue;
        }
        w.days |= 1u << (it - names.begin());
      }
    } else if (key == "timezone") {
      auto s = v.value_exact<std::string>();
      if (!s) {
        err(vpos, "'timezone' must be an IANA time zone name such as \"Europe/Berlin\"");
        continue;
      }
      try {
        (void)date::locate_zone(*s);
        w.zone = *s;
      } catch (const std::exception&) {
        err(vpos, "'timezone': unknown time zone '" + *s +
                      "' (an IANA name such as \"Europe/Berlin\" or \"UTC\"; see "
                      "/usr/share/zoneinfo)");
      }
    } else {
      err(pos_of(path, k.source()),
          "unknown key '" + key + "' in [[maintenance]]" + did_you_mean(key, keys));
    }
  }
  if (w.tasks.empty() && w.tags.empty())
    err(tpos, "[[maintenance]] '" + w.name + "' needs 'tasks' or 'tags' to say what it covers");
  if (w.length.count() == 0 && !t.get("duration"))
    err(tpos, "[[maintenance]] '" + w.name + "' has no 'duration' (e.g. duration = \"2h\")");
  if (!start) {
    err(tpos, "[[maintenance]] '" + w.name +
                  "' has no 'start' (\"2026-12-24T22:00\" once, or \"02:00\" with 'days')");
  } else {
    auto spos = pos_of(path, start->source());
    std::string text = toml_text(*start);
    if (w.days) {
      auto tod = time_of_day(text);
      if (!tod)
        err(spos,
            "'start' of a weekly window is a time of day such as \"02:00\", not \"" + text + "\"");
      else
        w.start_seconds = *tod;
      if (w.length > std::chrono::hours(24 * 7)) err(tpos, "a weekly window lasts at most 7d");
    } else {
      auto dt = date_time(text, w.absolute);
      if (!dt)
        err(spos,
            "'start' must be a date and time such as \"2026-12-24T22:00\" (local to "
            "'timezone', or with Z or an offset), or a time of day with 'days'; not \"" +
                text + "\"");
      else
        w.start_seconds = *dt;
    }
  }
  if (errors.size() == before) out.maintenance.push_back(std::move(w));
}

}  // namespace

void read_alarm_sections(const std::string& path, const toml::table& doc, alarm_settings& out,
                         std::vector<config_error>& errors) {
  // Notifiers first: [alarms] notify names them.
  if (auto* n = doc.get("notifier")) {
    auto* arr = n->as_array();
    if (!arr || !arr->is_array_of_tables())
      errors.push_back({pos_of(path, n->source()), "notifiers are written as [[notifier]] tables"});
    else
      for (auto& e : *arr) read_notifier(path, *e.as_table(), out, errors);
  }
  auto p = std::make_shared<alarm_policy>();
  if (auto* n = doc.get("alarms")) {
    if (auto* t = n->as_table()) {
      toml::table rest = *t;
      if (auto* en = t->get("enabled")) {
        if (auto b = en->value_exact<bool>())
          out.enabled = *b;
        else
          errors.push_back({pos_of(path, en->source()), "'enabled' must be true or false"});
        rest.erase("enabled");
      }
      read_policy_table(path, rest, *p, &out, true, "[alarms]", errors);
    } else
      errors.push_back({pos_of(path, n->source()), "'alarms' must be a table: [alarms]"});
  }
  out.defaults = p;
  if (auto* n = doc.get("maintenance")) {
    auto* arr = n->as_array();
    if (!arr || !arr->is_array_of_tables())
      errors.push_back(
          {pos_of(path, n->source()), "maintenance windows are written as [[maintenance]] tables"});
    else
      for (std::size_t i = 0; i < arr->size(); ++i)
        read_maintenance(path, *(*arr)[i].as_table(), i, out, errors);
  }
}

std::shared_ptr<const alarm_policy> read_task_alarm(const std::string& path, const toml::node& node,
                                                    const alarm_settings& settings,
                                                    std::vector<config_error>& errors) {
  auto* t = node.as_table();
  if (!t) {
    errors.push_back({pos_of(path, node.source()),
                      "'alarm' must be a table, e.g. alarm = { failure_threshold = 2 }"});
    return nullptr;
  }
  auto p = std::make_shared<alarm_policy>(*settings.defaults);
  read_policy_table(path, *t, *p, &settings, false, "the task's 'alarm'", errors);
  return p;
}

void check_alarm_references(const std::string& path, const toml::table& doc,
                            const std::vector<task_spec>& tasks, const alarm_settings& settings,
                            std::vector<config_error>& errors) {
  std::map<std::string, const task_spec*> by_name;
  std::vector<std::string> names;
  for (const auto& t : tasks) {
    by_name[t.name] = &t;
    names.push_back(t.name);
  }
  // depends_on: positions from the document (the specs keep only the name).
  std::map<std::string, source_pos> dep_pos;
  if (auto* arr = doc["task"].as_array())
    for (auto& e : *arr)
      if (auto* tt = e.as_table())
        if (auto* a = tt->get("alarm"))
          if (auto* at = a->as_table())
            if (auto* d = at->get("depends_on"))
              if (auto* nm = tt->get("name"))
                if (auto s = nm->value_exact<std::string>())
                  dep_pos[*s] = pos_of(path, d->source());
  for (const auto& t : tasks) {
    if (!t.alarm || t.alarm->depends_on.empty()) continue;
    const auto& dep = t.alarm->depends_on;
    auto where = dep_pos.count(t.name) ? dep_pos[t.name] : t.where;
    if (dep == t.name) {
      errors.push_back({where, "task '" + t.name + "' cannot depend on itself"});
      continue;
    }
    if (!by_name.count(dep)) {
      errors.push_back(
          {where, "'depends_on': no task is named '" + dep + "'" + did_you_mean(dep, names)});
      continue;
    }
    // Walk up the chain: a cycle comes back to this task.
    std::set<std::string> seen{t.name};
    std::string cur = dep, chain = t.name + " -> " + dep;
    while (true) {
      auto it = by_name.find(cur);
      if (it == by_name.end() || !it->second->alarm || it->second->alarm->depends_on.empty()) break;
      cur = it->second->alarm->depends_on;
      chain += " -> " + cur;
      if (seen.count(cur)) {
        errors.push_back({where, "'depends_on' makes a cycle: " + chain});
        break;
      }
      seen.insert(it->first);
    }
  }
  (void)settings;
  if (auto* arr = doc["maintenance"].as_array())
    for (auto& e : *arr)
      if (auto* mt = e.as_table())
        if (auto* tn = mt->get("tasks")) {
          auto check = [&](const toml::node& n) {
            auto s = n.value_exact<std::string>();
            if (s && !by_name.count(*s))
              errors.push_back({pos_of(path, n.source()), "[[maintenance]] names no task '" + *s +
                                                              "'" + did_you_mean(*s, names)});
          };
          if (auto* ta = tn->as_array())
            for (auto& x : *ta) check(x);
          else
            check(*tn);
        }
}

}  // namespace sonde::engine::alarms
