// Control protocol requests: line splitting, envelope parsing, per-command decoding. No ASIO
// here (see control_request.hpp): the fuzz target compiles this file with clang.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <unordered_set>

#include "control/control_request.hpp"

namespace sonde::engine {

using json = nlohmann::json;

std::string listen_address::to_string() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

tl::expected<listen_address, std::string> parse_listen_address(std::string_view text) {
  auto bad = [&](std::string why) {
    return tl::unexpected("invalid address \"" + std::string(text) + "\": " + why);
  };
  if (text.empty()) return bad("expected host:port, e.g. 127.0.0.1:6543");
  listen_address a;
  std::string_view port;
  if (text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) return bad("missing ']' after the IPv6 address");
    a.host = std::string(text.substr(1, close - 1));
    if (close + 1 >= text.size() || text[close + 1] != ':')
      return bad("a port is required ([IPv6]:port)");
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad("a port is required (host:port)");
    if (text.find(':') != colon) return bad("write IPv6 addresses as [address]:port");
    a.host = std::string(text.substr(0, colon));
    port = text.substr(colon + 1);
  }
  if (a.host.empty()) return bad("the host is empty");
  for (unsigned char c : a.host)
    if (!(std::isalnum(c) || c == '.' || c == '-' || c == ':' || c == '%' || c == '_'))
      return bad("the host contains an invalid character");
  unsigned value = 0;
  auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || p != port.data() + port.size() || value > 65535)
    return bad("the port must be a number from 0 to 65535");
  a.port = static_cast<std::uint16_t>(value);
  return a;
}

bool is_loopback_host(std::string_view host) {
  if (host == "localhost" || host == "::1" || host == "0:0:0:0:0:0:0:1") return true;
  if (host.substr(0, 7) == "::ffff:") host.remove_prefix(7);
  if (host.substr(0, 4) != "127.") return false;
  // a dotted quad starting with 127
  int dots = 0;
  for (char c : host) {
    if (c == '.')
      ++dots;
    else if (!std::isdigit(static_cast<unsigned char>(c)))
      return false;
  }
  return dots == 3;
}

namespace {

// The first byte offset where arrays and objects nest deeper than `max`, outside strings; npos
// if none. Linear, no allocation: it runs before the parser builds anything.
std::size_t too_deep_at(std::string_view text, std::size_t max) {
  std::size_t depth = 0;
  bool in_string = false, escaped = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max) return i;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return std::string_view::npos;
}

}  // namespace

tl::expected<json, std::string> parse_json_untrusted(std::string_view text, std::size_t max_depth) {
  if (auto nul = text.find('\0'); nul != std::string_view::npos)
    return tl::unexpected("a NUL byte at offset " + std::to_string(nul) +
                          " (JSON text cannot contain one)");
  if (auto at = too_deep_at(text, max_depth); at != std::string_view::npos)
    return tl::unexpected("nested deeper than " + std::to_string(max_depth) + " levels at offset " +
                          std::to_string(at));
  // Keys seen per open object, to refuse duplicates (nlohmann keeps the last one silently).
  std::vector<std::unordered_set<std::string>> keys;
  std::string duplicate;
  auto cb = [&](int, json::parse_event_t ev, json& parsed) {
    switch (ev) {
      case json::parse_event_t::object_start:
        keys.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key:
        if (!keys.empty() && !keys.back().insert(parsed.get<std::string>()).second &&
            duplicate.empty())
          duplicate = parsed.get<std::string>();
        break;
      default:
        break;
    }
    return true;
  };
  json j;
  try {
    j = json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true);
  } catch (const json::parse_error& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line 1, column 7: ..."
    std::string what = e.what();
    if (auto p = what.find("] "); p != std::string::npos) what.erase(0, p + 2);
    return tl::unexpected(what);
  } catch (const std::exception& e) {
    return tl::unexpected(std::string(e.what()));
  }
  if (!duplicate.empty()) {
    std::string shown = duplicate.size() > 64 ? duplicate.substr(0, 64) + "..." : duplicate;
    return tl::unexpected("the key \"" + shown + "\" appears twice in one object");
  }
  return j;
}

