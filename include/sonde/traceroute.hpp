#pragma once
/// @file traceroute.hpp
/// traceroute_probe: the path to a host, hop by hop, over IPv4 and IPv6.
///
/// A run sends TTL-stepped probes (ICMP echo requests by default, UDP datagrams with
/// `method = "udp"`), `probes_per_hop` for every TTL from `first_hop` to `max_hops`. Probes for
/// many TTLs are in flight at once (like mtr and modern traceroute): round 1 sends one probe per
/// TTL in increasing order, `packet_interval` apart, then rounds 2.. do the same, and as soon as
/// the destination answers at TTL d, nothing beyond d is sent and hops beyond d are not
/// reported. A probe unanswered `wait` after it was sent is lost; the run ends when every
/// probe up to the destination is answered or lost, or at the deadline.
///
/// Answers: routers send ICMP time exceeded (their address is the hop); the destination sends
/// an echo reply (ICMP) or port unreachable (UDP). Another ICMP error (network/host
/// unreachable, prohibited...) ends the path at that hop. Every answer is matched to its probe
/// by echo identifier + sequence or UDP destination port and the quoted destination
/// (detail/traceroute_match.hpp); everything else is ignored.
///
/// Sockets: each run opens its own socket (traceroute is low-rate; a run's socket then sees
/// only its own answers), closed when the run ends. ICMP method: an unprivileged datagram ICMP
/// socket where net.ipv4.ping_group_range allows (time exceeded arrives on its error queue,
/// IP_RECVERR / IPV6_RECVERR), otherwise a raw socket (root or CAP_NET_RAW; quoted headers are
/// parsed), otherwise probe_errc::permission_denied with the same fix-naming message as icmp.
/// The socket is opened by detail::icmp_channel::open, the icmp checker's code. UDP method: an
/// ordinary UDP socket with IP_RECVERR / IPV6_RECVERR: no privilege needed. TTLs are set per
/// packet (ancillary data). RTTs use kernel receive timestamps (SO_TIMESTAMPNS) against the
/// realtime clock read just before sendmsg, falling back to the monotonic clock.
///
/// Metrics (durations in seconds, ratios in percent): `hops`, `reached`, `sent`, `latency`,
/// `rtt_min`, `rtt_avg`, `rtt_max`, `loss` (destination hop), `hop.<n>.rtt_avg`,
/// `hop.<n>.loss`. See docs/probes/traceroute.md.
///
/// Result rules: destination reached -> healthy observation (the message shows the path);
/// not reached -> reason::unreachable when any hop answered or the kernel had no route,
/// reason::timeout when nothing at all answered.

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/errqueue.h>  // after <time.h>: it uses struct timespec

#include <algorithm>
#include <array>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/address.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "detail/icmp_packet.hpp"
#include "detail/net.hpp"
#include "detail/traceroute_match.hpp"
#include "icmp.hpp"
#include "probe.hpp"
#include "resolve.hpp"

namespace sonde {

namespace detail {

/// One probe of a traceroute run.
struct trace_probe_record {
  enum state_type : std::uint8_t {
    unsent = 0,
    pending = 1,   ///< sent, no answer yet
    answered = 2,  ///< an answer was matched; rtt_ns, from, kind, type, code set
    failed = 3,    ///< the local stack refused it (sendmsg or a local error-queue entry)
  };
  clock::time_point mono_sent{};
  std::int64_t real_sent_ns = 0;
  std::int64_t rtt_ns = -1;
  std::array<std::uint8_t, 16> from{};
  traceroute::answer_kind kind = traceroute::answer_kind::error;
  bool from_destination = false;
  std::uint8_t type = 0, code = 0;
  int ttl = 0;
  int err = 0;  ///< failed: the errno
  state_type state = unsent;
};

/// The socket and probe table of one traceroute run. Shared by the run's coroutine and the
/// socket's receive handler (which keeps it alive until the handler has run). Not
/// thread-safe: used from the io_context's thread only.
class trace_session : public std::enable_shared_from_this<trace_session> {
 public:
  trace_session(asio::io_context& ctx, const asio::any_io_executor& ex) : timer(ex), ctx_(ctx) {}
  trace_session(const trace_session&) = delete;
  trace_session& operator=(const trace_session&) = delete;

  /// The run's only timer: next send, the last probe's expiry or the deadline. The receive handler
  /// cancels it to wake the run when an answer arrives.
  asio::steady_timer timer;
  std::vector<trace_probe_record> probes;
  traceroute::run_key key;
  sockaddr_storage dst{};
  socklen_t dst_len = 0;
  std::vector<std::uint8_t> wire;  ///< the probe (ICMP: echo header + payload; UDP: payload)
  int dest_hop = INT_MAX;          ///< smallest TTL the destination answered
  int error_hop = INT_MAX;         ///< smallest TTL answered by another ICMP error
  int local_failures = 0, local_errno = 0;
  std::uint64_t ignored = 0;  ///< well-formed messages that matched no probe
  bool broken = false;        ///< the socket reported an unexpected error

