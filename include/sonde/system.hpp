#pragma once
/// @file system.hpp
/// system_probe: host metrics of the machine the probe runs on, read directly from /proc and
/// /sys (never by running programs), and `sonde::system::host_facts()` for the agent's info
/// command.
///
/// Rates and CPU percentages need two readings of the kernel's counters. The probe keeps the
/// previous reading: the first run of a fresh probe reads, waits the `sample` window (default
/// 250ms, shortened to fit the deadline) and reads again; later runs use the difference since
/// the previous run, so "per second over the interval" holds exactly for scheduled tasks. A run
/// less than `sample` after the previous one takes a fresh window instead (too few ticks).
///
/// Metrics (see docs/probes/system.md):
///   cpu.total, cpu.user, cpu.system, cpu.iowait, cpu.steal, cpu.<n>    percent 0-100
///   mem.total, mem.used, mem.available, swap.used, swap.total          bytes
///   mem.used_pct                                                        percent
///   load.1, load.5, load.15                                             plain numbers
///   uptime                                                              seconds
///   net.<iface>.rx_bytes, net.<iface>.tx_bytes                          bytes per second
///   net.<iface>.errors, net.<iface>.drops                               per second (rx + tx)
///   disk.<dev>.read_bytes, disk.<dev>.write_bytes                       bytes per second
///   disk.<dev>.util                                                     percent of the interval
///   fs.<mount>.used_pct                                                 percent; fs.<mount>.avail
///   bytes
/// Names of interfaces, devices and mounts become one metric segment: characters outside
/// [A-Za-z0-9_-] become '_', a mount point loses its leading '/', and "/" is "root"
/// (`/var/log` -> `fs.var_log.used_pct`). A name that collides with an earlier one gets "_2",
/// "_3"... appended.
///
/// Outcomes: healthy with a one-line summary ("cpu 12.3% (4 cores), mem 3.1 GiB/15.6 GiB, load
/// 0.52 0.40 0.33, up 3d 4h"); reason::error when a file is missing or malformed (the message
/// names the file; every metric that could be read is still reported); reason::mismatch when an
/// interface, disk or mount named literally in the options does not exist.

#include <arpa/inet.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "detail/system_parse.hpp"
#include "probe.hpp"

namespace sonde {
namespace system {

/// Space of one file system, in bytes, as statvfs reports it.
struct fs_usage {
  std::uint64_t total = 0;  ///< f_blocks * f_frsize
  std::uint64_t used = 0;   ///< (f_blocks - f_bfree) * f_frsize
  std::uint64_t avail = 0;  ///< f_bavail * f_frsize: free space for unprivileged users
  /// used / (used + avail), as df computes Use%: blocks reserved for root are not counted free.
  double used_pct() const noexcept {
    const double d = static_cast<double>(used) + static_cast<double>(avail);
    return d > 0 ? 100.0 * static_cast<double>(used) / d : 0.0;
  }
};

/// How the probe asks for a file system's space; replaceable for tests (fixtures have no real
/// mounts). Returns an error text on failure.
using statvfs_function = std::function<tl::expected<fs_usage, std::string>(const std::string&)>;

/// statvfs(2) of `path`. Thread-safe. May block on a dead network file system: the probe skips
/// those types unless a `mounts` pattern names them.
inline tl::expected<fs_usage, std::string> statvfs_usage(const std::string& path) {
  struct statvfs s {};
  if (::statvfs(path.c_str(), &s) != 0) return tl::unexpected(std::string(std::strerror(errno)));
  const std::uint64_t fr = s.f_frsize ? s.f_frsize : s.f_bsize;
  fs_usage u;
  u.total = static_cast<std::uint64_t>(s.f_blocks) * fr;
  u.used = static_cast<std::uint64_t>(s.f_blocks - std::min(s.f_bfree, s.f_blocks)) * fr;
  u.avail = static_cast<std::uint64_t>(s.f_bavail) * fr;
  return u;
}

/// Read a whole small file (procfs and sysfs report size 0, so read until EOF; at most 4 MiB).
/// Errors are "cannot read PATH: why". Thread-safe.
inline tl::expected<std::string, std::string> read_file(const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return tl::unexpected("cannot read " + path + ": " + std::strerror(errno));
  std::string out;
  char buf[8192];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      std::string e = "cannot read " + path + ": " + std::strerror(errno);
      ::close(fd);
      return tl::unexpected(e);
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    if (out.size() > (4u << 20)) {
      ::close(fd);
      return tl::unexpected("cannot read " + path + ": larger than 4 MiB");
    }
  }
  ::close(fd);
  return out;
}

/// `root` joined with an absolute path: ("/", "/proc/stat") -> "/proc/stat",
/// ("/tmp/fx", "/proc/stat") -> "/tmp/fx/proc/stat".
inline std::string join_root(std::string_view root, std::string_view path) {
  while (root.size() > 1 && root.back() == '/') root.remove_suffix(1);
  if (root == "/" || root.empty()) return std::string(path);
  return std::string(root) + std::string(path);
}

/// Which interfaces, disks or mounts to report: shell patterns (fnmatch), `!pattern` to
/// exclude. With no positive pattern the default set applies (minus the exclusions).
struct name_filter {
  std::vector<std::string> include, exclude;

