// sondectl: manage a running sonde engine over its control channel (docs/cli.md).
// Exit codes: 0 success, 1 the engine replied with an error, 2 the engine cannot be reached
// (or the connection was lost or timed out), 3 usage errors.
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include <CLI/CLI.hpp>
#include <asio/connect.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read_until.hpp>
#include <asio/ssl.hpp>
#include <asio/write.hpp>
#include <nlohmann/json.hpp>

#include <sonde/duration.hpp>
#include <sonde/version.hpp>
#include "alarms.hpp"
#include "control/control_request.hpp"
#include "history.hpp"
#include "text.hpp"

using json = nlohmann::json;
using asio::ip::tcp;
using sonde::sondectl::text;
using sonde::sondectl::upper;
using namespace std::chrono_literals;

namespace {

constexpr int exit_error_reply = 1, exit_unreachable = 2, exit_usage = 3;

struct settings {
  std::string connect = "127.0.0.1:6543";
  std::string token;
  bool json_out = false;
  bool tls = false, insecure = false;
  std::string ca_file;
  std::string timeout = "10s";
  std::chrono::milliseconds wait{10000};
};

// One connection to the engine: newline-delimited JSON, plain or TLS, every operation bounded by
// a deadline (async operations run with io_context::run_for).
class connection {
 public:
  explicit connection(const settings& s) : s_(s) {}

  bool open(std::string& err) {
    auto addr = sonde::engine::parse_listen_address(s_.connect);
    if (!addr) {
      err = addr.error();
      return false;
    }
    io_.restart();
    tcp::resolver resolver(io_);
    asio::error_code ec;
    auto eps = resolver.resolve(addr->host, std::to_string(addr->port), ec);
    if (ec) {
      err = "cannot resolve " + addr->host + ": " + ec.message();
      return false;
    }
    sock_.emplace(io_);
    bool done = false;
    asio::async_connect(*sock_, eps, [&](asio::error_code e, const tcp::endpoint&) {
      ec = e;
      done = true;
    });
    if (!run(done)) ec = asio::error::timed_out;
    if (ec) {
      err = "cannot connect to " + s_.connect + ": " + ec.message();
      return false;
    }
    sock_->set_option(tcp::no_delay(true), ec);
    if (s_.tls) {
      ctx_.emplace(asio::ssl::context::tls_client);
      if (s_.insecure) {
        ctx_->set_verify_mode(asio::ssl::verify_none);
      } else {
        ctx_->set_verify_mode(asio::ssl::verify_peer);
        if (!s_.ca_file.empty())
          ctx_->load_verify_file(s_.ca_file, ec);
        else
          ctx_->set_default_verify_paths(ec);
        if (ec) {
          err = "cannot load CA file " + s_.ca_file + ": " + ec.message();
          return false;
        }
      }
      tls_.emplace(*sock_, *ctx_);
      done = false;
      tls_->async_handshake(asio::ssl::stream_base::client, [&](asio::error_code e) {
        ec = e;
        done = true;
      });
      if (!run(done)) ec = asio::error::timed_out;
      if (ec) {
        err = "TLS handshake with " + s_.connect + " failed: " + ec.message();
        return false;
      }
    }
    buf_.clear();
    return true;
  }

  bool send(json req, std::string& err) {
    if (!s_.token.empty()) req["token"] = s_.token;
    std::string line = req.dump() + "\n";
    asio::error_code ec;
    bool done = false;
    auto h = [&](asio::error_code e, std::size_t) {
      ec = e;
      done = true;
    };
    if (tls_)
      asio::async_write(*tls_, asio::buffer(line), h);
    else
      asio::async_write(*sock_, asio::buffer(line), h);
    if (!run(done)) ec = asio::error::timed_out;
    if (ec) err = "cannot send to " + s_.connect + ": " + ec.message();
    return !ec;
  }

  // One line; `limit` < 0 waits forever. nullopt with `err` set on failure.
  std::optional<json> receive(std::string& err, std::chrono::milliseconds limit) {
    asio::error_code ec;
    std::size_t n = 0;
    bool done = false;
    auto h = [&](asio::error_code e, std::size_t got) {
      ec = e;
      n = got;
      done = true;
    };
    auto dyn = asio::dynamic_buffer(buf_);
    if (tls_)
      asio::async_read_until(*tls_, dyn, '\n', h);
    else
      asio::async_read_until(*sock_, dyn, '\n', h);
    if (!run(done, limit)) {
      timed_out_ = true;
      err = "no reply from " + s_.connect + " within " +
            std::to_string(limit.count() / 1000.0).substr(0, 4) + "s";
      return std::nullopt;
    }
    if (ec) {
      err = ec == asio::error::eof ? "the engine closed the connection"
                                   : "connection to " + s_.connect + " lost: " + ec.message();
      return std::nullopt;
    }
    std::string line = buf_.substr(0, n - 1);
    buf_.erase(0, n);
    last_line_ = line;
    auto j = json::parse(line, nullptr, false);
    if (j.is_discarded()) {
      err = "the engine sent something that is not JSON: " + line.substr(0, 200);
      return std::nullopt;
    }
    return j;
  }