  /// TTLs above this are neither sent nor reported.
  int stop_hop() const noexcept { return std::min(dest_hop, error_hop); }
  bool raw() const noexcept { return icmp_ && icmp_->mode() == icmp_socket_mode::raw; }

  /// Open the run's socket. ICMP: datagram, else raw (icmp_channel::open: errors
  /// permission_denied with the fixes, unsupported, resource, internal). UDP: an unprivileged
  /// UDP socket (errors unsupported, resource, permission_denied, internal).
  tl::expected<void, probe_error> open(traceroute::probe_method m, int family,
                                       std::uint16_t random_ident) {
    const bool v6 = family == AF_INET6;
    if (m == traceroute::probe_method::icmp) {
      icmp_.emplace(ctx_, family);
      auto r = icmp_->open(random_ident);
      if (!r) return r;
      if (icmp_->mode() == icmp_socket_mode::datagram) {
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        if (::getsockname(icmp_->descriptor().native_handle(), reinterpret_cast<sockaddr*>(&ss),
                          &len) != 0)
          return tl::unexpected(probe_error{
              probe_errc::internal, "", "getsockname on the ICMP socket: " + errno_text(errno)});
        key.identifier = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                  : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
        layout_ = v6 ? icmp::wire_layout::ipv6 : icmp::wire_layout::ipv4_datagram;
      } else {
        key.identifier = random_ident;
        layout_ = v6 ? icmp::wire_layout::ipv6 : icmp::wire_layout::ipv4_raw;
      }
      desc_ = &icmp_->descriptor();
      return {};
    }
    int fd = ::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
    if (fd < 0) {
      const int e = errno;
      const std::string what = std::string("cannot open a UDP socket: ") + errno_text(e);
      if (e == EAFNOSUPPORT)
        return tl::unexpected(probe_error{probe_errc::unsupported, "",
                                          v6 ? "cannot open a UDP socket: IPv6 is not available"
                                             : "cannot open a UDP socket: IPv4 is not available"});
      if (auto x = local_exhaustion_error(e, "opening a UDP socket")) return tl::unexpected(*x);
      if (e == EACCES || e == EPERM)
        return tl::unexpected(probe_error{probe_errc::permission_denied, "", what});
      return tl::unexpected(probe_error{probe_errc::internal, "", what});
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    if (v6)
      ::setsockopt(fd, IPPROTO_IPV6, IPV6_RECVERR, &one, sizeof one);
    else
      ::setsockopt(fd, IPPROTO_IP, IP_RECVERR, &one, sizeof one);
    try {
      udp_.emplace(ctx_, fd);
    } catch (const std::exception& e) {
      ::close(fd);
      return tl::unexpected(probe_error{probe_errc::resource, "", e.what()});
    }
    desc_ = &*udp_;
    return {};
  }

  /// How the socket was opened, for messages ("datagram ICMP", "raw ICMP", "UDP").
  std::string socket_name() const {
    if (!icmp_) return "UDP";
    return std::string(to_string(icmp_->mode())) + " ICMP";
  }

  /// Make sure answers quoting or echoing `probe_bytes` fit the receive buffer.
  void reserve_rx(std::size_t probe_bytes) { rx_.assign(probe_bytes + 256 + 2048, 0); }

  /// Start the receive handler (after the first send; drains what already arrived).
  void start_reading() {
    if (reading_ || stopped_) return;
    drain();
    arm();
  }

  /// Stop receiving and close the socket. Idempotent.
  void stop() {
    stopped_ = true;
    asio::error_code ignored_ec;
    timer.cancel();
    if (desc_) desc_->cancel(ignored_ec);
  }

  /// Send probe `index` (its ttl set). Returns 0 or an errno value (EAGAIN: try again later).
  int send(std::size_t index) {
    trace_probe_record& p = probes[index];
    const bool v6 = key.family == 6;
    sockaddr_storage to = dst;
    if (key.method == traceroute::probe_method::udp) {
      const std::uint16_t port = htons(traceroute::port_of(key, index));
      if (v6)
        reinterpret_cast<sockaddr_in6*>(&to)->sin6_port = port;
      else
        reinterpret_cast<sockaddr_in*>(&to)->sin_port = port;
    }
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr h{};
    iovec iov{wire.data(), wire.size()};
    h.msg_name = &to;
    h.msg_namelen = dst_len;
    h.msg_iov = &iov;
    h.msg_iovlen = 1;
    h.msg_control = control;
    h.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&h);
    c->cmsg_level = v6 ? IPPROTO_IPV6 : IPPROTO_IP;
    c->cmsg_type = v6 ? IPV6_HOPLIMIT : IP_TTL;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &p.ttl, sizeof(int));

