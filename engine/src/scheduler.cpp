// Scheduling and evaluation. See scheduler.hpp.
#include <asio/post.hpp>

#include <sonde/engine/scheduler.hpp>

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
    rec.metrics.push_back(metric{r.metrics[i].name ? r.metrics[i].name : "?", r.metrics[i].value});
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
    : io_(io), opts_(opts), timer_(io), grace_timer_(io) {
  states_.reserve(tasks.size());
  for (auto& t : tasks) {
    task_state s;
    s.owner = this;
    s.spec = &t;
    states_.push_back(s);
    if (t.enabled) ++enabled_count_;
  }
  if (opts_.max_in_flight < 1) opts_.max_in_flight = 1;
}

scheduler::~scheduler() = default;

void scheduler::start() {
  auto now = steady::now();
  std::size_t k = 0;
  for (std::size_t i = 0; i < states_.size(); ++i) {
    auto& s = states_[i];
    if (!s.spec->enabled) continue;
    if (opts_.once) {
      s.due = now;
    } else {
      // Spread first runs evenly over the interval so many tasks never fire at once.
      auto offset = s.spec->interval * static_cast<std::int64_t>(k) /
                    static_cast<std::int64_t>(enabled_count_);
      s.due = now + std::chrono::duration_cast<steady::duration>(offset);
    }
    ++k;
    heap_.emplace(s.due, i);
  }
  if (opts_.once && enabled_count_ == 0 && on_idle_) asio::post(io_, on_idle_);
  arm();
}

void scheduler::arm() {
  if (heap_.empty() || stopping_) return;
  timer_.expires_at(heap_.top().first);
  timer_.async_wait([this](asio::error_code ec) {
    if (!ec) on_timer();
  });
}

void scheduler::on_timer() {
  auto now = steady::now();
  while (!heap_.empty() && heap_.top().first <= now && !stopping_) {
    auto idx = heap_.top().second;
    heap_.pop();
    dispatch(idx, now);
  }
  arm();
}

void scheduler::dispatch(std::size_t idx, steady::time_point now) {
  auto& s = states_[idx];
  if (!opts_.once) {
    // Fixed rate; if the loop fell behind by whole intervals, skip them rather than burst.
    auto iv = std::chrono::duration_cast<steady::duration>(s.spec->interval);
    auto next = s.due + iv;
    if (next <= now) next += iv * ((now - next) / iv + 1);
    s.due = next;
    heap_.emplace(next, idx);
  }
  if (s.running || s.queued) {
    ++stats_.skipped_overlap;  // never two runs of one task at once
    return;
  }
  if (stats_.in_flight < opts_.max_in_flight) {
    launch(idx);
  } else {
    s.queued = true;
    pending_.push_back(idx);
    stats_.queued = static_cast<std::int64_t>(pending_.size());
  }
}

void scheduler::launch(std::size_t idx) {
  auto& s = states_[idx];
  s.running = true;
  ++stats_.in_flight;
  ++stats_.started;
  if (stats_.in_flight > stats_.max_in_flight_seen) stats_.max_in_flight_seen = stats_.in_flight;
  auto now = steady::now();
  if (!stats_.first_start) stats_.first_start = now;
  auto dl = now + std::chrono::duration_cast<steady::duration>(s.spec->timeout);
  auto dl_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(dl.time_since_epoch()).count();
  const auto* type = s.spec->probe->type();
  type->run(s.spec->probe->handle(), &io_, dl_ns, &scheduler::on_done, &s);
}

void scheduler::on_done(void* user, const sonde_result* r) {
  auto* s = static_cast<task_state*>(user);
  s->owner->completed(*s, *r);
}

void scheduler::pump() {
  pump_posted_ = false;
  while (!pending_.empty() && stats_.in_flight < opts_.max_in_flight && !stopping_) {
    auto idx = pending_.front();
    pending_.pop_front();
    states_[idx].queued = false;
    launch(idx);
  }
  stats_.queued = static_cast<std::int64_t>(pending_.size());
}

void scheduler::completed(task_state& s, const sonde_result& r) {
  s.running = false;
  --stats_.in_flight;
  ++stats_.completed;
  stats_.last_done = steady::now();
  result_record rec = evaluate(*s.spec, r);
  if (s.has_last && s.last != rec.state) rec.previous = s.last;
  s.last = rec.state;
  s.has_last = true;
  ++stats_.by_status[static_cast<int>(rec.state)];
  for (auto* sink : sinks_) sink->on_result(rec);

  if (!pending_.empty() && !pump_posted_ && !stopping_) {
    // Posted, not called: a probe may complete inside launch(), and recursion must not grow.
    pump_posted_ = true;
    asio::post(io_, [this] { pump(); });
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
  while (!heap_.empty()) heap_.pop();
  for (auto idx : pending_) states_[idx].queued = false;
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

}  // namespace sonde::engine
