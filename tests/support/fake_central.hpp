#pragma once
// A small central engine for agent tests, speaking the agent side of the control protocol
// (docs/agents.md): accepts `agent_hello` and `report`, stores results per agent keyed by seq
// (dropping seq <= the last stored one), acknowledges, records `info_reply`, and can push
// `info` / `disconnect` events. Its store is a JSON-lines file, so a test can kill it and start
// a new one on the same port that remembers what was stored. Runs on its own thread; every
// public member is thread-safe. Loopback only.

#include <chrono>
#include <cstdint>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/read_until.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <nlohmann/json.hpp>

namespace sonde::test {

class fake_central {
 public:
  using json = nlohmann::json;
  struct stored {
    std::uint64_t seq;
    json result;
  };

  /// Listen on 127.0.0.1:`port` (0: any) with the store in `store_path` (loaded if present).
  /// `lose_ack_after`: see lose_ack_after(). `tell_last_seq` false: the hello reply omits
  /// `last_seq`, so the agent resends what was stored but not acknowledged (a central that
  /// lost its ack state), and deduplication by seq is what keeps delivery exactly-once.
  explicit fake_central(std::string store_path, unsigned short port = 0, std::string token = "",
                        int lose_ack_after = 0, bool tell_last_seq = true)
      : store_path_(std::move(store_path)),
        token_(std::move(token)),
        acceptor_(io_),
        lose_ack_after_(lose_ack_after),
        tell_last_seq_(tell_last_seq) {
    load();
    asio::ip::tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
    acceptor_.open(ep.protocol());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    acceptor_.bind(ep);
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    asio::co_spawn(io_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }
  fake_central(const fake_central&) = delete;
  fake_central& operator=(const fake_central&) = delete;
  ~fake_central() { kill(); }

  /// Stop at once, like a crash: connections are dropped without a word. Idempotent.
  void kill() {
    if (!thread_.joinable()) return;
    io_.stop();
    thread_.join();
    asio::error_code ec;
    acceptor_.close(ec);
    for (auto& s : sessions_) s->sock.close(ec);
  }
  unsigned short port() const { return port_; }

  /// After storing the results of the n-th report from now (1 = the next one), close the
  /// connection without acknowledging: the agent must resend, and we must not store twice.
  void lose_ack_after(int n) {
    std::lock_guard<std::mutex> g(m_);
    lose_ack_after_ = n;
  }
  std::vector<stored> results(const std::string& agent) const {
    std::lock_guard<std::mutex> g(m_);
    auto it = agents_.find(agent);
    return it == agents_.end() ? std::vector<stored>{} : it->second.results;
  }
  std::size_t count(const std::string& agent) const {
    std::lock_guard<std::mutex> g(m_);
    auto it = agents_.find(agent);
    return it == agents_.end() ? 0 : it->second.results.size();
  }
  std::uint64_t dropped(const std::string& agent) const {
    std::lock_guard<std::mutex> g(m_);
    auto it = agents_.find(agent);
    return it == agents_.end() ? 0 : it->second.dropped;
  }
  std::optional<json> hello(const std::string& agent) const {
    std::lock_guard<std::mutex> g(m_);
    auto it = hellos_.find(agent);
    if (it == hellos_.end()) return std::nullopt;
    return it->second;
  }
  std::optional<json> info_reply(std::int64_t id) const {
    std::lock_guard<std::mutex> g(m_);
    auto it = info_replies_.find(id);
    if (it == info_replies_.end()) return std::nullopt;
    return it->second;
  }
  /// Reports received (including resent ones), and results refused as duplicates.
  std::uint64_t reports() const {
    std::lock_guard<std::mutex> g(m_);
    return reports_;
  }
  /// Answer the next hello with `last_seq` n and every report with `ack` n whatever was stored
  /// (a forged or broken central); 0 turns it off.
  void forge_ack(std::uint64_t n) {
    std::lock_guard<std::mutex> g(m_);
    forged_ack_ = n;
  }
  /// The last report received (the whole request), if any.
  std::optional<json> last_report() const {
    std::lock_guard<std::mutex> g(m_);
    return last_report_;
  }
  std::uint64_t duplicates() const {
    std::lock_guard<std::mutex> g(m_);
    return duplicates_;
  }
  /// Send an event line to the agent's connection (if connected).
  void send_event(const std::string& agent, json event) {
    asio::post(io_, [this, agent, event] {
      for (auto& s : sessions_)
        if (s->agent == agent && !s->closed) s->push(event.dump() + "\n");
    });
  }

 private:
  struct agent_store {
    std::string queue_id;
    std::uint64_t last = 0, dropped = 0;
    std::vector<stored> results;
  };
  struct session {
    explicit session(asio::ip::tcp::socket s) : sock(std::move(s)), wake(sock.get_executor()) {}
    asio::ip::tcp::socket sock;
    asio::steady_timer wake;
    std::deque<std::string> out;
    std::string agent;
    bool closed = false;
    void push(std::string line) {
      out.push_back(std::move(line));
      wake.cancel();
    }
    void close() {
      closed = true;
      asio::error_code ec;
      sock.close(ec);
      wake.cancel();
    }
  };

  void load() {
    std::ifstream in(store_path_);
    std::string line;
    while (std::getline(in, line)) {
      auto j = json::parse(line, nullptr, false);
      if (!j.is_object()) continue;  // a torn last line after a kill
      auto& a = agents_[j["agent"].get<std::string>()];
      if (j.contains("dropped")) {
        a.dropped = std::max(a.dropped, j["dropped"].get<std::uint64_t>());
        continue;
      }
      std::string qid = j["queue_id"].get<std::string>();
      if (qid != a.queue_id) a.last = 0;
      a.queue_id = qid;
      auto seq = j["seq"].get<std::uint64_t>();
      a.last = seq;
      a.results.push_back({seq, j["result"]});
    }
  }

  asio::awaitable<void> accept_loop() {
    constexpr auto tup = asio::experimental::as_tuple(asio::use_awaitable);
    while (true) {
      auto [ec, sock] = co_await acceptor_.async_accept(tup);
      if (ec) co_return;
      auto s = std::make_shared<session>(std::move(sock));
      sessions_.push_back(s);
      asio::co_spawn(io_, read_loop(s), asio::detached);
      asio::co_spawn(io_, write_loop(s), asio::detached);
    }
  }

  static asio::awaitable<void> write_loop(std::shared_ptr<session> s) {
    constexpr auto tup = asio::experimental::as_tuple(asio::use_awaitable);
    while (!s->closed) {
      if (s->out.empty()) {
        s->wake.expires_after(std::chrono::hours(1));
        co_await s->wake.async_wait(tup);
        continue;
      }
      auto [ec, n] = co_await asio::async_write(s->sock, asio::buffer(s->out.front()), tup);
      (void)n;
      if (ec) {
        s->close();
        co_return;
      }
      s->out.pop_front();
    }
  }

  asio::awaitable<void> read_loop(std::shared_ptr<session> s) {
    constexpr auto tup = asio::experimental::as_tuple(asio::use_awaitable);
    std::string buf;
    while (!s->closed) {
      auto [ec, n] =
          co_await asio::async_read_until(s->sock, asio::dynamic_buffer(buf, 8u << 20), '\n', tup);
      if (ec) {
        s->close();
        co_return;
      }
      std::string line = buf.substr(0, n - 1);
      buf.erase(0, n);
      handle(*s, line);
    }
  }

  void reply(session& s, json r, const json& req) {
    if (req.contains("seq")) r["seq"] = req["seq"];
    s.push(r.dump() + "\n");
  }

  void handle(session& s, const std::string& line) {
    auto req = json::parse(line, nullptr, false);
    if (!req.is_object() || !req.contains("command")) {
      s.push("{\"ok\":false,\"error\":\"malformed request\"}\n");
      return;
    }
    const std::string cmd = req["command"].get<std::string>();
    std::unique_lock<std::mutex> g(m_);
    if (cmd == "agent_hello") {
      if (!token_.empty() && req.value("token", "") != token_) {
        reply(s, {{"ok", false}, {"error", "wrong token"}}, req);
        return;
      }
      s.agent = req["agent"].get<std::string>();
      hellos_[s.agent] = req;
      auto& a = agents_[s.agent];
      const std::string qid = req["queue_id"].get<std::string>();
      if (qid != a.queue_id) {
        a.queue_id = qid;
        a.last = 0;
      }
      json r{{"ok", true}, {"agent", s.agent}};
      if (tell_last_seq_) r["last_seq"] = forged_ack_ ? forged_ack_ : a.last;
      reply(s, std::move(r), req);
    } else if (cmd == "report") {
      if (s.agent.empty()) {
        reply(s, {{"ok", false}, {"error", "agent_hello first"}}, req);
        return;
      }
      ++reports_;
      last_report_ = req;
      auto& a = agents_[s.agent];
      std::ofstream outf(store_path_, std::ios::app);
      for (auto& r : req["results"]) {
        auto seq = r["seq"].get<std::uint64_t>();
        if (seq <= a.last) {
          ++duplicates_;
          continue;
        }
        a.last = seq;
        a.results.push_back({seq, r});
        outf << json{{"agent", s.agent}, {"queue_id", a.queue_id}, {"seq", seq}, {"result", r}}
                    .dump()
             << "\n";
      }
      auto d = req.value("dropped", std::uint64_t{0});
      if (d > a.dropped) {
        a.dropped = d;
        outf << json{{"agent", s.agent}, {"dropped", d}}.dump() << "\n";
      }
      outf.flush();
      if (lose_ack_after_ > 0 && --lose_ack_after_ == 0) {
        s.close();  // stored, never acknowledged
        return;
      }
      reply(s, {{"ok", true}, {"ack", forged_ack_ ? forged_ack_ : a.last}}, req);
    } else if (cmd == "info_reply") {
      info_replies_[req.value("id", std::int64_t{0})] = req;
      reply(s, {{"ok", true}}, req);
    } else {
      reply(s, {{"ok", false}, {"error", "unknown command " + cmd}}, req);
    }
  }

  std::string store_path_, token_;
  asio::io_context io_;
  asio::ip::tcp::acceptor acceptor_;
  unsigned short port_ = 0;
  std::thread thread_;
  std::vector<std::shared_ptr<session>> sessions_;
  mutable std::mutex m_;
  std::map<std::string, agent_store> agents_;
  std::map<std::string, json> hellos_;
  std::map<std::int64_t, json> info_replies_;
  std::uint64_t reports_ = 0, duplicates_ = 0;
  int lose_ack_after_ = 0;
  bool tell_last_seq_ = true;
  std::uint64_t forged_ack_ = 0;
  std::optional<json> last_report_;
};

}  // namespace sonde::test
