// libFuzzer target: the /proc and /sys text parsers of the system checker and the arithmetic
// over what they return. No ASIO (system_parse.hpp is coroutine-free).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <sonde/detail/system_parse.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace sys = sonde::detail::sys;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto s = sys::parse_stat(text)) {
    if (s->empty() || s->front().id != -1) __builtin_trap();
    for (std::size_t i = 1; i < s->size(); ++i) {
      auto u = sys::cpu_percent((*s)[i - 1], (*s)[i]);
      if (u && (!(u->total >= 0) || u->total > 100.0 + 1e-9)) __builtin_trap();
    }
  }
  if (auto m = sys::parse_meminfo(text)) {
    if (m->available > m->total || m->swap_free > m->swap_total) __builtin_trap();
  }
  (void)sys::parse_loadavg(text);
  (void)sys::parse_uptime(text);
  if (auto n = sys::parse_net_dev(text))
    for (const auto& i : *n) {
      auto seg = sys::metric_segment(i.name);
      for (char c : seg)
        if (c == '.' || c == '/' || c == ' ') __builtin_trap();
    }
  (void)sys::parse_diskstats(text);
  if (auto m = sys::parse_mounts(text))
    for (const auto& e : *m) {
      auto seg = sys::mount_segment(e.point);
      if (seg.empty() || seg.find('.') != std::string::npos) __builtin_trap();
      (void)sys::skipped_fstype(e.type);
    }
  (void)sys::parse_cpuinfo(text);
  (void)sys::parse_os_release(text);
  (void)sys::unescape_mount(text);
  return 0;
}