  /// From the option's list; empty strings are ignored. `given` false: the default set.
  static name_filter from(const std::vector<std::string>& items) {
    name_filter f;
    for (const auto& s : items) {
      if (s.empty()) continue;
      if (s[0] == '!') {
        if (s.size() > 1) f.exclude.push_back(s.substr(1));
      } else {
        f.include.push_back(s);
      }
    }
    return f;
  }
  /// Whether `name` is reported; `by_default` is the default rule's answer for it.
  bool selects(const std::string& name, bool by_default) const {
    for (const auto& p : exclude)
      if (::fnmatch(p.c_str(), name.c_str(), 0) == 0) return false;
    if (include.empty()) return by_default;
    for (const auto& p : include)
      if (::fnmatch(p.c_str(), name.c_str(), 0) == 0) return true;
    return false;
  }
  /// Positive entries without wildcard characters: names the user expects to exist.
  std::vector<std::string> literals() const {
    std::vector<std::string> out;
    for (const auto& p : include)
      if (p.find_first_of("*?[") == std::string::npos) out.push_back(p);
    return out;
  }
};

/// One reading of the counters that rates are computed from.
struct counters {
  clock::time_point when{};                       ///< monotonic time of the reading
  std::vector<detail::sys::cpu_times> cpus;       ///< aggregate first, then per CPU
  std::vector<detail::sys::net_counters> net;     ///< selected interfaces; name = metric segment
  std::vector<detail::sys::disk_counters> disks;  ///< selected disks; name = metric segment
  std::vector<std::string> errors;                ///< files that could not be read or parsed
  std::vector<std::string> missing;  ///< literally named interfaces/disks that do not exist
};

namespace detail_ {
/// Give `seg` a suffix if it is already in `used` ("_2", "_3"...), and record it.
inline std::string unique_segment(std::string seg, std::vector<std::string>& used) {
  std::string s = seg;
  for (int k = 2; std::find(used.begin(), used.end(), s) != used.end(); ++k)
    s = seg + "_" + std::to_string(k);
  used.push_back(s);
  return s;
}
inline bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}
/// Loopback per /sys/class/net/<if>/flags (IFF_LOOPBACK); by name when unreadable.
inline bool is_loopback(std::string_view root, const std::string& iface) {
  auto f = read_file(join_root(root, "/sys/class/net/" + iface + "/flags"));
  if (f) {
    unsigned long v = std::strtoul(f->c_str(), nullptr, 16);
    return (v & IFF_LOOPBACK) != 0;
  }
  return iface == "lo";
}
/// A physical whole disk: /sys/block/<dev>/device exists (partitions are not in /sys/block;
/// loop, ram, zram, dm and md devices have no device link). Without /sys/block, every device
/// but loop, ram and zram.
inline bool is_physical_disk(std::string_view root, const std::string& dev) {
  if (dev.starts_with("loop") || dev.starts_with("ram") || dev.starts_with("zram")) return false;
  std::string sysname = dev;
  std::replace(sysname.begin(), sysname.end(), '/', '!');
  if (!exists(join_root(root, "/sys/block"))) return true;
  return exists(join_root(root, "/sys/block/" + sysname + "/device"));
}
}  // namespace detail_

