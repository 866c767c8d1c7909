// The agent's sender. See agent.hpp and docs/agents.md.
//
// One connection at a time. Per connection three coroutines share a `link`: a reader that
// splits the stream into bounded lines (replies go to `replies`, events are handled at once), a
// writer that drains `out`, and the sender loop (hello, then report/await-ack until the link
// fails). Timers are used as condition variables: waiters re-check their condition after every
// wake-up, and whoever changes the condition cancels the timer.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <set>

#include <asio/co_spawn.hpp>
#include <asio/connect.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/read_until.hpp>
#include <asio/steady_timer.hpp>
#include <asio/streambuf.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <sonde/system.hpp>
#include <sonde/version.hpp>
#include "agents/agent.hpp"
#include "control/control_request.hpp"
#include "core/output.hpp"

namespace sonde::engine {

using json = nlohmann::json;
using asio::ip::tcp;
using steady = std::chrono::steady_clock;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

json agent_facts_json() {
  auto f = sonde::system::host_facts();
  json j{{"os", f.os},
         {"kernel", f.kernel},
         {"arch", f.arch},
         {"hostname", f.hostname},
         {"addresses", f.addresses},
         {"cpu_model", f.cpu_model},
         {"cpu_count", f.cpu_count},
         {"mem_total", f.mem_total}};
  if (!f.problems.empty()) j["problems"] = f.problems;
  return j;
}

tl::expected<agent_queue_options, std::string> parse_queue_max(std::string_view text) {
  agent_queue_options o;
  auto bad = [&](const std::string& why) {
    return tl::unexpected("--queue-max \"" + std::string(text) + "\": " + why +
                          " (expected a count such as 100000, a size such as 64MB, or both: "
                          "100000,64MB)");
  };
  if (text.empty()) return bad("empty");
  bool have_count = false, have_size = false;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    auto comma = text.find(',', pos);
    std::string_view part =
        text.substr(pos, comma == std::string_view::npos ? text.npos : comma - pos);
    pos = comma == std::string_view::npos ? text.size() + 1 : comma + 1;
    std::size_t i = 0;
    std::uint64_t v = 0;
    while (i < part.size() && part[i] >= '0' && part[i] <= '9') {
      if (v > (std::uint64_t{1} << 40)) return bad("too large");
      v = v * 10 + static_cast<std::uint64_t>(part[i] - '0');
      ++i;
    }
    if (i == 0) return bad("not a number");
    std::string unit(part.substr(i));
    for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (v == 0) return bad("must be positive");
    if (unit.empty()) {
      if (have_count) return bad("two counts");
      have_count = true;
      o.max_records = v;
    } else {
      std::uint64_t mul = 0;
      if (unit == "B") mul = 1;
      if (unit == "KB" || unit == "K" || unit == "KIB") mul = 1ull << 10;
      if (unit == "MB" || unit == "M" || unit == "MIB") mul = 1ull << 20;
      if (unit == "GB" || unit == "G" || unit == "GIB") mul = 1ull << 30;
      if (!mul) return bad("unknown unit \"" + std::string(part.substr(i)) + "\"");
      if (have_size) return bad("two sizes");
      have_size = true;
      o.max_bytes = v * mul;
      if (o.max_bytes < 4096) return bad("a size bound below 4KB");
    }
  }
  return o;
}

std::string default_agent_state_dir(const std::string& name) {
  std::string n = name.empty() ? "default" : name;
  for (auto& c : n)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) c = '_';
  if (n == "." || n == "..") n = "_";
  const std::string leaf = "agent-" + n;
  if (const char* sd = std::getenv("STATE_DIRECTORY"); sd && *sd) {
    std::string first(sd);
    first = first.substr(0, first.find(':'));  // systemd lists several with ':'
    return first + "/" + leaf;
  }
  if (::access("/var/lib/sonde", W_OK) == 0) return "/var/lib/sonde/" + leaf;
  std::string base;
  if (const char* x = std::getenv("XDG_STATE_HOME"); x && *x == '/')
    base = x;
  else if (const char* h = std::getenv("HOME"); h && *h)
    base = std::string(h) + "/.local/state";
  else
    base = "/tmp";
  return base + "/sonde/" + leaf;
}

