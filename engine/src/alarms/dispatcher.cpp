#include "alarms/dispatcher.hpp"

#include <algorithm>

#include <cmath>

#include <sonde/duration.hpp>

#include "core/output.hpp"

namespace sonde::engine::alarms {

using json = nlohmann::json;
using steady = std::chrono::steady_clock;
using sys_clock = std::chrono::system_clock;

struct dispatcher::queue {
  queue(asio::io_context& io, notifier_config c, std::unique_ptr<notifier> n)
      : cfg(std::move(c)), impl(std::move(n)), timer(io) {}
  notifier_config cfg;
  std::unique_ptr<notifier> impl;
  std::deque<outbox_entry> entries;  // in order; the first `in_flight` are being sent
  std::size_t in_flight = 0;
  bool sending = false, timer_armed = false, backing_off = false;
  asio::steady_timer timer;
  steady::time_point timer_due{};
  int attempts = 0;  // failed attempts in a row
  std::deque<steady::time_point> sent_times;
  notifier_counters c;
};

dispatcher::dispatcher(asio::io_context& io, finished_fn finished, log_fn log)
    : io_(io), finished_(std::move(finished)), log_(std::move(log)) {}

dispatcher::~dispatcher() {
  stop();
}

void dispatcher::stop() {
  *alive_ = false;
  alive_ = std::make_shared<bool>(true);
  for (auto& [n, q] : queues_) {
    q->timer.cancel();
    q->timer_armed = false;
    q->impl.reset();  // cancels what is in flight without calling back
    q->sending = false;
  }
}

void dispatcher::add(notifier_config cfg, std::unique_ptr<notifier> impl) {
  auto name = cfg.spec.name;
  queues_[name] = std::make_unique<queue>(io_, std::move(cfg), std::move(impl));
}

bool dispatcher::enqueue(outbox_entry e) {
  auto it = queues_.find(e.notifier);
  if (it == queues_.end()) return false;
  e.arrived = steady::now();
  it->second->entries.push_back(std::move(e));
  try_send(*it->second);
  return true;
}

void dispatcher::durable(const std::string& notifier, std::uint64_t id) {
  auto it = queues_.find(notifier);
  if (it == queues_.end()) return;
  auto& q = *it->second;
  for (auto e = q.entries.rbegin(); e != q.entries.rend(); ++e)
    if (e->id == id) {
      e->durable = true;
      break;
    }
  try_send(q);
}

std::vector<const outbox_entry*> dispatcher::pending() const {
  std::vector<const outbox_entry*> out;
  for (const auto& [n, q] : queues_)
    for (const auto& e : q->entries) out.push_back(&e);
  return out;
}

std::size_t dispatcher::pending_count() const {
  std::size_t n = 0;
  for (const auto& [name, q] : queues_) n += q->entries.size();
  return n;
}

void dispatcher::arm(queue& q, steady::duration after) {
  q.timer_armed = true;
  q.timer_due = steady::now() + after;
  q.timer.expires_after(after);
  std::weak_ptr<bool> alive = alive_;
  q.timer.async_wait([this, &q, alive](asio::error_code ec) {
    if (ec || alive.expired()) return;
    q.timer_armed = false;
    q.backing_off = false;
    try_send(q);
  });
}

void dispatcher::finished(queue& q, std::size_t count, bool delivered, bool expired) {
  std::vector<std::uint64_t> ids;
  ids.reserve(count);
  for (std::size_t i = 0; i < count && !q.entries.empty(); ++i) {
    ids.push_back(q.entries.front().id);
    q.entries.pop_front();
  }
  if (delivered) {
    q.c.events_sent += ids.size();
  } else {
    q.c.dropped += ids.size();
    if (expired) q.c.expired += ids.size();
  }
  if (!ids.empty() && finished_) finished_(ids);
}

void dispatcher::try_send(queue& q) {
  if (q.sending || q.timer_armed || !q.impl) return;
  const auto now = steady::now();
  const auto wall = sys_clock::now();
  // Too old to matter any more: dropped, counted, logged.
  std::size_t old = 0;
  while (old < q.entries.size() && q.entries[old].created + q.cfg.max_age < wall) ++old;
  if (old) {
    log_("notifier '" + q.cfg.spec.name + "': dropped " + std::to_string(old) +
         " event(s) older than max_age " + format_duration(q.cfg.max_age) +
         " (last error: " + (q.c.last_error.empty() ? "none" : q.c.last_error) + ")");
    finished(q, old, false, true);
  }
  std::size_t k = 0;
  while (k < q.entries.size() && k < max_group && q.entries[k].durable) ++k;
  if (k == 0) return;
  if (q.attempts == 0 && q.cfg.group_wait.count() > 0) {
    auto due = q.entries.front().arrived + q.cfg.group_wait;
    if (now < due) return arm(q, due - now);
    // The window is over: take what arrived within it (durable ones).
  }
  if (q.cfg.rate_count > 0) {
    while (!q.sent_times.empty() && q.sent_times.front() + q.cfg.rate_period <= now)
      q.sent_times.pop_front();
    if (q.sent_times.size() >= static_cast<std::size_t>(q.cfg.rate_count))
      return arm(q, q.sent_times.front() + q.cfg.rate_period - now);
  }
  notification n;
  n.id = q.entries.front().id;
  n.notifier = q.cfg.spec.name;
  n.events.reserve(k);
  for (std::size_t i = 0; i < k; ++i) n.events.push_back(q.entries[i].event);
  q.sending = true;
  q.in_flight = k;
  std::weak_ptr<bool> alive = alive_;
  q.impl->send(n, [this, &q, alive, k](delivery_result r) {
    if (alive.expired()) return;
    q.sending = false;
    q.in_flight = 0;
    const auto name = q.cfg.spec.name;
    switch (r.what) {
      case delivery_result::outcome::delivered:
        if (q.attempts > 0)
          log_("notifier '" + name + "': delivered again after " + std::to_string(q.attempts) +
               " failed attempt(s)");
        q.attempts = 0;
        ++q.c.messages_sent;
        q.c.last_sent = sys_clock::now();
        q.sent_times.push_back(steady::now());
        finished(q, k, true, false);
        return try_send(q);
      case delivery_result::outcome::rejected:
        ++q.c.rejected;
        q.c.last_error = r.detail;
        q.c.last_failed = sys_clock::now();
        log_("notifier '" + name + "': the receiver rejected a message of " + std::to_string(k) +
             " event(s), dropped: " + r.detail);
        q.attempts = 0;
        finished(q, k, false, false);
        return try_send(q);
      case delivery_result::outcome::retry:
        break;
    }
    ++q.c.failed;
    ++q.c.retried;
    q.c.last_error = r.detail;
    q.c.last_failed = sys_clock::now();
    ++q.attempts;
    std::chrono::milliseconds delay;
    if (r.retry_after) {
      delay = std::clamp(*r.retry_after, std::chrono::milliseconds(0),
                         std::chrono::milliseconds(q.cfg.max_age));
    } else {
      // Exponential, capped, with "equal jitter": half fixed, half random.
      double base = static_cast<double>(q.cfg.retry_initial.count()) *
                    std::pow(2.0, std::min(q.attempts - 1, 30));
      base = std::min(base, static_cast<double>(q.cfg.retry_max.count()));
      std::uniform_real_distribution<double> half(0.5, 1.0);
      delay = std::chrono::milliseconds(static_cast<std::int64_t>(base * half(rng_)));
    }
    if (q.attempts == 1 || q.attempts % 10 == 0)
      log_("notifier '" + name + "': attempt " + std::to_string(q.attempts) + " failed (" +
           r.detail + "); retrying in " + format_duration(delay));
    q.backing_off = true;
    arm(q, delay);
  });
}

json dispatcher::describe() const {
  json list = json::array();
  for (const auto& [name, q] : queues_) {
    json j{{"name", name},
           {"type", q->cfg.spec.type},
           {"sent", q->c.messages_sent},
           {"events_sent", q->c.events_sent},
           {"failed", q->c.failed},
           {"retried", q->c.retried},
           {"pending", q->entries.size()},
           {"dropped", q->c.dropped},
           {"rejected", q->c.rejected},
           {"expired", q->c.expired},
           {"sending", q->sending},
           {"attempts", q->attempts},
           {"group_wait", format_duration(q->cfg.group_wait)},
           {"max_age", format_duration(q->cfg.max_age)},
           {"last_error", q->c.last_error.empty() ? json() : json(q->c.last_error)},
           {"last_sent", q->c.last_sent ? json(format_time_rfc3339(*q->c.last_sent, 3)) : json()}};
    if (q->backing_off && q->timer_armed) {
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(q->timer_due - steady::now());
      j["next_attempt_in"] = format_duration(std::max(left, std::chrono::milliseconds(0)));
    }
    list.push_back(std::move(j));
  }
  return json{{"notifiers", std::move(list)}};
}

}  // namespace sonde::engine::alarms