    // With IP_RECVERR an ICMP error also becomes a pending socket error that the next call
    // may report once: retry; a real local failure (no route) fails every time.
    const int attempts = raw() ? 1 : 4;
    int err = 0;
    auto span = std::span<std::uint8_t>(wire);
    const bool is_icmp = key.method == traceroute::probe_method::icmp;
    for (int attempt = 0; attempt < attempts; ++attempt) {
      timespec ts{};
      ::clock_gettime(CLOCK_REALTIME, &ts);
      p.real_sent_ns = std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
      icmp::write_stamp(is_icmp ? span.subspan(icmp::header_size) : span,
                        {key.cookie, p.real_sent_ns});
      if (is_icmp)
        icmp::write_echo_header(span, key.family, key.identifier,
                                traceroute::sequence_of(key, index),
                                layout_ == icmp::wire_layout::ipv4_raw);
      p.mono_sent = clock::now();
      if (::sendmsg(desc_->native_handle(), &h, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) {
        err = 0;
        break;
      }
      err = errno == 0 ? EIO : errno;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
    }
    if (err == 0) p.state = trace_probe_record::pending;
    return err;
  }

  /// Mark probe `index` as refused by the local stack with `err`.
  void record_local_failure(std::size_t index, int err) {
    probes[index].state = trace_probe_record::failed;
    probes[index].err = err;
    if (local_failures++ == 0) local_errno = err;
  }

 private:
  void arm() {
    reading_ = true;
    // A queued ICMP error (EPOLLERR) completes a read wait too.
    desc_->async_wait(asio::posix::descriptor_base::wait_read,
                      [self = shared_from_this()](asio::error_code ec) {
                        self->reading_ = false;
                        if (self->stopped_) return;
                        if (ec) {
                          self->broken = true;
                          self->timer.cancel();
                          return;
                        }
                        self->drain();
                        self->arm();
                      });
  }

  static std::int64_t kernel_time_ns(msghdr& h) noexcept {
    for (cmsghdr* c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS &&
          c->cmsg_len >= CMSG_LEN(sizeof(timespec))) {
        timespec ts;
        std::memcpy(&ts, CMSG_DATA(c), sizeof ts);
        return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
      }
    }
    return 0;
  }

  std::size_t addr_len() const noexcept { return traceroute::address_size(key.family); }

  /// Address bytes and port of a sockaddr of the run's family (empty span when shorter).
  std::pair<std::span<const std::uint8_t>, std::uint16_t> addr_of(const void* sa,
                                                                  socklen_t len) const noexcept {
    if (key.family == 6) {
      if (len < static_cast<socklen_t>(sizeof(sockaddr_in6))) return {};
      auto* a = static_cast<const sockaddr_in6*>(sa);
      return {{reinterpret_cast<const std::uint8_t*>(&a->sin6_addr), 16}, ntohs(a->sin6_port)};
    }
    if (len < static_cast<socklen_t>(sizeof(sockaddr_in))) return {};
    auto* a = static_cast<const sockaddr_in*>(sa);
    return {{reinterpret_cast<const std::uint8_t*>(&a->sin_addr), 4}, ntohs(a->sin_port)};
  }

  /// Read both queues until empty (the reactor is edge-triggered).
  void drain() {
    const int fd = desc_->native_handle();
    for (int flags : {0, int{MSG_ERRQUEUE}}) {
      int failures = 0;
      for (int k = 0; k < 8192; ++k) {
        alignas(cmsghdr) char control[512];
        sockaddr_storage from{};
        iovec iov{rx_.data(), rx_.size()};
        msghdr h{};
        h.msg_name = &from;
        h.msg_namelen = sizeof from;
        h.msg_iov = &iov;
        h.msg_iovlen = 1;
        h.msg_control = control;
        h.msg_controllen = sizeof control;
        const ssize_t n = ::recvmsg(fd, &h, flags | MSG_DONTWAIT);
        if (n < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK) break;
          // EINTR, or a pending socket error reported once: the queue may still hold data.
          if (++failures > 4) break;
          continue;
        }
        const auto now = clock::now();
        if (h.msg_flags & MSG_TRUNC) {
          ++ignored;
          continue;
        }
        const auto data = std::span<const std::uint8_t>(rx_.data(), static_cast<std::size_t>(n));
        if (flags == MSG_ERRQUEUE)
          on_queued(h, data, now);
        else
          on_datagram(h, data, now);
      }
    }
  }

  void on_datagram(msghdr& h, std::span<const std::uint8_t> data, clock::time_point now) {
    auto [from, port] = addr_of(h.msg_name, h.msg_namelen);
    std::optional<traceroute::answer> a;
    if (key.method == traceroute::probe_method::icmp)
      a = traceroute::match_icmp_message(data, layout_, from, key);
    else
      a = traceroute::match_udp_reply(from, port, key);
    if (!a) {
      ++ignored;
      return;
    }
    on_answer(*a, kernel_time_ns(h), now);
  }

