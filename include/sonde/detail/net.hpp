#pragma once
/// @file detail/net.hpp
/// Small pieces the socket checkers share: a deadline watchdog, error-code classification,
/// escape decoding for payload options, and printable excerpts of replies.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <asio/error.hpp>
#include <asio/ip/address.hpp>
#include <asio/steady_timer.hpp>

#include "../probe.hpp"
#include "../resolve.hpp"
#include "../result.hpp"

namespace sonde::detail {

/// Runs `on_fire` once when the deadline passes, unless disarmed or destroyed first.
/// Cheaper than racing every operation against a timer: one timer per run. The watchdog must
/// outlive nothing it references; declare it after the sockets it cancels.
class watchdog {
 public:
  template <class F>
  watchdog(const asio::any_io_executor& ex, deadline dl, F on_fire)
      : timer_(ex), alive_(std::make_shared<bool>(true)) {
    timer_.expires_at(dl);
    // The expiry may already be queued when the run finishes for another reason and destroys
    // the watchdog; cancelling cannot recall it, so the handler checks that we still exist.
    timer_.async_wait([this, alive = std::weak_ptr<bool>(alive_),
                       f = std::move(on_fire)](asio::error_code ec) mutable {
      if (ec || alive.expired()) return;
      fired_ = true;
      f();
    });
  }
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;
  /// True once the deadline has passed and `on_fire` ran.
  bool fired() const noexcept { return fired_; }
  /// Stop watching (idempotent).
  void disarm() { timer_.cancel(); }

 private:
  asio::steady_timer timer_;
  std::shared_ptr<bool> alive_;  // expires with the watchdog; the handler holds a weak_ptr
  bool fired_ = false;
};

/// A short repeating timer that runs while some work is active (between begin() and end()).
/// Each probe run waits on its own deadline timer; when that timer is the earliest one of the
/// io_context, arming it reprograms the kernel timer (timerfd_settime), which at one run at a
/// time costs a system call per run. A beating heartbeat is earlier than every deadline more
/// than one period away, so those timers queue without a system call, and the heartbeat itself
/// rearms at most once per period. It stops one period after the work went idle, so an idle
/// io_context still returns from run(). Not thread-safe (one io_context thread).
class heartbeat {
 public:
  heartbeat(const asio::any_io_executor& ex, std::chrono::milliseconds period)
      : timer_(ex), period_(period), alive_(std::make_shared<bool>(true)) {}
  heartbeat(const heartbeat&) = delete;
  heartbeat& operator=(const heartbeat&) = delete;

  /// A piece of work starts: beat until it and every other one has ended.
  void begin() {
    ++active_;
    busy_ = true;
    if (!beating_ && !stopped_) beat();
  }
  /// A piece of work ended.
  void end() noexcept {
    if (active_ > 0) --active_;
  }
  /// Stop for good (shutdown).
  void stop() noexcept {
    stopped_ = true;
    timer_.cancel();
  }

 private:
  void beat() {
    beating_ = true;
    busy_ = false;
    timer_.expires_after(period_);
    // A cancelled wait still completes later; the handler checks that we still exist.
    timer_.async_wait([this, alive = std::weak_ptr<bool>(alive_)](asio::error_code ec) {
      if (alive.expired()) return;
      beating_ = false;
      if (ec || stopped_) return;
      if (active_ > 0 || busy_) beat();
    });
  }

  asio::steady_timer timer_;
  std::chrono::milliseconds period_;
  std::shared_ptr<bool> alive_;
  std::size_t active_ = 0;
  bool beating_ = false, busy_ = false, stopped_ = false;
};

/// Map a socket error to an observation reason.
inline reason classify(const asio::error_code& ec, bool deadline_passed) {
  if (deadline_passed || ec == asio::error::operation_aborted || ec == asio::error::timed_out)
    return reason::timeout;
  if (ec == asio::error::connection_refused) return reason::refused;
  if (ec == asio::error::network_unreachable || ec == asio::error::host_unreachable ||
      ec == asio::error::network_down || ec.value() == EADDRNOTAVAIL)
    return reason::unreachable;
  if (ec == asio::error::connection_reset || ec == asio::error::eof ||
      ec == asio::error::broken_pipe)
    return reason::protocol;
  return reason::error;
}

/// Decode C-style escapes in payload options: \r \n \t \0 \\ \xHH. Returns nullopt on a bad
/// escape.
inline std::optional<std::string> decode_escapes(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '\\') {
      out += in[i];
      continue;
    }
    if (++i >= in.size()) return std::nullopt;
    switch (in[i]) {
      case 'r':
        out += '\r';
        break;
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case '0':
        out += '\0';
        break;
      case '\\':
        out += '\\';
        break;
      case 'x': {
        if (i + 2 >= in.size()) return std::nullopt;
        int h = hex(in[i + 1]), l = hex(in[i + 2]);
        if (h < 0 || l < 0) return std::nullopt;
        out += static_cast<char>(h * 16 + l);
        i += 2;
        break;
      }
      default:
        return std::nullopt;
    }
  }
  return out;
}

