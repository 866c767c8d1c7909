#include "alarms/machine.hpp"

#include <algorithm>
#include <random>

#include "core/output.hpp"
#include "core/rfc3339.hpp"

namespace sonde::engine::alarms {

using json = nlohmann::json;
using sys_clock = std::chrono::system_clock;

namespace {

alarm_severity severity_of(status s) {
  return s == status::warning ? alarm_severity::warning : alarm_severity::critical;
}

std::optional<reason> reason_from(std::string_view s) {
  for (int i = 0; i <= static_cast<int>(reason::error); ++i)
    if (to_string(static_cast<reason>(i)) == s) return static_cast<reason>(i);
  return std::nullopt;
}

std::optional<status> status_from(std::string_view s) {
  for (status st : {status::ok, status::warning, status::critical, status::unknown})
    if (to_string(st) == s) return st;
  return std::nullopt;
}

json brief_json(const result_brief& b) {
  json j{{"time", format_time_rfc3339(b.time, 3)},
         {"status", to_string(b.state)},
         {"reason", b.why == reason::none ? json() : json(to_string(b.why))},
         {"latency_ms", b.latency_ms ? json(*b.latency_ms) : json()},
         {"message", b.message}};
  return j;
}

}  // namespace

std::optional<alarm_state> alarm_state_from(std::string_view s) {
  for (auto st : {alarm_state::ok, alarm_state::pending, alarm_state::firing, alarm_state::flapping,
                  alarm_state::silenced})
    if (to_string(st) == s) return st;
  return std::nullopt;
}

std::string new_alarm_id() {
  thread_local std::mt19937_64 gen{[] {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }()};
  static constexpr char hex[] = "0123456789abcdef";
  std::uint64_t v = gen();
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) s[static_cast<std::size_t>(i)] = hex[v & 15];
  return s;
}

double alarm_track::flap_percent() const {
  if (ring_.size() < 2 || ring_.size() < ring_.capacity()) return 0;
  return 100.0 * changes_ / static_cast<double>(ring_.size() - 1);
}

void alarm_track::push_status(const alarm_policy& p, status s) {
  const auto w = static_cast<std::size_t>(p.flap_window);
  if (ring_.capacity() != w) {  // first result, or the window changed with a reload
    ring_ = {};
    ring_.reserve(w);
    head_ = 0;
    changes_ = 0;
  }
  auto v = static_cast<std::uint8_t>(s);
  if (ring_.size() < w) {
    if (!ring_.empty() && ring_.back() != v) ++changes_;
    ring_.push_back(v);
    return;
  }
  // Full: head_ is the oldest. Drop its change to the next one, add the newest one's.
  const std::uint8_t oldest = ring_[head_], second = ring_[(head_ + 1) % w];
  const std::uint8_t newest = ring_[(head_ + w - 1) % w];
  if (oldest != second) --changes_;
  if (newest != v) ++changes_;
  ring_[head_] = v;
  head_ = (head_ + 1) % w;
}

void alarm_track::on_result(const alarm_policy& p, const result_record& r, const alarm_context& ctx,
                            sys_clock::time_point now, std::vector<alarm_event>& out) {
  // The common case costs a few comparisons: ok after ok, nothing held, no window to watch.
  // (After an ok the window ends in ok, so another ok adds no change: it cannot start flapping.)
  if (r.state == status::ok && cond_ == alarm_state::ok && shown_ == alarm_state::ok &&
      !flapping_ && !notified_) {
    if (p.flap_window >= 2) push_status(p, r.state);
    ++ok_streak_;
    fail_streak_ = 0;
    return;
  }
  update(p, ctx, now, &r, out);
}

void alarm_track::reconsider(const alarm_policy& p, const alarm_context& ctx,
                             sys_clock::time_point now, std::vector<alarm_event>& out) {
  update(p, ctx, now, nullptr, out);
}