tl::expected<void, std::string> check_token(std::string_view token, bool loopback) {
  for (unsigned char c : token)
    if (c <= ' ' || c == 0x7f)
      return tl::unexpected(
          std::string("the control token must not contain spaces or control characters"));
  constexpr std::size_t min_remote = 16;
  if (!loopback && token.size() < min_remote)
    return tl::unexpected("a token of at least " + std::to_string(min_remote) +
                          " characters is required beyond loopback (this one has " +
                          std::to_string(token.size()) + "); make one with: openssl rand -hex 16");
  return {};
}

tl::expected<control_request, request_error> parse_request(std::string_view line) {
  control_request r;
  auto parsed = parse_json_untrusted(line);
  if (!parsed)
    return tl::unexpected(request_error{
        "malformed JSON (" + parsed.error() + "): expected one JSON object per line", {}});
  r.body = std::move(*parsed);
  if (!r.body.is_object())
    return tl::unexpected(
        request_error{"a request must be a JSON object, e.g. {\"command\": \"list\"}", {}});
  if (auto it = r.body.find("seq"); it != r.body.end()) r.seq = *it;
  auto fail = [&](std::string m) { return tl::unexpected(request_error{std::move(m), r.seq}); };
  auto cmd = r.body.find("command");
  if (cmd == r.body.end()) return fail("the request has no \"command\"");
  if (!cmd->is_string() || cmd->get_ref<const std::string&>().empty())
    return fail("\"command\" must be a non-empty string");
  r.command = cmd->get<std::string>();
  if (auto it = r.body.find("token"); it != r.body.end()) {
    if (!it->is_string()) return fail("\"token\" must be a string");
    r.token = it->get<std::string>();
  }
  if (auto it = r.body.find("protocol"); it != r.body.end()) {
    if (!it->is_number_integer() || it->get<std::int64_t>() < 1)
      return fail("\"protocol\" must be a positive integer");
    if (it->get<std::int64_t>() > control_protocol_version)
      return fail("protocol version " + std::to_string(it->get<std::int64_t>()) +
                  " is not supported; this engine speaks version " +
                  std::to_string(control_protocol_version));
  }
  return r;
}

