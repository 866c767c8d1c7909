#pragma once
/// @file icmp.hpp
/// icmp_probe: ICMP echo ("ping") check over IPv4 and IPv6.
///
/// A run sends `count` echo requests `packet_interval` apart to the target's first address
/// (names resolved asynchronously with the `family` option) and awaits the replies until every
/// request is answered or the run deadline passes (the deadline is the task's timeout: there is
/// no separate per-packet timeout, a reply that arrives after the deadline is lost).
///
/// Sockets: every icmp probe on one io_context shares ONE socket per address family, owned by
/// detail::icmp_service and opened on first use. An unprivileged datagram ICMP socket is
/// preferred (allowed when the process's group is in net.ipv4.ping_group_range); otherwise a
/// raw socket (root or CAP_NET_RAW); without either the run returns
/// probe_errc::permission_denied with a message naming the fixes. Replies are matched by
/// identifier, sequence (a per-socket 16-bit counter), source address and a per-run 64-bit
/// cookie in the payload, so any number of concurrent runs share the socket. RTTs use kernel
/// receive timestamps (SO_TIMESTAMPNS) against the realtime clock read just before sendmsg,
/// falling back to the monotonic clock when a timestamp is missing or implausible.
///
/// Metrics (durations in seconds): `latency` (= rtt_avg, when any reply), `sent`, `received`,
/// `loss` (percent 0-100), `rtt_min`, `rtt_avg`, `rtt_max`, `jitter` (mean absolute
/// difference of consecutive RTTs; 0 with fewer than two replies).
///
/// Result rules: some replies -> healthy observation (loss is judged by conditions); no reply
/// -> reason::unreachable if ICMP errors came back or the kernel had no route (the message
/// says which and from whom), reason::timeout otherwise.

#include <errno.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/errqueue.h>  // after <time.h>: it uses struct timespec

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/address.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "detail/icmp_packet.hpp"
#include "detail/net.hpp"
#include "probe.hpp"
#include "resolve.hpp"

namespace sonde {

/// How the shared ICMP socket of one address family was opened.
enum class icmp_socket_mode : int {
  none = 0,      ///< not opened (yet), or opening failed
  datagram = 1,  ///< SOCK_DGRAM "ping" socket: unprivileged, kernel-managed identifier
  raw = 2,       ///< SOCK_RAW: root or CAP_NET_RAW
};

/// Lower-case name of a socket mode ("none", "datagram", "raw").
constexpr std::string_view to_string(icmp_socket_mode m) noexcept {
  switch (m) {
    case icmp_socket_mode::none:
      return "none";
    case icmp_socket_mode::datagram:
      return "datagram";
    case icmp_socket_mode::raw:
      return "raw";
  }
  return "none";
}

/// Counters of one family's shared ICMP socket.
struct icmp_family_stats {
  unsigned sockets_opened = 0;  ///< sockets opened over the io_context's life (1 when healthy)
  icmp_socket_mode mode = icmp_socket_mode::none;  ///< mode of the open socket
  std::size_t pending = 0;                         ///< echo requests awaiting an answer
  std::size_t active_runs = 0;                     ///< runs currently using the socket
  std::uint64_t sent = 0;                          ///< echo requests sent
  std::uint64_t replies = 0;                       ///< echo replies matched to a request
  std::uint64_t kernel_timestamps = 0;  ///< replies timed by the kernel's receive timestamp
  std::uint64_t errors = 0;             ///< ICMP errors matched to a request
  std::uint64_t ignored = 0;            ///< well-formed messages that matched no request
  std::uint64_t malformed = 0;          ///< datagrams the codec rejected
  std::uint64_t read_after_send = 0;    ///< datagrams read right after sending, without a wait
  std::uint64_t reads_after_send = 0;   ///< reads tried right after sending (found or not)
};

/// Counters of both shared ICMP sockets of an io_context.
struct icmp_stats {
  icmp_family_stats ipv4;
  icmp_family_stats ipv6;
};

namespace detail {

/// One echo request of a run.
struct icmp_echo_record {
  enum state_type : std::uint8_t {
    unsent = 0,
    pending = 1,  ///< sent, no answer yet
    replied = 2,  ///< echo reply matched; rtt_ns set
    errored = 3,  ///< an ICMP error came back for it
    failed = 4,   ///< sendmsg refused it (no route...)
  };
  clock::time_point mono_sent{};
  std::int64_t real_sent_ns = 0;
  std::int64_t rtt_ns = -1;
  std::uint16_t seq = 0;
  state_type state = unsent;
};

/// The state one icmp_probe run shares with its socket's receive loop. Lives in the run's
/// coroutine frame; registered with an icmp_channel between begin() and end().
struct icmp_run {
  explicit icmp_run(const asio::any_io_executor& ex) : ex_(ex) {}
  icmp_run(const icmp_run&) = delete;
  icmp_run& operator=(const icmp_run&) = delete;

  /// The run's only timer: next send time or deadline; cancelled to wake the run once every
  /// request is answered. Made on first use: a run answered right after sending never waits.
  asio::steady_timer& timer() {
    if (!timer_) timer_.emplace(ex_);
    return *timer_;
  }
  /// Wake the run if it is waiting.
  void wake() {
    if (timer_) timer_->cancel();
  }
  std::vector<icmp_echo_record> packets;
  std::vector<std::uint8_t> wire;  ///< echo header + payload, rewritten for every request
  sockaddr_storage dst{};
  socklen_t dst_len = 0;
  std::array<std::uint8_t, 16> dst_bytes{};
  std::uint64_t cookie = 0;
  int ttl = 64;
  int outstanding = 0;
  bool all_sent = false;
  // The first ICMP error, for the message.
  int icmp_errors = 0;
  std::uint8_t error_type = 0, error_code = 0;
  std::string error_from;
  // The first local send failure.
  int local_failures = 0;
  int local_errno = 0;

  bool complete() const noexcept { return all_sent && outstanding == 0; }

 private:
  asio::any_io_executor ex_;
  std::optional<asio::steady_timer> timer_;
};

/// Text of an errno value (thread-safe, unlike strerror).
inline std::string errno_text(int e) {
  return std::system_category().message(e);
}

/// Printable address from a sockaddr.
inline std::string sockaddr_text(const sockaddr* sa, socklen_t len) {
  if (sa->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    asio::ip::address_v4::bytes_type b;
    std::memcpy(b.data(), &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, 4);
    return asio::ip::address_v4(b).to_string();
  }
  if (sa->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    asio::ip::address_v6::bytes_type b;
    std::memcpy(b.data(), &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, 16);
    return asio::ip::address_v6(b).to_string();
  }
  return "?";
}

/// One shared ICMP socket (one address family) and its pending-request table. Not
/// thread-safe: used from the io_context's thread only.
class icmp_channel {
 public:
  /// send() result when 65535 requests are already pending on this socket.
  static constexpr int table_full = -1;