namespace detail {

struct link {
  explicit link(asio::io_context& io) : sock(io), out_wake(io), reply_wake(io) {}
  tcp::socket sock;
  std::deque<std::string> out;
  asio::steady_timer out_wake, reply_wake;
  std::uint64_t next_req = 1;
  std::set<std::uint64_t> outstanding;
  std::map<std::uint64_t, json> replies;
  bool closed = false;
  std::string why;  // why it closed, for the outage message

  void close(const std::string& reason) {
    if (closed) return;
    closed = true;
    why = reason;
    asio::error_code ec;
    sock.shutdown(tcp::socket::shutdown_both, ec);
    sock.close(ec);
    out_wake.cancel();
    reply_wake.cancel();
  }
  std::uint64_t send(json request) {
    const std::uint64_t id = next_req++;
    request["seq"] = id;
    outstanding.insert(id);
    out.push_back(request.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
    out_wake.cancel();
    return id;
  }
  void send_raw(std::string line, std::uint64_t id) {
    outstanding.insert(id);
    out.push_back(std::move(line));
    out_wake.cancel();
  }
};

struct agent_core : std::enable_shared_from_this<agent_core> {
  agent_core(asio::io_context& i, agent_queue& q, agent_options o)
      : io(i),
        queue(q),
        opts(std::move(o)),
        wake(i),
        backoff_timer(i),
        rng(std::random_device{}()) {}
  asio::io_context& io;
  agent_queue& queue;
  agent_options opts;
  asio::steady_timer wake, backoff_timer;
  std::shared_ptr<link> current;
  std::mt19937 rng;
  agent_stats stats;
  bool started = false, stopping = false, sync_posted = false, disconnected = false;
  bool outage_announced = false;  // the current outage was reported on stderr
  std::optional<steady::time_point> outage_since;
  std::string last_push_error, disconnect_reason;
  std::function<void(const std::string&)> disconnect_hook;
  // Results that could not be queued: said at once, then at most every 10 s with the count.
  std::string problem;  // the current queue problem, told to the central ("" when none)
  std::uint64_t failures_unsaid = 0;
  std::optional<steady::time_point> failure_said;
  static constexpr auto failure_log_every = std::chrono::seconds(10);
  // What the central was last told (a report goes out when these change, even without results).
  std::uint64_t told_dropped = 0;
  std::string told_problem;

  std::string where() const { return opts.server.to_string(); }

  bool central_behind() const {
    return queue.size() > 0 || queue.dropped() != told_dropped || problem != told_problem;
  }

  void push(std::string_view object) {
    auto r = queue.push(object);
    if (!r) {
      ++stats.queue_failures;
      problem = "cannot queue results: " + r.error();
      if (problem.size() > 500) problem.resize(500);
      const auto now = steady::now();
      if (!failure_said || now - *failure_said >= failure_log_every) {
        std::fprintf(stderr,
                     "agent: warning: cannot queue a result: %s; %llu more since the last "
                     "warning; counted as dropped (%llu dropped in all) and reported to the "
                     "central\n",
                     r.error().c_str(), static_cast<unsigned long long>(failures_unsaid),
                     static_cast<unsigned long long>(queue.dropped()));
        failure_said = now;
        failures_unsaid = 0;
      } else {
        ++failures_unsaid;
      }
      wake.cancel();  // tell the central about the drop
      return;
    }
    if (!problem.empty()) {
      std::fprintf(stderr,
                   "agent: results are queued again (%llu could not be queued since the last "
                   "warning; %llu dropped in all)\n",
                   static_cast<unsigned long long>(failures_unsaid),
                   static_cast<unsigned long long>(queue.dropped()));
      problem.clear();
      failures_unsaid = 0;
      failure_said.reset();
    }
    // One fdatasync per burst of results, not per result.
    if (!sync_posted) {
      sync_posted = true;
      asio::post(io, [self = shared_from_this()] {
        self->sync_posted = false;
        self->sync();
      });
    }
    wake.cancel();
  }
  void sync() {
    if (!queue.dirty()) return;
    if (auto r = queue.sync(); !r) {
      if (r.error() != last_push_error)
        std::fprintf(stderr, "agent: warning: %s\n", r.error().c_str());
      last_push_error = r.error();
    }
  }
};

namespace {

std::string lower_first(std::string s) {
  if (!s.empty()) s[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(s[0])));
  return s;
}

std::string seconds_text(std::chrono::milliseconds d) {
  char buf[32];
  if (d.count() < 1000)
    std::snprintf(buf, sizeof buf, "%lldms", static_cast<long long>(d.count()));
  else if (d.count() % 1000 == 0 || d.count() >= 10000)
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>((d.count() + 500) / 1000));
  else
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(d.count()) / 1000.0);
  return buf;
}

