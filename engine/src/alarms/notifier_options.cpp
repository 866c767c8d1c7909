// The notifier types' option tables, validation and factory. Every error is one line that
// starts with the key, says what is wrong and what is expected, and never echoes a secret
// (tokens, passwords, routing keys).
#include <algorithm>
#include <map>

#include <sonde/http.hpp>

#include "alarms/event_text.hpp"
#include "alarms/notifier.hpp"
#include "alarms/notifier_configs.hpp"
#include "core/config.hpp"

namespace sonde::engine::alarms {

namespace {

using json = nlohmann::json;
using kind = option_kind;

tl::unexpected<notifier_error> fail(std::string key, std::string message) {
  return tl::unexpected(notifier_error{key, key.empty() ? message : key + ": " + message});
}

const std::vector<notifier_option> tls_options = {
    {"tls_verify", kind::boolean, false, "verify the server's certificate and name (default true)"},
    {"ca_file", kind::string, false,
     "PEM file of the certificate authorities to trust instead of the system's"}};

std::vector<notifier_option> with_tls(std::vector<notifier_option> v) {
  v.insert(v.end(), tls_options.begin(), tls_options.end());
  return v;
}

const std::map<std::string, std::vector<notifier_option>, std::less<>>& tables() {
  static const std::map<std::string, std::vector<notifier_option>, std::less<>> t = {
      {"webhook",
       with_tls({{"url", kind::string, true, "http:// or https:// URL the message is sent to"},
                 {"method", kind::string, false, "POST (default), PUT or PATCH"},
                 {"headers", kind::string_table, false,
                  "extra request headers, e.g. { Authorization = \"Bearer ...\" }"},
                 {"body", kind::string, false,
                  "template of the request body (default: the event as JSON, or "
                  "{\"events\":[...]} for a group)"},
                 {"content_type", kind::string, false,
                  "Content-Type of the body (default application/json)"}})},
      {"slack",
       with_tls(
           {{"url", kind::string, true,
             "incoming webhook URL (Slack, Mattermost, Discord's .../slack endpoint)"},
            {"text", kind::string, false, "template of the message text (default {summary})"},
            {"username", kind::string, false, "name the message is posted as"},
            {"channel", kind::string, false, "channel to post to instead of the hook's"},
            {"icon_emoji", kind::string, false, "emoji shown as the poster's icon, e.g. :bell:"}})},
      {"email",
       with_tls(
           {{"url", kind::string, true,
             "smtp://host[:port] (STARTTLS, port 25 by default) or smtps://host[:port] "
             "(TLS, port 465 by default)"},
            {"from", kind::string, true, "sender: user@example.com or Name <user@example.com>"},
            {"to", kind::string_list, true, "recipients"},
            {"username", kind::string, false, "SMTP user name (AUTH)"},
            {"password", kind::string, false, "SMTP password"},
            {"tls", kind::string, false,
             "starttls (default: STARTTLS required on smtp://) or none (in clear; smtp:// "
             "only, not with a password)"},
            {"subject", kind::string, false,
             "template of the subject (default \"[sonde] {headline}\")"},
            {"body", kind::string, false,
             "template of the text body (default: {summary} and {details})"}})},
      {"ntfy",
       with_tls({{"url", kind::string, true, "server and topic, e.g. https://ntfy.sh/alerts"},
                 {"token", kind::string, false, "access token (Authorization: Bearer)"},
                 {"username", kind::string, false, "user name (basic authentication)"},
                 {"password", kind::string, false, "password (basic authentication)"},
                 {"title", kind::string, false, "template of the title (default {headline})"},
                 {"message", kind::string, false, "template of the message (default {summary})"},
                 {"priority", kind::string, false,
                  "1-5 or min, low, default, high, urgent (default: 5 for critical, 4 for "
                  "warning, 3 for resolved)"},
                 {"tags", kind::string_list, false, "tags (ntfy shows known ones as emojis)"}})},
      {"telegram",
       {{"bot_token", kind::string, true, "the bot's token from @BotFather"},
        {"chat_id", kind::string, true, "chat id (\"-1001234567890\") or @channelname"},
        {"api_url", kind::string, false, "Bot API server (default https://api.telegram.org)"},
        {"text", kind::string, false, "template of the message text (default {summary})"},
        {"parse_mode", kind::string, false, "HTML, MarkdownV2 or Markdown (default: plain text)"}}},
      {"pagerduty",
       {{"routing_key", kind::string, true, "integration key of the Events API v2 integration"},
        {"url", kind::string, false,
         "Events API endpoint (default https://events.pagerduty.com/v2/enqueue)"},
        {"source", kind::string, false, "payload.source (default: the host name)"}}},
      {"exec",
       {{"command", kind::string_list, true,
         "program and arguments, e.g. [\"/usr/local/bin/page\", \"--team\", \"ops\"] (no shell)"},
        {"env", kind::string_table, false,
         "environment variables added to the minimal environment"}}},
  };
  return t;
}

/// Keys the dispatcher reads; accepted and ignored here if a caller leaves them in.
bool is_common_key(std::string_view k) {
  return k == "name" || k == "type" || k == "group_wait" || k == "max_age" || k == "timeout" ||
         k == "rate_limit" || k == "retry_initial" || k == "retry_max";
}

std::string kind_text(kind k) {
  switch (k) {
    case kind::string:
      return "a string";
    case kind::boolean:
      return "true or false";
    case kind::integer:
      return "an integer";
    case kind::duration:
      return "a duration such as \"10s\"";
    case kind::string_list:
      return "a list of strings";
    case kind::string_table:
      return "a table of strings";
  }
  return "a value";
}

bool has_nul(const std::string& s) {
  return s.find('\0') != std::string::npos;
}

/// Reads the options of one spec after checking them against the type's table.
class option_reader {
 public:
  explicit option_reader(const notifier_spec& s) : spec_(s) {}