  icmp_channel(asio::io_context& ctx, int family)
      : ctx_(ctx), family_(family), heartbeat_(ctx.get_executor(), heartbeat_period) {}
  icmp_channel(const icmp_channel&) = delete;
  icmp_channel& operator=(const icmp_channel&) = delete;

  int family() const noexcept { return family_; }
  bool is_open() const noexcept { return desc_.has_value(); }
  icmp_socket_mode mode() const noexcept { return mode_; }
  asio::posix::stream_descriptor& descriptor() { return *desc_; }

  /// Open the socket: datagram ICMP first, raw if that is refused. Errors:
  /// permission_denied (both refused; the message names the fixes), unsupported (no IPv6),
  /// resource (out of descriptors or memory), internal.
  tl::expected<void, probe_error> open(std::uint16_t random_ident) {
    if (desc_) return {};
    const bool v6 = family_ == AF_INET6;
    const int proto = v6 ? int{IPPROTO_ICMPV6} : int{IPPROTO_ICMP};
    icmp_socket_mode mode = icmp_socket_mode::datagram;
    int fd = ::socket(family_, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
    const int dgram_err = fd < 0 ? errno : 0;
    int raw_err = 0;
    if (fd < 0 && dgram_err != EAFNOSUPPORT && !is_local_exhaustion(dgram_err)) {
      mode = icmp_socket_mode::raw;
      fd = ::socket(family_, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
      raw_err = fd < 0 ? errno : 0;
    }
    if (fd < 0) return tl::unexpected(open_error(dgram_err, raw_err));

    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);  // else: monotonic RTTs
    // The socket's own TTL is the common one; requests with another carry theirs per packet.
    socket_ttl_ = -1;
    if (::setsockopt(fd, v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_UNICAST_HOPS : IP_TTL,
                     &default_ttl, sizeof default_ttl) == 0)
      socket_ttl_ = default_ttl;
    // Bursts from thousands of targets must not overflow the queues. The FORCE variants work
    // with CAP_NET_ADMIN; otherwise the kernel caps the size at net.core.[rw]mem_max.
    const int rcvbuf = 4 << 20, sndbuf = 1 << 20;
    if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) != 0)
      ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) != 0)
      ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);

    if (mode == icmp_socket_mode::datagram) {
      // ICMP errors for datagram sockets arrive on the error queue, only with RECVERR on.
      if (v6)
        ::setsockopt(fd, IPPROTO_IPV6, IPV6_RECVERR, &one, sizeof one);
      else
        ::setsockopt(fd, IPPROTO_IP, IP_RECVERR, &one, sizeof one);
      // Binding to port 0 makes the kernel choose the echo identifier (the "port") now.
      sockaddr_storage ss{};
      socklen_t len = v6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
      ss.ss_family = static_cast<sa_family_t>(family_);
      if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 ||
          ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
        const int e = errno;
        ::close(fd);
        return tl::unexpected(probe_error{
            probe_errc::internal, "", "cannot bind the ICMP datagram socket: " + errno_text(e)});
      }
      ident_ = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                        : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
      layout_ = v6 ? icmp::wire_layout::ipv6 : icmp::wire_layout::ipv4_datagram;
    } else {
      ident_ = random_ident;
      if (v6) {
        // Only echo replies and the errors that can quote an echo request.
        icmp6_filter f;
        ICMP6_FILTER_SETBLOCKALL(&f);
        ICMP6_FILTER_SETPASS(icmp::v6_echo_reply, &f);
        ICMP6_FILTER_SETPASS(icmp::v6_dest_unreachable, &f);
        ICMP6_FILTER_SETPASS(icmp::v6_packet_too_big, &f);
        ICMP6_FILTER_SETPASS(icmp::v6_time_exceeded, &f);
        ICMP6_FILTER_SETPASS(icmp::v6_parameter_problem, &f);
        ::setsockopt(fd, IPPROTO_ICMPV6, ICMP6_FILTER, &f, sizeof f);
        layout_ = icmp::wire_layout::ipv6;
      } else {
        // Linux ICMP_FILTER (linux/icmp.h, not included: it clashes with netinet/ip_icmp.h):
        // a set bit blocks that type. Keeps our own loopback echo requests and other traffic
        // out of the queue.
        constexpr int icmp_filter_opt = 1;
        std::uint32_t blocked =
            ~((1u << icmp::v4_echo_reply) | (1u << icmp::v4_dest_unreachable) |
              (1u << icmp::v4_time_exceeded) | (1u << icmp::v4_parameter_problem));
        ::setsockopt(fd, SOL_RAW, icmp_filter_opt, &blocked, sizeof blocked);
        layout_ = icmp::wire_layout::ipv4_raw;
      }
    }
    try {
      desc_.emplace(ctx_, fd);
    } catch (const std::exception& e) {
      ::close(fd);
      return tl::unexpected(probe_error{probe_errc::resource, "", e.what()});
    }
    if (rx_data_.empty()) {
      rx_data_.assign(batch * rx_size_, 0);
      headers_ready_ = false;
    }
    mode_ = mode;
    ++stats_.sockets_opened;
    stats_.mode = mode;
    return {};
  }

  /// Make sure whole replies of `icmp_bytes` fit the receive buffers.
  void reserve_rx(std::size_t icmp_bytes) {
    const std::size_t need = icmp_bytes + 64;  // + the largest IPv4 header
    if (need <= rx_size_) return;
    rx_size_ = (need + 1023) / 1024 * 1024;
    rx_data_.assign(batch * rx_size_, 0);
    headers_ready_ = false;
  }

  /// A run starts using the socket: the receive loop runs while any run is active.
  void begin() {
    ++active_runs_;
    if (!closed_) heartbeat_.begin();
  }

  /// After a run's burst of sends: read what is already queued, then arm the receive wait if
  /// the run `r` still expects replies. On loopback and fast links the reply is queued before
  /// sendmsg returns, so reading at once completes the run without arming a wait (an
  /// epoll_ctl) or a trip through the event loop (epoll_wait). Where the read keeps finding
  /// nothing (replies take real network time) it is tried only every 16th time, so it costs
  /// at most one extra system call per 16 bursts.
  void settle(const icmp_run& r) {
    if (!desc_ || closed_) return;
    if (spec_misses_ < spec_miss_limit || (++spec_skipped_ & 15) == 0) {
      ++stats_.reads_after_send;
      // One run at a time has one reply waiting: recvmsg. More (or an error): recvmmsg.
      int got = read_one();
      if (got != 0 && (got < 0 || !r.complete())) got = std::max(got, 0) + drain();
      stats_.read_after_send += static_cast<std::uint64_t>(got);
      spec_misses_ = got > 0 ? 0 : std::min(spec_misses_ + 1, spec_miss_limit);
    }
    if (r.complete() || !desc_) return;
    // Arming a wait re-registers the socket with epoll (EPOLL_CTL_MOD), which reports
    // anything that arrived while nobody was listening: no drain is needed first.
    if (!reading_) arm_read();
    if (mode_ == icmp_socket_mode::datagram && !watching_errors_) arm_errors();
  }

  /// A run ends: release its pending requests; stop the receive loop when no run is left, so
  /// an idle io_context can return from run().
  void end(icmp_run& r) {
    for (auto& p : r.packets) {
      if (p.state != icmp_echo_record::pending) continue;
      if (slot* s = find(p.seq); s && s->run == &r) release(*s);
    }
    r.outstanding = 0;
    if (active_runs_ > 0) --active_runs_;
    heartbeat_.end();
    if (active_runs_ == 0 && desc_ && (reading_ || watching_errors_)) {
      asio::error_code ignored;
      desc_->cancel(ignored);
    }
  }

  /// Send request `index` of run `r`. Returns 0, an errno value (EAGAIN: wait for
  /// writability and retry), or table_full.
  int send(icmp_run& r, std::size_t index) {
    if (!desc_) return EBADF;
    if (used_ + 1 > slots_.size() / 2 && slots_.size() < 65536) grow();
    const auto seq = acquire(&r, static_cast<std::uint16_t>(index));
    if (!seq) return table_full;
    auto& p = r.packets[index];
    p.seq = *seq;

    // TTL / hop limit per packet where it differs from the socket's: the socket is shared, so
    // no setsockopt.
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr h{};
    iovec iov{r.wire.data(), r.wire.size()};
    h.msg_name = &r.dst;
    h.msg_namelen = r.dst_len;
    h.msg_iov = &iov;
    h.msg_iovlen = 1;
    if (r.ttl != socket_ttl_) {  // the kernel parses a control message on every send
      h.msg_control = control;
      h.msg_controllen = sizeof control;
      cmsghdr* c = CMSG_FIRSTHDR(&h);
      c->cmsg_level = family_ == AF_INET6 ? IPPROTO_IPV6 : IPPROTO_IP;
      c->cmsg_type = family_ == AF_INET6 ? IPV6_HOPLIMIT : IP_TTL;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(c), &r.ttl, sizeof(int));
    }

    // A datagram socket with IP_RECVERR turns every ICMP error into a pending socket error
    // that the next sendmsg reports once, whichever request it was for: the error itself is
    // read from the error queue, so retry; a real local failure (no route) fails every time.
    const int attempts = mode_ == icmp_socket_mode::datagram ? 4 : 1;
    int err = 0;
    auto span = std::span<std::uint8_t>(r.wire);
    for (int attempt = 0; attempt < attempts; ++attempt) {
      timespec ts{};
      ::clock_gettime(CLOCK_REALTIME, &ts);
      p.real_sent_ns = std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
      icmp::write_stamp(span.subspan(icmp::header_size), {r.cookie, p.real_sent_ns});
      // Datagram sockets compute the ICMPv4 checksum themselves; raw ones need ours.
      icmp::write_echo_header(span, family_ == AF_INET6 ? 6 : 4, ident_, *seq,
                              layout_ == icmp::wire_layout::ipv4_raw);
      p.mono_sent = clock::now();
      if (::sendmsg(desc_->native_handle(), &h, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) {
        err = 0;
        break;
      }
      err = errno == 0 ? EIO : errno;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
    }
    if (err) {
      if (slot* s = find(*seq)) release(*s);
      return err;
    }
    p.state = icmp_echo_record::pending;
    ++r.outstanding;
    ++stats_.sent;
    // During a burst of sends nothing reads the socket; read now and then so replies do not
    // overflow the receive queue.
    if (++sends_since_drain_ >= 64) drain();
    return 0;
  }

  /// Mark request `index` of `r` as refused locally (sendmsg failed with `err`).
  static void record_local_failure(icmp_run& r, std::size_t index, int err) {
    r.packets[index].state = icmp_echo_record::failed;
    if (r.local_failures++ == 0) r.local_errno = err;
  }

  icmp_family_stats stats() const {
    icmp_family_stats s = stats_;
    s.pending = used_;
    s.active_runs = active_runs_;
    return s;
  }

  /// Close the socket (io_context shutdown); the tables stay valid for late end() calls.
  void shutdown() {
    closed_ = true;
    heartbeat_.stop();
    if (desc_) {
      asio::error_code ignored;
      desc_->close(ignored);
      desc_.reset();
    }
  }

 private:
  static constexpr std::size_t batch = 16;    // datagrams per recvmmsg
  static constexpr int rounds_per_wake = 16;  // then yield to other handlers
  static constexpr std::size_t control_size = 64;

  struct slot {
    icmp_run* run = nullptr;
    std::uint16_t seq = 0;
    std::uint16_t index = 0;
  };

  // ---- pending table: open addressing by sequence number, no collisions by construction --
  // Sequence numbers are unique among pending requests; the table is a power of two indexed by
  // seq & mask, and a sequence whose slot is taken is skipped. Doubling keeps keys that were
  // distinct modulo N distinct modulo 2N, so growth never collides.
  slot* find(std::uint16_t seq) noexcept {
    slot& s = slots_[seq & (slots_.size() - 1)];
    return s.run && s.seq == seq ? &s : nullptr;
  }
  void release(slot& s) noexcept {
    s = slot{};
    --used_;
  }
  std::optional<std::uint16_t> acquire(icmp_run* r, std::uint16_t index) noexcept {
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t tries = 0; tries < slots_.size(); ++tries) {
      const std::uint16_t seq = next_seq_++;
      slot& s = slots_[seq & mask];
      if (!s.run) {
        s = slot{r, seq, index};
        ++used_;
        return seq;
      }
    }
    return std::nullopt;
  }
  void grow() {
    std::vector<slot> bigger(slots_.size() * 2);
    const std::size_t mask = bigger.size() - 1;
    for (const slot& s : slots_)
      if (s.run) bigger[s.seq & mask] = s;
    slots_.swap(bigger);
  }

  // While runs are active a heartbeat (detail::heartbeat) keeps their deadline timers from
  // reprogramming the kernel timer on every run.
  static constexpr std::chrono::milliseconds heartbeat_period{10};

  // ---- receive loop --------------------------------------------------------------------
  void arm_read() {
    reading_ = true;
    desc_->async_wait(asio::posix::descriptor_base::wait_read, [this](asio::error_code ec) {
      reading_ = false;
      if (closed_ || !desc_) return;
      if (ec && ec != asio::error::operation_aborted) {
        ++stats_.malformed;  // should not happen; do not spin on a broken descriptor
        return;
      }
      if (!ec) drain();
      rearm_later(rearm_read_posted_, &icmp_channel::rearm_read, !ec);
    });
  }

  /// Wait again if runs are still active. After a wake that delivered replies, the check is
  /// posted: the runs those replies completed end first, and when the last one has ended
  /// (one run at a time, the common case) no wait is armed at all; the next begin() arms one.
  /// After a cancel it is immediate (a run that began meanwhile needs the wait).
  void rearm_later(bool& posted, void (icmp_channel::*rearm)(), bool defer) {
    if (!defer) {
      (this->*rearm)();
      return;
    }
    if (posted || active_runs_ == 0) return;
    posted = true;
    asio::post(ctx_, [this, &posted, rearm] {
      posted = false;
      if (!closed_) (this->*rearm)();
    });
  }
  void rearm_read() {
    if (desc_ && active_runs_ > 0 && !reading_) arm_read();
  }
  void rearm_errors() {
    if (desc_ && active_runs_ > 0 && !watching_errors_) arm_errors();
  }

  void arm_errors() {
    watching_errors_ = true;
    // EPOLLERR (a queued ICMP error) completes every kind of wait.
    desc_->async_wait(asio::posix::descriptor_base::wait_error, [this](asio::error_code ec) {
      watching_errors_ = false;
      if (closed_ || !desc_) return;
      if (ec && ec != asio::error::operation_aborted) return;
      if (!ec) drain_errors();
      rearm_later(rearm_errors_posted_, &icmp_channel::rearm_errors, !ec);
    });
  }

  void prepare_headers() noexcept {
    if (headers_ready_) return;
    for (std::size_t i = 0; i < batch; ++i) {
      iov_[i] = iovec{rx_data_.data() + i * rx_size_, rx_size_};
      msghdr& h = msgs_[i].msg_hdr;
      h.msg_name = &from_[i];
      h.msg_iov = &iov_[i];
      h.msg_iovlen = 1;
      h.msg_control = control_[i].bytes;
      reset_header(msgs_[i]);
    }
    headers_ready_ = true;
  }

  /// Read one queued datagram with recvmsg (cheaper than recvmmsg when one is all there is).
  /// Returns 1, 0 (nothing queued), or -1 (an error: drain() deals with those).
  int read_one() {
    if (!desc_) return 0;
    prepare_headers();
    const ssize_t n = ::recvmsg(desc_->native_handle(), &msgs_[0].msg_hdr, MSG_DONTWAIT);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    on_datagram(msgs_[0].msg_hdr, static_cast<std::size_t>(n), clock::now());
    reset_header(msgs_[0]);
    return 1;
  }

  /// Read every queued datagram (bounded per wake; the rest continues in a posted handler).
  /// Returns how many were read.
  int drain() {
    sends_since_drain_ = 0;
    if (!desc_) return 0;
    int got = 0;
    const int fd = desc_->native_handle();
    int failures = 0;
    // The headers are set up once per buffer layout; recvmmsg only rewrites the lengths and
    // flags of the entries it fills, which are reset after use. An empty queue (the common
    // case) then costs the system call alone.
    prepare_headers();
    for (int round = 0; round < rounds_per_wake; ++round) {
      const int n = ::recvmmsg(fd, msgs_.data(), batch, MSG_DONTWAIT, nullptr);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return got;
        // EINTR, or a pending socket error (datagram sockets report ICMP errors once more
        // through recv): the queue still holds data.
        if (++failures > 4) return got;
        continue;
      }
      got += n;
      const auto now = clock::now();
      for (int i = 0; i < n; ++i) on_datagram(msgs_[i].msg_hdr, msgs_[i].msg_len, now);
      for (int i = 0; i < n; ++i) reset_header(msgs_[i]);
      if (static_cast<std::size_t>(n) < batch) return got;
    }
    // Still more: continue after other handlers had their turn.
    if (!drain_posted_) {
      drain_posted_ = true;
      asio::post(ctx_, [this] {
        drain_posted_ = false;
        if (!closed_) drain();
      });
    }
    return got;
  }

  static void reset_header(mmsghdr& m) noexcept {
    m.msg_hdr.msg_namelen = sizeof(sockaddr_storage);
    m.msg_hdr.msg_controllen = control_size;
    m.msg_hdr.msg_flags = 0;
    m.msg_len = 0;
  }

  void on_datagram(msghdr& h, std::size_t len, clock::time_point now) {
    if (h.msg_flags & MSG_TRUNC) {
      ++stats_.ignored;  // larger than any request we have pending
      return;
    }
    auto m = icmp::decode(
        std::span<const std::uint8_t>(static_cast<const std::uint8_t*>(h.msg_iov->iov_base), len),
        layout_);
    if (!m) {
      ++stats_.malformed;
      return;
    }
    if (m->kind == icmp::message_kind::echo_reply)
      on_reply(*m, h, now);
    else if (m->kind == icmp::message_kind::error && m->quoted.is_echo_request)
      on_error(m->quoted.echo, m->type, m->code,
               std::span<const std::uint8_t>(m->quoted.destination.data(), addr_len()), h);
    else
      ++stats_.ignored;
  }

  std::size_t addr_len() const noexcept { return family_ == AF_INET6 ? 16 : 4; }

  /// The address bytes of a sockaddr of our family, or an empty span.
  std::span<const std::uint8_t> addr_of(const msghdr& h) const noexcept {
    if (family_ == AF_INET6) {
      if (h.msg_namelen < sizeof(sockaddr_in6)) return {};
      auto* a = static_cast<const sockaddr_in6*>(h.msg_name);
      return {reinterpret_cast<const std::uint8_t*>(&a->sin6_addr), 16};
    }
    if (h.msg_namelen < sizeof(sockaddr_in)) return {};
    auto* a = static_cast<const sockaddr_in*>(h.msg_name);
    return {reinterpret_cast<const std::uint8_t*>(&a->sin_addr), 4};
  }

  bool same_dst(std::span<const std::uint8_t> addr, const icmp_run& r) const noexcept {
    return addr.size() == addr_len() &&
           std::memcmp(addr.data(), r.dst_bytes.data(), addr.size()) == 0;
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

  void on_reply(const icmp::message& m, msghdr& h, clock::time_point now) {
    slot* s = m.identifier == ident_ ? find(m.sequence) : nullptr;
    if (!s) {
      ++stats_.ignored;
      return;
    }
    icmp_run& r = *s->run;
    const auto st = icmp::read_stamp(m.payload);
    if (!same_dst(addr_of(h), r) || !st || st->cookie != r.cookie) {
      ++stats_.ignored;
      return;
    }
    icmp_echo_record& p = r.packets[s->index];
    const std::int64_t mono =
        std::chrono::duration_cast<std::chrono::nanoseconds>(now - p.mono_sent).count();
    const std::int64_t kt = kernel_time_ns(h);
    std::int64_t rtt = kt ? kt - p.real_sent_ns : -1;
    // The kernel stamped the reply before we read it: a kernel RTT above the monotonic one
    // (or not positive) means the realtime clock stepped.
    if (rtt <= 0 || rtt > mono + 1'000'000)
      rtt = std::max<std::int64_t>(mono, 1);
    else
      ++stats_.kernel_timestamps;
    p.rtt_ns = rtt;
    p.state = icmp_echo_record::replied;
    --r.outstanding;
    ++stats_.replies;
    release(*s);
    if (r.complete()) r.wake();
  }

  void on_error(icmp::echo_ref echo, std::uint8_t type, std::uint8_t code,
                std::span<const std::uint8_t> original_dst, msghdr& h) {
    slot* s = echo.identifier == ident_ ? find(echo.sequence) : nullptr;
    if (!s || !same_dst(original_dst, *s->run)) {
      ++stats_.ignored;
      return;
    }
    icmp_run& r = *s->run;
    r.packets[s->index].state = icmp_echo_record::errored;
    if (r.icmp_errors++ == 0) {
      r.error_type = type;
      r.error_code = code;
      r.error_from = sockaddr_text(static_cast<const sockaddr*>(h.msg_name), h.msg_namelen);
    }
    --r.outstanding;
    ++stats_.errors;
    release(*s);
    if (r.complete()) r.wake();
  }

  /// Datagram sockets: ICMP errors come through the error queue, with the original echo
  /// request as data, its destination as the address and the reporting router in the
  /// extended error.
  void drain_errors() {
    if (!desc_) return;
    const int fd = desc_->native_handle();
    for (int k = 0; k < 256; ++k) {
      alignas(cmsghdr) char control[256];
      sockaddr_storage dst{};
      iovec iov{rx_data_.data(), rx_size_};
      msghdr h{};
      h.msg_name = &dst;
      h.msg_namelen = sizeof dst;
      h.msg_iov = &iov;
      h.msg_iovlen = 1;
      h.msg_control = control;
      h.msg_controllen = sizeof control;
      const ssize_t n = ::recvmsg(fd, &h, MSG_ERRQUEUE | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        return;
      }
      const sock_extended_err* ee = nullptr;
      for (cmsghdr* c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c)) {
        if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_RECVERR) ||
            (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_RECVERR))
          ee = reinterpret_cast<const sock_extended_err*>(CMSG_DATA(c));
      }
      const auto echo = icmp::decode_echo_request_header(
          std::span<const std::uint8_t>(rx_data_.data(), static_cast<std::size_t>(n)),
          family_ == AF_INET6 ? 6 : 4);
      if (!ee || !echo) {
        ++stats_.malformed;
        continue;
      }
      if (ee->ee_origin == SO_EE_ORIGIN_ICMP || ee->ee_origin == SO_EE_ORIGIN_ICMP6) {
        // Present the offender as the message's source address.
        sockaddr_storage offender{};
        std::memcpy(&offender, SO_EE_OFFENDER(ee),
                    family_ == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
        msghdr from{};
        from.msg_name = &offender;
        from.msg_namelen = family_ == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
        on_error(*echo, ee->ee_type, ee->ee_code, addr_of(h), from);
      } else if (ee->ee_origin == SO_EE_ORIGIN_LOCAL) {
        slot* s = echo->identifier == ident_ ? find(echo->sequence) : nullptr;
        if (!s || !same_dst(addr_of(h), *s->run)) {
          ++stats_.ignored;
          continue;
        }
        icmp_run& r = *s->run;
        record_local_failure(r, s->index, static_cast<int>(ee->ee_errno));
        --r.outstanding;
        release(*s);
        if (r.complete()) r.wake();
      } else {
        ++stats_.ignored;
      }
    }
  }

  // ---- errors ----------------------------------------------------------------------------
  probe_error open_error(int dgram_err, int raw_err) const {
    const char* fam = family_ == AF_INET6 ? "ICMPv6" : "ICMP";
    auto is_perm = [](int e) { return e == EACCES || e == EPERM; };
    if (dgram_err == EAFNOSUPPORT || raw_err == EAFNOSUPPORT)
      return {probe_errc::unsupported, "",
              std::string("cannot open an ") + fam + " socket: " +
                  (family_ == AF_INET6 ? "IPv6 is not available on this system"
                                       : "IPv4 is not available on this system")};
    const int res = raw_err ? raw_err : dgram_err;
    if (auto x = local_exhaustion_error(res, std::string("opening an ") + fam + " socket"))
      return std::move(*x);
    if ((is_perm(dgram_err) || dgram_err == EPROTONOSUPPORT || dgram_err == ESOCKTNOSUPPORT) &&
        is_perm(raw_err))
      return {probe_errc::permission_denied, "", permission_message(fam)};
    return {probe_errc::internal, "",
            std::string("cannot open an ") + fam + " socket: datagram: " + errno_text(dgram_err) +
                "; raw: " + errno_text(raw_err)};
  }

  static std::string permission_message(const char* fam) {
    std::string range = "unknown";
    if (std::FILE* f = std::fopen("/proc/sys/net/ipv4/ping_group_range", "re")) {
      unsigned long lo = 0, hi = 0;
      if (std::fscanf(f, "%lu %lu", &lo, &hi) == 2)
        range = std::to_string(lo) + " " + std::to_string(hi);
      std::fclose(f);
    }
    std::string exe = "/path/to/sonde";
    char buf[4096];
    const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n > 0) exe.assign(buf, static_cast<std::size_t>(n));
    return std::string("no permission to send ") + fam + " echo requests: datagram ICMP " +
           "sockets are not allowed for group " + std::to_string(::getgid()) +
           " (net.ipv4.ping_group_range is \"" + range +
           "\") and raw sockets need root or CAP_NET_RAW. Fix one of: run as root; grant " +
           "CAP_NET_RAW (setcap cap_net_raw+ep " + exe +
           ", or AmbientCapabilities=CAP_NET_RAW in the systemd unit); or allow datagram ICMP " +
           "with sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"";
  }

  struct alignas(cmsghdr) control_buffer {
    char bytes[control_size];
  };

  asio::io_context& ctx_;
  const int family_;
  std::optional<asio::posix::stream_descriptor> desc_;
  icmp_socket_mode mode_ = icmp_socket_mode::none;
  icmp::wire_layout layout_ = icmp::wire_layout::ipv4_raw;
  std::uint16_t ident_ = 0;
  std::uint16_t next_seq_ = 0;
  std::vector<slot> slots_ = std::vector<slot>(256);
  std::size_t used_ = 0;
  std::size_t active_runs_ = 0;
  bool reading_ = false, watching_errors_ = false, drain_posted_ = false, closed_ = false;
  heartbeat heartbeat_;
  bool rearm_read_posted_ = false, rearm_errors_posted_ = false;
  int sends_since_drain_ = 0;
  static constexpr int default_ttl = 64;  // the ttl option's default
  int socket_ttl_ = -1;                   // the TTL set on the socket, -1 if unknown
  // Reads right after sending (settle): misses in a row, capped; past the limit only every
  // 16th burst reads.
  static constexpr unsigned spec_miss_limit = 8;
  unsigned spec_misses_ = 0, spec_skipped_ = 0;
  icmp_family_stats stats_;
  // Receive batch (reused; no per-packet allocation).
  std::size_t rx_size_ = 2048;
  std::vector<std::uint8_t> rx_data_;
  std::array<mmsghdr, batch> msgs_{};
  bool headers_ready_ = false;  // msgs_ point into rx_data_ (reset when it is reallocated)
  std::array<iovec, batch> iov_{};
  std::array<sockaddr_storage, batch> from_{};
  std::array<control_buffer, batch> control_{};
};

