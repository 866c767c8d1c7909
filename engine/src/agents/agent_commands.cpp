// The agent commands of the control server. See agent_commands.hpp and docs/agents.md.
#include <map>

#include <asio/steady_timer.hpp>

#include "agents/agent_commands.hpp"

namespace sonde::engine {

using json = nlohmann::json;
using steady = std::chrono::steady_clock;

namespace detail {

struct agent_service_state {
  asio::io_context& io;
  control_server& server;
  agent_registry& reg;
  asio::steady_timer timer;
  bool stopped = false;
  std::map<std::string, std::uint64_t> conn_of;   // agent name -> its connection's id
  std::map<std::uint64_t, std::string> agent_of;  // connection id -> agent name
  struct pending_info {
    std::uint64_t requester;
    std::string agent;
    steady::time_point deadline;
  };
  std::map<std::int64_t, pending_info> pending;
  std::int64_t next_info = 1;
  static constexpr auto info_limit = std::chrono::seconds(5);

  agent_service_state(asio::io_context& i, control_server& s, agent_registry& r)
      : io(i), server(s), reg(r), timer(i) {}

  void arm() {
    timer.expires_after(std::chrono::milliseconds(250));
    timer.async_wait([this](asio::error_code ec) {
      if (ec || stopped) return;
      reg.sweep();
      expire_infos();
      arm();
    });
  }

  void expire_infos() {
    auto now = steady::now();
    for (auto it = pending.begin(); it != pending.end();) {
      if (now < it->second.deadline) {
        ++it;
        continue;
      }
      if (auto* c = server.find_client(it->second.requester))
        c->send_event({{"event", "agent_info"},
                       {"id", it->first},
                       {"agent", it->second.agent},
                       {"error", "agent " + it->second.agent + " did not answer within 5s"}});
      it = pending.erase(it);
    }
  }