  void on_queued(msghdr& h, std::span<const std::uint8_t> data, clock::time_point now) {
    const sock_extended_err* ee = nullptr;
    for (cmsghdr* c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c)) {
      if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_RECVERR) ||
          (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_RECVERR))
        ee = reinterpret_cast<const sock_extended_err*>(CMSG_DATA(c));
    }
    if (!ee) {
      ++ignored;
      return;
    }
    auto [orig, port] = addr_of(h.msg_name, h.msg_namelen);
    if (ee->ee_origin == SO_EE_ORIGIN_LOCAL) {
      // The local stack refused a probe (message too long, no neighbour...).
      std::optional<std::size_t> i;
      if (key.method == traceroute::probe_method::udp) {
        i = traceroute::index_of_port(key, port);
      } else if (auto echo = icmp::decode_echo_request_header(data, key.family);
                 echo && echo->identifier == key.identifier) {
        i = traceroute::index_of_sequence(key, echo->sequence);
      }
      if (i && traceroute::is_destination(key, orig) &&
          probes[*i].state == trace_probe_record::pending) {
        record_local_failure(*i, static_cast<int>(ee->ee_errno));
        timer.cancel();
      } else {
        ++ignored;
      }
      return;
    }
    sockaddr_storage offender{};
    std::memcpy(&offender, SO_EE_OFFENDER(ee),
                key.family == 6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
    auto [off, off_port] =
        addr_of(&offender, key.family == 6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
    (void)off_port;
    traceroute::queued_error qe;
    qe.origin = static_cast<traceroute::error_origin>(ee->ee_origin);
    qe.type = ee->ee_type;
    qe.code = ee->ee_code;
    qe.offender = off;
    qe.original_destination = orig;
    qe.original_port = port;
    qe.payload = data;
    auto a = traceroute::match_queued_error(qe, key);
    if (!a) {
      ++ignored;
      return;
    }
    on_answer(*a, kernel_time_ns(h), now);
  }

  void on_answer(const traceroute::answer& a, std::int64_t kernel_ns, clock::time_point now) {
    trace_probe_record& p = probes[a.index];
    if (p.state != trace_probe_record::pending) {
      ++ignored;  // a duplicate, or an answer to a probe the stack already refused
      return;
    }
    const std::int64_t mono =
        std::chrono::duration_cast<std::chrono::nanoseconds>(now - p.mono_sent).count();
    std::int64_t rtt = kernel_ns ? kernel_ns - p.real_sent_ns : -1;
    // The kernel stamped the answer before we read it: a kernel RTT above the monotonic one
    // (or not positive) means the realtime clock stepped.
    if (rtt <= 0 || rtt > mono + 1'000'000) rtt = std::max<std::int64_t>(mono, 1);
    p.rtt_ns = rtt;
    p.state = trace_probe_record::answered;
    p.from = a.from;
    p.kind = a.kind;
    p.from_destination = a.from_destination;
    p.type = a.type;
    p.code = a.code;
    if (a.kind == traceroute::answer_kind::reply ||
        (a.kind == traceroute::answer_kind::error && a.from_destination))
      dest_hop = std::min(dest_hop, p.ttl);
    else if (a.kind == traceroute::answer_kind::error)
      error_hop = std::min(error_hop, p.ttl);
    timer.cancel();  // wake the run: it may be complete, or must stop sending beyond a hop
  }

  asio::io_context& ctx_;
  std::optional<icmp_channel> icmp_;
  std::optional<asio::posix::stream_descriptor> udp_;
  asio::posix::stream_descriptor* desc_ = nullptr;
  icmp::wire_layout layout_ = icmp::wire_layout::ipv4_raw;
  std::vector<std::uint8_t> rx_ = std::vector<std::uint8_t>(4096);
  bool reading_ = false, stopped_ = false;
};

/// Printable address of `family` (4 or 6) from its bytes.
inline std::string address_text(int family, const std::array<std::uint8_t, 16>& b) {
  if (family == 6) {
    asio::ip::address_v6::bytes_type v;
    std::memcpy(v.data(), b.data(), 16);
    return asio::ip::address_v6(v).to_string();
  }
  asio::ip::address_v4::bytes_type v;
  std::memcpy(v.data(), b.data(), 4);
  return asio::ip::address_v4(v).to_string();
}

}  // namespace detail

/// Traceroute checker. Thread safety: a traceroute_probe may run any number of times
/// concurrently on one io_context (each run has its own socket); that io_context must be run
/// by one thread.
class traceroute_probe {
 public:
  static constexpr std::string_view kind = "traceroute";
  static constexpr std::string_view summary =
      "The path to a host: TTL-stepped ICMP or UDP probes, per-hop address, RTTs and loss";
  static constexpr std::string_view target_form = "host or IP address";
  static constexpr port_rule target_ports = port_rule::forbidden;
  static constexpr std::uint16_t default_port = 0;