/// The shared ICMP sockets of one io_context (one per address family, opened lazily). Not
/// thread-safe: use it from the io_context's thread (the usual one-thread engine).
class icmp_service final : public asio::execution_context::service {
 public:
  using key_type = icmp_service;
  static inline asio::execution_context::id id;

  explicit icmp_service(asio::io_context& ctx)
      : service(ctx), v4_(ctx, AF_INET), v6_(ctx, AF_INET6) {
    std::random_device rd;
    rng_ = (std::uint64_t{rd()} << 32) ^ rd() ^
           static_cast<std::uint64_t>(clock::now().time_since_epoch().count());
  }

  void shutdown() override {
    v4_.shutdown();
    v6_.shutdown();
  }

  /// The socket for `family` (AF_INET or AF_INET6), opened on first use; opening is retried
  /// on later calls after a failure. Errors as icmp_channel::open.
  tl::expected<icmp_channel*, probe_error> channel(int family) {
    icmp_channel& c = family == AF_INET6 ? v6_ : v4_;
    if (!c.is_open()) {
      auto r = c.open(static_cast<std::uint16_t>(next_random()));
      if (!r) return tl::unexpected(r.error());
    }
    return &c;
  }

  /// A fresh 64-bit random value (splitmix64), for run cookies.
  std::uint64_t next_random() noexcept {
    std::uint64_t z = (rng_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

  icmp_stats stats() const { return {v4_.stats(), v6_.stats()}; }

 private:
  icmp_channel v4_;
  icmp_channel v6_;
  std::uint64_t rng_ = 0;
};

/// Registers a run with its channel for the lifetime of the coroutine frame, so a run that
/// ends by deadline, error or destruction never leaves pending entries behind.
class icmp_run_scope {
 public:
  icmp_run_scope(icmp_channel& ch, icmp_run& r) : ch_(&ch), run_(&r) { ch.begin(); }
  icmp_run_scope(const icmp_run_scope&) = delete;
  icmp_run_scope& operator=(const icmp_run_scope&) = delete;
  ~icmp_run_scope() { finish(); }
  void finish() {
    if (ch_) ch_->end(*run_);
    ch_ = nullptr;
  }

 private:
  icmp_channel* ch_;
  icmp_run* run_;
};

/// The address as text; IPv4 without inet_ntop's sprintf (hot path: every run's message).
inline std::string address_text(const asio::ip::address& a) {
  if (!a.is_v4()) return a.to_string();
  const auto b = a.to_v4().to_bytes();
  char buf[16];
  char* p = buf;
  for (std::size_t i = 0; i < 4; ++i) {
    if (i) *p++ = '.';
    p = std::to_chars(p, buf + sizeof buf, static_cast<unsigned>(b[i])).ptr;
  }
  return std::string(buf, p);
}

/// "0.052" (milliseconds with three decimals) from nanoseconds.
/// Appends "0.052" (milliseconds with three decimals) for `ns` nanoseconds to `out`: the
/// digits of printf("%.3f", ns / 1e6), in integer arithmetic (hot path: every ping run).
inline void append_ms(std::string& out, double ns) {
  if (!(ns >= 0) || ns > 9e18) {  // NaN, negative or absurd: not an RTT
    out += '?';
    return;
  }
  const auto us = static_cast<std::uint64_t>(ns / 1e3 + 0.5);
  char buf[24];
  char* end = std::to_chars(buf, buf + sizeof buf, us / 1000).ptr;
  const auto frac = static_cast<unsigned>(us % 1000);
  *end++ = '.';
  *end++ = static_cast<char>('0' + frac / 100);
  *end++ = static_cast<char>('0' + frac / 10 % 10);
  *end++ = static_cast<char>('0' + frac % 10);
  out.append(buf, end);
}
inline std::string format_ms(double ns) {
  std::string s;
  append_ms(s, ns);
  return s;
}

}  // namespace detail

/// Counters of the shared ICMP sockets of `ctx` (all zero when no icmp probe ran on it). Call
/// from the io_context's thread.
inline icmp_stats icmp_socket_stats(asio::io_context& ctx) {
  if (!asio::has_service<detail::icmp_service>(ctx)) return {};
  return asio::use_service<detail::icmp_service>(ctx).stats();
}

/// ICMP echo checker. Thread safety: an icmp_probe may run any number of times concurrently on
/// one io_context; that io_context must be run by one thread (the shared sockets are not
/// synchronised).
class icmp_probe {
 public:
  static constexpr std::string_view kind = "icmp";
  static constexpr std::string_view summary =
      "ICMP echo (ping): round-trip times, loss and jitter over IPv4 or IPv6";
  static constexpr std::string_view target_form = "host or IP address";
  static constexpr port_rule target_ports = port_rule::forbidden;
  static constexpr std::uint16_t default_port = 0;

