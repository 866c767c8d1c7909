// The control channel's view of the task set. See task_set.hpp.
#include <algorithm>
#include <cstdio>

#include <toml++/toml.h>

#include "core/output.hpp"
#include "core/state.hpp"
#include "core/task_set.hpp"

namespace sonde::engine {

using json = nlohmann::json;

namespace {

// JSON value -> TOML node, for validating a `start` exactly like a task-file entry.
tl::expected<void, std::string> insert_toml(toml::table& t, const std::string& key, const json& v);

tl::expected<void, std::string> push_toml(toml::array& a, const std::string& key, const json& v) {
  if (v.is_string())
    a.push_back(v.get<std::string>());
  else if (v.is_boolean())
    a.push_back(v.get<bool>());
  else if (v.is_number_unsigned() && v.get<std::uint64_t>() > INT64_MAX)
    return tl::unexpected("\"" + key + "\": number too large");
  else if (v.is_number_integer())
    a.push_back(v.get<std::int64_t>());
  else if (v.is_number_float())
    a.push_back(v.get<double>());
  else
    return tl::unexpected("\"" + key + "\" must be a list of plain values");
  return {};
}

tl::expected<void, std::string> insert_toml(toml::table& t, const std::string& key, const json& v) {
  if (v.is_string()) {
    t.insert_or_assign(key, v.get<std::string>());
  } else if (v.is_boolean()) {
    t.insert_or_assign(key, v.get<bool>());
  } else if (v.is_number_unsigned() && v.get<std::uint64_t>() > INT64_MAX) {
    return tl::unexpected("\"" + key + "\": number too large");
  } else if (v.is_number_integer()) {
    t.insert_or_assign(key, v.get<std::int64_t>());
  } else if (v.is_number_float()) {
    t.insert_or_assign(key, v.get<double>());
  } else if (v.is_array()) {
    toml::array a;
    for (const auto& e : v)
      if (auto r = push_toml(a, key, e); !r) return r;
    t.insert_or_assign(key, std::move(a));
  } else if (v.is_object()) {
    toml::table sub;
    for (auto it = v.begin(); it != v.end(); ++it)
      if (auto r = insert_toml(sub, it.key(), it.value()); !r) return r;
    t.insert_or_assign(key, std::move(sub));
  } else {
    return tl::unexpected("\"" + key + "\" has no value");
  }
  return {};
}

json task_json(const scheduled_task& st, const std::set<std::string>& control,
               const std::map<std::string, std::int64_t>& ids) {
  const auto& t = st.spec();
  json j;
  j["name"] = t.name;
  auto id = ids.find(t.name);
  j["id"] = id == ids.end() ? json(nullptr) : json(id->second);
  j["origin"] = control.count(t.name) ? "control" : "file";
  j["type"] = t.type;
  j["target"] = t.target;
  j["interval"] = format_duration_exact(t.interval);
  j["timeout"] = format_duration_exact(t.timeout);
  j["state"] = !t.enabled ? "disabled" : st.paused() ? "paused" : "running";
  j["in_flight"] = st.running();
  j["tags"] = t.tags;
  const auto& last = st.last_result();
  j["last"] = last ? json::parse(to_json(*last), nullptr, false) : json(nullptr);
  return j;
}

}  // namespace

task_set::task_set(scheduler& sched, const plugin_host& plugins, std::string task_file,
                   std::string state_dir)
    : sched_(sched),
      plugins_(plugins),
      file_(std::move(task_file)),
      state_path_(state_dir.empty() ? std::string() : state_file_path(state_dir)) {}

tl::expected<void, std::vector<config_error>> task_set::load_state() {
  if (state_path_.empty()) return {};
  auto st = load_control_state(state_path_, plugins_);
  if (!st) return tl::unexpected(st.error());
  std::vector<config_error> errors;
  for (auto& t : st->tasks)
    if (sched_.find(t.name))
      errors.push_back({t.where, "task '" + t.name +
                                     "' was started over the control channel, and the task file " +
                                     file_ + " now has a task of that name; rename one of them"});
  std::map<std::int64_t, std::string> seen;
  for (const auto& [name, id] : st->ids) {
    if (auto it = seen.find(id); it != seen.end())
      errors.push_back(
          {{state_path_, 0, 0},
           "tasks '" + it->second + "' and '" + name + "' have the same id " + std::to_string(id)});
    seen.emplace(id, name);
  }
  if (!errors.empty()) return tl::unexpected(errors);
  for (auto& t : st->tasks) {
    std::string name = t.name;
    sched_.add(std::move(t));
    control_.insert(name);
    if (auto it = st->ids.find(name); it != st->ids.end()) {
      ids_[name] = it->second;
      by_id_[it->second] = name;
    }
  }
  for (const auto& name : st->stopped)
    if (sched_.remove(name)) stopped_.push_back(name);
  for (const auto& name : st->paused)
    if (sched_.pause(name)) paused_.insert(name);
  // What runs now may differ from the file (a stopped task no longer in the task file): the
  // writer starts from what runs, and rewrites the file when it differs or a journal was read.
  auto records = all_records();
  bool rewrite = st->replayed_journal || records != records_of(*st);
  auto o = writer_opts_;
  o.path = state_path_;
  writer_ = std::make_unique<state_writer>(sched_.io(), std::move(o), std::move(records), rewrite);
  return {};
}

state_record task_set::record_of(const std::string& name) const {
  state_record r;
  r.name = name;
  if (control_.count(name))
    if (const auto* t = sched_.find(name)) r.task = format_task_toml(t->spec());
  if (auto it = ids_.find(name); it != ids_.end()) r.id = it->second;
  r.stopped = std::find(stopped_.begin(), stopped_.end(), name) != stopped_.end();
  r.paused = paused_.count(name) > 0;
  return r;
}

state_records task_set::all_records() const {
  std::set<std::string> names(control_.begin(), control_.end());
  for (const auto& [n, id] : ids_) names.insert(n);
  names.insert(stopped_.begin(), stopped_.end());
  names.insert(paused_.begin(), paused_.end());
  state_records out;
  for (const auto& n : names) out.emplace(n, record_of(n));
  return out;
}

json task_set::persist(json reply, const std::vector<std::string>& names) {
  if (!writer_) return reply;
  for (const auto& n : names) ticket_ = writer_->submit(record_of(n));
  return reply;
}

std::uint64_t task_set::take_ticket() {
  return std::exchange(ticket_, 0);
}

void task_set::when_saved(std::uint64_t ticket, std::function<void(const std::string&)> f) {
  if (!writer_ || ticket == 0) {
    f("");
    return;
  }
  writer_->when_saved(ticket, std::move(f));
}

json task_set::state_stats() const {
  if (!writer_) return nullptr;
  auto c = writer_->stats();
  json j{{"path", state_path_}, {"changes", c.submitted},  {"pending", c.pending},
         {"writes", c.batches}, {"rewrites", c.snapshots}, {"failures", c.failures}};
  j["error"] = c.last_error.empty() ? json(nullptr) : json(c.last_error);
  return j;
}

tl::expected<task_spec, task_set_error> task_set::validate(const json& fields) const {
  if (fields.contains("alarm")) {
    std::string m =
        "'alarm' is read from the task file only: a task started over the control channel uses "
        "the file's [alarms] defaults";
    return tl::unexpected(task_set_error{m, {m}});
  }
  auto doc = std::make_shared<toml::table>();
  toml::table entry;
  for (auto it = fields.begin(); it != fields.end(); ++it)
    if (auto r = insert_toml(entry, it.key(), it.value()); !r)
      return tl::unexpected(task_set_error{r.error(), {r.error()}});
  toml::array tasks;
  tasks.push_back(std::move(entry));
  doc->insert_or_assign("task", std::move(tasks));
  task_file f;
  f.path = "start";
  f.document = doc;
  auto loaded = load_tasks(std::move(f), plugins_);
  if (!loaded) {
    task_set_error e;
    for (const auto& ce : loaded.error()) {
      e.details.push_back(ce.message);
      e.message += (e.message.empty() ? "" : "; ") + ce.message;
    }
    return tl::unexpected(e);
  }
  auto& spec = loaded->tasks.front();
  spec.where = source_pos{};
  return std::move(spec);
}

tl::expected<json, task_set_error> task_set::start(const task_definition& def) {
  auto err = [](std::string m) { return tl::unexpected(task_set_error{m, {}}); };
  const std::string& name = def.name;
  bool stopped_file_task = std::find(stopped_.begin(), stopped_.end(), name) != stopped_.end();
  if (stopped_file_task) {
    if (def.fields.size() != 1 || def.id)
      return err("task '" + name + "' is defined in " + file_ +
                 " and was stopped; give its name alone to start it again, or choose another "
                 "name");
    auto f = read_engine_section(file_);
    if (!f) return err("cannot restore '" + name + "': " + f.error().front().to_string());
    auto tf = load_tasks(std::move(*f), plugins_);
    if (!tf) return err("cannot restore '" + name + "': " + tf.error().front().to_string());
    for (auto& t : tf->tasks)
      if (t.name == name) {
        sched_.add(std::move(t));
        stopped_.erase(std::find(stopped_.begin(), stopped_.end(), name));
        return persist({{"started", name}, {"restored", true}}, {name});
      }
    return err("task '" + name + "' is no longer in " + file_ + "; reload, then start it anew");
  }
  if (def.id)
    if (auto it = by_id_.find(*def.id); it != by_id_.end() && it->second != name)
      return err("id " + std::to_string(*def.id) + " is already task '" + it->second + "'");
  if (const auto* existing = sched_.find(name)) {
    // The same definition and id again (a controller resending after a reconnect) succeeds.
    auto same = [&] {
      if (!control_.count(name)) return false;
      auto it = ids_.find(name);
      if (def.id && (it == ids_.end() || it->second != *def.id)) return false;
      auto spec = validate(def.fields);
      return spec && format_task_toml(*spec) == format_task_toml(existing->spec());
    };
    if (same()) return json{{"started", name}, {"id", ids_[name]}, {"unchanged", true}};
    return err(
        "a task named '" + name + "' already exists (" +
        (control_.count(name) ? std::string("started over the control channel") : "from " + file_) +
        "); stop it first or choose another name");
  }
  json fields = def.fields;
  if (!def.set.empty()) {
    // Option texts are converted by the type's option table, as `sonde probe --set` does.
    auto type = fields.find("type");
    const probe_type_entry* entry = type != fields.end() && type->is_string()
                                        ? plugins_.find(type->get<std::string>())
                                        : nullptr;
    if (!entry) return err("\"set\" needs a known \"type\"");
    for (const auto& [key, text] : def.set) {
      if (fields.contains(key)) return err("option '" + key + "' is given twice");
      auto v = option_from_text(*entry, key, text);
      if (!v) return err(v.error());
      fields[key] = std::visit(
          [](const auto& x) -> json {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, duration>)
              return format_duration_exact(x);
            else
              return x;
          },
          *v);
    }
  }
  auto spec = validate(fields);
  if (!spec) return tl::unexpected(spec.error());
  sched_.add(std::move(*spec));
  control_.insert(name);
  std::int64_t id = 0;
  if (def.id) {
    id = *def.id;
  } else {
    // One above the largest, or the first free id when that would pass max_task_id.
    id = by_id_.empty() ? 1 : by_id_.rbegin()->first + 1;
    if (id > max_task_id) {
      id = 1;
      for (const auto& [used, n] : by_id_) {
        if (used != id) break;
        ++id;
      }
    }
  }
  ids_[name] = id;
  by_id_[id] = name;
  return persist({{"started", name}, {"id", id}}, {name});
}