/// Read /proc/stat, /proc/net/dev and /proc/diskstats under `root`, keeping the interfaces and
/// disks the filters select. Problems are recorded in `errors`, not thrown. Thread-safe.
/// `net` or `disks` false: that file is not read.
inline counters read_counters(std::string_view root, const name_filter& ifaces,
                              const name_filter& disks, bool net = true, bool disk = true) {
  namespace sys = sonde::detail::sys;
  counters c;
  c.when = clock::now();
  auto load = [&](const char* rel, auto parse, auto& out) {
    auto path = join_root(root, rel);
    auto text = read_file(path);
    if (!text) {
      c.errors.push_back(text.error());
      return;
    }
    auto v = parse(*text);
    if (!v) {
      c.errors.push_back(path + ": malformed: " + v.error());
      return;
    }
    out = std::move(*v);
  };
  load("/proc/stat", sys::parse_stat, c.cpus);
  if (net) {
    std::vector<sys::net_counters> all;
    load("/proc/net/dev", sys::parse_net_dev, all);
    std::vector<std::string> used;
    std::vector<std::string> seen;
    for (auto& n : all) {
      seen.push_back(n.name);
      if (!ifaces.selects(n.name, !detail_::is_loopback(root, n.name))) continue;
      n.name = detail_::unique_segment(sys::metric_segment(n.name), used);
      c.net.push_back(std::move(n));
    }
    if (!all.empty() || c.errors.empty())
      for (const auto& l : ifaces.literals())
        if (std::find(seen.begin(), seen.end(), l) == seen.end())
          c.missing.push_back("interface " + l);
  }
  if (disk) {
    std::vector<sys::disk_counters> all;
    auto before = c.errors.size();
    load("/proc/diskstats", sys::parse_diskstats, all);
    std::vector<std::string> used;
    std::vector<std::string> seen;
    for (auto& d : all) {
      seen.push_back(d.name);
      if (!disks.selects(d.name, detail_::is_physical_disk(root, d.name))) continue;
      d.name = detail_::unique_segment(sys::metric_segment(d.name), used);
      c.disks.push_back(std::move(d));
    }
    if (c.errors.size() == before)
      for (const auto& l : disks.literals())
        if (std::find(seen.begin(), seen.end(), l) == seen.end()) c.missing.push_back("disk " + l);
  }
  return c;
}

/// Add the rate metrics between readings `a` (earlier) and `b`: cpu.* (percent of the ticks
/// between them), net.* and disk.* (per second over b.when - a.when). Entries present in only
/// one reading are skipped; a counter that went backwards counts as no change. Thread-safe.
inline void add_rates(const counters& a, const counters& b, observation& obs, bool per_core) {
  namespace sys = sonde::detail::sys;
  if (!a.cpus.empty() && !b.cpus.empty()) {
    if (auto u = sys::cpu_percent(a.cpus.front(), b.cpus.front())) {
      obs.set("cpu.total", u->total);
      obs.set("cpu.user", u->user);
      obs.set("cpu.system", u->system);
      obs.set("cpu.iowait", u->iowait);
      obs.set("cpu.steal", u->steal);
    }
    if (per_core) {
      for (std::size_t i = 1; i < b.cpus.size(); ++i) {
        const auto& cb = b.cpus[i];
        auto it = std::find_if(a.cpus.begin() + 1, a.cpus.end(),
                               [&](const sys::cpu_times& x) { return x.id == cb.id; });
        if (it == a.cpus.end()) continue;
        if (auto u = sys::cpu_percent(*it, cb)) obs.set("cpu." + std::to_string(cb.id), u->total);
      }
    }
  }
  const double secs = std::chrono::duration<double>(b.when - a.when).count();
  if (secs <= 0) return;
  auto rate = [&](std::uint64_t x, std::uint64_t y) {
    return static_cast<double>(sys::counter_delta(x, y)) / secs;
  };
  for (const auto& nb : b.net) {
    auto it = std::find_if(a.net.begin(), a.net.end(), [&](auto& x) { return x.name == nb.name; });
    if (it == a.net.end()) continue;
    const std::string p = "net." + nb.name + ".";
    obs.set(p + "rx_bytes", rate(it->rx_bytes, nb.rx_bytes));
    obs.set(p + "tx_bytes", rate(it->tx_bytes, nb.tx_bytes));
    obs.set(p + "errors", rate(it->rx_errs, nb.rx_errs) + rate(it->tx_errs, nb.tx_errs));
    obs.set(p + "drops", rate(it->rx_drop, nb.rx_drop) + rate(it->tx_drop, nb.tx_drop));
  }
  for (const auto& db : b.disks) {
    auto it =
        std::find_if(a.disks.begin(), a.disks.end(), [&](auto& x) { return x.name == db.name; });
    if (it == a.disks.end()) continue;
    const std::string p = "disk." + db.name + ".";
    obs.set(p + "read_bytes", rate(it->read_sectors, db.read_sectors) * 512.0);
    obs.set(p + "write_bytes", rate(it->write_sectors, db.write_sectors) * 512.0);
    const double util = rate(it->io_ticks, db.io_ticks) / 10.0;  // ms per s -> percent
    obs.set(p + "util", std::min(util, 100.0));
  }
}