  bool timed_out() const { return timed_out_; }
  /// The text of the last line received.
  const std::string& last_line() const { return last_line_; }
  void close() {
    asio::error_code ec;
    if (sock_) sock_->close(ec);
    tls_.reset();
    sock_.reset();
  }

 private:
  // Run until `done`, or cancel after `limit` (default: the --timeout).
  bool run(bool& done, std::optional<std::chrono::milliseconds> limit = std::nullopt) {
    auto l = limit ? *limit : s_.wait;
    io_.restart();
    if (l.count() < 0) {
      while (!done && io_.run_one() > 0) {
      }
      return done;
    }
    auto end = std::chrono::steady_clock::now() + l;
    while (!done && std::chrono::steady_clock::now() < end)
      if (io_.run_one_until(end) == 0 && io_.stopped()) break;
    if (done) return true;
    asio::error_code ec;
    if (sock_) sock_->cancel(ec);
    io_.restart();
    while (!done && io_.run_one_for(1s) > 0) {
    }
    return false;
  }

  const settings& s_;
  asio::io_context io_;
  std::optional<tcp::socket> sock_;
  std::optional<asio::ssl::context> ctx_;
  std::optional<asio::ssl::stream<tcp::socket&>> tls_;
  std::string buf_, last_line_;
  bool timed_out_ = false;
};

int fail(int code, const std::string& msg) {
  std::fprintf(stderr, "sondectl: %s\n", msg.c_str());
  return code;
}

// Send one request and return its reply (skipping streamed lines), or an exit code.
std::variant<json, int> request(const settings& s, json req) {
  connection c(s);
  std::string err;
  if (!c.open(err)) return fail(exit_unreachable, err + " (is `sonde run` running? --connect)");
  if (!c.send(std::move(req), err)) return fail(exit_unreachable, err);
  for (int i = 0; i < 100000; ++i) {
    auto r = c.receive(err, s.wait);
    if (!r) return fail(exit_unreachable, err);
    if (r->contains("ok")) return *r;
  }
  return fail(exit_unreachable, "no reply");
}

// The usual path: a reply that is ok goes to `show` (or is printed with --json).
template <class F>
int simple(const settings& s, json req, F&& show) {
  auto r = request(s, std::move(req));
  if (auto* code = std::get_if<int>(&r)) return *code;
  auto& reply = std::get<json>(r);
  if (!reply.value("ok", false)) {
    std::string msg = reply.value("error", std::string("error"));
    if (auto it = reply.find("errors"); it != reply.end() && it->is_array() && !it->empty())
      for (const auto& e : *it)
        if (e.is_string() && e.get<std::string>() != msg)
          std::fprintf(stderr, "  %s\n", e.get<std::string>().c_str());
    if (s.json_out) std::printf("%s\n", reply.dump().c_str());
    return fail(exit_error_reply, msg);
  }
  if (s.json_out)
    std::printf("%s\n", reply.dump().c_str());
  else
    show(reply);
  if (reply.contains("warning"))
    std::fprintf(stderr, "sondectl: warning: %s\n", reply["warning"].get<std::string>().c_str());
  return 0;
}

std::string ms_text(double ms) {
  return sonde::format_duration(sonde::duration(static_cast<std::int64_t>(ms * 1e6)));
}

// Column table: widths from the content, the last column unpadded.
void print_table(const std::vector<std::string>& head,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> w(head.size());
  for (std::size_t i = 0; i < head.size(); ++i) w[i] = head[i].size();
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size() && i < w.size(); ++i)
      w[i] = std::max(w[i], std::min<std::size_t>(r[i].size(), 40));
  auto line = [&](const std::vector<std::string>& r) {
    std::string out;
    for (std::size_t i = 0; i < r.size(); ++i) {
      out += r[i];
      if (i + 1 < r.size() && r[i].size() < w[i]) out.append(w[i] - r[i].size(), ' ');
      if (i + 1 < r.size()) out += "  ";
    }
    std::printf("%s\n", out.c_str());
  };
  line(head);
  for (const auto& r : rows) line(r);
}

