// The agent protocol's requests, decoded and validated. See agent_protocol.hpp. No ASIO here:
// the fuzz target (fuzz/agent_fuzz.cpp) compiles this file with clang.
//
// Nothing below recurses into what an agent sent: every check walks a fixed schema (an object,
// its fields, at most one level of list or object under a known field), so a deeply nested
// value is refused by type ("must be a string") without being descended into.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <ctime>

#include <sonde/result.hpp>
#include "agents/agent_protocol.hpp"
#include "core/rfc3339.hpp"

namespace sonde::engine {

using json = nlohmann::json;
namespace lim = agent_limits;

namespace {

using check = tl::expected<void, std::string>;

tl::unexpected<std::string> fail(std::string_view where, std::string_view what) {
  return tl::unexpected("\"" + std::string(where) + "\" " + std::string(what));
}

std::string field(std::string_view where, std::string_view key) {
  if (where.empty()) return std::string(key);
  return std::string(where) + "." + std::string(key);
}

// A positive integer (signed or unsigned in the JSON value) into `out`.
bool positive(const json& v, std::uint64_t& out) {
  if (v.is_number_unsigned()) {
    out = v.get<std::uint64_t>();
    return out > 0;
  }
  if (v.is_number_integer() && v.get<std::int64_t>() > 0) {
    out = static_cast<std::uint64_t>(v.get<std::int64_t>());
    return true;
  }
  return false;
}

bool printable(std::string_view s) {
  return std::none_of(s.begin(), s.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; });
}

// A string of at most `max` bytes (no control characters unless `any_text`).
check text(const json& v, std::string_view where, std::size_t max, bool any_text = false,
           bool allow_empty = true) {
  if (!v.is_string()) return fail(where, "must be a string");
  const auto& s = v.get_ref<const std::string&>();
  if (s.size() > max) return fail(where, "is longer than " + std::to_string(max) + " bytes");
  if (!allow_empty && s.empty()) return fail(where, "must not be empty");
  if (!any_text && !printable(s)) return fail(where, "must not contain control characters");
  return {};
}

// A non-negative integer of at most `max`.
check count(const json& v, std::string_view where, std::uint64_t max = lim::max_seq) {
  if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<std::int64_t>() < 0))
    return fail(where, "must be a non-negative integer");
  if (v.get<std::uint64_t>() > max)
    return fail(where, "is " + std::to_string(v.get<std::uint64_t>()) + ", above the limit " +
                           std::to_string(max));
  return {};
}

// Optional string field of `body` into `out`.
check opt_text(const json& body, const char* key, std::size_t max, std::string& out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return {};
  if (auto c = text(*it, key, max, true); !c) return c;
  out = it->get<std::string>();
  return {};
}

check opt_count(const json& body, const char* key, std::uint64_t& out) {
  auto it = body.find(key);
  if (it == body.end()) return {};
  if (auto c = count(*it, key); !c) return c;
  out = it->get<std::uint64_t>();
  return {};
}

check seq_field(const json& body, const char* key, std::uint64_t& out) {
  auto it = body.find(key);
  if (it == body.end()) return fail(key, "is required (the agent queue's write position)");
  if (!positive(*it, out)) return fail(key, "must be a positive integer");
  if (out > lim::max_seq + 1)
    return fail(key, "is " + std::to_string(out) +
                         ", beyond what any agent queue gives out (at most 2^53)");
  return {};
}

check queue_id_field(const json& body, std::string& out) {
  auto it = body.find("queue_id");
  if (it == body.end() || !it->is_string() ||
      !valid_agent_queue_id(it->get_ref<const std::string&>()))
    return fail("queue_id", "must be 1 to 64 characters of [A-Za-z0-9._-]");
  out = it->get<std::string>();
  return {};
}

check string_list(const json& v, std::string_view where, std::size_t max_n, std::size_t max_len) {
  if (!v.is_array()) return fail(where, "must be a list of strings");
  if (v.size() > max_n) return fail(where, "has more than " + std::to_string(max_n) + " entries");
  for (std::size_t i = 0; i < v.size(); ++i)
    if (auto c = text(v[i], std::string(where) + "[" + std::to_string(i) + "]", max_len); !c)
      return c;
  return {};
}

}  // namespace

bool valid_agent_queue_id(std::string_view q) {
  if (q.empty() || q.size() > lim::max_queue_id) return false;
  return std::all_of(q.begin(), q.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '-' || c == '_' || c == '.';
  });
}