tl::expected<std::vector<std::string>, task_set_error> task_set::resolve(
    const task_selector& sel) const {
  std::vector<std::string> names;
  if (sel.all) {
    sched_.for_each([&](const scheduled_task& t) { names.push_back(t.spec().name); });
    return names;
  }
  const auto& s = sched_;
  for (const auto& n : sel.names) {
    if (!s.find(n)) {
      if (std::find(stopped_.begin(), stopped_.end(), n) != stopped_.end())
        return tl::unexpected(task_set_error{"task '" + n + "' is stopped", {}});
      std::vector<std::string> all;
      s.for_each([&](const scheduled_task& t) { all.push_back(t.spec().name); });
      auto c = closest(n, all);
      return tl::unexpected(task_set_error{
          "no task named '" + n + "'" + (c.empty() ? "" : " (did you mean '" + c + "'?)"), {}});
    }
    names.push_back(n);
  }
  for (auto id : sel.ids) {
    auto it = by_id_.find(id);
    if (it == by_id_.end())
      return tl::unexpected(task_set_error{"no task with id " + std::to_string(id), {}});
    names.push_back(it->second);
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

tl::expected<json, task_set_error> task_set::stop(const task_selector& sel) {
  auto names = resolve(sel);
  if (!names) return tl::unexpected(names.error());
  for (const auto& n : *names) {
    sched_.remove(n);
    paused_.erase(n);
    if (control_.erase(n)) {
      if (auto it = ids_.find(n); it != ids_.end()) {
        by_id_.erase(it->second);
        ids_.erase(it);
      }
    } else {
      stopped_.push_back(n);
    }
  }
  return persist({{"stopped", *names}}, *names);
}

tl::expected<json, task_set_error> task_set::pause(const task_selector& sel) {
  auto names = resolve(sel);
  if (!names) return tl::unexpected(names.error());
  for (const auto& n : *names) {
    sched_.pause(n);
    paused_.insert(n);
  }
  return persist({{"paused", *names}}, *names);
}

tl::expected<json, task_set_error> task_set::resume(const task_selector& sel) {
  auto names = resolve(sel);
  if (!names) return tl::unexpected(names.error());
  sched_.resume(*names);  // first runs spread over the interval, as at start
  for (const auto& n : *names) paused_.erase(n);
  return persist({{"resumed", *names}}, *names);
}

json task_set::list() const {
  json tasks = json::array();
  sched_.for_each([&](const scheduled_task& t) { tasks.push_back(task_json(t, control_, ids_)); });
  json stopped = stopped_;
  return {{"tasks", std::move(tasks)}, {"stopped", std::move(stopped)}};
}

tl::expected<json, task_set_error> task_set::reload() {
  if (file_.empty()) return tl::unexpected(task_set_error{"this engine has no task file", {}});
  auto refuse = [&](const std::vector<config_error>& errors) {
    task_set_error e;
    for (const auto& ce : errors) e.details.push_back(ce.to_string());
    e.message = std::to_string(errors.size()) + " error" + (errors.size() == 1 ? "" : "s") +
                " in " + file_ + "; the running tasks are unchanged";
    return tl::unexpected(e);
  };
  auto f = read_engine_section(file_);
  if (!f) return refuse(f.error());
  auto tf = load_tasks(std::move(*f), plugins_);
  if (!tf) return refuse(tf.error());
  std::vector<config_error> clashes;
  for (const auto& t : tf->tasks)
    if (control_.count(t.name))
      clashes.push_back({t.where, "task '" + t.name +
                                      "' is also a task started over the control channel; stop "
                                      "it or rename one of them"});
  if (!clashes.empty()) return refuse(clashes);

  // Names whose record may change: stopped or paused before or after.
  std::vector<std::string> touched(stopped_.begin(), stopped_.end());
  touched.insert(touched.end(), paused_.begin(), paused_.end());
  std::set<std::string> in_file;
  json added = json::array(), changed = json::array(), removed = json::array();
  std::size_t unchanged = 0;
  for (auto& t : tf->tasks) {
    in_file.insert(t.name);
    if (std::find(stopped_.begin(), stopped_.end(), t.name) != stopped_.end()) continue;
    const auto* cur = sched_.find(t.name);
    if (cur && format_task_toml(cur->spec()) == format_task_toml(t)) {
      ++unchanged;  // keeps its schedule, pause state and last result
      continue;
    }
    std::string name = t.name;
    if (cur) {
      sched_.remove(name);
      changed.push_back(name);
    } else {
      added.push_back(name);
    }
    sched_.add(std::move(t));
    if (paused_.count(name)) sched_.pause(name);
  }
  std::vector<std::string> gone;
  sched_.for_each([&](const scheduled_task& t) {
    if (!control_.count(t.spec().name) && !in_file.count(t.spec().name))
      gone.push_back(t.spec().name);
  });
  for (const auto& n : gone) {
    sched_.remove(n);
    paused_.erase(n);
    removed.push_back(n);
  }
  std::erase_if(stopped_, [&](const std::string& n) { return !in_file.count(n); });
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  if (on_reload_) on_reload_(*tf);
  return persist(
      {{"added", added}, {"changed", changed}, {"removed", removed}, {"unchanged", unchanged}},
      touched);
}

std::string task_set::export_toml() const {
  std::string o = "# Exported by sondectl from the running engine";
  if (!file_.empty()) o += " (task file " + file_ + ")";
  o += ".\n# Tasks started over the control channel are included; stopped ones are not.\n";
  sched_.for_each([&](const scheduled_task& t) {
    o += "\n";
    if (paused_.count(t.spec().name)) o += "# paused over the control channel\n";
    if (auto it = ids_.find(t.spec().name); it != ids_.end())
      o += "# id " + std::to_string(it->second) + ", started over the control channel\n";
    o += format_task_toml(t.spec());
  });
  return o;
}

}  // namespace sonde::engine
