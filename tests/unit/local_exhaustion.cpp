// Every checker, run while the process has no free file descriptor: the monitor's own shortage
// is a probe_error `resource` (the engine reports UNKNOWN) whose message says the engine ran out
// of file descriptors, never an observation that blames the target (CRITICAL). Each run happens
// in a child process whose RLIMIT_NOFILE is lowered to the descriptors it already holds.
#include <dirent.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <sonde/dns.hpp>
#include <sonde/error.hpp>
#include <sonde/http.hpp>
#include <sonde/icmp.hpp>
#include <sonde/ntp.hpp>
#include <sonde/plugin_export.hpp>
#include <sonde/tcp.hpp>
#include <sonde/traceroute.hpp>
#include <sonde/udp.hpp>

#include "support/support.hpp"

using namespace sonde;
using namespace std::chrono_literals;

namespace {

/// One probe run in the starved child, as text: "<kind>\t<E|O>\t<code or reason>\t<message>".
using starved_run = std::function<std::string(asio::io_context&)>;

template <class P>
starved_run starved(const P& p, std::string target_text) {
  return [p, target_text](asio::io_context& io) {
    auto t = parse_target_for<P>(target_text);
    std::optional<probe_result> out;
    asio::co_spawn(
        io,
        [&p, &t, &out]() -> asio::awaitable<void> { out = co_await p.run(*t, clock::now() + 2s); },
        asio::detached);
    io.run();
    io.restart();
    std::string line = std::string(P::kind) + "\t";
    if (!out)
      line += "E\t-1\tno result";
    else if (!*out)
      line +=
          "E\t" + std::to_string(static_cast<int>(out->error().code)) + "\t" + out->error().message;
    else
      line += "O\t" + std::string(to_string((*out)->why)) + "\t" + (*out)->message;
    for (auto& c : line)
      if (c == '\n') c = ' ';
    return line + "\n";
  };
}

/// Lower the soft RLIMIT_NOFILE to the highest open descriptor + 1 and fill every hole below
/// it: from here on, socket() fails with EMFILE.
void use_up_descriptors(int spare) {
  int highest = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) highest = std::max(highest, std::atoi(e->d_name));
    ::closedir(d);
  }
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = static_cast<rlim_t>(highest) + 1;
  ::setrlimit(RLIMIT_NOFILE, &rl);
  while (::dup(spare) >= 0) {
  }
}

/// Run `runs` in a child process out of descriptors; one line per run.
std::vector<std::string> run_starved(const std::vector<starved_run>& runs,
                                     const std::function<void(asio::io_context&)>& warm) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    ::alarm(60);  // never hang the test run
    std::string all;
    {
      // Each run once with descriptors to spare, on its own io_context so nothing it opened
      // is reused: UndefinedBehaviorSanitizer's vptr check opens a pipe the first time it sees
      // a dynamic type, which cannot work once the descriptors are gone; afterwards it
      // remembers the type. A running engine has likewise run its checkers before.
      asio::io_context before;
      for (const auto& r : runs) (void)r(before);
    }
    {
      asio::io_context io;
      warm(io);  // what a running engine already holds: its reactor, curl's multi handle
      use_up_descriptors(fds[1]);
      for (const auto& r : runs) all += r(io);
    }
    for (std::size_t off = 0; off < all.size();) {
      auto n = ::write(fds[1], all.data() + off, all.size() - off);
      if (n <= 0) break;
      off += static_cast<std::size_t>(n);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;)
    text.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  INFO(text);
  REQUIRE(WIFEXITED(status));
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

}  // namespace

TEST_CASE("local exhaustion: errno values that are the monitor's own shortage", "[probe]") {
  for (int e : {EMFILE, ENFILE, ENOBUFS, ENOMEM}) CHECK(is_local_exhaustion(e));
  for (int e : {0, ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, EACCES, EAFNOSUPPORT})
    CHECK_FALSE(is_local_exhaustion(e));
  auto e = local_exhaustion_error(EMFILE, "opening a TCP socket");
  REQUIRE(e);
  CHECK(e->code == probe_errc::resource);
  CHECK_THAT(e->message, Catch::Contains("the engine ran out of file descriptors") &&
                             Catch::Contains("EMFILE") && Catch::Contains("opening a TCP socket"));
  e = local_exhaustion_error(ENFILE, "x");
  REQUIRE(e);
  CHECK_THAT(e->message, Catch::Contains("ran out of file descriptors (ENFILE"));
  e = local_exhaustion_error(ENOBUFS, "x");
  REQUIRE(e);
  CHECK_THAT(e->message, Catch::Contains("ran out of memory for sockets (ENOBUFS"));
  CHECK_FALSE(local_exhaustion_error(ECONNREFUSED, "x"));
}

TEST_CASE("local exhaustion: every checker out of descriptors reports resource, not the target",
          "[probe][tcp][udp][http][dns][ntp][icmp][traceroute][integration]") {
  const std::string port = std::to_string(test::closed_port());
  std::vector<starved_run> runs{
      starved(test::make<tcp_probe>(), "127.0.0.1:" + port),
      starved(test::make<udp_probe>(test::opts({{"send", std::string("x")}})), "127.0.0.1:" + port),
      starved(test::make<http_probe>(), "http://127.0.0.1:" + port + "/"),
      starved(test::make<dns_probe>(test::opts({{"query", std::string("example.org")}})),
              "127.0.0.1:" + port),
      starved(test::make<dns_probe>(test::opts(
                  {{"query", std::string("example.org")}, {"transport", std::string("tcp")}})),
              "127.0.0.1:" + port),
      starved(test::make<ntp_probe>(), "127.0.0.1:" + port),
      starved(test::make<icmp_probe>(test::opts({{"count", std::int64_t{1}}})), "127.0.0.1"),
      starved(test::make<traceroute_probe>(test::opts({{"max_hops", std::int64_t{2}}})),
              "127.0.0.1"),
  };
  auto lines = run_starved(
      runs, [](asio::io_context& io) { (void)asio::use_service<detail::curl_service>(io); });
  REQUIRE(lines.size() == runs.size());
  const std::string resource = std::to_string(static_cast<int>(probe_errc::resource));
  const std::string denied = std::to_string(static_cast<int>(probe_errc::permission_denied));
  for (const auto& l : lines) {
    INFO(l);
    const bool raw_sockets = l.starts_with("icmp\t") || l.starts_with("traceroute\t");
    if (raw_sockets && l.find("\tE\t" + denied + "\t") != std::string::npos) {
      WARN("skipped: ICMP sockets are not permitted here: " << l);
      continue;
    }
    CHECK(l.find("\tE\t" + resource + "\t") != std::string::npos);
    CHECK(l.find("the engine ran out of file descriptors (EMFILE") != std::string::npos);
  }
}