  tl::expected<void, notifier_error> check(const std::vector<notifier_option>& table) const {
    if (!spec_.options.is_object()) return fail("", "the options are not a table");
    std::vector<std::string> keys;
    for (const auto& o : table) keys.push_back(o.key);
    for (const auto& [key, value] : spec_.options.items()) {
      if (is_common_key(key)) continue;
      auto it = std::find_if(table.begin(), table.end(),
                             [&](const notifier_option& o) { return o.key == key; });
      if (it == table.end()) {
        const auto c = closest(key, keys);
        return fail(key, "unknown option for a " + spec_.type + " notifier" +
                             (c.empty() ? "" : " (did you mean '" + c + "'?)"));
      }
      if (!kind_ok(it->kind, value)) return fail(key, "expected " + kind_text(it->kind));
      if (has_nul_anywhere(value)) return fail(key, "contains a NUL byte");
    }
    for (const auto& o : table)
      if (o.required && !has(o.key)) return fail(o.key, "missing (" + o.help + ")");
    return {};
  }

  bool has(std::string_view key) const {
    auto it = spec_.options.find(key);
    return it != spec_.options.end() && !it->is_null();
  }
  std::string str(std::string_view key, std::string def = {}) const {
    auto it = spec_.options.find(key);
    return it != spec_.options.end() && it->is_string() ? it->get<std::string>() : def;
  }
  bool boolean(std::string_view key, bool def) const {
    auto it = spec_.options.find(key);
    return it != spec_.options.end() && it->is_boolean() ? it->get<bool>() : def;
  }
  std::vector<std::string> list(std::string_view key) const {
    std::vector<std::string> out;
    auto it = spec_.options.find(key);
    if (it == spec_.options.end()) return out;
    if (it->is_string()) return {it->get<std::string>()};
    if (it->is_array())
      for (const auto& v : *it) out.push_back(v.get<std::string>());
    return out;
  }
  std::vector<std::pair<std::string, std::string>> table(std::string_view key) const {
    std::vector<std::pair<std::string, std::string>> out;
    auto it = spec_.options.find(key);
    if (it == spec_.options.end() || !it->is_object()) return out;
    for (const auto& [k, v] : it->items()) out.emplace_back(k, v.get<std::string>());
    return out;
  }

 private:
  static bool kind_ok(kind k, const json& v) {
    switch (k) {
      case kind::string:
      case kind::duration:
        return v.is_string();
      case kind::boolean:
        return v.is_boolean();
      case kind::integer:
        return v.is_number_integer();
      case kind::string_list:
        return v.is_string() || (v.is_array() && std::all_of(v.begin(), v.end(), [](const json& e) {
                                   return e.is_string();
                                 }));
      case kind::string_table:
        return v.is_object() &&
               std::all_of(v.begin(), v.end(), [](const json& e) { return e.is_string(); });
    }
    return false;
  }
  static bool has_nul_anywhere(const json& v) {
    if (v.is_string()) return has_nul(v.get_ref<const std::string&>());
    if (v.is_array())
      return std::any_of(v.begin(), v.end(), [](const json& e) { return has_nul_anywhere(e); });
    if (v.is_object())
      for (const auto& [name, e] : v.items())
        if (has_nul(name) || has_nul_anywhere(e)) return true;
    return false;
  }

