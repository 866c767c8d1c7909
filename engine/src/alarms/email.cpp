// The e-mail as bytes (see email.hpp). Header injection is the danger here: every value that
// reaches a header line is made one line first, and addresses are checked character by
// character when the notifier is configured.
#include "alarms/email.hpp"

#include <ctime>

#include <sonde/target.hpp>

#include "alarms/event_text.hpp"

namespace sonde::engine::alarms {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

/// RFC 5322 atext plus '.', the characters of a dot-atom local part.
bool is_local_char(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-/=?^_`{|}~.").find(c) != std::string_view::npos;
}

/// Why `a` is not a user@domain address, or "".
std::string check_address(std::string_view a) {
  if (a.empty()) return "empty address";
  if (a.size() > 254) return "address longer than 254 characters";
  const auto at = a.rfind('@');
  if (at == std::string_view::npos) return "no '@'";
  const auto local = a.substr(0, at);
  const auto domain = a.substr(at + 1);
  if (local.empty() || local.size() > 64) return "the part before '@' must be 1-64 characters";
  for (char c : local)
    if (!is_local_char(c)) return "character not allowed before '@'";
  if (local.front() == '.' || local.back() == '.' || local.find("..") != std::string_view::npos)
    return "misplaced '.' before '@'";
  if (domain.empty()) return "nothing after '@'";
  if (domain.front() == '[') {
    if (domain.back() != ']') return "missing ']'";
    std::string ip(domain.substr(1, domain.size() - 2));
    if (ip.starts_with("IPv6:")) ip = ip.substr(5);
    if (!sonde::detail::is_ipv4_literal(ip) && !sonde::detail::is_ipv6_literal(ip))
      return "the address literal after '@' is not an IP address";
    return {};
  }
  if (auto why = sonde::detail::check_host_name(domain); !why.empty()) return why;
  return {};
}

}  // namespace

tl::expected<mailbox, std::string> parse_mailbox(std::string_view text) {
  auto fail = [&](const std::string& why) -> tl::unexpected<std::string> {
    return tl::unexpected(sonde::detail::quote_input(text) + " is not an e-mail address (" + why +
                          "; expected user@example.com or Name <user@example.com>)");
  };
  const std::string_view t = trim(text);
  for (unsigned char c : t)
    if (c < 0x20 || c == 0x7f) return fail("control character");
  mailbox m;
  if (!t.empty() && t.back() == '>') {
    const auto open = t.rfind('<');
    if (open == std::string_view::npos) return fail("'>' without '<'");
    m.address = std::string(t.substr(open + 1, t.size() - open - 2));
    std::string_view name = trim(t.substr(0, open));
    if (name.size() >= 2 && name.front() == '"' && name.back() == '"') {
      std::string unq;
      for (std::size_t i = 1; i + 1 < name.size(); ++i) {
        if (name[i] == '\\' && i + 2 < name.size()) ++i;
        unq += name[i];
      }
      m.display = std::move(unq);
    } else {
      m.display = std::string(name);
    }
    if (m.display.size() > 200) return fail("display name longer than 200 bytes");
    if (valid_utf8(m.display) != m.display) return fail("display name is not UTF-8");
  } else {
    m.address = std::string(t);
  }
  if (auto why = check_address(m.address); !why.empty()) return fail(why);
  return m;
}

std::string format_mailbox(const mailbox& m) {
  if (m.display.empty()) return m.address;
  const std::string name = one_line(m.display, 200);
  if (!is_printable_ascii(name)) return header_value(name, 200, "\r\n ") + " <" + m.address + ">";
  std::string q = "\"";
  for (char c : name) {
    if (c == '"' || c == '\\') q += '\\';
    q += c;
  }
  return q + "\" <" + m.address + ">";
}

std::string rfc5322_date(std::chrono::system_clock::time_point t) {
  static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday % 7],
                tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buf;
}

std::string quoted_printable(std::string_view text) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size() + text.size() / 8 + 16);
  std::size_t col = 0;  // characters on the current output line
  auto put = [&](std::string_view token) {
    if (col + token.size() > 75) {  // 75 + the soft break's '=' = 76
      out += "=\r\n";
      col = 0;
    }
    out += token;
    col += token.size();
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\n' || (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n')) {
      if (c == '\r') ++i;
      out += "\r\n";
      col = 0;
      continue;
    }
    const bool line_end = i + 1 == text.size() || text[i + 1] == '\n' ||
                          (text[i + 1] == '\r' && i + 2 < text.size() && text[i + 2] == '\n');
    char enc[3] = {'=', hex[c >> 4], hex[c & 15]};
    if ((c == ' ' || c == '\t') && !line_end) {
      const char ch = static_cast<char>(c);
      put(std::string_view(&ch, 1));
    } else if (c >= 33 && c <= 126 && c != '=') {
      // A '.' opening a line is left to libcurl's dot-stuffing; "From " needs nothing in QP.
      const char ch = static_cast<char>(c);
      put(std::string_view(&ch, 1));
    } else {
      put(std::string_view(enc, 3));
    }
  }
  if (!out.empty() && !out.ends_with("\r\n")) out += "\r\n";
  return out;
}

std::string compose_email(const email_message& m) {
  std::string out;
  out += "Date: " + rfc5322_date(m.date) + "\r\n";
  out += "From: " + format_mailbox(m.from) + "\r\n";
  out += "To: ";
  for (std::size_t i = 0; i < m.to.size(); ++i)
    out += (i ? ",\r\n " : "") + format_mailbox(m.to[i]);
  out += "\r\n";
  out += "Subject: " + header_value(m.subject, 250, "\r\n ") + "\r\n";
  std::string host;
  for (char c : m.host)
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.')
      host += c;
  if (host.empty()) host = "sonde.invalid";
  std::string tag;
  for (char c : m.id_tag)
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) tag += c;
  out += "Message-ID: <sonde." + std::to_string(m.id) + (tag.empty() ? "" : "." + tag) + "@" +
         host + ">\r\n";
  out += "MIME-Version: 1.0\r\n";
  out += "Content-Type: text/plain; charset=UTF-8\r\n";
  out += "Content-Transfer-Encoding: quoted-printable\r\n";
  out += "Auto-Submitted: auto-generated\r\n";
  out += "X-Sonde-Notification: " + std::to_string(m.id) + "\r\n";
  if (m.test) out += "X-Sonde-Test: true\r\n";
  out += "\r\n";
  out += quoted_printable(valid_utf8(m.body));
  return out;
}

}  // namespace sonde::engine::alarms