std::string ago(const std::string& rfc3339) {
  // "2026-11-20T23:22:06.344227Z" -> seconds ago, "-" when unparsable
  std::tm tm{};
  if (rfc3339.size() < 19 || !strptime(rfc3339.c_str(), "%Y-%m-%dT%H:%M:%S", &tm)) return "-";
  auto t = timegm(&tm);
  auto now = std::time(nullptr);
  auto d = now - t;
  if (d < 0) d = 0;
  return sonde::format_duration(std::chrono::seconds(d)) + " ago";
}

void show_list(const json& r) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& t : r["tasks"]) {
    const auto& last = t["last"];
    std::string lstat = last.is_null() ? "-" : upper(text(last, "status"));
    std::string lat = "-", when = "-", msg;
    if (!last.is_null()) {
      if (last["latency_ms"].is_number()) lat = ms_text(last["latency_ms"].get<double>());
      when = ago(text(last, "time", ""));
      auto reason = text(last, "reason", "");
      msg = (reason.empty() || reason == "condition" ? "" : reason + ": ") +
            text(last, "message", "");
    }
    rows.push_back({t["id"].is_null() ? "-" : t["id"].dump(), text(t, "name"), text(t, "type"),
                    text(t, "target"), text(t, "interval"), text(t, "state"), lstat, lat, when,
                    msg});
  }
  if (rows.empty()) {
    std::printf("no tasks\n");
  } else {
    print_table(
        {"ID", "NAME", "TYPE", "TARGET", "EVERY", "STATE", "LAST", "LATENCY", "WHEN", "MESSAGE"},
        rows);
  }
  if (r.contains("stopped") && !r["stopped"].empty()) {
    std::string s;
    for (const auto& n : r["stopped"]) s += (s.empty() ? "" : ", ") + n.get<std::string>();
    std::printf("stopped task-file tasks: %s\n", s.c_str());
  }
}

void show_status(const json& r) {
  const auto& t = r["tasks"];
  const auto& res = r["results"];
  const auto& c = r["clients"];
  std::printf("sonde %s (control protocol %s), up %s\n", text(r, "version").c_str(),
              text(r, "protocol").c_str(),
              sonde::format_duration(
                  std::chrono::seconds(static_cast<std::int64_t>(r["uptime_s"].get<double>())))
                  .c_str());
  std::printf("tasks:    %s (%s running, %s paused, %s disabled; %s from the control channel)\n",
              text(t, "total").c_str(), text(t, "running").c_str(), text(t, "paused").c_str(),
              text(t, "disabled").c_str(), text(t, "control").c_str());
  std::printf("probes:   %s in flight, %s waiting for a slot\n", text(r, "in_flight").c_str(),
              text(r, "queued").c_str());
  char rate[32];
  std::snprintf(rate, sizeof rate, "%.1f", res["per_second"].get<double>());
  std::printf("results:  %s total, %s/s (%s ok, %s warning, %s critical, %s unknown)\n",
              text(res, "total").c_str(), rate, text(res, "ok").c_str(),
              text(res, "warning").c_str(), text(res, "critical").c_str(),
              text(res, "unknown").c_str());
  std::printf("clients:  %s connected, %s watching, %s results dropped for slow watchers\n",
              text(c, "connected").c_str(), text(c, "watching").c_str(),
              text(c, "dropped_results").c_str());
  std::string plugs;
  for (const auto& p : r["plugins"]) {
    std::string types;
    for (const auto& ty : p["types"]) types += (types.empty() ? "" : ",") + ty.get<std::string>();
    plugs += (plugs.empty() ? "" : ", ") + text(p, "name") + " " + text(p, "version") + " (" +
             types + ")";
  }
  std::printf("plugins:  %s\n", plugs.empty() ? "none" : plugs.c_str());
  if (auto h = sonde::sondectl::history_status_text(r); !h.empty())
    std::printf("history:  %s\n", h.c_str());
}

void show_clients(const json& r) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& c : r["clients"]) {
    char conn[32];
    std::snprintf(conn, sizeof conn, "%.0fs", c["connected_s"].get<double>());
    bool w = c["watching"].get<bool>();
    rows.push_back({text(c, "id"), text(c, "peer"), conn, text(c, "requests"), w ? "yes" : "no",
                    w ? text(c, "queue") + "/" + text(c, "queue_limit") : text(c, "queue"),
                    w ? text(c, "sent") : "-", w ? text(c, "dropped") : "-"});
  }
  print_table({"ID", "PEER", "CONNECTED", "REQUESTS", "WATCHING", "QUEUE", "SENT", "DROPPED"},
              rows);
}