  /// Options, with their defaults.
  struct options {
    std::string method = "icmp";              ///< icmp or udp
    std::int64_t max_hops = 30;               ///< highest TTL probed, 1-255
    std::int64_t first_hop = 1;               ///< lowest TTL probed, 1-max_hops
    std::int64_t probes_per_hop = 3;          ///< probes per TTL, 1-10
    std::int64_t port = 33434;                ///< UDP: destination port of the first probe
    std::int64_t size = 32;                   ///< payload bytes, 16-65000
    duration wait = std::chrono::seconds(2);  ///< per-probe answer wait
    duration packet_interval = std::chrono::milliseconds(5);  ///< between probes, 0-10s
    std::string family = "auto";                              ///< auto, ipv4, ipv6
    duration timeout{0};  ///< the run's timeout when known (the engine passes it); 0 = unknown
  };

  static constexpr option_spec option_table[] = {
      {"method", option_type::string, "icmp",
       "Probe packets: icmp (echo requests) or udp (datagrams to increasing ports)"},
      {"max_hops", option_type::integer, "30", "Highest TTL / hop limit probed (1-255)"},
      {"first_hop", option_type::integer, "1", "Lowest TTL probed (1 to max_hops)"},
      {"probes_per_hop", option_type::integer, "3", "Probes sent per hop (1-10)"},
      {"port", option_type::integer, "33434",
       "udp: destination port of the first probe; each probe uses the next port"},
      {"size", option_type::integer, "32",
       "Payload bytes per probe (16-65000): a 64-bit cookie, the send time, then a pattern"},
      {"wait", option_type::duration, "2s",
       "How long to wait for the answer to each probe (at least 1ms); never past the timeout"},
      {"packet_interval", option_type::duration, "5ms",
       "Time between probes (0 to 10s); all probes must be sent before the timeout"},
      {"family", option_type::string, "auto", "Address family for names: auto, ipv4 or ipv6"},
  };
  static constexpr metric_spec metric_table[] = {
      {"latency", "s",
       "Average round-trip time to the destination (= rtt_avg); absent if not "
       "reached"},
      {"hops", "count",
       "Hops to the destination when reached, else the last hop that answered (0: none)"},
      {"reached", "count", "1 when the destination answered, else 0"},
      {"sent", "count",
       "Probes sent, including any sent beyond the destination before it answered"},
      {"rtt_min", "s", "Shortest round-trip time to the destination"},
      {"rtt_avg", "s", "Mean round-trip time to the destination"},
      {"rtt_max", "s", "Longest round-trip time to the destination"},
      {"loss", "%", "Probes to the destination hop without an answer (100 when not reached)"},
      {"hop.<n>.rtt_avg", "s", "Mean round-trip time of hop n; absent when hop n did not answer"},
      {"hop.<n>.loss", "%", "Probes of hop n without an answer, percent (0-100)"},
  };

  /// Read options from an option_set (types already checked).
  static tl::expected<options, probe_error> options_from(const option_set& set) {
    options o;
    for (auto r : {set.get("method", o.method), set.get("max_hops", o.max_hops),
                   set.get("first_hop", o.first_hop), set.get("probes_per_hop", o.probes_per_hop),
                   set.get("port", o.port), set.get("size", o.size), set.get("wait", o.wait),
                   set.get("packet_interval", o.packet_interval), set.get("family", o.family),
                   set.get("timeout", o.timeout)})
      if (!r) return tl::unexpected(r.error());
    return o;
  }

  /// Validate options and build the probe. Errors (invalid_option) name the key.
  static tl::expected<traceroute_probe, probe_error> make(options o) {
    traceroute_probe p;
    if (o.method == "icmp" || o.method == "ICMP")
      p.method_ = detail::traceroute::probe_method::icmp;
    else if (o.method == "udp" || o.method == "UDP")
      p.method_ = detail::traceroute::probe_method::udp;
    else
      return tl::unexpected(
          option_error("method", "option 'method' must be icmp or udp, not \"" + o.method + "\""));
    auto range = [](const char* key, std::int64_t v, std::int64_t lo,
                    std::int64_t hi) -> tl::expected<void, probe_error> {
      if (v >= lo && v <= hi) return {};
      return tl::unexpected(option_error(key, std::string("option '") + key + "' must be " +
                                                  std::to_string(lo) + " to " + std::to_string(hi) +
                                                  ", not " + std::to_string(v)));
    };
    for (auto r : {range("max_hops", o.max_hops, 1, 255),
                   range("first_hop", o.first_hop, 1, std::max<std::int64_t>(o.max_hops, 1)),
                   range("probes_per_hop", o.probes_per_hop, 1, 10),
                   range("port", o.port, 1, 65535), range("size", o.size, 16, 65000)})
      if (!r) return tl::unexpected(r.error());
    const std::int64_t count = (o.max_hops - o.first_hop + 1) * o.probes_per_hop;
    if (p.method_ == detail::traceroute::probe_method::udp && o.port + count - 1 > 65535)
      return tl::unexpected(option_error(
          "port", "option 'port': " + std::to_string(count) + " probes starting at port " +
                      std::to_string(o.port) + " would pass port 65535; lower port (at most " +
                      std::to_string(65536 - count) + "), max_hops or probes_per_hop"));
    if (o.wait < std::chrono::milliseconds(1) || o.wait > std::chrono::hours(1))
      return tl::unexpected(
          option_error("wait", "option 'wait' must be 1ms to 1h, not " + format_duration(o.wait)));
    if (o.packet_interval < duration::zero() || o.packet_interval > std::chrono::seconds(10))
      return tl::unexpected(option_error(
          "packet_interval",
          "option 'packet_interval' must be 0 to 10s, not " + format_duration(o.packet_interval)));
    if (o.timeout > duration::zero()) {
      if (auto e = schedule_error(o, o.timeout)) return tl::unexpected(std::move(*e));
    }
    auto fam = detail::family_option(o.family);
    if (!fam) return tl::unexpected(fam.error());
    p.family_ = *fam;
    p.opts_ = std::move(o);
    return p;
  }