void alarm_track::update(const alarm_policy& p, const alarm_context& ctx, sys_clock::time_point now,
                         const result_record* r, std::vector<alarm_event>& out) {
  const alarm_state prev = shown_;
  bool sev_changed = false;
  if (r) {
    if (p.flap_window >= 2) push_status(p, r->state);
    const bool keep = r->state != status::ok || cond_ != alarm_state::ok || flapping_;
    if (keep) {
      last_reason_ = r->why;
      last_message_ = r->message;
    }
    if (r->state != status::ok) {
      ++fail_streak_;
      ok_streak_ = 0;
      const auto nsev = severity_of(r->state);
      if (cond_ == alarm_state::ok) {
        cond_ = alarm_state::pending;
        if (!notified_) recent_.clear();
        if (id_.empty()) id_ = new_alarm_id();
      }
      if (cond_ == alarm_state::pending && fail_streak_ >= p.failure_threshold) {
        cond_ = alarm_state::firing;
        sev_ = nsev;
      } else if (cond_ == alarm_state::firing) {
        sev_changed = nsev != sev_;
        sev_ = nsev;
      } else {
        sev_ = nsev;
      }
    } else {
      ++ok_streak_;
      fail_streak_ = 0;
      if (cond_ == alarm_state::pending)
        cond_ = alarm_state::ok;
      else if (cond_ == alarm_state::firing && ok_streak_ >= p.success_threshold)
        cond_ = alarm_state::ok;
    }
    if (keep) {
      if (recent_.size() >= max_results) recent_.erase(recent_.begin());
      recent_.push_back({r->time, r->state, r->why, r->latency_ms, r->message});
    }
    if (p.flap_window >= 2) {
      const double pct = flap_percent();
      if (!flapping_ && pct > p.flap_high) {
        flapping_ = true;
        if (id_.empty()) id_ = new_alarm_id();
      } else if (flapping_ && pct < p.flap_low) {
        flapping_ = false;
      }
    } else {
      flapping_ = false;
    }
  }

  alarm_state next = cond_;
  if (flapping_)
    next = alarm_state::flapping;
  else if (cond_ != alarm_state::ok && !ctx.silenced_by.empty())
    next = alarm_state::silenced;
  const std::string& held = !ctx.silenced_by.empty() ? ctx.silenced_by : ctx.blocked_by;
  const bool wants = cond_ == alarm_state::firing || flapping_;

  bool notify = false;
  if (next == alarm_state::ok) {
    notify = notified_;  // every notified alarm gets its resolution, held or not
  } else if (wants && held.empty()) {
    if (!notified_)
      notify = true;
    else if (next != prev && prev != alarm_state::silenced &&
             (next == alarm_state::firing || next == alarm_state::flapping))
      notify = true;  // firing <-> flapping, or firing again after flapping ended in pending
    else if (sev_changed && next == alarm_state::firing)
      notify = true;
    else if (next == alarm_state::firing && p.renotify.count() > 0 && !acked_ &&
             now - last_notified_ >= p.renotify)
      notify = true;
  }
  if (next == prev && !notify) return;

  if (next != prev) since_ = now;
  alarm_event e;
  e.time = now;
  e.alarm_id = id_;
  e.state = next;
  e.previous = prev;
  e.since = since_;
  e.severity = next == alarm_state::ok ? alarm_severity::none : sev_;
  e.why = last_reason_;
  e.message = last_message_;
  e.results = recent_;
  if (next != alarm_state::ok && wants && !held.empty()) e.held_by = held;
  e.notify = notify;
  e.acknowledged = acked_;
  shown_ = next;
  if (notify) last_notified_ = now;
  if (next == alarm_state::ok) {
    notified_ = false;
    acked_ = false;
    id_.clear();
    sev_ = alarm_severity::none;
    recent_.clear();
    last_reason_ = reason::none;
    last_message_.clear();
  } else if (notify) {
    notified_ = true;
  }
  out.push_back(std::move(e));
}

void alarm_track::retire(sys_clock::time_point now, std::string why,
                         std::vector<alarm_event>& out) {
  if (shown_ != alarm_state::ok || notified_) {
    alarm_event e;
    e.time = now;
    e.alarm_id = id_;
    e.state = alarm_state::ok;
    e.previous = shown_;
    e.since = now;
    e.why = reason::none;
    e.message = std::move(why);
    e.results = recent_;
    e.notify = notified_;
    out.push_back(std::move(e));
  }
  *this = alarm_track{};
}

bool alarm_track::ack() {
  if (shown_ == alarm_state::ok && !notified_) return false;
  acked_ = true;
  return true;
}

json alarm_track::save() const {
  std::string ring(ring_.size(), '0');
  for (std::size_t i = 0; i < ring_.size(); ++i) ring[i] = static_cast<char>('0' + ring_[i]);
  json results = json::array();
  for (const auto& b : recent_) {
    auto bj = brief_json(b);
    bj["time_ms"] = to_epoch_ms(b.time);
    results.push_back(std::move(bj));
  }
  return json{{"cond", to_string(cond_)},
              {"shown", to_string(shown_)},
              {"flapping", flapping_},
              {"notified", notified_},
              {"acked", acked_},
              {"severity", to_string(sev_)},
              {"id", id_},
              {"since", to_epoch_ms(since_)},
              {"last_notified", to_epoch_ms(last_notified_)},
              {"fail", fail_streak_},
              {"ok", ok_streak_},
              {"ring", ring},
              {"ring_size", ring_.capacity()},
              {"head", head_},
              {"reason", to_string(last_reason_)},
              {"message", last_message_},
              {"results", std::move(results)}};
}

