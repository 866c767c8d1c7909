#pragma once
/// @file ntp.hpp
/// ntp_probe: one SNTP exchange (RFC 5905 client mode, RFC 4330 rules) with `host[:port]`
/// (default port 123), measuring the server's clock offset and the round-trip delay.
///
/// The request is a 48-byte client-mode packet whose transmit timestamp is an unpredictable
/// 64-bit value, not our clock. A reply counts only if it comes from the target (connected
/// socket), is at least 48 bytes, has version 1-4, mode 4 (server) and echoes that value as its
/// origin timestamp. Anything else is ignored and the probe keeps waiting until the deadline
/// (a late reply to an earlier request, a spoofed datagram or a confused peer cannot end the
/// run); the last reason for ignoring is kept for the message if nothing valid arrives.
///
/// Our send time T1 is the realtime clock read just before send(); the receive time T4 is the
/// kernel's receive timestamp (SO_TIMESTAMPNS), or the clock right after the read when the
/// kernel gives none. offset = ((T2-T1)+(T3-T4))/2 and delay = (T4-T1)-(T3-T2) (RFC 5905 s. 8).
///
/// Outcomes:
///   - a valid reply from a synchronised server        -> healthy, "offset +0.000123s, delay
///                                                       0.000045s, stratum 8, refid 127.127.1.1"
///   - kiss-o'-death (stratum 0)                        -> reason::mismatch, names the code
///   - stratum 16 or above, or leap indicator 3        -> reason::mismatch, "unsynchronised"
///   - a valid reply with a zero transmit timestamp    -> reason::protocol
///   - ICMP port unreachable                           -> reason::refused
///   - only undecodable (short) datagrams by deadline  -> reason::protocol
///   - nothing valid by the deadline                   -> reason::timeout (names what was ignored)
///
/// Metrics: `latency`, `offset`, `delay`, `root_delay`, `root_dispersion`, `poll`, `precision`
/// (seconds), `stratum`, `leap` (plain numbers). See docs/probes/ntp.md.

#include <errno.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <asio/error.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/address.hpp>
#include <asio/ip/udp.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "detail/net.hpp"
#include "detail/ntp_packet.hpp"
#include "detail/peer_cache.hpp"
#include "probe.hpp"
#include "resolve.hpp"

namespace sonde {

/// SNTP checker: clock offset, delay and the server's synchronisation state.
///
/// @par Thread Safety
/// An ntp_probe holds no mutable state: one object may be run any number of times
/// concurrently, on one io_context or several.
class ntp_probe {
 public:
  static constexpr std::string_view kind = "ntp";
  static constexpr std::string_view summary =
      "NTP server check (SNTP): clock offset, delay, stratum; unsynchronised or kiss-o'-death "
      "is critical";
  static constexpr std::string_view target_form = "host[:port]";
  static constexpr port_rule target_ports = port_rule::optional;
  static constexpr std::uint16_t default_port = 123;

  /// Options, with their defaults.
  struct options {
    std::int64_t version = 4;     ///< NTP version in the request: 3 or 4
    std::string family = "auto";  ///< auto, ipv4, ipv6
  };

  static constexpr option_spec option_table[] = {
      {"version", option_type::integer, "4", "NTP version number sent in the request: 3 or 4"},
      {"family", option_type::string, "auto", "Address family for names: auto, ipv4 or ipv6"},
  };
  static constexpr metric_spec metric_table[] = {
      {"latency", "s", "Send to receipt of the accepted reply (monotonic clock)"},
      {"offset", "s", "Server clock minus ours: ((T2-T1)+(T3-T4))/2; positive: we are behind"},
      {"delay", "s", "Round-trip delay without the server's processing: (T4-T1)-(T3-T2)"},
      {"stratum", "count", "Server stratum: 0 kiss-o'-death, 1 primary, 2-15, 16 unsynchronised"},
      {"root_delay", "s", "Server's total round-trip delay to its primary reference"},
      {"root_dispersion", "s", "Server's total dispersion to its primary reference"},
      {"leap", "code", "Leap indicator: 0 none, 1 +1 s, 2 -1 s, 3 unsynchronised"},
      {"poll", "s", "Poll interval from the reply (2^poll seconds)"},
      {"precision", "s", "Server clock precision (2^precision seconds)"},
  };

