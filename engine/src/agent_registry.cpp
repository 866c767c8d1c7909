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

#include <sonde/engine/agent_registry.hpp>
#include <sonde/engine/output.hpp>
#include <sonde/engine/state.hpp>

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
};

namespace {

bool valid_queue_id(const std::string& q) {
  if (q.empty() || q.size() > 64) return false;
  return std::all_of(q.begin(), q.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '-' || c == '_' || c == '.';
  });
}

std::string safe_name(const std::string& name) {
  std::string s = name;
  for (auto& c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) c = '_';
  if (s == "." || s == "..") s = "_" + s;
  return s;
}

// "2026-11-21T02:40:56.123456Z" (fraction optional). nullopt if not that shape.
std::optional<wall::time_point> parse_time(const std::string& t) {
  int y, mo, d, h, mi, s, n = 0;
  if (std::sscanf(t.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &s, &n) != 6 ||
      n == 0)
    return std::nullopt;
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  std::time_t secs = timegm(&tm);
  long long ns = 0;
  std::size_t i = static_cast<std::size_t>(n);
  if (i < t.size() && t[i] == '.') {
    long long scale = 100'000'000;
    for (++i; i < t.size() && std::isdigit(static_cast<unsigned char>(t[i])); ++i) {
      ns += (t[i] - '0') * scale;
      scale /= 10;
    }
  }
  return wall::time_point(std::chrono::duration_cast<wall::duration>(std::chrono::seconds(secs) +
                                                                     std::chrono::nanoseconds(ns)));
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

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

agent_registry::agent_registry(agent_registry_options opts, warn_fn warn)
    : opts_(std::move(opts)), warn_(std::move(warn)) {
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
  if (name.empty() || name.size() > 128)
    return tl::unexpected(std::string("agent name must be 1 to 128 bytes"));
  for (unsigned char c : name)
    if (c < 0x20 || c == 0x7f || c == '/')
      return tl::unexpected(std::string("agent name must not contain '/' or control characters"));
  return {};
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
        if (st.contains("queues") && st["queues"].is_object())
          for (auto& [q, v] : st["queues"].items())
            if (v.is_number_unsigned() && valid_queue_id(q)) {
              a.queues[q] = std::max(a.queues[q], v.get<std::uint64_t>());
              last_qid = st.value("queue_id", q);
            }
        if (st.contains("dropped") && st["dropped"].is_number_unsigned())
          a.view.dropped = std::max(a.view.dropped, st["dropped"].get<std::uint64_t>());
        continue;
      }
    }
    if (warn_) warn_(a.path + ":" + std::to_string(line_no) + ": not a result line; ignored");
  }
  for (auto l : recent) {
    auto j = json::parse(l, nullptr, false);
    if (!j.is_object() || !j["result"].is_object()) {
      if (warn_) warn_(a.path + ": a recent result line is not valid JSON; ignored");
      continue;
    }
    json r = j["result"];
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

tl::expected<std::uint64_t, std::string> agent_registry::hello(
    const std::string& name, const std::string& queue_id, const json& facts,
    std::chrono::milliseconds interval, const std::string& peer, steady::time_point now) {
  if (auto ok = check_name(name); !ok) return tl::unexpected(ok.error());
  if (!valid_queue_id(queue_id))
    return tl::unexpected(std::string("\"queue_id\" must be 1 to 64 characters of [A-Za-z0-9._-]"));
  auto it = agents_.find(name);
  agent_state* a = it != agents_.end() && it->second->view.seen_live ? it->second.get() : nullptr;
  if (!a) {
    std::string err;
    a = load(name, err);
    if (!a) return tl::unexpected(err);
  }
  auto& v = a->view;
  bool was_critical = v.critical;
  v.seen_live = true;
  v.connected = true;
  a->retired = false;
  v.peer = peer;
  if (facts.is_object()) v.facts = facts;
  if (interval.count() > 0) v.interval = interval;
  v.queue_id = queue_id;
  v.last_seq = a->queues.count(queue_id) ? a->queues[queue_id] : 0;
  v.last_seen = now;
  v.last_seen_wall = v.last_hello_wall = wall::now();
  if (was_critical) {
    v.critical = false;
    dead_man_record(*a, false, now);
  }
  return v.last_seq;
}

tl::expected<void, std::string> agent_registry::append(agent_state& a, const std::string& lines) {
  int fd = ::open(a.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return tl::unexpected("cannot open " + a.path + ": " + std::strerror(errno));
  struct stat st {};
  bool fresh = ::fstat(fd, &st) == 0 && st.st_size == 0;
  std::uint64_t before = fresh ? 0 : static_cast<std::uint64_t>(st.st_size);
  std::size_t done = 0;
  std::string err;
  while (done < lines.size()) {
    auto n = ::write(fd, lines.data() + done, lines.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = "cannot write " + a.path + ": " + std::strerror(n < 0 ? errno : ENOSPC);
      break;
    }
    done += static_cast<std::size_t>(n);
  }
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
  json st{
      {"state", {{"queues", queues}, {"dropped", a.view.dropped}, {"queue_id", a.view.queue_id}}}};
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
                                                                const std::string& queue_id,
                                                                const json& results,
                                                                std::uint64_t dropped,
                                                                steady::time_point now) {
  auto it = agents_.find(name);
  if (it == agents_.end() || !it->second->view.seen_live)
    return tl::unexpected(std::string("agent_hello first"));
  auto& a = *it->second;
  auto& v = a.view;
  if (queue_id != v.queue_id)
    return tl::unexpected(std::string("\"queue_id\" differs from the one in agent_hello"));
  if (!results.is_array()) return tl::unexpected(std::string("\"results\" must be a list"));
  std::uint64_t last = v.last_seq;
  std::string lines;
  std::vector<const json*> accepted;
  std::uint64_t dups = 0;
  std::uint64_t new_dropped = std::max(v.dropped, dropped);
  for (const auto& r : results) {
    auto s = r.find("seq");
    if (!r.is_object() || s == r.end() || !s->is_number_unsigned() || s->get<std::uint64_t>() == 0)
      return tl::unexpected(std::string("every result needs a positive integer \"seq\""));
    auto seq = s->get<std::uint64_t>();
    if (seq <= last) {
      ++dups;
      continue;
    }
    last = seq;
    lines += "{\"queue_id\":\"" + queue_id + "\",\"seq\":" + std::to_string(seq) +
             ",\"dropped\":" + std::to_string(new_dropped) + ",\"result\":";
    lines += r.dump(-1, ' ', false, json::error_handler_t::replace);
    lines += "}\n";
    accepted.push_back(&r);
  }
  v.last_seen = now;
  v.last_seen_wall = wall::now();
  v.connected = true;
  v.duplicates += dups;
  if (!lines.empty()) {
    if (auto w = append(a, lines); !w) return tl::unexpected(w.error());
    v.last_seq = a.queues[queue_id] = last;
    v.stored += accepted.size();
  }
  v.dropped = new_dropped;
  if (v.critical) {
    v.critical = false;
    dead_man_record(a, false, now);
  }
  for (const json* r : accepted) deliver(a, *r);
  if (a.file_bytes > opts_.store_max_bytes) {
    if (auto rr = rotate(a); !rr && warn_) warn_(rr.error());
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

void agent_registry::info_reply(const std::string& name, const json& facts) {
  auto it = agents_.find(name);
  if (it == agents_.end() || !facts.is_object()) return;
  it->second->view.facts = facts;
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
      row["os"] = v.facts.value("os", "");
      row["hostname"] = v.facts.value("hostname", "");
    }
    rows.push_back(std::move(row));
  }
  return {{"agents", std::move(rows)}};
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