/// Decode a hex string ("0a ff 01", spaces and colons allowed). nullopt when malformed.
inline std::optional<std::string> decode_hex(std::string_view in) {
  std::string out;
  int hi = -1;
  for (char c : in) {
    if (c == ' ' || c == ':' || c == '\t') continue;
    int v = (c >= '0' && c <= '9')   ? c - '0'
            : (c >= 'a' && c <= 'f') ? c - 'a' + 10
            : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                     : -1;
    if (v < 0) return std::nullopt;
    if (hi < 0) {
      hi = v;
    } else {
      out += static_cast<char>(hi * 16 + v);
      hi = -1;
    }
  }
  if (hi >= 0) return std::nullopt;
  return out;
}

/// A short printable excerpt of received bytes for messages: non-printables escaped, at most
/// `max` characters.
inline std::string excerpt(std::string_view bytes, std::size_t max = 60) {
  std::string out;
  for (unsigned char c : bytes) {
    if (out.size() >= max) {
      out += "...";
      break;
    }
    if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else if (c == '\t')
      out += "\\t";
    else if (c < 0x20 || c >= 0x7f) {
      static const char* digits = "0123456789abcdef";
      out += "\\x";
      out += digits[c >> 4];
      out += digits[c & 15];
    } else
      out += static_cast<char>(c);
  }
  return out;
}

/// The common `family` option: "auto" (or empty), "ipv4" ("inet", "4") or "ipv6" ("inet6",
/// "6"). Anything else is an invalid_option error on key "family".
inline tl::expected<address_family, probe_error> family_option(std::string_view f) {
  if (f == "auto" || f.empty()) return address_family::any;
  if (f == "ipv4" || f == "inet" || f == "4") return address_family::ipv4;
  if (f == "ipv6" || f == "inet6" || f == "6") return address_family::ipv6;
  return tl::unexpected(
      option_error("family", "family must be auto, ipv4 or ipv6, not \"" + std::string(f) + "\""));
}

/// Whether address `a` belongs to family `f` (any allows both).
inline bool family_allows(address_family f, const asio::ip::address& a) noexcept {
  return f == address_family::any || (f == address_family::ipv4 && a.is_v4()) ||
         (f == address_family::ipv6 && a.is_v6());
}

/// "192.0.2.1 port 53", for messages.
inline std::string endpoint_text(const asio::ip::address& a, std::uint16_t port) {
  return a.to_string() + " port " + std::to_string(port);
}

/// Whether a name's next address is worth trying after `ec` (this one refused or unreachable).
inline bool worth_next_address(const asio::error_code& ec) {
  auto r = classify(ec, false);
  return r == reason::refused || r == reason::unreachable;
}

/// The probe_error for a socket call that failed because the monitor ran out of descriptors
/// or socket memory (see sonde::local_exhaustion_error), or nullopt for any other error.
/// Every checker asks this before judging a socket error, so that the engine's own shortage
/// is UNKNOWN (resource) and never a CRITICAL blamed on the target.
inline std::optional<probe_error> local_exhaustion(const asio::error_code& ec,
                                                   std::string_view doing) {
  if (ec.category() != asio::error::get_system_category()) return std::nullopt;
  return local_exhaustion_error(ec.value(), doing);
}

/// A UDP socket that could not be opened: the family is unsupported, or resources ran out.
inline probe_error udp_open_error(const asio::error_code& ec) {
  if (auto e = local_exhaustion(ec, "opening a UDP socket")) return std::move(*e);
  auto code = ec == asio::error::address_family_not_supported ? probe_errc::unsupported
                                                              : probe_errc::resource;
  return probe_error{code, "", "cannot open a UDP socket: " + ec.message()};
}

}  // namespace sonde::detail
