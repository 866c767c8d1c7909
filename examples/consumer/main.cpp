// tcp_check HOST:PORT [TIMEOUT]: run sonde's tcp probe once, print the observation.
#include <cstdio>
#include <optional>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>

#include <sonde/tcp.hpp>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: tcp_check HOST:PORT [TIMEOUT]\n");
    return 3;
  }
  auto target = sonde::parse_target_for<sonde::tcp_probe>(argv[1]);
  if (!target) {
    std::fprintf(stderr, "%s\n", target.error().message.c_str());
    return 3;
  }
  auto timeout = sonde::parse_duration(argc > 2 ? argv[2] : "2s");
  if (!timeout) {
    std::fprintf(stderr, "%s\n", timeout.error().c_str());
    return 3;
  }
  auto probe = sonde::make_probe<sonde::tcp_probe>(sonde::option_set{});
  if (!probe) return 3;

  asio::io_context io;
  std::optional<sonde::probe_result> result;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        result = co_await probe->run(*target, sonde::clock::now() + *timeout);
      },
      asio::detached);
  io.run();
  if (!result || !*result) return 3;
  const auto& obs = **result;
  std::printf("%s: %s%s%s\n", argv[1], obs.why == sonde::reason::none ? "ok" : "failed",
              obs.why == sonde::reason::none ? "" : " reason=",
              std::string(sonde::to_string(obs.why)).c_str());
  std::printf("message: %s\n", obs.message.c_str());
  for (const auto& m : obs.metrics) std::printf("%s = %g\n", m.name.c_str(), m.value);
  return obs.why == sonde::reason::none ? 0 : 2;
}
