// The central side of agents: reports into the history store, dedupe, live view, dead-man
// switch. See agent_registry.hpp and docs/agents.md.
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "agents/agent_protocol.hpp"
#include "agents/agent_registry.hpp"
#include "core/output.hpp"
#include "core/state.hpp"
#include "history/sink.hpp"

namespace sonde::engine {

using json = nlohmann::json;
using steady = std::chrono::steady_clock;
using wall = std::chrono::system_clock;
namespace fs = std::filesystem;

struct agent_registry::queue_pos {
  std::uint64_t last_seq = 0;  // the last seq stored (durable) for this queue id
  std::uint64_t dropped = 0;   // the agent's dropped count stored with it
};

struct agent_registry::agent_state {
  agent_view view;
  std::map<std::string, queue_pos> queues;  // queue_id -> stored position
  bool legacy_checked = false;              // an old per-agent file was looked for
  std::map<std::string, std::unique_ptr<task_spec>> specs;
  std::map<const task_spec*, std::shared_ptr<const history::task_ident>> idents;
  std::map<std::string, status> last_status;
  std::unique_ptr<task_spec> other_spec, dead_spec;
  std::optional<status> dead_state;  // last state reported by the dead-man switch
  bool retired = false;
  // Store failures are logged at once, then at most every 10 s with the count.
  std::optional<steady::time_point> store_error_said;
  std::uint64_t store_errors_unsaid = 0;
  // The chain of store writes: `busy` while a batch of this agent is in the store; what comes
  // meanwhile (a report of a newer connection, a rewind) waits its turn, in order.
  bool busy = false, stepping = false;
  std::deque<std::function<void()>> waiting;
};

namespace {

bool valid_queue_id(const std::string& q) {
  return valid_agent_queue_id(q);
}

std::string safe_name(const std::string& name) {
  std::string s = name;
  for (auto& c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) c = '_';
  if (s == "." || s == "..") s = "_" + s;
  return s;
}

std::optional<wall::time_point> parse_time(const std::string& t) {
  return parse_agent_time(t);
}

status parse_status(const json& j) {
  if (!j.is_string()) return status::unknown;
  const auto& s = j.get_ref<const std::string&>();
  if (s == "ok") return status::ok;
  if (s == "warning") return status::warning;
  if (s == "critical") return status::critical;
  return status::unknown;
}

reason parse_reason(const json& j) {
  if (!j.is_string()) return reason::none;
  const auto& s = j.get_ref<const std::string&>();
  for (int i = 1; i <= static_cast<int>(reason::error); ++i)
    if (to_string(static_cast<reason>(i)) == s) return static_cast<reason>(i);
  return reason::error;
}

std::string str_field(const json& j, const char* key, const char* fallback = "") {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string(fallback);
}

// The fixed prefix of a result line: {"queue_id":"Q","seq":N,"dropped":D,"result":...}
struct line_head {
  std::string queue_id;
  std::uint64_t seq = 0, dropped = 0;
};
std::optional<line_head> parse_head(std::string_view l) {
  constexpr std::string_view p1 = "{\"queue_id\":\"",
                             p2 = "\",\"seq\":", p3 = ",\"dropped\":", p4 = ",\"result\":";
  if (l.size() < 2 || l.substr(0, p1.size()) != p1 || l.back() != '}') return std::nullopt;
  line_head h;
  auto q_end = l.find('"', p1.size());
  if (q_end == std::string_view::npos) return std::nullopt;
  h.queue_id = std::string(l.substr(p1.size(), q_end - p1.size()));
  std::size_t i = q_end;
  auto number = [&](std::string_view prefix, std::uint64_t& out) {
    if (l.substr(i, prefix.size()) != prefix) return false;
    i += prefix.size();
    std::size_t start = i;
    out = 0;
    while (i < l.size() && std::isdigit(static_cast<unsigned char>(l[i])) && i - start < 20)
      out = out * 10 + static_cast<std::uint64_t>(l[i++] - '0');
    return i > start;
  };
  if (!number(p2, h.seq) || !number(p3, h.dropped)) return std::nullopt;
  if (l.substr(i, p4.size()) != p4) return std::nullopt;
  if (!valid_queue_id(h.queue_id) || h.seq == 0) return std::nullopt;
  return h;
}

std::string fmt_seconds(double s) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1fs", s);
  return b;
}

}  // namespace

