// libFuzzer target: the control protocol's request path, everything a client's bytes reach
// before a command runs: line splitting with the length limit, request parsing, and the
// decoding of selectors, watch filters and task definitions (with the seed aliases).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "control/control_request.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace e = sonde::engine;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  // Feed in two chunks split at a data-dependent point, as TCP might deliver it.
  e::line_splitter lines(256);
  std::size_t cut = size ? data[0] % (size + 1) : 0;
  lines.feed(in.substr(0, cut));
  std::size_t total = 0;
  auto drain = [&] {
    while (auto l = lines.next()) {
      if (l->too_long) continue;
      if (l->text.size() > 256) __builtin_trap();  // the limit holds
      auto r = e::parse_request(l->text);
      if (!r) {
        total += r.error().message.size();
        continue;
      }
      total += r->command.size();
      if (auto s = e::parse_selector(r->body)) total += s->names.size() + s->ids.size();
      if (auto f = e::parse_watch_filter(r->body)) total += f->matches("a", "tcp", "ok");
      if (auto d = e::parse_task_definition(r->body)) total += d->name.size() + d->fields.size();
    }
  };
  drain();
  lines.feed(in.substr(cut));
  drain();
  if (lines.buffered() > 256 + size) __builtin_trap();  // memory stays bounded
  (void)e::parse_listen_address(in.substr(0, 64));
  (void)e::is_loopback_host(in.substr(0, 64));
  asm volatile("" : : "g"(total) : "memory");
  return 0;
}