  const options& opts() const noexcept { return opts_; }

  /// Run once against `t`, finishing by `dl`. Returns an observation for every network
  /// outcome; a probe_error when the socket cannot be opened (permission_denied for ICMP
  /// without datagram or raw sockets, unsupported, resource), or when the send schedule cannot
  /// fit before the deadline (invalid_option, key "packet_interval").
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
  // GCC 12 false positive (see icmp.hpp): asio's recycling frame allocator inlined here.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
  asio::awaitable<probe_result> run(target t, deadline dl) const {
    using asio::experimental::as_tuple;
    using detail::trace_probe_record;
    namespace tr = detail::traceroute;
    observation obs;
    obs.start = detail::wall_now();
    const auto t0 = clock::now();
    if (auto e = schedule_error(opts_, dl - t0)) co_return tl::unexpected(std::move(*e));

    auto ex = co_await asio::this_coro::executor;
    auto addrs = co_await resolve(t.host, family_, dl);
    if (!addrs) {
      obs.fail(reason::resolve, addrs.error());
      co_return std::move(obs);
    }
    asio::ip::address addr = addrs->front();
    if (addr.is_v6() && addr.to_v6().is_v4_mapped())  // ::ffff:a.b.c.d is an IPv4 target
      addr = asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
    const std::string addr_text = addr.to_string();
    const int fam = addr.is_v6() ? 6 : 4;

    auto& ioc = detail::io_context_of(ex);
    std::random_device rd;  // one getrandom() per run: traceroute is low-rate
    auto random64 = [&rd] { return (std::uint64_t{rd()} << 32) ^ rd(); };
    auto st = std::make_shared<detail::trace_session>(ioc, ex);
    const int first = static_cast<int>(opts_.first_hop);
    const int last = static_cast<int>(opts_.max_hops);
    const auto ppp = static_cast<std::size_t>(opts_.probes_per_hop);
    const std::size_t count = static_cast<std::size_t>(last - first + 1) * ppp;
    st->key.family = fam;
    st->key.method = method_;
    st->key.count = count;
    st->key.cookie = random64();
    st->key.first_sequence = static_cast<std::uint16_t>(random64());
    st->key.first_port = static_cast<std::uint16_t>(opts_.port);
    if (addr.is_v6()) {
      auto* sa = reinterpret_cast<sockaddr_in6*>(&st->dst);
      sa->sin6_family = AF_INET6;
      const auto b = addr.to_v6().to_bytes();
      std::memcpy(&sa->sin6_addr, b.data(), 16);
      std::memcpy(st->key.destination.data(), b.data(), 16);
      sa->sin6_scope_id = addr.to_v6().scope_id();
      st->dst_len = sizeof(sockaddr_in6);
    } else {
      auto* sa = reinterpret_cast<sockaddr_in*>(&st->dst);
      sa->sin_family = AF_INET;
      const auto b = addr.to_v4().to_bytes();
      std::memcpy(&sa->sin_addr, b.data(), 4);
      std::memcpy(st->key.destination.data(), b.data(), 4);
      st->dst_len = sizeof(sockaddr_in);
    }
    if (auto r = st->open(method_, fam == 6 ? AF_INET6 : AF_INET,
                          static_cast<std::uint16_t>(random64()));
        !r)
      co_return tl::unexpected(r.error());
    const bool is_icmp = method_ == tr::probe_method::icmp;
    const auto payload = static_cast<std::size_t>(opts_.size);
    st->wire.assign((is_icmp ? detail::icmp::header_size : 0) + payload, 0);
    detail::icmp::fill_pattern(
        std::span<std::uint8_t>(st->wire).subspan(is_icmp ? detail::icmp::header_size : 0));
    st->reserve_rx(st->wire.size());

    // Probe index = (ttl - first) * ppp + round; sent round by round, TTLs increasing.
    st->probes.resize(count);
    std::vector<std::size_t> order;
    order.reserve(count);
    for (std::size_t r = 0; r < ppp; ++r)
      for (int ttl = first; ttl <= last; ++ttl) {
        const std::size_t i = static_cast<std::size_t>(ttl - first) * ppp + r;
        st->probes[i].ttl = ttl;
        order.push_back(i);
      }

    struct stop_guard {
      std::shared_ptr<detail::trace_session> s;
      ~stop_guard() { s->stop(); }
    } guard{st};

    std::optional<probe_error> fatal;
    std::size_t cursor = 0;
    const auto interval = opts_.packet_interval;
    const auto wait = opts_.wait;
    auto due = clock::now();
    bool no_route = false;
    for (;;) {
      auto now = clock::now();
      while (cursor < count && now >= due && now < dl && !no_route) {
        const std::size_t i = order[cursor];
        if (st->probes[i].ttl > st->stop_hop()) {  // beyond the destination: skip, no delay
          ++cursor;
          continue;
        }
        const int e = st->send(i);
        if (e == EAGAIN || e == EWOULDBLOCK) {
          due = now + std::chrono::milliseconds(1);  // send queue full: retry shortly
          break;
        }
        if (e != 0) {
          st->record_local_failure(i, e);
          // No route: every other probe would fail the same way.
          no_route = e == ENETUNREACH || e == EHOSTUNREACH || e == ENETDOWN || e == EADDRNOTAVAIL;
        }
        st->start_reading();
        ++cursor;
        now = clock::now();
        due += interval;
        if (due + interval <= now) due = now;  // the loop stalled: do not send a burst
      }
      while (cursor < count && st->probes[order[cursor]].ttl > st->stop_hop()) ++cursor;
      const bool all_sent = cursor == count || no_route;
      // When the last unanswered probe up to the stop hop has waited long enough.
      auto expiry = clock::time_point::min();
      for (const auto& p : st->probes)
        if (p.state == trace_probe_record::pending && p.ttl <= st->stop_hop())
          expiry = std::max(expiry, p.mono_sent + wait);
      if (st->broken || now >= dl || (all_sent && expiry <= now)) break;
      st->timer.expires_at(std::min(dl, all_sent ? expiry : due));
      auto [ec] = co_await st->timer.async_wait(as_tuple(asio::use_awaitable));
      if (ec == asio::error::operation_aborted) {
        auto cs = co_await asio::this_coro::cancellation_state;
        if (cs.cancelled() != asio::cancellation_type::none) {
          fatal = probe_error{probe_errc::cancelled, "", "the traceroute run was cancelled"};
          break;
        }
      }
    }
    st->stop();
    if (fatal) co_return tl::unexpected(std::move(*fatal));
    co_return report(*st, addr_text, std::move(obs), clock::now() - t0);
  }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

