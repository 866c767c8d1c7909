#pragma once
/// @file detail/tls.hpp
/// TLS client helpers shared by checkers: a client context, a verify callback that records
/// errors instead of aborting (so certificate facts are readable from expired or untrusted
/// certificates), host-name verification and certificate expiry.

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <asio/ip/address.hpp>
#include <asio/ssl/context.hpp>
#include <asio/ssl/error.hpp>
#include <asio/ssl/stream.hpp>
#include <tl/expected.hpp>

#include "../error.hpp"

namespace sonde::detail {

/// Build a TLS client context that trusts `ca_file` (PEM) or the system store.
inline tl::expected<std::shared_ptr<asio::ssl::context>, probe_error> make_client_tls_context(
    const std::string& ca_file) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  asio::error_code ec;
  if (ca_file.empty()) {
    ctx->set_default_verify_paths(ec);
    // A missing system store is not fatal: verification then fails with a clear reason.
  } else {
    ctx->load_verify_file(ca_file, ec);
    if (ec)
      return tl::unexpected(
          probe_error{probe_errc::invalid_option, "ca_file",
                      "cannot load CA file \"" + ca_file + "\": " + ec.message()});
  }
  ctx->set_verify_mode(asio::ssl::verify_peer);
  return ctx;
}

/// Verification errors recorded during one handshake.
struct tls_verify_state {
  struct failure {
    int depth;
    int code;
  };
  std::vector<failure> errors;
  std::string name;  ///< the name or address verified against (set by prepare_tls)
  /// "certificate has expired (depth 0); hostname mismatch: the certificate is not valid for
  /// \"x.example\" (depth 0)"
  std::string summary() const {
    std::string s;
    for (const auto& e : errors) {
      if (!s.empty()) s += "; ";
      s += X509_verify_cert_error_string(e.code);
      if (e.code == X509_V_ERR_HOSTNAME_MISMATCH || e.code == X509_V_ERR_IP_ADDRESS_MISMATCH)
        s += ": the certificate is not valid for \"" + name + "\"";
      s += " (depth " + std::to_string(e.depth) + ")";
    }
    return s;
  }
};

/// Set SNI, name verification and the recording verify callback on `stream`. Verification
/// never aborts the handshake; the caller judges `vs` afterwards when `verify` is on.
template <class Stream>
void prepare_tls(asio::ssl::stream<Stream>& stream, const std::string& name, bool verify,
                 tls_verify_state& vs) {
  SSL* ssl = stream.native_handle();
  vs.name = name;
  asio::error_code ec;
  (void)asio::ip::make_address(name, ec);
  if (ec) {
    SSL_set_tlsext_host_name(ssl, name.c_str());
    if (verify) SSL_set1_host(ssl, name.c_str());
  } else if (verify) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str());
  }
  stream.set_verify_mode(asio::ssl::verify_peer);
  stream.set_verify_callback([&vs](bool preverified, asio::ssl::verify_context& vc) {
    if (!preverified) {
      X509_STORE_CTX* c = vc.native_handle();
      int code = X509_STORE_CTX_get_error(c);
      int depth = X509_STORE_CTX_get_error_depth(c);
      bool seen = false;
      for (auto& e : vs.errors) seen |= e.code == code && e.depth == depth;
      if (!seen) vs.errors.push_back({depth, code});
    }
    return true;  // record, do not abort: the certificate's facts are still wanted
  });
}

/// Seconds until the peer certificate's notAfter (negative once expired), if there is one.
inline std::optional<double> peer_cert_expiry(SSL* ssl) {
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (!cert) return std::nullopt;
  int days = 0, secs = 0;
  bool ok = ASN1_TIME_diff(&days, &secs, nullptr, X509_get0_notAfter(cert)) == 1;
  X509_free(cert);
  if (!ok) return std::nullopt;
  return static_cast<double>(days) * 86400.0 + secs;
}

/// Whether an OpenSSL error says the peer's bytes are not TLS records at all.
inline bool not_tls_reason(int reason) {
  switch (reason) {
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_UNKNOWN_PROTOCOL:
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
#endif
      return true;
    default:
      return false;
  }
}

/// A readable reason for a failed handshake: OpenSSL's reason string plus verify errors, and a
/// hint when the peer does not seem to speak TLS (it closed, reset, or sent something else).
inline std::string tls_error_text(const asio::error_code& ec, const tls_verify_state& vs) {
  std::string s = ec.message();
  if (ec.category() == asio::error::get_ssl_category()) {
    const auto code = static_cast<unsigned long>(ec.value());
    if (const char* r = ERR_reason_error_string(code)) s = r;
    if (ERR_GET_LIB(code) == ERR_LIB_SSL && not_tls_reason(ERR_GET_REASON(code)))
      s += " (not a TLS server?)";
  } else if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
    s = "connection closed by peer during handshake (not a TLS server?)";
  } else if (ec == asio::error::connection_reset) {
    s = "connection reset by peer during handshake (not a TLS server?)";
  }
  if (!vs.errors.empty()) s += " (" + vs.summary() + ")";
  return s;
}

}  // namespace sonde::detail
