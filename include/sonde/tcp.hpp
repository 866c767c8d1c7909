#pragma once
/// @file tcp.hpp
/// tcp_probe: TCP connect check with optional payload exchange and TLS.
///
/// Connects to `host:port` (names resolved asynchronously, addresses tried in order), optionally
/// performs a TLS handshake (certificate facts are read even when verification fails or is
/// off), optionally sends `send` and waits until the reply contains `expect`. Closes with RST
/// (close = "reset", the default: no TIME_WAIT on the monitor) or with close_notify and FIN
/// (close = "graceful").
///
/// Metrics: `latency` (s, whole run), `connect_time` (s), `tls.handshake_time` (s, with tls),
/// `tls.cert_expiry` (s until the peer certificate's notAfter; negative once expired),
/// `reply_bytes` (bytes read while waiting for `expect`).

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>
#include <vector>

#include <asio/buffer.hpp>
#include <asio/connect.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/ssl/context.hpp>
#include <asio/ssl/stream.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "detail/net.hpp"
#include "detail/tls.hpp"
#include "probe.hpp"
#include "resolve.hpp"

namespace sonde {

/// TCP connect / banner / TLS checker. Thread safety: a tcp_probe may be run concurrently on one
/// io_context; distinct io_contexts need distinct probe objects only if TLS is used from
/// several threads at once (the shared SSL_CTX is otherwise thread-safe).
class tcp_probe {
 public:
  static constexpr std::string_view kind = "tcp";
  static constexpr std::string_view summary =
      "TCP connect check with optional send/expect and TLS certificate facts";
  static constexpr std::string_view target_form = "host:port";
  static constexpr port_rule target_ports = port_rule::required;
  static constexpr std::uint16_t default_port = 0;

  /// Options, with their defaults.
  struct options {
    std::string send;                ///< sent after connecting (escapes \r \n \t \0 \\ \xHH)
    std::string expect;              ///< the reply must contain this (same escapes)
    bool tls = false;                ///< TLS handshake after connecting
    bool tls_verify = true;          ///< verify the certificate chain and name
    std::string server_name;         ///< SNI and verification name; default: the target host
    std::string ca_file;             ///< PEM bundle to trust instead of the system store
    std::string family = "auto";     ///< auto, ipv4, ipv6
    std::string close = "reset";     ///< reset (RST, no TIME_WAIT on the monitor) or graceful (FIN)
    std::int64_t max_reply = 65536;  ///< most bytes read while looking for `expect`
  };

  static constexpr option_spec option_table[] = {
      {"send", option_type::string, "",
       "Bytes to send after connecting (escapes: \\r \\n \\t \\0 \\\\ \\xHH)"},
      {"expect", option_type::string, "",
       "Substring the reply must contain (same escapes); reason 'mismatch' otherwise"},
      {"tls", option_type::boolean, "false", "Perform a TLS handshake after connecting"},
      {"tls_verify", option_type::boolean, "true",
       "Verify the certificate chain and host name (reason 'tls' on failure)"},
      {"server_name", option_type::string, "",
       "TLS SNI and name to verify; default: the target host"},
      {"ca_file", option_type::string, "",
       "PEM file of CA certificates to trust instead of the system store"},
      {"family", option_type::string, "auto", "Address family for names: auto, ipv4 or ipv6"},
      {"close", option_type::string, "reset",
       "How to close: reset (RST; leaves no TIME_WAIT on the monitor) or graceful (FIN)"},
      {"max_reply", option_type::integer, "65536", "Most bytes to read while looking for 'expect'"},
  };
  static constexpr metric_spec metric_table[] = {
      {"latency", "s", "Whole run: resolution, connect, TLS and exchange"},
      {"connect_time", "s", "TCP handshake (SYN to established)"},
      {"tls.handshake_time", "s", "TLS handshake, with tls = true"},
      {"tls.cert_expiry", "s", "Time until the peer certificate expires; negative once expired"},
      {"reply_bytes", "bytes", "Bytes read while looking for 'expect'"},
  };

  /// Read options from an option_set (types already checked).
  static tl::expected<options, probe_error> options_from(const option_set& set) {
    options o;
    for (auto r : {set.get("send", o.send), set.get("expect", o.expect), set.get("tls", o.tls),
                   set.get("tls_verify", o.tls_verify), set.get("server_name", o.server_name),
                   set.get("ca_file", o.ca_file), set.get("family", o.family),
                   set.get("close", o.close), set.get("max_reply", o.max_reply)})
      if (!r) return tl::unexpected(r.error());
    return o;
  }