tl::expected<void, std::string> check_agent_name(std::string_view name) {
  if (name.empty() || name.size() > lim::max_name)
    return tl::unexpected(std::string("agent name must be 1 to 128 bytes"));
  for (unsigned char c : name)
    if (c < 0x20 || c == 0x7f || c == '/')
      return tl::unexpected(std::string("agent name must not contain '/' or control characters"));
  return {};
}

std::optional<std::chrono::system_clock::time_point> parse_agent_time(std::string_view t) {
  return parse_rfc3339(t, rfc3339_zone::utc);
}

tl::expected<void, std::string> check_agent_facts(const json& facts, std::string_view where) {
  if (!facts.is_object()) return fail(where, "must be an object");
  if (facts.size() > lim::max_fact_keys)
    return fail(where, "has more than " + std::to_string(lim::max_fact_keys) + " keys");
  static constexpr std::string_view texts[] = {"os",        "kernel", "arch", "hostname",
                                               "cpu_model", "name",   "ip",   "version"};
  static constexpr std::string_view numbers[] = {"cpu_count", "mem_total", "interval_ms"};
  for (auto it = facts.begin(); it != facts.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    const std::string f = field(where, k);
    if (k.size() > 64 || k.empty() || !printable(k))
      return fail(where, "has a key that is empty, longer than 64 bytes or not printable");
    if (std::find(std::begin(texts), std::end(texts), k) != std::end(texts)) {
      if (auto c = text(v, f, lim::max_fact_string); !c) return c;
    } else if (std::find(std::begin(numbers), std::end(numbers), k) != std::end(numbers)) {
      if (auto c = count(v, f); !c) return c;
    } else if (k == "addresses") {
      if (auto c = string_list(v, f, lim::max_addresses, 64); !c) return c;
    } else if (k == "problems") {
      if (auto c = string_list(v, f, lim::max_problems, lim::max_problem); !c) return c;
    } else if (k == "queue") {
      if (!v.is_object() || v.size() > 16)
        return fail(f, "must be an object of at most 16 counters");
      for (auto q = v.begin(); q != v.end(); ++q) {
        if (q.key().size() > 64 || !printable(q.key()))
          return fail(f, "has a key longer than 64 bytes or not printable");
        if (auto c = count(q.value(), field(f, q.key())); !c) return c;
      }
    } else if (v.is_string()) {
      if (auto c = text(v, f, lim::max_fact_string); !c) return c;
    } else if (!(v.is_number() || v.is_boolean() || v.is_null())) {
      return fail(f, "must be a string, a number, a boolean or null (unknown facts are plain)");
    }
  }
  return {};
}