void handle_event(const std::shared_ptr<agent_core>& core, const std::shared_ptr<link>& l,
                  const json& j) {
  auto evi = j.find("event");
  const std::string ev = evi != j.end() && evi->is_string() ? evi->get<std::string>() : "";
  if (ev == "info") {
    json reply{{"command", "info_reply"}, {"agent", core->opts.name}};
    // Only an integer id is echoed: nothing else of what the central sent is copied.
    if (auto id = j.find("id"); id != j.end() && id->is_number_integer()) reply["id"] = *id;
    json facts = agent_facts_json();
    facts["name"] = core->opts.name;
    asio::error_code ec;
    auto local = l->sock.local_endpoint(ec);
    if (!ec) facts["ip"] = local.address().to_string();
    facts["version"] = SONDE_VERSION_STRING;
    facts["interval_ms"] = core->opts.interval.count();
    facts["queue"] = {{"queued", core->queue.size()},
                      {"dropped", core->queue.dropped()},
                      {"acked", core->queue.acked()},
                      {"next_seq", core->queue.next_seq()}};
    reply["facts"] = std::move(facts);
    if (!core->opts.token.empty()) reply["token"] = core->opts.token;
    l->send(std::move(reply));
    ++core->stats.info_answered;
  } else if (ev == "disconnect") {
    core->disconnected = true;
    auto why = j.find("reason");
    core->disconnect_reason =
        why != j.end() && why->is_string() ? why->get<std::string>().substr(0, 500) : std::string();
    // Let queued lines (an info reply) go out? No: the central asked us to go; close now.
    l->close("disconnect requested");
    core->wake.cancel();
  }
  // Other events (e.g. "shutdown": the central is going away) need no action: the connection
  // closes and the sender reconnects with backoff.
}

asio::awaitable<void> run_reader(std::shared_ptr<agent_core> core, std::shared_ptr<link> l) {
  std::string buf;
  while (!l->closed) {
    auto [ec, n] = co_await asio::async_read_until(
        l->sock, asio::dynamic_buffer(buf, core->opts.max_line), '\n', use_tuple);
    if (ec) {
      l->close(ec == asio::error::eof
                   ? "connection closed by the central"
                   : (ec == asio::error::not_found ? "line too long" : lower_first(ec.message())));
      break;
    }
    std::string line = buf.substr(0, n - 1);
    buf.erase(0, n);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    // The central's lines are input from the network like any other: depth, duplicate keys
    // and NUL bytes are refused before anything walks them.
    auto parsed = parse_json_untrusted(line);
    if (!parsed || !parsed->is_object()) continue;  // the central's replies are objects
    json& j = *parsed;
    if (j.contains("event")) {
      handle_event(core, l, j);
      continue;
    }
    if (!j.contains("ok")) continue;
    std::uint64_t id = 0;
    if (j.contains("seq") && j["seq"].is_number_unsigned()) id = j["seq"].get<std::uint64_t>();
    if (!l->outstanding.count(id)) {
      // No usable seq: replies come in request order, so it answers the oldest request.
      if (l->outstanding.empty()) continue;
      id = *l->outstanding.begin();
    }
    l->outstanding.erase(id);
    l->replies[id] = std::move(j);
    l->reply_wake.cancel();
  }
  core->wake.cancel();
}