  /// Longest send schedule ((count - 1) x packet_interval) a run may have.
  static constexpr duration max_schedule = std::chrono::hours(1);

  /// Options, with their defaults.
  struct options {
    std::int64_t count = 3;                                     ///< echo requests per run, 1-1000
    duration packet_interval = std::chrono::milliseconds(200);  ///< between requests, >= 1ms
    std::int64_t size = 56;       ///< payload bytes, 16-65000 (cookie + send time + pattern)
    std::int64_t ttl = 64;        ///< IPv4 TTL / IPv6 hop limit, 1-255
    std::string family = "auto";  ///< auto, ipv4, ipv6
    duration timeout{0};  ///< the run's timeout when known (the engine passes it); 0 = unknown
  };

  static constexpr option_spec option_table[] = {
      {"count", option_type::integer, "3", "Echo requests per run (1-1000)"},
      {"packet_interval", option_type::duration, "200ms",
       "Time between echo requests (at least 1ms); (count-1) x packet_interval must be shorter "
       "than the timeout"},
      {"size", option_type::integer, "56",
       "Payload bytes per request (16-65000): a 64-bit cookie, the send time, then a pattern"},
      {"ttl", option_type::integer, "64", "IPv4 time to live / IPv6 hop limit (1-255)"},
      {"family", option_type::string, "auto", "Address family for names: auto, ipv4 or ipv6"},
  };
  static constexpr metric_spec metric_table[] = {
      {"latency", "s", "Average round-trip time (= rtt_avg); absent when no reply came back"},
      {"sent", "count", "Echo requests sent (including those the kernel refused to route)"},
      {"received", "count", "Echo replies received before the deadline"},
      {"loss", "%", "Requests without a reply, percent of sent (0-100)"},
      {"rtt_min", "s", "Shortest round-trip time"},
      {"rtt_avg", "s", "Mean round-trip time"},
      {"rtt_max", "s", "Longest round-trip time"},
      {"jitter", "s",
       "Mean absolute difference of consecutive round-trip times; 0 with fewer than 2 replies"},
  };

