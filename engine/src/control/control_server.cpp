// The control server. See control.hpp and docs/control-protocol.md.
//
// Each connection is a session with two coroutines: a reader that splits the stream into
// bounded lines and dispatches each request, and a writer that drains the session's queue of
// outgoing lines. Replies are always queued (the reader stops reading while too many reply
// bytes wait, so a client that never reads cannot grow memory); results for watchers are
// formatted once per result and shared by every watcher's queue, which is bounded: when it is
// full the result is dropped and counted, and the count is reported in-band.
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <map>
#include <optional>
#include <unordered_map>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/ssl.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <sonde/version.hpp>
#include "control/control.hpp"
#include "core/output.hpp"

namespace sonde::engine {

using json = nlohmann::json;
using asio::ip::tcp;
using steady = std::chrono::steady_clock;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

bool token_equal(std::string_view a, std::string_view b) {
  // Hash both sides so the comparison takes the same time whatever the lengths, then compare
  // the digests with OpenSSL's constant-time memcmp.
  unsigned char da[EVP_MAX_MD_SIZE], db[EVP_MAX_MD_SIZE];
  unsigned int la = 0, lb = 0;
  if (!EVP_Digest(a.data(), a.size(), da, &la, EVP_sha256(), nullptr) ||
      !EVP_Digest(b.data(), b.size(), db, &lb, EVP_sha256(), nullptr) || la != lb)
    return false;
  return CRYPTO_memcmp(da, db, la) == 0;
}

namespace detail {

struct session;

struct command_entry {
  std::string help;
  control_server::handler fn;
};

// Everything the sessions share. Sessions hold it by shared_ptr, so a session whose coroutine
// frame is destroyed late (when the io_context goes away) still finds it alive.
struct control_core : result_sink {
  asio::io_context& io;
  scheduler* sched;
  task_set* tasks;
  const plugin_host* plugins;
  control_options opts;
  std::optional<tcp::acceptor> acceptor;
  std::optional<asio::ssl::context> tls;
  std::map<std::string, command_entry> commands;
  std::unordered_map<std::uint64_t, session*> sessions;
  std::uint64_t next_id = 1, watchers = 0, dropped_total = 0, accepted = 0, refused = 0;
  // Connections closed to make room for new ones, closed for not authenticating in time, and
  // closed for idling; bytes queued for all clients; TLS refusals being written.
  std::uint64_t evicted = 0, auth_timeouts = 0, idle_closed = 0;
  std::size_t queued_bytes = 0, refusing = 0;
  std::function<void()> shutdown_hook;
  steady::time_point started = steady::now();
  asio::steady_timer rate_timer, sweep_timer;
  std::deque<std::uint64_t> completed_ring;  // completed count, one sample per second
  bool closing = false;
  std::function<void()> closed_hook;
  std::optional<asio::steady_timer> close_timer;

  control_core(asio::io_context& io_, scheduler& s, task_set& t, const plugin_host& p,
               control_options o)
      : io(io_),
        sched(&s),
        tasks(&t),
        plugins(&p),
        opts(std::move(o)),
        rate_timer(io_),
        sweep_timer(io_) {}