  /// Validate options and build the probe (loads the CA store once when tls is on).
  static tl::expected<tcp_probe, probe_error> make(options o) {
    tcp_probe p;
    auto send = detail::decode_escapes(o.send);
    if (!send) return tl::unexpected(option_error("send", "bad escape sequence in 'send'"));
    auto expect = detail::decode_escapes(o.expect);
    if (!expect) return tl::unexpected(option_error("expect", "bad escape sequence in 'expect'"));
    auto fam = detail::family_option(o.family);
    if (!fam) return tl::unexpected(fam.error());
    if (o.close != "reset" && o.close != "graceful")
      return tl::unexpected(option_error("close", "close must be \"reset\" or \"graceful\""));
    if (o.max_reply < 1 || o.max_reply > (64 << 20))
      return tl::unexpected(option_error("max_reply", "max_reply must be 1 to 67108864"));
    if (!o.tls && (!o.server_name.empty() || !o.ca_file.empty()))
      return tl::unexpected(option_error(o.server_name.empty() ? "ca_file" : "server_name",
                                         "'server_name' and 'ca_file' need tls = true"));
    p.send_ = std::move(*send);
    p.expect_ = std::move(*expect);
    p.family_ = *fam;
    if (o.tls) {
      auto ctx = detail::make_client_tls_context(o.ca_file);
      if (!ctx) return tl::unexpected(ctx.error());
      p.tls_ = std::move(*ctx);
    }
    p.opts_ = std::move(o);
    return p;
  }

  const options& opts() const noexcept { return opts_; }

  /// Run once against `t`, finishing by `dl`. Never throws for network conditions.
  asio::awaitable<probe_result> run(target t, deadline dl) const {
    observation obs;
    obs.start = detail::wall_now();
    const auto t0 = clock::now();
    auto finish = [&](observation& o) -> probe_result {
      if (!o.latency) o.latency = clock::now() - t0;
      return std::move(o);
    };
    auto ex = co_await asio::this_coro::executor;

    auto addrs = co_await resolve(t.host, family_, dl);
    if (!addrs) {
      obs.fail(reason::resolve, addrs.error());
      co_return finish(obs);
    }

    asio::ip::tcp::socket sock(ex);
    // ASIO's socket destructor clears SO_LINGER before closing (so that it never blocks), which
    // would turn close = "reset" into a FIN and leave TIME_WAIT behind: close explicitly on
    // every path instead. A graceful close sends its FIN first, so that unread bytes from the
    // peer (which make close() answer with RST) cannot hide it.
    struct closer {
      asio::ip::tcp::socket& s;
      bool graceful;
      ~closer() {
        asio::error_code ignored;
        if (graceful && s.is_open()) s.shutdown(asio::socket_base::shutdown_send, ignored);
        s.close(ignored);
      }
    } close_on_exit{sock, opts_.close == "graceful"};
    detail::watchdog dog(ex, dl, [&sock] {
      asio::error_code ignored;
      sock.cancel(ignored);
      sock.close(ignored);
    });
    asio::error_code ec;
    asio::ip::tcp::endpoint connected_to;
    clock::time_point c0, c1;
    for (const auto& a : *addrs) {
      asio::ip::tcp::endpoint ep(a, t.port);
      if (sock.is_open()) sock.close(ec);
      c0 = clock::now();
      std::tie(ec) =
          co_await sock.async_connect(ep, asio::experimental::as_tuple(asio::use_awaitable));
      c1 = clock::now();
      if (!ec) {
        connected_to = ep;
        break;
      }
      if (auto e = detail::local_exhaustion(ec, "opening a TCP socket"))
        co_return tl::unexpected(*e);
      if (dog.fired()) break;
    }
    if (ec) {
      auto why = detail::classify(ec, dog.fired());
      obs.fail(why,
               why == reason::timeout ? "connect timed out" : "connect failed: " + ec.message());
      co_return finish(obs);
    }
    obs.set("connect_time", seconds(c1 - c0));
    if (opts_.close == "reset") sock.set_option(asio::socket_base::linger(true, 0), ec);

    if (!tls_) {
      co_await exchange(sock, obs, dog);
    } else {
      asio::ssl::stream<asio::ip::tcp::socket&> stream(sock, *tls_);
      std::string name = opts_.server_name.empty() ? t.host : opts_.server_name;
      detail::tls_verify_state vs;
      detail::prepare_tls(stream, name, opts_.tls_verify, vs);
      auto h0 = clock::now();
      auto [hec] = co_await stream.async_handshake(
          asio::ssl::stream_base::client, asio::experimental::as_tuple(asio::use_awaitable));
      auto h1 = clock::now();
      if (auto expiry = detail::peer_cert_expiry(stream.native_handle()))
        obs.set("tls.cert_expiry", *expiry);
      if (hec) {
        auto why = dog.fired() ? reason::timeout : reason::tls;
        obs.fail(why, why == reason::timeout
                          ? "TLS handshake timed out"
                          : "TLS handshake failed: " + detail::tls_error_text(hec, vs));
        co_return finish(obs);
      }
      obs.set("tls.handshake_time", seconds(h1 - h0));
      if (opts_.tls_verify && !vs.errors.empty())
        obs.fail(reason::tls, "certificate verification failed: " + vs.summary());
      else
        co_await exchange(stream, obs, dog);
      if (opts_.close == "graceful" && !dog.fired()) {
        // Send close_notify, but do not wait for the peer's (a peer may never send it): with
        // the peer's marked as received, SSL_shutdown completes once ours is written.
        obs.latency = clock::now() - t0;
        SSL* ssl = stream.native_handle();
        SSL_set_shutdown(ssl, SSL_get_shutdown(ssl) | SSL_RECEIVED_SHUTDOWN);
        (void)co_await stream.async_shutdown(asio::experimental::as_tuple(asio::use_awaitable));
      }
    }
    dog.disarm();
    if (obs.why == reason::none && obs.message.empty()) {
      obs.message = "connected to " + connected_to.address().to_string() + " port " +
                    std::to_string(connected_to.port());
      if (tls_) obs.message += " (TLS)";
    }
    co_return finish(obs);
  }