  const notifier_spec& spec_;
};

// ---- values ----------------------------------------------------------------------------------

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return out;
}

/// A normalized http(s) URL: "scheme://host:port/path?query".
tl::expected<std::string, notifier_error> http_url(const std::string& key,
                                                   const std::string& text) {
  const auto sep = text.find("://");
  const std::string scheme = lower(text.substr(0, sep == std::string::npos ? 0 : sep));
  if (scheme != "http" && scheme != "https")
    return fail(key, sonde::detail::quote_input(text) + " is not an http:// or https:// URL");
  for (unsigned char c : text)
    if (c <= 0x20 || c >= 0x7f)
      return fail(key, sonde::detail::quote_input(text) +
                           " contains a space, a control character or a non-ASCII byte "
                           "(percent-encode it)");
  auto u = sonde::detail::parse_http_url(text, false);
  if (!u) return fail(key, u.error());
  return (u->tls ? "https://" : "http://") + sonde::detail::bracketed(u->host) + ":" +
         std::to_string(u->port) + u->rest;
}

/// smtp://host[:port][/ehlo-name] or smtps://..., normalized with the port.
tl::expected<std::pair<std::string, bool>, notifier_error> smtp_url(const std::string& text) {
  auto bad = [&](const std::string& why) {
    return fail("url", sonde::detail::quote_input(text) + " is not a usable SMTP URL: " + why +
                           " (expected smtp://host[:port] or smtps://host[:port])");
  };
  const auto sep = text.find("://");
  const std::string scheme = lower(text.substr(0, sep == std::string::npos ? 0 : sep));
  if (scheme != "smtp" && scheme != "smtps") return bad("the scheme must be smtp or smtps");
  for (unsigned char c : text)
    if (c <= 0x20 || c >= 0x7f) return bad("space, control character or non-ASCII byte");
  const bool implicit_tls = scheme == "smtps";
  std::string_view rest = std::string_view(text).substr(sep + 3);
  const auto end = rest.find_first_of("/?#");
  const std::string_view authority = rest.substr(0, end);
  std::string_view path = end == std::string_view::npos ? std::string_view{} : rest.substr(end);
  if (authority.find('@') != std::string_view::npos)
    return bad("credentials belong in 'username' and 'password'");
  std::string host;
  std::string_view port_text;
  bool has_port = false;
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return bad("missing ']'");
    host = std::string(authority.substr(1, close - 1));
    if (!sonde::detail::is_ipv6_literal(host)) return bad("not an IPv6 address in brackets");
    const auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("expected ':port' after ']'");
      port_text = after.substr(1);
      has_port = true;
    }
  } else {
    const auto colon = authority.find(':');
    host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      has_port = true;
    }
    if (host.empty()) return bad("missing host");
    if (!sonde::detail::is_ipv4_literal(host))
      if (auto why = sonde::detail::check_host_name(host); !why.empty()) return bad(why);
  }
  unsigned long port = implicit_tls ? 465 : 25;
  if (has_port) {
    if (port_text.empty() || port_text.size() > 5 ||
        port_text.find_first_not_of("0123456789") != std::string_view::npos)
      return bad("the port must be 1-65535");
    port = std::stoul(std::string(port_text));
    if (port == 0 || port > 65535) return bad("the port must be 1-65535");
  }
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  if (path.find_first_of("?#") != std::string_view::npos)
    return bad("no query or fragment is allowed");
  if (!path.empty())
    if (auto why = sonde::detail::check_host_name(path); !why.empty())
      return bad("the path is the name given in EHLO: " + why);
  std::string url = scheme + "://" + sonde::detail::bracketed(host) + ":" + std::to_string(port);
  if (!path.empty()) url += "/" + std::string(path);
  return std::make_pair(url, implicit_tls);
}

tl::expected<message_template, notifier_error> template_option(const option_reader& r,
                                                               const std::string& key,
                                                               const std::string& fallback) {
  auto t = message_template::compile(r.str(key, fallback));
  if (!t) return fail(key, t.error().message);
  return std::move(*t);
}