/// The values that need one reading only: memory, swap, load, uptime, file systems. Problems go
/// to `errors` (file names) and `missing` (literally named mounts not mounted). Thread-safe if
/// `fs` is.
inline void add_instant(std::string_view root, const name_filter& mounts, bool with_fs,
                        const statvfs_function& fs, observation& obs,
                        std::vector<std::string>& errors, std::vector<std::string>& missing) {
  namespace sys = sonde::detail::sys;
  auto load = [&](const char* rel, auto parse) -> decltype(parse(std::string_view())) {
    auto path = join_root(root, rel);
    auto text = read_file(path);
    if (!text) {
      errors.push_back(text.error());
      return tl::unexpected(std::string());
    }
    auto v = parse(*text);
    if (!v) errors.push_back(path + ": malformed: " + v.error());
    return v;
  };
  if (auto m = load("/proc/meminfo", sys::parse_meminfo)) {
    obs.set("mem.total", static_cast<double>(m->total));
    obs.set("mem.available", static_cast<double>(m->available));
    obs.set("mem.used", static_cast<double>(m->total - m->available));
    obs.set("mem.used_pct", m->total ? 100.0 * static_cast<double>(m->total - m->available) /
                                           static_cast<double>(m->total)
                                     : 0.0);
    obs.set("swap.total", static_cast<double>(m->swap_total));
    obs.set("swap.used", static_cast<double>(m->swap_total - m->swap_free));
  }
  if (auto l = load("/proc/loadavg", sys::parse_loadavg)) {
    obs.set("load.1", l->one);
    obs.set("load.5", l->five);
    obs.set("load.15", l->fifteen);
  }
  if (auto u = load("/proc/uptime", sys::parse_uptime)) obs.set("uptime", *u);
  if (!with_fs) return;
  auto mounts_text = load("/proc/mounts", sys::parse_mounts);
  if (!mounts_text) return;
  // The kernel lists mounts in order; a later mount on the same point hides the earlier one.
  std::vector<sys::mount_entry> chosen;
  for (auto& m : *mounts_text) {
    const bool by_default = !sys::skipped_fstype(m.type) && !m.point.empty();
    if (!mounts.selects(m.point, by_default)) continue;
    auto same_point = std::find_if(chosen.begin(), chosen.end(),
                                   [&](const sys::mount_entry& x) { return x.point == m.point; });
    if (same_point != chosen.end()) {
      *same_point = m;
      continue;
    }
    if (mounts.include.empty() && m.device.starts_with("/")) {
      // Default set: one entry per device (bind mounts), the shortest mount point, as df does.
      auto same_dev = std::find_if(chosen.begin(), chosen.end(),
                                   [&](const sys::mount_entry& x) { return x.device == m.device; });
      if (same_dev != chosen.end()) {
        if (m.point.size() < same_dev->point.size()) *same_dev = m;
        continue;
      }
    }
    chosen.push_back(m);
  }
  for (const auto& l : mounts.literals()) {
    std::string want = l.size() > 1 && l.back() == '/' ? l.substr(0, l.size() - 1) : l;
    if (std::find_if(chosen.begin(), chosen.end(), [&](auto& x) { return x.point == want; }) ==
        chosen.end())
      missing.push_back("mount " + want);
  }
  std::vector<std::string> used;
  for (const auto& m : chosen) {
    auto u = fs ? fs(join_root(root, m.point)) : statvfs_usage(join_root(root, m.point));
    if (!u) {
      // A literally named mount must be measurable; a discovered one may be stale or private.
      auto lit = mounts.literals();
      if (std::find(lit.begin(), lit.end(), m.point) != lit.end())
        errors.push_back("cannot statvfs " + m.point + ": " + u.error());
      continue;
    }
    if (u->total == 0) continue;  // nothing to fill (e.g. an empty pseudo file system)
    const std::string seg = detail_::unique_segment(sys::mount_segment(m.point), used);
    obs.set("fs." + seg + ".used_pct", u->used_pct());
    obs.set("fs." + seg + ".avail", static_cast<double>(u->avail));
  }
}

