#include "alarms/alarm_manager.hpp"

#include <algorithm>
#include <filesystem>

#include <asio/post.hpp>

#include "alarms/maintenance.hpp"
#include "core/output.hpp"
#include "core/rfc3339.hpp"

namespace sonde::engine::alarms {

using json = nlohmann::json;
using sys_clock = std::chrono::system_clock;

namespace {

// "task"/"tasks": a string or a list of strings.
tl::expected<std::vector<std::string>, std::string> names_of(const json& body) {
  std::vector<std::string> out;
  for (const char* key : {"task", "tasks"}) {
    auto it = body.find(key);
    if (it == body.end()) continue;
    if (it->is_string()) {
      out.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      for (const auto& v : *it) {
        if (!v.is_string()) return tl::unexpected(std::string("\"") + key + "\" must be strings");
        out.push_back(v.get<std::string>());
      }
    } else {
      return tl::unexpected(std::string("\"") + key + "\" must be a task name or a list of them");
    }
  }
  for (const auto& n : out)
    if (n.empty() || n.size() > 200)
      return tl::unexpected(std::string("a task name must be 1 to 200 characters"));
  if (out.size() > 10000) return tl::unexpected(std::string("at most 10000 task names"));
  return out;
}

}  // namespace

bool silence::covers(const std::string& task,
                     const std::map<std::string, std::string>* task_tags) const {
  if (!tasks.empty() && std::find(tasks.begin(), tasks.end(), task) == tasks.end()) return false;
  for (const auto& [k, v] : tags) {
    if (!task_tags) return false;
    auto it = task_tags->find(k);
    if (it == task_tags->end() || (v != "*" && it->second != v)) return false;
  }
  return !tasks.empty() || !tags.empty();
}

json silence::to_json() const {
  return json{{"id", id},
              {"tasks", tasks},
              {"tags", tags},
              {"start", format_time_rfc3339(start, 3)},
              {"until", format_time_rfc3339(end, 3)},
              {"reason", reason}};
}

alarm_manager::alarm_manager(asio::io_context& io, scheduler& sched, const alarm_settings& settings,
                             alarm_manager_options opts)
    : io_(io),
      sched_(sched),
      settings_(settings),
      opts_(std::move(opts)),
      dispatch_(
          io,
          [this](const std::vector<std::uint64_t>& ids) {
            if (journal_) journal_->append(json{{"k", "done"}, {"ids", ids}});
            maybe_compact();
          },
          [this](const std::string& l) { log(l); }),
      window_timer_(io),
      silence_timer_(io) {
  open_windows_.assign(settings_.maintenance.size(), false);
}

alarm_manager::~alarm_manager() {
  stop();
}

void alarm_manager::stop() {
  alive_ = std::make_shared<bool>(true);  // callbacks already queued see theirs expire
  window_timer_.cancel();
  silence_timer_.cancel();
  dispatch_.stop();
}

tl::expected<void, std::string> alarm_manager::start() {
  if (started_) return {};
  started_ = true;
  for (const auto& nc : settings_.notifiers) {
    auto n = make_notifier(io_, nc.spec);
    if (!n) return tl::unexpected("notifier '" + nc.spec.name + "': " + n.error().message);
    dispatch_.add(nc, std::move(*n));
  }
  std::vector<json> records;
  if (!opts_.state_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(opts_.state_dir, ec);
    if (ec)
      return tl::unexpected("cannot create the state directory " + opts_.state_dir + ": " +
                            ec.message());
    std::string path = opts_.state_dir + "/alarms.journal";
    std::size_t bad = 0;
    auto loaded = alarm_journal::load(path, bad);
    if (!loaded) return tl::unexpected(loaded.error());
    records = std::move(*loaded);
    journal_bad_ = bad;
    if (bad) log(path + ": skipped " + std::to_string(bad) + " unreadable line(s)");
    alarm_journal::options jo;
    jo.path = path;
    jo.sync = opts_.sync;
    journal_ = std::make_unique<alarm_journal>(io_, jo);
    if (auto st = journal_->get_stats(); st.errors) return tl::unexpected(st.last_error);
  }
  // Replay: the last word on each task, outbox entries not yet done, silences not lifted.
  std::map<std::string, json> tracks;
  std::map<std::uint64_t, json> outbox;
  for (auto& r : records) {
    const auto k = r.value("k", std::string());
    try {
      if (k == "track") {
        tracks[r.at("task").get<std::string>()] = r.at("s");
      } else if (k == "out") {
        auto id = r.at("id").get<std::uint64_t>();
        next_id_ = std::max(next_id_, id);
        outbox[id] = std::move(r);
      } else if (k == "done") {
        for (const auto& id : r.at("ids")) outbox.erase(id.get<std::uint64_t>());
      } else if (k == "sil") {
        silence s;
        const auto& j = r.at("s");
        s.id = j.at("id").get<std::uint64_t>();
        s.tasks = j.at("tasks").get<std::vector<std::string>>();
        s.tags = j.at("tags").get<std::map<std::string, std::string>>();
        s.start = from_epoch_ms(j.at("start_ms").get<std::int64_t>());
        s.end = from_epoch_ms(j.at("end_ms").get<std::int64_t>());
        s.reason = j.at("reason").get<std::string>();
        next_silence_ = std::max(next_silence_, s.id);
        silences_[s.id] = std::move(s);
      } else if (k == "unsil") {
        silences_.erase(r.at("id").get<std::uint64_t>());
      } else if (k == "seq") {
        next_id_ = std::max(next_id_, r.at("notification").get<std::uint64_t>());
        next_silence_ = std::max(next_silence_, r.at("silence").get<std::uint64_t>());
      }
    } catch (const json::exception&) {
      ++journal_bad_;
    }
  }
  for (auto& [name, s] : tracks) {
    if (s.is_null()) continue;
    auto e = std::make_unique<entry>();
    e->name = name;
    if (!e->track.restore(s)) {
      ++journal_bad_;
      continue;
    }
    e->type = s.value("task_type", std::string());
    e->target = s.value("task_target", std::string());
    e->persisted_quiet = false;
    ++restored_;
    by_name_[name] = std::move(e);
  }
  const auto now = sys_clock::now();
  for (auto it = silences_.begin(); it != silences_.end();)
    it = it->second.end <= now ? silences_.erase(it) : std::next(it);
  std::size_t orphaned = 0;
  for (auto& [id, r] : outbox) {
    outbox_entry e;
    e.id = id;
    e.notifier = r.value("n", std::string());
    e.created = from_epoch_ms(r.value("t", std::int64_t{0}));
    e.event = r.value("e", json::object());
    e.durable = true;
    if (!dispatch_.enqueue(std::move(e))) ++orphaned;
  }
  if (orphaned)
    log("dropped " + std::to_string(orphaned) +
        " pending notification(s) for notifiers no longer configured");
  if (!outbox.empty() && outbox.size() > orphaned)
    log("resuming " + std::to_string(outbox.size() - orphaned) + " pending notification(s)");
  // Alarms of tasks that went away while the engine was down get their resolution.
  std::vector<std::string> gone;
  for (auto& [name, e] : by_name_)
    if (!sched_.find(name) && name.find('/') == std::string::npos) gone.push_back(name);
  for (const auto& name : gone) {
    auto& e = *by_name_[name];
    scratch_.clear();
    e.track.retire(now, "task removed", scratch_);
    auto events = std::move(scratch_);
    handle(e, *settings_.defaults, events, 0);
    by_name_.erase(name);
  }
  if (journal_) journal_->rewrite(snapshot());
  arm_windows();
  arm_silences();
  reconsider_all();
  return {};
}

void alarm_manager::reload(const alarm_settings& s) {
  settings_.defaults = s.defaults;
  settings_.maintenance = s.maintenance;
  open_windows_.assign(settings_.maintenance.size(), false);
  any_window_open_ = false;
  window_timer_.cancel();
  auto same = s.notifiers.size() == settings_.notifiers.size();
  for (std::size_t i = 0; same && i < s.notifiers.size(); ++i)
    same = s.notifiers[i].spec.name == settings_.notifiers[i].spec.name &&
           s.notifiers[i].spec.type == settings_.notifiers[i].spec.type &&
           s.notifiers[i].spec.options == settings_.notifiers[i].spec.options &&
           s.notifiers[i].group_wait == settings_.notifiers[i].group_wait &&
           s.notifiers[i].max_age == settings_.notifiers[i].max_age &&
           s.notifiers[i].rate_count == settings_.notifiers[i].rate_count;
  if (!same) log("[[notifier]] changes take effect when the engine restarts");
  arm_windows();     // opens what is open now
  reconsider_all();  // new defaults and windows for the alarms in progress
}

alarm_manager::entry& alarm_manager::entry_for(const task_spec& t) {
  // The name check guards against a freed spec whose address came back for another task
  // (agents' specs are not announced through on_removed).
  if (auto it = by_spec_.find(&t);
      it != by_spec_.end() && it->second->spec == &t && it->second->name == t.name)
    return *it->second;
  auto& slot = by_name_[t.name];
  if (!slot) {
    slot = std::make_unique<entry>();
    slot->name = t.name;
  }
  slot->spec = &t;
  slot->type = t.type;
  slot->target = t.target;
  by_spec_[&t] = slot.get();
  if (t.alarm && !t.alarm->depends_on.empty()) children_[t.alarm->depends_on].insert(t.name);
  return *slot;
}

alarm_context alarm_manager::context_for(const entry& e, const alarm_policy& p) const {
  alarm_context ctx;
  const auto* tags = e.spec ? &e.spec->tags : nullptr;
  for (const auto& [id, s] : silences_)
    if (s.covers(e.name, tags)) {
      ctx.silenced_by =
          "silence " + std::to_string(id) + (s.reason.empty() ? "" : " (" + s.reason + ")");
      break;
    }
  if (ctx.silenced_by.empty() && any_window_open_) {
    static const std::map<std::string, std::string> no_tags;
    for (std::size_t i = 0; i < settings_.maintenance.size(); ++i)
      if (open_windows_[i] && settings_.maintenance[i].covers(e.name, tags ? *tags : no_tags)) {
        ctx.silenced_by = "maintenance " + settings_.maintenance[i].name;
        break;
      }
  }
  if (!p.depends_on.empty()) {
    auto it = by_name_.find(p.depends_on);
    if (it != by_name_.end() && it->second->track.blocks_children())
      ctx.blocked_by =
          "depends_on " + p.depends_on + " (" +
          std::string(to_string(it->second->track.flapping() ? alarm_state::flapping
                                                             : it->second->track.condition())) +
          ")";
  }
  return ctx;
}

void alarm_manager::on_result(const result_record& r) {
  if (!r.task) return;
  entry& e = entry_for(*r.task);
  const alarm_policy& p = policy_of(*r.task);
  scratch_.clear();
  if (silences_.empty() && !any_window_open_ && p.depends_on.empty()) {
    static const alarm_context none;
    e.track.on_result(p, r, none, sys_clock::now(), scratch_);
  } else {
    e.track.on_result(p, r, context_for(e, p), sys_clock::now(), scratch_);
  }
  if (scratch_.empty()) return;
  auto events = std::move(scratch_);
  scratch_ = {};
  handle(e, p, events, 0);
}

void alarm_manager::on_removed(const task_spec& t) {
  by_spec_.erase(&t);
  auto it = by_name_.find(t.name);
  if (it == by_name_.end()) return;
  it->second->spec = nullptr;
  // A reload replaces a changed task by removing and adding it in one turn: look again after.
  std::weak_ptr<bool> alive = alive_;
  asio::post(io_, [this, alive, name = t.name] {
    if (alive.expired() || sched_.find(name)) return;
    auto it2 = by_name_.find(name);
    if (it2 == by_name_.end()) return;
    auto& e = *it2->second;
    std::vector<alarm_event> events;
    e.track.retire(sys_clock::now(), "task removed", events);
    handle(e, *settings_.defaults, events, 0);
    for (auto s = by_spec_.begin(); s != by_spec_.end();)
      s = s->second == &e ? by_spec_.erase(s) : std::next(s);
    by_name_.erase(it2);
  });
}

void alarm_manager::notify(const alarm_policy& p, const json& event) {
  for (const auto& n : p.notify) {
    if (!dispatch_.has(n)) continue;
    outbox_entry oe;
    oe.id = ++next_id_;
    oe.notifier = n;
    oe.created = sys_clock::now();
    oe.event = event;
    ++notifications_;
    if (journal_) {
      std::weak_ptr<bool> alive = alive_;
      journal_->append(
          json{{"k", "out"}, {"id", oe.id}, {"n", n}, {"t", to_epoch_ms(oe.created)}, {"e", event}},
          [this, alive, n, id = oe.id](bool) {
            if (!alive.expired()) dispatch_.durable(n, id);
          });
    } else {
      oe.durable = true;
    }
    dispatch_.enqueue(std::move(oe));
  }
}

void alarm_manager::handle(entry& e, const alarm_policy& p, std::vector<alarm_event>& events,
                           int depth) {
  bool changed = false;
  for (auto& ev : events) {
    ++events_;
    changed = changed || ev.state != ev.previous;
    json j = event_json(ev, e.name, e.type, e.target);
    for (auto& f : listeners_) f(j);
    if (ev.notify) notify(p, j);
  }
  persist(e);
  if (changed && depth < 32) {
    auto it = children_.find(e.name);
    if (it != children_.end())
      for (const auto& child : it->second)
        if (auto c = by_name_.find(child); c != by_name_.end()) reconsider(*c->second, depth + 1);
  }
  maybe_compact();
}

void alarm_manager::reconsider(entry& e, int depth) {
  const alarm_policy& p = e.spec ? policy_of(*e.spec) : *settings_.defaults;
  std::vector<alarm_event> events;
  e.track.reconsider(p, context_for(e, p), sys_clock::now(), events);
  if (!events.empty()) handle(e, p, events, depth);
}

void alarm_manager::reconsider_all() {
  std::vector<entry*> active;
  for (auto& [n, e] : by_name_)
    if (!e->track.quiet()) active.push_back(e.get());
  for (auto* e : active) reconsider(*e, 0);
}

void alarm_manager::persist(entry& e) {
  if (!journal_) return;
  const bool quiet = e.track.quiet();
  if (quiet && e.persisted_quiet) return;
  json s;
  if (!quiet) {
    s = e.track.save();
    s["task_type"] = e.type;
    s["task_target"] = e.target;
  }
  journal_->append(json{{"k", "track"}, {"task", e.name}, {"s", std::move(s)}});
  e.persisted_quiet = quiet;
}

std::vector<json> alarm_manager::snapshot() const {
  std::vector<json> out;
  out.push_back(json{{"k", "seq"}, {"notification", next_id_}, {"silence", next_silence_}});
  for (const auto& [name, e] : by_name_) {
    if (e->track.quiet()) continue;
    json s = e->track.save();
    s["task_type"] = e->type;
    s["task_target"] = e->target;
    out.push_back(json{{"k", "track"}, {"task", name}, {"s", std::move(s)}});
  }
  for (const auto& [id, s] : silences_) {
    json j = s.to_json();
    j["start_ms"] = to_epoch_ms(s.start);
    j["end_ms"] = to_epoch_ms(s.end);
    out.push_back(json{{"k", "sil"}, {"s", std::move(j)}});
  }
  for (const auto* p : dispatch_.pending())
    out.push_back(json{{"k", "out"},
                       {"id", p->id},
                       {"n", p->notifier},
                       {"t", to_epoch_ms(p->created)},
                       {"e", p->event}});
  return out;
}

void alarm_manager::maybe_compact() {
  if (journal_ && journal_->file_bytes() > opts_.compact_bytes) journal_->rewrite(snapshot());
}

void alarm_manager::arm_windows() {
  if (settings_.maintenance.empty()) return;
  const auto now = sys_clock::now();
  auto next = now + std::chrono::hours(1);  // look again hourly at least (time zone changes)
  bool changed = false, any = false;
  for (std::size_t i = 0; i < settings_.maintenance.size(); ++i) {
    auto st = window_at(settings_.maintenance[i], now);
    if (st.open != open_windows_[i]) {
      changed = true;
      log("maintenance '" + settings_.maintenance[i].name + "' " + (st.open ? "begins" : "ends"));
    }
    open_windows_[i] = st.open;
    any = any || st.open;
    if (st.next_change > now) next = std::min(next, st.next_change);
  }
  any_window_open_ = any;
  if (changed) reconsider_all();
  window_timer_.expires_after(next - now + std::chrono::milliseconds(5));
  std::weak_ptr<bool> alive = alive_;
  window_timer_.async_wait([this, alive](asio::error_code ec) {
    if (!ec && !alive.expired()) arm_windows();
  });
}

void alarm_manager::arm_silences() {
  silence_timer_.cancel();
  if (silences_.empty()) return;
  auto next = sys_clock::time_point::max();
  for (const auto& [id, s] : silences_) next = std::min(next, s.end);
  auto wait = next - sys_clock::now();
  silence_timer_.expires_after(
      std::max<std::chrono::nanoseconds>(wait, std::chrono::nanoseconds(0)) +
      std::chrono::milliseconds(1));
  std::weak_ptr<bool> alive = alive_;
  silence_timer_.async_wait([this, alive](asio::error_code ec) {
    if (ec || alive.expired()) return;
    const auto now = sys_clock::now();
    bool any = false;
    for (auto it = silences_.begin(); it != silences_.end();) {
      if (it->second.end <= now) {
        log("silence " + std::to_string(it->first) + " expired");
        if (journal_) journal_->append(json{{"k", "unsil"}, {"id", it->first}});
        it = silences_.erase(it);
        any = true;
      } else {
        ++it;
      }
    }
    if (any) reconsider_all();
    arm_silences();
  });
}

json alarm_manager::alarms(const json& body) const {
  std::vector<std::string> only;
  if (auto n = names_of(body); n) only = *n;
  json list = json::array();
  std::vector<const entry*> rows;
  for (const auto& [name, e] : by_name_)
    if (!e->track.quiet() &&
        (only.empty() || std::find(only.begin(), only.end(), name) != only.end()))
      rows.push_back(e.get());
  std::sort(rows.begin(), rows.end(),
            [](const entry* a, const entry* b) { return a->name < b->name; });
  for (const auto* e : rows) {
    const auto& t = e->track;
    const alarm_policy& p = e->spec ? policy_of(*e->spec) : *settings_.defaults;
    auto ctx = context_for(*e, p);
    json j{
        {"alarm_id", t.alarm_id()},
        {"task", e->name},
        {"type", e->type},
        {"target", e->target},
        {"state", to_string(t.state())},
        {"condition", to_string(t.condition())},
        {"severity", t.severity() == alarm_severity::none ? json() : json(to_string(t.severity()))},
        {"since", format_time_rfc3339(t.since(), 3)},
        {"message", t.last_message()},
        {"notified", t.notified()},
        {"acknowledged", t.acked()},
        {"flapping", t.flapping()},
        {"flap_percent", t.flap_percent()}};
    if (!ctx.silenced_by.empty()) j["silenced_by"] = ctx.silenced_by;
    if (!ctx.blocked_by.empty()) j["blocked_by"] = ctx.blocked_by;
    list.push_back(std::move(j));
  }
  json sil = json::array();
  for (const auto& [id, s] : silences_) sil.push_back(s.to_json());
  json win = json::array();
  for (std::size_t i = 0; i < settings_.maintenance.size(); ++i)
    if (open_windows_[i]) win.push_back(settings_.maintenance[i].name);
  return json{{"alarms", std::move(list)},
              {"silences", std::move(sil)},
              {"maintenance_open", std::move(win)}};
}

tl::expected<json, std::string> alarm_manager::silence_cmd(const json& body) {
  silence s;
  auto names = names_of(body);
  if (!names) return tl::unexpected(names.error());
  s.tasks = *names;
  if (auto it = body.find("tags"); it != body.end()) {
    if (!it->is_object())
      return tl::unexpected(std::string("\"tags\" must be an object of strings"));
    for (auto t = it->begin(); t != it->end(); ++t) {
      if (!t.value().is_string()) return tl::unexpected("tag \"" + t.key() + "\" must be a string");
      s.tags[t.key()] = t.value().get<std::string>();
    }
  }
  if (s.tasks.empty() && s.tags.empty())
    return tl::unexpected(std::string("say what to silence: \"tasks\" (names) or \"tags\""));
  const auto now = sys_clock::now();
  s.start = now;
  auto f = body.find("for");
  auto u = body.find("until");
  if ((f != body.end()) == (u != body.end()))
    return tl::unexpected(
        std::string("give exactly one of \"for\" (a duration such as \"2h\") and \"until\" (RFC "
                    "3339 time)"));
  if (f != body.end()) {
    if (!f->is_string())
      return tl::unexpected(std::string("\"for\" must be a duration such as \"2h\""));
    auto d = parse_duration(f->get<std::string>());
    if (!d || *d < std::chrono::seconds(1) || *d > std::chrono::hours(24 * 366))
      return tl::unexpected(std::string("\"for\" must be a duration from 1s to 366d"));
    s.end = now + std::chrono::duration_cast<sys_clock::duration>(*d);
  } else {
    if (!u->is_string()) return tl::unexpected(std::string("\"until\" must be an RFC 3339 time"));
    auto t = parse_rfc3339(u->get<std::string>(), rfc3339_zone::required_any);
    if (!t)
      return tl::unexpected(
          std::string("\"until\": not an RFC 3339 time such as \"2026-12-24T08:00:00Z\""));
    if (*t <= now) return tl::unexpected(std::string("\"until\" is in the past"));
    if (*t > now + std::chrono::hours(24 * 366))
      return tl::unexpected(std::string("\"until\" is more than 366 days away"));
    s.end = *t;
  }
  if (auto r = body.find("reason"); r != body.end()) {
    if (!r->is_string() || r->get<std::string>().size() > 1000)
      return tl::unexpected(std::string("\"reason\" must be a string of at most 1000 characters"));
    s.reason = r->get<std::string>();
  }
  if (silences_.size() >= 10000)
    return tl::unexpected(std::string("10000 silences are active: lift some first"));
  s.id = ++next_silence_;
  json reply = s.to_json();
  if (journal_) {
    json j = s.to_json();
    j["start_ms"] = to_epoch_ms(s.start);
    j["end_ms"] = to_epoch_ms(s.end);
    journal_->append(json{{"k", "sil"}, {"s", std::move(j)}});
  }
  std::size_t covered = 0;
  for (const auto& [name, e] : by_name_)
    covered += s.covers(name, e->spec ? &e->spec->tags : nullptr);
  sched_.for_each([&](const scheduled_task& t) {
    if (!by_name_.count(t.spec().name)) covered += s.covers(t.spec().name, &t.spec().tags);
  });
  reply["covers"] = covered;
  log("silence " + std::to_string(s.id) + " until " + format_time_rfc3339(s.end, 0) +
      (s.reason.empty() ? "" : ": " + s.reason));
  silences_[s.id] = std::move(s);
  arm_silences();
  reconsider_all();
  return reply;
}

tl::expected<json, std::string> alarm_manager::unsilence_cmd(const json& body) {
  auto it = body.find("id");
  if (it == body.end() || !it->is_number_unsigned())
    return tl::unexpected(std::string("\"id\": the silence's id (a number) is required"));
  auto id = it->get<std::uint64_t>();
  if (!silences_.erase(id)) return tl::unexpected("no active silence " + std::to_string(id));
  if (journal_) journal_->append(json{{"k", "unsil"}, {"id", id}});
  log("silence " + std::to_string(id) + " lifted");
  arm_silences();
  reconsider_all();
  return json{{"id", id}, {"lifted", true}};
}

tl::expected<json, std::string> alarm_manager::ack_cmd(const json& body) {
  std::string id;
  if (auto it = body.find("alarm_id"); it != body.end() && it->is_string())
    id = it->get<std::string>();
  std::string task;
  if (auto it = body.find("task"); it != body.end() && it->is_string())
    task = it->get<std::string>();
  if (id.empty() == task.empty())
    return tl::unexpected(std::string("give the alarm's \"alarm_id\" or its \"task\""));
  for (auto& [name, e] : by_name_) {
    if (e->track.quiet()) continue;
    if ((!id.empty() && e->track.alarm_id() == id) || (!task.empty() && name == task)) {
      if (!e->track.ack()) break;
      persist(*e);
      log("alarm " + e->track.alarm_id() + " (" + name + ") acknowledged");
      return json{{"alarm_id", e->track.alarm_id()}, {"task", name}, {"acknowledged", true}};
    }
  }
  return tl::unexpected(id.empty() ? "task '" + task + "' has no active alarm"
                                   : "no active alarm " + id);
}

json alarm_manager::stats() const {
  std::size_t active = 0;
  for (const auto& [n, e] : by_name_) active += !e->track.quiet();
  json j{{"active", active},
         {"events", events_},
         {"notifications", notifications_},
         {"pending", dispatch_.pending_count()},
         {"silences", silences_.size()},
         {"restored", restored_},
         {"journal_bad_lines", journal_bad_}};
  if (journal_) {
    auto s = journal_->get_stats();
    j["journal"] = json{{"lines", s.lines},
                        {"batches", s.batches},
                        {"rewrites", s.rewrites},
                        {"overflow", s.overflow},
                        {"errors", s.errors},
                        {"bytes", s.file_bytes},
                        {"last_error", s.last_error.empty() ? json() : json(s.last_error)}};
  }
  return j;
}

const alarm_track* alarm_manager::track(const std::string& task) const {
  auto it = by_name_.find(task);
  return it == by_name_.end() ? nullptr : &it->second->track;
}

bool alarm_manager::in_maintenance(const task_spec& t) const {
  if (!any_window_open_) return false;
  for (std::size_t i = 0; i < settings_.maintenance.size(); ++i)
    if (open_windows_[i] && settings_.maintenance[i].covers(t.name, t.tags)) return true;
  return false;
}

}  // namespace sonde::engine::alarms
