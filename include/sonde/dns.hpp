#pragma once
/// @file dns.hpp
/// dns_probe: ask a DNS server (`host[:port]`, port 53 by default) one question and judge the
/// reply's response code and answers.
///
/// The query carries a random id, the RD flag (option `recursion_desired`) and an EDNS0 OPT
/// record advertising `edns_udp_size` bytes (0: no EDNS). A reply is believed only when its id
/// AND its question (name, type, class) match the query; anything else that arrives on the
/// socket is ignored and the probe keeps waiting until the deadline. Over UDP, a matching reply
/// with the TC (truncated) bit set makes the probe ask again over TCP (`tcp_fallback` = 1).
///
/// Outcomes:
///   - reply with the expected rcode and every `expect_answers` value   -> healthy
///   - other rcode, or an expected answer missing                       -> reason::mismatch
///   - a reply the decoder rejects                                      -> reason::protocol
///   - no matching reply by the deadline                                -> reason::timeout
///   - ICMP port unreachable (UDP) or TCP connection refused            -> reason::refused
/// Metrics: `latency` (s, first send to the judged reply, TCP fallback included), `rcode`,
/// `answer_count`, `tcp_fallback` (0/1).

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <asio/error.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/address.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/udp.hpp>
#include <asio/read.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "detail/dns_message.hpp"
#include "detail/net.hpp"
#include "detail/peer_cache.hpp"
#include "probe.hpp"
#include "resolve.hpp"

namespace sonde {
namespace detail {
/// A random 16-bit DNS message id (per-thread generator seeded from std::random_device).
inline std::uint16_t random_dns_id() {
  thread_local std::mt19937 gen{std::random_device{}()};
  return static_cast<std::uint16_t>(gen() & 0xFFFF);
}
}  // namespace detail

/// DNS query checker.
///
/// @par Thread Safety
/// A dns_probe holds no mutable state: one object may be run any number of times concurrently.
class dns_probe {
 public:
  static constexpr std::string_view kind = "dns";
  static constexpr std::string_view summary =
      "DNS query check: response code, expected answers, UDP with TCP fallback";
  static constexpr std::string_view target_form = "host[:port]";
  static constexpr port_rule target_ports = port_rule::optional;
  static constexpr std::uint16_t default_port = 53;

  /// Most replies ignored (wrong id or question) before the run gives up with reason protocol.
  static constexpr int max_unmatched = 256;
  /// Most characters of the answer list put in the message.
  static constexpr std::size_t max_listed = 600;

  /// Options, with their defaults. `query` is required.
  struct options {
    std::string query;                        ///< the name to look up
    std::string record_type = "A";            ///< A, AAAA, MX, CNAME, TXT, NS, SOA, PTR, SRV, CAA
    std::string transport = "udp";            ///< udp (TCP fallback on TC) or tcp
    std::string expect_rcode = "NOERROR";     ///< rcode name (or number)
    std::vector<std::string> expect_answers;  ///< each must be among the answers
    bool recursion_desired = true;            ///< RD flag
    std::string family = "auto";              ///< auto, ipv4, ipv6 (for a server given by name)
    std::int64_t edns_udp_size = 1232;        ///< EDNS0 UDP size advertised; 0: no EDNS
  };

