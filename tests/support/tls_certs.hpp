#pragma once
// Test support: TLS certificates made at test time with the `openssl` command, once per test
// run, in a private temporary directory that is removed at exit.
//
//   - a CA ("sonde test CA", EC P-256);
//   - a valid server certificate for DNS:localhost, IP:127.0.0.1 and IP:::1 signed by the CA,
//     valid from an hour ago to 30 days from now;
//   - an expired one with the same names, signed by the CA, valid in January 2020 only
//     (`openssl ca -startdate/-enddate`: `openssl x509 -req -days` cannot date the past);
//   - a self-signed one with the same names.
// Each certificate's notAfter is known exactly, so tests can check tls.cert_expiry.

#include <stdlib.h>
#include <time.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace sonde::test {

/// One certificate with its private key (PEM files) and its notAfter.
struct cert_files {
  std::string cert;  ///< PEM certificate path
  std::string key;   ///< PEM private key path
  std::chrono::system_clock::time_point not_after;
};

/// The certificates of one test run. Paths stay valid until the program exits.
struct test_certs {
  std::string dir;
  std::string ca;  ///< the CA certificate (PEM): use as ca_file
  cert_files valid, expired, self_signed;
};

namespace detail {

/// "YYYYMMDDHHMMSSZ" for `openssl ca -startdate/-enddate`, to the second.
inline std::string asn1_time(std::chrono::system_clock::time_point tp) {
  std::time_t t = std::chrono::system_clock::to_time_t(tp);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d%H%M%SZ", &tm);
  return buf;
}

inline std::chrono::system_clock::time_point utc(int y, unsigned m, unsigned d) {
  return std::chrono::sys_days{std::chrono::year{y} / m / d};
}

/// Runs `cmd` in `dir`, output to `dir/openssl.log`; throws with that output on failure.
inline void run_in(const std::string& dir, const std::string& cmd) {
  std::string full = "cd '" + dir + "' && " + cmd + " >>openssl.log 2>&1";
  if (std::system(full.c_str()) != 0) {
    std::ifstream log(dir + "/openssl.log");
    std::stringstream ss;
    ss << log.rdbuf();
    throw std::runtime_error("certificate generation failed: " + cmd + "\n" + ss.str());
  }
}

/// Owns the temporary directory; removes it at program exit.
struct cert_dir {
  test_certs certs;
  cert_dir() {
    namespace fs = std::filesystem;
    std::string tmpl = (fs::temp_directory_path() / "sonde-tls-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed for " + tmpl);
    certs.dir = tmpl;
    const std::string& d = certs.dir;
    std::ofstream(d + "/index.txt").close();
    std::ofstream(d + "/serial") << "1000\n";
    std::ofstream(d + "/openssl.cnf") << "[ ca ]\n"
                                         "default_ca = test_ca\n"
                                         "[ test_ca ]\n"
                                         "dir = "
                                      << d
                                      << "\n"
                                         "database = $dir/index.txt\n"
                                         "new_certs_dir = $dir\n"
                                         "serial = $dir/serial\n"
                                         "certificate = $dir/ca.pem\n"
                                         "private_key = $dir/ca.key\n"
                                         "default_md = sha256\n"
                                         "policy = policy_any\n"
                                         "unique_subject = no\n"
                                         "copy_extensions = none\n"
                                         "[ policy_any ]\n"
                                         "commonName = supplied\n"
                                         "[ req ]\n"
                                         "distinguished_name = req_dn\n"
                                         "prompt = no\n"
                                         "[ req_dn ]\n"
                                         "CN = placeholder\n"
                                         "[ v3_ca ]\n"
                                         "basicConstraints = critical,CA:TRUE\n"
                                         "keyUsage = critical,keyCertSign,cRLSign\n"
                                         "subjectKeyIdentifier = hash\n"
                                         "[ server ]\n"
                                         "basicConstraints = CA:FALSE\n"
                                         "keyUsage = critical,digitalSignature\n"
                                         "extendedKeyUsage = serverAuth\n"
                                         "subjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1\n"
                                         "subjectKeyIdentifier = hash\n"
                                         "authorityKeyIdentifier = keyid\n";
    const std::string newkey =
        " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -config openssl.cnf";
    run_in(d, "openssl req -x509 -new" + newkey +
                  " -keyout ca.key -out ca.pem -days 3650 -subj '/CN=sonde test CA'"
                  " -extensions v3_ca");
    certs.ca = d + "/ca.pem";

    auto signed_by_ca = [&](const std::string& name, std::chrono::system_clock::time_point from,
                            std::chrono::system_clock::time_point to) {
      run_in(d, "openssl req -new" + newkey + " -keyout " + name + ".key -out " + name +
                    ".csr -subj /CN=localhost");
      run_in(d, "openssl ca -config openssl.cnf -batch -notext -in " + name + ".csr -out " + name +
                    ".pem -extensions server -startdate " + asn1_time(from) + " -enddate " +
                    asn1_time(to));
      return cert_files{d + "/" + name + ".pem", d + "/" + name + ".key",
                        std::chrono::time_point_cast<std::chrono::seconds>(to)};
    };
    auto now = std::chrono::system_clock::now();
    certs.valid = signed_by_ca("valid", now - std::chrono::hours(1), now + std::chrono::days(30));
    certs.expired = signed_by_ca("expired", utc(2020, 1, 1), utc(2020, 2, 1));

    // `req -x509 -days` counts from now; read nothing back, the lifetime is 30 days +- seconds.
    auto before = std::chrono::system_clock::now();
    run_in(d, "openssl req -x509 -new" + newkey +
                  " -keyout self.key -out self.pem -days 30 -subj /CN=localhost"
                  " -extensions server");
    certs.self_signed = cert_files{
        d + "/self.pem", d + "/self.key",
        std::chrono::time_point_cast<std::chrono::seconds>(before + std::chrono::days(30))};
  }
  ~cert_dir() {
    std::error_code ec;
    std::filesystem::remove_all(certs.dir, ec);
  }
  cert_dir(const cert_dir&) = delete;
  cert_dir& operator=(const cert_dir&) = delete;
};

}  // namespace detail

/// The certificates, made on first use (thread-safe); throws std::runtime_error with
/// openssl's output when the `openssl` command fails.
inline const test_certs& tls_certs() {
  static detail::cert_dir dir;
  return dir.certs;
}

}  // namespace sonde::test