asio::awaitable<void> run_writer(std::shared_ptr<link> l) {
  while (!l->closed) {
    if (l->out.empty()) {
      l->out_wake.expires_after(std::chrono::hours(24));
      co_await l->out_wake.async_wait(use_tuple);
      continue;
    }
    auto [ec, n] = co_await asio::async_write(l->sock, asio::buffer(l->out.front()), use_tuple);
    (void)n;
    if (ec) {
      l->close(lower_first(ec.message()));
      break;
    }
    l->out.pop_front();
  }
}

// The reply to request `id`, or nothing when the link closes or the reply takes too long.
asio::awaitable<std::optional<json>> await_reply(std::shared_ptr<agent_core> core,
                                                 std::shared_ptr<link> l, std::uint64_t id) {
  const auto deadline = steady::now() + core->opts.reply_timeout;
  while (true) {
    if (auto it = l->replies.find(id); it != l->replies.end()) {
      json j = std::move(it->second);
      l->replies.erase(it);
      co_return j;
    }
    if (l->closed) co_return std::nullopt;
    if (steady::now() >= deadline) {
      l->close("no reply from the central within " + seconds_text(core->opts.reply_timeout));
      co_return std::nullopt;
    }
    l->reply_wake.expires_at(deadline);
    co_await l->reply_wake.async_wait(use_tuple);
  }
}

asio::awaitable<std::string> connect(std::shared_ptr<agent_core> core, std::shared_ptr<link> l) {
  tcp::resolver resolver(core->io);
  auto [rec, eps] = co_await resolver.async_resolve(
      core->opts.server.host, std::to_string(core->opts.server.port), use_tuple);
  if (rec) co_return "cannot resolve " + core->opts.server.host + ": " + lower_first(rec.message());
  asio::steady_timer limit(core->io);
  limit.expires_after(core->opts.connect_timeout);
  auto timed_out = std::make_shared<bool>(false);
  limit.async_wait([l, timed_out](asio::error_code ec) {
    if (ec) return;
    *timed_out = true;
    asio::error_code ignore;
    l->sock.close(ignore);
  });
  auto [ec, ep] = co_await asio::async_connect(l->sock, eps, use_tuple);
  (void)ep;
  limit.cancel();
  if (*timed_out) co_return "connect timed out";
  if (ec) co_return lower_first(ec.message());
  asio::error_code ignore;
  l->sock.set_option(tcp::no_delay(true), ignore);
  l->sock.set_option(asio::socket_base::keep_alive(true), ignore);
  co_return std::string();
}

std::string build_report(const agent_core& core, const std::vector<queued_record>& batch,
                         std::uint64_t id) {
  json env{{"command", "report"},
           {"agent", core.opts.name},
           {"queue_id", core.queue.queue_id()},
           {"next_seq", core.queue.next_seq()},
           {"dropped", core.queue.dropped()},
           {"queued", core.queue.size()},
           {"seq", id}};
  if (!core.problem.empty()) env["problem"] = core.problem;
  if (!core.opts.token.empty()) env["token"] = core.opts.token;
  std::string line = env.dump(-1, ' ', false, json::error_handler_t::replace);
  line.pop_back();  // the closing brace
  line += ",\"results\":[";
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (i) line += ',';
    const auto& p = batch[i].payload;
    line += "{\"seq\":";
    line += std::to_string(batch[i].seq);
    if (p.size() > 2) {
      line += ',';
      line.append(p, 1);  // the stored object without its opening brace
    } else {
      line += '}';
    }
  }
  line += "]}\n";
  return line;
}

