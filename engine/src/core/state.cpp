// Task definitions as TOML and the control state file. See state.hpp.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <toml++/toml.h>

#include "core/files.hpp"
#include "core/output.hpp"
#include "core/state.hpp"
#include "core/state_writer.hpp"

namespace fs = std::filesystem;

namespace sonde::engine {

std::string format_duration_exact(duration d) {
  std::int64_t ns = d.count();
  if (ns == 0) return "0s";
  struct unit {
    std::int64_t ns;
    const char* name;
  };
  static constexpr unit units[] = {{86'400'000'000'000LL, "d"},
                                   {3'600'000'000'000LL, "h"},
                                   {60'000'000'000LL, "m"},
                                   {1'000'000'000LL, "s"},
                                   {1'000'000LL, "ms"},
                                   {1'000LL, "us"},
                                   {1, "ns"}};
  // Whole days/hours/minutes/seconds compose ("1m30s"); a fraction of a second is written in the
  // largest unit that divides the whole duration exactly ("1500ms").
  if (ns % 1'000'000'000LL == 0) {
    std::string out;
    for (int i = 0; i < 4; ++i)
      if (ns >= units[i].ns) {
        out += std::to_string(ns / units[i].ns) + units[i].name;
        ns %= units[i].ns;
      }
    return out;
  }
  for (const auto& u : units)
    if (ns % u.ns == 0) return std::to_string(ns / u.ns) + u.name;
  return std::to_string(ns) + "ns";
}

// A TOML basic string. Its escapes (\" \\ \n \r \t \uXXXX) are exactly JSON's, so the
// JSON writer's quoting serves both.
std::string toml_string(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

namespace {

std::string toml_key(std::string_view k) {
  bool bare = !k.empty();
  for (unsigned char c : k)
    if (!(std::isalnum(c) || c == '_' || c == '-')) bare = false;
  return bare ? std::string(k) : toml_string(k);
}

std::string toml_number(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  std::string s = buf;
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // stays a float in TOML
  return s;
}

std::string toml_value(const option_value& v) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool>)
          return x ? "true" : "false";
        else if constexpr (std::is_same_v<T, std::int64_t>)
          return std::to_string(x);
        else if constexpr (std::is_same_v<T, double>)
          return toml_number(x);
        else if constexpr (std::is_same_v<T, std::string>)
          return toml_string(x);
        else if constexpr (std::is_same_v<T, duration>)
          return toml_string(format_duration_exact(x));
        else {
          std::string out = "[";
          for (std::size_t i = 0; i < x.size(); ++i) out += (i ? ", " : "") + toml_string(x[i]);
          return out + "]";
        }
      },
      v);
}

std::string string_list(const std::vector<std::string>& l) {
  std::string out = "[";
  for (std::size_t i = 0; i < l.size(); ++i) out += (i ? ", " : "") + toml_string(l[i]);
  return out + "]";
}

}  // namespace

std::string format_task_toml(const task_spec& t) {
  std::string o = "[[task]]\n";
  o += "name = " + toml_string(t.name) + "\n";
  o += "type = " + toml_string(t.type) + "\n";
  o += "target = " + toml_string(t.target) + "\n";
  o += "interval = " + toml_string(format_duration_exact(t.interval)) + "\n";
  o += "timeout = " + toml_string(format_duration_exact(t.timeout)) + "\n";
  if (!t.enabled) o += "enabled = false\n";
  if (!t.tags.empty()) {
    o += "tags = {";
    bool first = true;
    for (const auto& [k, v] : t.tags) {
      o += (first ? " " : ", ") + toml_key(k) + " = " + toml_string(v);
      first = false;
    }
    o += " }\n";
  }
  for (auto [key, list] : {std::pair{"warn", &t.warn}, std::pair{"crit", &t.crit}}) {
    if (list->empty()) continue;
    std::vector<std::string> texts;
    for (const auto& c : *list) texts.push_back(c.text);
    o += std::string(key) + " = " + string_list(texts) + "\n";
  }
  for (const auto& [k, v] : t.options) o += toml_key(k) + " = " + toml_value(v) + "\n";
  if (t.alarm) {  // the task's whole policy: [alarms] merged with its overrides
    const auto& a = *t.alarm;
    auto num = [](double d) {
      char b[32];
      std::snprintf(b, sizeof b, "%g", d);
      return std::string(b);
    };
    o += "alarm = { failure_threshold = " + std::to_string(a.failure_threshold) +
         ", success_threshold = " + std::to_string(a.success_threshold) + ", renotify = " +
         toml_string(format_duration_exact(a.renotify)) + ", notify = " + string_list(a.notify);
    if (!a.depends_on.empty()) o += ", depends_on = " + toml_string(a.depends_on);
    o += ", flap_window = " + std::to_string(a.flap_window) + ", flap_high = " + num(a.flap_high) +
         ", flap_low = " + num(a.flap_low) + " }\n";
  }
  return o;
}

std::string state_file_path(const std::string& state_dir) {
  return (fs::path(state_dir) / "control-tasks.toml").string();
}

std::string default_state_dir(const std::string& task_file) {
  fs::path p = fs::absolute(fs::path(task_file));
  return (p.parent_path() / (p.stem().string() + ".state")).lexically_normal().string();
}

namespace {

// A state file's text, parsed and validated. `must_have_state`: the text came from a file that
// exists, so it must say [state] (sonde always writes it; a file without it is not sonde's).
tl::expected<control_state, std::vector<config_error>> parse_control_state(
    const std::string& path, const std::string& text, const plugin_host& plugins,
    bool must_have_state) {
  control_state out;
  std::vector<config_error> errors;
  const std::string aside =
      "; move it aside to start without the tasks changed over the control "
      "channel (mv " +
      path + " " + path + ".bad), or restore it from a backup";
  if (must_have_state && text.find_first_not_of(" \t\r\n") == std::string::npos) {
    errors.push_back({{path, 0, 0},
                      "the state file is empty; sonde replaces it atomically, so "
                      "something else emptied it" +
                          aside});
    return tl::unexpected(errors);
  }
  auto doc = std::make_shared<toml::table>();
  try {
    *doc = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    errors.push_back(
        {{path, e.source().begin.line, e.source().begin.column}, std::string(e.description())});
    return tl::unexpected(errors);
  }
  if (must_have_state && !doc->contains("state")) {
    errors.push_back(
        {{path, 1, 1}, "this is not a sonde state file (it has no [state] table)" + aside});
    return tl::unexpected(errors);
  }
  auto pos = [&](const toml::source_region& r) {
    return source_pos{path, r.begin.line, r.begin.column};
  };
  for (auto&& [k, v] : *doc)
    if (k.str() != "state" && k.str() != "task")
      errors.push_back({pos(k.source()), "unknown top-level key '" + std::string(k.str()) +
                                             "' in the state file; expected [state] or [[task]]"});
  if (auto* sn = (*doc)["state"].node()) {
    auto* st = sn->as_table();
    if (!st) {
      errors.push_back({pos(sn->source()), "'state' must be a table: [state]"});
    } else {
      for (auto&& [k, v] : *st) {
        std::string key(k.str());
        if (key == "version") {
          auto i = v.value_exact<std::int64_t>();
          if (!i || *i != 1)
            errors.push_back({pos(v.source()), "unsupported state file version (expected 1)"});
        } else if (key == "stopped" || key == "paused") {
          auto* arr = v.as_array();
          auto& dst = key == "stopped" ? out.stopped : out.paused;
          if (!arr) {
            errors.push_back({pos(v.source()), "'" + key + "' must be a list of task names"});
            continue;
          }
          for (auto& e : *arr) {
            if (auto s = e.value_exact<std::string>())
              dst.push_back(*s);
            else
              errors.push_back({pos(e.source()), "'" + key + "' entries must be task names"});
          }
        } else if (key == "ids") {
          auto* t = v.as_table();
          if (!t) {
            errors.push_back({pos(v.source()), "'ids' must be a table of task name = id"});
            continue;
          }
          for (auto&& [name, id] : *t) {
            auto i = id.value_exact<std::int64_t>();
            if (!i || *i < 1)
              errors.push_back({pos(id.source()), "task ids must be positive integers"});
            else
              out.ids[std::string(name.str())] = *i;
          }
        } else {
          errors.push_back({pos(k.source()), "unknown key '" + key + "' in [state]"});
        }
      }
    }
    doc->erase("state");
  }
  if (!errors.empty()) return tl::unexpected(errors);
  task_file f;
  f.path = path;
  f.document = doc;
  auto tasks = load_tasks(std::move(f), plugins);
  if (!tasks) return tl::unexpected(tasks.error());
  out.tasks = std::move(tasks->tasks);
  return out;
}

}  // namespace

state_records records_of(const control_state& st) {
  state_records r;
  auto at = [&](const std::string& name) -> state_record& {
    auto& rec = r[name];
    rec.name = name;
    return rec;
  };
  for (const auto& t : st.tasks) at(t.name).task = format_task_toml(t);
  for (const auto& [name, id] : st.ids) at(name).id = id;
  for (const auto& n : st.stopped) at(n).stopped = true;
  for (const auto& n : st.paused) at(n).paused = true;
  return r;
}

tl::expected<control_state, std::vector<config_error>> load_control_state(
    const std::string& path, const plugin_host& plugins) {
  std::vector<config_error> errors;
  std::string text;
  bool exists = true;
  if (auto f = read_regular_file(path, max_config_bytes, "state file")) {
    text = std::move(*f);
  } else if (f.error().what == file_error::kind::missing) {
    exists = false;
  } else {
    errors.push_back({{path, 0, 0}, f.error().why});
    return tl::unexpected(errors);
  }
  auto st = parse_control_state(path, text, plugins, exists);
  if (!st) return st;
  // Changes made since the state file was last rewritten (state_writer.hpp).
  const std::string jpath = state_journal_path(path);
  auto j = read_regular_file(jpath, max_config_bytes, "state journal");
  if (!j) {
    if (j.error().what == file_error::kind::missing) return st;
    errors.push_back({{jpath, 0, 0}, j.error().why});
    return tl::unexpected(errors);
  }
  auto records = records_of(*st);
  std::size_t line_no = 0, begin = 0;
  while (begin < j->size()) {
    auto nl = j->find('\n', begin);
    bool last = nl == std::string::npos || j->find_first_not_of(" \t\r\n", nl) == std::string::npos;
    std::string_view line(j->data() + begin, (nl == std::string::npos ? j->size() : nl) - begin);
    ++line_no;
    begin = nl == std::string::npos ? j->size() : nl + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    auto r = parse_state_record(line);
    if (!r) {
      if (last) {
        // A write cut short by a crash: that change was never acknowledged.
        std::fprintf(stderr, "sonde: warning: %s:%zu: ignoring a torn last record (%s)\n",
                     jpath.c_str(), line_no, r.error().c_str());
        continue;
      }
      errors.push_back(
          {{jpath, static_cast<unsigned>(line_no), 1}, "invalid record: " + r.error()});
      return tl::unexpected(errors);
    }
    if (r->empty())
      records.erase(r->name);
    else
      records[r->name] = std::move(*r);
  }
  auto merged = parse_control_state(path, format_state_file(records), plugins, true);
  if (merged) merged->replayed_journal = true;
  return merged;
}

std::string format_state_file(const state_records& records) {
  std::vector<std::string> stopped, paused;
  std::string o =
      "# Written by sonde: what was changed over the control channel (sondectl), kept across\n"
      "# restarts and loaded after the task file. Changes since it was written are in the\n"
      "# .journal file beside it, which sonde replays and folds into this file.\n"
      "[state]\nversion = 1\n";
  for (const auto& [name, r] : records) {
    if (r.stopped) stopped.push_back(name);
    if (r.paused) paused.push_back(name);
  }
  if (!stopped.empty()) o += "stopped = " + string_list(stopped) + "  # task-file tasks\n";
  if (!paused.empty()) o += "paused = " + string_list(paused) + "\n";
  bool first = true;
  for (const auto& [name, r] : records) {
    if (!r.id) continue;
    o += (first ? "ids = { " : ", ") + toml_key(name) + " = " + std::to_string(*r.id);
    first = false;
  }
  if (!first) o += " }\n";
  for (const auto& [name, r] : records)
    if (r.task) o += "\n" + *r.task;
  return o;
}

tl::expected<void, std::string> write_file_atomically(const std::string& path,
                                                      const std::string& text) {
  auto fail = [&](const std::string& what, const std::string& file) {
    return tl::unexpected(what + " " + file + ": " + std::strerror(errno));
  };
  fs::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) {
    fs::create_directories(p.parent_path(), ec);
    if (ec)
      return tl::unexpected("cannot create " + p.parent_path().string() + ": " + ec.message());
  }
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return fail("cannot write", tmp);
  if (!write_all(fd, text)) {
    auto r = fail("cannot write", tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    return r;
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    auto r = fail("cannot write", tmp);
    ::unlink(tmp.c_str());
    return r;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    auto r = fail("cannot replace", path);
    ::unlink(tmp.c_str());
    return r;
  }
  // Make the rename itself durable.
  fsync_dir(p.has_parent_path() ? p.parent_path().string() : ".");
  return {};
}

}  // namespace sonde::engine
