// Scheduling and evaluation. See scheduler.hpp.
#include <algorithm>

#include <asio/post.hpp>

#include "core/scheduler.hpp"

namespace sonde::engine {

using steady = std::chrono::steady_clock;

result_record evaluate(const task_spec& task, const sonde_result& r) {
  result_record rec;
  rec.task = &task;
  rec.time = r.start_unix_ns > 0
                 ? std::chrono::system_clock::time_point(
                       std::chrono::duration_cast<std::chrono::system_clock::duration>(
                           std::chrono::nanoseconds(r.start_unix_ns)))
                 : std::chrono::system_clock::now();
  rec.message = r.message ? r.message : "";
  if (!r.has_observation) {
    rec.state = status::unknown;
    rec.why = reason::error;
    return rec;
  }
  if (r.latency_ns >= 0) rec.latency_ms = static_cast<double>(r.latency_ns) / 1e6;
  rec.metrics.reserve(r.metric_count + 1);
  for (std::size_t i = 0; i < r.metric_count; ++i)
    rec.metrics.emplace_back(r.metrics[i].name ? r.metrics[i].name : "?", r.metrics[i].value);
  rec.why = static_cast<reason>(r.reason);
  if (rec.why < reason::none || rec.why > reason::error) rec.why = reason::error;
  if (rec.why != reason::none) {
    rec.state = status::critical;
    return rec;
  }
  auto value_of = [&](const std::string& name) -> std::optional<double> {
    for (auto& m : rec.metrics)
      if (m.name == name) return m.value;
    if (name == "latency" && rec.latency_ms) return *rec.latency_ms / 1e3;
    return std::nullopt;
  };
  auto check = [&](const std::vector<condition>& conds, status st) {
    for (const auto& c : conds) {
      auto v = value_of(c.metric);
      if (v && c.holds(*v)) {
        rec.state = st;
        rec.why = reason::condition;
        char buf[64];
        std::snprintf(buf, sizeof buf, "%g", *v);
        rec.message = c.text + " (" + c.metric + " = " + buf + "); " + rec.message;
        return true;
      }
    }
    return false;
  };
  if (!check(task.crit, status::critical) && !check(task.warn, status::warning))
    rec.state = status::ok;
  return rec;
}

scheduler::scheduler(asio::io_context& io, std::vector<task_spec>& tasks, scheduler_options opts)
    : io_(io),
      opts_(opts),
      timer_(io),
      grace_timer_(io),
      heartbeat_(io.get_executor(), std::chrono::milliseconds(10)) {
  for (auto& t : tasks) {
    auto& s = states_.emplace_back();
    s.owner_ = this;
    s.spec_ = &t;
    s.slot_ = states_.size() - 1;
    if (t.enabled) ++enabled_count_;
  }
  live_ = states_.size();
  if (opts_.max_in_flight < 1) opts_.max_in_flight = 1;
}

scheduler::~scheduler() = default;

void scheduler::remove_sink(result_sink* s) {
  sinks_.erase(std::remove(sinks_.begin(), sinks_.end(), s), sinks_.end());
}

void scheduler::start() {
  started_ = true;
  auto now = steady::now();
  std::size_t k = 0;
  auto startable = [](const scheduled_task& s) {
    return !s.removed_ && s.spec_ && s.spec_->enabled && !s.paused_;
  };
  if (opts_.once) {
    // Every task is due now and runs once: dispatched in file order from one handler, with
    // no timer and no heap (tens of thousands of pushes and pops for nothing).
    if (enabled_count_ == 0 && on_idle_) asio::post(io_, on_idle_);
    asio::post(io_, [this, startable] {
      const auto at = steady::now();
      for (auto& s : states_) {
        if (stopping_) break;
        if (!startable(s)) continue;
        s.due_ = at;
        dispatch(s, at);
      }
    });
    return;
  }
  for (auto& s : states_) {
    if (!startable(s)) continue;
    // Spread first runs evenly over the interval so many tasks never fire at once.
    auto offset = s.spec_->interval * static_cast<std::int64_t>(k) /
                  static_cast<std::int64_t>(std::max<std::size_t>(enabled_count_, 1));
    s.due_ = now + std::chrono::duration_cast<steady::duration>(offset);
    ++k;
    heap_.push({s.due_, s.slot_, s.gen_});
  }
  arm();
}

void scheduler::arm() {
  while (!heap_.empty()) {  // drop stale entries of paused or removed tasks
    const auto& top = heap_.top();
    const auto& s = states_[top.slot];
    if (top.gen == s.gen_ && !s.removed_ && !s.paused_) break;
    heap_.pop();
  }
  if (heap_.empty() || stopping_) return;
  auto at = heap_.top().due;
  if (armed_ && armed_for_ == at) return;
  armed_ = true;
  armed_for_ = at;
  timer_.expires_at(at);  // cancels an earlier wait, whose handler sees operation_aborted
  timer_.async_wait([this](asio::error_code ec) {
    if (ec) return;
    armed_ = false;
    on_timer();
  });
}

void scheduler::on_timer() {
  auto now = steady::now();
  while (!heap_.empty() && heap_.top().due <= now && !stopping_) {
    auto item = heap_.top();
    heap_.pop();
    auto& s = states_[item.slot];
    if (item.gen != s.gen_ || s.removed_ || s.paused_) continue;  // stale
    dispatch(s, now);
  }
  arm();
}

void scheduler::schedule(scheduled_task& s, steady::time_point due) {
  s.due_ = due;
  heap_.push({due, s.slot_, s.gen_});
}

void scheduler::dispatch(scheduled_task& s, steady::time_point now) {
  if (!opts_.once) {
    // Fixed rate; if the loop fell behind by whole intervals, skip them rather than burst.
    auto iv = std::chrono::duration_cast<steady::duration>(s.spec_->interval);
    auto next = s.due_ + iv;
    if (next <= now) next += iv * ((now - next) / iv + 1);
    schedule(s, next);
  }
  if (s.running_ || s.queued_) {
    ++stats_.skipped_overlap;  // never two runs of one task at once
    return;
  }
  if (stats_.in_flight < opts_.max_in_flight) {
    launch(s);
  } else {
    s.queued_ = true;
    pending_.emplace_back(s.slot_, s.gen_);
    stats_.queued = static_cast<std::int64_t>(pending_.size());
  }
}

void scheduler::launch(scheduled_task& s) {
  s.running_ = true;
  ++stats_.in_flight;
  ++stats_.started;
  if (stats_.in_flight > stats_.max_in_flight_seen) stats_.max_in_flight_seen = stats_.in_flight;
  auto now = steady::now();
  if (!stats_.first_start) stats_.first_start = now;
  auto dl = now + std::chrono::duration_cast<steady::duration>(s.spec_->timeout);
  auto dl_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(dl.time_since_epoch()).count();
  heartbeat_.begin();
  const auto* type = s.spec_->probe->type();
  ++launching_;
  type->run(s.spec_->probe->handle(), &io_, dl_ns, &scheduler::on_done, &s);
  --launching_;
}

void scheduler::on_done(void* user, const sonde_result* r) {
  auto* s = static_cast<scheduled_task*>(user);
  s->owner_->completed(*s, *r);
}

void scheduler::pump() {
  pump_posted_ = false;
  pumping_ = true;
  while (!pending_.empty() && stats_.in_flight < opts_.max_in_flight && !stopping_) {
    auto [slot, gen] = pending_.front();
    pending_.pop_front();
    auto& s = states_[slot];
    if (s.gen_ != gen || s.removed_ || s.paused_) continue;  // paused or removed while queued
    s.queued_ = false;
    launch(s);
  }
  pumping_ = false;
  stats_.queued = static_cast<std::int64_t>(pending_.size());
}

void scheduler::completed(scheduled_task& s, const sonde_result& r) {
  s.running_ = false;
  --stats_.in_flight;
  ++stats_.completed;
  heartbeat_.end();
  stats_.last_done = steady::now();
  if (s.removed_) {
    release(s);  // removed while running: the result has no task to belong to
  } else {
    result_record rec = evaluate(*s.spec_, r);
    if (s.has_last_ && s.last_ != rec.state) rec.previous = s.last_;
    s.last_ = rec.state;
    s.has_last_ = true;
    ++stats_.by_status[static_cast<int>(rec.state)];
    for (auto* sink : sinks_) sink->on_result(rec);
    s.last_result_ = std::move(rec);  // kept for `list`: a move, not a copy
  }

  if (!pending_.empty() && !pump_posted_ && !pumping_ && !stopping_) {
    if (launching_ == 0) {
      pump();  // a probe finished on its own: start the next one now, not a loop turn later
    } else {
      // A probe completed inside launch() (outside pump's loop): posted, so that recursion
      // cannot grow.
      pump_posted_ = true;
      asio::post(io_, [this] { pump(); });
    }
  }
  if (opts_.once && stats_.completed == enabled_count_ && on_idle_) asio::post(io_, on_idle_);
  if (stopping_ && stats_.in_flight == 0 && on_stopped_) {
    auto f = std::move(on_stopped_);
    on_stopped_ = nullptr;
    grace_timer_.cancel();
    asio::post(io_, f);
  }
}

void scheduler::stop(std::function<void()> done, std::chrono::milliseconds grace) {
  stopping_ = true;
  timer_.cancel();
  heartbeat_.stop();
  armed_ = false;
  while (!heap_.empty()) heap_.pop();
  for (auto [slot, gen] : pending_) states_[slot].queued_ = false;
  pending_.clear();
  stats_.queued = 0;
  if (stats_.in_flight == 0) {
    asio::post(io_, std::move(done));
    return;
  }
  on_stopped_ = std::move(done);
  grace_timer_.expires_after(grace);
  grace_timer_.async_wait([this](asio::error_code ec) {
    if (ec || !on_stopped_) return;
    auto f = std::move(on_stopped_);
    on_stopped_ = nullptr;
    f();
  });
}

void scheduler::build_index() const {
  if (indexed_) return;
  index_.reserve(states_.size());
  for (auto& s : states_)
    if (!s.removed_ && s.spec_) index_.emplace(s.spec_->name, s.slot_);
  indexed_ = true;
}

scheduled_task* scheduler::lookup(std::string_view name) const {
  build_index();
  auto it = index_.find(name);
  // const only so `find` can be const; the caller decides what it may change.
  return it == index_.end() ? nullptr : const_cast<scheduled_task*>(&states_[it->second]);
}

const scheduled_task* scheduler::find(std::string_view name) const {
  return lookup(name);
}

const scheduled_task* scheduler::add(task_spec spec) {
  if (lookup(spec.name)) return nullptr;
  std::size_t slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    states_.emplace_back();
    slot = states_.size() - 1;
  }
  auto& s = states_[slot];
  auto gen = s.gen_ + 1;  // a reused slot must not match its previous owner's heap entries
  s = scheduled_task{};
  s.gen_ = gen;
  s.owner_ = this;
  s.slot_ = slot;
  s.owned_ = std::make_unique<task_spec>(std::move(spec));
  s.spec_ = s.owned_.get();
  index_.emplace(s.spec_->name, slot);
  ++live_;
  if (s.spec_->enabled) ++enabled_count_;
  if (started_ && !stopping_ && s.spec_->enabled) {
    schedule(s, steady::now());
    arm();
  }
  return &s;
}