  /// Read options from an option_set (types already checked).
  static tl::expected<options, probe_error> options_from(const option_set& set) {
    options o;
    for (auto r : {set.get("version", o.version), set.get("family", o.family)})
      if (!r) return tl::unexpected(r.error());
    return o;
  }

  /// Validate options and build the probe. Errors name the bad key.
  static tl::expected<ntp_probe, probe_error> make(options o) {
    ntp_probe p;
    if (o.version != 3 && o.version != 4)
      return tl::unexpected(
          option_error("version", "version must be 3 or 4, not " + std::to_string(o.version)));
    auto fam = detail::family_option(o.family);
    if (!fam) return tl::unexpected(fam.error());
    p.family_ = *fam;
    p.opts_ = std::move(o);
    return p;
  }

  /// The options the probe was made from.
  const options& opts() const noexcept { return opts_; }

  /// Run once against `t`, finishing by `dl`. Never throws for network conditions; a socket
  /// that cannot be opened is a probe_error (resource or unsupported).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
  // GCC 12 false positive: it sees asio's recycling frame allocator (aligned_alloc) inlined into
  // this coroutine and its sized operator delete, and cannot tell they pair up.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
  asio::awaitable<probe_result> run(target t, deadline dl) const {
    observation obs;
    obs.start = detail::wall_now();

    std::vector<asio::ip::address> addrs;
    if (auto a = detail::parse_ip_literal(t.host); a && detail::family_allows(family_, *a)) {
      addrs.push_back(*a);
    } else {
      auto r = co_await resolve(t.host, family_, dl);
      if (!r) {
        obs.fail(reason::resolve, std::move(r.error()));
        co_return std::move(obs);
      }
      addrs = std::move(*r);
    }

    auto ex = co_await asio::this_coro::executor;
    auto& kept = asio::use_service<detail::udp_session_cache>(detail::io_context_of(ex));
    for (std::size_t i = 0; i < addrs.size(); ++i) {
      const bool last = i + 1 == addrs.size();
      asio::ip::udp::endpoint ep(addrs[i], t.port);
      // The socket of an earlier run that got its answer from this server, or a new one.
      asio::ip::udp::socket sock(ex);
      asio::error_code ec;
      if (auto s = kept.take(ep, detail::udp_session_cache::ntp)) {
        sock = std::move(*s);
      } else {
        sock.open(ep.protocol(), ec);
        if (ec) {
          if (!last) continue;
          co_return tl::unexpected(detail::udp_open_error(ec));
        }
        sock.non_blocking(true, ec);
        // Kernel receive timestamps on the realtime clock; without them T4 is read after recv.
        int on = 1;
        (void)::setsockopt(sock.native_handle(), SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
        if (!ec) sock.connect(ep, ec);  // no traffic: filters the source, brings ICMP errors
        if (ec) {
          if (!last && detail::worth_next_address(ec)) continue;
          obs.fail(detail::classify(ec, false), "cannot send to " +
                                                    detail::endpoint_text(ep.address(), ep.port()) +
                                                    ": " + ec.message());
          co_return std::move(obs);
        }
      }

      exchange x;
      x.transmit = next_cookie();
      std::array<std::uint8_t, detail::ntp::header_size> req{};
      (void)detail::ntp::encode_request(req, static_cast<std::uint8_t>(opts_.version), x.transmit);

      detail::watchdog dog(ex, dl, [&sock] {
        asio::error_code ignored;
        sock.cancel(ignored);
      });
      // Send: T1 on both clocks immediately before the call.
      ssize_t n = -1;
      while (true) {
        x.t1_wall = std::chrono::system_clock::now();
        x.t1_mono = clock::now();
        do {
          n = ::send(sock.native_handle(), req.data(), req.size(), MSG_DONTWAIT);
        } while (n < 0 && errno == EINTR);
        if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK) || dog.fired()) break;
        (void)co_await sock.async_wait(asio::socket_base::wait_write,
                                       asio::experimental::as_tuple(asio::use_awaitable));
        if (dog.fired()) break;
      }
      if (n < 0) {
        ec = last_error();
        if (dog.fired() || ec == asio::error::would_block || ec == asio::error::try_again) {
          obs.fail(reason::timeout, "send timed out");
          co_return std::move(obs);
        }
        if (!last && detail::worth_next_address(ec)) continue;
        obs.fail(detail::classify(ec, false), "send failed: " + ec.message());
        co_return std::move(obs);
      }

      // Receive until a valid reply, an ICMP error or the deadline.
      while (true) {
        auto st = x.read_one(sock.native_handle());
        if (st == read_status::accepted) {
          dog.disarm();
          kept.give(ep, detail::udp_session_cache::ntp, std::move(sock));
          co_return judge(std::move(obs), x);
        }
        if (st == read_status::ignored) continue;
        if (st == read_status::failed) break;
        if (dog.fired()) break;  // would_block after the deadline
        (void)co_await sock.async_wait(asio::socket_base::wait_read,
                                       asio::experimental::as_tuple(asio::use_awaitable));
        if (dog.fired()) {
          // A reply may have been queued at the very moment the deadline passed: look once.
          if (x.read_one(sock.native_handle()) == read_status::accepted)
            co_return judge(std::move(obs), x);
          break;
        }
      }
      if (x.error) {
        if (!last && detail::worth_next_address(x.error)) continue;
        obs.latency = x.t4_mono - x.t1_mono;
        if (x.error == asio::error::connection_refused)
          obs.fail(reason::refused, "port unreachable (ICMP)");
        else
          obs.fail(detail::classify(x.error, false), "receive failed: " + x.error.message());
        co_return std::move(obs);
      }
      if (x.ignored == 0) {
        obs.fail(reason::timeout, "no reply by the deadline");
      } else {
        obs.fail(x.malformed ? reason::protocol : reason::timeout,
                 "no valid reply by the deadline; ignored " + std::to_string(x.ignored) +
                     (x.ignored == 1 ? " datagram" : " datagrams") + ", last: " + x.why_ignored);
      }
      co_return std::move(obs);
    }
    obs.fail(reason::error, "no address to probe");
    co_return std::move(obs);
  }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