tl::expected<void, std::string> check_agent_result(const json& r, std::string_view where) {
  if (!r.is_object()) return fail(where, "must be an object");
  std::size_t extra = 0;
  for (auto it = r.begin(); it != r.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    const std::string f = field(where, k);
    if (k == "seq") {
      std::uint64_t seq = 0;
      if (!positive(v, seq)) return fail(f, "must be a positive integer");
      if (seq > lim::max_seq)
        return fail(f, "is " + std::to_string(seq) +
                           ", beyond what any agent queue gives out (at most 2^53)");
    } else if (k == "time") {
      if (auto c = text(v, f, 40); !c) return c;
      if (!parse_agent_time(v.get_ref<const std::string&>()))
        return fail(f, "must be an RFC 3339 UTC time such as 2026-11-21T02:40:56.123Z");
    } else if (k == "task") {
      if (auto c = text(v, f, lim::max_task, false, false); !c) return c;
    } else if (k == "type") {
      if (auto c = text(v, f, lim::max_type, false, false); !c) return c;
    } else if (k == "target") {
      if (auto c = text(v, f, lim::max_target); !c) return c;
    } else if (k == "status") {
      if (!v.is_string()) return fail(f, "must be ok, warning, critical or unknown");
      const auto& s = v.get_ref<const std::string&>();
      if (s != "ok" && s != "warning" && s != "critical" && s != "unknown")
        return fail(f, "must be ok, warning, critical or unknown");
    } else if (k == "reason") {
      if (v.is_null()) continue;
      bool known = false;
      if (v.is_string())
        for (int i = 1; i <= static_cast<int>(reason::error); ++i)
          known |= to_string(static_cast<reason>(i)) == v.get_ref<const std::string&>();
      if (!known)
        return fail(f,
                    "must be null or one of timeout, refused, unreachable, resolve, tls, "
                    "protocol, mismatch, condition, error");
    } else if (k == "latency_ms") {
      if (v.is_null()) continue;
      if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < 0)
        return fail(f, "must be null or a non-negative number");
    } else if (k == "message") {
      if (auto c = text(v, f, lim::max_message, true); !c) return c;
    } else if (k == "metrics") {
      if (!v.is_object()) return fail(f, "must be an object of numbers");
      if (v.size() > lim::max_metrics)
        return fail(f, "has more than " + std::to_string(lim::max_metrics) + " entries");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (m.key().empty() || m.key().size() > lim::max_metric_name || !printable(m.key()))
          return fail(f, "has a name that is empty, longer than 128 bytes or not printable");
        if (!m.value().is_number() || !std::isfinite(m.value().get<double>()))
          return fail(field(f, m.key()), "must be a number");
      }
    } else {
      // Fields of a newer agent are kept if they are plain and few; nothing nested.
      if (++extra > 16)
        return fail(where,
                    "has more than 16 fields besides seq, time, task, type, target, "
                    "status, reason, latency_ms, message, metrics");
      if (k.empty() || k.size() > 64 || !printable(k))
        return fail(where,
                    "has a field name that is empty, longer than 64 bytes or not "
                    "printable");
      if (v.is_string()) {
        if (auto c = text(v, f, 1024, true); !c) return c;
      } else if (!(v.is_number() || v.is_boolean() || v.is_null())) {
        return fail(f,
                    "must be a string, a number, a boolean or null (an unknown field is "
                    "plain)");
      }
    }
  }
  for (const char* k : {"seq", "time", "task", "type", "status"})
    if (!r.contains(k)) return fail(field(where, k), "is required");
  return {};
}

tl::expected<agent_hello, std::string> decode_agent_hello(const json& body) {
  agent_hello h;
  if (!body.is_object()) return tl::unexpected(std::string("a request must be an object"));
  auto name = body.find("agent");
  if (name == body.end() || !name->is_string())
    return tl::unexpected(std::string("agent_hello needs \"agent\" and \"queue_id\" (strings)"));
  if (auto c = check_agent_name(name->get_ref<const std::string&>()); !c)
    return tl::unexpected(c.error());
  h.agent = name->get<std::string>();
  if (auto c = queue_id_field(body, h.queue_id); !c) return tl::unexpected(c.error());
  if (auto c = seq_field(body, "next_seq", h.next_seq); !c) return tl::unexpected(c.error());
  if (auto it = body.find("key"); it != body.end()) {
    if (auto c = text(*it, "key", lim::max_key, false, false); !c) return tl::unexpected(c.error());
    h.key = it->get<std::string>();
  }
  if (auto it = body.find("interval_ms"); it != body.end()) {
    if (auto c = count(*it, "interval_ms", 86'400'000); !c) return tl::unexpected(c.error());
    h.interval = std::chrono::milliseconds(std::max<std::uint64_t>(100, it->get<std::uint64_t>()));
  }
  if (auto c = opt_count(body, "queued", h.queued); !c) return tl::unexpected(c.error());
  if (auto c = opt_count(body, "dropped", h.dropped); !c) return tl::unexpected(c.error());
  if (auto c = opt_text(body, "problem", lim::max_problem, h.problem); !c)
    return tl::unexpected(c.error());
  if (auto c = opt_text(body, "version", 64, h.version); !c) return tl::unexpected(c.error());
  if (auto it = body.find("facts"); it != body.end()) {
    if (auto c = check_agent_facts(*it); !c) return tl::unexpected(c.error());
    h.facts = *it;
  }
  return h;
}

