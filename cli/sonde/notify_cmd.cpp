#include "notify_cmd.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>

#include <asio/io_context.hpp>

#include "alarms/notifier.hpp"
#include "core/config.hpp"
#include "core/output.hpp"

namespace sonde::cli {

using namespace engine;
using json = nlohmann::json;

int notify_test(const alarms::alarm_settings& settings, const std::string& name,
                const std::string& file) {
  const alarms::notifier_config* cfg = nullptr;
  std::vector<std::string> names;
  for (const auto& n : settings.notifiers) {
    names.push_back(n.spec.name);
    if (n.spec.name == name) cfg = &n;
  }
  if (!cfg) {
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    auto sugg = closest(name, names);
    std::fprintf(stderr, "sonde: %s has no notifier '%s'%s; %s\n", file.c_str(), name.c_str(),
                 sugg.empty() ? "" : (" (did you mean '" + sugg + "'?)").c_str(),
                 list.empty() ? "it defines none ([[notifier]])" : ("defined: " + list).c_str());
    return 3;
  }
  asio::io_context io(1);
  auto n = alarms::make_notifier(io, cfg->spec);
  if (!n) {
    std::fprintf(stderr, "sonde: notifier '%s': %s\n", name.c_str(), n.error().message.c_str());
    return 3;
  }
  char host[256] = "localhost";
  ::gethostname(host, sizeof host - 1);
  const auto now = std::chrono::system_clock::now();
  const auto t = format_time_rfc3339(now, 3);
  alarms::notification msg;
  msg.id = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count());
  msg.notifier = name;
  msg.test = true;
  msg.events.push_back(
      json{{"time", t},
           {"alarm_id", "test-" + std::to_string(msg.id)},
           {"task", "sonde-notify-test"},
           {"type", "test"},
           {"target", host},
           {"state", "firing"},
           {"severity", "warning"},
           {"previous", "ok"},
           {"since", t},
           {"reason", nullptr},
           {"message", std::string("Test notification from sonde notify-test on ") + host +
                           ": if you read this, notifier '" + name + "' works."},
           {"results", json::array()},
           {"test", true}});
  std::optional<alarms::delivery_result> out;
  (*n)->send(msg, [&](alarms::delivery_result r) { out = std::move(r); });
  io.run_for(cfg->spec.timeout + std::chrono::seconds(2));
  if (!out) {
    std::fprintf(stderr, "sonde: notifier '%s' (%s): no answer within %s\n", name.c_str(),
                 cfg->spec.type.c_str(), format_duration(cfg->spec.timeout).c_str());
    return 2;
  }
  using oc = alarms::delivery_result::outcome;
  if (out->what == oc::delivered) {
    std::printf("notifier '%s' (%s): delivered%s%s\n", name.c_str(), cfg->spec.type.c_str(),
                out->detail.empty() ? "" : ": ", out->detail.c_str());
    return 0;
  }
  std::fprintf(stderr, "sonde: notifier '%s' (%s): %s: %s\n", name.c_str(), cfg->spec.type.c_str(),
               out->what == oc::rejected ? "rejected (retrying would not help)"
                                         : "failed (the engine would retry)",
               out->detail.c_str());
  return 2;
}

}  // namespace sonde::cli