 private:
  traceroute_probe() = default;

  /// The send schedule of the worst case (every TTL, nothing answers) must fit in `budget`.
  static std::optional<probe_error> schedule_error(const options& o, duration budget) {
    const std::int64_t count = (o.max_hops - o.first_hop + 1) * o.probes_per_hop;
    const auto schedule = o.packet_interval * (count - 1);
    if (count <= 1 || o.packet_interval == duration::zero() || schedule < budget)
      return std::nullopt;
    return option_error(
        "packet_interval",
        "option 'packet_interval': up to " + std::to_string(count) + " probes (" +
            std::to_string(o.max_hops - o.first_hop + 1) + " hops x " +
            std::to_string(o.probes_per_hop) + ") every " + format_duration(o.packet_interval) +
            " take " + format_duration(schedule) + " to send, not less than the timeout (" +
            format_duration(budget) +
            "); lower packet_interval, max_hops or probes_per_hop, or raise the timeout");
  }

  struct hop_summary {
    int ttl = 0;
    std::size_t sent = 0, received = 0;
    std::int64_t rtt_min = 0, rtt_max = 0;
    double rtt_sum = 0;
    std::vector<std::string> from;  ///< distinct responders, in order of answer
    std::string flag;               ///< "!H"... of the first ICMP error, if any
    std::uint8_t error_type = 0, error_code = 0;
    bool error = false;
    double loss() const {
      return sent ? 100.0 * static_cast<double>(sent - received) / static_cast<double>(sent)
                  : 100.0;
    }
    double rtt_avg() const { return received ? rtt_sum / static_cast<double>(received) : 0; }
  };

  static std::string percent(double v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%.0f%%", v);
    return buf;
  }