// One connection: hello, then deliver until the link fails. Returns why it ended ("" when the
// agent is stopping or was told to disconnect). `hello_ok` tells the caller we got through.
asio::awaitable<std::string> session(std::shared_ptr<agent_core> core, std::shared_ptr<link> l,
                                     bool* hello_ok) {
  asio::co_spawn(core->io, run_reader(core, l), asio::detached);
  asio::co_spawn(core->io, run_writer(l), asio::detached);

  json hello{{"command", "agent_hello"},
             {"protocol", agent_protocol_version},
             {"agent", core->opts.name},
             {"queue_id", core->queue.queue_id()},
             {"interval_ms", core->opts.interval.count()},
             {"version", SONDE_VERSION_STRING},
             {"next_seq", core->queue.next_seq()},
             {"queued", core->queue.size()},
             {"dropped", core->queue.dropped()},
             {"facts", agent_facts_json()}};
  if (!core->opts.token.empty()) hello["token"] = core->opts.token;
  if (!core->opts.key.empty()) hello["key"] = core->opts.key;
  if (!core->problem.empty()) hello["problem"] = core->problem;
  const std::uint64_t hello_dropped = core->queue.dropped();
  const std::string hello_problem = core->problem;
  auto id = l->send(std::move(hello));
  auto reply = co_await await_reply(core, l, id);
  if (!reply) co_return l->why;
  if (!(*reply)["ok"].is_boolean() || !(*reply)["ok"].get<bool>()) {
    std::string e = reply->contains("error") && (*reply)["error"].is_string()
                        ? (*reply)["error"].get<std::string>()
                        : std::string("refused");
    l->close("agent_hello refused: " + e);
    co_return l->why;
  }
  *hello_ok = true;
  if (core->outage_announced && core->outage_since) {
    auto secs = std::chrono::duration<double>(steady::now() - *core->outage_since).count();
    std::fprintf(stderr, "agent: central %s is back after %.1fs; delivering %zu queued results\n",
                 core->where().c_str(), secs, core->queue.size());
  }
  core->outage_announced = false;
  core->outage_since.reset();
  core->stats.connected = true;
  ++core->stats.connects;
  core->told_dropped = hello_dropped;
  core->told_problem = hello_problem;
  if (reply->contains("last_seq") && (*reply)["last_seq"].is_number_unsigned()) {
    auto last = (*reply)["last_seq"].get<std::uint64_t>();
    // An ack beyond what this queue wrote (a forged report stored at the central, or a
    // confused central) is refused by the queue: our pointers never move past what we wrote.
    if (auto r = core->queue.ack(last); !r) {
      ++core->stats.acks_refused;
      std::fprintf(stderr,
                   "agent: warning: central %s says it has this queue's results up to "
                   "%llu: %s\n",
                   core->where().c_str(), static_cast<unsigned long long>(last), r.error().c_str());
    }
  }

  while (!l->closed && !core->stopping) {
    if (!core->central_behind()) {
      core->wake.expires_after(std::chrono::hours(24));
      co_await core->wake.async_wait(use_tuple);
      continue;
    }
    // Sent implies durable: a crash can never make us reuse a number the central has seen.
    core->sync();
    auto batch = core->queue.peek(core->opts.batch, core->opts.batch_bytes);
    if (!batch) {
      std::fprintf(stderr, "agent: warning: %s\n", batch.error().c_str());
      l->close("queue read error");
      break;
    }
    const std::uint64_t rid = l->next_req++;
    const std::uint64_t sent_dropped = core->queue.dropped();
    const std::string sent_problem = core->problem;
    l->send_raw(build_report(*core, *batch, rid), rid);
    auto r = co_await await_reply(core, l, rid);
    if (!r) break;
    if (!(*r)["ok"].is_boolean() || !(*r)["ok"].get<bool>() || !r->contains("ack") ||
        !(*r)["ack"].is_number_unsigned()) {
      std::string e = r->contains("error") && (*r)["error"].is_string()
                          ? (*r)["error"].get<std::string>()
                          : std::string("reply without \"ack\"");
      l->close("report refused: " + e);
      break;
    }
    const auto ack = (*r)["ack"].get<std::uint64_t>();
    const auto before = core->queue.size();
    if (auto a = core->queue.ack(ack); !a) {
      ++core->stats.acks_refused;
      std::fprintf(stderr, "agent: warning: central %s: %s\n", core->where().c_str(),
                   a.error().c_str());
      l->close("the central acknowledged results this agent never sent");
      break;
    }
    core->stats.delivered += before - core->queue.size();
    core->told_dropped = sent_dropped;
    core->told_problem = sent_problem;
    ++core->stats.reports;
  }
  core->stats.connected = false;
  l->close(core->stopping ? "stopping" : "closed");
  if (core->stopping || core->disconnected) co_return std::string();
  co_return l->why;
}

