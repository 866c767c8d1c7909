// Task-file loading and validation. See config.hpp and docs/config.md.
#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <unordered_map>

#include <toml++/toml.h>

#include "alarms/alarm_config.hpp"
#include "control/control_request.hpp"
#include "core/config.hpp"
#include "core/files.hpp"
#include "core/toml_util.hpp"
#include "history/history_config.hpp"

namespace fs = std::filesystem;

namespace sonde::engine {

std::string config_error::to_string() const {
  std::string s = where.file;
  if (where.line) s += ":" + std::to_string(where.line) + ":" + std::to_string(where.column);
  return s + ": error: " + message;
}

std::string closest(const std::string& word, const std::vector<std::string>& candidates) {
  auto lower = [](std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  std::string w = lower(word);
  std::string best;
  std::size_t best_d = std::max<std::size_t>(2, w.size() / 3) + 1;
  for (const auto& cand : candidates) {
    std::string c = lower(cand);
    // Optimal string alignment distance: an adjacent swap ("tpc" for "tcp") is one edit.
    std::vector<std::vector<std::size_t>> d(w.size() + 1, std::vector<std::size_t>(c.size() + 1));
    for (std::size_t i = 0; i <= w.size(); ++i) d[i][0] = i;
    for (std::size_t j = 0; j <= c.size(); ++j) d[0][j] = j;
    for (std::size_t i = 1; i <= w.size(); ++i)
      for (std::size_t j = 1; j <= c.size(); ++j) {
        d[i][j] = std::min(
            {d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (w[i - 1] != c[j - 1] ? 1u : 0u)});
        if (i > 1 && j > 1 && w[i - 1] == c[j - 2] && w[i - 2] == c[j - 1])
          d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    const std::size_t dist = d[w.size()][c.size()];
    if (dist < best_d) {
      best_d = dist;
      best = cand;
    }
  }
  return best;
}

namespace {

const std::vector<std::string> common_keys = {"name",    "type", "target", "interval", "timeout",
                                              "enabled", "tags", "warn",   "crit",     "alarm"};
constexpr duration default_interval = std::chrono::seconds(60);
constexpr duration default_timeout = std::chrono::seconds(5);

}  // namespace

source_pos pos_of(const std::string& file, const toml::source_region& r) {
  return {file, r.begin.line, r.begin.column};
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& cands) {
  auto c = closest(word, cands);
  return c.empty() ? std::string() : " (did you mean '" + c + "'?)";
}

std::string node_type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a number";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::date:
    case toml::node_type::time:
    case toml::node_type::date_time:
      return "a date/time";
    default:
      return "a value";
  }
}

tl::expected<duration, std::string> duration_from_node(const toml::node& n) {
  if (auto s = n.value_exact<std::string>()) return parse_duration(*s);
  if (auto i = n.value_exact<std::int64_t>()) {
    if (*i < 0) return tl::unexpected(std::string("a duration cannot be negative"));
    if (*i > 10LL * 365 * 86400) return tl::unexpected(std::string("duration too large"));
    return duration(std::chrono::seconds(*i));
  }
  if (auto d = n.value_exact<double>()) {
    if (!(*d >= 0) || *d > 10.0 * 365 * 86400)
      return tl::unexpected(std::string("duration out of range"));
    return duration(static_cast<std::int64_t>(*d * 1e9));
  }
  return tl::unexpected("expected a duration such as \"10s\", not " + node_type_name(n));
}

namespace {

tl::expected<option_value, std::string> option_from_node(std::string_view key, option_type t,
                                                         const toml::node& n) {
  auto wrong = [&](std::string what) -> tl::unexpected<std::string> {
    return tl::unexpected("option '" + std::string(key) + "' must be " + what + ", not " +
                          node_type_name(n));
  };
  switch (t) {
    case option_type::boolean:
      if (auto b = n.value_exact<bool>()) return option_value(*b);
      return wrong("a boolean (true or false)");
    case option_type::integer:
      if (auto i = n.value_exact<std::int64_t>()) return option_value(*i);
      return wrong("an integer");
    case option_type::number:
      if (auto d = n.value<double>()) return option_value(*d);
      return wrong("a number");
    case option_type::string:
      if (const auto* s = n.as_string()) return option_value(s->get());
      return wrong("a string");
    case option_type::duration: {
      auto d = duration_from_node(n);
      if (!d) return tl::unexpected("option '" + std::string(key) + "': " + d.error());
      return option_value(*d);
    }
    case option_type::string_list: {
      std::vector<std::string> items;
      auto one = [&](const toml::node& e) -> bool {
        if (auto s = e.value_exact<std::string>()) return items.push_back(*s), true;
        if (auto i = e.value_exact<std::int64_t>())
          return items.push_back(std::to_string(*i)), true;
        return false;
      };
      if (auto* arr = n.as_array()) {
        for (auto& e : *arr)
          if (!one(e)) return wrong("a list of strings");
        return option_value(std::move(items));
      }
      if (one(n)) return option_value(std::move(items));
      return wrong("a list of strings");
    }
  }
  return wrong("a supported value");
}

}  // namespace

bool metric_matches(std::string_view pattern, std::string_view name) {
  while (true) {
    auto pdot = pattern.find('.'), ndot = name.find('.');
    auto pseg = pattern.substr(0, pdot), nseg = name.substr(0, ndot);
    bool wildcard = pseg.size() > 2 && pseg.front() == '<' && pseg.back() == '>';
    if (!wildcard && pseg != nseg) return false;
    if (wildcard && nseg.empty()) return false;
    // <n> is a number (cpu.<n>, hop.<n>.loss): "cpu.totl" must not pass for "cpu.<n>".
    if (wildcard && pseg == "<n>" &&
        !std::all_of(nseg.begin(), nseg.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return false;
    if (pdot == std::string_view::npos || ndot == std::string_view::npos)
      return pdot == std::string_view::npos && ndot == std::string_view::npos;
    pattern.remove_prefix(pdot + 1);
    name.remove_prefix(ndot + 1);
  }
}

namespace {

// The common keys, in the order of common_keys; every other key is a probe option.
enum common_key : int {
  k_name,
  k_type,
  k_target,
  k_interval,
  k_timeout,
  k_enabled,
  k_tags,
  k_warn,
  k_crit,
  k_alarm,
  k_common_count,
  k_option = -1
};

// Which common key `k` is (k_option for none): one length switch, no list search (this runs
// for every key of every task).
int common_key_of(std::string_view k) noexcept {
  switch (k.size()) {
    case 4:
      if (k == "name") return k_name;
      if (k == "type") return k_type;
      if (k == "tags") return k_tags;
      if (k == "warn") return k_warn;
      if (k == "crit") return k_crit;
      return k_option;
    case 5:
      return k == "alarm" ? k_alarm : k_option;
    case 6:
      return k == "target" ? k_target : k_option;
    case 7:
      if (k == "timeout") return k_timeout;
      if (k == "enabled") return k_enabled;
      return k_option;
    case 8:
      return k == "interval" ? k_interval : k_option;
    default:
      return k_option;
  }
}

// A key of a task (or of [defaults]) as written; positions are computed only for errors.
struct raw_entry {
  std::string_view key;
  const toml::key* key_node;
  const toml::node* node;
  bool from_defaults;
  int common;  // common_key_of(key)
};
using entry_list = std::vector<raw_entry>;  // a handful of keys: linear search beats a map

const raw_entry* find_entry(const entry_list& l, std::string_view key) {
  for (const auto& e : l)
    if (e.key == key) return &e;
  return nullptr;
}

}  // namespace

tl::expected<std::unique_ptr<probe_instance>, probe_error> create_probe(
    const probe_type_entry& entry, const std::string& target,
    const std::vector<std::pair<std::string, option_value>>& options, duration timeout) {
  // Inline buffers: this runs once per task, tens of thousands of times for large files.
  std::array<sonde_option, 24> c_inline;
  std::vector<sonde_option> c_heap;
  sonde_option* c = c_inline.data();
  if (options.size() + 1 > c_inline.size()) {
    c_heap.resize(options.size() + 1);
    c = c_heap.data();
  }
  std::vector<std::vector<const char*>> lists;
  for (std::size_t i = 0; i < options.size(); ++i) {
    auto& [key, v] = options[i];
    sonde_value cv{};
    std::visit(
        [&](const auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, bool>) {
            cv.type = SONDE_VALUE_BOOL;
            cv.boolean = x;
          } else if constexpr (std::is_same_v<T, std::int64_t>) {
            cv.type = SONDE_VALUE_INT;
            cv.integer = x;
          } else if constexpr (std::is_same_v<T, double>) {
            cv.type = SONDE_VALUE_NUMBER;
            cv.number = x;
          } else if constexpr (std::is_same_v<T, std::string>) {
            cv.type = SONDE_VALUE_STRING;
            cv.string = x.c_str();
          } else if constexpr (std::is_same_v<T, duration>) {
            cv.type = SONDE_VALUE_DURATION;
            cv.integer = x.count();
          } else {
            if (lists.capacity() == 0) lists.reserve(options.size());
            auto& l = lists.emplace_back();
            for (auto& s : x) l.push_back(s.c_str());
            cv.type = SONDE_VALUE_STRING_LIST;
            cv.list = l.data();
            cv.list_len = l.size();
          }
        },
        v);
    c[i] = sonde_option{key.c_str(), cv};
  }
  // The run timeout travels as the reserved option "timeout" (after the table's options), so a
  // checker can refuse a schedule that cannot finish in time when the task file is loaded.
  std::size_t n = options.size();
  if (timeout > duration::zero()) {
    sonde_value tv{};
    tv.type = SONDE_VALUE_DURATION;
    tv.integer = timeout.count();
    c[n++] = sonde_option{"timeout", tv};
  }
  void* handle = nullptr;
  sonde_error err{};
  if (entry.type->create(target.c_str(), c, n, &handle, &err) != 0 || !handle) {
    err.key[sizeof err.key - 1] = '\0';
    err.message[sizeof err.message - 1] = '\0';
    return tl::unexpected(probe_error{static_cast<probe_errc>(err.code), err.key,
                                      err.message[0] ? err.message : "probe creation failed"});
  }
  return std::make_unique<probe_instance>(entry.type, handle);
}

tl::expected<option_value, std::string> option_from_text(const probe_type_entry& entry,
                                                         const std::string& key,
                                                         const std::string& text) {
  std::vector<std::string> keys;
  for (std::size_t i = 0; i < entry.type->option_count; ++i) {
    const auto& o = entry.type->options[i];
    keys.push_back(o.key);
    if (key == o.key) return parse_option_text(key, static_cast<option_type>(o.type), text);
  }
  return tl::unexpected("unknown option '" + key + "' for type '" + entry.type->name + "'" +
                        did_you_mean(key, keys));
}

tl::expected<condition, std::string> parse_condition_for(const probe_type_entry& entry,
                                                         const std::string& text) {
  const sonde_probe_type* t = entry.type;
  enum_resolver names = [t](std::string_view metric,
                            std::string_view name) -> std::optional<double> {
    for (std::size_t i = 0; i < t->enum_count; ++i) {
      std::string_view n = t->enums[i].name;
      if (metric != t->enums[i].metric || n.size() != name.size()) continue;
      bool eq = std::equal(n.begin(), n.end(), name.begin(), [](char a, char b) {
        return std::tolower(static_cast<unsigned char>(a)) ==
               std::tolower(static_cast<unsigned char>(b));
      });
      if (eq) return t->enums[i].value;
    }
    return std::nullopt;
  };
  auto c = parse_condition(text, names);
  if (!c) return c;
  if (c->metric == "latency") return c;
  std::vector<std::string> metrics{"latency"};
  for (std::size_t i = 0; i < t->metric_count; ++i) {
    if (metric_matches(t->metrics[i].name, c->metric)) return c;
    metrics.push_back(t->metrics[i].name);
  }
  return tl::unexpected("invalid condition \"" + text + "\": type '" + t->name +
                        "' has no metric '" + c->metric + "'" + did_you_mean(c->metric, metrics));
}

namespace {

// [control]: see docs/config.md. Kept apart from [engine] so the control server's settings are
// validated (and positioned) with the rest of the file.
void read_control_section(const std::string& path, const toml::table& t, control_settings& out,
                          std::vector<config_error>& errors) {
  static const std::vector<std::string> keys = {
      "listen",         "token",       "tls_cert",     "tls_key",      "max_line",
      "max_clients",    "watch_queue", "auth_timeout", "idle_timeout", "max_unauthenticated",
      "max_per_address"};
  auto file_path = [&](const std::string& s) {
    fs::path p(s);
    if (p.is_relative()) p = fs::absolute(fs::path(path)).parent_path() / p;
    return p.lexically_normal().string();
  };
  for (auto&& [k, v] : t) {
    std::string key(k.str());
    auto vpos = pos_of(path, v.source());
    auto str = v.value_exact<std::string>();
    auto integer = [&](std::int64_t lo, std::int64_t hi, std::int64_t& dst) {
      auto i = v.value_exact<std::int64_t>();
      if (!i || *i < lo || *i > hi)
        errors.push_back({vpos, "'" + key + "' must be an integer from " + std::to_string(lo) +
                                    " to " + std::to_string(hi)});
      else
        dst = *i;
    };
    if (key == "listen") {
      if (!str)
        errors.push_back({vpos, "'listen' must be a string such as \"127.0.0.1:6543\" or \"off\""});
      else if (*str != "off" && !parse_listen_address(*str))
        errors.push_back({vpos, "'listen': " + parse_listen_address(*str).error()});
      else
        out.listen = *str;
    } else if (key == "token") {
      if (!str || str->empty())
        errors.push_back({vpos, "'token' must be a non-empty string"});
      else if (auto ok = check_token(*str, true); !ok)
        errors.push_back({vpos, "'token': " + ok.error()});
      else
        out.token = *str;
    } else if (key == "auth_timeout" || key == "idle_timeout") {
      auto d = duration_from_node(v);
      bool idle = key == "idle_timeout";
      if (!d || (!idle && *d < std::chrono::milliseconds(100)) || *d > std::chrono::hours(24))
        errors.push_back({vpos, "'" + key + "' must be a duration from " +
                                    (idle ? "0s (never)" : "100ms") + " to 1d" +
                                    (d ? "" : ": " + d.error())});
      else
        (idle ? out.idle_timeout : out.auth_timeout) =
            std::chrono::duration_cast<std::chrono::milliseconds>(*d);
    } else if (key == "max_unauthenticated") {
      integer(1, 100000, out.max_unauthenticated);
    } else if (key == "max_per_address") {
      integer(1, 100000, out.max_per_address);
    } else if (key == "tls_cert" || key == "tls_key") {
      if (!str || str->empty())
        errors.push_back({vpos, "'" + key + "' must be a file name"});
      else
        (key == "tls_cert" ? out.tls_cert : out.tls_key) = file_path(*str);
    } else if (key == "max_line") {
      integer(256, 16 << 20, out.max_line);
    } else if (key == "max_clients") {
      integer(1, 100000, out.max_clients);
    } else if (key == "watch_queue") {
      integer(1, 100000, out.watch_queue);
    } else {
      errors.push_back({pos_of(path, k.source()),
                        "unknown key '" + key + "' in [control]" + did_you_mean(key, keys)});
    }
  }
  if (out.tls_cert.empty() != out.tls_key.empty())
    errors.push_back({pos_of(path, t.source()), "[control] needs both 'tls_cert' and 'tls_key'"});
}

}  // namespace

tl::expected<task_file, std::vector<config_error>> read_engine_section(const std::string& path,
                                                                       bool allow_pipe) {
  std::vector<config_error> errors;
  task_file out;
  out.path = path;
  // Only a regular file of sane size: a directory, FIFO or /dev/zero is refused, not read.
  auto file = read_regular_file(path, max_config_bytes, "task file", allow_pipe);
  if (!file) {
    errors.push_back({{path, 0, 0}, file.error().why});
    return tl::unexpected(errors);
  }
  std::string text = std::move(*file);
  auto doc = std::make_shared<toml::table>();
  try {
    *doc = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    errors.push_back({pos_of(path, e.source()), std::string(e.description())});
    return tl::unexpected(errors);
  }
  static const std::vector<std::string> top_keys = {"engine", "control",  "defaults",    "task",
                                                    "alarms", "notifier", "maintenance", "history"};
  for (auto&& [k, v] : *doc) {
    std::string key(k.str());
    if (std::find(top_keys.begin(), top_keys.end(), key) == top_keys.end())
      errors.push_back(
          {pos_of(path, k.source()),
           "unknown top-level key '" + key + "'" + did_you_mean(key, top_keys) +
               "; expected [engine], [control], [defaults], [alarms], [[task]], [[notifier]], "
               "[[maintenance]] or [history]"});
  }
  if (auto* eng = (*doc)["engine"].node()) {
    if (auto* t = eng->as_table()) {
      static const std::vector<std::string> engine_keys = {"plugin_dirs", "max_in_flight"};
      for (auto&& [k, v] : *t) {
        std::string key(k.str());
        auto vpos = pos_of(path, v.source());
        if (key == "plugin_dirs") {
          auto* arr = v.as_array();
          bool ok = arr != nullptr;
          if (arr)
            for (auto& e : *arr) {
              auto s = e.value_exact<std::string>();
              if (!s) {
                ok = false;
                break;
              }
              fs::path p(*s);
              if (p.is_relative()) p = fs::absolute(fs::path(path)).parent_path() / p;
              out.engine.plugin_dirs.push_back(p.lexically_normal().string());
            }
          if (!ok) errors.push_back({vpos, "'plugin_dirs' must be an array of directory names"});
        } else if (key == "max_in_flight") {
          auto i = v.value_exact<std::int64_t>();
          if (!i || *i < 1 || *i > 1'000'000)
            errors.push_back({vpos, "'max_in_flight' must be an integer from 1 to 1000000"});
          else
            out.engine.max_in_flight = *i;
        } else {
          errors.push_back({pos_of(path, k.source()), "unknown key '" + key + "' in [engine]" +
                                                          did_you_mean(key, engine_keys)});
        }
      }
    } else {
      errors.push_back({pos_of(path, eng->source()), "'engine' must be a table: [engine]"});
    }
  }
  if (auto* ctl = (*doc)["control"].node()) {
    if (auto* t = ctl->as_table())
      read_control_section(path, *t, out.control, errors);
    else
      errors.push_back({pos_of(path, ctl->source()), "'control' must be a table: [control]"});
  }
  if (!errors.empty()) return tl::unexpected(errors);
  out.document = doc;
  return out;
}

tl::expected<task_file, std::vector<config_error>> load_tasks(task_file file,
                                                              const plugin_host& plugins) {
  std::vector<config_error> errors;
  const std::string& path = file.path;
  auto& doc = *static_cast<toml::table*>(file.document.get());
  auto err = [&](source_pos p, std::string m) { errors.push_back({std::move(p), std::move(m)}); };

  // Every option key any loaded type knows, for [defaults] validation and suggestions.
  std::vector<std::string> all_option_keys;
  auto known_types = plugins.names();
  for (auto& n : known_types) {
    auto* e = plugins.find(n);
    for (std::size_t i = 0; i < e->type->option_count; ++i)
      all_option_keys.push_back(e->type->options[i].key);
  }

  entry_list defaults;
  auto kpos = [&](const raw_entry& e) { return pos_of(path, e.key_node->source()); };
  auto vpos = [&](const raw_entry& e) { return pos_of(path, e.node->source()); };
  if (auto* dn = doc["defaults"].node()) {
    if (auto* dt = dn->as_table()) {
      for (auto&& [k, v] : *dt) {
        std::string key(k.str());
        auto where = pos_of(path, k.source());
        if (key == "name" || key == "target") {
          err(where, "'" + key + "' cannot have a default (it is specific to each task)");
          continue;
        }
        if (key == "alarm") {
          err(where, "alarm defaults go in [alarms], not in [defaults]");
          continue;
        }
        const int ck = common_key_of(key);
        bool common = ck != k_option;
        bool option =
            std::find(all_option_keys.begin(), all_option_keys.end(), key) != all_option_keys.end();
        if (!common && !option) {
          std::vector<std::string> cands = common_keys;
          cands.insert(cands.end(), all_option_keys.begin(), all_option_keys.end());
          err(where, "unknown key '" + key + "' in [defaults]" + did_you_mean(key, cands));
          continue;
        }
        defaults.push_back(raw_entry{k.str(), &k, &v, true, ck});
      }
    } else {
      err(pos_of(path, dn->source()), "'defaults' must be a table: [defaults]");
    }
  }

  // [defaults] durations are parsed once, not once per task.
  std::vector<std::pair<const toml::node*, tl::expected<duration, std::string>>> default_durations;
  for (const auto& d : defaults)
    if (d.key == "interval" || d.key == "timeout")
      default_durations.emplace_back(d.node, duration_from_node(*d.node));
  auto duration_of = [&](const raw_entry& e) {
    if (e.from_defaults)
      for (auto& [node, value] : default_durations)
        if (node == e.node) return value;
    return duration_from_node(*e.node);
  };

  alarms::read_alarm_sections(path, doc, file.alarms, errors);
  history::read_history_section(path, doc, file.history, errors);

  const toml::array* tasks = nullptr;
  if (auto* tn = doc["task"].node()) {
    tasks = tn->as_array();
    if (!tasks || !tasks->is_array_of_tables()) {
      err(pos_of(path, tn->source()), "tasks are written as an array of tables: [[task]]");
      tasks = nullptr;
    }
  }
  // Keys view the names inside the document, which outlives this function's use of them.
  std::unordered_map<std::string_view, const toml::node*> names_seen;
  entry_list entries;
  if (tasks) {
    file.tasks.reserve(tasks->size());
    names_seen.reserve(tasks->size());
    for (auto& tnode : *tasks) {
      const toml::table& tt = *tnode.as_table();
      task_spec spec;
      spec.where = pos_of(path, tt.source());
      std::size_t errors_before = errors.size();
      entries.assign(defaults.begin(), defaults.end());  // reuses the capacity
      for (auto&& [k, v] : tt) {
        raw_entry e{k.str(), &k, &v, false, common_key_of(k.str())};
        auto it = std::find_if(entries.begin(), entries.end(),
                               [&](const raw_entry& x) { return x.key == e.key; });
        if (it != entries.end())
          *it = e;
        else
          entries.push_back(e);
      }
      std::array<const raw_entry*, k_common_count> common{};
      for (const auto& e : entries)
        if (e.common != k_option) common[static_cast<std::size_t>(e.common)] = &e;

      auto entry_of = [&](common_key key) { return common[static_cast<std::size_t>(key)]; };
      auto str_of = [&](common_key key, std::string& out) -> bool {
        const raw_entry* e = entry_of(key);
        if (!e) return false;
        const auto* s = e->node->as_string();
        if (!s) {
          err(vpos(*e),
              "'" + std::string(e->key) + "' must be a string, not " + node_type_name(*e->node));
          return false;
        }
        out = s->get();
        return true;
      };

      // type first: it decides which option keys exist
      const probe_type_entry* entry = nullptr;
      std::string type_text;
      if (str_of(k_type, type_text)) {
        entry = plugins.find(type_text);
        if (!entry) {
          std::string known;
          for (auto& n : known_types) known += (known.empty() ? "" : ", ") + n;
          err(vpos(*entry_of(k_type)),
              "unknown probe type '" + type_text + "'" + did_you_mean(type_text, known_types) +
                  "; available: " + (known.empty() ? "none (no plugins found)" : known));
        }
      } else if (!entry_of(k_type)) {
        err(spec.where, "task has no 'type' (e.g. type = \"tcp\")");
      }
      if (str_of(k_name, spec.name)) {
        if (spec.name.empty() || spec.name.size() > 200)
          err(vpos(*entry_of(k_name)), "'name' must be 1 to 200 characters");
        else if (std::any_of(spec.name.begin(), spec.name.end(),
                             [](unsigned char c) { return c < 0x20 || c == 0x7f; }))
          err(vpos(*entry_of(k_name)), "'name' must not contain control characters");
        else if (auto it = names_seen.find(spec.name); it != names_seen.end()) {
          auto first = pos_of(path, it->second->source());
          err(vpos(*entry_of(k_name)),
              "duplicate task name '" + spec.name + "' (first defined at " + first.file + ":" +
                  std::to_string(first.line) + ":" + std::to_string(first.column) + ")");
        } else
          names_seen.emplace(entry_of(k_name)->node->as_string()->get(), entry_of(k_name)->node);
      } else if (!entry_of(k_name)) {
        err(spec.where, "task has no 'name'");
      }
      if (!str_of(k_target, spec.target) && !entry_of(k_target))
        err(spec.where, "task '" + spec.name + "' has no 'target'");

      spec.interval = default_interval;
      bool timeout_set = false;
      for (common_key dk : {k_interval, k_timeout}) {
        const raw_entry* e = entry_of(dk);
        if (!e) continue;
        auto d = duration_of(*e);
        if (!d) {
          err(vpos(*e), "'" + std::string(e->key) + "': " + d.error());
          continue;
        }
        if (*d < std::chrono::milliseconds(1)) {
          err(vpos(*e), "'" + std::string(e->key) + "' must be at least 1ms");
          continue;
        }
        if (dk == k_interval)
          spec.interval = *d;
        else
          spec.timeout = *d, timeout_set = true;
      }
      if (!timeout_set) spec.timeout = std::min(default_timeout, spec.interval);
      if (timeout_set && spec.timeout > spec.interval)
        err(vpos(*entry_of(k_timeout)), "'timeout' (" + format_duration(spec.timeout) +
                                            ") must not exceed 'interval' (" +
                                            format_duration(spec.interval) + ")");
      if (const raw_entry* e = entry_of(k_enabled)) {
        if (auto b = e->node->value_exact<bool>())
          spec.enabled = *b;
        else
          err(vpos(*e), "'enabled' must be true or false");
      }
      if (const raw_entry* e = entry_of(k_tags)) {
        if (auto* t = e->node->as_table()) {
          for (auto&& [k, v] : *t) {
            if (auto s = v.value_exact<std::string>())
              spec.tags[std::string(k.str())] = *s;
            else
              err(pos_of(path, v.source()), "tag '" + std::string(k.str()) + "' must be a string");
          }
        } else {
          err(vpos(*e), "'tags' must be a table of strings, e.g. tags = { team = \"web\" }");
        }
      }
      for (common_key which : {k_warn, k_crit}) {
        const raw_entry* ce = entry_of(which);
        if (!ce) continue;
        const std::string ck(ce->key);
        std::vector<std::pair<std::string, source_pos>> texts;
        const toml::node& n = *ce->node;
        if (auto s = n.value_exact<std::string>()) {
          texts.emplace_back(*s, vpos(*ce));
        } else if (auto* arr = n.as_array()) {
          for (auto& e : *arr) {
            if (auto s2 = e.value_exact<std::string>())
              texts.emplace_back(*s2, pos_of(path, e.source()));
            else
              err(pos_of(path, e.source()),
                  std::string("'") + ck + "' entries must be strings such as \"latency > 200ms\"");
          }
        } else {
          err(vpos(*ce), std::string("'") + ck + "' must be a condition string or a list of them");
        }
        if (!entry) continue;
        for (auto& [text, p] : texts) {
          auto c = parse_condition_for(*entry, text);
          if (!c)
            err(p, c.error());
          else
            (which == k_warn ? spec.warn : spec.crit).push_back(std::move(*c));
        }
      }
      if (const raw_entry* e = entry_of(k_alarm))
        spec.alarm = alarms::read_task_alarm(path, *e->node, file.alarms, errors);
      // probe options
      if (entry) {
        // No string copies on the common path: this runs for every key of every task.
        for (const auto& re : entries) {
          const std::string_view key = re.key;
          if (re.common != k_option) continue;
          const sonde_option_desc* od = nullptr;
          for (std::size_t i = 0; i < entry->type->option_count; ++i)
            if (key == entry->type->options[i].key) od = &entry->type->options[i];
          if (!od) {
            if (re.from_defaults) continue;  // a default meant for other probe types
            std::vector<std::string> cands = common_keys;
            for (std::size_t i = 0; i < entry->type->option_count; ++i)
              cands.push_back(entry->type->options[i].key);
            err(kpos(re), "unknown key '" + std::string(key) + "' for type '" + entry->type->name +
                              "'" + did_you_mean(std::string(key), cands));
            continue;
          }
          auto v = option_from_node(key, static_cast<option_type>(od->type), *re.node);
          if (!v)
            err(vpos(re), v.error());
          else
            spec.options.emplace_back(std::string(key), std::move(*v));
        }
      }
      if (entry && errors.size() == errors_before) {
        auto p = create_probe(*entry, spec.target, spec.options, spec.timeout);
        if (!p) {
          source_pos where = spec.where;
          if (const raw_entry* e = find_entry(entries, p.error().key)) where = vpos(*e);
          err(where, p.error().message);
        } else {
          spec.probe = std::move(*p);
        }
      }
      if (entry) {
        spec.entry = entry;
        spec.type = entry->type->name;
      }
      if (errors.size() == errors_before) file.tasks.push_back(std::move(spec));
    }
  }
  if (errors.empty()) alarms::check_alarm_references(path, doc, file.tasks, file.alarms, errors);
  if (!errors.empty()) return tl::unexpected(errors);
  return file;  // the caller drops `document` when it likes (freeing it is not free)
}

tl::expected<task_file, std::vector<config_error>> load_task_file(const std::string& path,
                                                                  const plugin_host& plugins) {
  auto f = read_engine_section(path);
  if (!f) return f;
  return load_tasks(std::move(*f), plugins);
}

}  // namespace sonde::engine