  /// Read options from an option_set (types already checked).
  static tl::expected<options, probe_error> options_from(const option_set& set) {
    options o;
    for (auto r : {set.get("count", o.count), set.get("packet_interval", o.packet_interval),
                   set.get("size", o.size), set.get("ttl", o.ttl), set.get("family", o.family),
                   set.get("timeout", o.timeout)})
      if (!r) return tl::unexpected(r.error());
    return o;
  }

  /// Validate options and build the probe. Errors (invalid_option) name the key.
  static tl::expected<icmp_probe, probe_error> make(options o) {
    auto range = [](const char* key, std::int64_t v, std::int64_t lo,
                    std::int64_t hi) -> tl::expected<void, probe_error> {
      if (v >= lo && v <= hi) return {};
      return tl::unexpected(option_error(key, std::string("option '") + key + "' must be " +
                                                  std::to_string(lo) + " to " + std::to_string(hi) +
                                                  ", not " + std::to_string(v)));
    };
    for (auto r : {range("count", o.count, 1, 1000), range("size", o.size, 16, 65000),
                   range("ttl", o.ttl, 1, 255)})
      if (!r) return tl::unexpected(r.error());
    if (o.packet_interval < std::chrono::milliseconds(1))
      return tl::unexpected(
          option_error("packet_interval", "option 'packet_interval' must be at least 1ms, not " +
                                              format_duration(o.packet_interval)));
    if (o.packet_interval * (o.count - 1) > max_schedule || o.packet_interval > max_schedule)
      return tl::unexpected(option_error(
          "packet_interval", "option 'packet_interval': " + std::to_string(o.count) +
                                 " requests every " + format_duration(o.packet_interval) +
                                 " take longer than " + format_duration(max_schedule) +
                                 " to send; lower count or packet_interval"));
    if (o.timeout > duration::zero() && o.packet_interval * (o.count - 1) >= o.timeout)
      return tl::unexpected(option_error(
          "packet_interval", "option 'packet_interval': " + std::to_string(o.count) +
                                 " requests every " + format_duration(o.packet_interval) +
                                 " take " + format_duration(o.packet_interval * (o.count - 1)) +
                                 " to send, not less than the timeout (" +
                                 format_duration(o.timeout) +
                                 "); lower count or packet_interval, or raise the timeout"));
    auto fam = detail::family_option(o.family);
    if (!fam) return tl::unexpected(fam.error());
    icmp_probe p;
    p.family_ = *fam;
    p.opts_ = std::move(o);
    return p;
  }