  probe_result report(const detail::trace_session& st, const std::string& addr_text,
                      observation obs, duration elapsed) const {
    using detail::trace_probe_record;
    namespace tr = detail::traceroute;
    const int fam = st.key.family;
    const bool reached = st.dest_hop != INT_MAX;
    const int first = static_cast<int>(opts_.first_hop);
    // Reached: up to the destination; else up to the hop that sent an ICMP error, or max_hops.
    const int last =
        std::min(static_cast<int>(opts_.max_hops), reached ? st.dest_hop : st.error_hop);

    std::vector<hop_summary> hops(static_cast<std::size_t>(std::max(last - first + 1, 0)));
    std::size_t sent_total = 0;
    int last_answered = 0;
    for (int ttl = first; ttl <= last; ++ttl) hops[static_cast<std::size_t>(ttl - first)].ttl = ttl;
    for (const auto& p : st.probes) {
      if (p.state == trace_probe_record::unsent) continue;
      ++sent_total;
      if (p.ttl > last) continue;
      hop_summary& h = hops[static_cast<std::size_t>(p.ttl - first)];
      ++h.sent;
      if (p.state != trace_probe_record::answered) continue;
      if (h.received++ == 0) h.rtt_min = h.rtt_max = p.rtt_ns;
      h.rtt_min = std::min(h.rtt_min, p.rtt_ns);
      h.rtt_max = std::max(h.rtt_max, p.rtt_ns);
      h.rtt_sum += static_cast<double>(p.rtt_ns);
      last_answered = std::max(last_answered, p.ttl);
      std::string who = detail::address_text(fam, p.from);
      if (std::find(h.from.begin(), h.from.end(), who) == h.from.end())
        h.from.push_back(std::move(who));
      if (p.kind == tr::answer_kind::error && !h.error) {
        h.error = true;
        h.flag = tr::hop_flag(fam, p.type, p.code);
        h.error_type = p.type;
        h.error_code = p.code;
      }
    }
    // Nothing was sent for the hops past the last probe the deadline allowed.
    while (!hops.empty() && hops.back().sent == 0) hops.pop_back();

    // ---- metrics ---------------------------------------------------------------------------
    obs.metrics.reserve(8 + 2 * hops.size());
    obs.set("hops", reached ? st.dest_hop : last_answered);
    obs.set("reached", reached ? 1 : 0);
    obs.set("sent", static_cast<double>(sent_total));
    const hop_summary* dest =
        reached && !hops.empty() && hops.back().ttl == st.dest_hop ? &hops.back() : nullptr;
    if (dest && dest->received > 0) {
      const double avg = dest->rtt_avg();
      obs.latency = std::chrono::nanoseconds(static_cast<std::int64_t>(avg));
      obs.set("latency", avg / 1e9);
      obs.set("rtt_min", static_cast<double>(dest->rtt_min) / 1e9);
      obs.set("rtt_avg", avg / 1e9);
      obs.set("rtt_max", static_cast<double>(dest->rtt_max) / 1e9);
    }
    obs.set("loss", dest ? dest->loss() : 100.0);
    for (const auto& h : hops) {
      const std::string n = "hop." + std::to_string(h.ttl) + ".";
      if (h.received) obs.set(n + "rtt_avg", h.rtt_avg() / 1e9);
      obs.set(n + "loss", h.loss());
    }

    // ---- the path --------------------------------------------------------------------------
    std::string path;
    for (std::size_t k = 0; k < hops.size(); ++k) {
      const hop_summary& h = hops[k];
      if (!path.empty()) path += ", ";
      if (h.received == 0) {  // runs of silent hops: "4-30 *"
        std::size_t j = k;
        while (j + 1 < hops.size() && hops[j + 1].received == 0) ++j;
        path += std::to_string(h.ttl);
        if (j > k) path += "-" + std::to_string(hops[j].ttl);
        path += " *";
        k = j;
        continue;
      }
      path += std::to_string(h.ttl) + " ";
      for (std::size_t f = 0; f < h.from.size(); ++f) path += (f ? "/" : "") + h.from[f];
      path += " " + detail::format_ms(h.rtt_avg()) + " ms";
      if (!h.flag.empty()) path += " " + h.flag;
      if (h.received < h.sent) path += " (" + percent(h.loss()) + " loss)";
    }

    if (reached) {
      obs.message = addr_text + " reached in " + std::to_string(st.dest_hop) +
                    (st.dest_hop == 1 ? " hop: " : " hops: ") + path;
      return obs;
    }
    if (st.error_hop != INT_MAX) {
      const hop_summary& h = hops.back();
      obs.fail(reason::unreachable,
               addr_text + " not reached: " + path + ": " +
                   std::string(detail::icmp::describe_error(fam, h.error_type, h.error_code)) +
                   " from " + (h.from.empty() ? std::string("?") : h.from.front()) + " at hop " +
                   std::to_string(h.ttl));
      return obs;
    }
    if (last_answered > 0) {
      obs.fail(reason::unreachable, addr_text + " not reached: " + path);
      return obs;
    }
    if (st.local_failures > 0) {
      const int e = st.local_errno;
      const bool unreachable = e == ENETUNREACH || e == EHOSTUNREACH || e == ENETDOWN ||
                               e == EHOSTDOWN || e == EADDRNOTAVAIL;
      obs.fail(unreachable ? reason::unreachable : reason::error,
               addr_text + " not reached: sending failed: " + detail::errno_text(e));
      return obs;
    }
    obs.fail(reason::timeout, addr_text + " not reached: no hop answered " +
                                  std::to_string(sent_total) + " probes within " +
                                  format_duration(elapsed) +
                                  (path.empty() ? "" : " (" + path + ")"));
    return obs;
  }

  options opts_;
  address_family family_ = address_family::any;
  detail::traceroute::probe_method method_ = detail::traceroute::probe_method::icmp;
};

}  // namespace sonde
