// The central side of agents: store, dedupe, live view, dead-man switch. See
// agent_registry.hpp and docs/agents.md.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

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
#include "core/files.hpp"
#include "core/output.hpp"
#include "core/state.hpp"

namespace sonde::engine {

using json = nlohmann::json;
using steady = std::chrono::steady_clock;
using wall = std::chrono::system_clock;
namespace fs = std::filesystem;

struct agent_registry::agent_state {
  agent_view view;
  std::string path;
  std::uint64_t file_bytes = 0;
  std::map<std::string, std::uint64_t> queues;  // queue_id -> last stored seq
  std::map<std::string, std::unique_ptr<task_spec>> specs;
  std::map<std::string, status> last_status;
  std::unique_ptr<task_spec> other_spec, dead_spec;
  std::optional<status> dead_state;  // last state reported by the dead-man switch
  bool retired = false;
  // Store failures are logged at once, then at most every 10 s with the count.
  std::optional<steady::time_point> store_error_said;
  std::uint64_t store_errors_unsaid = 0;
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
  // Agents stored by an earlier run are listed (offline) until they say hello; their stores
  // are read then.
  std::error_code ec;
  fs::path dir = fs::path(opts_.state_dir) / "agents";
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    auto p = it->path();
    if (p.extension() != ".jsonl") continue;
    auto a = std::make_unique<agent_state>();
    a->view.name = p.stem().string();
    a->path = p.string();
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

std::string agent_registry::store_path(const std::string& name) const {
  return (fs::path(opts_.state_dir) / "agents" / (safe_name(name) + ".jsonl")).string();
}

const agent_view* agent_registry::find(const std::string& name) const {
  auto it = agents_.find(name);
  return it == agents_.end() ? nullptr : &it->second->view;
}

// Read the store: the last seq per queue_id, the agent's dropped count, the recent window.
agent_registry::agent_state* agent_registry::load(const std::string& name, std::string& error) {
  auto& slot = agents_[name];
  if (!slot) {
    slot = std::make_unique<agent_state>();
    slot->view.name = name;
  }
  auto& a = *slot;
  a.path = store_path(name);
  a.queues.clear();
  a.view.window.clear();
  std::error_code ec;
  fs::create_directories(fs::path(a.path).parent_path(), ec);
  if (ec) {
    error = "cannot create " + fs::path(a.path).parent_path().string() + ": " + ec.message();
    return nullptr;
  }
  std::ifstream in(a.path, std::ios::binary);
  if (!in && fs::exists(a.path, ec)) {
    error = "cannot read " + a.path + ": " + std::strerror(errno);
    return nullptr;
  }
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::size_t good_end = data.size();
  if (!data.empty() && data.back() != '\n') {
    good_end = data.rfind('\n');
    good_end = good_end == std::string::npos ? 0 : good_end + 1;
    std::size_t line_no =
        static_cast<std::size_t>(
            std::count(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(good_end), '\n')) +
        1;
    if (warn_)
      warn_(a.path + ":" + std::to_string(line_no) + ": torn last line (" +
            std::to_string(data.size() - good_end) +
            " bytes, written when the engine stopped); "
            "ignored and cut off");
    if (::truncate(a.path.c_str(), static_cast<off_t>(good_end)) != 0 && warn_)
      warn_("cannot truncate " + a.path + ": " + std::strerror(errno));
    data.resize(good_end);
  }
  a.file_bytes = data.size();
  std::vector<std::string_view> recent;  // the last `window` result lines
  std::size_t pos = 0, line_no = 0;
  std::string last_qid;
  while (pos < data.size()) {
    auto nl = data.find('\n', pos);
    std::string_view l(data.data() + pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    if (l.empty()) continue;
    if (auto h = parse_head(l)) {
      auto& last = a.queues[h->queue_id];
      if (last > 0 && h->seq > last + 1) a.view.lost += h->seq - last - 1;
      last = std::max(last, h->seq);
      a.view.dropped = std::max(a.view.dropped, h->dropped);
      last_qid = h->queue_id;
      recent.push_back(l);
      if (recent.size() > opts_.window) recent.erase(recent.begin());
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
              a.queues[q] = v.get<std::uint64_t>();
              last_qid = q;
            }
        if (auto qi = st.find("queue_id");
            qi != st.end() && qi->is_string() && valid_queue_id(qi->get<std::string>()))
          last_qid = qi->get<std::string>();
        if (auto lo = st.find("lost"); lo != st.end() && lo->is_number_unsigned())
          a.view.lost = std::max(a.view.lost, lo->get<std::uint64_t>());
        if (st.contains("dropped") && st["dropped"].is_number_unsigned())
          a.view.dropped = std::max(a.view.dropped, st["dropped"].get<std::uint64_t>());
        continue;
      }
    }
    if (warn_) warn_(a.path + ":" + std::to_string(line_no) + ": not a result line; ignored");
  }
  for (auto l : recent) {
    auto j = json::parse(l, nullptr, false);
    auto ri = j.is_object() ? j.find("result") : j.end();
    if (!j.is_object() || ri == j.end() || !check_agent_result(*ri, "result")) {
      if (warn_) warn_(a.path + ": a recent result line is not a valid result; ignored");
      continue;
    }
    json r = *ri;
    r["agent"] = name;
    if (r.value("type", "") == "system" && r["metrics"].is_object())
      a.view.latest_system = r["metrics"];
    if (auto t = parse_time(str_field(r, "time"))) a.view.last_result_time = t;
    a.view.window.push_back(std::move(r));
  }
  if (!last_qid.empty()) {
    a.view.queue_id = last_qid;
    a.view.last_seq = a.queues[last_qid];
  }
  return &a;
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
  auto it = agents_.find(h.agent);
  agent_state* a = it != agents_.end() && it->second->view.seen_live ? it->second.get() : nullptr;
  if (!a) {
    std::string err;
    a = load(h.agent, err);
    if (!a) return tl::unexpected(err);
  }
  auto& v = a->view;
  bool was_critical = v.critical;
  v.seen_live = true;
  v.connected = true;
  v.keyed = *auth;
  a->retired = false;
  v.peer = peer;
  v.facts = h.facts;
  v.interval = std::max(h.interval, std::chrono::milliseconds(100));
  v.queue_id = h.queue_id;
  v.next_seq = h.next_seq;
  v.queued = h.queued;
  v.problem = h.problem;
  v.version = h.version;
  v.dropped = std::max(v.dropped, h.dropped);
  v.last_seq = a->queues.count(h.queue_id) ? a->queues[h.queue_id] : 0;
  if (v.last_seq >= h.next_seq) {
    // The store holds numbers this queue never wrote: results forged in its name, or the
    // agent's state directory restored from an older copy. Continue from what the agent has,
    // so that its results are stored again rather than skipped as duplicates for ever.
    std::uint64_t held = v.last_seq;
    v.last_seq = h.next_seq - 1;
    a->queues[h.queue_id] = v.last_seq;
    if (warn_)
      warn_("agent " + h.agent + ": the store holds results up to seq " + std::to_string(held) +
            " of queue " + h.queue_id + " but the agent's queue has written only up to " +
            std::to_string(v.last_seq) +
            " (results it never sent: forged, or its state restored from an older copy); "
            "continuing from " +
            std::to_string(v.last_seq));
    json st{{"state",
             {{"queues", {{h.queue_id, v.last_seq}}},
              {"queue_id", h.queue_id},
              {"rewound_from", held},
              {"dropped", v.dropped},
              {"lost", v.lost}}}};
    if (auto w = append(*a, st.dump() + "\n"); !w) store_failed(*a, w.error(), now);
  }
  v.last_seen = now;
  v.last_seen_wall = v.last_hello_wall = wall::now();
  if (was_critical) {
    v.critical = false;
    dead_man_record(*a, false, now);
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
  if (warn_)
    warn_("agent " + v.name + ": its results are stored again (" + a.path + " is writable)");
  v.store_error.clear();
  a.store_error_said.reset();
  a.store_errors_unsaid = 0;
}

tl::expected<void, std::string> agent_registry::append(agent_state& a, const std::string& lines) {
  int fd = ::open(a.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return tl::unexpected("cannot open " + a.path + ": " + std::strerror(errno));
  struct stat st {};
  bool fresh = ::fstat(fd, &st) == 0 && st.st_size == 0;
  std::uint64_t before = fresh ? 0 : static_cast<std::uint64_t>(st.st_size);
  std::string err;
  if (!write_all(fd, lines)) err = "cannot write " + a.path + ": " + std::strerror(errno);
  if (err.empty() && opts_.sync && ::fdatasync(fd) != 0)
    err = "cannot sync " + a.path + ": " + std::strerror(errno);
  if (!err.empty()) {
    // Take back what was written: nothing of this report is acknowledged.
    if (::ftruncate(fd, static_cast<off_t>(before)) != 0 && warn_)
      warn_("cannot truncate " + a.path + " after a failed write: " + std::strerror(errno));
    ::close(fd);
    return tl::unexpected(err);
  }
  ::close(fd);
  if (fresh && opts_.sync) fsync_dir(fs::path(a.path).parent_path().string());
  a.file_bytes = before + lines.size();
  return {};
}

tl::expected<void, std::string> agent_registry::rotate(agent_state& a) {
  std::string old = a.path + ".1";
  json queues = json::object();
  // Every queue id's last seq is carried over (a queue id changes only when an agent's state
  // directory is recreated, so there are few).
  for (auto& [q, s] : a.queues) queues[q] = s;
  json st{{"state",
           {{"queues", queues},
            {"dropped", a.view.dropped},
            {"lost", a.view.lost},
            {"queue_id", a.view.queue_id}}}};
  std::string line = st.dump() + "\n";
  std::string tmp = a.path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return tl::unexpected("cannot create " + tmp + ": " + std::strerror(errno));
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
            (!opts_.sync || ::fdatasync(fd) == 0);
  ::close(fd);
  if (!ok) return tl::unexpected("cannot write " + tmp + ": " + std::strerror(errno));
  // The full file is linked to .1 first, then the state file renamed over the live name
  // (atomic): at every instant the live name holds either all results or the state line.
  if (::unlink(old.c_str()) != 0 && errno != ENOENT)
    return tl::unexpected("cannot remove " + old + ": " + std::strerror(errno));
  if (::link(a.path.c_str(), old.c_str()) != 0)
    return tl::unexpected("cannot link " + a.path + " to " + old + ": " + std::strerror(errno));
  if (::rename(tmp.c_str(), a.path.c_str()) != 0)
    return tl::unexpected("cannot rename " + tmp + ": " + std::strerror(errno));
  if (opts_.sync) fsync_dir(fs::path(a.path).parent_path().string());
  a.file_bytes = line.size();
  return {};
}

tl::expected<std::uint64_t, std::string> agent_registry::report(const std::string& name,
                                                                const agent_report& rep,
                                                                steady::time_point now) {
  auto it = agents_.find(name);
  if (it == agents_.end() || !it->second->view.seen_live)
    return tl::unexpected(std::string("agent_hello first"));
  auto& a = *it->second;
  auto& v = a.view;
  if (rep.queue_id != v.queue_id)
    return tl::unexpected(std::string("\"queue_id\" differs from the one in agent_hello"));
  if (rep.next_seq > agent_limits::max_seq + 1)
    return tl::unexpected("\"next_seq\" " + std::to_string(rep.next_seq) +
                          " is beyond what any agent queue gives out (at most 2^53)");
  if (rep.next_seq < v.next_seq)
    return tl::unexpected("\"next_seq\" " + std::to_string(rep.next_seq) + " is below the " +
                          std::to_string(v.next_seq) +
                          " this agent stated before (a queue's write position only grows)");
  if (rep.dropped > rep.next_seq - 1)
    return tl::unexpected("\"dropped\" " + std::to_string(rep.dropped) +
                          " is more than the queue's numbers given out (" +
                          std::to_string(rep.next_seq - 1) + ")");
  const json& results = rep.results;
  if (auto c = check_agent_results(results, rep.next_seq); !c) return tl::unexpected(c.error());
  std::uint64_t last = v.last_seq, lost = 0;
  std::string lines;
  std::vector<const json*> accepted;
  std::uint64_t dups = 0;
  std::uint64_t new_dropped = std::max(v.dropped, rep.dropped);
  for (const json& r : results) {
    auto seq = r["seq"].get<std::uint64_t>();
    if (seq <= last) {
      ++dups;
      continue;
    }
    // A gap after a stored result: numbers the agent gave out and never delivered (dropped at
    // the bound, lost to a damaged file or a full disk).
    if (last > 0 && seq > last + 1) lost += seq - last - 1;
    last = seq;
    lines += "{\"queue_id\":\"" + rep.queue_id + "\",\"seq\":" + std::to_string(seq) +
             ",\"dropped\":" + std::to_string(new_dropped) + ",\"result\":";
    lines += r.dump(-1, ' ', false, json::error_handler_t::replace);
    lines += "}\n";
    accepted.push_back(&r);
  }
  v.last_seen = now;
  v.last_seen_wall = wall::now();
  v.connected = true;
  v.duplicates += dups;
  v.next_seq = rep.next_seq;
  v.queued = rep.queued;
  v.problem = rep.problem;
  if (!lines.empty()) {
    if (auto w = append(a, lines); !w) {
      store_failed(a, w.error(), now);
      return tl::unexpected("the central cannot store results now (" + w.error() +
                            "); they stay queued on the agent");
    }
    store_worked(a);
    v.last_seq = a.queues[rep.queue_id] = last;
    v.stored += accepted.size();
    v.lost += lost;
  }
  v.dropped = new_dropped;
  if (v.critical) {
    v.critical = false;
    dead_man_record(a, false, now);
  }
  for (const json* r : accepted) deliver(a, *r);
  if (a.file_bytes > opts_.store_max_bytes) {
    if (auto rr = rotate(a); !rr) store_failed(a, rr.error(), now);
  }
  return v.last_seq;
}

void agent_registry::deliver(agent_state& a, const json& r) {
  auto& v = a.view;
  json copy = r;
  copy["agent"] = v.name;
  std::string task = str_field(r, "task", "?");
  std::string type = str_field(r, "type", "?");
  if (type == "system" && r.contains("metrics") && r["metrics"].is_object())
    v.latest_system = r["metrics"];
  auto t = parse_time(str_field(r, "time"));
  if (t) v.last_result_time = t;
  v.window.push_back(std::move(copy));
  while (v.window.size() > opts_.window) v.window.pop_front();
  if (!on_result_) return;

  task_spec* spec = nullptr;
  std::string full = v.name + "/" + task;
  if (auto s = a.specs.find(full); s != a.specs.end()) {
    spec = s->second.get();
  } else if (a.specs.size() < opts_.max_tasks_per_agent) {
    auto ts = std::make_unique<task_spec>();
    ts->name = full;
    ts->type = type;
    ts->target = str_field(r, "target");
    ts->interval = std::chrono::duration_cast<duration>(v.interval);
    ts->tags["agent"] = v.name;
    spec = ts.get();
    a.specs.emplace(full, std::move(ts));
  } else {
    if (!a.other_spec) {
      a.other_spec = std::make_unique<task_spec>();
      a.other_spec->name = v.name + "/(other)";
      a.other_spec->type = "agent";
      a.other_spec->tags["agent"] = v.name;
    }
    spec = a.other_spec.get();
  }
  result_record rec;
  rec.time = t.value_or(wall::now());
  rec.task = spec;
  rec.state = parse_status(r.contains("status") ? r["status"] : json());
  rec.why = parse_reason(r.contains("reason") ? r["reason"] : json());
  if (auto l = r.find("latency_ms"); l != r.end() && l->is_number())
    rec.latency_ms = l->get<double>();
  rec.message = str_field(r, "message");
  if (auto m = r.find("metrics"); m != r.end() && m->is_object())
    for (auto& [k, val] : m->items())
      if (val.is_number()) rec.metrics.push_back({k, val.get<double>()});
  if (auto p = a.last_status.find(full); p != a.last_status.end() && p->second != rec.state)
    rec.previous = p->second;
  a.last_status[full] = rec.state;
  on_result_(rec);
}

void agent_registry::dead_man_record(agent_state& a, bool critical, steady::time_point now) {
  auto& v = a.view;
  status st = critical ? status::critical : status::ok;
  std::optional<status> previous = a.dead_state;
  if (!previous && !critical) return;  // never alarmed: nothing to recover from
  a.dead_state = st;
  if (!on_result_) return;
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
  on_result_(rec);
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
          {"store", opts_.state_dir.empty() ? "agents" : opts_.state_dir + "/agents"},
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
