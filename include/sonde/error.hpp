#pragma once
/// @file error.hpp
/// probe_error: why a probe could not run at all.
///
/// An unhealthy target is not an error: a timeout, a refused connection or a wrong answer is an
/// `observation` with a `reason`. A `probe_error` means the probe itself could not run: its
/// options are wrong, it lacks a permission, or the system cannot do what it asks.

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

namespace sonde {

/// Closed set of reasons a probe cannot run. Values are fixed and never reused.
enum class probe_errc : int {
  invalid_option = 1,     ///< an option is malformed or out of range; `key` names it
  invalid_target = 2,     ///< the target does not fit the probe type (e.g. a port is missing)
  permission_denied = 3,  ///< the system refused a needed privilege; the message names the fix
  unsupported = 4,        ///< the system or build cannot do this (e.g. no IPv6)
  resource = 5,           ///< a resource ran out (file descriptors, memory)
  internal = 6,           ///< a broken invariant or an unexpected exception inside the probe
  cancelled = 7,          ///< the run was cancelled before it produced an observation
};

/// Stable lower-case name of a probe_errc ("invalid_option", ...).
constexpr std::string_view to_string(probe_errc c) noexcept {
  switch (c) {
    case probe_errc::invalid_option:
      return "invalid_option";
    case probe_errc::invalid_target:
      return "invalid_target";
    case probe_errc::permission_denied:
      return "permission_denied";
    case probe_errc::unsupported:
      return "unsupported";
    case probe_errc::resource:
      return "resource";
    case probe_errc::internal:
      return "internal";
    case probe_errc::cancelled:
      return "cancelled";
  }
  return "unknown";
}

/// A probe could not run. `key` names the offending option ("target" for the target), or is
/// empty when no single option is to blame. `message` is a complete sentence for a human.
struct probe_error {
  probe_errc code = probe_errc::internal;
  std::string key;
  std::string message;
};

/// Whether `err`, an errno value from creating or connecting a socket, means that the monitor
/// itself ran out of something: descriptors (EMFILE for the process, ENFILE for the system) or
/// kernel memory for sockets (ENOBUFS, ENOMEM). Such a failure says nothing about the target.
constexpr bool is_local_exhaustion(int err) noexcept {
  return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

/// The probe_error every checker reports when the monitor ran out of descriptors or socket
/// memory while `doing` ("opening a TCP socket"): code `resource`, so the result is UNKNOWN and
/// never a CRITICAL blamed on the target. nullopt when `err` is not such a failure.
/// Thread-safe.
inline std::optional<probe_error> local_exhaustion_error(int err, std::string_view doing) {
  if (!is_local_exhaustion(err)) return std::nullopt;
  const bool fds = err == EMFILE || err == ENFILE;
  std::string m =
      fds ? "the engine ran out of file descriptors" : "the engine ran out of memory for sockets";
  m += " (";
  m += err == EMFILE ? "EMFILE" : err == ENFILE ? "ENFILE" : err == ENOBUFS ? "ENOBUFS" : "ENOMEM";
  m += ": ";
  char buf[128];
  // GNU strerror_r returns the text (possibly not in buf); the XSI one returns an int.
  auto text = [&](auto r) -> const char* {
    if constexpr (std::is_same_v<decltype(r), int>)
      return r == 0 ? buf : "error";
    else
      return r;
  };
  m += text(strerror_r(err, buf, sizeof buf));
  m += ") while ";
  m += doing;
  m += fds ? ": raise its open-file limit (ulimit -n, systemd LimitNOFILE=) or lower "
             "max_in_flight"
           : ": lower max_in_flight or check the system's socket memory";
  return probe_error{probe_errc::resource, "", std::move(m)};
}

/// Convenience constructor for an invalid-option error.
inline probe_error option_error(std::string key, std::string message) {
  return probe_error{probe_errc::invalid_option, std::move(key), std::move(message)};
}

}  // namespace sonde