tl::expected<void, std::string> check_agent_results(const json& results, std::uint64_t next_seq) {
  if (!results.is_array()) return tl::unexpected(std::string("\"results\" must be a list"));
  if (results.size() > lim::max_results)
    return tl::unexpected("\"results\" has " + std::to_string(results.size()) +
                          " entries; a report carries at most 500");
  std::uint64_t prev = 0;
  for (std::size_t i = 0; i < results.size(); ++i) {
    const json& res = results[i];
    const std::string where = "results[" + std::to_string(i) + "]";
    if (auto c = check_agent_result(res, where); !c) return tl::unexpected(c.error());
    auto seq = res["seq"].get<std::uint64_t>();
    if (seq <= prev)
      return tl::unexpected("\"" + where + ".seq\" " + std::to_string(seq) + " does not follow " +
                            std::to_string(prev) + " (results are in increasing seq)");
    if (seq >= next_seq)
      return tl::unexpected("\"" + where + ".seq\" " + std::to_string(seq) +
                            " is beyond what the agent's queue has written (\"next_seq\" " +
                            std::to_string(next_seq) + ")");
    prev = seq;
  }
  return {};
}

tl::expected<agent_report, std::string> decode_agent_report(const json& body) {
  agent_report r;
  if (!body.is_object()) return tl::unexpected(std::string("a request must be an object"));
  if (auto c = queue_id_field(body, r.queue_id); !c) return tl::unexpected(c.error());
  if (auto c = seq_field(body, "next_seq", r.next_seq); !c) return tl::unexpected(c.error());
  if (auto c = opt_count(body, "queued", r.queued); !c) return tl::unexpected(c.error());
  if (auto c = opt_count(body, "dropped", r.dropped); !c) return tl::unexpected(c.error());
  if (auto c = opt_text(body, "problem", lim::max_problem, r.problem); !c)
    return tl::unexpected(c.error());
  auto it = body.find("results");
  if (it == body.end()) return r;
  if (auto c = check_agent_results(*it, r.next_seq); !c) return tl::unexpected(c.error());
  r.results = *it;
  return r;
}

tl::expected<agent_info_reply, std::string> decode_agent_info_reply(const json& body) {
  agent_info_reply r;
  if (!body.is_object()) return tl::unexpected(std::string("a request must be an object"));
  if (auto it = body.find("id"); it != body.end()) {
    if (!it->is_number_integer()) return tl::unexpected(std::string("\"id\" must be an integer"));
    r.id = it->is_number_unsigned() && it->get<std::uint64_t>() > INT64_MAX
               ? -1
               : it->get<std::int64_t>();
  }
  if (auto it = body.find("facts"); it != body.end()) {
    if (auto c = check_agent_facts(*it); !c) return tl::unexpected(c.error());
    r.facts = *it;
  }
  return r;
}

tl::expected<std::map<std::string, std::string>, std::string> parse_agent_keys(
    std::string_view text_in, std::string_view file) {
  std::map<std::string, std::string> keys;
  std::size_t line_no = 0, pos = 0;
  auto bad = [&](const std::string& why) {
    return tl::unexpected(std::string(file) + ":" + std::to_string(line_no) + ": " + why);
  };
  while (pos < text_in.size()) {
    auto nl = text_in.find('\n', pos);
    std::string_view line =
        text_in.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? text_in.size() : nl + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    auto is_space = [](char c) { return c == ' ' || c == '\t'; };
    while (!line.empty() && is_space(line.front())) line.remove_prefix(1);
    while (!line.empty() && is_space(line.back())) line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    auto sp = std::find_if(line.begin(), line.end(), is_space);
    if (sp == line.end()) return bad("expected NAME KEY");
    std::string name(line.begin(), sp);
    std::string_view rest(&*sp, static_cast<std::size_t>(line.end() - sp));
    while (!rest.empty() && is_space(rest.front())) rest.remove_prefix(1);
    std::string key(rest);
    if (auto c = check_agent_name(name); !c) return bad(c.error());
    if (key.size() < lim::min_key || key.size() > lim::max_key)
      return bad("the key of '" + name +
                 "' must be 16 to 256 characters (e.g. the output of "
                 "`head -c 32 /dev/urandom | base64`)");
    for (unsigned char c : key)
      if (c <= 0x20 || c >= 0x7f)
        return bad("the key of '" + name + "' must be printable ASCII without spaces");
    if (!keys.emplace(name, key).second) return bad("agent '" + name + "' is listed twice");
  }
  return keys;
}

bool agent_key_equal(std::string_view given, std::string_view expected) {
  // Walk the expected key in full whatever is given; fold the length difference in too.
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff |= static_cast<unsigned char>(g ^ static_cast<unsigned char>(expected[i]));
  }
  // Keep the compiler from turning the loop into an early exit.
  volatile unsigned char sink = diff;
  return sink == 0;
}

}  // namespace sonde::engine
