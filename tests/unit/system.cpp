// system_probe against recorded /proc and /sys trees (tests/data/system/<case>/), with exact
// expected numbers, and live sanity checks on this machine.
#include <sonde/system.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <thread>

#include "core/config.hpp"

#include "support/c_abi.hpp"
#include "support/files.hpp"
#include "support/plugins.hpp"
#include "support/support.hpp"

using namespace sonde;
using namespace std::chrono_literals;
namespace sys = sonde::detail::sys;
namespace fs = std::filesystem;

static_assert(probe<system_probe>);

namespace {

const std::string data_dir = std::string(SONDE_TEST_DATA_DIR) + "/system";

std::string fixture(const std::string& rel) {
  return data_dir + "/" + rel;
}

std::string slurp(const std::string& rel) {
  auto t = system::read_file(fixture(rel));
  if (!t) throw std::runtime_error(t.error());
  return *t;
}

double value_of(const observation& o, const std::string& name) {
  auto v = o.get(name);
  INFO("metric " << name);
  REQUIRE(v);
  return *v;
}

/// statvfs answers for the basic fixture's mounts, keyed by the path the probe asks for.
system::statvfs_function fake_statvfs(const std::string& root) {
  return [root](const std::string& path) -> tl::expected<system::fs_usage, std::string> {
    static const std::map<std::string, system::fs_usage> table = {
        {"/", {100 * 1024, 60 * 1024, 20 * 1024}},           // 60 / (60 + 20) = 75%
        {"/var/log", {1000, 250, 750}},                      // 25%
        {"/mnt/my disk", {4096, 4096, 0}},                   // full
        {"/srv/bind", {100 * 1024, 60 * 1024, 20 * 1024}}};  // same device as /
    auto rel = path.substr(system::join_root(root, "/") == "/" ? 0 : root.size());
    if (rel.empty()) rel = "/";
    auto it = table.find(rel);
    if (it == table.end()) return tl::unexpected(std::string("no such fixture mount"));
    return it->second;
  };
}

system_probe make_system(option_set set) {
  return test::make<system_probe>(set);
}

option_set root_opts(const std::string& root) {
  option_set s;
  s.set("root", root);
  return s;
}

}  // namespace

// ---- parsers -----------------------------------------------------------------------------------

TEST_CASE("system: /proc/stat is parsed into aggregate and per-CPU counters", "[system]") {
  auto s = sys::parse_stat(slurp("basic/t0/proc/stat"));
  REQUIRE(s);
  REQUIRE(s->size() == 3);
  CHECK((*s)[0].id == -1);
  CHECK((*s)[0].user == 1000);
  CHECK((*s)[0].steal == 100);
  CHECK((*s)[0].total() == 10000);
  CHECK((*s)[1].id == 0);
  CHECK((*s)[2].id == 1);
  CHECK((*s)[2].idle == 4000);

  auto old = sys::parse_stat(slurp("old/proc/stat"));  // 4 fields, as Linux 2.4
  REQUIRE(old);
  CHECK((*old)[0].idle == 850);
  CHECK((*old)[0].iowait == 0);
}

TEST_CASE("system: malformed /proc/stat is an error naming the line", "[system]") {
  auto e = sys::parse_stat("cpu  1 2 three 4\n");
  REQUIRE_FALSE(e);
  CHECK_THAT(e.error(), Catch::Contains("line 1") && Catch::Contains("three"));
  CHECK_FALSE(sys::parse_stat(""));
  CHECK_FALSE(sys::parse_stat("intr 1 2\n"));
  CHECK_FALSE(sys::parse_stat("cpu 1 2 3\n"));                  // too few counters
  CHECK_FALSE(sys::parse_stat("cpu0 1 2 3 4\ncpu 1 2 3 4\n"));  // aggregate not first
  CHECK_FALSE(sys::parse_stat("cpu 1 2 3 4\ncpux 1 2 3 4\n"));
  CHECK_FALSE(sys::parse_stat("cpu 1 2 3 99999999999999999999999\n"));
}