agent_registry::agent_registry(agent_registry_options opts, warn_fn warn)
    : opts_(std::move(opts)), warn_(std::move(warn)) {
  keys_path_ = !opts_.keys_file.empty() ? opts_.keys_file
                                        : (fs::path(opts_.state_dir) / "agent-keys").string();
  if (opts_.window == 0) opts_.window = 1;
  if (opts_.dead_intervals < 1) opts_.dead_intervals = 1;
  // Agents of old per-agent files are listed (offline) until they say hello; their queue
  // positions are imported then (agents the store knows are added by store_ready).
  std::error_code ec;
  fs::path dir = fs::path(opts_.state_dir) / "agents";
  if (opts_.state_dir.empty()) return;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    auto p = it->path();
    if (p.extension() != ".jsonl") continue;
    auto a = std::make_unique<agent_state>();
    a->view.name = p.stem().string();
    std::error_code sec;
    auto mt = fs::last_write_time(p, sec);
    if (!sec)
      a->view.last_seen_wall = std::chrono::time_point_cast<wall::duration>(
          mt - fs::file_time_type::clock::now() + wall::now());
    agents_.emplace(a->view.name, std::move(a));
  }
}

agent_registry::~agent_registry() = default;

tl::expected<void, std::string> agent_registry::check_name(const std::string& name) {
  return check_agent_name(name);
}

std::string agent_registry::legacy_path(const std::string& name) const {
  return (fs::path(opts_.state_dir) / "agents" / (safe_name(name) + ".jsonl")).string();
}

const agent_view* agent_registry::find(const std::string& name) const {
  auto it = agents_.find(name);
  return it == agents_.end() ? nullptr : &it->second->view;
}

agent_registry::agent_state& agent_registry::state_of(const std::string& name) {
  auto& slot = agents_[name];
  if (!slot) {
    slot = std::make_unique<agent_state>();
    slot->view.name = name;
  }
  return *slot;
}

void agent_registry::store_ready(
    tl::expected<std::vector<history::agent_position>, std::string> positions) {
  if (!positions) {
    phase_ = store_phase::refused;
    refused_reason_ = positions.error();
    if (warn_)
      warn_("agents cannot report to this central: its history store is refused (" +
            refused_reason_ + ")");
    return;
  }
  phase_ = store_phase::ready;
  for (auto& p : *positions) {
    if (!check_name(p.agent) || !valid_queue_id(p.queue_id)) continue;
    auto& a = state_of(p.agent);
    a.queues[p.queue_id] = {p.last_seq, p.dropped};
    a.view.dropped = std::max(a.view.dropped, p.dropped);
    if (a.view.queue_id.empty()) {
      a.view.queue_id = p.queue_id;
      a.view.last_seq = p.last_seq;
    }
  }
}

std::string agent_registry::store_state() const {
  switch (phase_) {
    case store_phase::starting:
      return "starting";
    case store_phase::ready:
      return "ready";
    case store_phase::refused:
      return "refused";
  }
  return "starting";
}

std::string agent_registry::store_unusable() const {
  if (!opts_.store) return "the central has no history store; agents' results cannot be stored";
  if (phase_ == store_phase::starting) {
    // Its first open failed (it retries every few seconds): say why.
    if (opts_.store->state() == "failing") {
      auto e = opts_.store->status()["error"];
      return "the central's history store cannot open its database (" +
             (e.is_string() ? e.get<std::string>() : std::string("failing")) + "); try again";
    }
    return "the central's history store is starting; try again";
  }
  if (phase_ == store_phase::refused)
    return "the central has no history store (" + refused_reason_ +
           "); agents' results cannot be stored until its operator fixes it";
  return "";
}

