#pragma once
/// @file system_parse.hpp
/// Parsers for the /proc and /sys files the `system` checker reads, and the arithmetic over
/// them. Pure functions over text: no file access, no ASIO, so they can be tested with recorded
/// fixtures, fuzzed and benchmarked. Every parser either returns the parsed value or an error
/// string that says what was wrong and where ("line 3: ..."); the caller adds the file name.
/// All functions are thread-safe (no shared state).

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <tl/expected.hpp>

namespace sonde::detail::sys {

/// Split off the next line of `text` (without its '\n').
inline std::string_view next_line(std::string_view& text) {
  auto nl = text.find('\n');
  auto line = text.substr(0, nl);
  text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
  return line;
}

/// Split off the next whitespace-separated field of `line`; empty at the end.
inline std::string_view next_field(std::string_view& line) {
  std::size_t i = 0;
  while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
  std::size_t j = i;
  while (j < line.size() && line[j] != ' ' && line[j] != '\t') ++j;
  auto f = line.substr(i, j - i);
  line.remove_prefix(j);
  return f;
}

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

/// A whole unsigned decimal field, or nullopt.
inline std::optional<std::uint64_t> to_u64(std::string_view s) {
  std::uint64_t v = 0;
  if (s.empty()) return std::nullopt;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

/// A whole decimal number ("0.52", "10250.39"), or nullopt. Locale-independent.
inline std::optional<double> to_double(std::string_view s) {
  double v = 0;
  if (s.empty()) return std::nullopt;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

inline std::string at_line(std::size_t n, std::string_view what) {
  return "line " + std::to_string(n) + ": " + std::string(what);
}

// ---- /proc/stat ------------------------------------------------------------------------------

/// CPU time counters of one `cpu` line of /proc/stat, in clock ticks (USER_HZ).
struct cpu_times {
  int id = -1;  ///< -1 for the aggregate "cpu" line, else the N of "cpuN"
  std::uint64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0,
                steal = 0;
  /// All time, without guest/guest_nice (the kernel already counts them in user/nice).
  std::uint64_t total() const noexcept {
    return user + nice + system + idle + iowait + irq + softirq + steal;
  }
};

/// Parse /proc/stat: the aggregate line first, then one entry per `cpuN` line. Lines with
/// fewer than the 4 fields of the oldest kernels are errors; missing later fields are 0.
inline tl::expected<std::vector<cpu_times>, std::string> parse_stat(std::string_view text) {
  std::vector<cpu_times> out;
  std::size_t n = 0;
  while (!text.empty()) {
    auto line = next_line(text);
    ++n;
    auto name = next_field(line);
    if (!name.starts_with("cpu")) continue;
    cpu_times c;
    auto id = name.substr(3);
    if (!id.empty()) {
      auto v = to_u64(id);
      if (!v || *v > 1'000'000)
        return tl::unexpected(at_line(n, "bad cpu name \"" + std::string(name) + "\""));
      c.id = static_cast<int>(*v);
    } else if (!out.empty()) {
      return tl::unexpected(at_line(n, "a second aggregate \"cpu\" line"));
    }
    std::uint64_t* fields[] = {&c.user,   &c.nice, &c.system,  &c.idle,
                               &c.iowait, &c.irq,  &c.softirq, &c.steal};
    std::size_t got = 0;
    for (auto* f : fields) {
      auto tok = next_field(line);
      if (tok.empty()) break;
      auto v = to_u64(tok);
      if (!v) return tl::unexpected(at_line(n, "\"" + std::string(tok) + "\" is not a counter"));
      *f = *v;
      ++got;
    }
    if (got < 4)
      return tl::unexpected(at_line(n, "\"" + std::string(name) + "\" has " + std::to_string(got) +
                                           " counters, expected at least 4"));
    if (c.id < 0 ? !out.empty() : out.empty())
      return tl::unexpected(at_line(n, "the aggregate \"cpu\" line must come first"));
    out.push_back(c);
  }
  if (out.empty()) return tl::unexpected(std::string("no \"cpu\" line"));
  return out;
}

/// CPU percentages (0-100) between two readings of the same CPU.
struct cpu_usage {
  double total = 0;   ///< everything but idle and iowait
  double user = 0;    ///< user + nice
  double system = 0;  ///< system + irq + softirq
  double iowait = 0;
  double steal = 0;
};

/// Counter increase from `a` to `b`; 0 when the counter went backwards (reset, hotplug).
inline std::uint64_t counter_delta(std::uint64_t a, std::uint64_t b) noexcept {
  return b >= a ? b - a : 0;
}

/// Usage between two readings; nullopt when no tick elapsed (nothing to divide by).
inline std::optional<cpu_usage> cpu_percent(const cpu_times& a, const cpu_times& b) noexcept {
  auto d = [](std::uint64_t x, std::uint64_t y) {
    return static_cast<double>(counter_delta(x, y));
  };
  const double user = d(a.user, b.user) + d(a.nice, b.nice);
  const double system = d(a.system, b.system) + d(a.irq, b.irq) + d(a.softirq, b.softirq);
  const double idle = d(a.idle, b.idle);
  const double iowait = d(a.iowait, b.iowait);
  const double steal = d(a.steal, b.steal);
  const double all = user + system + idle + iowait + steal;
  if (all <= 0) return std::nullopt;
  cpu_usage u;
  u.total = 100.0 * (user + system + steal) / all;
  u.user = 100.0 * user / all;
  u.system = 100.0 * system / all;
  u.iowait = 100.0 * iowait / all;
  u.steal = 100.0 * steal / all;
  return u;
}

// ---- /proc/meminfo ---------------------------------------------------------------------------

/// The /proc/meminfo values the checker uses, in bytes.
struct meminfo {
  std::uint64_t total = 0, free = 0, available = 0, buffers = 0, cached = 0, swap_total = 0,
                swap_free = 0;
  bool has_available = false;  ///< MemAvailable present (Linux 3.14+)
};

/// Parse /proc/meminfo ("Key:   123 kB"). MemTotal and MemFree are required; without
/// MemAvailable, available is estimated as MemFree + Buffers + Cached.
inline tl::expected<meminfo, std::string> parse_meminfo(std::string_view text) {
  meminfo m;
  bool total = false, free = false;
  std::size_t n = 0;
  while (!text.empty()) {
    auto line = next_line(text);
    ++n;
    auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    auto key = line.substr(0, colon);
    std::uint64_t* dst = nullptr;
    if (key == "MemTotal")
      dst = &m.total, total = true;
    else if (key == "MemFree")
      dst = &m.free, free = true;
    else if (key == "MemAvailable")
      dst = &m.available, m.has_available = true;
    else if (key == "Buffers")
      dst = &m.buffers;
    else if (key == "Cached")
      dst = &m.cached;
    else if (key == "SwapTotal")
      dst = &m.swap_total;
    else if (key == "SwapFree")
      dst = &m.swap_free;
    if (!dst) continue;
    auto rest = line.substr(colon + 1);
    auto num = next_field(rest);
    auto unit = next_field(rest);
    auto v = to_u64(num);
    if (!v)
      return tl::unexpected(
          at_line(n, std::string(key) + ": \"" + std::string(num) + "\" is not a number"));
    std::uint64_t scale = 1;
    if (unit == "kB")
      scale = 1024;
    else if (!unit.empty())
      return tl::unexpected(
          at_line(n, std::string(key) + ": unknown unit \"" + std::string(unit) + "\""));
    if (*v > UINT64_MAX / scale)
      return tl::unexpected(at_line(n, std::string(key) + ": value out of range"));
    *dst = *v * scale;
  }
  if (!total) return tl::unexpected(std::string("no MemTotal line"));
  if (!free) return tl::unexpected(std::string("no MemFree line"));
  if (!m.has_available) m.available = m.free + m.buffers + m.cached;
  if (m.available > m.total) m.available = m.total;
  if (m.swap_free > m.swap_total) m.swap_free = m.swap_total;
  return m;
}

// ---- /proc/loadavg, /proc/uptime -------------------------------------------------------------

struct loadavg {
  double one = 0, five = 0, fifteen = 0;
};

/// Parse /proc/loadavg ("0.52 0.40 0.33 1/123 4567"): the three averages.
inline tl::expected<loadavg, std::string> parse_loadavg(std::string_view text) {
  auto line = next_line(text);
  loadavg l;
  double* dst[] = {&l.one, &l.five, &l.fifteen};
  for (auto* d : dst) {
    auto tok = next_field(line);
    auto v = to_double(tok);
    if (!v || *v < 0) return tl::unexpected("\"" + std::string(tok) + "\" is not a load average");
    *d = *v;
  }
  return l;
}

/// Parse /proc/uptime ("10250.39 2754.99"): seconds since boot.
inline tl::expected<double, std::string> parse_uptime(std::string_view text) {
  auto line = next_line(text);
  auto tok = next_field(line);
  auto v = to_double(tok);
  if (!v || *v < 0)
    return tl::unexpected("\"" + std::string(tok) + "\" is not a number of seconds");
  return *v;
}

// ---- /proc/net/dev ---------------------------------------------------------------------------

/// Counters of one interface from /proc/net/dev.
struct net_counters {
  std::string name;
  std::uint64_t rx_bytes = 0, rx_errs = 0, rx_drop = 0, tx_bytes = 0, tx_errs = 0, tx_drop = 0;
};

/// Parse /proc/net/dev: two header lines, then "iface: 16 counters" per line.
inline tl::expected<std::vector<net_counters>, std::string> parse_net_dev(std::string_view text) {
  std::vector<net_counters> out;
  std::size_t n = 0;
  while (!text.empty()) {
    auto line = next_line(text);
    ++n;
    if (n <= 2 || trim(line).empty()) continue;  // headers
    auto colon = line.find(':');
    if (colon == std::string_view::npos)
      return tl::unexpected(at_line(n, "no ':' after the interface name"));
    net_counters c;
    c.name = std::string(trim(line.substr(0, colon)));
    if (c.name.empty()) return tl::unexpected(at_line(n, "empty interface name"));
    auto rest = line.substr(colon + 1);
    std::uint64_t v[16];
    for (std::size_t i = 0; i < 16; ++i) {
      auto tok = next_field(rest);
      auto x = to_u64(tok);
      if (!x)
        return tl::unexpected(
            at_line(n, c.name + ": expected 16 counters, field " + std::to_string(i + 1) +
                           (tok.empty() ? " is missing" : " is \"" + std::string(tok) + "\"")));
      v[i] = *x;
    }
    c.rx_bytes = v[0], c.rx_errs = v[2], c.rx_drop = v[3];
    c.tx_bytes = v[8], c.tx_errs = v[10], c.tx_drop = v[11];
    out.push_back(std::move(c));
  }
  if (n < 2) return tl::unexpected(std::string("missing the two header lines"));
  return out;
}

// ---- /proc/diskstats -------------------------------------------------------------------------

/// Counters of one block device from /proc/diskstats. Sectors are 512 bytes whatever the
/// device's sector size; io_ticks is milliseconds spent doing I/O.
struct disk_counters {
  std::string name;
  std::uint64_t read_sectors = 0, write_sectors = 0, io_ticks = 0;
};

/// Parse /proc/diskstats ("major minor name" then at least 11 counters).
inline tl::expected<std::vector<disk_counters>, std::string> parse_diskstats(
    std::string_view text) {
  std::vector<disk_counters> out;
  std::size_t n = 0;
  while (!text.empty()) {
    auto line = next_line(text);
    ++n;
    if (trim(line).empty()) continue;
    auto major = next_field(line), minor = next_field(line), name = next_field(line);
    if (!to_u64(major) || !to_u64(minor) || name.empty())
      return tl::unexpected(at_line(n, "expected \"major minor name counters...\""));
    std::uint64_t v[11];
    for (std::size_t i = 0; i < 11; ++i) {
      auto tok = next_field(line);
      auto x = to_u64(tok);
      if (!x)
        return tl::unexpected(
            at_line(n, std::string(name) + ": expected at least 11 counters, field " +
                           std::to_string(i + 1) +
                           (tok.empty() ? " is missing" : " is \"" + std::string(tok) + "\"")));
      v[i] = *x;
    }
    disk_counters d;
    d.name = std::string(name);
    d.read_sectors = v[2];
    d.write_sectors = v[6];
    d.io_ticks = v[9];
    out.push_back(std::move(d));
  }
  return out;
}

// ---- /proc/mounts ----------------------------------------------------------------------------

struct mount_entry {
  std::string device, point, type;
};

/// Undo the kernel's octal escapes in /proc/mounts fields ("\040" for a space).
inline std::string unescape_mount(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      auto o = [](char c) { return c >= '0' && c <= '7'; };
      if (o(s[i + 1]) && o(s[i + 2]) && o(s[i + 3])) {
        int v = (s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0');
        out.push_back(static_cast<char>(v & 0xff));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

/// Parse /proc/mounts ("device mountpoint fstype options dump pass").
inline tl::expected<std::vector<mount_entry>, std::string> parse_mounts(std::string_view text) {
  std::vector<mount_entry> out;
  std::size_t n = 0;
  while (!text.empty()) {
    auto line = next_line(text);
    ++n;
    if (trim(line).empty()) continue;
    auto dev = next_field(line), point = next_field(line), type = next_field(line);
    if (type.empty()) return tl::unexpected(at_line(n, "expected \"device mountpoint type ...\""));
    out.push_back({unescape_mount(dev), unescape_mount(point), std::string(type)});
  }
  return out;
}

/// File system types skipped unless a `mounts` pattern names them: virtual and pseudo file
/// systems, in-memory ones, read-only images, container layers, and network file systems
/// (statvfs on a dead server blocks the calling thread).
inline bool skipped_fstype(std::string_view t) {
  static constexpr std::string_view skip[] = {
      "proc",    "sysfs",      "devtmpfs",  "devpts",    "tmpfs",       "ramfs",   "securityfs",
      "cgroup",  "cgroup2",    "pstore",    "bpf",       "debugfs",     "tracefs", "configfs",
      "fusectl", "mqueue",     "hugetlbfs", "autofs",    "binfmt_misc", "overlay", "squashfs",
      "nsfs",    "rpc_pipefs", "efivarfs",  "selinuxfs", "nfsd",        "iso9660", "udf",
      "nfs",     "nfs4",       "cifs",      "smb3",      "smbfs",       "9p",      "ceph",
      "afs",     "glusterfs",  "lustre",    "sshfs",     "devfs",       "aufs",    "zram"};
  if (t.starts_with("fuse.") || t == "fuse") return true;
  return std::find(std::begin(skip), std::end(skip), t) != std::end(skip);
}

// ---- /proc/cpuinfo, os-release --------------------------------------------------------------

struct cpu_info {
  std::string model;   ///< "" when no known key was found
  unsigned count = 0;  ///< "processor" lines
};

/// The CPU model ("model name" on x86, "Processor"/"Hardware"/"cpu model"/"cpu" elsewhere) and
/// the number of "processor" entries.
inline cpu_info parse_cpuinfo(std::string_view text) {
  cpu_info c;
  int rank = 99;  // prefer the most specific key
  while (!text.empty()) {
    auto line = next_line(text);
    auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    auto key = trim(line.substr(0, colon));
    auto value = trim(line.substr(colon + 1));
    if (key == "processor") {
      ++c.count;
      continue;
    }
    int r = key == "model name"  ? 0
            : key == "cpu model" ? 1
            : key == "Processor" ? 2
            : key == "Hardware"  ? 3
            : key == "cpu"       ? 4
                                 : 99;
    if (r < rank && !value.empty()) {
      rank = r;
      c.model = std::string(value);
    }
  }
  return c;
}

/// PRETTY_NAME from os-release, else "NAME VERSION", else "".
inline std::string parse_os_release(std::string_view text) {
  std::string pretty, name, version;
  while (!text.empty()) {
    auto line = trim(next_line(text));
    auto eq = line.find('=');
    if (eq == std::string_view::npos || line.starts_with("#")) continue;
    auto key = line.substr(0, eq);
    auto v = line.substr(eq + 1);
    if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front())
      v = v.substr(1, v.size() - 2);
    std::string value;
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (v[i] == '\\' && i + 1 < v.size()) ++i;
      value.push_back(v[i]);
    }
    if (key == "PRETTY_NAME")
      pretty = value;
    else if (key == "NAME")
      name = value;
    else if (key == "VERSION")
      version = value;
  }
  if (!pretty.empty()) return pretty;
  if (!version.empty() && !name.empty()) return name + " " + version;
  return name;
}

// ---- metric names ----------------------------------------------------------------------------

/// One metric-name segment from an interface or device name: every character outside
/// [A-Za-z0-9_-] becomes '_' ("eth0.100" -> "eth0_100", "cciss/c0d0" -> "cciss_c0d0").
inline std::string metric_segment(std::string_view name) {
  std::string s(name);
  for (auto& c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-';
    if (!ok) c = '_';
  }
  if (s.empty()) s = "_";
  return s;
}

/// The segment for a mount point: "/" -> "root", else without the leading '/' and sanitised as
/// metric_segment ("/var/log" -> "var_log", "/mnt/my disk" -> "mnt_my_disk").
inline std::string mount_segment(std::string_view point) {
  while (point.size() > 1 && point.back() == '/') point.remove_suffix(1);
  if (point == "/" || point.empty()) return "root";
  while (!point.empty() && point.front() == '/') point.remove_prefix(1);
  return metric_segment(point);
}

// ---- human-readable text ---------------------------------------------------------------------

/// "3.1 GiB", "512.0 MiB", "12 B".
inline std::string human_bytes(double b) {
  static constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (b >= 1024 && u < 5) b /= 1024, ++u;
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%.0f B", b);
  else
    std::snprintf(buf, sizeof buf, "%.1f %s", b, units[u]);
  return buf;
}

/// "3d 4h", "4h 12m", "12m", "45s".
inline std::string human_uptime(double s) {
  auto t = static_cast<std::uint64_t>(s < 0 ? 0 : s);
  auto d = t / 86400, h = t % 86400 / 3600, m = t % 3600 / 60;
  if (d) return std::to_string(d) + "d " + std::to_string(h) + "h";
  if (h) return std::to_string(h) + "h " + std::to_string(m) + "m";
  if (m) return std::to_string(m) + "m";
  return std::to_string(t) + "s";
}

}  // namespace sonde::detail::sys