TEST_CASE("system: CPU percentages between two readings", "[system]") {
  auto a = sys::parse_stat(slurp("basic/t0/proc/stat"));
  auto b = sys::parse_stat(slurp("basic/t1/proc/stat"));
  REQUIRE(a);
  REQUIRE(b);
  auto u = sys::cpu_percent((*a)[0], (*b)[0]);
  REQUIRE(u);
  CHECK(u->total == Approx(35.0));
  CHECK(u->user == Approx(20.0));
  CHECK(u->system == Approx(10.0));
  CHECK(u->iowait == Approx(5.0));
  CHECK(u->steal == Approx(5.0));
  CHECK_FALSE(sys::cpu_percent((*a)[0], (*a)[0]));  // no tick elapsed
  // A counter that went backwards (CPU hotplug) counts as no change, never negative.
  auto back = (*a)[0];
  back.idle -= 500;
  auto v = sys::cpu_percent((*a)[0], back);
  CHECK_FALSE(v);
}

TEST_CASE("system: /proc/meminfo in bytes, with the pre-3.14 MemAvailable estimate", "[system]") {
  auto m = sys::parse_meminfo(slurp("basic/t0/proc/meminfo"));
  REQUIRE(m);
  CHECK(m->total == 16384000ull * 1024);
  CHECK(m->available == 8192000ull * 1024);
  CHECK(m->has_available);
  CHECK(m->swap_total == 2097152ull * 1024);
  CHECK(m->swap_free == 1048576ull * 1024);

  auto old = sys::parse_meminfo(slurp("old/proc/meminfo"));
  REQUIRE(old);
  CHECK_FALSE(old->has_available);
  CHECK(old->available == (100 + 50 + 250) * 1024);

  auto e = sys::parse_meminfo("MemFree: 100 kB\n");
  REQUIRE_FALSE(e);
  CHECK_THAT(e.error(), Catch::Contains("MemTotal"));
  auto e2 = sys::parse_meminfo("MemTotal: lots kB\nMemFree: 1 kB\n");
  REQUIRE_FALSE(e2);
  CHECK_THAT(e2.error(), Catch::Contains("line 1") && Catch::Contains("lots"));
  CHECK_FALSE(sys::parse_meminfo("MemTotal: 1 MB\nMemFree: 1 kB\n"));
  CHECK_FALSE(sys::parse_meminfo("MemTotal: 99999999999999999999 kB\nMemFree: 1 kB\n"));
}

TEST_CASE("system: loadavg and uptime", "[system]") {
  auto l = sys::parse_loadavg(slurp("basic/t0/proc/loadavg"));
  REQUIRE(l);
  CHECK(l->one == Approx(0.52));
  CHECK(l->five == Approx(0.40));
  CHECK(l->fifteen == Approx(0.33));
  CHECK_FALSE(sys::parse_loadavg("0.1 0.2\n"));
  CHECK_FALSE(sys::parse_loadavg("0.1 x 0.3 1/2 3\n"));
  auto u = sys::parse_uptime(slurp("basic/t0/proc/uptime"));
  REQUIRE(u);
  CHECK(*u == Approx(277200.5));
  CHECK_FALSE(sys::parse_uptime(""));
  CHECK_FALSE(sys::parse_uptime("-1 2"));
}