bool is_token_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

/// Whether a header's value should be kept out of logs, judged by its name.
bool secret_header(const std::string& name) {
  const auto n = lower(name);
  for (const char* word : {"auth", "token", "key", "secret", "password", "cookie", "signature"})
    if (n.find(word) != std::string::npos) return true;
  return false;
}

/// A one-line, printable-ASCII option that goes into a header or a JSON field.
tl::expected<void, notifier_error> plain_line(const std::string& key, const std::string& v,
                                              std::size_t max = 256) {
  if (v.size() > max) return fail(key, "longer than " + std::to_string(max) + " characters");
  if (!is_printable_ascii(v))
    return fail(key, "must be printable ASCII on one line (no control characters)");
  return {};
}

tl::expected<bool, notifier_error> tls_verify(const option_reader& r) {
  return r.boolean("tls_verify", true);
}

tl::expected<std::string, notifier_error> ca_file(const option_reader& r) {
  auto f = r.str("ca_file");
  if (f.empty()) return f;
  if (auto ok = plain_line("ca_file", f, 4096); !ok) return tl::unexpected(ok.error());
  return f;
}

// ---- per type ------------------------------------------------------------------------------

tl::expected<webhook_config, notifier_error> parse_webhook(const option_reader& r) {
  webhook_config c;
  auto url = http_url("url", r.str("url"));
  if (!url) return tl::unexpected(url.error());
  c.url = *url;
  c.method = r.str("method", "POST");
  for (auto& ch : c.method)
    if (ch >= 'a' && ch <= 'z') ch = static_cast<char>(ch - 32);
  if (c.method != "POST" && c.method != "PUT" && c.method != "PATCH")
    return fail("method",
                sonde::detail::quote_input(r.str("method")) + " is not one of POST, PUT, PATCH");
  for (const auto& [name, value] : r.table("headers")) {
    if (name.empty() || name.size() > 128 || !std::all_of(name.begin(), name.end(), is_token_char))
      return fail("headers", sonde::detail::quote_input(name) +
                                 " is not a header name (letters, digits and !#$%&'*+-.^_`|~)");
    const auto n = lower(name);
    if (n == "content-type")
      return fail("headers", "set Content-Type with the 'content_type' option");
    if (n == "content-length" || n == "transfer-encoding" || n == "x-sonde-notification" ||
        n == "user-agent" || n == "expect" || n == "connection")
      return fail("headers", "'" + name + "' is set by sonde and cannot be given");
    if (auto ok = plain_line("headers." + name, value, 8192); !ok)
      return tl::unexpected(ok.error());
    c.headers.lines.push_back(name + ": " + value);
    if (secret_header(name)) {
      c.headers.secrets.push_back(value);
      // "Bearer <token>", "Basic <credentials>": the credentials alone must not show either.
      if (const auto sp = value.rfind(' '); sp != std::string::npos && sp + 1 < value.size())
        c.headers.secrets.push_back(value.substr(sp + 1));
    }
  }
  if (r.has("body")) {
    auto t = template_option(r, "body", "");
    if (!t) return tl::unexpected(t.error());
    c.body = std::move(*t);
  }
  c.content_type = r.str("content_type", "application/json");
  if (c.content_type.empty()) return fail("content_type", "empty (default application/json)");
  if (auto ok = plain_line("content_type", c.content_type); !ok) return tl::unexpected(ok.error());
  c.tls_verify = *tls_verify(r);
  auto ca = ca_file(r);
  if (!ca) return tl::unexpected(ca.error());
  c.ca_file = *ca;
  return c;
}

tl::expected<slack_config, notifier_error> parse_slack(const option_reader& r) {
  slack_config c;
  auto url = http_url("url", r.str("url"));
  if (!url) return tl::unexpected(url.error());
  c.url = *url;
  auto text = template_option(r, "text", "{summary}");
  if (!text) return tl::unexpected(text.error());
  c.text = std::move(*text);
  c.username = r.str("username");
  c.channel = r.str("channel");
  c.icon_emoji = r.str("icon_emoji");
  for (const auto* k : {"username", "channel", "icon_emoji"})
    if (const auto v = r.str(k); one_line(v, 256) != v)
      return fail(k, "must be one line of at most 256 bytes of UTF-8 text");
  c.tls_verify = *tls_verify(r);
  auto ca = ca_file(r);
  if (!ca) return tl::unexpected(ca.error());
  c.ca_file = *ca;
  return c;
}