void show_names(const json& r, const char* key, const char* verb) {
  std::string s;
  std::size_t n = 0;
  for (const auto& x : r[key]) {
    s += (s.empty() ? "" : ", ") + x.get<std::string>();
    ++n;
  }
  std::printf("%s %zu task%s%s%s\n", verb, n, n == 1 ? "" : "s", n ? ": " : "", s.c_str());
}

// ---- watch ----------------------------------------------------------------------------------
struct palette {
  bool on;
  const char* of(const std::string& status) const {
    if (!on) return "";
    if (status == "ok") return "\033[32m";
    if (status == "warning") return "\033[33m";
    if (status == "critical") return "\033[1;31m";
    return "\033[35m";
  }
  const char* dim() const { return on ? "\033[2m" : ""; }
  const char* reset() const { return on ? "\033[0m" : ""; }
};

void print_result(const json& r, const palette& p) {
  std::string st = text(r, "status");
  std::string lat = r["latency_ms"].is_number() ? ms_text(r["latency_ms"].get<double>()) : "-";
  std::string reason = text(r, "reason", "");
  std::string msg =
      (reason.empty() || reason == "condition" ? "" : reason + ": ") + text(r, "message", "");
  std::string time = text(r, "time");
  if (time.size() > 23) time = time.substr(0, 23) + "Z";  // milliseconds are enough to read
  std::printf("%s%s%s  %s%-8s%s  %-16s  %-6s  %-22s  %8s  %s\n", p.dim(), time.c_str(), p.reset(),
              p.of(st), upper(st).c_str(), p.reset(), text(r, "task").c_str(),
              text(r, "type").c_str(), text(r, "target").c_str(), lat.c_str(), msg.c_str());
  std::fflush(stdout);
}

int cmd_watch(const settings& s, json req, bool color, long long count) {
  palette p{color};
  auto backoff = 500ms;
  long long seen = 0;
  bool ever_connected = false;
  for (int attempt = 0;; ++attempt) {
    connection c(s);
    std::string err;
    bool ok = c.open(err) && c.send(req, err);
    std::optional<json> first;
    if (ok) {
      first = c.receive(err, s.wait);
      ok = first.has_value();
    }
    if (ok && !first->value("ok", false)) {
      return fail(exit_error_reply, first->value("error", std::string("error")));
    }
    if (!ok) {
      if (!ever_connected && attempt == 0)
        std::fprintf(stderr, "sondectl: %s; retrying\n", err.c_str());
      std::fprintf(stderr, "sondectl: engine unreachable, reconnecting in %s\n",
                   sonde::format_duration(backoff).c_str());
      std::this_thread::sleep_for(backoff);
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, 10s);
      continue;
    }
    if (ever_connected)
      std::fprintf(stderr, "sondectl: reconnected to %s\n", s.connect.c_str());
    else if (!s.json_out)
      std::fprintf(stderr, "sondectl: watching %s (Ctrl-C to stop)\n", s.connect.c_str());
    ever_connected = true;
    backoff = 500ms;
    bool pinged = false;
    while (true) {
      auto line = c.receive(err, pinged ? std::chrono::milliseconds(10000) : 20000ms);
      if (!line) {
        if (c.timed_out() && !pinged) {
          // Quiet for a while: ask for a reply to know the engine is still there.
          pinged = true;
          if (c.send({{"command", "hello"}}, err)) continue;
        }
        std::fprintf(stderr, "sondectl: %s; reconnecting\n", err.c_str());
        break;
      }
      pinged = false;
      const auto ev = text(*line, "event", "");
      if (ev == "result") {
        if (s.json_out) {
          // The record exactly as the engine formatted it (the field order of `sonde run`).
          constexpr std::string_view prefix = "{\"event\":\"result\",\"result\":";
          const auto& raw = c.last_line();
          if (raw.size() > prefix.size() + 1 && raw.compare(0, prefix.size(), prefix) == 0)
            std::printf("%s\n", raw.substr(prefix.size(), raw.size() - prefix.size() - 1).c_str());
          else
            std::printf("%s\n", (*line)["result"].dump().c_str());
          std::fflush(stdout);
        } else {
          print_result((*line)["result"], p);
        }
        if (count > 0 && ++seen >= count) return 0;
      } else if (ev == "alarm") {
        if (s.json_out) {
          std::printf("%s\n", (*line)["alarm"].dump().c_str());
          std::fflush(stdout);
        } else {
          sonde::sondectl::print_alarm_event((*line)["alarm"], p.on);
        }
        if (count > 0 && ++seen >= count) return 0;
      } else if (ev == "dropped") {
        std::fprintf(stderr,
                     "sondectl: %s results dropped: this terminal did not keep up (%s in all)\n",
                     text(*line, "dropped").c_str(), text(*line, "total").c_str());
      } else if (ev == "shutdown") {
        std::fprintf(stderr, "sondectl: the engine is shutting down\n");
      }
    }
    std::this_thread::sleep_for(backoff);
  }
}