  static constexpr option_spec option_table[] = {
      {"query", option_type::string, "", "The name to look up (required)"},
      {"record_type", option_type::string, "A",
       "Record type: A, AAAA, MX, CNAME, TXT, NS, SOA, PTR, SRV or CAA (case-insensitive)"},
      {"transport", option_type::string, "udp",
       "udp (retried over TCP when the reply is truncated) or tcp"},
      {"expect_rcode", option_type::string, "NOERROR",
       "Expected response code: NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED...; "
       "another one is reason 'mismatch'"},
      {"expect_answers", option_type::string_list, "",
       "Values that must all be among the answers' data (\"127.0.0.1\", \"10 mail.example.com\"); "
       "reason 'mismatch' naming the first missing one"},
      {"recursion_desired", option_type::boolean, "true", "Set the RD (recursion desired) flag"},
      {"family", option_type::string, "auto",
       "Address family of the server when given by name: auto, ipv4 or ipv6"},
      {"edns_udp_size", option_type::integer, "1232",
       "EDNS0 UDP payload size to advertise (512-65535); 0 sends no OPT record"},
  };
  static constexpr metric_spec metric_table[] = {
      {"latency", "s", "First query sent to the judged reply (TCP fallback included)"},
      {"rcode", "code", "Response code of the reply (NOERROR=0, NXDOMAIN=3, ...)"},
      {"answer_count", "count", "Records in the answer section"},
      {"tcp_fallback", "count", "1 when the UDP reply was truncated and TCP was used, else 0"},
  };
  static constexpr metric_enum metric_enums[] = {
      {"rcode", "NOERROR", 0},  {"rcode", "FORMERR", 1},  {"rcode", "SERVFAIL", 2},
      {"rcode", "NXDOMAIN", 3}, {"rcode", "NOTIMP", 4},   {"rcode", "REFUSED", 5},
      {"rcode", "YXDOMAIN", 6}, {"rcode", "YXRRSET", 7},  {"rcode", "NXRRSET", 8},
      {"rcode", "NOTAUTH", 9},  {"rcode", "NOTZONE", 10}, {"rcode", "BADVERS", 16},
  };

  /// Read options from an option_set (types already checked). A missing `query` is an error
  /// naming the key.
  static tl::expected<options, probe_error> options_from(const option_set& set) {
    options o;
    for (auto r : {set.get("query", o.query), set.get("record_type", o.record_type),
                   set.get("transport", o.transport), set.get("expect_rcode", o.expect_rcode),
                   set.get("expect_answers", o.expect_answers),
                   set.get("recursion_desired", o.recursion_desired), set.get("family", o.family),
                   set.get("edns_udp_size", o.edns_udp_size)})
      if (!r) return tl::unexpected(r.error());
    if (!set.find("query")) return tl::unexpected(missing_query());
    return o;
  }

  /// Validate options and build the probe. Errors name the bad key.
  static tl::expected<dns_probe, probe_error> make(options o) {
    namespace dns = detail::dns;
    dns_probe p;
    if (o.query.empty()) return tl::unexpected(missing_query());
    auto name = dns::canonical_name(o.query);
    if (!name)
      return tl::unexpected(
          option_error("query", "'query' \"" + o.query + "\" is not a valid DNS name (" +
                                    std::string(dns::to_string(name.error())) + ")"));
    p.qname_ = std::move(*name);
    auto qt = dns::parse_type(o.record_type);
    static constexpr std::uint16_t supported[] = {
        dns::type::a,  dns::type::aaaa, dns::type::mx,  dns::type::cname, dns::type::txt,
        dns::type::ns, dns::type::soa,  dns::type::ptr, dns::type::srv,   dns::type::caa};
    if (!qt || std::find(std::begin(supported), std::end(supported), *qt) == std::end(supported))
      return tl::unexpected(
          option_error("record_type",
                       "record_type must be one of A, AAAA, MX, CNAME, TXT, NS, SOA, PTR, SRV, "
                       "CAA, not \"" +
                           o.record_type + "\""));
    p.qtype_ = *qt;
    if (o.transport == "udp" || o.transport == "UDP") {
      p.tcp_only_ = false;
    } else if (o.transport == "tcp" || o.transport == "TCP") {
      p.tcp_only_ = true;
    } else {
      return tl::unexpected(
          option_error("transport", "transport must be udp or tcp, not \"" + o.transport + "\""));
    }
    auto rc = dns::parse_rcode(o.expect_rcode);
    if (!rc)
      return tl::unexpected(
          option_error("expect_rcode",
                       "expect_rcode must be a response code name (NOERROR, NXDOMAIN, "
                       "SERVFAIL, REFUSED...) or number, not \"" +
                           o.expect_rcode + "\""));
    p.expect_rcode_ = *rc;
    for (const auto& v : o.expect_answers) {
      if (v.empty())
        return tl::unexpected(option_error("expect_answers", "expect_answers has an empty value"));
      p.expected_.push_back(normalize(v));
    }
    auto fam = detail::family_option(o.family);
    if (!fam) return tl::unexpected(fam.error());
    p.family_ = *fam;
    if (o.edns_udp_size != 0 && (o.edns_udp_size < 512 || o.edns_udp_size > 65535))
      return tl::unexpected(
          option_error("edns_udp_size", "edns_udp_size must be 0 (no EDNS) or 512 to 65535"));
    p.opts_ = std::move(o);
    return p;
  }