  void on_result(const result_record& r) override;
  void sweep();
  std::chrono::milliseconds sweep_period() const;
  void sample_rate();
  double results_per_second() const;
  json hello() const;
  json status() const;
  json clients() const;
  void maybe_closed();
};

std::string reply_line(json reply, const json& seq) {
  if (!seq.is_null()) reply["seq"] = seq;
  return reply.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string error_line(const std::string& message, const json& seq,
                       const std::vector<std::string>& details = {}) {
  json r{{"ok", false}, {"error", message}};
  if (!details.empty()) r["errors"] = details;
  return reply_line(std::move(r), seq);
}

struct session final : control_client, std::enable_shared_from_this<session> {
  std::shared_ptr<control_core> core;
  std::optional<tcp::socket> plain;
  std::optional<asio::ssl::stream<tcp::socket>> tls;
  std::uint64_t id_;
  std::string peer_, addr_;  // "host:port" and the host alone (for per-address limits)
  std::chrono::system_clock::time_point connected = std::chrono::system_clock::now();
  steady::time_point accepted_at = steady::now(), last_active = accepted_at;
  line_splitter lines;
  bool authed = false, agent = false;
  // A command answers once its change is durable (defer_reply): the reader waits for it.
  std::function<void(reply_amend)> deferred;
  bool awaiting_reply = false;

  // The outgoing queue: lines shared with other watchers where they are results.
  struct queued_line {
    std::shared_ptr<const std::string> text;
    bool result;
  };
  std::deque<queued_line> out;
  std::size_t out_bytes = 0, queued_results = 0;
  asio::steady_timer wake, gate;
  bool read_done = false, close_after_flush = false, closed = false, lingering = false;

  bool watching = false;
  watch_filter filter;
  std::size_t queue_limit = 0;
  std::uint64_t dropped_pending = 0, dropped = 0, results_sent = 0, requests = 0;

  // Stop reading requests while more than this many reply bytes wait to be written.
  static constexpr std::size_t reply_gate = 1 << 20;
  // Results wait this long to be written together: one write per few results instead of one
  // per result (the benchmark measured the per-write cost with 100 watchers).
  static constexpr auto result_linger = std::chrono::milliseconds(5);

  // `addr` is the peer's address as accept_loop read it ("?" if unknown).
  session(std::shared_ptr<control_core> c, tcp::socket s, std::uint64_t id, std::string addr,
          std::uint16_t port)
      : core(std::move(c)),
        id_(id),
        lines(core->opts.max_line),
        wake(core->io, steady::time_point::max()),
        gate(core->io, steady::time_point::max()) {
    addr_ = std::move(addr);
    peer_ = addr_ == "?" ? addr_ : listen_address{addr_, port}.to_string();
    if (core->tls)
      tls.emplace(std::move(s), *core->tls);
    else
      plain.emplace(std::move(s));
    core->sessions.emplace(id_, this);
  }
  std::vector<std::function<void()>> close_hooks;

  ~session() override {
    for (auto& l : out) core->queued_bytes -= l.text->size();
    for (auto& f : close_hooks) f();
    if (watching) --core->watchers;
    core->sessions.erase(id_);
    core->maybe_closed();
  }

  // control_client
  std::uint64_t id() const override { return id_; }
  std::string peer() const override { return peer_; }
  void watch(watch_filter f, std::size_t queue) override {
    if (!watching) ++core->watchers;
    watching = true;
    filter = std::move(f);
    queue_limit = queue ? queue : core->opts.watch_queue;
  }
  void unwatch() override {
    if (watching) --core->watchers;
    watching = false;
  }
  void send_event(const json& event) override { push(reply_line(event, nullptr)); }
  void finish() override {
    close_after_flush = true;
    wake.cancel();
    gate.cancel();
  }
  void on_close(std::function<void()> f) override { close_hooks.push_back(std::move(f)); }
  // Only the agent protocol raises a connection's line limit (agent_hello): such a connection
  // reports at the agent's interval, which may be longer than idle_timeout.
  void set_max_line(std::size_t bytes) override {
    lines.set_max_line(bytes);
    agent = true;
  }
  void defer_reply(std::function<void(reply_amend)> wait) override { deferred = std::move(wait); }

  tcp::socket& socket() { return tls ? tls->next_layer() : *plain; }

  void push(std::shared_ptr<const std::string> line, bool is_result) {
    if (closed) return;
    out_bytes += line->size();
    core->queued_bytes += line->size();
    queued_results += is_result;
    out.push_back({std::move(line), is_result});
    // A result joins the batch the writer is lingering for; anything else goes out now.
    if (!is_result || !lingering || queued_results >= queue_limit / 2) wake.cancel();
  }
  void push(std::string line) { push(std::make_shared<const std::string>(std::move(line)), false); }

  void offer(const std::shared_ptr<const std::string>& line) {
    if (queued_results >= queue_limit ||
        core->queued_bytes + line->size() > core->opts.max_queued_bytes) {
      ++dropped_pending;
      ++dropped;
      ++core->dropped_total;
      return;
    }
    if (dropped_pending) {
      // Room again: say how many results this watcher missed, then go on.
      push(reply_line({{"event", "dropped"}, {"dropped", dropped_pending}, {"total", dropped}},
                      nullptr));
      dropped_pending = 0;
    }
    ++results_sent;
    push(line, true);
  }

  void close() {
    if (closed) return;
    closed = true;
    asio::error_code ec;
    socket().shutdown(tcp::socket::shutdown_both, ec);
    socket().close(ec);
    wake.cancel();
    gate.cancel();
  }

  // Queued bytes leave the global count when written or dropped.
  void unqueue_front() {
    out_bytes -= out.front().text->size();
    core->queued_bytes -= out.front().text->size();
    queued_results -= out.front().result;
    out.pop_front();
  }

  void start() {
    auto self = shared_from_this();
    asio::co_spawn(
        core->io, [self]() { return self->run(); }, asio::detached);
  }

  asio::awaitable<void> run() {
    auto self = shared_from_this();
    if (tls) {
      // The handshake counts against auth_timeout: the sweep closes a client that stalls in it.
      auto [ec] = co_await tls->async_handshake(asio::ssl::stream_base::server, use_tuple);
      if (ec || closed) {
        close();
        co_return;
      }
    }
    asio::co_spawn(
        core->io, [self]() { return self->writer(); }, asio::detached);
    co_await reader();
  }

  asio::awaitable<std::size_t> read_some(char* buf, std::size_t n, asio::error_code& ec) {
    if (tls) {
      auto [e, got] = co_await tls->async_read_some(asio::buffer(buf, n), use_tuple);
      ec = e;
      co_return got;
    }
    auto [e, got] = co_await plain->async_read_some(asio::buffer(buf, n), use_tuple);
    ec = e;
    co_return got;
  }

  asio::awaitable<void> reader() {
    auto self = shared_from_this();
    char buf[8192];
    while (!closed && !close_after_flush) {
      asio::error_code ec;
      std::size_t n = co_await read_some(buf, sizeof buf, ec);
      if (ec) break;
      lines.feed(std::string_view(buf, n));
      while (auto line = lines.next()) {
        if (line->too_long) {
          push(error_line(
              "request line longer than " + std::to_string(core->opts.max_line) + " bytes; ignored",
              nullptr));
        } else if (line->text.find_first_not_of(" \t") != std::string::npos) {
          handle(line->text);
        }
        if (closed || close_after_flush) break;
        while ((out_bytes > reply_gate || awaiting_reply) && !closed) {
          gate.expires_at(steady::time_point::max());
          co_await gate.async_wait(use_tuple);
        }
        if (closed || close_after_flush) break;  // closed while waiting: no further request
      }
    }
    read_done = true;
    // A watcher may half-close and keep reading; anyone else is done once replies are out.
    if (!watching) close_after_flush = true;
    wake.cancel();
  }

  asio::awaitable<void> writer() {
    auto self = shared_from_this();
    std::vector<asio::const_buffer> bufs;
    while (!closed) {
      if (out.empty()) {
        if ((close_after_flush || (read_done && !watching)) && !awaiting_reply) break;
        wake.expires_at(steady::time_point::max());
        co_await wake.async_wait(use_tuple);
        continue;
      }
      if (queued_results == out.size() && queued_results < queue_limit / 2 && !close_after_flush) {
        lingering = true;
        wake.expires_after(result_linger);
        co_await wake.async_wait(use_tuple);
        lingering = false;
        if (closed) break;
      }
      std::size_t batch = std::min<std::size_t>(out.size(), 64);
      bufs.clear();
      for (std::size_t i = 0; i < batch; ++i) bufs.push_back(asio::buffer(*out[i].text));
      asio::error_code ec;
      if (tls) {
        auto [e, n] = co_await asio::async_write(*tls, bufs, use_tuple);
        ec = e;
      } else {
        auto [e, n] = co_await asio::async_write(*plain, bufs, use_tuple);
        ec = e;
      }
      if (ec) break;  // the client went away: drop everything queued for it
      for (std::size_t i = 0; i < batch; ++i) unqueue_front();
      if (out_bytes <= reply_gate) gate.cancel();
    }
    while (!out.empty()) unqueue_front();
    close();
  }

  void handle(const std::string& text) {
    ++requests;
    last_active = steady::now();
    auto req = parse_request(text);
    if (!req) {
      if (!core->opts.token.empty() && !authed) return refuse("a token is required", nullptr);
      push(error_line(req.error().message, req.error().seq));
      return;
    }
    if (core->opts.token.empty()) {
      authed = true;
    } else {
      if (!req->token) {
        if (!authed) return refuse("a token is required (\"token\": \"...\")", req->seq);
      } else if (!token_equal(*req->token, core->opts.token)) {
        return refuse("wrong token", req->seq);
      } else {
        authed = true;
      }
    }
    auto it = core->commands.find(req->command);
    if (it == core->commands.end()) {
      std::vector<std::string> names;
      std::string list;
      for (const auto& [n, c] : core->commands) {
        names.push_back(n);
        list += (list.empty() ? "" : ", ") + n;
      }
      auto sugg = closest(req->command, names);
      push(error_line("unknown command '" + req->command + "'" +
                          (sugg.empty() ? "" : " (did you mean '" + sugg + "'?)") +
                          "; valid commands: " + list,
                      req->seq));
      return;
    }
    tl::expected<json, command_error> r = tl::unexpected(command_error{"internal error", {}});
    try {
      r = it->second.fn(*this, *req);
    } catch (const std::exception& e) {
      r = tl::unexpected(command_error{std::string("internal error: ") + e.what(), {}});
    }
    if (!r) {
      push(error_line(r.error().message, req->seq, r.error().details));
      return;
    }
    json reply = std::move(*r);
    if (!reply.is_object()) reply = json{{"result", std::move(reply)}};
    json out_obj{{"ok", true}};
    for (auto& [k, v] : reply.items()) out_obj[k] = v;
    if (!deferred) {
      push(reply_line(std::move(out_obj), req->seq));
      return;
    }
    // The reply goes out when the command says so; until then this connection reads nothing.
    auto wait = std::move(deferred);
    deferred = nullptr;
    awaiting_reply = true;
    std::weak_ptr<session> weak = shared_from_this();
    wait([weak, out_obj = std::move(out_obj), seq = req->seq](json extra) mutable {
      auto self = weak.lock();
      if (!self) return;
      self->awaiting_reply = false;
      self->last_active = steady::now();
      if (extra.is_object() && extra.value("ok", true) == false) {
        // The command failed after all (a query, an agent's report that could not be stored).
        auto e = extra.find("error");
        self->push(error_line(
            e != extra.end() && e->is_string() ? e->get<std::string>() : std::string("failed"),
            seq));
        self->gate.cancel();
        return;
      }
      if (extra.is_object())
        for (auto& [k, v] : extra.items()) out_obj[k] = v;
      self->push(reply_line(std::move(out_obj), seq));
      self->gate.cancel();
    });
  }

  void refuse(const std::string& why, const json& seq) {
    push(error_line(why, seq));
    close_after_flush = true;  // a wrong or missing token closes the connection
    wake.cancel();
  }
};

void control_core::on_result(const result_record& r) {
  if (watchers == 0) return;  // nobody is watching: no formatting cost at all
  std::shared_ptr<const std::string> line;
  auto st = to_string(r.state);
  for (auto& [id, s] : sessions) {
    if (!s->watching || s->closed || !s->filter.results) continue;
    if (!s->filter.matches(r.task->name, r.task->type, st)) continue;
    if (!line) {
      std::string l = "{\"event\":\"result\",\"result\":";
      l += to_json(r);
      l += "}\n";
      line = std::make_shared<const std::string>(std::move(l));
    }
    s->offer(line);
  }
}

void control_core::sample_rate() {
  completed_ring.push_back(sched->stats().completed);
  if (completed_ring.size() > 11) completed_ring.pop_front();
  rate_timer.expires_after(std::chrono::seconds(1));
  rate_timer.async_wait([this](asio::error_code ec) {
    if (!ec && !closing) sample_rate();
  });
}

double control_core::results_per_second() const {
  if (completed_ring.size() < 2) return 0;
  return static_cast<double>(completed_ring.back() - completed_ring.front()) /
         static_cast<double>(completed_ring.size() - 1);
}

json control_core::hello() const {
  json cmds = json::object();
  for (const auto& [n, c] : commands) cmds[n] = c.help;
  return {{"engine", "sonde"},
          {"version", SONDE_VERSION_STRING},
          {"protocol", control_protocol_version},
          {"commands", std::move(cmds)}};
}

json control_core::status() const {
  const auto& st = sched->stats();
  std::size_t total = 0, paused = 0, disabled = 0;
  sched->for_each([&](const scheduled_task& t) {
    ++total;
    if (!t.spec().enabled)
      ++disabled;
    else if (t.paused())
      ++paused;
  });
  json plugs = json::array();
  for (const auto& p : plugins->plugins()) {
    json types = json::array();
    for (std::size_t i = 0; i < p.descriptor->type_count; ++i)
      types.push_back(p.descriptor->types[i].name);
    plugs.push_back({{"name", p.descriptor->name},
                     {"version", p.descriptor->version},
                     {"types", std::move(types)},
                     {"path", p.path}});
  }
  auto uptime = std::chrono::duration<double>(steady::now() - started).count();
  return {{"engine", "sonde"},
          {"version", SONDE_VERSION_STRING},
          {"protocol", control_protocol_version},
          {"uptime_s", uptime},
          {"tasks",
           {{"total", total},
            {"running", total - paused - disabled},
            {"paused", paused},
            {"disabled", disabled},
            {"control", tasks->control_count()},
            {"file", total - tasks->control_count()}}},
          {"in_flight", st.in_flight},
          {"queued", st.queued},
          {"results",
           {{"total", st.completed},
            {"per_second", results_per_second()},
            {"ok", st.by_status[0]},
            {"warning", st.by_status[1]},
            {"critical", st.by_status[2]},
            {"unknown", st.by_status[3]},
            {"skipped_overlap", st.skipped_overlap}}},
          {"plugins", std::move(plugs)},
          {"state", tasks->state_stats()},
          {"clients",
           {{"connected", sessions.size()},
            {"watching", watchers},
            {"dropped_results", dropped_total},
            {"queued_bytes", queued_bytes},
            {"refused", refused},
            {"evicted_unauthenticated", evicted},
            {"auth_timeouts", auth_timeouts},
            {"idle_closed", idle_closed}}}};
}

json control_core::clients() const {
  json list = json::array();
  std::vector<const session*> v;
  for (const auto& [id, s] : sessions) v.push_back(s);
  std::sort(v.begin(), v.end(), [](auto* a, auto* b) { return a->id_ < b->id_; });
  auto now = std::chrono::system_clock::now();
  for (const auto* s : v) {
    json c{{"id", s->id_},
           {"peer", s->peer_},
           {"connected_s", std::chrono::duration<double>(now - s->connected).count()},
           {"requests", s->requests},
           {"watching", s->watching},
           {"queue", s->queued_results},
           {"queue_bytes", s->out_bytes}};
    if (s->watching) {
      c["queue_limit"] = s->queue_limit;
      c["sent"] = s->results_sent;
      c["dropped"] = s->dropped;
      c["filter"] = {
          {"task", s->filter.tasks}, {"type", s->filter.types}, {"status", s->filter.statuses}};
    }
    list.push_back(std::move(c));
  }
  return {{"clients", std::move(list)}};
}

std::chrono::milliseconds control_core::sweep_period() const {
  auto shortest = opts.auth_timeout;
  if (opts.idle_timeout.count() > 0) shortest = std::min(shortest, opts.idle_timeout);
  return std::clamp(shortest / 4, std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
}

// Close connections that did not authenticate within auth_timeout (TLS handshake included)
// and authenticated ones idle past idle_timeout (watchers and clients awaiting a reply are
// not idle).
void control_core::sweep() {
  auto now = steady::now();
  std::vector<session*> expired, idle;
  for (auto& [id, s] : sessions) {
    if (s->closed || s->close_after_flush) continue;
    if (!s->authed) {
      if (now - s->accepted_at >= opts.auth_timeout) expired.push_back(s);
    } else if (opts.idle_timeout.count() > 0 && !s->watching && !s->awaiting_reply && !s->agent &&
               s->out.empty() && now - s->last_active >= opts.idle_timeout) {
      idle.push_back(s);
    }
  }
  for (auto* s : expired) {
    ++auth_timeouts;
    s->close();
  }
  for (auto* s : idle) {
    ++idle_closed;
    s->push(reply_line({{"event", "closing"},
                        {"reason", "idle for " + std::to_string(opts.idle_timeout.count() / 1000) +
                                       "s (idle_timeout)"}},
                       nullptr));
    s->finish();
  }
  sweep_timer.expires_after(sweep_period());
  sweep_timer.async_wait([this](asio::error_code ec) {
    if (!ec && !closing) sweep();
  });
}

void control_core::maybe_closed() {
  if (closing && sessions.empty() && closed_hook) {
    auto f = std::move(closed_hook);
    closed_hook = nullptr;
    if (close_timer) close_timer->cancel();
    asio::post(io, std::move(f));
  }
}

}  // namespace detail

namespace {

template <class F>
tl::expected<json, command_error> from_tasks(F&& r) {
  if (!r) return tl::unexpected(command_error{r.error().message, r.error().details});
  return std::move(*r);
}

// A change to the task set: in effect at once; the reply waits until it is on disk (the
// writer thread's group commit), so an acknowledged change survives a crash.
template <class F>
tl::expected<json, command_error> persisted(detail::control_core* core, control_client& c, F&& r) {
  auto out = from_tasks(std::forward<F>(r));
  if (!out) return out;
  if (auto ticket = core->tasks->take_ticket())
    c.defer_reply([core, ticket](control_client::reply_amend done) {
      // Whichever comes first answers: the write, or the patience of persist_wait (a hung
      // disk must not hold clients forever; the change is in effect and stays queued).
      auto once = std::make_shared<control_client::reply_amend>(std::move(done));
      auto answer = [once](json extra) {
        if (!*once) return;
        auto f = std::move(*once);
        *once = nullptr;
        f(std::move(extra));
      };
      auto timer = std::make_shared<asio::steady_timer>(core->io, core->opts.persist_wait);
      timer->async_wait([answer](asio::error_code ec) {
        if (!ec)
          answer(json{{"warning",
                       "the change is in effect but not yet on disk (the disk is "
                       "slow); it stays queued and will be written"}});
      });
      core->tasks->when_saved(ticket, [answer, timer](const std::string& error) {
        timer->cancel();
        if (error.empty())
          answer(json::object());
        else
          answer(json{{"warning", "the change is in effect but not yet saved: " + error +
                                      " (retrying every second)"}});
      });
    });
  return out;
}

}  // namespace

control_server::control_server(asio::io_context& io, scheduler& sched, task_set& tasks,
                               const plugin_host& plugins, control_options opts)
    : core_(std::make_shared<detail::control_core>(io, sched, tasks, plugins, std::move(opts))) {
  auto* core = core_.get();
  using req = const control_request&;
  using client = control_client&;
  // stop, pause and resume take the same selector.
  enum class sel_op { stop, pause, resume };
  auto selector_cmd = [core](sel_op op) -> handler {
    return [core, op](client c, req r) -> tl::expected<json, command_error> {
      auto sel = parse_selector(r.body);
      if (!sel) return tl::unexpected(command_error{sel.error(), {}});
      switch (op) {
        case sel_op::stop:
          return persisted(core, c, core->tasks->stop(*sel));
        case sel_op::pause:
          return persisted(core, c, core->tasks->pause(*sel));
        case sel_op::resume:
          break;
      }
      return persisted(core, c, core->tasks->resume(*sel));
    };
  };
  add_command("hello", "protocol version, engine version and the commands",
              [core](client, req) -> tl::expected<json, command_error> { return core->hello(); });
  add_command("start", "start a task: type (service), target (host), interval, probe options",
              [core](client c, req r) -> tl::expected<json, command_error> {
                auto def = parse_task_definition(r.body);
                if (!def) return tl::unexpected(command_error{def.error(), {}});
                return persisted(core, c, core->tasks->start(*def));
              });
  add_command("stop", "remove tasks: name, id (service_id) or all", selector_cmd(sel_op::stop));
  add_command("pause", "pause tasks: name, id or all", selector_cmd(sel_op::pause));
  add_command("resume", "resume paused tasks: name, id or all", selector_cmd(sel_op::resume));
  add_command(
      "list", "tasks with their state and last result",
      [core](client, req) -> tl::expected<json, command_error> { return core->tasks->list(); });
  add_command("status", "uptime, task counts, in-flight probes, results per second, plugins",
              [core](client, req) -> tl::expected<json, command_error> { return core->status(); });
  add_command("watch", "stream results (filters: task, type, status; queue)",
              [core](client c, req r) -> tl::expected<json, command_error> {
                auto f = parse_watch_filter(r.body);
                if (!f) return tl::unexpected(command_error{f.error(), {}});
                std::size_t queue = 0;
                if (auto it = r.body.find("queue"); it != r.body.end()) {
                  auto max = static_cast<std::int64_t>(core->opts.watch_queue_max);
                  if (!it->is_number_integer() || it->get<std::int64_t>() < 1 ||
                      it->get<std::int64_t>() > max)
                    return tl::unexpected(command_error{
                        "\"queue\" must be an integer from 1 to " + std::to_string(max), {}});
                  queue = it->get<std::size_t>();
                }
                c.watch(*f, queue);
                return json{{"watching", true},
                            {"queue", queue ? queue : core->opts.watch_queue},
                            {"results", f->results},
                            {"alarms", f->alarms}};
              });
  add_command("unwatch", "stop streaming results",
              [](client c, req) -> tl::expected<json, command_error> {
                c.unwatch();
                return json{{"watching", false}};
              });
  add_command("clients", "connected clients with their queue depths",
              [core](client, req) -> tl::expected<json, command_error> { return core->clients(); });
  add_command("reload", "re-read the task file; unchanged tasks keep schedule and state",
              [core](client c, req) -> tl::expected<json, command_error> {
                return persisted(core, c, core->tasks->reload());
              });
  add_command("export", "the current task set as a task file",
              [core](client, req) -> tl::expected<json, command_error> {
                return json{{"toml", core->tasks->export_toml()}};
              });
  add_command("shutdown", "finish or cancel in-flight probes, then exit 0",
              [core](client, req) -> tl::expected<json, command_error> {
                if (!core->shutdown_hook)
                  return tl::unexpected(command_error{"this engine cannot be shut down", {}});
                asio::post(core->io, core->shutdown_hook);
                return json{{"shutting_down", true}, {"in_flight", core->sched->stats().in_flight}};
              });
  sched.add_sink(core);
}

control_server::~control_server() {
  core_->sched->remove_sink(core_.get());
  core_->closing = true;
  core_->closed_hook = nullptr;
  asio::error_code ec;
  if (core_->acceptor) core_->acceptor->close(ec);
  core_->rate_timer.cancel();
  core_->sweep_timer.cancel();
  for (auto& [id, s] : core_->sessions) s->close();
}

void control_server::add_command(std::string name, std::string help, handler h) {
  core_->commands[std::move(name)] = detail::command_entry{std::move(help), std::move(h)};
}

control_server::handler control_server::command(const std::string& name) const {
  auto it = core_->commands.find(name);
  return it == core_->commands.end() ? handler() : it->second.fn;
}

void control_server::on_shutdown(std::function<void()> f) {
  core_->shutdown_hook = std::move(f);
}

std::size_t control_server::client_count() const {
  return core_->sessions.size();
}

control_client* control_server::find_client(std::uint64_t id) {
  auto it = core_->sessions.find(id);
  return it == core_->sessions.end() || it->second->closed ? nullptr : it->second;
}

void control_server::publish(const result_record& r) {
  core_->on_result(r);
}

void control_server::publish_alarm(const json& event) {
  auto& c = *core_;
  if (c.watchers == 0) return;
  std::shared_ptr<const std::string> line;
  const auto task = event.value("task", std::string());
  const auto type = event.value("type", std::string());
  for (auto& [id, s] : c.sessions) {
    if (!s->watching || s->closed || !s->filter.alarms) continue;
    if (!s->filter.matches_task(task, type)) continue;
    if (!line) {
      std::string l = "{\"event\":\"alarm\",\"alarm\":";
      l += event.dump(-1, ' ', false, json::error_handler_t::replace);
      l += "}\n";
      line = std::make_shared<const std::string>(std::move(l));
    }
    s->offer(line);
  }
}

namespace {

asio::awaitable<void> refuse_client(tcp::socket s, std::string line) {
  co_await asio::async_write(s, asio::buffer(line), use_tuple);
  asio::error_code ec;
  s.shutdown(tcp::socket::shutdown_both, ec);
}

// On a TLS port the refusal is said over TLS (a plaintext line would be garbage to the client),
// after a handshake bounded to two seconds.
asio::awaitable<void> refuse_client_tls(std::shared_ptr<detail::control_core> core, tcp::socket s,
                                        std::string line) {
  auto st = std::make_shared<asio::ssl::stream<tcp::socket>>(std::move(s), *core->tls);
  asio::steady_timer limit(core->io, std::chrono::seconds(2));
  limit.async_wait([st](asio::error_code ec) {
    if (ec) return;
    asio::error_code ignore;
    st->next_layer().close(ignore);
  });
  auto [ec] = co_await st->async_handshake(asio::ssl::stream_base::server, use_tuple);
  if (!ec) co_await asio::async_write(*st, asio::buffer(line), use_tuple);
  limit.cancel();
  asio::error_code ignore;
  st->next_layer().shutdown(tcp::socket::shutdown_both, ignore);
  st->next_layer().close(ignore);
  --core->refusing;
}

// Make room for a connection from `addr`, or say it may not have one. An unauthenticated
// connection that has had its chance (connected at least `grace` ago: a real client sends its
// first request at once) is closed, oldest first, when the newcomer would pass the
// per-address or the unauthenticated limit, or finds every slot taken. Young connections are
// never closed, so a burst of real clients is not turned against itself. An address beyond
// loopback that is at its limit with none of its connections old enough is refused: one remote
// host cannot take more than `max_per_address` slots by reconnecting fast. (Loopback clients
// are one host's own, and 127/8 is sixteen million addresses anyway: they rely on eviction.)
// Returns false to refuse the newcomer.
bool make_room(detail::control_core& core, const std::string& addr) {
  auto grace = std::min<std::chrono::milliseconds>(std::chrono::milliseconds(1000),
                                                   core.opts.auth_timeout / 4);
  auto old_enough = steady::now() - grace;
  detail::session *oldest = nullptr, *oldest_here = nullptr;
  std::size_t live = 0, unauth = 0, here = 0;
  for (auto& [id, s] : core.sessions) {
    if (s->closed) continue;
    ++live;
    if (s->authed) continue;
    ++unauth;
    bool here_too = s->addr_ == addr;
    here += here_too;
    if (s->accepted_at > old_enough) continue;
    if (!oldest || s->accepted_at < oldest->accepted_at) oldest = s;
    if (here_too && (!oldest_here || s->accepted_at < oldest_here->accepted_at)) oldest_here = s;
  }
  detail::session* victim = nullptr;
  if (here >= core.opts.max_per_address) {
    if (oldest_here)
      victim = oldest_here;
    else if (!is_loopback_host(addr))
      return false;
  }
  if (!victim && oldest &&
      (unauth >= core.opts.max_unauthenticated || live >= core.opts.max_clients))
    victim = oldest;
  if (victim) {
    ++core.evicted;
    victim->close();
    --live;
  }
  return live < core.opts.max_clients;
}

asio::awaitable<void> accept_loop(std::shared_ptr<detail::control_core> core) {
  while (!core->closing && core->acceptor && core->acceptor->is_open()) {
    auto [ec, sock] = co_await core->acceptor->async_accept(use_tuple);
    if (core->closing) co_return;
    if (ec) {
      if (ec == asio::error::operation_aborted) co_return;
      // Out of descriptors or similar: wait a little instead of spinning.
      asio::steady_timer t(core->io, std::chrono::milliseconds(50));
      co_await t.async_wait(use_tuple);
      continue;
    }
    asio::error_code aec;
    auto ep = sock.remote_endpoint(aec);
    std::string addr = aec ? std::string("?") : ep.address().to_string();
    if (!make_room(*core, addr)) {
      // Every slot is held by an authenticated client or a young one, or the address is full.
      ++core->refused;
      auto line = detail::error_line(
          "too many clients (" + std::to_string(core->opts.max_clients) + "); try again later",
          nullptr);
      if (!core->tls) {
        asio::co_spawn(core->io, refuse_client(std::move(sock), std::move(line)), asio::detached);
      } else if (core->refusing < 32) {
        ++core->refusing;
        asio::co_spawn(core->io, refuse_client_tls(core, std::move(sock), std::move(line)),
                       asio::detached);
      }  // else: dropped without a word (closing the socket) rather than holding more memory
      continue;
    }
    ++core->accepted;
    asio::error_code ignore;
    sock.set_option(tcp::no_delay(true), ignore);
    auto s = std::make_shared<detail::session>(core, std::move(sock), core->next_id++,
                                               std::move(addr), aec ? 0 : ep.port());
    s->start();
  }
}

}  // namespace

tl::expected<listen_address, std::string> control_server::start() {
  auto& c = *core_;
  const auto& la = c.opts.listen;
  bool loopback = is_loopback_host(la.host);
  if (!loopback && c.opts.token.empty())
    return tl::unexpected("refusing to listen on " + la.to_string() +
                          " without a token: set [control] token in the task file or "
                          "SONDE_TOKEN, or listen on a loopback address");
  if (!c.opts.token.empty())
    if (auto t = check_token(c.opts.token, loopback); !t)
      return tl::unexpected("refusing to listen on " + la.to_string() + ": " + t.error());
  if (!c.opts.tls_cert.empty()) {
    try {
      c.tls.emplace(asio::ssl::context::tls_server);
      c.tls->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                         asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                         asio::ssl::context::no_tlsv1_1);
      c.tls->use_certificate_chain_file(c.opts.tls_cert);
      c.tls->use_private_key_file(c.opts.tls_key, asio::ssl::context::pem);
    } catch (const std::exception& e) {
      c.tls.reset();
      return tl::unexpected("cannot load the control TLS certificate " + c.opts.tls_cert +
                            " or key " + c.opts.tls_key + ": " + e.what());
    }
  }
  asio::error_code ec;
  std::string host = la.host == "localhost" ? "127.0.0.1" : la.host;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) return tl::unexpected("invalid listen address " + la.to_string() + ": " + ec.message());
  tcp::endpoint ep(addr, la.port);
  c.acceptor.emplace(c.io);
  auto fail = [&](const char* what) {
    c.acceptor.reset();
    return tl::unexpected(std::string("cannot ") + what + " " + la.to_string() + ": " +
                          ec.message());
  };
  c.acceptor->open(ep.protocol(), ec);
  if (ec) return fail("open");
  c.acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
  c.acceptor->bind(ep, ec);
  if (ec) return fail("listen on");
  c.acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail("listen on");
  auto bound = c.acceptor->local_endpoint(ec);
  asio::co_spawn(c.io, accept_loop(core_), asio::detached);
  c.sample_rate();
  c.sweep();
  return listen_address{bound.address().to_string(), bound.port()};
}

void control_server::close(std::function<void()> done, std::chrono::milliseconds limit) {
  auto& c = *core_;
  c.closing = true;
  asio::error_code ec;
  if (c.acceptor) c.acceptor->close(ec);
  c.rate_timer.cancel();
  c.sweep_timer.cancel();
  c.closed_hook = std::move(done);
  for (auto& [id, s] : c.sessions) {
    s->watching = false;
    s->push(detail::reply_line({{"event", "shutdown"}}, nullptr));
    s->close_after_flush = true;
    s->gate.cancel();
  }
  c.watchers = 0;
  c.close_timer.emplace(c.io, limit);
  c.close_timer->async_wait([core = core_](asio::error_code e) {
    if (e || !core->closed_hook) return;
    for (auto& [id, s] : core->sessions) s->close();
    auto f = std::move(core->closed_hook);
    core->closed_hook = nullptr;
    f();
  });
  c.maybe_closed();
}

}  // namespace sonde::engine