TEST_CASE("system: /proc/net/dev and /proc/diskstats", "[system]") {
  auto n = sys::parse_net_dev(slurp("basic/t0/proc/net/dev"));
  REQUIRE(n);
  REQUIRE(n->size() == 3);
  CHECK((*n)[1].name == "eth0");
  CHECK((*n)[1].rx_bytes == 1000000);
  CHECK((*n)[1].rx_errs == 1);
  CHECK((*n)[1].rx_drop == 2);
  CHECK((*n)[1].tx_bytes == 500000);
  CHECK((*n)[1].tx_drop == 1);
  CHECK((*n)[2].name == "br-lan.100");
  auto bad = sys::parse_net_dev(slurp("malformed/proc/net/dev"));
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error(), Catch::Contains("line 3") && Catch::Contains("eth0"));

  auto d = sys::parse_diskstats(slurp("basic/t0/proc/diskstats"));
  REQUIRE(d);
  REQUIRE(d->size() == 5);
  CHECK((*d)[1].name == "sda");
  CHECK((*d)[1].read_sectors == 20480);
  CHECK((*d)[1].write_sectors == 40960);
  CHECK((*d)[1].io_ticks == 1000);
  CHECK_FALSE(sys::parse_diskstats("8 0 sda 1 2 3\n"));
  CHECK_FALSE(sys::parse_diskstats("x 0 sda 1 2 3 4 5 6 7 8 9 10 11\n"));
}

TEST_CASE("system: /proc/mounts unescapes names, the skipped types", "[system]") {
  auto m = sys::parse_mounts(slurp("basic/t0/proc/mounts"));
  REQUIRE(m);
  REQUIRE(m->size() == 9);
  CHECK((*m)[6].point == "/mnt/my disk");
  CHECK(sys::unescape_mount("a\\134b\\011c\\") == "a\\b\tc\\");
  CHECK(sys::skipped_fstype("proc"));
  CHECK(sys::skipped_fstype("overlay"));
  CHECK(sys::skipped_fstype("nfs4"));
  CHECK(sys::skipped_fstype("fuse.sshfs"));
  CHECK_FALSE(sys::skipped_fstype("ext4"));
  CHECK_FALSE(sys::skipped_fstype("xfs"));
  CHECK_FALSE(sys::skipped_fstype("btrfs"));
  CHECK_FALSE(sys::parse_mounts("/dev/sda1 /\n"));
}

TEST_CASE("system: metric name segments", "[system]") {
  CHECK(sys::metric_segment("eth0") == "eth0");
  CHECK(sys::metric_segment("br-lan.100") == "br-lan_100");
  CHECK(sys::metric_segment("cciss/c0d0") == "cciss_c0d0");
  CHECK(sys::metric_segment("wg@0") == "wg_0");
  CHECK(sys::mount_segment("/") == "root");
  CHECK(sys::mount_segment("/var/log") == "var_log");
  CHECK(sys::mount_segment("/var/log/") == "var_log");
  CHECK(sys::mount_segment("/mnt/my disk") == "mnt_my_disk");
  CHECK(sys::mount_segment("/srv/data.d") == "srv_data_d");
  // Every produced name is one condition metric and matches its table pattern.
  for (std::string n : {"fs.var_log.used_pct", "net.br-lan_100.rx_bytes", "cpu.3"}) {
    auto c = parse_condition(n + " > 90%");
    REQUIRE(c);
    CHECK(c->metric == n);
  }
}

TEST_CASE("system: human-readable sizes and uptimes", "[system]") {
  CHECK(sys::human_bytes(12) == "12 B");
  CHECK(sys::human_bytes(8388608000.0) == "7.8 GiB");
  CHECK(sys::human_bytes(16777216000.0) == "15.6 GiB");
  CHECK(sys::human_uptime(277200.5) == "3d 5h");
  CHECK(sys::human_uptime(3 * 3600 + 120) == "3h 2m");
  CHECK(sys::human_uptime(59.9) == "59s");
}

TEST_CASE("system: cpuinfo and os-release", "[system]") {
  auto c = sys::parse_cpuinfo(slurp("basic/t0/proc/cpuinfo"));
  CHECK(c.count == 2);
  CHECK(c.model == "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz");
  auto arm =
      sys::parse_cpuinfo("processor : 0\nBogoMIPS : 48\nHardware : BCM2835\n\nprocessor : 1\n");
  CHECK(arm.count == 2);
  CHECK(arm.model == "BCM2835");
  CHECK(sys::parse_os_release(slurp("basic/t0/etc/os-release")) ==
        "Debian GNU/Linux 12 (bookworm)");
  CHECK(sys::parse_os_release("NAME=Alpine\nVERSION='3.19'\n") == "Alpine 3.19");
  CHECK(sys::parse_os_release("") == "");
}