std::vector<std::pair<std::string, std::string>> key_values(const std::vector<std::string>& in,
                                                            const char* flag, bool& bad) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& s : in) {
    auto eq = s.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::fprintf(stderr, "sondectl: %s expects key=value, got \"%s\"\n", flag, s.c_str());
      bad = true;
      continue;
    }
    out.emplace_back(s.substr(0, eq), s.substr(eq + 1));
  }
  return out;
}

// ---- agents (docs/agents.md) ----------------------------------------------------------------
std::string bytes_text(const json& b) {
  if (!b.is_number()) return "-";
  double v = b.get<double>();
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string number_text(const json& v, const char* fmt) {
  if (!v.is_number()) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, fmt, v.get<double>());
  return buf;
}

void show_agents(const json& r) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& a : r["agents"]) {
    std::string seen = "-";
    if (a["last_seen_s"].is_number())
      seen = number_text(a["last_seen_s"], "%.1fs") + " ago";
    else if (a["last_seen"].is_string())
      seen = ago(a["last_seen"].get<std::string>());
    std::string cores;
    for (const auto& c : a["cpus"]) cores += (cores.empty() ? "" : " ") + number_text(c, "%.0f");
    std::string mem = a["mem_used"].is_number() || a["mem_total"].is_number()
                          ? bytes_text(a["mem_used"]) + " / " + bytes_text(a["mem_total"])
                          : "-";
    std::string load = "-";
    if (a["load"].is_array() && a["load"].size() == 3 && a["load"][0].is_number())
      load = number_text(a["load"][0], "%.2f") + " " + number_text(a["load"][1], "%.2f") + " " +
             number_text(a["load"][2], "%.2f");
    rows.push_back({text(a, "agent"), a["address"] == "" ? "-" : text(a, "address"), seen,
                    a["cpu"].is_number() ? number_text(a["cpu"], "%.1f%%") : "-",
                    cores.empty() ? "-" : cores, mem, load, upper(text(a, "state"))});
  }
  if (rows.empty()) {
    std::printf("no agents\n");
    return;
  }
  print_table(
      {"AGENT", "ADDRESS", "LAST SEEN", "CPU", "PER CORE %", "MEMORY", "LOAD 1/5/15", "STATE"},
      rows);
}

int cmd_agents(const settings& s, bool watch, long long count) {
  if (!watch) return simple(s, {{"command", "agents"}}, show_agents);
  bool tty = isatty(STDOUT_FILENO) && !s.json_out;
  // Refresh every second: bounded by --count, else by a day; Ctrl-C exits.
  long long limit = count > 0 ? count : 86400;
  int rc = 0;
  for (long long i = 0; i < limit; ++i) {
    if (tty) std::printf("\033[H\033[2J");
    rc = simple(s, {{"command", "agents"}}, show_agents);
    if (tty) std::printf("\n(refreshing every second; Ctrl-C to stop)\n");
    std::fflush(stdout);
    if (rc == exit_usage) return rc;
    if (i + 1 < limit) std::this_thread::sleep_for(1s);
  }
  return rc;
}

