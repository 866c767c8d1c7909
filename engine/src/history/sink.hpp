#pragma once
/// @file sink.hpp
/// The scheduler's results into the history store: on the event loop, a copy into the store's
/// bounded queue and nothing else (no disk, no lock held for long).

#include <functional>
#include <memory>
#include <unordered_map>

#include "core/scheduler.hpp"
#include "history/store.hpp"

namespace sonde::engine::history {

/// Converts a result for the store (shared with the agents' reports).
result_row to_row(const result_record& r, std::shared_ptr<const task_ident> task, bool maintenance);

/// The metrics a task's conditions use (rolled up besides the latency).
std::vector<std::string> condition_metrics(const task_spec& t);

class history_sink final : public result_sink {
 public:
  /// `in_maintenance` (optional) says whether a task is inside a maintenance window now.
  history_sink(store& s, std::function<bool(const task_spec&)> in_maintenance = nullptr)
      : store_(s), in_maintenance_(std::move(in_maintenance)) {}
  void on_result(const result_record& r) override;
  void on_removed(const task_spec& t) override { idents_.erase(&t); }

 private:
  store& store_;
  std::function<bool(const task_spec&)> in_maintenance_;
  std::unordered_map<const task_spec*, std::shared_ptr<const task_ident>> idents_;
};

}  // namespace sonde::engine::history