  /// The options the probe was made from.
  const options& opts() const noexcept { return opts_; }
  /// The query name in canonical presentation form ("www.example.test.").
  const std::string& query_name() const noexcept { return qname_; }

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
  // GCC 12 false positive (as in icmp.hpp): it sees asio's recycling frame allocator
  // (aligned_alloc) inlined into these coroutines and cannot pair it with the sized delete.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
  /// Run once against server `t`, finishing by `dl`. Never throws for network conditions; a
  /// socket that cannot be opened is a probe_error (resource or unsupported).
  asio::awaitable<probe_result> run(target t, deadline dl) const {
    observation obs;
    obs.start = detail::wall_now();
    auto addrs = co_await resolve(t.host, family_, dl);
    if (!addrs) {
      obs.fail(reason::resolve, std::move(addrs.error()));
      co_return std::move(obs);
    }
    for (std::size_t i = 0; i < addrs->size(); ++i) {
      const bool last = i + 1 == addrs->size();
      const auto& addr = (*addrs)[i];
      exchange x;
      bool fallback = false;
      if (tcp_only_) {
        x = co_await tcp_exchange(addr, t.port, dl);
      } else {
        x = co_await udp_exchange(addr, t.port, dl);
        if (x.truncated && x.error.empty()) {
          fallback = true;
          const auto first_send = x.t_send;
          x = co_await tcp_exchange(addr, t.port, dl);
          x.t_send = first_send;
        }
      }
      if (x.fatal) co_return tl::unexpected(std::move(*x.fatal));
      obs.set("tcp_fallback", fallback ? 1 : 0);
      if (x.why != reason::none) {
        if (!last && (x.why == reason::refused || x.why == reason::unreachable)) continue;
        if (x.why != reason::timeout && x.t_reply != clock::time_point{})
          obs.latency = x.t_reply - x.t_send;
        obs.fail(x.why, std::move(x.error));
        co_return std::move(obs);
      }
      obs.latency = x.t_reply - x.t_send;
      judge(obs, x.reply);
      co_return std::move(obs);
    }
    obs.fail(reason::error, "no address to query");
    co_return std::move(obs);
  }

  /// Judge a decoded reply into `obs` (rcode, answers, expectations). Public for tests.
  void judge(observation& obs, const detail::dns::message& m) const {
    namespace dns = detail::dns;
    const std::uint16_t rc = m.full_rcode();
    obs.set("rcode", rc);
    obs.set("answer_count", static_cast<double>(m.answers.size()));
    std::string list;
    std::size_t listed = 0;
    for (const auto& rr : m.answers) {
      if (list.size() >= max_listed) break;
      if (!list.empty()) list += "; ";
      list += dns::to_string(rr);
      ++listed;
    }
    if (listed < m.answers.size())
      list += "; ... (" + std::to_string(m.answers.size() - listed) + " more)";
    std::string summary = dns::rcode_name(rc) + ", " + std::to_string(m.answers.size()) +
                          (m.answers.size() == 1 ? " answer" : " answers");
    if (!list.empty()) summary += ": " + list;
    if (rc != expect_rcode_) {
      obs.fail(reason::mismatch, "rcode " + dns::rcode_name(rc) + ", expected " +
                                     dns::rcode_name(expect_rcode_) + " (" + summary + ")");
      return;
    }
    for (std::size_t i = 0; i < expected_.size(); ++i) {
      bool found = std::any_of(m.answers.begin(), m.answers.end(),
                               [&](const auto& rr) { return matches(rr, expected_[i]); });
      if (!found) {
        obs.fail(reason::mismatch,
                 "expected answer \"" + opts_.expect_answers[i] + "\" not found (" + summary + ")");
        return;
      }
    }
    obs.message = std::move(summary);
  }

 private:
  dns_probe() = default;

  /// What one exchange with one server address produced.
  struct exchange {
    reason why = reason::none;  ///< none: `reply` holds the matching reply
    std::string error;          ///< when why != none
    bool truncated = false;     ///< UDP: the matching reply had TC set
    detail::dns::message reply;
    clock::time_point t_send{}, t_reply{};
    std::optional<probe_error> fatal;  ///< the probe could not run (no socket)
  };

