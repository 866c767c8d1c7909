// The `exec` notifier: a child process per message, watched by the loop without blocking it.
//   - posix_spawn (vfork-like, no copy of the engine's memory) into a new process group, with
//     default signal dispositions and an empty signal mask, every descriptor above 2 closed in
//     the child (and every pipe end we make close-on-exec as well);
//   - stdin is written without blocking (EPIPE from a child that does not read is not an
//     error, and SIGPIPE is kept from the engine even when it does not ignore it);
//   - stdout and stderr are drained as they come; only their last 4 KiB are kept;
//   - exit is seen through a pidfd (pidfd_open, Linux 5.3) that the loop waits on, then reaped
//     with waitpid; without pidfd_open, a 20 ms poll of waitpid(WNOHANG) does it;
//   - the timeout kills the whole process group with SIGKILL.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <thread>

#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>

#include <sonde/duration.hpp>
#include <sonde/target.hpp>

#include "alarms/event_text.hpp"
#include "alarms/notifier_configs.hpp"
#include "alarms/transfer.hpp"

namespace sonde::engine::alarms {

namespace {

using outcome = delivery_result::outcome;
using done_fn = std::function<void(delivery_result)>;
using namespace std::chrono_literals;

/// Output kept per stream.
constexpr std::size_t kept_output = 4096;
/// Most bytes read from the pipes in one go once the child has exited.
constexpr std::size_t final_drain = 1 << 20;

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

/// A close-on-exec pipe whose ends are not 0, 1 or 2 (so that dup2 in the child always makes
/// a fresh, inheritable copy).
bool make_pipe(int fds[2]) {
  if (::pipe2(fds, O_CLOEXEC) != 0) return false;
  for (int i = 0; i < 2; ++i) {
    if (fds[i] > 2) continue;
    const int moved = ::fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
    ::close(fds[i]);
    fds[i] = moved;
  }
  if (fds[0] < 0 || fds[1] < 0) {
    close_fd(fds[0]);
    close_fd(fds[1]);
    return false;
  }
  return true;
}

void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/// write() that never raises SIGPIPE in the engine: SIGPIPE is blocked around the call and a
/// SIGPIPE it caused is consumed before the mask is restored.
ssize_t write_no_sigpipe(int fd, const char* p, std::size_t n) {
  sigset_t pipe_set, old;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  sigset_t pending;
  sigemptyset(&pending);
  sigpending(&pending);
  const bool was_pending = sigismember(&pending, SIGPIPE) == 1;
  const ssize_t r = ::write(fd, p, n);
  const int err = errno;
  if (r < 0 && err == EPIPE && !was_pending) {
    const timespec zero{0, 0};
    while (sigtimedwait(&pipe_set, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = err;
  return r;
}

/// Keep the last kept_output bytes of `s`.
void keep_tail(std::string& s) {
  if (s.size() > 2 * kept_output) s.erase(0, s.size() - kept_output);
}

/// The last non-empty line of `s`, on one line.
std::string last_line(std::string_view s) {
  if (s.size() > kept_output) s = s.substr(s.size() - kept_output);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' '))
    s.remove_suffix(1);
  const auto nl = s.find_last_of('\n');
  return one_line(nl == std::string_view::npos ? s : s.substr(nl + 1), 300);
}

/// One child process and everything the loop watches for it.
struct child_run : std::enable_shared_from_this<child_run> {
  explicit child_run(asio::io_context& io)
      : in(io), out(io), err(io), pidfd(io), timer(io), poll(io) {}
  ~child_run() { kill_and_reap(); }
  child_run(const child_run&) = delete;
  child_run& operator=(const child_run&) = delete;

  asio::posix::stream_descriptor in, out, err, pidfd;
  asio::steady_timer timer, poll;
  pid_t pid = -1;
  bool reaped = false;
  bool timed_out = false;
  int status = 0;
  std::string input;
  std::size_t written = 0;
  std::string out_tail, err_tail;
  std::array<char, 4096> out_buf, err_buf;
  std::function<void(child_run&)> on_exit;

  /// SIGKILL to the group and the child, then reap within a second (the child cannot catch
  /// SIGKILL; only a process stuck in the kernel takes longer, and is then left to init).
  void kill_and_reap() {
    if (pid <= 0 || reaped) return;
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
    for (int i = 0; i < 1000; ++i) {
      const pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid || (r < 0 && errno == ECHILD)) {
        reaped = true;
        return;
      }
      std::this_thread::sleep_for(1ms);
    }
  }

  void write_input() {
    while (written < input.size()) {
      const ssize_t n =
          write_no_sigpipe(in.native_handle(), input.data() + written, input.size() - written);
      if (n > 0) {
        written += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        std::weak_ptr<child_run> w = weak_from_this();
        in.async_wait(asio::posix::descriptor_base::wait_write, [w](asio::error_code ec) {
          if (auto self = w.lock(); self && !ec && self->in.is_open()) self->write_input();
        });
        return;
      }
      break;  // EPIPE: the child does not read its input, or is gone
    }
    asio::error_code ignored;
    in.close(ignored);  // EOF for the child
  }

  /// Read `d` into `tail` through `buf` until EOF (each stream has its own buffer).
  void read_from(asio::posix::stream_descriptor& d, std::string& tail,
                 std::array<char, 4096>& buf) {
    std::weak_ptr<child_run> w = weak_from_this();
    d.async_read_some(asio::buffer(buf), [w, &d, &tail, &buf](asio::error_code ec, std::size_t n) {
      auto self = w.lock();
      if (!self) return;
      tail.append(buf.data(), n);
      keep_tail(tail);
      if (ec) {
        if (ec != asio::error::operation_aborted) {
          asio::error_code ignored;
          d.close(ignored);
        }
        return;
      }
      self->read_from(d, tail, buf);
    });
  }

  /// What is still in a pipe after exit, without waiting for a writer that may never close.
  void drain(asio::posix::stream_descriptor& d, std::string& tail) {
    if (!d.is_open()) return;
    asio::error_code ignored;
    d.cancel(ignored);
    std::size_t total = 0;
    char buf[4096];
    while (total < final_drain) {
      const ssize_t n = ::read(d.native_handle(), buf, sizeof buf);
      if (n > 0) {
        total += static_cast<std::size_t>(n);
        tail.append(buf, static_cast<std::size_t>(n));
        keep_tail(tail);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      break;
    }
    d.close(ignored);
  }

  void wait_exit() {
    std::weak_ptr<child_run> w = weak_from_this();
    if (pidfd.is_open()) {
      pidfd.async_wait(asio::posix::descriptor_base::wait_read, [w](asio::error_code ec) {
        if (auto self = w.lock(); self && !ec) self->check_exit();
      });
    } else {
      poll.expires_after(20ms);
      poll.async_wait([w](asio::error_code ec) {
        if (auto self = w.lock(); self && !ec) self->check_exit();
      });
    }
  }

  void check_exit() {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR)) return wait_exit();
    reaped = true;               // r == pid, or ECHILD: nothing left to reap either way
    if (r < 0) status = 0x7f00;  // unknown: reported as a failure below
    asio::error_code ignored;
    timer.cancel();
    pidfd.close(ignored);
    in.close(ignored);
    // Output the reactor has already read waits in queued handlers: let them run first.
    std::weak_ptr<child_run> w = weak_from_this();
    asio::post(pidfd.get_executor(), [w] {
      if (auto self = w.lock()) self->finish();
    });
  }