// An old per-agent file (`<name>.jsonl.1`, then `<name>.jsonl`): the last seq per queue_id, the
// agent's dropped count and the gaps. Read only: the files are no longer written.
tl::expected<void, std::string> agent_registry::import_legacy(agent_state& a) {
  const std::string base = legacy_path(a.view.name);
  std::map<std::string, std::uint64_t> queues;
  std::uint64_t dropped = 0, lost = 0;
  std::string last_qid, files;
  for (const std::string& path : {base + ".1", base}) {
    std::error_code ec;
    if (!fs::exists(path, ec)) continue;
    std::ifstream in(path, std::ios::binary);
    if (!in) return tl::unexpected("cannot read " + path + ": " + std::strerror(errno));
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    files += (files.empty() ? "" : " and ") + path;
    if (!data.empty() && data.back() != '\n') {
      std::size_t good_end = data.rfind('\n');
      good_end = good_end == std::string::npos ? 0 : good_end + 1;
      std::size_t line_no =
          static_cast<std::size_t>(std::count(
              data.begin(), data.begin() + static_cast<std::ptrdiff_t>(good_end), '\n')) +
          1;
      if (warn_)
        warn_(path + ":" + std::to_string(line_no) + ": torn last line (" +
              std::to_string(data.size() - good_end) +
              " bytes, written when the engine stopped); ignored");
      data.resize(good_end);
    }
    std::size_t pos = 0, line_no = 0;
    while (pos < data.size()) {
      auto nl = data.find('\n', pos);
      std::string_view l(data.data() + pos, nl - pos);
      pos = nl + 1;
      ++line_no;
      if (l.empty()) continue;
      if (auto h = parse_head(l)) {
        auto& last = queues[h->queue_id];
        if (last > 0 && h->seq > last + 1) lost += h->seq - last - 1;
        last = std::max(last, h->seq);
        dropped = std::max(dropped, h->dropped);
        last_qid = h->queue_id;
        continue;
      }
      if (l.substr(0, 9) == "{\"state\":") {
        auto j = json::parse(l, nullptr, false);
        if (j.is_object() && j["state"].is_object()) {
          auto& st = j["state"];
          // A state line sets the last seq of each queue it names: it starts a rotated file, or
          // records a rewind (the agent's queue had written less than the store held).
          if (st.contains("queues") && st["queues"].is_object())
            for (auto& [q, v] : st["queues"].items())
              if (v.is_number_unsigned() && valid_queue_id(q)) {
                queues[q] = v.get<std::uint64_t>();
                last_qid = q;
              }
          if (auto qi = st.find("queue_id");
              qi != st.end() && qi->is_string() && valid_queue_id(qi->get<std::string>()))
            last_qid = qi->get<std::string>();
          if (auto lo = st.find("lost"); lo != st.end() && lo->is_number_unsigned())
            lost = std::max(lost, lo->get<std::uint64_t>());
          if (st.contains("dropped") && st["dropped"].is_number_unsigned())
            dropped = std::max(dropped, st["dropped"].get<std::uint64_t>());
          continue;
        }
      }
      if (warn_) warn_(path + ":" + std::to_string(line_no) + ": not a result line; ignored");
    }
  }
  if (queues.empty()) return {};
  auto& v = a.view;
  v.dropped = std::max(v.dropped, dropped);
  v.lost = std::max(v.lost, lost);
  std::string said;
  for (auto& [q, last] : queues) {
    a.queues[q] = {last, dropped};
    said += (said.empty() ? "" : ", ") + q + " up to seq " + std::to_string(last);
    // Recorded in the store, so the next start finds them there.
    store_position(a, q, last, dropped, "its imported queue position");
  }
  if (!last_qid.empty()) {
    v.queue_id = last_qid;
    v.last_seq = a.queues[last_qid].last_seq;
  }
  if (warn_)
    warn_("agent " + v.name + ": queue positions imported from " + files + " (" + said +
          "); the history store keeps them from now on and the file is no longer written");
  return {};
}
tl::expected<void, std::string> agent_registry::refresh_keys() {
  struct stat st {};
  if (::stat(keys_path_.c_str(), &st) != 0) {
    if (errno != ENOENT) {
      keys_error_ = "cannot read " + keys_path_ + ": " + std::strerror(errno);
      return tl::unexpected(keys_error_);
    }
    keys_.clear();
    keys_error_.clear();
    keys_stamp_ = {};
    return {};
  }
  key_file_stamp stamp{
      static_cast<std::uint64_t>(st.st_ino), static_cast<std::uint64_t>(st.st_size),
      static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec, true};
  if (stamp == keys_stamp_) {
    if (!keys_error_.empty()) return tl::unexpected(keys_error_);
    return {};
  }
  keys_stamp_ = stamp;
  keys_.clear();
  std::string text;
  if (st.st_size > (1 << 20)) {
    keys_error_ = keys_path_ + ": larger than 1 MiB; not an agent keys file";
  } else {
    std::ifstream in(keys_path_, std::ios::binary);
    text.assign((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in && !in.eof()) {
      keys_error_ = "cannot read " + keys_path_ + ": " + std::strerror(errno);
    } else if (auto k = parse_agent_keys(text, keys_path_); !k) {
      keys_error_ = k.error();
    } else {
      keys_ = std::move(*k);
      keys_error_.clear();
    }
  }
  if (!keys_error_.empty()) {
    if (warn_) warn_(keys_error_ + "; every agent_hello is refused until the file is fixed");
    return tl::unexpected(keys_error_);
  }
  if ((st.st_mode & 0077) != 0 && warn_)
    warn_(keys_path_ + " is accessible to other users; it holds the agents' keys (chmod 600 " +
          keys_path_ + ")");
  if (warn_)
    warn_(keys_path_ + ": " + std::to_string(keys_.size()) + " agent key" +
          (keys_.size() == 1 ? "" : "s") + " loaded");
  return {};
}

tl::expected<bool, std::string> agent_registry::authenticate(const std::string& name,
                                                             const std::optional<std::string>& key,
                                                             bool loopback) {
  if (auto r = refresh_keys(); !r)
    return tl::unexpected("the central's agent keys file is unusable (" + r.error() +
                          "); ask its operator to fix it");
  auto it = keys_.find(name);
  if (it != keys_.end()) {
    if (!key)
      return tl::unexpected("agent '" + name +
                            "' must present its key (the central lists one for it): start the "
                            "agent with --key-file");
    if (!agent_key_equal(*key, it->second))
      return tl::unexpected("wrong key for agent '" + name + "'");
    return true;
  }
  if (!loopback)
    return tl::unexpected("agent '" + name +
                          "' has no key on the central; agents connecting "
                          "from beyond loopback need one: add the line '" +
                          name + " <key>' to " + keys_path_ +
                          " and start the agent with --key-file");
  return false;
}

tl::expected<std::uint64_t, std::string> agent_registry::hello(const agent_hello& h,
                                                               const std::string& peer,
                                                               bool loopback,
                                                               steady::time_point now) {
  if (auto ok = check_name(h.agent); !ok) return tl::unexpected(ok.error());
  if (!valid_queue_id(h.queue_id))
    return tl::unexpected(std::string("\"queue_id\" must be 1 to 64 characters of [A-Za-z0-9._-]"));
  if (h.next_seq == 0 || h.next_seq > agent_limits::max_seq + 1)
    return tl::unexpected("\"next_seq\" " + std::to_string(h.next_seq) +
                          " is beyond what any agent queue gives out (at most 2^53)");
  if (h.dropped > h.next_seq - 1)
    return tl::unexpected("\"dropped\" " + std::to_string(h.dropped) +
                          " is more than the queue's numbers given out (" +
                          std::to_string(h.next_seq - 1) + ")");
  if (auto f = check_agent_facts(h.facts); !f) return tl::unexpected(f.error());
  auto auth = authenticate(h.agent, h.key, loopback);
  if (!auth) {
    if (warn_) warn_("agent_hello from " + peer + " refused: " + auth.error());
    return tl::unexpected(auth.error());
  }
  // The last stored seq comes from the store: no answer before it is open.
  if (auto why = store_unusable(); !why.empty()) return tl::unexpected(why);
  auto& a = state_of(h.agent);
  if (!a.legacy_checked) {
    // Upgrading from the per-agent files: the store knows nothing of this agent yet.
    if (a.queues.empty())
      if (auto r = import_legacy(a); !r) return tl::unexpected(r.error());
    a.legacy_checked = true;
  }
  auto& v = a.view;
  bool was_critical = v.critical;
  v.seen_live = true;
  v.connected = true;
  v.keyed = *auth;
  a.retired = false;
  v.peer = peer;
  v.facts = h.facts;
  v.interval = std::max(h.interval, std::chrono::milliseconds(100));
  v.queue_id = h.queue_id;
  v.next_seq = h.next_seq;
  v.queued = h.queued;
  v.problem = h.problem;
  v.version = h.version;
  v.dropped = std::max(v.dropped, h.dropped);
  auto known = a.queues.find(h.queue_id);
  v.last_seq = known != a.queues.end() ? known->second.last_seq : 0;
  if (v.last_seq >= h.next_seq) {
    // The store holds numbers this queue never wrote: results forged in its name, or the
    // agent's state directory restored from an older copy. Continue from what the agent has,
    // so that its results are stored again rather than skipped as duplicates for ever.
    std::uint64_t held = v.last_seq;
    v.last_seq = h.next_seq - 1;
    auto& pos = a.queues[h.queue_id];
    pos.last_seq = v.last_seq;
    if (warn_)
      warn_("agent " + h.agent + ": the store holds results up to seq " + std::to_string(held) +
            " of queue " + h.queue_id + " but the agent's queue has written only up to " +
            std::to_string(v.last_seq) +
            " (results it never sent: forged, or its state restored from an older copy); "
            "continuing from " +
            std::to_string(v.last_seq));
    store_position(a, h.queue_id, v.last_seq, pos.dropped, "its rewound queue position");
  }
  v.last_seen = now;
  v.last_seen_wall = v.last_hello_wall = wall::now();
  if (was_critical) {
    v.critical = false;
    dead_man_record(a, false, now);
  }
  return v.last_seq;
}

void agent_registry::store_failed(agent_state& a, const std::string& error,
                                  steady::time_point now) {
  auto& v = a.view;
  ++v.store_failures;
  ++store_failures_;
  v.store_error = error;
  last_store_error_ = "agent " + v.name + ": " + error;
  if (!a.store_error_said || now - *a.store_error_said >= std::chrono::seconds(10)) {
    if (warn_)
      warn_("agent " + v.name + ": cannot store its results: " + error + " (" +
            std::to_string(a.store_errors_unsaid) +
            " more failure(s) since the last warning; nothing of them is acknowledged: the agent "
            "keeps them queued and retries)");
    a.store_error_said = now;
    a.store_errors_unsaid = 0;
  } else {
    ++a.store_errors_unsaid;
  }
}

void agent_registry::store_worked(agent_state& a) {
  auto& v = a.view;
  if (v.store_error.empty()) return;
  if (warn_) warn_("agent " + v.name + ": its results are stored again");
  v.store_error.clear();
  a.store_error_said.reset();
  a.store_errors_unsaid = 0;
}

void agent_registry::enqueue(agent_state& a, std::function<void()> step) {
  a.waiting.push_back(std::move(step));
  next_step(a);
}

void agent_registry::next_step(agent_state& a) {
  // A step either answers at once or hands a batch to the store (busy until its callback).
  if (a.stepping) return;  // the loop below is already running (a step enqueued another)
  a.stepping = true;
  while (!a.busy && !a.waiting.empty()) {
    auto step = std::move(a.waiting.front());
    a.waiting.pop_front();
    step();
  }
  a.stepping = false;
}

void agent_registry::store_position(agent_state& a, const std::string& queue_id,
                                    std::uint64_t last_seq, std::uint64_t dropped,
                                    std::string why) {
  enqueue(a, [this, &a, queue_id, last_seq, dropped, why = std::move(why)] {
    history::agent_batch b;
    b.agent = a.view.name;
    b.queue_id = queue_id;
    b.last_seq = last_seq;
    b.dropped = dropped;
    a.busy = true;
    std::weak_ptr<int> alive = alive_;
    opts_.store->add_agent_report(std::move(b), [this, alive, &a, queue_id, last_seq, dropped,
                                                 why](tl::expected<void, std::string> r) {
      if (alive.expired()) return;
      a.busy = false;
      if (r) {
        a.queues[queue_id] = {last_seq, dropped};
      } else if (warn_) {
        warn_("agent " + a.view.name + ": cannot record " + why + " (queue " + queue_id + ", seq " +
              std::to_string(last_seq) + ") in the history store: " + r.error());
      }
      next_step(a);
    });
  });
}

void agent_registry::report(const std::string& name, agent_report rep, report_done done,
                            steady::time_point now) {
  auto fail = [&done](std::string e) { done(tl::unexpected(std::move(e))); };
  auto it = agents_.find(name);
  if (it == agents_.end() || !it->second->view.seen_live) return fail("agent_hello first");
  auto& a = *it->second;
  auto& v = a.view;
  if (rep.queue_id != v.queue_id) return fail("\"queue_id\" differs from the one in agent_hello");
  if (rep.next_seq > agent_limits::max_seq + 1)
    return fail("\"next_seq\" " + std::to_string(rep.next_seq) +
                " is beyond what any agent queue gives out (at most 2^53)");
  if (rep.next_seq < v.next_seq)
    return fail("\"next_seq\" " + std::to_string(rep.next_seq) + " is below the " +
                std::to_string(v.next_seq) +
                " this agent stated before (a queue's write position only grows)");
  if (rep.dropped > rep.next_seq - 1)
    return fail("\"dropped\" " + std::to_string(rep.dropped) +
                " is more than the queue's numbers given out (" + std::to_string(rep.next_seq - 1) +
                ")");
  if (auto c = check_agent_results(rep.results, rep.next_seq); !c) return fail(c.error());
  if (auto why = store_unusable(); !why.empty()) return fail(why);
  // The agent is alive, whether or not its results can be stored.
  v.last_seen = now;
  v.last_seen_wall = wall::now();
  v.connected = true;
  v.next_seq = rep.next_seq;
  v.queued = rep.queued;
  v.problem = rep.problem;
  if (v.critical) {
    v.critical = false;
    dead_man_record(a, false, now);
  }
  if (!a.busy && a.waiting.empty()) return store_report(a, std::move(rep), std::move(done), now);
  // Another report of this agent is being stored (its old connection's): this one is
  // deduplicated against the position that one leaves, once it is durable or failed.
  enqueue(a, [this, &a, rep = std::move(rep), done = std::move(done), now]() mutable {
    store_report(a, std::move(rep), std::move(done), now);
  });
}

void agent_registry::store_report(agent_state& a, agent_report rep, report_done done,
                                  steady::time_point now) {
  auto& v = a.view;
  const queue_pos pos = a.queues[rep.queue_id];
  std::uint64_t last = pos.last_seq, lost = 0, dups = 0;
  history::agent_batch b;
  b.agent = v.name;
  b.queue_id = rep.queue_id;
  b.dropped = std::max(pos.dropped, rep.dropped);
  std::vector<json> accepted;
  for (json& r : rep.results) {
    auto seq = r["seq"].get<std::uint64_t>();
    if (seq <= last) {
      ++dups;
      continue;
    }
    // A gap after a stored result: numbers the agent gave out and never delivered (dropped at
    // the bound, lost to a damaged file or a full disk).
    if (last > 0 && seq > last + 1) lost += seq - last - 1;
    last = seq;
    task_spec* spec = spec_for(a, r);
    auto row = history::to_row(record_of(r, spec), ident_for(a, spec), false);
    row.seq = seq;
    b.rows.push_back(std::move(row));
    accepted.push_back(std::move(r));
  }
  b.last_seq = last;
  const std::uint64_t dropped = b.dropped;
  v.duplicates += dups;
  if (b.rows.empty() && b.dropped == pos.dropped) {
    // Nothing new: everything in it is stored already.
    v.dropped = std::max(v.dropped, rep.dropped);
    done(pos.last_seq);
    return;
  }
  a.busy = true;
  std::weak_ptr<int> alive = alive_;
  opts_.store->add_agent_report(std::move(b),
                                [this, alive, &a, queue_id = rep.queue_id, last, dropped, lost,
                                 accepted = std::move(accepted), done = std::move(done),
                                 now](tl::expected<void, std::string> r) mutable {
                                  if (alive.expired()) return;
                                  a.busy = false;
                                  auto& v = a.view;
                                  if (!r) {
                                    // Nothing of it was stored and nothing is acknowledged: the
                                    // position stays where it was, and the agent sends these
                                    // results again.
                                    store_failed(a, r.error(), now);
                                    done(tl::unexpected(r.error()));
                                  } else {
                                    store_worked(a);
                                    a.queues[queue_id] = {last, dropped};
                                    if (queue_id == v.queue_id) v.last_seq = last;
                                    v.stored += accepted.size();
                                    v.lost += lost;
                                    v.dropped = std::max(v.dropped, dropped);
                                    for (const json& res : accepted) deliver(a, res);
                                    done(last);
                                  }
                                  next_step(a);
                                });
}

task_spec* agent_registry::spec_for(agent_state& a, const json& r) {
  auto& v = a.view;
  std::string full = v.name + "/" + str_field(r, "task", "?");
  if (auto s = a.specs.find(full); s != a.specs.end()) return s->second.get();
  if (a.specs.size() < opts_.max_tasks_per_agent) {
    auto ts = std::make_unique<task_spec>();
    ts->name = full;
    ts->type = str_field(r, "type", "?");
    ts->target = str_field(r, "target");
    ts->interval = std::chrono::duration_cast<duration>(v.interval);
    ts->tags["agent"] = v.name;
    auto* spec = ts.get();
    a.specs.emplace(full, std::move(ts));
    return spec;
  }
  if (!a.other_spec) {
    a.other_spec = std::make_unique<task_spec>();
    a.other_spec->name = v.name + "/(other)";
    a.other_spec->type = "agent";
    a.other_spec->tags["agent"] = v.name;
  }
  return a.other_spec.get();
}

std::shared_ptr<const history::task_ident> agent_registry::ident_for(agent_state& a,
                                                                     const task_spec* spec) {
  auto& ident = a.idents[spec];
  if (!ident || ident->type != spec->type || ident->target != spec->target) {
    auto t = std::make_shared<history::task_ident>();
    t->name = spec->name;
    t->type = spec->type;
    t->target = spec->target;
    ident = std::move(t);
  }
  return ident;
}

result_record agent_registry::record_of(const json& r, task_spec* spec) const {
  result_record rec;
  rec.time = parse_time(str_field(r, "time")).value_or(wall::now());
  rec.task = spec;
  rec.state = parse_status(r.contains("status") ? r["status"] : json());
  rec.why = parse_reason(r.contains("reason") ? r["reason"] : json());
  if (auto l = r.find("latency_ms"); l != r.end() && l->is_number())
    rec.latency_ms = l->get<double>();
  rec.message = str_field(r, "message");
  if (auto m = r.find("metrics"); m != r.end() && m->is_object())
    for (auto& [k, val] : m->items())
      if (val.is_number()) rec.metrics.push_back({k, val.get<double>()});
  return rec;
}

void agent_registry::deliver(agent_state& a, const json& r) {
  auto& v = a.view;
  json copy = r;
  copy["agent"] = v.name;
  if (str_field(r, "type", "?") == "system" && r.contains("metrics") && r["metrics"].is_object())
    v.latest_system = r["metrics"];
  if (auto t = parse_time(str_field(r, "time"))) v.last_result_time = t;
  v.window.push_back(std::move(copy));
  while (v.window.size() > opts_.window) v.window.pop_front();
  if (!on_result_) return;
  task_spec* spec = spec_for(a, r);
  result_record rec = record_of(r, spec);
  if (auto p = a.last_status.find(spec->name); p != a.last_status.end() && p->second != rec.state)
    rec.previous = p->second;
  a.last_status[spec->name] = rec.state;
  on_result_(rec);
}

void agent_registry::dead_man_record(agent_state& a, bool critical, steady::time_point now) {
  auto& v = a.view;
  status st = critical ? status::critical : status::ok;
  std::optional<status> previous = a.dead_state;
  if (!previous && !critical) return;  // never alarmed: nothing to recover from
  a.dead_state = st;
  if (!on_result_ && !opts_.store) return;
  if (!a.dead_spec) {
    a.dead_spec = std::make_unique<task_spec>();
    a.dead_spec->name = "agent:" + v.name;
    a.dead_spec->type = "agent";
    a.dead_spec->tags["agent"] = v.name;
  }
  a.dead_spec->target = v.peer;
  a.dead_spec->interval = std::chrono::duration_cast<duration>(v.interval);
  double silent = std::chrono::duration<double>(now - v.last_seen).count();
  result_record rec;
  rec.time = wall::now();
  rec.task = a.dead_spec.get();
  rec.state = st;
  rec.why = critical ? reason::timeout : reason::none;
  rec.metrics.push_back({"silent_s", silent});
  std::string iv = format_duration_exact(std::chrono::duration_cast<duration>(v.interval));
  rec.message = critical ? "agent " + v.name + " silent for " + fmt_seconds(silent) + " (" +
                               std::to_string(opts_.dead_intervals) + " intervals of " + iv + ")"
                         : "agent " + v.name + " reporting again";
  if (previous && *previous != st) rec.previous = previous;
  if (!previous && critical) rec.previous = status::ok;  // it was fine until now
  // Into history like any result (not through a report: it has no seq).
  if (opts_.store) opts_.store->add_result(history::to_row(rec, ident_for(a, rec.task), false));
  if (on_result_) on_result_(rec);
}

std::size_t agent_registry::sweep(steady::time_point now) {
  std::size_t changed = 0;
  for (auto& [name, ap] : agents_) {
    auto& a = *ap;
    auto& v = a.view;
    if (!v.seen_live || a.retired || v.critical) continue;
    if (now - v.last_seen >= v.interval * opts_.dead_intervals) {
      v.critical = true;
      dead_man_record(a, true, now);
      ++changed;
    }
  }
  return changed;
}

tl::expected<void, std::string> agent_registry::info_reply(const std::string& name,
                                                           const json& facts) {
  auto it = agents_.find(name);
  if (it == agents_.end()) return tl::unexpected("no agent named '" + name + "'");
  if (auto c = check_agent_facts(facts); !c) return c;
  it->second->view.facts = facts;
  return {};
}

void agent_registry::disconnected(const std::string& name) {
  auto it = agents_.find(name);
  if (it != agents_.end()) it->second->view.connected = false;
}

void agent_registry::retired(const std::string& name) {
  auto it = agents_.find(name);
  if (it == agents_.end()) return;
  it->second->retired = true;
  it->second->view.connected = false;
  it->second->view.critical = false;
}

namespace {
json num_or_null(const json& m, const char* key) {
  if (!m.is_object()) return nullptr;
  auto it = m.find(key);
  return it != m.end() && it->is_number() ? *it : json(nullptr);
}
}  // namespace

json agent_registry::table(steady::time_point now) const {
  json rows = json::array();
  for (const auto& [name, ap] : agents_) {
    const auto& a = *ap;
    const auto& v = a.view;
    const auto& m = v.latest_system;
    json cores = json::array();
    if (m.is_object()) {
      std::vector<std::pair<int, double>> c;
      for (auto& [k, val] : m.items()) {
        if (k.size() < 5 || k.compare(0, 4, "cpu.") != 0 || !val.is_number()) continue;
        bool digits = std::all_of(k.begin() + 4, k.end(),
                                  [](unsigned char ch) { return std::isdigit(ch) != 0; });
        if (digits) c.emplace_back(std::stoi(k.substr(4)), val.get<double>());
      }
      std::sort(c.begin(), c.end());
      for (auto& [i, val] : c) cores.push_back(val);
    }
    std::string state = a.retired      ? "disconnected"
                        : !v.seen_live ? "offline"
                        : v.critical   ? "critical"
                                       : "ok";
    json row{{"agent", name},
             {"address", v.peer},
             {"connected", v.connected},
             {"state", state},
             {"interval_ms", v.interval.count()},
             {"queue_id", v.queue_id},
             {"last_seq", v.last_seq},
             {"dropped", v.dropped},
             {"stored", v.stored},
             {"duplicates", v.duplicates},
             {"lost", v.lost},
             {"next_seq", v.next_seq},
             {"queued", v.queued},
             {"queue_problem", v.problem.empty() ? json() : json(v.problem)},
             {"store_error", v.store_error.empty() ? json() : json(v.store_error)},
             {"store_failures", v.store_failures},
             {"keyed", v.keyed},
             {"cpu", num_or_null(m, "cpu.total")},
             {"cpus", std::move(cores)},
             {"mem_used", num_or_null(m, "mem.used")},
             {"mem_total", num_or_null(m, "mem.total")},
             {"load", json::array({num_or_null(m, "load.1"), num_or_null(m, "load.5"),
                                   num_or_null(m, "load.15")})}};
    row["last_seen"] = v.last_seen_wall ? json(format_time_rfc3339(*v.last_seen_wall, 3)) : json();
    row["last_seen_s"] =
        v.seen_live ? json(std::chrono::duration<double>(now - v.last_seen).count()) : json();
    row["last_result"] =
        v.last_result_time ? json(format_time_rfc3339(*v.last_result_time, 3)) : json();
    if (v.facts.is_object()) {
      row["os"] = str_field(v.facts, "os");
      row["hostname"] = str_field(v.facts, "hostname");
    }
    rows.push_back(std::move(row));
  }
  return {{"agents", std::move(rows)}};
}

json agent_registry::status_json() const {
  json failing = json::array();
  std::size_t connected = 0;
  for (const auto& [name, ap] : agents_) {
    connected += ap->view.connected;
    if (!ap->view.store_error.empty()) failing.push_back(name);
  }
  return {{"agents", agents_.size()},
          {"connected", connected},
          {"store", opts_.store ? json(opts_.store->path()) : json()},
          {"store_state", store_state()},
          {"store_failures", store_failures_},
          {"store_failing", std::move(failing)},
          {"store_error", last_store_error_.empty() ? json() : json(last_store_error_)},
          {"keys_file", keys_path_},
          {"keys", keys_.size()},
          {"keys_error", keys_error_.empty() ? json() : json(keys_error_)}};
}

json agent_registry::info(const std::string& name) const {
  auto it = agents_.find(name);
  if (it == agents_.end()) return nullptr;
  const auto& v = it->second->view;
  json f = v.facts.is_object() ? v.facts : json::object();
  if (!f.contains("name")) f["name"] = name;
  if (!f.contains("ip")) {
    // The agent's address as the central sees it (host part of the peer).
    std::string host = v.peer;
    if (auto c = host.rfind(':'); c != std::string::npos) host = host.substr(0, c);
    if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
    f["ip"] = host;
  }
  return f;
}

json agent_registry::recent(const std::string& name) const {
  auto it = agents_.find(name);
  json out = json::array();
  if (it != agents_.end())
    for (const auto& r : it->second->view.window) out.push_back(r);
  return out;
}

}  // namespace sonde::engine