// ---- readings and rates ------------------------------------------------------------------------

TEST_CASE("system: rates over a recorded interval are exact", "[system]") {
  system::name_filter all_default;
  auto a = system::read_counters(fixture("basic/t0"), all_default, all_default);
  auto b = system::read_counters(fixture("basic/t1"), all_default, all_default);
  REQUIRE(a.errors.empty());
  REQUIRE(b.errors.empty());
  b.when = a.when + 10s;
  // Default selection: no loopback; physical whole disks only.
  REQUIRE(b.net.size() == 2);
  CHECK(b.net[0].name == "eth0");
  CHECK(b.net[1].name == "br-lan_100");
  REQUIRE(b.disks.size() == 2);
  CHECK(b.disks[0].name == "sda");
  CHECK(b.disks[1].name == "nvme0n1");

  observation o;
  system::add_rates(a, b, o, true);
  CHECK(value_of(o, "cpu.total") == Approx(35.0));
  CHECK(value_of(o, "cpu.user") == Approx(20.0));
  CHECK(value_of(o, "cpu.system") == Approx(10.0));
  CHECK(value_of(o, "cpu.iowait") == Approx(5.0));
  CHECK(value_of(o, "cpu.steal") == Approx(5.0));
  CHECK(value_of(o, "cpu.0") == Approx(45.0));
  CHECK(value_of(o, "cpu.1") == Approx(25.0));
  CHECK(value_of(o, "net.eth0.rx_bytes") == Approx(1048576.0));
  CHECK(value_of(o, "net.eth0.tx_bytes") == Approx(524288.0));
  CHECK(value_of(o, "net.eth0.errors") == Approx(2.0));
  CHECK(value_of(o, "net.eth0.drops") == Approx(1.0));
  CHECK(value_of(o, "net.br-lan_100.rx_bytes") == Approx(100.0));
  CHECK(value_of(o, "net.br-lan_100.tx_bytes") == Approx(200.0));
  CHECK(value_of(o, "net.br-lan_100.errors") == 0.0);
  CHECK(value_of(o, "disk.sda.read_bytes") == Approx(1048576.0));
  CHECK(value_of(o, "disk.sda.write_bytes") == Approx(2097152.0));
  CHECK(value_of(o, "disk.sda.util") == Approx(25.0));
  CHECK(value_of(o, "disk.nvme0n1.util") == 100.0);  // clamped
  CHECK(value_of(o, "disk.nvme0n1.read_bytes") == 0.0);
  CHECK_FALSE(o.get("net.lo.rx_bytes"));
  CHECK_FALSE(o.get("disk.sda1.util"));
  CHECK_FALSE(o.get("disk.loop0.util"));
  CHECK_FALSE(o.get("disk.dm-0.util"));

  observation no_cores;
  system::add_rates(a, b, no_cores, false);
  CHECK(no_cores.get("cpu.total"));
  CHECK_FALSE(no_cores.get("cpu.0"));
}

TEST_CASE("system: interface and disk filters, with !exclusions and missing names", "[system]") {
  auto only = [](std::vector<std::string> v) { return system::name_filter::from(v); };
  auto c = system::read_counters(fixture("basic/t0"), only({"lo", "eth9"}),
                                 only({"sd*", "!sda1", "md0"}));
  REQUIRE(c.net.size() == 1);
  CHECK(c.net[0].name == "lo");
  REQUIRE(c.disks.size() == 1);
  CHECK(c.disks[0].name == "sda");
  REQUIRE(c.missing.size() == 2);
  CHECK(c.missing[0] == "interface eth9");
  CHECK(c.missing[1] == "disk md0");

  auto ex = system::read_counters(fixture("basic/t0"), only({"!br-*"}), only({"!nvme*"}));
  REQUIRE(ex.net.size() == 1);
  CHECK(ex.net[0].name == "eth0");
  REQUIRE(ex.disks.size() == 1);
  CHECK(ex.disks[0].name == "sda");

  auto off = system::read_counters(fixture("basic/t0"), {}, {}, false, false);
  CHECK(off.net.empty());
  CHECK(off.disks.empty());
  CHECK(off.cpus.size() == 3);
}