  void finish() {
    drain(out, out_tail);
    drain(err, err_tail);
    if (on_exit) {
      auto cb = std::move(on_exit);
      on_exit = nullptr;
      auto keep = shared_from_this();
      cb(*this);
    }
  }
};

class exec_notifier final : public notifier {
 public:
  exec_notifier(asio::io_context& io, notifier_spec spec, exec_config c)
      : notifier(std::move(spec)), io_(io), c_(std::move(c)) {}
  ~exec_notifier() override { current_.reset(); }

  void send(const notification& n, done_fn done) override {
    if (current_)
      return post_done(std::move(done),
                       {outcome::retry, "busy: the previous message is still in flight", {}});
    auto run = std::make_shared<child_run>(io_);
    run->input = json_text(message_json(n.events));
    std::string why = spawn(*run, n);
    if (!why.empty()) return post_done(std::move(done), {outcome::retry, why, {}});
    current_ = run;
    const auto timeout = spec_.timeout;
    run->on_exit = [this, done = std::move(done), timeout](child_run& r) {
      delivery_result res = judge(r, timeout);
      current_.reset();
      done(std::move(res));
    };
    run->write_input();
    run->read_from(run->out, run->out_tail, run->out_buf);
    run->read_from(run->err, run->err_tail, run->err_buf);
    std::weak_ptr<child_run> w = run;
    run->timer.expires_after(timeout);
    run->timer.async_wait([w](asio::error_code ec) {
      auto self = w.lock();
      if (!self || ec || self->reaped) return;
      self->timed_out = true;
      ::kill(-self->pid, SIGKILL);
      ::kill(self->pid, SIGKILL);
    });
    run->wait_exit();
  }

