#pragma once
/// @file email.hpp
/// The e-mail of the `email` notifier as bytes: addresses, the RFC 5322 header (Date, From,
/// To, Subject in RFC 2047 words when not ASCII, Message-ID from the notification id) and a
/// MIME text/plain UTF-8 body in quoted-printable, CRLF line endings throughout. Pure
/// functions, thread-safe. Dot-stuffing is libcurl's job at submission.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <tl/expected.hpp>

namespace sonde::engine::alarms {

/// An address with an optional display name: `Name <user@example.com>` or `user@example.com`.
struct mailbox {
  std::string display;  ///< may be empty; UTF-8
  std::string address;  ///< user@domain, ASCII
};

/// Parse `user@example.com`, `Name <user@example.com>` or `"Name" <user@example.com>`.
/// Error: a sentence quoting the input and saying what is expected.
tl::expected<mailbox, std::string> parse_mailbox(std::string_view text);

/// The mailbox as a header field body: `user@example.com`, `"Name" <user@example.com>`, or
/// `=?UTF-8?B?...?= <user@example.com>` for a name that is not ASCII.
std::string format_mailbox(const mailbox& m);

/// RFC 5322 date in UTC: "Thu, 03 Dec 2026 13:33:30 +0000" (no locale involved).
std::string rfc5322_date(std::chrono::system_clock::time_point t);

/// `text` as quoted-printable (RFC 2045): lines end in CRLF, none longer than 76 characters,
/// "=" and bytes outside printable ASCII encoded; LF and CRLF are line breaks.
std::string quoted_printable(std::string_view text);

/// Everything one message needs.
struct email_message {
  mailbox from;
  std::vector<mailbox> to;
  std::string subject;  ///< rendered; made one line and encoded here
  std::string body;     ///< rendered text
  std::uint64_t id = 0;
  std::string id_tag;  ///< stable per message: distinguishes engines sharing a host
  std::string host;    ///< right side of the Message-ID
  bool test = false;
  std::chrono::system_clock::time_point date;
};

/// The whole message: header, blank line, quoted-printable body; CRLF line endings.
std::string compose_email(const email_message& m);

}  // namespace sonde::engine::alarms
