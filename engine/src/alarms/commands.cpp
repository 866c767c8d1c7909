#include "alarms/commands.hpp"

namespace sonde::engine::alarms {

using json = nlohmann::json;

void add_alarm_commands(control_server& server, alarm_manager& alarms) {
  using result = tl::expected<json, command_error>;
  auto wrap = [](tl::expected<json, std::string> r) -> result {
    if (!r) return tl::unexpected(command_error{r.error(), {}});
    return std::move(*r);
  };
  server.add_command("alarms", "active alarms, silences and open maintenance windows (task)",
                     [&alarms](control_client&, const control_request& r) -> result {
                       return alarms.alarms(r.body);
                     });
  server.add_command("silence",
                     "hold notifications: task(s) or tags, for or until, reason; returns its id",
                     [&alarms, wrap](control_client&, const control_request& r) -> result {
                       return wrap(alarms.silence_cmd(r.body));
                     });
  server.add_command("unsilence", "lift a silence: id",
                     [&alarms, wrap](control_client&, const control_request& r) -> result {
                       return wrap(alarms.unsilence_cmd(r.body));
                     });
  server.add_command("ack", "acknowledge an alarm (alarm_id or task): no renotify until resolved",
                     [&alarms, wrap](control_client&, const control_request& r) -> result {
                       return wrap(alarms.ack_cmd(r.body));
                     });
  server.add_command(
      "notifiers", "each notifier: sent, failed, retried, pending, dropped",
      [&alarms](control_client&, const control_request&) -> result { return alarms.notifiers(); });
  if (auto base = server.command("status"))
    server.add_command("status",
                       "uptime, task counts, in-flight probes, results per second, alarms",
                       [base, &alarms](control_client& c, const control_request& r) -> result {
                         auto out = base(c, r);
                         if (out && out->is_object()) (*out)["alarms"] = alarms.stats();
                         return out;
                       });
  alarms.on_event([&server](const json& event) { server.publish_alarm(event); });
}

}  // namespace sonde::engine::alarms