  control_client* agent_client(const std::string& name) {
    auto it = conn_of.find(name);
    return it == conn_of.end() ? nullptr : server.find_client(it->second);
  }
};

}  // namespace detail

namespace {

using result = tl::expected<json, command_error>;

// The longest line an agent's connection may send after agent_hello: a report of 4 MiB of
// results plus its envelope.
constexpr std::size_t agent_max_line = (4u << 20) + (1u << 20);

result fail(std::string msg) {
  return tl::unexpected(command_error{std::move(msg), {}});
}

// The host part of a peer address ("127.0.0.1:4000", "[::1]:4000") is loopback.
bool peer_is_loopback(const std::string& peer) {
  std::string host = peer;
  if (auto c = host.rfind(':'); c != std::string::npos) host = host.substr(0, c);
  if (host.size() > 1 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  return is_loopback_host(host);
}

std::optional<std::string> string_field(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

}  // namespace

agent_service::agent_service(asio::io_context& io, control_server& server, agent_registry& registry)
    : state_(std::make_shared<detail::agent_service_state>(io, server, registry)) {
  std::weak_ptr<detail::agent_service_state> weak = state_;
  auto* st = state_.get();
  using req = const control_request&;
  using client = control_client&;

  server.add_command(
      "agent_hello",
      "an agent introduces itself: agent, queue_id, next_seq, key, interval_ms, facts",
      [st, weak](client c, req r) -> result {
        auto h = decode_agent_hello(r.body);
        if (!h) return fail(h.error());
        auto last = st->reg.hello(*h, c.peer(), peer_is_loopback(c.peer()));
        if (!last) return fail(last.error());
        const std::string& name = h->agent;
        // A second connection with the same name replaces the first.
        if (auto old = st->conn_of.find(name); old != st->conn_of.end() && old->second != c.id()) {
          st->agent_of.erase(old->second);
          if (auto* oc = st->server.find_client(old->second)) oc->finish();
        }
        if (auto prev = st->agent_of.find(c.id());
            prev != st->agent_of.end() && prev->second != name)
          st->conn_of.erase(prev->second);
        // Reports carry up to 4 MiB of results (docs/agents.md), beyond [control] max_line.
        c.set_max_line(agent_max_line);
        bool fresh = !st->agent_of.count(c.id());
        st->conn_of[name] = c.id();
        st->agent_of[c.id()] = name;
        if (fresh)
          c.on_close([weak, id = c.id()] {
            auto s = weak.lock();
            if (!s) return;
            auto it = s->agent_of.find(id);
            if (it == s->agent_of.end()) return;
            if (auto n = s->conn_of.find(it->second); n != s->conn_of.end() && n->second == id) {
              s->reg.disconnected(it->second);
              s->conn_of.erase(n);
            }
            s->agent_of.erase(it);
          });
        return json{{"agent", name}, {"last_seq", *last}};
      });

  // A report and an info_reply speak for the agent that said hello on this connection (and
  // proved its key there), whatever name they carry.
  server.add_command(
      "report", "an agent's results: queue_id, next_seq, results (each with seq), dropped",
      [st](client c, req r) -> result {
        auto it = st->agent_of.find(c.id());
        if (it == st->agent_of.end()) return fail("agent_hello first");
        auto rep = decode_agent_report(r.body);
        if (!rep) return fail(rep.error());
        // The ack goes out once the results are durable in the history store
        // (or the error, if they could not be stored).
        c.defer_reply([st, name = it->second,
                       rep = std::move(*rep)](control_client::reply_amend amend) mutable {
          st->reg.report(name, std::move(rep),
                         [amend = std::move(amend)](tl::expected<std::uint64_t, std::string> ack) {
                           if (!ack)
                             amend(json{{"ok", false}, {"error", ack.error()}});
                           else
                             amend(json{{"ack", *ack}});
                         });
        });
        return json::object();
      });

  server.add_command("info_reply", "an agent answers an info event: id, facts",
                     [st](client c, req r) -> result {
                       auto it = st->agent_of.find(c.id());
                       if (it == st->agent_of.end()) return fail("agent_hello first");
                       auto info = decode_agent_info_reply(r.body);
                       if (!info) return fail(info.error());
                       if (auto k = st->reg.info_reply(it->second, info->facts); !k)
                         return fail(k.error());
                       if (auto p = st->pending.find(info->id);
                           p != st->pending.end() && p->second.agent == it->second) {
                         if (auto* asker = st->server.find_client(p->second.requester))
                           asker->send_event({{"event", "agent_info"},
                                              {"id", info->id},
                                              {"agent", it->second},
                                              {"facts", info->facts}});
                         st->pending.erase(p);
                       }
                       return json::object();
                     });

  // `status` gains an "agents" section: counts, store failures, keys.
  if (auto base = server.command("status"))
    server.add_command("status",
                       "uptime, task counts, in-flight probes, results per second, plugins, agents",
                       [st, base](client c, req r) -> result {
                         auto out = base(c, r);
                         if (!out) return out;
                         if (out->is_object()) (*out)["agents"] = st->reg.status_json();
                         return out;
                       });

  server.add_command("agents", "known agents: address, last seen, CPU, memory, load, state",
                     [st](client, req) -> result { return st->reg.table(); });

  server.add_command(
      "agent", "ask an agent: agent (name), action info|disconnect",
      [st](client c, req r) -> result {
        auto name = string_field(r.body, "agent");
        if (!name) name = string_field(r.body, "name");
        auto action = string_field(r.body, "action");
        if (!name || !action)
          return fail("agent needs \"agent\" (name) and \"action\" (info|disconnect)");
        if (!st->reg.find(*name)) return fail("no agent named '" + *name + "'");
        auto* ac = st->agent_client(*name);
        if (*action == "info") {
          if (!ac) return fail("agent " + *name + " is not connected");
          auto id = st->next_info++;
          st->pending[id] = {c.id(), *name, steady::now() + st->info_limit};
          ac->send_event({{"event", "info"}, {"id", id}});
          // The answer comes later as {"event":"agent_info","id":N,...} on this connection.
          return json{{"pending", true}, {"id", id}, {"agent", *name}};
        }
        if (*action == "disconnect") {
          if (!ac) return fail("agent " + *name + " is not connected");
          std::string why = string_field(r.body, "reason").value_or("requested by " + c.peer());
          ac->send_event({{"event", "disconnect"}, {"reason", why}});
          ac->finish();
          st->reg.retired(*name);
          return json{{"agent", *name}, {"disconnected", true}};
        }
        return fail("unknown action '" + *action + "' (info or disconnect)");
      });

  state_->arm();
}

void agent_service::stop() {
  state_->stopped = true;
  state_->timer.cancel();
}

agent_service::~agent_service() {
  stop();
}

}  // namespace sonde::engine