void scheduler::release(scheduled_task& s) {
  // The slot is reused only once no run refers to it (on_done's user pointer).
  s.spec_ = nullptr;
  s.owned_.reset();
  s.last_result_.reset();
  free_slots_.push_back(s.slot_);
}

bool scheduler::remove(std::string_view name) {
  auto* s = lookup(name);
  if (!s) return false;
  for (auto* k : sinks_) k->on_removed(*s->spec_);
  index_.erase(s->spec_->name);
  if (s->spec_->enabled) --enabled_count_;
  --live_;
  s->removed_ = true;
  ++s->gen_;
  s->queued_ = false;
  if (!s->running_) release(*s);
  return true;
}

bool scheduler::pause(std::string_view name) {
  auto* s = lookup(name);
  if (!s) return false;
  if (!s->paused_) {
    s->paused_ = true;
    ++s->gen_;  // drops its heap entry and any place in the in-flight queue
    s->queued_ = false;
  }
  return true;
}

bool scheduler::resume(std::string_view name) {
  auto* s = lookup(name);
  if (!s) return false;
  if (s->paused_) {
    s->paused_ = false;
    ++s->gen_;
    if (started_ && !stopping_ && s->spec_->enabled) {
      schedule(*s, steady::now());
      arm();
    }
  }
  return true;
}

void scheduler::resume(const std::vector<std::string>& names) {
  std::vector<scheduled_task*> list;
  for (const auto& n : names)
    if (auto* s = lookup(n); s && s->paused_) list.push_back(s);
  auto now = steady::now();
  for (std::size_t k = 0; k < list.size(); ++k) {
    auto& s = *list[k];
    s.paused_ = false;
    ++s.gen_;
    if (!started_ || stopping_ || !s.spec_->enabled) continue;
    auto offset =
        s.spec_->interval * static_cast<std::int64_t>(k) / static_cast<std::int64_t>(list.size());
    schedule(s, now + std::chrono::duration_cast<steady::duration>(offset));
  }
  arm();
}

}  // namespace sonde::engine
