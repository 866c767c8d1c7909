#include "core/rfc3339.hpp"

#include <ctime>

namespace sonde::engine {

std::optional<std::chrono::system_clock::time_point> parse_rfc3339(std::string_view t,
                                                                   rfc3339_zone zone) {
  const bool any = zone == rfc3339_zone::required_any;
  // YYYY-MM-DDTHH:MM:SS[.fraction][Z|+HH:MM|-HH:MM]
  auto digits = [&](std::size_t at, std::size_t n, int& out) {
    if (at + n > t.size()) return false;
    out = 0;
    for (std::size_t i = at; i < at + n; ++i) {
      if (t[i] < '0' || t[i] > '9') return false;
      out = out * 10 + (t[i] - '0');
    }
    return true;
  };
  int y, mo, d, h, mi, s;
  if (t.size() < 19 || t.size() > 40 || !digits(0, 4, y) || t[4] != '-' || !digits(5, 2, mo) ||
      t[7] != '-' || !digits(8, 2, d) || (t[10] != 'T' && t[10] != 't' && !(any && t[10] == ' ')) ||
      !digits(11, 2, h) || t[13] != ':' || !digits(14, 2, mi) || t[16] != ':' || !digits(17, 2, s))
    return std::nullopt;
  if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60)
    return std::nullopt;
  std::size_t i = 19;
  long long ns = 0;
  if (i < t.size() && t[i] == '.') {
    long long scale = 100'000'000;
    std::size_t start = ++i;
    for (; i < t.size() && t[i] >= '0' && t[i] <= '9'; ++i) {
      ns += (t[i] - '0') * scale;
      scale /= 10;
    }
    if (i == start) return std::nullopt;
  }
  long long offset = 0;  // seconds east of UTC
  if (i < t.size() && (t[i] == 'Z' || t[i] == 'z')) {
    ++i;
  } else if (any && i < t.size() && (t[i] == '+' || t[i] == '-')) {
    int oh, om;
    if (!digits(i + 1, 2, oh) || i + 3 >= t.size() || t[i + 3] != ':' || !digits(i + 4, 2, om) ||
        oh > 23 || om > 59)
      return std::nullopt;
    offset = (oh * 3600LL + om * 60) * (t[i] == '-' ? -1 : 1);
    i += 6;
  } else if (any) {
    return std::nullopt;  // a zone is required
  }
  if (i != t.size()) return std::nullopt;
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  std::time_t secs = timegm(&tm);
  using wall = std::chrono::system_clock;
  return wall::time_point(std::chrono::duration_cast<wall::duration>(
      std::chrono::seconds(secs - offset) + std::chrono::nanoseconds(ns)));
}

}  // namespace sonde::engine