  /// What to do with one received message.
  enum class verdict { accept, ignore, malformed };

  static probe_error missing_query() {
    return option_error("query", "option 'query' is required: the name to look up");
  }

  /// Lower case, without a trailing dot, IPv6 addresses canonical: how expected values and
  /// answer data are compared.
  static std::string normalize(std::string_view v) {
    std::string s(v);
    for (auto& c : s)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    if (s.size() > 1 && s.back() == '.' && (s.size() < 2 || s[s.size() - 2] != '\\')) s.pop_back();
    if (s.find(':') != std::string::npos) {
      asio::error_code ec;
      auto a = asio::ip::make_address_v6(s, ec);
      if (!ec) s = a.to_string();
    }
    return s;
  }

  /// Whether answer `rr` shows the (normalized) expected value: its RDATA presentation, the
  /// whole record line, or (TXT) the concatenated text.
  static bool matches(const detail::dns::resource_record& rr, const std::string& want) {
    namespace dns = detail::dns;
    if (normalize(dns::rdata_to_string(rr)) == want) return true;
    if (normalize(dns::to_string(rr)) == want) return true;
    if (auto* txt = std::get_if<dns::txt_data>(&rr.data)) {
      std::string joined;
      for (const auto& s : txt->strings) joined += s;
      if (normalize(joined) == want) return true;
    }
    if (auto* caa = std::get_if<dns::caa_data>(&rr.data)) {
      if (normalize(caa->value) == want) return true;
    }
    return false;
  }

  /// Encode this probe's query with `id` into `out`.
  std::size_t encode(std::span<std::uint8_t> out, std::uint16_t id) const {
    detail::dns::query_spec q;
    q.id = id;
    q.name = qname_;
    q.qtype = qtype_;
    q.recursion_desired = opts_.recursion_desired;
    q.edns_udp_size = static_cast<std::uint16_t>(opts_.edns_udp_size);
    auto n = detail::dns::encode_query(out, q);
    return n ? *n : 0;  // the name was validated by make(); the buffer is large enough
  }

  /// Decide whether `bytes` is the reply to query `id`; on accept (or a truncated reply)
  /// `m` holds it. `err` gets the decoder's complaint for malformed replies.
  verdict classify_reply(std::span<const std::uint8_t> bytes, std::uint16_t id,
                         detail::dns::message& m, bool& tc, std::string& err) const {
    namespace dns = detail::dns;
    auto h = dns::decode_header(bytes);
    if (!h) {
      err = "malformed reply: " + std::string(dns::to_string(h.error())) + " (" +
            std::to_string(bytes.size()) + " bytes)";
      return verdict::malformed;
    }
    if (h->id != id || !h->qr) return verdict::ignore;
    auto d = dns::decode(bytes);
    if (!d) {
      if (h->tc && d.error() == dns::message_errc::truncated) {  // cut short: retry over TCP
        m.hdr = *h;
        tc = true;
        return verdict::accept;
      }
      err = "malformed reply: " + std::string(dns::to_string(d.error()));
      return verdict::malformed;
    }
    if (d->questions.empty()) {
      // Some servers drop the question from error replies (FORMERR, NOTIMP...).
      if (d->full_rcode() == dns::rcode::noerror) return verdict::ignore;
    } else if (d->questions.size() != 1 || !dns::same_name(d->questions[0].name, qname_) ||
               d->questions[0].qtype != qtype_ || d->questions[0].qclass != dns::class_in) {
      return verdict::ignore;
    }
    tc = d->hdr.tc;
    m = std::move(*d);
    return verdict::accept;
  }

  static std::optional<probe_error> socket_error(const asio::error_code& ec, const char* what) {
    if (auto e = detail::local_exhaustion(ec, std::string("opening a ") + what + " socket"))
      return e;
    if (ec == asio::error::address_family_not_supported)
      return probe_error{probe_errc::unsupported, "",
                         std::string("cannot open a ") + what + " socket: " + ec.message()};
    if (ec == asio::error::no_descriptors || ec.value() == ENFILE ||
        ec == asio::error::no_buffer_space || ec == asio::error::no_memory)
      return probe_error{probe_errc::resource, "",
                         std::string("cannot open a ") + what + " socket: " + ec.message()};
    return std::nullopt;
  }