tl::expected<email_config, notifier_error> parse_email(const option_reader& r) {
  email_config c;
  auto url = smtp_url(r.str("url"));
  if (!url) return tl::unexpected(url.error());
  c.url = url->first;
  const bool implicit_tls = url->second;
  const auto tls = lower(r.str("tls", "starttls"));
  if (tls != "starttls" && tls != "none")
    return fail("tls", sonde::detail::quote_input(r.str("tls")) +
                           " is not \"starttls\" or \"none\" (smtps:// URLs are always TLS)");
  if (tls == "none" && implicit_tls)
    return fail("tls", "\"none\" contradicts the smtps:// URL, which is always TLS");
  c.require_tls = tls == "starttls" || implicit_tls;
  auto from = parse_mailbox(r.str("from"));
  if (!from) return fail("from", from.error());
  c.from = std::move(*from);
  const auto to = r.list("to");
  if (to.empty()) return fail("to", "no recipient (give a list of addresses)");
  if (to.size() > 100) return fail("to", "more than 100 recipients");
  for (const auto& t : to) {
    auto m = parse_mailbox(t);
    if (!m) return fail("to", m.error());
    c.to.push_back(std::move(*m));
  }
  c.username = r.str("username");
  c.password = r.str("password");
  if (!c.password.empty() && c.username.empty())
    return fail("password", "given without 'username'");
  if (auto ok = plain_line("username", c.username); !ok) return tl::unexpected(ok.error());
  if (!c.password.empty() && !is_printable_ascii(c.password))
    return fail("password", "must be printable ASCII");
  if (!c.username.empty() && !c.require_tls)
    return fail("tls", "\"none\" would send the password in clear: use starttls or smtps://");
  auto subject = template_option(r, "subject", "[sonde] {headline}");
  if (!subject) return tl::unexpected(subject.error());
  c.subject = std::move(*subject);
  auto body = template_option(
      r, "body", "{summary}\n\n{details}\n\n-- \nsonde on {engine}, notification {id}\n");
  if (!body) return tl::unexpected(body.error());
  c.body = std::move(*body);
  c.tls_verify = *tls_verify(r);
  auto ca = ca_file(r);
  if (!ca) return tl::unexpected(ca.error());
  c.ca_file = *ca;
  return c;
}

tl::expected<ntfy_config, notifier_error> parse_ntfy(const option_reader& r) {
  ntfy_config c;
  auto url = http_url("url", r.str("url"));
  if (!url) return tl::unexpected(url.error());
  c.url = *url;
  const auto path = c.url.substr(c.url.find('/', c.url.find("://") + 3));
  if (path == "/" || path.starts_with("/?"))
    return fail("url", "no topic: give the server and the topic, e.g. https://ntfy.sh/alerts");
  c.token = r.str("token");
  c.username = r.str("username");
  c.password = r.str("password");
  if (!c.token.empty() && !c.username.empty())
    return fail("token", "give either 'token' or 'username' and 'password', not both");
  if (!c.password.empty() && c.username.empty())
    return fail("password", "given without 'username'");
  if (!c.token.empty() && !is_printable_ascii(c.token))
    return fail("token", "must be printable ASCII");
  if (auto ok = plain_line("username", c.username); !ok) return tl::unexpected(ok.error());
  if (!is_printable_ascii(c.password)) return fail("password", "must be printable ASCII");
  auto title = template_option(r, "title", "{headline}");
  if (!title) return tl::unexpected(title.error());
  c.title = std::move(*title);
  auto message = template_option(r, "message", "{summary}");
  if (!message) return tl::unexpected(message.error());
  c.message = std::move(*message);
  const auto p = lower(r.str("priority"));
  static const std::map<std::string, int, std::less<>> names = {
      {"", 0},    {"auto", 0}, {"1", 1},       {"2", 2},    {"3", 3},      {"4", 4},  {"5", 5},
      {"min", 1}, {"low", 2},  {"default", 3}, {"high", 4}, {"urgent", 5}, {"max", 5}};
  auto it = names.find(p);
  if (it == names.end())
    return fail("priority", sonde::detail::quote_input(r.str("priority")) +
                                " is not 1-5, min, low, default, high, urgent or max");
  c.priority = it->second;
  for (const auto& t : r.list("tags")) {
    if (t.empty() || t.size() > 64 || !is_printable_ascii(t) || t.find(',') != std::string::npos)
      return fail("tags", sonde::detail::quote_input(t) +
                              " is not a tag (1-64 printable ASCII characters, no comma)");
    c.tags.push_back(t);
  }
  c.tls_verify = *tls_verify(r);
  auto ca = ca_file(r);
  if (!ca) return tl::unexpected(ca.error());
  c.ca_file = *ca;
  return c;
}

