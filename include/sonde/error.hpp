#pragma once
/// @file error.hpp
/// probe_error: why a probe could not run at all.
///
/// An unhealthy target is not an error: a timeout, a refused connection or a wrong answer is an
/// `observation` with a `reason`. A `probe_error` means the probe itself could not run: its
/// options are wrong, it lacks a permission, or the system cannot do what it asks.

#include <string>
#include <string_view>

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

/// Convenience constructor for an invalid-option error.
inline probe_error option_error(std::string key, std::string message) {
  return probe_error{probe_errc::invalid_option, std::move(key), std::move(message)};
}

}  // namespace sonde
