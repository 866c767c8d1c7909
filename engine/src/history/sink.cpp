// Results into the history store. See sink.hpp.
#include "history/sink.hpp"

#include <algorithm>

#include "core/rfc3339.hpp"

namespace sonde::engine::history {

result_row to_row(const result_record& r, std::shared_ptr<const task_ident> task,
                  bool maintenance) {
  result_row row;
  row.task = std::move(task);
  row.time_ms = to_epoch_ms(r.time);
  row.status = static_cast<std::uint8_t>(r.state);
  row.reason = static_cast<std::uint8_t>(r.why);
  row.maintenance = maintenance;
  row.latency_ms = r.latency_ms;
  if (r.state != status::ok) row.message = r.message;
  row.metrics = r.metrics;
  return row;
}

std::vector<std::string> condition_metrics(const task_spec& t) {
  std::vector<std::string> out;
  for (const auto* list : {&t.warn, &t.crit})
    for (const auto& c : *list)
      if (std::find(out.begin(), out.end(), c.metric) == out.end()) out.push_back(c.metric);
  return out;
}

void history_sink::on_result(const result_record& r) {
  if (!r.task) return;
  auto& ident = idents_[r.task];
  if (!ident) {
    auto t = std::make_shared<task_ident>();
    t->name = r.task->name;
    t->type = r.task->type;
    t->target = r.task->target;
    t->rollup_metrics = condition_metrics(*r.task);
    ident = std::move(t);
  }
  bool maint = in_maintenance_ && in_maintenance_(*r.task);
  store_.add_result(to_row(r, ident, maint));
}

}  // namespace sonde::engine::history