  /// One query over UDP on a connected socket (so ICMP port unreachable is seen).
  asio::awaitable<exchange> udp_exchange(asio::ip::address addr, std::uint16_t port,
                                         deadline dl) const {
    using asio::experimental::as_tuple;
    exchange x;
    auto ex = co_await asio::this_coro::executor;
    asio::ip::udp::endpoint ep(addr, port);
    // The socket of an earlier run that got its answer from this server, or a new one.
    auto& kept = asio::use_service<detail::udp_session_cache>(detail::io_context_of(ex));
    asio::ip::udp::socket sock(ex);
    asio::error_code ec;
    if (auto s = kept.take(ep, detail::udp_session_cache::dns)) {
      sock = std::move(*s);
    } else {
      sock.open(ep.protocol(), ec);
      if (ec) {
        x.fatal = socket_error(ec, "UDP");
        x.why = detail::classify(ec, false);
        x.error = "cannot open a UDP socket: " + ec.message();
        co_return x;
      }
      sock.non_blocking(true, ec);
      if (!ec) sock.connect(ep, ec);  // no traffic: binds the peer so ICMP errors reach us
      if (ec) {
        x.why = detail::classify(ec, false);
        x.error = "cannot send to " + detail::endpoint_text(addr, port) + ": " + ec.message();
        co_return x;
      }
    }
    detail::watchdog dog(ex, dl, [&sock] {
      asio::error_code ignored;
      sock.cancel(ignored);
    });
    const std::uint16_t id = detail::random_dns_id();
    std::array<std::uint8_t, 512> query{};
    const std::size_t qlen = encode(query, id);
    // Sent at once (a non-blocking send), waiting for buffer space only if there is none.
    asio::error_code sec;
    while (true) {
      x.t_send = clock::now();
      sock.send(asio::buffer(query.data(), qlen), 0, sec);
      if (sec != asio::error::would_block || dog.fired()) break;
      (void)co_await sock.async_wait(asio::socket_base::wait_write, as_tuple(asio::use_awaitable));
    }
    if (sec) {
      x.why = detail::classify(sec, dog.fired());
      x.error = x.why == reason::timeout ? "send timed out" : "send failed: " + sec.message();
      co_return x;
    }
    auto buf = std::make_unique_for_overwrite<std::uint8_t[]>(detail::dns::max_message);
    int ignored = 0;
    while (true) {
      auto [rec, n] = co_await sock.async_receive(asio::buffer(buf.get(), detail::dns::max_message),
                                                  as_tuple(asio::use_awaitable));
      x.t_reply = clock::now();
      if (rec) {
        if (dog.fired() || rec == asio::error::operation_aborted) {
          x.why = reason::timeout;
          x.error =
              "no reply from " + detail::endpoint_text(addr, port) + " over UDP by the deadline";
          if (ignored) x.error += " (" + std::to_string(ignored) + " unmatched replies ignored)";
        } else if (rec == asio::error::connection_refused) {
          x.why = reason::refused;
          x.error = "port unreachable (ICMP) at " + detail::endpoint_text(addr, port);
        } else {
          x.why = detail::classify(rec, false);
          x.error = "receive failed: " + rec.message();
        }
        co_return x;
      }
      std::string err;
      auto v = classify_reply(std::span<const std::uint8_t>(buf.get(), n), id, x.reply, x.truncated,
                              err);
      if (v == verdict::accept) {
        dog.disarm();
        kept.give(ep, detail::udp_session_cache::dns, std::move(sock));
        co_return x;
      }
      if (v == verdict::malformed) {
        x.why = reason::protocol;
        x.error = std::move(err);
        co_return x;
      }
      if (++ignored >= max_unmatched) {
        x.why = reason::protocol;
        x.error = std::to_string(ignored) + " replies that do not match the query";
        co_return x;
      }
    }
  }