bool alarm_track::restore(const json& j) {
  try {
    if (!j.is_object()) return false;
    alarm_track t;
    auto cond = alarm_state_from(j.at("cond").get<std::string>());
    auto shown = alarm_state_from(j.at("shown").get<std::string>());
    if (!cond || !shown || *cond == alarm_state::flapping || *cond == alarm_state::silenced)
      return false;
    t.cond_ = *cond;
    t.shown_ = *shown;
    t.flapping_ = j.at("flapping").get<bool>();
    t.notified_ = j.at("notified").get<bool>();
    t.acked_ = j.at("acked").get<bool>();
    auto sev = j.at("severity").get<std::string>();
    t.sev_ = sev == "warning"    ? alarm_severity::warning
             : sev == "critical" ? alarm_severity::critical
                                 : alarm_severity::none;
    t.id_ = j.at("id").get<std::string>();
    if (t.id_.size() > 64) return false;
    t.since_ = from_epoch_ms(j.at("since").get<std::int64_t>());
    t.last_notified_ = from_epoch_ms(j.at("last_notified").get<std::int64_t>());
    t.fail_streak_ = std::clamp(j.at("fail").get<int>(), 0, 1 << 30);
    t.ok_streak_ = std::clamp(j.at("ok").get<int>(), 0, 1 << 30);
    auto ring = j.at("ring").get<std::string>();
    auto cap = j.at("ring_size").get<std::size_t>();
    if (cap > 1000 || ring.size() > cap) return false;
    t.ring_.reserve(cap);
    for (char c : ring) {
      if (c < '0' || c > '3') return false;
      t.ring_.push_back(static_cast<std::uint8_t>(c - '0'));
    }
    t.head_ = j.at("head").get<std::size_t>();
    if (t.head_ >= std::max<std::size_t>(cap, 1)) return false;
    for (std::size_t i = 1; i < t.ring_.size(); ++i) {
      // Neighbours in ring order, oldest first, when full; insertion order otherwise.
      std::size_t a = (t.head_ + i - 1) % t.ring_.size(), b = (t.head_ + i) % t.ring_.size();
      if (t.ring_.size() < cap) a = i - 1, b = i;
      if (t.ring_[a] != t.ring_[b]) ++t.changes_;
    }
    t.last_reason_ = reason_from(j.at("reason").get<std::string>()).value_or(reason::none);
    t.last_message_ = j.at("message").get<std::string>();
    for (const auto& b : j.at("results")) {
      if (t.recent_.size() >= max_results) break;
      result_brief rb;
      rb.time = sys_clock::now();
      auto st = status_from(b.at("status").get<std::string>());
      if (!st) return false;
      rb.state = *st;
      if (b.at("reason").is_string())
        rb.why = reason_from(b.at("reason").get<std::string>()).value_or(reason::none);
      if (b.at("latency_ms").is_number()) rb.latency_ms = b.at("latency_ms").get<double>();
      rb.message = b.at("message").get<std::string>();
      if (auto tm = b.find("time_ms"); tm != b.end())
        rb.time = from_epoch_ms(tm->get<std::int64_t>());
      t.recent_.push_back(std::move(rb));
    }
    *this = std::move(t);
    return true;
  } catch (const json::exception&) {
    return false;
  }
}

json event_json(const alarm_event& e, const std::string& task, const std::string& type,
                const std::string& target) {
  json results = json::array();
  for (const auto& b : e.results) results.push_back(brief_json(b));
  json j{{"time", format_time_rfc3339(e.time, 3)},
         {"alarm_id", e.alarm_id},
         {"task", task},
         {"type", type},
         {"target", target},
         {"state", to_string(e.state)},
         {"severity", e.severity == alarm_severity::none ? json() : json(to_string(e.severity))},
         {"previous", to_string(e.previous)},
         {"since", format_time_rfc3339(e.since, 3)},
         {"reason", e.why == reason::none ? json() : json(to_string(e.why))},
         {"message", e.message},
         {"results", std::move(results)}};
  if (!e.held_by.empty()) j["held_by"] = e.held_by;
  if (e.acknowledged) j["acknowledged"] = true;
  return j;
}

}  // namespace sonde::engine::alarms