 private:
  static delivery_result judge(const child_run& r, std::chrono::milliseconds timeout) {
    if (r.timed_out) return {outcome::retry, timed_out_text(timeout), {}};
    if (WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0)
      return {outcome::delivered, "exit status 0", {}};
    std::string detail;
    if (WIFEXITED(r.status)) {
      detail = "exit status " + std::to_string(WEXITSTATUS(r.status));
    } else if (WIFSIGNALED(r.status)) {
      const char* name = sigabbrev_np(WTERMSIG(r.status));
      detail = "killed by signal " + std::to_string(WTERMSIG(r.status)) +
               (name ? std::string(" (SIG") + name + ")" : std::string());
    } else {
      detail = "ended with an unknown status";
    }
    if (auto line = last_line(r.err_tail); !line.empty()) detail += ": " + line;
    return {outcome::retry, detail, {}};
  }

  /// Start the child; "" or why it could not start.
  std::string spawn(child_run& run, const notification& n) {
    int in_p[2] = {-1, -1}, out_p[2] = {-1, -1}, err_p[2] = {-1, -1};
    auto close_all = [&] {
      for (int* p : {in_p, out_p, err_p}) {
        close_fd(p[0]);
        close_fd(p[1]);
      }
    };
    if (!make_pipe(in_p) || !make_pipe(out_p) || !make_pipe(err_p)) {
      const std::string why = std::string("cannot make a pipe: ") + std::strerror(errno);
      close_all();
      return why;
    }
    std::vector<std::string> env = {
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG=C.UTF-8",
        "SONDE_NOTIFIER=" + spec_.name,
        "SONDE_NOTIFICATION_ID=" + std::to_string(n.id),
        "SONDE_EVENT_COUNT=" + std::to_string(n.events.size()),
    };
    if (n.test) env.emplace_back("SONDE_TEST=1");
    for (const auto& [k, v] : c_.env) {
      const std::string prefix = k + "=";
      std::erase_if(env, [&](const std::string& e) { return e.starts_with(prefix); });
      env.push_back(prefix + v);
    }
    std::vector<char*> envp, argv;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::vector<std::string> args = c_.command;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_adddup2(&fa, in_p[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out_p[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err_p[1], 2);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    for (int s : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM,
                  SIGTSTP, SIGTTIN, SIGTTOU, SIGXFSZ})
      sigaddset(&defaults, s);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(
        &attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid = -1;
    const int rc = c_.command[0].find('/') == std::string::npos
                       ? posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(), envp.data())
                       : posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close_fd(in_p[0]);
    close_fd(out_p[1]);
    close_fd(err_p[1]);
    if (rc != 0) {
      close_all();
      return "cannot run " + sonde::detail::quote_input(c_.command[0]) + ": " + std::strerror(rc);
    }
    run.pid = pid;
    for (int fd : {in_p[1], out_p[0], err_p[0]}) set_nonblocking(fd);
    asio::error_code ec;
    for (auto [d, fd] : {std::pair{&run.in, &in_p[1]}, std::pair{&run.out, &out_p[0]},
                         std::pair{&run.err, &err_p[0]}}) {
      if (!ec) d->assign(*fd, ec);
      if (!ec) *fd = -1;  // the descriptor object owns it now
    }
    if (ec) {
      close_all();
      run.kill_and_reap();
      return "cannot watch the program's pipes: " + ec.message();
    }
    const long pfd = ::syscall(SYS_pidfd_open, pid, 0);  // close-on-exec by definition
    if (pfd >= 0) {
      run.pidfd.assign(static_cast<int>(pfd), ec);
      if (ec) ::close(static_cast<int>(pfd));  // waitpid polling instead
    }
    return {};
  }

  void post_done(done_fn done, delivery_result r) {
    std::weak_ptr<bool> alive = alive_;
    asio::post(io_, [alive, done = std::move(done), r = std::move(r)]() mutable {
      if (alive.lock()) done(std::move(r));
    });
  }

  asio::io_context& io_;
  exec_config c_;
  std::shared_ptr<child_run> current_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace

std::unique_ptr<notifier> make_exec(asio::io_context& io, notifier_spec spec, exec_config c) {
  return std::make_unique<exec_notifier>(io, std::move(spec), std::move(c));
}

}  // namespace sonde::engine::alarms