asio::awaitable<void> run_sender(std::shared_ptr<agent_core> core) {
  auto backoff = core->opts.retry_min;
  while (!core->stopping && !core->disconnected) {
    auto l = std::make_shared<link>(core->io);
    core->current = l;
    std::string why = co_await connect(core, l);
    bool hello_ok = false;
    if (why.empty() && !core->stopping) {
      // Announce the recovery once the central has said hello back (inside the session).
      why = co_await session(core, l, &hello_ok);
    } else {
      l->close(why);
    }
    core->current.reset();
    if (hello_ok) backoff = core->opts.retry_min;
    if (core->disconnected) {
      std::fprintf(stderr,
                   "agent: central %s asked this agent to disconnect%s%s; stopping without "
                   "reconnecting (%zu results stay queued in %s)\n",
                   core->where().c_str(), core->disconnect_reason.empty() ? "" : ": ",
                   core->disconnect_reason.c_str(), core->queue.size(), core->queue.dir().c_str());
      core->sync();
      if (core->disconnect_hook) core->disconnect_hook(core->disconnect_reason);
      co_return;
    }
    if (core->stopping) break;
    if (!core->outage_since) core->outage_since = steady::now();
    // Equal jitter: half the delay fixed, half random, so many agents do not reconnect at once.
    const auto half = backoff.count() / 2;
    std::uniform_int_distribution<long long> dist(0, std::max<long long>(half, 0));
    auto delay = std::chrono::milliseconds(backoff.count() - half + dist(core->rng));
    if (!core->outage_announced) {
      std::fprintf(stderr, "agent: central %s %s (%s); retrying in %s; %zu results queued\n",
                   core->where().c_str(),
                   hello_ok                                   ? "lost"
                   : why.rfind("agent_hello refused", 0) == 0 ? "refused this agent"
                                                              : "unreachable",
                   why.empty() ? "closed" : why.c_str(), seconds_text(delay).c_str(),
                   core->queue.size());
      core->outage_announced = true;
    }
    core->backoff_timer.expires_after(delay);
    co_await core->backoff_timer.async_wait(use_tuple);
    backoff = std::min(backoff * 2, core->opts.retry_max);
  }
}

}  // namespace
}  // namespace detail

agent::agent(asio::io_context& io, agent_queue& queue, agent_options opts)
    : core_(std::make_shared<detail::agent_core>(io, queue, std::move(opts))) {
  if (core_->opts.retry_min.count() <= 0) core_->opts.retry_min = std::chrono::milliseconds(100);
  if (core_->opts.retry_max < core_->opts.retry_min) core_->opts.retry_max = core_->opts.retry_min;
  core_->opts.batch = std::clamp<std::size_t>(core_->opts.batch, 1, 500);  // the protocol's limit
}

agent::~agent() {
  stop();
}

void agent::on_result(const result_record& r) {
  core_->push(to_json(r));
}

void agent::push_json(std::string_view object) {
  core_->push(object);
}

void agent::flush() {
  core_->sync();
}

void agent::start() {
  if (core_->started) return;
  core_->started = true;
  asio::co_spawn(core_->io, detail::run_sender(core_), asio::detached);
}

void agent::stop() {
  if (core_->stopping) return;
  core_->stopping = true;
  if (core_->current) core_->current->close("stopping");
  core_->wake.cancel();
  core_->backoff_timer.cancel();
  core_->sync();
}

void agent::on_disconnect(std::function<void(const std::string&)> f) {
  core_->disconnect_hook = std::move(f);
}

const agent_stats& agent::stats() const {
  return core_->stats;
}

}  // namespace sonde::engine