  const options& opts() const noexcept { return opts_; }

  /// Run once against `t`, finishing by `dl`. Returns an observation for every network
  /// outcome; a probe_error when ICMP sockets are not permitted (permission_denied), the
  /// family is unavailable (unsupported), the send schedule cannot fit before the deadline
  /// (invalid_option, key "packet_interval"), or 65535 requests are already pending on the
  /// shared socket (resource).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
  // GCC 12 false positive: it sees asio's recycling frame allocator (aligned_alloc) inlined into
  // this coroutine and its sized operator delete, and cannot tell they pair up.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
  asio::awaitable<probe_result> run(target t, deadline dl) const {
    using asio::experimental::as_tuple;
    observation obs;
    obs.start = detail::wall_now();
    obs.metrics.reserve(std::size(metric_table));
    const auto t0 = clock::now();
    const auto count = static_cast<std::size_t>(opts_.count);
    const auto interval = opts_.packet_interval;
    const auto schedule = interval * (opts_.count - 1);
    if (count > 1 && schedule >= dl - t0)
      co_return tl::unexpected(option_error(
          "packet_interval",
          "option 'packet_interval': sending " + std::to_string(count) + " requests every " +
              format_duration(interval) + " takes " + format_duration(schedule) +
              ", which does not fit in the timeout (" + format_duration(dl - t0) +
              "); replies are awaited until the timeout, so lower count or packet_interval, or "
              "raise the timeout"));

    auto ex = co_await asio::this_coro::executor;
    asio::ip::address addr;
    if (auto lit = detail::parse_ip_literal(t.host); lit && detail::family_allows(family_, *lit)) {
      addr = *lit;  // the common case needs no resolver coroutine
    } else {
      auto addrs = co_await resolve(t.host, family_, dl);
      if (!addrs) {
        obs.fail(reason::resolve, addrs.error());
        co_return std::move(obs);
      }
      addr = addrs->front();
    }
    if (addr.is_v6() && addr.to_v6().is_v4_mapped())  // ::ffff:a.b.c.d is an IPv4 target
      addr = asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
    const std::string addr_text = detail::address_text(addr);
    auto& svc = asio::use_service<detail::icmp_service>(detail::io_context_of(ex));
    auto chan = svc.channel(addr.is_v6() ? AF_INET6 : AF_INET);
    if (!chan) co_return tl::unexpected(chan.error());
    detail::icmp_channel& ch = **chan;

    detail::icmp_run run(ex);
    run.packets.resize(count);
    run.wire.assign(detail::icmp::header_size + static_cast<std::size_t>(opts_.size), 0);
    detail::icmp::fill_pattern(
        std::span<std::uint8_t>(run.wire).subspan(detail::icmp::header_size));
    run.cookie = svc.next_random();
    run.ttl = static_cast<int>(opts_.ttl);
    if (addr.is_v6()) {
      auto* sa = reinterpret_cast<sockaddr_in6*>(&run.dst);
      sa->sin6_family = AF_INET6;
      const auto b = addr.to_v6().to_bytes();
      std::memcpy(&sa->sin6_addr, b.data(), 16);
      std::memcpy(run.dst_bytes.data(), b.data(), 16);
      sa->sin6_scope_id = addr.to_v6().scope_id();
      run.dst_len = sizeof(sockaddr_in6);
    } else {
      auto* sa = reinterpret_cast<sockaddr_in*>(&run.dst);
      sa->sin_family = AF_INET;
      const auto b = addr.to_v4().to_bytes();
      std::memcpy(&sa->sin_addr, b.data(), 4);
      std::memcpy(run.dst_bytes.data(), b.data(), 4);
      run.dst_len = sizeof(sockaddr_in);
    }
    ch.reserve_rx(run.wire.size());
    detail::icmp_run_scope scope(ch, run);

    std::optional<probe_error> fatal;
    std::size_t next = 0, settled = 0;  // requests sent; of those, settled (read after)
    auto due = clock::now();
    for (;;) {
      auto now = clock::now();
      while (next < count && now >= due && now < dl) {
        const int e = ch.send(run, next);
        if (e == EAGAIN || e == EWOULDBLOCK) {
          // Send queue full: wait until writable, never past the deadline. Rare (cold path).
          using namespace asio::experimental::awaitable_operators;
          run.timer().expires_at(dl);
          co_await (ch.descriptor().async_wait(asio::posix::descriptor_base::wait_write,
                                               as_tuple(asio::use_awaitable)) ||
                    run.timer().async_wait(as_tuple(asio::use_awaitable)));
          now = clock::now();
          continue;
        }
        if (e == detail::icmp_channel::table_full) {
          fatal = probe_error{probe_errc::resource, "",
                              "more than 65535 ICMP echo requests pending on one socket"};
          break;
        }
        if (e != 0) detail::icmp_channel::record_local_failure(run, next, e);
        ++next;
        now = clock::now();
        due += interval;
        if (due + interval <= now) due = now;  // the loop stalled: do not send a burst
      }
      if (next == count) run.all_sent = true;
      if (!fatal && next > settled && !run.complete()) ch.settle(run);
      settled = next;
      if (fatal || run.complete() || now >= dl) break;
      run.timer().expires_at(next < count ? std::min(due, dl) : dl);
      auto [ec] = co_await run.timer().async_wait(as_tuple(asio::use_awaitable));
      if (ec == asio::error::operation_aborted && !run.complete()) {
        auto cs = co_await asio::this_coro::cancellation_state;
        if (cs.cancelled() != asio::cancellation_type::none) {
          fatal = probe_error{probe_errc::cancelled, "", "the ping run was cancelled"};
          break;
        }
      }
    }
    scope.finish();
    if (fatal) co_return tl::unexpected(std::move(*fatal));

    // ---- results --------------------------------------------------------------------------
    std::size_t sent = 0, received = 0;
    std::int64_t rtt_min = 0, rtt_max = 0, prev = -1;
    double rtt_sum = 0, jitter_sum = 0;
    std::size_t jitter_n = 0;
    for (const auto& p : run.packets) {
      if (p.state != detail::icmp_echo_record::unsent) ++sent;
      if (p.state != detail::icmp_echo_record::replied) continue;
      if (received++ == 0) rtt_min = rtt_max = p.rtt_ns;
      rtt_min = std::min(rtt_min, p.rtt_ns);
      rtt_max = std::max(rtt_max, p.rtt_ns);
      rtt_sum += static_cast<double>(p.rtt_ns);
      if (prev >= 0) {
        jitter_sum += static_cast<double>(p.rtt_ns > prev ? p.rtt_ns - prev : prev - p.rtt_ns);
        ++jitter_n;
      }
      prev = p.rtt_ns;
    }
    const double loss =
        sent ? 100.0 * static_cast<double>(sent - received) / static_cast<double>(sent) : 100.0;
    obs.add("sent", static_cast<double>(sent));
    obs.add("received", static_cast<double>(received));
    obs.add("loss", loss);
    const double jitter = jitter_n ? jitter_sum / static_cast<double>(jitter_n) : 0.0;
    // "3/3 replies", formatted without temporaries (every run)
    char counts_buf[64];
    char* ce = std::to_chars(counts_buf, counts_buf + 20, received).ptr;
    *ce++ = '/';
    ce = std::to_chars(ce, ce + 20, sent).ptr;
    std::memcpy(ce, " replies", 8);
    const std::string_view counts(counts_buf, static_cast<std::size_t>(ce + 8 - counts_buf));
    if (received > 0) {
      const double avg = rtt_sum / static_cast<double>(received);
      obs.latency = std::chrono::nanoseconds(static_cast<std::int64_t>(avg));
      obs.add("latency", avg / 1e9);
      obs.add("rtt_min", static_cast<double>(rtt_min) / 1e9);
      obs.add("rtt_avg", avg / 1e9);
      obs.add("rtt_max", static_cast<double>(rtt_max) / 1e9);
      obs.add("jitter", jitter / 1e9);
      // "127.0.0.1: 1/1 replies, rtt min/avg/max 0.031/0.031/0.031 ms", built in place
      std::string& m = obs.message;
      m.reserve(addr_text.size() + counts.size() + 64);
      m.append(addr_text).append(": ").append(counts);
      if (received < sent) {
        char pct[16];
        std::snprintf(pct, sizeof pct, "%.0f%%", loss);
        m.append(" (").append(pct).append(" loss)");
      }
      m.append(", rtt min/avg/max ");
      detail::append_ms(m, static_cast<double>(rtt_min));
      m += '/';
      detail::append_ms(m, avg);
      m += '/';
      detail::append_ms(m, static_cast<double>(rtt_max));
      m.append(" ms");
      co_return std::move(obs);
    }
    obs.set("jitter", 0.0);
    if (run.icmp_errors > 0) {
      obs.fail(reason::unreachable, addr_text + ": " + std::string(counts) + ": " +
                                        std::string(detail::icmp::describe_error(
                                            addr.is_v6() ? 6 : 4, run.error_type, run.error_code)) +
                                        " from " + run.error_from + " (ICMP type " +
                                        std::to_string(run.error_type) + " code " +
                                        std::to_string(run.error_code) + ")");
    } else if (run.local_failures > 0) {
      const int e = run.local_errno;
      // The monitor's own shortage (send queue or socket memory): not the target's fault.
      if (auto x = local_exhaustion_error(e, "sending ICMP echo requests to " + addr_text))
        co_return tl::unexpected(std::move(*x));
      const bool unreachable = e == ENETUNREACH || e == EHOSTUNREACH || e == ENETDOWN ||
                               e == EHOSTDOWN || e == EADDRNOTAVAIL;
      obs.fail(
          unreachable ? reason::unreachable : reason::error,
          addr_text + ": " + std::string(counts) + ": sending failed: " + detail::errno_text(e));
    } else {
      obs.fail(reason::timeout, addr_text + ": " + std::string(counts) + ", no echo reply within " +
                                    format_duration(clock::now() - t0));
    }
    co_return std::move(obs);
  }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

 private:
  icmp_probe() = default;

  options opts_;
  address_family family_ = address_family::any;
};

}  // namespace sonde