/// Facts about the host for `sonde agent ... info`.
struct facts {
  std::string os;        ///< PRETTY_NAME of /etc/os-release ("Debian GNU/Linux 12 (bookworm)")
  std::string kernel;    ///< "Linux 6.1.0-13-amd64"
  std::string arch;      ///< "x86_64" (uname; empty for a fixture root)
  std::string hostname;  ///< the host's name (UTS namespace)
  std::vector<std::string> addresses;  ///< non-loopback, non-link-local IPv4 and IPv6 addresses
  std::string cpu_model;               ///< "Intel(R) Xeon(R) ..."; "" when unknown
  unsigned cpu_count = 0;              ///< logical CPUs
  std::uint64_t mem_total = 0;         ///< bytes
  std::vector<std::string> problems;   ///< what could not be read, naming the file
};

/// Gather host facts. With `root` other than "/", everything is read under it (kernel and
/// hostname from proc/sys/kernel/{ostype,osrelease,hostname}, os from etc/os-release) and
/// addresses and arch are left empty (they come from the live system). Never fails as a whole:
/// unreadable sources leave their field empty and are listed in `problems`. Thread-safe.
inline facts host_facts(const std::string& root = "/") {
  namespace sys = sonde::detail::sys;
  facts f;
  const bool live = join_root(root, "/") == "/";
  auto first_line = [](const std::string& s) {
    return std::string(sys::trim(s.substr(0, s.find('\n'))));
  };
  if (auto t = read_file(join_root(root, "/etc/os-release")))
    f.os = sys::parse_os_release(*t);
  else if (auto t2 = read_file(join_root(root, "/usr/lib/os-release")))
    f.os = sys::parse_os_release(*t2);
  else
    f.problems.push_back(t.error());
  struct utsname u {};
  if (live && ::uname(&u) == 0) {
    f.kernel = std::string(u.sysname) + " " + u.release;
    f.arch = u.machine;
    f.hostname = u.nodename;
  } else {
    auto ostype = read_file(join_root(root, "/proc/sys/kernel/ostype"));
    auto rel = read_file(join_root(root, "/proc/sys/kernel/osrelease"));
    if (rel)
      f.kernel = (ostype ? first_line(*ostype) + " " : std::string("Linux ")) + first_line(*rel);
    else
      f.problems.push_back(rel.error());
    if (auto h = read_file(join_root(root, "/proc/sys/kernel/hostname")))
      f.hostname = first_line(*h);
    else
      f.problems.push_back(h.error());
  }
  if (auto c = read_file(join_root(root, "/proc/cpuinfo"))) {
    auto ci = sys::parse_cpuinfo(*c);
    f.cpu_model = ci.model;
    f.cpu_count = ci.count;
  } else {
    f.problems.push_back(c.error());
  }
  if (f.cpu_count == 0 && live) {
    long n = ::sysconf(_SC_NPROCESSORS_ONLN);
    if (n > 0) f.cpu_count = static_cast<unsigned>(n);
  }
  auto mpath = join_root(root, "/proc/meminfo");
  if (auto m = read_file(mpath)) {
    if (auto mi = sys::parse_meminfo(*m))
      f.mem_total = mi->total;
    else
      f.problems.push_back(mpath + ": malformed: " + mi.error());
  } else {
    f.problems.push_back(m.error());
  }
  if (live) {
    ifaddrs* list = nullptr;
    if (::getifaddrs(&list) == 0) {
      for (auto* i = list; i; i = i->ifa_next) {
        if (!i->ifa_addr || (i->ifa_flags & IFF_LOOPBACK)) continue;
        char buf[INET6_ADDRSTRLEN] = {};
        if (i->ifa_addr->sa_family == AF_INET) {
          auto* a = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
          ::inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
        } else if (i->ifa_addr->sa_family == AF_INET6) {
          auto* a = reinterpret_cast<const sockaddr_in6*>(i->ifa_addr);
          if (IN6_IS_ADDR_LINKLOCAL(&a->sin6_addr)) continue;
          ::inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
        } else {
          continue;
        }
        if (buf[0] && std::find(f.addresses.begin(), f.addresses.end(), buf) == f.addresses.end())
          f.addresses.emplace_back(buf);
      }
      ::freeifaddrs(list);
    } else {
      f.problems.push_back(std::string("getifaddrs: ") + std::strerror(errno));
    }
  }
  return f;
}