  /// One query over TCP (RFC 7766 framing: a two-byte length before each message).
  asio::awaitable<exchange> tcp_exchange(asio::ip::address addr, std::uint16_t port,
                                         deadline dl) const {
    using asio::experimental::as_tuple;
    exchange x;
    auto ex = co_await asio::this_coro::executor;
    asio::ip::tcp::endpoint ep(addr, port);
    asio::ip::tcp::socket sock(ex);
    asio::error_code ec;
    sock.open(ep.protocol(), ec);
    if (ec) {
      x.fatal = socket_error(ec, "TCP");
      x.why = detail::classify(ec, false);
      x.error = "cannot open a TCP socket: " + ec.message();
      co_return x;
    }
    struct closer {  // close with RST: no TIME_WAIT left behind by a monitor
      asio::ip::tcp::socket& s;
      ~closer() {
        asio::error_code ignored;
        s.set_option(asio::socket_base::linger(true, 0), ignored);
        s.close(ignored);
      }
    } close_on_exit{sock};
    detail::watchdog dog(ex, dl, [&sock] {
      asio::error_code ignored;
      sock.cancel(ignored);
    });
    const std::uint16_t id = detail::random_dns_id();
    std::array<std::uint8_t, 514> frame{};
    const std::size_t qlen = encode(std::span<std::uint8_t>(frame).subspan(2), id);
    frame[0] = static_cast<std::uint8_t>(qlen >> 8);
    frame[1] = static_cast<std::uint8_t>(qlen);
    x.t_send = clock::now();
    auto [cec] = co_await sock.async_connect(ep, as_tuple(asio::use_awaitable));
    if (cec) {
      x.t_reply = clock::now();
      x.why = detail::classify(cec, dog.fired());
      x.error =
          x.why == reason::timeout
              ? "TCP connect to " + detail::endpoint_text(addr, port) + " timed out"
              : "TCP connect to " + detail::endpoint_text(addr, port) + " failed: " + cec.message();
      co_return x;
    }
    auto [wec, wn] = co_await asio::async_write(sock, asio::buffer(frame.data(), qlen + 2),
                                                as_tuple(asio::use_awaitable));
    (void)wn;
    if (wec) {
      x.why = detail::classify(wec, dog.fired());
      x.error =
          x.why == reason::timeout ? "TCP send timed out" : "TCP send failed: " + wec.message();
      co_return x;
    }
    std::vector<std::uint8_t> buf;
    for (int ignored = 0;; ++ignored) {
      if (ignored >= max_unmatched) {
        x.why = reason::protocol;
        x.error = std::to_string(ignored) + " replies that do not match the query";
        co_return x;
      }
      std::array<std::uint8_t, 2> len{};
      auto [lec, ln] =
          co_await asio::async_read(sock, asio::buffer(len), as_tuple(asio::use_awaitable));
      std::size_t size = (std::size_t{len[0]} << 8) | len[1];
      std::size_t got = 0;
      asio::error_code rec = lec;
      if (!lec) {
        buf.resize(size);
        auto [bec, bn] =
            co_await asio::async_read(sock, asio::buffer(buf), as_tuple(asio::use_awaitable));
        rec = bec;
        got = bn;
      }
      x.t_reply = clock::now();
      if (rec) {
        if (dog.fired() || rec == asio::error::operation_aborted) {
          x.why = reason::timeout;
          x.error =
              "no reply from " + detail::endpoint_text(addr, port) + " over TCP by the deadline";
        } else if (rec == asio::error::eof) {
          x.why = reason::protocol;
          x.error = lec ? (ln == 0 ? "server closed the TCP connection without a reply"
                                   : "TCP reply cut short in its length prefix")
                        : "TCP reply cut short: " + std::to_string(got) + " of " +
                              std::to_string(size) + " bytes";
        } else {
          x.why = detail::classify(rec, false);
          x.error = "TCP receive failed: " + rec.message();
        }
        co_return x;
      }
      std::string err;
      bool tc = false;
      auto v = classify_reply(buf, id, x.reply, tc, err);
      if (v == verdict::accept) co_return x;
      if (v == verdict::malformed) {
        x.why = reason::protocol;
        x.error = std::move(err);
        co_return x;
      }
    }
  }

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

  options opts_;
  std::string qname_;
  std::uint16_t qtype_ = detail::dns::type::a;
  bool tcp_only_ = false;
  std::uint16_t expect_rcode_ = 0;
  std::vector<std::string> expected_;  ///< normalized expect_answers
  address_family family_ = address_family::any;
};

}  // namespace sonde