tl::expected<telegram_config, notifier_error> parse_telegram(const option_reader& r) {
  telegram_config c;
  c.bot_token = r.str("bot_token");
  // Never echo the token: it is the bot's password.
  const auto colon = c.bot_token.find(':');
  const bool token_ok =
      colon != std::string::npos && colon > 0 && colon + 1 < c.bot_token.size() &&
      c.bot_token.size() <= 256 &&
      std::all_of(c.bot_token.begin(), c.bot_token.begin() + static_cast<long>(colon),
                  [](char ch) { return ch >= '0' && ch <= '9'; }) &&
      std::all_of(c.bot_token.begin() + static_cast<long>(colon) + 1, c.bot_token.end(),
                  [](char ch) {
                    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                           (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
                  });
  if (!token_ok)
    return fail("bot_token",
                "not a bot token (expected digits, ':' and letters, digits, '_' or '-', as "
                "@BotFather gives it)");
  c.chat_id = r.str("chat_id");
  const bool numeric =
      !c.chat_id.empty() && c.chat_id.size() <= 32 &&
      c.chat_id.find_first_not_of("0123456789", c.chat_id[0] == '-' ? 1 : 0) == std::string::npos &&
      c.chat_id != "-";
  const bool channel = c.chat_id.size() >= 2 && c.chat_id.size() <= 65 && c.chat_id[0] == '@' &&
                       std::all_of(c.chat_id.begin() + 1, c.chat_id.end(), [](char ch) {
                         return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                                (ch >= '0' && ch <= '9') || ch == '_';
                       });
  if (!numeric && !channel)
    return fail("chat_id", sonde::detail::quote_input(c.chat_id) +
                               " is not a chat id (a number such as \"-1001234567890\") or a "
                               "@channelname");
  auto api = http_url("api_url", r.str("api_url", "https://api.telegram.org"));
  if (!api) return tl::unexpected(api.error());
  c.api_url = *api;
  while (c.api_url.ends_with("/")) c.api_url.pop_back();
  if (c.api_url.find_first_of("?#") != std::string::npos)
    return fail("api_url", "no query or fragment is allowed");
  auto text = template_option(r, "text", "{summary}");
  if (!text) return tl::unexpected(text.error());
  c.text = std::move(*text);
  const auto pm = lower(r.str("parse_mode"));
  if (pm == "html")
    c.parse_mode = "HTML";
  else if (pm == "markdownv2")
    c.parse_mode = "MarkdownV2";
  else if (pm == "markdown")
    c.parse_mode = "Markdown";
  else if (!pm.empty())
    return fail("parse_mode", sonde::detail::quote_input(r.str("parse_mode")) +
                                  " is not HTML, MarkdownV2 or Markdown");
  return c;
}

tl::expected<pagerduty_config, notifier_error> parse_pagerduty(const option_reader& r) {
  pagerduty_config c;
  c.routing_key = r.str("routing_key");
  if (c.routing_key.empty() || c.routing_key.size() > 128 ||
      !std::all_of(c.routing_key.begin(), c.routing_key.end(), [](char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
      }))
    return fail("routing_key",
                "not an integration key (expected the 32 letters and digits PagerDuty shows)");
  auto url = http_url("url", r.str("url", "https://events.pagerduty.com/v2/enqueue"));
  if (!url) return tl::unexpected(url.error());
  c.url = *url;
  c.source = r.has("source") ? r.str("source") : host_name();
  if (c.source.empty()) return fail("source", "empty (default: the host name)");
  if (c.source.size() > 255 || one_line(c.source, 255) != c.source)
    return fail("source", "must be one line of at most 255 bytes");
  return c;
}

tl::expected<exec_config, notifier_error> parse_exec(const option_reader& r) {
  exec_config c;
  c.command = r.list("command");
  if (c.command.empty() || c.command[0].empty())
    return fail("command", "empty (give the program and its arguments as a list)");
  if (c.command.size() > 256) return fail("command", "more than 256 arguments");
  const auto& prog = c.command[0];
  if (prog.find('/') != std::string::npos && prog[0] != '/')
    return fail("command", sonde::detail::quote_input(prog) +
                               " is a relative path (give an absolute path or a name found on "
                               "PATH)");
  for (const auto& [name, value] : r.table("env")) {
    const bool ok = !name.empty() && name.size() <= 128 && !(name[0] >= '0' && name[0] <= '9') &&
                    std::all_of(name.begin(), name.end(), [](char ch) {
                      return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                             (ch >= '0' && ch <= '9') || ch == '_';
                    });
    if (!ok)
      return fail("env", sonde::detail::quote_input(name) +
                             " is not a variable name (letters, digits and '_', not starting "
                             "with a digit)");
    c.env.emplace_back(name, value);
  }
  return c;
}

/// Parse `spec` into its type's config and hand it to `use`.
template <class Use>
tl::expected<std::unique_ptr<notifier>, notifier_error> with_config(const notifier_spec& spec,
                                                                    Use&& use) {
  const auto& table = notifier_options(spec.type);
  if (table.empty()) {
    const auto c = closest(spec.type, notifier_types());
    std::string known;
    for (const auto& t : notifier_types()) known += (known.empty() ? "" : ", ") + t;
    return fail("type", sonde::detail::quote_input(spec.type) + " is not a notifier type" +
                            (c.empty() ? "" : " (did you mean '" + c + "'?)") +
                            "; types: " + known);
  }
  if (spec.timeout.count() <= 0) return fail("timeout", "must be more than 0s");
  option_reader r(spec);
  if (auto ok = r.check(table); !ok) return tl::unexpected(ok.error());
  auto wrap = [&](auto parsed) -> tl::expected<std::unique_ptr<notifier>, notifier_error> {
    if (!parsed) return tl::unexpected(parsed.error());
    return use(std::move(*parsed));
  };
  if (spec.type == "webhook") return wrap(parse_webhook(r));
  if (spec.type == "slack") return wrap(parse_slack(r));
  if (spec.type == "email") return wrap(parse_email(r));
  if (spec.type == "ntfy") return wrap(parse_ntfy(r));
  if (spec.type == "telegram") return wrap(parse_telegram(r));
  if (spec.type == "pagerduty") return wrap(parse_pagerduty(r));
  return wrap(parse_exec(r));
}

}  // namespace