/// The one-line summary of an observation's metrics:
/// "cpu 12.3% (4 cores), mem 3.1 GiB/15.6 GiB, load 0.52 0.40 0.33, up 3d 4h".
inline std::string summary(const observation& obs, std::size_t cores) {
  namespace sys = sonde::detail::sys;
  std::string s;
  char buf[96];
  auto add = [&](const std::string& part) { s += (s.empty() ? "" : ", ") + part; };
  const std::string c =
      cores ? " (" + std::to_string(cores) + (cores == 1 ? " core)" : " cores)") : std::string();
  if (auto v = obs.get("cpu.total")) {
    std::snprintf(buf, sizeof buf, "cpu %.1f%%", *v);
    add(buf + c);
  } else {
    add("cpu n/a" + c);
  }
  auto used = obs.get("mem.used"), total = obs.get("mem.total");
  if (used && total) add("mem " + sys::human_bytes(*used) + "/" + sys::human_bytes(*total));
  auto l1 = obs.get("load.1"), l5 = obs.get("load.5"), l15 = obs.get("load.15");
  if (l1 && l5 && l15) {
    std::snprintf(buf, sizeof buf, "load %.2f %.2f %.2f", *l1, *l5, *l15);
    add(buf);
  }
  if (auto up = obs.get("uptime")) add("up " + sys::human_uptime(*up));
  return s;
}

}  // namespace system

/// Host metrics checker (see the file comment).
///
/// @par Thread Safety
/// run() is const but keeps the previous counter reading (behind a mutex, never held across a
/// suspension), so one object may be run from several threads; each run then measures since
/// whichever run stored its reading last. Moving the object while a run is in flight is not
/// allowed. set_statvfs() must not race with run().
class system_probe {
 public:
  static constexpr std::string_view kind = "system";
  static constexpr std::string_view summary =
      "Host metrics from /proc and /sys: CPU, memory, swap, load, uptime, network, disks, file "
      "systems";
  static constexpr std::string_view target_form = "localhost";
  static constexpr port_rule target_ports = port_rule::forbidden;
  static constexpr std::uint16_t default_port = 0;

  /// Options, with their defaults.
  struct options {
    std::string root = "/";  ///< prefix for /proc and /sys paths (fixtures, containers)
    duration sample = std::chrono::milliseconds(250);  ///< first-run measuring window
    bool per_core = true;                              ///< report cpu.<n>
    std::vector<std::string> interfaces;               ///< patterns; empty: all but loopback
    std::vector<std::string> disks;                    ///< patterns; empty: physical whole disks
    std::vector<std::string> mounts;                   ///< patterns; empty: real file systems
    bool interfaces_given = false, disks_given = false, mounts_given = false;
    duration timeout{0};  ///< the engine's run timeout, when it passes one
  };