TEST_CASE("system: memory, load, uptime and file systems from one reading", "[system]") {
  const auto root = fixture("basic/t1");
  observation o;
  std::vector<std::string> errors, missing;
  system::add_instant(root, {}, true, fake_statvfs(root), o, errors, missing);
  CHECK(errors.empty());
  CHECK(missing.empty());
  CHECK(value_of(o, "mem.total") == 16777216000.0);
  CHECK(value_of(o, "mem.available") == 8388608000.0);
  CHECK(value_of(o, "mem.used") == 8388608000.0);
  CHECK(value_of(o, "mem.used_pct") == Approx(50.0));
  CHECK(value_of(o, "swap.total") == 2147483648.0);
  CHECK(value_of(o, "swap.used") == 1073741824.0);
  CHECK(value_of(o, "load.1") == Approx(0.52));
  CHECK(value_of(o, "load.5") == Approx(0.40));
  CHECK(value_of(o, "load.15") == Approx(0.33));
  CHECK(value_of(o, "uptime") == Approx(277200.5));
  CHECK(value_of(o, "fs.root.used_pct") == Approx(75.0));
  CHECK(value_of(o, "fs.root.avail") == 20.0 * 1024);
  CHECK(value_of(o, "fs.var_log.used_pct") == Approx(25.0));
  CHECK(value_of(o, "fs.mnt_my_disk.used_pct") == Approx(100.0));
  // Skipped: proc, sysfs, tmpfs, nfs4, overlay; /srv/bind is the root device again.
  std::size_t fs_count = 0;
  for (auto& m : o.metrics) fs_count += m.name.starts_with("fs.") && m.name.ends_with(".used_pct");
  CHECK(fs_count == 3);

  // Named mounts: any type, bind mounts included; a missing one is reported.
  observation named;
  errors.clear();
  system::add_instant(root, system::name_filter::from({"/srv/bind", "/data"}), true,
                      fake_statvfs(root), named, errors, missing);
  CHECK(named.get("fs.srv_bind.used_pct"));
  CHECK_FALSE(named.get("fs.root.used_pct"));
  REQUIRE(missing.size() == 1);
  CHECK(missing[0] == "mount /data");
  CHECK(errors.empty());
}

// ---- the probe ---------------------------------------------------------------------------------