const std::vector<std::string>& notifier_types() {
  static const std::vector<std::string> t = {"webhook",  "slack",     "email", "ntfy",
                                             "telegram", "pagerduty", "exec"};
  return t;
}

const std::vector<notifier_option>& notifier_options(std::string_view type) {
  static const std::vector<notifier_option> none;
  auto it = tables().find(type);
  return it == tables().end() ? none : it->second;
}

tl::expected<void, notifier_error> validate_notifier(const notifier_spec& spec) {
  auto r = with_config(spec, [](auto&&) { return std::unique_ptr<notifier>(); });
  if (!r) return tl::unexpected(r.error());
  return {};
}

tl::expected<std::unique_ptr<notifier>, notifier_error> make_notifier(asio::io_context& io,
                                                                      notifier_spec spec) {
  const notifier_spec reading = spec;  // `spec` moves into the notifier
  return with_config(reading, [&](auto&& c) -> std::unique_ptr<notifier> {
    using C = std::decay_t<decltype(c)>;
    if constexpr (std::is_same_v<C, webhook_config>)
      return make_webhook(io, std::move(spec), std::move(c));
    else if constexpr (std::is_same_v<C, slack_config>)
      return make_slack(io, std::move(spec), std::move(c));
    else if constexpr (std::is_same_v<C, email_config>)
      return make_email(io, std::move(spec), std::move(c));
    else if constexpr (std::is_same_v<C, ntfy_config>)
      return make_ntfy(io, std::move(spec), std::move(c));
    else if constexpr (std::is_same_v<C, telegram_config>)
      return make_telegram(io, std::move(spec), std::move(c));
    else if constexpr (std::is_same_v<C, pagerduty_config>)
      return make_pagerduty(io, std::move(spec), std::move(c));
    else
      return make_exec(io, std::move(spec), std::move(c));
  });
}

template_context context_of(const notification& n, const std::string& name) {
  return template_context{n.events, n.id, name, host_name()};
}

}  // namespace sonde::engine::alarms