  static constexpr option_spec option_table[] = {
      {"root", option_type::string, "/",
       "Directory that holds proc/ and sys/ (and etc/os-release): \"/\" or a fixture or a "
       "host's root mounted into a container"},
      {"sample", option_type::duration, "250ms",
       "First run (and a run sooner than this after the previous one): measure rates over this "
       "window; later runs measure since the previous run. 10ms to 10s, below the timeout"},
      {"per_core", option_type::boolean, "true", "Report cpu.<n> for each CPU"},
      {"interfaces", option_type::string_list, "",
       "Interfaces to report: names or shell patterns, !pattern excludes; default all but "
       "loopback; an empty value reports none"},
      {"disks", option_type::string_list, "",
       "Block devices to report (patterns, !excludes); default physical whole disks (no "
       "partitions, loop, ram, zram, dm, md); an empty value reports none"},
      {"mounts", option_type::string_list, "",
       "Mount points to report (patterns, !excludes); default real local file systems, one per "
       "device (docs/probes/system.md lists the skipped types); an empty value reports none"},
  };
  static constexpr metric_spec metric_table[] = {
      {"latency", "s", "Time to read the counters and files once (the probe's own cost)"},
      {"cpu.total", "%", "CPU busy: all but idle and iowait, over the interval, all CPUs"},
      {"cpu.user", "%", "User time (user + nice)"},
      {"cpu.system", "%", "Kernel time (system + irq + softirq)"},
      {"cpu.iowait", "%", "Idle with I/O outstanding"},
      {"cpu.steal", "%", "Time the hypervisor gave to others"},
      {"cpu.<n>", "%", "CPU n busy (as cpu.total), when per_core"},
      {"mem.total", "bytes", "MemTotal"},
      {"mem.available", "bytes", "MemAvailable (MemFree + Buffers + Cached before Linux 3.14)"},
      {"mem.used", "bytes", "mem.total - mem.available"},
      {"mem.used_pct", "%", "mem.used / mem.total"},
      {"swap.total", "bytes", "SwapTotal"},
      {"swap.used", "bytes", "SwapTotal - SwapFree"},
      {"load.1", "count", "Load average over 1 minute"},
      {"load.5", "count", "Load average over 5 minutes"},
      {"load.15", "count", "Load average over 15 minutes"},
      {"uptime", "s", "Seconds since boot"},
      {"net.<iface>.rx_bytes", "B/s", "Bytes received per second"},
      {"net.<iface>.tx_bytes", "B/s", "Bytes sent per second"},
      {"net.<iface>.errors", "/s", "Receive + transmit errors per second"},
      {"net.<iface>.drops", "/s", "Receive + transmit drops per second"},
      {"disk.<dev>.read_bytes", "B/s", "Bytes read per second"},
      {"disk.<dev>.write_bytes", "B/s", "Bytes written per second"},
      {"disk.<dev>.util", "%", "Time the device was busy, percent of the interval"},
      {"fs.<mount>.used_pct", "%", "Used space as df's Use%: used / (used + available)"},
      {"fs.<mount>.avail", "bytes", "Space available to unprivileged users"},
  };

  /// Read options from an option_set (types already checked). A list option that is present
  /// replaces the default set, even when empty.
  static tl::expected<options, probe_error> options_from(const option_set& set) {
    options o;
    for (auto r :
         {set.get("root", o.root), set.get("sample", o.sample), set.get("per_core", o.per_core),
          set.get("interfaces", o.interfaces), set.get("disks", o.disks),
          set.get("mounts", o.mounts), set.get("timeout", o.timeout)})
      if (!r) return tl::unexpected(r.error());
    o.interfaces_given = set.find("interfaces") != nullptr;
    o.disks_given = set.find("disks") != nullptr;
    o.mounts_given = set.find("mounts") != nullptr;
    return o;
  }

  /// Validate options and build the probe. Errors name the bad key.
  static tl::expected<system_probe, probe_error> make(options o) {
    if (o.root.empty() || o.root.front() != '/')
      return tl::unexpected(
          option_error("root", "option 'root' must be an absolute path, not \"" + o.root + "\""));
    if (o.sample < std::chrono::milliseconds(10) || o.sample > std::chrono::seconds(10))
      return tl::unexpected(option_error(
          "sample", "option 'sample' must be 10ms to 10s, not " + format_duration(o.sample)));
    if (o.timeout > duration::zero() && o.sample >= o.timeout)
      return tl::unexpected(option_error("sample", "option 'sample' (" + format_duration(o.sample) +
                                                       ") must be shorter than the timeout (" +
                                                       format_duration(o.timeout) +
                                                       "): the first run measures over it"));
    system_probe p;
    p.ifaces_ = system::name_filter::from(o.interfaces);
    p.disks_ = system::name_filter::from(o.disks);
    p.mounts_ = system::name_filter::from(o.mounts);
    // A given list with nothing in it (`disks = []`, `--set disks=`) turns that part off.
    p.want_net_ = !o.interfaces_given || !p.ifaces_.include.empty() || !p.ifaces_.exclude.empty();
    p.want_disks_ = !o.disks_given || !p.disks_.include.empty() || !p.disks_.exclude.empty();
    p.want_fs_ = !o.mounts_given || !p.mounts_.include.empty() || !p.mounts_.exclude.empty();
    p.opts_ = std::move(o);
    p.state_ = std::make_unique<state>();
    return p;
  }