TEST_CASE("system: the probe over a fixture tree: first run samples, the next measures since",
          "[system]") {
  test::temp_dir tmp;
  fs::copy(fixture("basic/t0"), tmp.path(), fs::copy_options::recursive);
  auto set = root_opts(tmp.path());
  set.set("sample", duration(10ms));
  auto p = make_system(set);
  p.set_statvfs(fake_statvfs(tmp.path()));
  auto t = test::target_for<system_probe>("localhost");

  // First run: two readings of unchanged files: no tick elapsed, so no CPU figures; zero rates.
  auto r1 = test::run_probe(p, t);
  REQUIRE(r1);
  INFO(r1->message);
  CHECK(r1->why == reason::none);
  CHECK_FALSE(r1->get("cpu.total"));
  CHECK(value_of(*r1, "net.eth0.rx_bytes") == 0.0);
  CHECK(r1->message == "cpu n/a (2 cores), mem 7.8 GiB/15.6 GiB, load 0.52 0.40 0.33, up 3d 5h");
  CHECK(r1->latency);

  // The counters move on; the second run measures since the first.
  std::this_thread::sleep_for(20ms);
  fs::copy(fixture("basic/t1"), tmp.path(),
           fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  auto r2 = test::run_probe(p, t);
  REQUIRE(r2);
  INFO(r2->message);
  CHECK(r2->why == reason::none);
  CHECK(value_of(*r2, "cpu.total") == Approx(35.0));
  CHECK(value_of(*r2, "cpu.0") == Approx(45.0));
  CHECK(value_of(*r2, "cpu.1") == Approx(25.0));
  CHECK(value_of(*r2, "net.eth0.rx_bytes") > 0);
  CHECK(value_of(*r2, "disk.sda.util") <= 100.0);
  CHECK(value_of(*r2, "fs.root.used_pct") == Approx(75.0));
  CHECK(r2->message == "cpu 35.0% (2 cores), mem 7.8 GiB/15.6 GiB, load 0.52 0.40 0.33, up 3d 5h");

  // reset(): the next run samples afresh (unchanged files: no CPU figures again).
  p.reset();
  auto r3 = test::run_probe(p, t);
  REQUIRE(r3);
  CHECK_FALSE(r3->get("cpu.total"));
}

TEST_CASE("system: missing and malformed files name the file and never crash", "[system]") {
  auto p = make_system(root_opts(fixture("malformed")));
  p.set_statvfs(fake_statvfs(fixture("malformed")));
  auto r = test::run_probe(p, test::target_for<system_probe>("localhost"));
  REQUIRE(r);
  INFO(r->message);
  CHECK(r->why == reason::error);
  CHECK_THAT(r->message, Catch::Contains(fixture("malformed") + "/proc/stat: malformed: line 1"));
  CHECK_THAT(r->message, Catch::Contains(fixture("malformed") + "/proc/meminfo: malformed"));
  CHECK_THAT(r->message, Catch::Contains(fixture("malformed") + "/proc/net/dev: malformed"));
  CHECK_THAT(r->message, Catch::Contains("cannot read " + fixture("malformed") +
                                         "/proc/loadavg: No such file or directory"));
  CHECK_THAT(r->message, Catch::Contains("/proc/diskstats"));
  CHECK_THAT(r->message, Catch::Contains("/proc/uptime"));
  CHECK(value_of(*r, "fs.root.used_pct") == Approx(75.0));  // what could be read is kept

  auto nowhere = make_system(root_opts("/nonexistent/sonde-root"));
  auto r2 = test::run_probe(nowhere, test::target_for<system_probe>("localhost"));
  REQUIRE(r2);
  CHECK(r2->why == reason::error);
  CHECK_THAT(r2->message, Catch::Contains("cannot read /nonexistent/sonde-root/proc/stat"));
}

TEST_CASE("system: an old kernel's files (no MemAvailable, no /sys)", "[system]") {
  auto p = make_system(root_opts(fixture("old")));
  p.set_statvfs([](const std::string&) -> tl::expected<system::fs_usage, std::string> {
    return system::fs_usage{100, 10, 90};
  });
  auto r = test::run_probe(p, test::target_for<system_probe>("localhost"));
  REQUIRE(r);
  INFO(r->message);
  CHECK(r->why == reason::none);
  CHECK(value_of(*r, "mem.available") == 400.0 * 1024);
  CHECK(value_of(*r, "mem.used") == 600.0 * 1024);
  CHECK(value_of(*r, "fs.root.used_pct") == Approx(10.0));
  // Without /sys/block every device but loop/ram/zram is reported.
  CHECK(r->get("disk.hda.util"));
  CHECK_FALSE(r->get("disk.ram0.util"));
  CHECK(r->get("net.eth0.rx_bytes"));
  CHECK_THAT(r->message, Catch::EndsWith("load 1.00 2.00 3.00, up 59s"));
}

TEST_CASE("system: a literally named interface, disk or mount that is absent is a mismatch",
          "[system]") {
  auto set = root_opts(fixture("basic/t0"));
  set.set("interfaces", std::vector<std::string>{"eth0", "wlan0"});
  set.set("mounts", std::vector<std::string>{"/", "/data"});
  auto p = make_system(set);
  p.set_statvfs(fake_statvfs(fixture("basic/t0")));
  auto r = test::run_probe(p, test::target_for<system_probe>("localhost"));
  REQUIRE(r);
  CHECK(r->why == reason::mismatch);
  CHECK_THAT(r->message, Catch::StartsWith("not found: interface wlan0, mount /data; cpu"));
  CHECK(r->get("net.eth0.rx_bytes"));
  CHECK(r->get("fs.root.used_pct"));
}

TEST_CASE("system: empty lists turn parts off, per_core off", "[system]") {
  auto set = root_opts(fixture("basic/t0"));
  set.set("interfaces", std::vector<std::string>{""});  // --set interfaces=
  set.set("disks", std::vector<std::string>{});
  set.set("mounts", std::vector<std::string>{});
  set.set("per_core", false);
  auto p = make_system(set);
  auto r = test::run_probe(p, test::target_for<system_probe>("localhost"));
  REQUIRE(r);
  CHECK(r->why == reason::none);
  for (const auto& m : r->metrics) {
    INFO(m.name);
    CHECK_FALSE(m.name.starts_with("net."));
    CHECK_FALSE(m.name.starts_with("disk."));
    CHECK_FALSE(m.name.starts_with("fs."));
    CHECK_FALSE(m.name.starts_with("cpu.0"));
  }
}

TEST_CASE("system: options and targets are validated", "[system]") {
  auto err = [](option_set s) {
    auto p = make_probe<system_probe>(s);
    REQUIRE_FALSE(p);
    return p.error();
  };
  option_set rel;
  rel.set("root", std::string("proc"));
  CHECK(err(rel).key == "root");
  option_set tiny;
  tiny.set("sample", duration(1ms));
  CHECK(err(tiny).key == "sample");
  option_set slow;
  slow.set("sample", duration(2s));
  slow.set("timeout", duration(1s));
  auto e = err(slow);
  CHECK(e.key == "sample");
  CHECK_THAT(e.message, Catch::Contains("shorter than the timeout"));

  auto p = make_system({});
  auto r = test::run_probe(p, test::target_for<system_probe>("db7.example.net"));
  REQUIRE_FALSE(r);
  CHECK(r.error().code == probe_errc::invalid_target);
  CHECK_THAT(r.error().message, Catch::Contains("localhost"));
  CHECK_FALSE(parse_target_for<system_probe>("localhost:22"));
}

TEST_CASE("system: host facts from a fixture tree", "[system]") {
  auto f = system::host_facts(fixture("basic/t0"));
  CHECK(f.problems.empty());
  CHECK(f.os == "Debian GNU/Linux 12 (bookworm)");
  CHECK(f.kernel == "Linux 6.1.0-13-amd64");
  CHECK(f.hostname == "db1");
  CHECK(f.cpu_model == "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz");
  CHECK(f.cpu_count == 2);
  CHECK(f.mem_total == 16777216000ull);
  CHECK(f.addresses.empty());

  auto bad = system::host_facts(fixture("malformed"));
  CHECK(bad.os.empty());
  CHECK(bad.mem_total == 0);
  CHECK_FALSE(bad.problems.empty());
}

// ---- live --------------------------------------------------------------------------------------

TEST_CASE("system: live sanity on this machine", "[system][live]") {
  auto p = make_system({});
  auto t = test::target_for<system_probe>("localhost");
  auto before = clock::now();
  auto r = test::run_probe(p, t);
  auto took = clock::now() - before;
  REQUIRE(r);
  INFO(r->message);
  CHECK(r->why == reason::none);
  CHECK(took >= 240ms);  // the first run samples over 250ms
  CHECK(took < 2s);
  auto total = value_of(*r, "cpu.total");
  CHECK(total >= 0.0);
  CHECK(total <= 100.0);
  const auto cores = std::thread::hardware_concurrency();
  if (cores > 0) CHECK(r->get("cpu." + std::to_string(cores - 1)));
  CHECK(value_of(*r, "mem.total") > 0);
  CHECK(value_of(*r, "mem.available") <= value_of(*r, "mem.total"));
  CHECK(value_of(*r, "uptime") > 0);
  CHECK(value_of(*r, "load.1") >= 0);
  for (const auto& m : r->metrics) {
    INFO(m.name << " = " << m.value);
    CHECK(std::isfinite(m.value));
    CHECK(m.value >= 0);
    if (m.name.ends_with("_pct") || m.name.ends_with(".util") || m.name.starts_with("cpu."))
      CHECK(m.value <= 100.0);
  }
  CHECK_THAT(r->message, Catch::StartsWith("cpu ") && Catch::Contains(", mem ") &&
                             Catch::Contains(", load ") && Catch::Contains(", up "));

  // The next run measures since this one without waiting a window.
  std::this_thread::sleep_for(300ms);
  before = clock::now();
  auto r2 = test::run_probe(p, t);
  CHECK(clock::now() - before < 200ms);
  REQUIRE(r2);
  CHECK(r2->get("cpu.total"));

  // A deadline too short for the window still answers, without rates.
  auto fresh = make_system({});
  auto r3 = test::run_probe(fresh, t, std::chrono::milliseconds(15));
  REQUIRE(r3);
  CHECK_FALSE(r3->get("cpu.total"));
  CHECK_THAT(r3->message, Catch::Contains("rates from the next run"));

  // The host name works as a target as well as localhost.
  auto facts = system::host_facts();
  REQUIRE_FALSE(facts.hostname.empty());
  CHECK(test::run_probe(p, test::target_for<system_probe>(facts.hostname)));
}

TEST_CASE("system: live host facts", "[system][live]") {
  auto f = system::host_facts();
  INFO(f.problems.size());
  CHECK_FALSE(f.hostname.empty());
  CHECK_THAT(f.kernel, Catch::StartsWith("Linux "));
  CHECK_FALSE(f.arch.empty());
  CHECK(f.cpu_count >= 1);
  CHECK(f.mem_total > 0);
  for (const auto& a : f.addresses) CHECK(a.find("127.") != 0);
}

TEST_CASE("system: the plugin describes its metric patterns and accepts conditions on them",
          "[system][plugins]") {
  const auto* e = test::plugins().find("system");
  REQUIRE(e);
  for (std::string c :
       {"cpu.total > 90%", "cpu.3 > 90%", "mem.available < 512MB", "net.eth0.rx_bytes > 10MB",
        "net.br-lan_100.errors > 0", "disk.nvme0n1.util >= 90%", "fs.root.used_pct > 90%",
        "fs.var_log.used_pct > 80%", "swap.used > 1GB", "load.15 > 4", "uptime < 10m"}) {
    auto r = engine::parse_condition_for(*e, c);
    INFO(c);
    CHECK(r);
  }
  auto mb = engine::parse_condition_for(*e, "mem.available < 512MB");
  REQUIRE(mb);
  CHECK(mb->value == 512.0 * 1024 * 1024);
  CHECK_FALSE(engine::parse_condition_for(*e, "mem.avail < 1GB"));
  CHECK_FALSE(engine::parse_condition_for(*e, "net.eth0 > 1"));
  CHECK_FALSE(engine::parse_condition_for(*e, "fs.var.log.used_pct > 1"));  // one segment

  // The engine passes the task's timeout: a sample window that cannot fit is refused at load.
  auto too_short = engine::create_probe(*e, "localhost", {}, duration(200ms));
  REQUIRE_FALSE(too_short);
  CHECK(too_short.error().key == "sample");

  // A run through the C ABI against the live system.
  auto inst = engine::create_probe(*e, "localhost", {}, duration(2s));
  REQUIRE(inst);
  auto out = test::run_c(*(*inst)->type(), (*inst)->handle(), 2s);
  REQUIRE(out.done);
  INFO(out.message);
  CHECK(out.reason == 0);
  CHECK(out.metric("cpu.total"));
  CHECK(out.metric("mem.available"));
}