namespace {

// A string or a list of strings under `key` (absent: empty). Errors name the key.
tl::expected<std::vector<std::string>, std::string> strings_of(const json& body, const char* key) {
  std::vector<std::string> out;
  auto it = body.find(key);
  if (it == body.end()) return out;
  if (it->is_string()) {
    out.push_back(it->get<std::string>());
  } else if (it->is_array()) {
    for (const auto& e : *it) {
      if (!e.is_string())
        return tl::unexpected("\"" + std::string(key) + "\" must be a string or a list of strings");
      out.push_back(e.get<std::string>());
    }
  } else {
    return tl::unexpected("\"" + std::string(key) + "\" must be a string or a list of strings");
  }
  return out;
}

bool positive_id(const json& v, std::int64_t& out) {
  if (!v.is_number_integer()) return false;
  if (v.is_number_unsigned()) {
    auto u = v.get<std::uint64_t>();
    if (u == 0 || u > static_cast<std::uint64_t>(max_task_id)) return false;
    out = static_cast<std::int64_t>(u);
    return true;
  }
  auto i = v.get<std::int64_t>();
  if (i < 1 || i > max_task_id) return false;
  out = i;
  return true;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

tl::expected<task_selector, std::string> parse_selector(const json& body) {
  task_selector sel;
  int ways = 0;
  if (auto it = body.find("all"); it != body.end()) {
    if (!it->is_boolean()) return tl::unexpected(std::string("\"all\" must be true or false"));
    sel.all = it->get<bool>();
    ways += sel.all;
  }
  for (const char* key : {"name", "task"}) {
    auto v = strings_of(body, key);
    if (!v) return tl::unexpected(v.error());
    if (!v->empty()) {
      ways += sel.names.empty();
      sel.names.insert(sel.names.end(), v->begin(), v->end());
    }
  }
  bool has_ids = false;
  for (const char* key : {"id", "service_id"}) {
    auto it = body.find(key);
    if (it == body.end()) continue;
    std::int64_t id = 0;
    auto bad = tl::unexpected(
        "\"" + std::string(key) +
        "\" must be an integer from 1 to 9007199254740991 (2^53-1) or a list of them");
    if (it->is_array()) {
      for (const auto& e : *it) {
        if (!positive_id(e, id)) return bad;
        sel.ids.push_back(id);
      }
    } else if (positive_id(*it, id)) {
      sel.ids.push_back(id);
    } else {
      return bad;
    }
    has_ids = true;
  }
  ways += has_ids;
  if (ways == 0)
    return tl::unexpected(std::string(
        "name the tasks: \"name\": \"web\" (or a list), \"id\": 3 (or a list), or \"all\": true"));
  if (sel.all && ways > 1)
    return tl::unexpected(std::string("\"all\": true cannot be combined with names or ids"));
  if (ways > 1)
    return tl::unexpected(
        std::string("give task names or ids, not both (a request acts on one or the other)"));
  return sel;
}

bool watch_filter::matches(std::string_view task, std::string_view type,
                           std::string_view status) const {
  auto in = [](const std::vector<std::string>& l, std::string_view v, bool fold) {
    if (l.empty()) return true;
    for (const auto& x : l) {
      if (x.size() != v.size()) continue;
      if (!fold && x == v) return true;
      if (fold && std::equal(x.begin(), x.end(), v.begin(), [](char a, char b) {
            return std::tolower(static_cast<unsigned char>(a)) ==
                   std::tolower(static_cast<unsigned char>(b));
          }))
        return true;
    }
    return false;
  };
  return in(tasks, task, false) && in(types, type, true) && in(statuses, status, false);
}

tl::expected<watch_filter, std::string> parse_watch_filter(const json& body) {
  watch_filter f;
  for (auto [key, dst] :
       {std::pair{"task", &f.tasks}, std::pair{"name", &f.tasks}, std::pair{"type", &f.types},
        std::pair{"service", &f.types}, std::pair{"status", &f.statuses}}) {
    auto v = strings_of(body, key);
    if (!v) return tl::unexpected(v.error());
    dst->insert(dst->end(), v->begin(), v->end());
  }
  for (auto [key, dst] : {std::pair{"results", &f.results}, std::pair{"alarms", &f.alarms}}) {
    auto it = body.find(key);
    if (it == body.end()) continue;
    if (!it->is_boolean())
      return tl::unexpected(std::string("\"") + key + "\" must be true or false");
    *dst = it->get<bool>();
  }
  if (!f.results && !f.alarms)
    return tl::unexpected(std::string("a watch with \"results\": false needs \"alarms\": true"));
  for (const auto& s : f.statuses)
    if (s != "ok" && s != "warning" && s != "critical" && s != "unknown")
      return tl::unexpected("unknown status \"" + s +
                            "\" in \"status\"; expected ok, warning, critical or unknown");
  return f;
}

tl::expected<task_definition, std::string> parse_task_definition(const json& body) {
  // Envelope fields are not task keys.
  static constexpr std::string_view envelope[] = {"command", "token", "seq", "protocol"};
  static constexpr std::pair<std::string_view, std::string_view> aliases[] = {
      {"service", "type"}, {"host", "target"}, {"service_id", "id"}};
  task_definition def;
  def.fields = json::object();
  for (auto it = body.begin(); it != body.end(); ++it) {
    std::string key = it.key();
    if (std::find(std::begin(envelope), std::end(envelope), key) != std::end(envelope)) continue;
    for (auto [alias, canonical] : aliases) {
      if (key != alias) continue;
      if (body.contains(std::string(canonical)))
        return tl::unexpected("give \"" + std::string(canonical) + "\" or its alias \"" +
                              std::string(alias) + "\", not both");
      key = std::string(canonical);
    }
    const json& v = it.value();
    if (v.is_null()) return tl::unexpected("\"" + key + "\" is null");
    if (key == "id") {
      std::int64_t id = 0;
      if (!positive_id(v, id))
        return tl::unexpected(
            std::string("the task id (\"id\" or \"service_id\") must be an integer from 1 to "
                        "9007199254740991 (2^53-1)"));
      def.id = id;
      continue;
    }
    if (key == "set") {
      if (!v.is_object())
        return tl::unexpected(std::string("\"set\" must be an object of option texts"));
      for (auto o = v.begin(); o != v.end(); ++o) {
        if (!o.value().is_string())
          return tl::unexpected("\"set\": the value of '" + o.key() + "' must be a string");
        def.set.emplace_back(o.key(), o.value().get<std::string>());
      }
      continue;
    }
    if (v.is_object() && key != "tags")
      return tl::unexpected(
          key == "alarm"
              ? std::string("'alarm' is read from the task file only: a task started over the "
                            "control channel uses the file's [alarms] defaults")
              : "\"" + key + "\" must not be an object (only \"tags\" is a table)");
    if (v.is_array())
      for (const auto& e : v)
        if (e.is_object() || e.is_array() || e.is_null())
          return tl::unexpected("\"" + key + "\" must be a list of plain values");
    def.fields[key] = v;
  }
  auto name = def.fields.find("name");
  if (name != def.fields.end()) {
    if (!name->is_string()) return tl::unexpected(std::string("\"name\" must be a string"));
    def.name = name->get<std::string>();
  } else {
    auto type = def.fields.find("type");
    auto target = def.fields.find("target");
    std::string t =
        type != def.fields.end() && type->is_string() ? lower(type->get<std::string>()) : "task";
    if (def.id)
      def.name = t + "-" + std::to_string(*def.id);
    else if (target != def.fields.end() && target->is_string())
      def.name = t + "-" + target->get<std::string>();
    else
      def.name = t;
    def.fields["name"] = def.name;
  }
  return def;
}

void line_splitter::feed(std::string_view data) {
  if (head_ > 0 && head_ >= buf_.size() / 2) {  // compact: keeps the buffer bounded
    buf_.erase(0, head_);
    scanned_ -= head_;
    head_ = 0;
  }
  buf_.append(data);
}

std::optional<line_splitter::line> line_splitter::next() {
  while (true) {
    auto nl = buf_.find('\n', std::max(scanned_, head_));
    if (discarding_) {
      if (nl == std::string::npos) {
        buf_.clear();
        head_ = scanned_ = 0;
        return std::nullopt;
      }
      head_ = scanned_ = nl + 1;
      discarding_ = false;
      continue;
    }
    if (nl == std::string::npos) {
      scanned_ = buf_.size();
      if (buf_.size() - head_ > max_) {
        // Too long and not finished: say so once, then drop bytes up to the next newline.
        buf_.clear();
        head_ = scanned_ = 0;
        discarding_ = true;
        return line{{}, true};
      }
      return std::nullopt;
    }
    std::size_t len = nl - head_;
    line out;
    if (len > max_) {
      out.too_long = true;
    } else {
      out.text.assign(buf_, head_, len);
      if (!out.text.empty() && out.text.back() == '\r') out.text.pop_back();
    }
    head_ = scanned_ = nl + 1;
    if (head_ == buf_.size()) {
      buf_.clear();
      head_ = scanned_ = 0;
    }
    return out;
  }
}

}  // namespace sonde::engine