 private:
  tcp_probe() = default;

  template <class Stream>
  asio::awaitable<void> exchange(Stream& s, observation& obs, detail::watchdog& dog) const {
    using asio::experimental::as_tuple;
    if (!send_.empty()) {
      auto [ec, n] =
          co_await asio::async_write(s, asio::buffer(send_), as_tuple(asio::use_awaitable));
      if (ec) {
        auto why = detail::classify(ec, dog.fired());
        obs.fail(why, why == reason::timeout ? "send timed out" : "send failed: " + ec.message());
        co_return;
      }
    }
    if (expect_.empty()) co_return;
    std::string reply;
    std::vector<char> buf(4096);
    const auto limit = static_cast<std::size_t>(opts_.max_reply);
    while (reply.size() < limit) {
      auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), as_tuple(asio::use_awaitable));
      reply.append(buf.data(), std::min(n, limit - reply.size()));
      if (reply.find(expect_) != std::string::npos) {
        obs.set("reply_bytes", static_cast<double>(reply.size()));
        obs.message = "reply contains \"" + detail::excerpt(expect_) + "\"";
        co_return;
      }
      if (ec) {
        obs.set("reply_bytes", static_cast<double>(reply.size()));
        if (dog.fired())
          obs.fail(reason::timeout, "timed out waiting for \"" + detail::excerpt(expect_) +
                                        "\"; got \"" + detail::excerpt(reply) + "\"");
        else if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated)
          obs.fail(reason::mismatch, "expected \"" + detail::excerpt(expect_) +
                                         "\", connection closed after \"" + detail::excerpt(reply) +
                                         "\"");
        else
          obs.fail(detail::classify(ec, false), "read failed: " + ec.message());
        co_return;
      }
    }
    obs.set("reply_bytes", static_cast<double>(reply.size()));
    obs.fail(reason::mismatch, "expected \"" + detail::excerpt(expect_) + "\" within " +
                                   std::to_string(limit) + " bytes; got \"" +
                                   detail::excerpt(reply) + "\"");
  }

  options opts_;
  std::string send_, expect_;
  address_family family_ = address_family::any;
  std::shared_ptr<asio::ssl::context> tls_;
};

}  // namespace sonde
