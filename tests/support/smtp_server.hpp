#pragma once
// A real SMTP server for the email notifier tests: aiosmtpd (Debian's python3-aiosmtpd) on
// 127.0.0.1, started with a small script written at test time. It writes each message it
// accepts to <dir>/msg-N.eml (the bytes as received after DATA) and <dir>/msg-N.json (envelope
// sender and recipients, whether the session was under TLS, whether it authenticated). Modes:
// STARTTLS required (the test certificates of tls_certs.hpp), optionally with AUTH required;
// or plain (no STARTTLS offered at all). A missing aiosmtpd throws (failing the test) with the
// command that installs it.

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "files.hpp"
#include "process.hpp"
#include "tls_certs.hpp"

namespace sonde::test {

/// A Python 3 that has aiosmtpd: Debian's /usr/bin/python3 first (a python3 earlier on PATH,
/// such as a pyenv one, does not see Debian's packages), then python3 on PATH.
inline std::string python_with_aiosmtpd() {
  for (const char* py : {"/usr/bin/python3", "python3"}) {
    const std::string cmd = std::string(py) + " -c 'import aiosmtpd' >/dev/null 2>&1";
    if (std::system(cmd.c_str()) == 0) return py;
  }
  throw std::runtime_error(
      "aiosmtpd not found (the email notifier tests need a real SMTP server): install it with "
      "'sudo apt-get install python3-aiosmtpd'");
}

class smtp_server {
 public:
  enum class mode { starttls, plain };

  /// `user` non-empty: AUTH (PLAIN/LOGIN) required with these credentials, only under TLS.
  explicit smtp_server(mode m, std::string user = {}, std::string password = {}) {
    const std::string python = python_with_aiosmtpd();
    const auto& certs = tls_certs();
    dir_.write("smtp_sink.py", script());
    std::filesystem::create_directories(dir_.path() + "/mail");
    for (int attempt = 1;; ++attempt) {
      port_ = free_port();
      // Through sh only to send aiosmtpd's own log (deprecation notes, TLS alerts the tests
      // cause on purpose) to a file; exec keeps the pid child_process stops.
      const std::string log = dir_.path() + "/aiosmtpd.log";
      proc_ = std::make_unique<child_process>(std::vector<std::string>{
          "/bin/sh", "-c", "log=$1; shift; exec \"$@\" 2>>\"$log\"", "sh", log, python,
          dir_.path() + "/smtp_sink.py", std::to_string(port_), dir_.path() + "/mail",
          m == mode::starttls ? "starttls" : "plain", certs.valid.cert, certs.valid.key, user,
          password, dir_.path() + "/ready"});
      if (wait_until([&] { return std::filesystem::exists(dir_.path() + "/ready"); },
                     std::chrono::milliseconds(15000)))
        break;
      const bool running = proc_->running();
      proc_.reset();
      if (attempt == 3 || running)
        throw std::runtime_error("aiosmtpd did not start on 127.0.0.1:" + std::to_string(port_) +
                                 ": " + read(log));
    }
  }
  ~smtp_server() { proc_.reset(); }
  smtp_server(const smtp_server&) = delete;
  smtp_server& operator=(const smtp_server&) = delete;

  unsigned short port() const { return port_; }
  /// smtp://127.0.0.1:<port>
  std::string url() const { return "smtp://127.0.0.1:" + std::to_string(port_); }

  /// The messages received so far: (raw message, metadata JSON text), in order.
  std::vector<std::pair<std::string, std::string>> messages() const {
    std::vector<std::pair<std::string, std::string>> out;
    for (int n = 1;; ++n) {
      const std::string base = dir_.path() + "/mail/msg-" + std::to_string(n);
      if (!std::filesystem::exists(base + ".json")) break;
      out.emplace_back(read(base + ".eml"), read(base + ".json"));
    }
    return out;
  }

 private:
  static std::string read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  static std::string script() {
    return R"PY(
import json, os, signal, ssl, sys
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, outdir, mode, cert, key, user, password, ready = sys.argv[1:9]
# Blocked before the server thread starts, so that only sigwait below sees them.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})

class Sink:
    def __init__(self):
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        base = os.path.join(outdir, "msg-%d" % self.n)
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content)
        meta = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                "tls": session.ssl is not None, "authenticated": bool(session.authenticated)}
        with open(base + ".json.tmp", "w") as f:
            json.dump(meta, f)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 2.0.0 Message accepted for delivery"

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user
          and auth_data.password.decode() == password)
    return AuthResult(success=ok, handled=False)

kwargs = {}
if mode == "starttls":
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    kwargs.update(tls_context=ctx, require_starttls=True)
if user:
    kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=True)
controller = Controller(Sink(), hostname="127.0.0.1", port=int(port), **kwargs)
controller.start()
open(ready, "w").close()
signal.sigwait([signal.SIGTERM, signal.SIGINT])
controller.stop()
)PY";
  }

  temp_dir dir_;
  unsigned short port_ = 0;
  std::unique_ptr<child_process> proc_;
};

}  // namespace sonde::test