 private:
  ntp_probe() = default;

  enum class read_status { accepted, ignored, would_block, failed };

  /// The state of one request/reply exchange on one socket.
  struct exchange {
    std::uint64_t transmit = 0;  ///< the cookie sent as our transmit timestamp
    std::chrono::system_clock::time_point t1_wall, t4_wall;
    clock::time_point t1_mono, t4_mono;
    bool kernel_t4 = false;
    detail::ntp::packet reply;
    std::size_t ignored = 0;  ///< datagrams read and ignored
    bool malformed = false;   ///< one of them could not be decoded
    std::string why_ignored;  ///< why the last one was ignored
    asio::error_code error;   ///< the receive error that ended the exchange

    /// Read one datagram without blocking and classify it.
    read_status read_one(int fd) {
      std::array<std::uint8_t, detail::ntp::header_size> buf{};
      alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(timespec))> control{};
      iovec iov{buf.data(), buf.size()};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control.data();
      msg.msg_controllen = control.size();
      ssize_t n;
      do {
        n = ::recvmsg(fd, &msg, MSG_DONTWAIT | MSG_TRUNC);
      } while (n < 0 && errno == EINTR);
      t4_mono = clock::now();
      t4_wall = std::chrono::system_clock::now();
      if (n < 0) {
        auto ec = last_error();
        if (ec == asio::error::would_block || ec == asio::error::try_again)
          return read_status::would_block;
        error = ec;
        return read_status::failed;
      }
      // MSG_TRUNC: n is the datagram's full size even though only 48 bytes were kept.
      const auto size = static_cast<std::size_t>(n);
      auto p = detail::ntp::decode(
          std::span<const std::uint8_t>(buf.data(), std::min(size, buf.size())));
      if (!p) {
        ++ignored;
        malformed = true;
        why_ignored = "malformed reply: " + std::to_string(size) + " bytes, an NTP header needs " +
                      std::to_string(detail::ntp::header_size);
        return read_status::ignored;
      }
      if (p->version < 1 || p->version > 4) {
        ++ignored;
        why_ignored = "reply with unsupported NTP version " + std::to_string(p->version);
        return read_status::ignored;
      }
      if (p->mode != detail::ntp::mode_server) {
        ++ignored;
        why_ignored = "reply in mode " + std::to_string(p->mode) + " (" +
                      std::string(detail::ntp::mode_name(p->mode)) + "), expected mode 4 (server)";
        return read_status::ignored;
      }
      if (p->origin_ts != transmit) {
        ++ignored;
        why_ignored = "reply whose origin timestamp does not echo our request (stale or spoofed)";
        return read_status::ignored;
      }
      reply = *p;
      kernel_t4 = false;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS &&
            c->cmsg_len >= CMSG_LEN(sizeof(timespec))) {
          timespec ts;
          std::memcpy(&ts, CMSG_DATA(c), sizeof ts);
          const auto kt = std::chrono::system_clock::time_point(
              std::chrono::duration_cast<std::chrono::system_clock::duration>(
                  std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec)));
          // Time the datagram waited in the socket queue: taken off the monotonic latency too.
          const auto queued = t4_wall - kt;
          if (queued >= std::chrono::system_clock::duration::zero() &&
              queued < std::chrono::seconds(1)) {
            t4_mono -= std::chrono::duration_cast<clock::duration>(queued);
            t4_wall = kt;
            kernel_t4 = true;
          }
        }
      }
      return read_status::accepted;
    }
  };

  static asio::error_code last_error() {
    return asio::error_code(errno, asio::error::get_system_category());
  }

  /// An unpredictable, non-zero 64-bit value per request (per-thread generator seeded once).
  static std::uint64_t next_cookie() {
    thread_local std::mt19937_64 gen = [] {
      std::random_device rd;
      std::seed_seq seq{rd(), rd(), rd(), rd()};
      return std::mt19937_64(seq);
    }();
    std::uint64_t v;
    do {
      v = gen();
    } while (v == 0);
    return v;
  }

  /// Build the observation for an accepted reply.
  static probe_result judge(observation obs, const exchange& x) {
    namespace ntp = detail::ntp;
    const auto& p = x.reply;
    obs.latency = x.t4_mono - x.t1_mono;
    if (*obs.latency < clock::duration::zero()) obs.latency = clock::duration::zero();
    obs.set("stratum", p.stratum);
    obs.set("leap", p.leap);
    obs.set("root_delay", ntp::short_to_seconds(p.root_delay));
    obs.set("root_dispersion", ntp::short_to_seconds(p.root_dispersion));
    obs.set("poll", ntp::log2_to_seconds(p.poll));
    obs.set("precision", ntp::log2_to_seconds(p.precision));
    const std::string refid = ntp::refid_text(p.stratum, p.reference_id);
    if (p.stratum == 0) {
      // Kiss-o'-death: the timestamps carry no time; only the code matters (RFC 5905 s. 7.4).
      auto meaning = ntp::kiss_meaning(refid);
      return obs.fail(reason::mismatch, "kiss-o'-death " + (refid.empty() ? "(empty)" : refid) +
                                            (meaning.empty() ? "" : ": " + std::string(meaning)));
    }
    if (p.transmit_ts == 0)
      return obs.fail(reason::protocol, "malformed reply: the server's transmit timestamp is zero");
    const auto s = ntp::compute_sample(ntp::to_ntp(x.t1_wall), p.receive_ts, p.transmit_ts,
                                       ntp::to_ntp(x.t4_wall));
    obs.set("offset", s.offset);
    obs.set("delay", s.delay);
    char buf[96];
    std::snprintf(buf, sizeof buf, "offset %+.6fs, delay %.6fs, stratum %u, refid ", s.offset,
                  s.delay, static_cast<unsigned>(p.stratum));
    std::string summary = buf + refid;
    if (p.stratum >= ntp::stratum_unsynchronised)
      return obs.fail(reason::mismatch, "server unsynchronised (stratum " +
                                            std::to_string(p.stratum) + "): " + summary);
    if (p.leap == ntp::leap_unsynchronised)
      return obs.fail(
          reason::mismatch,
          "server unsynchronised (leap indicator 3, clock not synchronised): " + summary);
    obs.message = std::move(summary);
    return obs;
  }

  options opts_;
  address_family family_ = address_family::any;
};

}  // namespace sonde