int cmd_agent_info(const settings& s, const std::string& name) {
  connection c(s);
  std::string err;
  if (!c.open(err)) return fail(exit_unreachable, err + " (is `sonde run` running? --connect)");
  if (!c.send({{"command", "agent"}, {"agent", name}, {"action", "info"}}, err))
    return fail(exit_unreachable, err);
  std::optional<json> reply;
  for (int i = 0; i < 1000 && !reply; ++i) {
    auto r = c.receive(err, s.wait);
    if (!r) return fail(exit_unreachable, err);
    if (r->contains("ok")) reply = *r;
  }
  if (!reply) return fail(exit_unreachable, "no reply");
  if (!reply->value("ok", false)) return fail(exit_error_reply, text(*reply, "error", "error"));
  auto id = (*reply)["id"];
  // The agent answers through the engine: {"event":"agent_info","id":N,"facts"|"error"}.
  auto end = std::chrono::steady_clock::now() + std::max<std::chrono::milliseconds>(s.wait, 7s);
  for (int i = 0; i < 1000; ++i) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    auto ev = c.receive(err, left);
    if (!ev) return fail(exit_unreachable, err);
    if (text(*ev, "event", "") != "agent_info" || (*ev)["id"] != id) continue;
    if (ev->contains("error")) return fail(exit_error_reply, text(*ev, "error"));
    const json& f = (*ev)["facts"];
    if (s.json_out) {
      std::printf("%s\n", f.dump().c_str());
      return 0;
    }
    std::string cpu = text(f, "cpu_model");
    if (f.contains("cpu_count")) cpu += " (" + text(f, "cpu_count") + " CPUs)";
    std::string addrs;
    if (f["addresses"].is_array())
      for (const auto& a : f["addresses"])
        addrs += (addrs.empty() ? "" : ", ") + (a.is_string() ? a.get<std::string>() : a.dump());
    std::string interval =
        f["interval_ms"].is_number() ? ms_text(f["interval_ms"].get<double>()) : "-";
    std::vector<std::pair<std::string, std::string>> kv = {
        {"NAME", text(f, "name")},
        {"IP", text(f, "ip")},
        {"OS", text(f, "os")},
        {"KERNEL", text(f, "kernel")},
        {"ARCH", text(f, "arch")},
        {"CPU", cpu},
        {"RAM", bytes_text(f["mem_total"])},
        {"HOSTNAME", text(f, "hostname")},
        {"ADDRESSES", addrs.empty() ? "-" : addrs},
        {"VERSION", text(f, "version")},
        {"INTERVAL", interval}};
    if (f["queue"].is_object())
      kv.push_back({"QUEUE", text(f["queue"], "queued") + " queued, " +
                                 text(f["queue"], "dropped") + " dropped, acked up to " +
                                 text(f["queue"], "acked")});
    for (auto& [k, v] : kv) std::printf("%-10s %s\n", k.c_str(), v.c_str());
    return 0;
  }
  return fail(exit_unreachable, "agent " + name + " did not answer in time");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sondectl " SONDE_VERSION_STRING ": manage a running sonde engine"};
  app.set_version_flag("--version", std::string("sondectl ") + SONDE_VERSION_STRING +
                                        "\ncontrol protocol " +
                                        std::to_string(sonde::engine::control_protocol_version));
  app.require_subcommand(1);
  app.fallthrough();
  app.footer(
      "Exit codes: 0 success, 1 the engine replied with an error, 2 the engine cannot be "
      "reached, 3 usage error.");
  settings s;
  if (const char* t = std::getenv("SONDE_TOKEN")) s.token = t;
  if (const char* c = std::getenv("SONDE_CONNECT")) s.connect = c;
  app.add_option("--connect", s.connect,
                 "Engine address host:port (default 127.0.0.1:6543, or SONDE_CONNECT)");
  app.add_option("--token", s.token, "Control token (default: SONDE_TOKEN)");
  app.add_flag("--json", s.json_out, "Print the engine's replies as JSON lines");
  app.add_flag("--tls", s.tls, "Use TLS on the control channel");
  app.add_option("--ca-file", s.ca_file, "With --tls: CA certificate(s) to verify the engine");
  app.add_flag("--insecure", s.insecure, "With --tls: do not verify the engine's certificate");
  app.add_option("--timeout", s.timeout, "How long to wait for a reply (default 10s)");

  auto* list = app.add_subcommand("list", "Tasks with their state and last result");
  auto* status = app.add_subcommand("status", "Uptime, task counts, probes, results per second");
  auto* clients = app.add_subcommand("clients", "Connected control clients and their queues");
  auto* reload = app.add_subcommand("reload", "Re-read the task file (refused if it has errors)");
  auto* exp = app.add_subcommand("export", "Print the current task set as a task file");
  auto* shutdown = app.add_subcommand("shutdown", "Stop the engine (in-flight probes finish)");

  auto* start = app.add_subcommand("start", "Start a new task");
  std::string name, type, target, interval, timeout;
  long long id = 0;
  std::vector<std::string> sets, tags, warns, crits;
  bool disabled = false;
  start->add_option("--name", name, "Task name (default: TYPE-ID or TYPE-TARGET)");
  start->add_option("--type", type, "Probe type, e.g. tcp, icmp, http")->required();
  start->add_option("--target", target, "Target, e.g. 127.0.0.1:80")->required();
  start->add_option("--interval", interval, "Time between runs, e.g. 5s (default 60s)");
  start->add_option("--probe-timeout", timeout, "Deadline of one run (default 5s or the interval)");
  start->add_option("--id", id, "Numeric id for the task (default: next free)");
  start->add_option("--set", sets, "Probe option key=value (repeatable)");
  start->add_option("--tag", tags, "Tag key=value (repeatable)");
  start->add_option("--warn", warns, "Warning condition, e.g. \"latency > 200ms\" (repeatable)");
  start->add_option("--crit", crits, "Critical condition (repeatable)");
  start->add_flag("--disabled", disabled, "Add the task without running it");

  std::vector<std::string> names;
  std::vector<long long> ids;
  bool all = false;
  auto selector = [&](CLI::App* sub) {
    sub->add_option("NAME", names, "Task names");
    sub->add_option("--id", ids, "Task ids (repeatable)");
    sub->add_flag("--all", all, "Every task");
  };
  auto* stop = app.add_subcommand("stop", "Remove tasks (kept removed across restarts)");
  auto* pause = app.add_subcommand("pause", "Pause tasks");
  auto* resume = app.add_subcommand("resume", "Resume paused tasks");
  selector(stop);
  selector(pause);
  selector(resume);

  auto* watch =
      app.add_subcommand("watch", "Live tail of results (reconnects if the engine goes away)");
  std::vector<std::string> wtasks, wtypes, wstatus;
  long long count = 0, queue = 0;
  bool no_color = false;
  watch->add_option("--task", wtasks, "Only these tasks (repeatable)");
  watch->add_option("--type", wtypes, "Only these probe types (repeatable)");
  watch->add_option("--status", wstatus, "Only these statuses: ok, warning, critical, unknown");
  watch->add_option("--count", count, "Exit after this many results");
  watch->add_option("--queue", queue, "Results the engine may queue for this watcher");
  watch->add_flag("--no-color", no_color, "No colours (also NO_COLOR)");

  auto* agents =
      app.add_subcommand("agents", "Agents: address, last seen, CPU, memory, load, state");
  bool agents_watch = false;
  long long agents_count = 0;
  agents->add_flag("--watch", agents_watch, "Refresh every second (Ctrl-C to stop)");
  agents->add_option("--count", agents_count, "With --watch: stop after this many refreshes");
  auto* agent = app.add_subcommand("agent", "Ask one agent: info (its facts) or disconnect");
  std::string agent_name, agent_action, agent_reason;
  agent->add_option("NAME", agent_name, "The agent's name")->required();
  agent->add_option("ACTION", agent_action, "info or disconnect")
      ->required()
      ->check(CLI::IsMember({"info", "disconnect"}));
  agent->add_option("--reason", agent_reason, "With disconnect: the reason the agent prints");

  auto run_alarms = sonde::sondectl::add_alarm_commands(app);
  auto run_history = sonde::sondectl::add_history_commands(app);
  bool walarms = false;
  watch->add_flag("--alarms", walarms, "Alarm events instead of results");
  auto* send = app.add_subcommand("send", "Send one raw JSON request and print the reply");
  std::string raw;
  send->add_option("JSON", raw, "The request, e.g. '{\"command\":\"hello\"}'")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : exit_usage;
  }
  std::signal(SIGPIPE, SIG_IGN);
  auto w = sonde::parse_duration(s.timeout);
  if (!w || *w <= sonde::duration::zero())
    return fail(exit_usage, "--timeout: expected a duration such as 10s");
  s.wait = std::chrono::duration_cast<std::chrono::milliseconds>(*w);

  auto selector_req = [&](const char* command) -> std::optional<json> {
    json r{{"command", command}};
    int ways = all + !names.empty() + !ids.empty();
    if (ways == 0) {
      fail(exit_usage, std::string(command) + ": name the tasks, or give --id N or --all");
      return std::nullopt;
    }
    if (all) r["all"] = true;
    if (!names.empty()) r["name"] = names;
    if (!ids.empty()) r["id"] = ids;
    return r;
  };

  try {
    if (*list) return simple(s, {{"command", "list"}}, show_list);
    if (*status) return simple(s, {{"command", "status"}}, show_status);
    if (*clients) return simple(s, {{"command", "clients"}}, show_clients);
    if (*exp)
      return simple(s, {{"command", "export"}},
                    [](const json& r) { std::printf("%s", r["toml"].get<std::string>().c_str()); });
    if (*shutdown)
      return simple(s, {{"command", "shutdown"}}, [](const json& r) {
        std::printf("engine shutting down (%s probe%s in flight finish first)\n",
                    text(r, "in_flight").c_str(), text(r, "in_flight") == "1" ? "" : "s");
      });
    if (*reload)
      return simple(s, {{"command", "reload"}}, [](const json& r) {
        auto names_of = [&](const char* k) {
          std::string o;
          for (const auto& n : r[k]) o += (o.empty() ? "" : ", ") + n.get<std::string>();
          return o.empty() ? std::string("none") : o;
        };
        std::printf("reloaded: %s unchanged; added: %s; changed: %s; removed: %s\n",
                    text(r, "unchanged").c_str(), names_of("added").c_str(),
                    names_of("changed").c_str(), names_of("removed").c_str());
      });
    if (*start) {
      json r{{"command", "start"}, {"type", type}, {"target", target}};
      if (!name.empty()) r["name"] = name;
      if (id > 0) r["id"] = id;
      if (!interval.empty()) r["interval"] = interval;
      if (!timeout.empty()) r["timeout"] = timeout;
      if (disabled) r["enabled"] = false;
      if (!warns.empty()) r["warn"] = warns;
      if (!crits.empty()) r["crit"] = crits;
      bool bad = false;
      auto set_kv = key_values(sets, "--set", bad);
      auto tag_kv = key_values(tags, "--tag", bad);
      if (bad) return exit_usage;
      if (!set_kv.empty()) {
        json o = json::object();
        for (auto& [k, v] : set_kv) o[k] = v;
        r["set"] = o;
      }
      if (!tag_kv.empty()) {
        json o = json::object();
        for (auto& [k, v] : tag_kv) o[k] = v;
        r["tags"] = o;
      }
      return simple(s, r, [](const json& rep) {
        if (rep.value("unchanged", false))
          std::printf("task %s (id %s) is already running with this definition\n",
                      text(rep, "started").c_str(), text(rep, "id").c_str());
        else
          std::printf("started task %s (id %s)\n", text(rep, "started").c_str(),
                      text(rep, "id").c_str());
      });
    }
    if (*stop || *pause || *resume) {
      const char* cmd = *stop ? "stop" : *pause ? "pause" : "resume";
      auto r = selector_req(cmd);
      if (!r) return exit_usage;
      const char* key = *stop ? "stopped" : *pause ? "paused" : "resumed";
      return simple(s, *r, [&](const json& rep) { show_names(rep, key, key); });
    }
    if (*watch) {
      json r{{"command", "watch"}};
      if (!wtasks.empty()) r["task"] = wtasks;
      if (!wtypes.empty()) r["type"] = wtypes;
      if (!wstatus.empty()) r["status"] = wstatus;
      if (queue > 0) r["queue"] = queue;
      if (walarms) {
        r["alarms"] = true;
        r["results"] = false;
      }
      bool color = !no_color && !s.json_out && isatty(STDOUT_FILENO) && !std::getenv("NO_COLOR");
      return cmd_watch(s, r, color, count);
    }
    if (*agents) return cmd_agents(s, agents_watch, agents_count);
    if (auto rc = run_alarms([&](json r, std::function<void(const json&)> show) {
          return simple(s, std::move(r), show);
        }))
      return *rc;
    if (auto rc = run_history([&](json r, std::function<void(const json&)> show) {
          return simple(s, std::move(r), show);
        }))
      return *rc;
    if (*agent) {
      if (agent_action == "info") return cmd_agent_info(s, agent_name);
      json r{{"command", "agent"}, {"agent", agent_name}, {"action", "disconnect"}};
      if (!agent_reason.empty()) r["reason"] = agent_reason;
      return simple(s, r, [&](const json&) {
        std::printf("agent %s told to disconnect; it stops reporting\n", agent_name.c_str());
      });
    }
    if (*send) {
      auto j = json::parse(raw, nullptr, false);
      if (j.is_discarded() || !j.is_object())
        return fail(exit_usage, "send: expected a JSON object");
      s.json_out = true;
      return simple(s, j, [](const json&) {});
    }
  } catch (const std::exception& e) {
    return fail(exit_usage, std::string("error: ") + e.what());
  }
  return exit_usage;
}