  /// The options the probe was made from.
  const options& opts() const noexcept { return opts_; }

  /// Replace statvfs (tests: fixture trees have no real mounts). Not thread-safe with run().
  void set_statvfs(system::statvfs_function f) { statvfs_ = std::move(f); }

  /// Forget the previous reading: the next run measures over a fresh `sample` window.
  void reset() const {
    std::lock_guard lock(state_->mu);
    state_->last.reset();
  }

  /// Run once, finishing by `dl`. The target must name this host ("localhost", a loopback
  /// address or the host name); anything else is an invalid_target error, since this probe
  /// reads the local machine only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
  asio::awaitable<probe_result> run(target t, deadline dl) const {
    if (!is_local(t.host))
      co_return tl::unexpected(probe_error{
          probe_errc::invalid_target, "target",
          "the system probe reads the host it runs on: use target \"localhost\", not \"" + t.host +
              "\" (run an agent on that host instead)"});
    observation obs;
    obs.start = detail::wall_now();
    std::shared_ptr<const system::counters> prev;
    {
      std::lock_guard lock(state_->mu);
      prev = state_->last;
    }
    auto t0 = clock::now();
    auto cur = std::make_shared<system::counters>(read());
    auto cost = clock::now() - t0;
    bool no_rates = false;
    if (!prev || cur->when - prev->when < opts_.sample) {
      // Margin for the second reading and the rest of the run.
      auto window = std::min<clock::duration>(
          opts_.sample, detail::remaining(dl) - std::chrono::milliseconds(20));
      if (window > std::chrono::milliseconds(5)) {
        asio::steady_timer timer(co_await asio::this_coro::executor);
        timer.expires_after(window);
        (void)co_await timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
        prev = cur;
        t0 = clock::now();
        cur = std::make_shared<system::counters>(read());
        cost = clock::now() - t0;
      } else if (!prev) {
        no_rates = true;
      }
    }
    std::vector<std::string> errors = cur->errors;
    std::vector<std::string> missing = cur->missing;
    t0 = clock::now();
    system::add_instant(opts_.root, mounts_, want_fs_, statvfs_, obs, errors, missing);
    cost += clock::now() - t0;
    obs.latency = std::chrono::duration_cast<std::chrono::nanoseconds>(cost);
    if (prev && !no_rates) system::add_rates(*prev, *cur, obs, opts_.per_core);
    {
      std::lock_guard lock(state_->mu);
      if (!state_->last || state_->last->when < cur->when) state_->last = cur;
    }
    const std::size_t cores = cur->cpus.empty() ? 0 : cur->cpus.size() - 1;
    std::string text = system::summary(obs, cores);
    if (no_rates) text += " (rates from the next run: no time left to sample)";
    if (!errors.empty()) {
      std::string e;
      for (const auto& x : errors) e += (e.empty() ? "" : "; ") + x;
      obs.fail(reason::error, e + "; " + text);
    } else if (!missing.empty()) {
      std::string m;
      for (const auto& x : missing) m += (m.empty() ? "" : ", ") + x;
      obs.fail(reason::mismatch, "not found: " + m + "; " + text);
    } else {
      obs.message = std::move(text);
    }
    co_return std::move(obs);
  }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

 private:
  system_probe() = default;

  struct state {
    std::mutex mu;
    std::shared_ptr<const system::counters> last;
  };

  system::counters read() const {
    return system::read_counters(opts_.root, ifaces_, disks_, want_net_, want_disks_);
  }

  static bool is_local(std::string host) {
    for (auto& c : host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (host == "localhost" || host == "127.0.0.1" || host == "::1" ||
        host.starts_with("localhost."))
      return true;
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) != 0) return false;
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string_view n(name), h(host);
    if (h == n) return true;
    // "db1" matches "db1.example.net" and the reverse: short and fully qualified forms.
    auto short_of = [](std::string_view s) { return s.substr(0, s.find('.')); };
    return short_of(h) == short_of(n) && (h.find('.') == h.npos || n.find('.') == n.npos);
  }

  options opts_;
  system::name_filter ifaces_, disks_, mounts_;
  bool want_net_ = true, want_disks_ = true, want_fs_ = true;
  system::statvfs_function statvfs_;
  std::unique_ptr<state> state_;
};

}  // namespace sonde
