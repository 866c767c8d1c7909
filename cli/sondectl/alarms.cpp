#include "alarms.hpp"

#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "text.hpp"

namespace sonde::sondectl {

using json = nlohmann::json;

namespace {

void show_alarms(const json& r) {
  const auto& list = r["alarms"];
  if (list.empty()) {
    std::printf("no active alarms\n");
  } else {
    std::printf("%-16s  %-20s  %-9s  %-8s  %-24s  %s\n", "ALARM", "TASK", "STATE", "SEVERITY",
                "SINCE", "MESSAGE");
    for (const auto& a : list) {
      std::string state = text(a, "state");
      if (a.value("acknowledged", false)) state += "*";
      std::string note;
      if (a.contains("silenced_by")) note = " [" + text(a, "silenced_by") + "]";
      if (a.contains("blocked_by")) note += " [" + text(a, "blocked_by") + "]";
      std::printf("%-16s  %-20s  %-9s  %-8s  %-24s  %s%s\n", text(a, "alarm_id").c_str(),
                  text(a, "task").c_str(), state.c_str(), text(a, "severity").c_str(),
                  text(a, "since").c_str(), text(a, "message", "").c_str(), note.c_str());
    }
  }
  if (!r["silences"].empty()) {
    std::printf("\nsilences:\n");
    for (const auto& s : r["silences"]) {
      std::string what;
      for (const auto& t : s["tasks"]) what += (what.empty() ? "" : ",") + t.get<std::string>();
      for (auto it = s["tags"].begin(); it != s["tags"].end(); ++it)
        what += (what.empty() ? "" : ",") + it.key() + "=" + it.value().get<std::string>();
      std::printf("  %s  until %s  %s  %s\n", text(s, "id").c_str(), text(s, "until").c_str(),
                  what.c_str(), text(s, "reason", "").c_str());
    }
  }
  if (!r["maintenance_open"].empty()) {
    std::string w;
    for (const auto& n : r["maintenance_open"]) w += (w.empty() ? "" : ", ") + n.get<std::string>();
    std::printf("\nmaintenance open: %s\n", w.c_str());
  }
}

void show_notifiers(const json& r) {
  std::printf("%-16s  %-9s  %6s  %6s  %7s  %7s  %7s  %s\n", "NOTIFIER", "TYPE", "SENT", "FAILED",
              "RETRIED", "PENDING", "DROPPED", "LAST ERROR");
  for (const auto& n : r["notifiers"]) {
    std::string err = text(n, "last_error", "");
    if (n.contains("next_attempt_in"))
      err += " (next attempt in " + text(n, "next_attempt_in") + ")";
    std::printf("%-16s  %-9s  %6s  %6s  %7s  %7s  %7s  %s\n", text(n, "name").c_str(),
                text(n, "type").c_str(), text(n, "sent").c_str(), text(n, "failed").c_str(),
                text(n, "retried").c_str(), text(n, "pending").c_str(), text(n, "dropped").c_str(),
                err.c_str());
  }
}

}  // namespace

void print_alarm_event(const json& e, bool color) {
  const std::string state = text(e, "state"), prev = text(e, "previous");
  std::string label = state == "ok" && prev != "pending" ? "RESOLVED" : upper(state);
  const char* c = "";
  if (color)
    c = state == "ok"         ? "\033[32m"
        : state == "firing"   ? (text(e, "severity") == "warning" ? "\033[33m" : "\033[1;31m")
        : state == "flapping" ? "\033[35m"
                              : "\033[2m";
  std::string t = text(e, "time");
  std::printf("%s  %s%-9s%s  %-8s  %-20s  %s  (was %s)%s%s\n", t.c_str(), c, label.c_str(),
              color ? "\033[0m" : "", text(e, "severity", "").c_str(), text(e, "task").c_str(),
              text(e, "message", "").c_str(), prev.c_str(),
              e.contains("held_by") ? ("  held: " + text(e, "held_by")).c_str() : "",
              text(e, "alarm_id").empty() ? "" : ("  id " + text(e, "alarm_id")).c_str());
  std::fflush(stdout);
}

std::function<std::optional<int>(const request_fn&)> add_alarm_commands(CLI::App& app) {
  struct opts {
    std::vector<std::string> tasks, tags;
    std::string for_, until, reason, alarm_id, task;
    std::uint64_t id = 0;
  };
  auto o = std::make_shared<opts>();
  auto* alarms = app.add_subcommand("alarms", "Active alarms, silences, open maintenance windows");
  alarms->add_option("--task", o->tasks, "Only these tasks (repeatable)");
  auto* silence = app.add_subcommand(
      "silence", "Hold notifications for tasks or tags: silence TASK... --for 2h --reason TEXT");
  silence->add_option("TASK", o->tasks, "Task names");
  silence->add_option("--tag", o->tags, "Tag selector key=value (repeatable; all must match)");
  silence->add_option("--for", o->for_, "How long, e.g. 30m, 2h");
  silence->add_option("--until", o->until, "Until an RFC 3339 time, e.g. 2026-12-24T08:00:00Z");
  silence->add_option("--reason", o->reason, "Why (shown with the alarms)");
  auto* unsilence = app.add_subcommand("unsilence", "Lift a silence by its id");
  unsilence->add_option("ID", o->id, "The silence's id")->required();
  auto* ack = app.add_subcommand("ack", "Acknowledge an alarm: no renotify until it resolves");
  ack->add_option("ALARM", o->alarm_id, "The alarm id (from `sondectl alarms`)");
  ack->add_option("--task", o->task, "Or the task whose alarm it is");
  auto* notifiers =
      app.add_subcommand("notifiers", "Notifiers: sent, failed, retried, pending, dropped");

  return [=](const request_fn& req) -> std::optional<int> {
    if (*alarms) {
      json r{{"command", "alarms"}};
      if (!o->tasks.empty()) r["tasks"] = o->tasks;
      return req(r, show_alarms);
    }
    if (*silence) {
      json r{{"command", "silence"}};
      if (!o->tasks.empty()) r["tasks"] = o->tasks;
      if (!o->tags.empty()) {
        json t = json::object();
        for (const auto& kv : o->tags) {
          auto eq = kv.find('=');
          if (eq == std::string::npos || eq == 0) {
            std::fprintf(stderr, "sondectl: --tag expects key=value, got \"%s\"\n", kv.c_str());
            return 3;
          }
          t[kv.substr(0, eq)] = kv.substr(eq + 1);
        }
        r["tags"] = t;
      }
      if (!o->for_.empty()) r["for"] = o->for_;
      if (!o->until.empty()) r["until"] = o->until;
      if (!o->reason.empty()) r["reason"] = o->reason;
      return req(r, [](const json& rep) {
        std::printf("silence %s until %s (covers %s task%s)\n", text(rep, "id").c_str(),
                    text(rep, "until").c_str(), text(rep, "covers").c_str(),
                    text(rep, "covers") == "1" ? "" : "s");
      });
    }
    if (*unsilence)
      return req(json{{"command", "unsilence"}, {"id", o->id}}, [](const json& rep) {
        std::printf("silence %s lifted\n", text(rep, "id").c_str());
      });
    if (*ack) {
      json r{{"command", "ack"}};
      if (!o->alarm_id.empty()) r["alarm_id"] = o->alarm_id;
      if (!o->task.empty()) r["task"] = o->task;
      return req(r, [](const json& rep) {
        std::printf("alarm %s (%s) acknowledged\n", text(rep, "alarm_id").c_str(),
                    text(rep, "task").c_str());
      });
    }
    if (*notifiers) return req(json{{"command", "notifiers"}}, show_notifiers);
    return std::nullopt;
  };
}

}  // namespace sonde::sondectl
