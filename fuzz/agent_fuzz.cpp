// libFuzzer target: the agent protocol as the central receives it (docs/agents.md): request
// lines through the control protocol's line splitter and parse_request, then the decoding and
// validation of agent_hello, report and info_reply (engine/src/agent_protocol.cpp), plus the
// agent keys file parser and the key comparison. Whatever is accepted is then used the way the
// central uses it (dumped, copied, its results' times parsed), which must stay cheap and
// non-recursive-safe because validation bounds the shape.
//
// The registry itself (engine/src/agent_registry.cpp) needs the scheduler's headers, which
// clang 14 cannot compile with ASIO's coroutines; its use of these decoders is covered by
// tests/engine/agent_registry.cpp.
//
// corpus/agent/ holds deep-nesting (facts, metrics, the request's own "seq") and duplicate-key
// inputs. deep_seq stops in parse_request itself (copying a 10,000-deep "seq"), before any
// agent decoding: it needs parse_request's nesting-depth limit (issue 10 #2, control side).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "agents/agent_protocol.hpp"
#include "control/control_request.hpp"

namespace {

void use(const nlohmann::json& j, std::size_t& total) {
  // What the central does with accepted input: store it as a line, show it, copy it.
  total += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).size();
  nlohmann::json copy = j;
  total += copy.size();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace e = sonde::engine;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  constexpr std::size_t max_line = 1 << 16;
  e::line_splitter lines(max_line);
  std::size_t cut = size ? data[0] % (size + 1) : 0;
  std::size_t total = 0;
  auto drain = [&] {
    while (auto l = lines.next()) {
      if (l->too_long) continue;
      auto r = e::parse_request(l->text);
      if (!r) continue;
      if (r->command == "agent_hello") {
        if (auto h = e::decode_agent_hello(r->body)) {
          if (h->next_seq == 0 || h->next_seq > e::agent_limits::max_seq + 1) __builtin_trap();
          if (!e::check_agent_facts(h->facts)) __builtin_trap();  // accepted means valid
          use(h->facts, total);
          if (h->key) total += e::agent_key_equal(*h->key, "0123456789abcdef0123");
        }
      } else if (r->command == "report") {
        if (auto rep = e::decode_agent_report(r->body)) {
          if (rep->results.size() > e::agent_limits::max_results) __builtin_trap();
          std::uint64_t prev = 0;
          for (const auto& res : rep->results) {
            auto seq = res["seq"].get<std::uint64_t>();
            if (seq <= prev || seq >= rep->next_seq || seq > e::agent_limits::max_seq)
              __builtin_trap();  // the limits hold
            prev = seq;
            if (!e::parse_agent_time(res["time"].get<std::string>())) __builtin_trap();
          }
          use(rep->results, total);
        }
      } else if (r->command == "info_reply") {
        if (auto info = e::decode_agent_info_reply(r->body)) use(info->facts, total);
      }
    }
  };
  lines.feed(in.substr(0, cut));
  drain();
  lines.feed(in.substr(cut));
  drain();
  if (auto keys = e::parse_agent_keys(in, "agent-keys"))
    for (const auto& [name, key] : *keys) total += e::agent_key_equal(key, name);
  (void)e::parse_agent_time(in.substr(0, 48));
  asm volatile("" : : "g"(total) : "memory");
  return 0;
}
