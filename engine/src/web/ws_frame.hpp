#pragma once
/// @file ws_frame.hpp
/// The WebSocket framing of RFC 6455 (section 5) for sonde's web server, without sockets: a
/// parser that takes bytes split anywhere and yields whole messages (fragments reassembled,
/// control frames passed through between fragments, payloads unmasked, text checked as UTF-8
/// as it arrives) or the close code to fail the connection with; and an encoder for frames.
/// Every size is bounded by an option and checked from the frame header, before the payload is
/// buffered. No extensions (RSV bits must be 0). Pure code over bytes, fuzzed
/// (fuzz/ws_frame_fuzz.cpp); no ASIO here (see http_request.hpp).

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sonde::engine::web {

enum class ws_opcode : std::uint8_t {
  continuation = 0x0,
  text = 0x1,
  binary = 0x2,
  close = 0x8,
  ping = 0x9,
  pong = 0xA,
};

/// Close codes (RFC 6455 7.4.1) sonde sends or reads.
namespace ws_close {
inline constexpr std::uint16_t normal = 1000;
inline constexpr std::uint16_t going_away = 1001;
inline constexpr std::uint16_t protocol_error = 1002;
inline constexpr std::uint16_t unsupported_data = 1003;
inline constexpr std::uint16_t no_status = 1005;  ///< never sent: a close frame without a code
inline constexpr std::uint16_t invalid_payload = 1007;  ///< e.g. text that is not UTF-8
inline constexpr std::uint16_t policy_violation = 1008;
inline constexpr std::uint16_t message_too_big = 1009;
inline constexpr std::uint16_t internal_error = 1011;
}  // namespace ws_close

/// True for a code a peer may send in a close frame: 1000-1003, 1007-1014, 3000-4999.
bool ws_valid_close_code(std::uint16_t code);

/// An incremental UTF-8 validator (RFC 3629: no overlong forms, no surrogates, nothing past
/// U+10FFFF). Bytes may be split anywhere between calls.
class utf8_validator {
 public:
  /// False once the bytes so far cannot begin valid UTF-8 (and from then on).
  bool feed(std::string_view bytes);
  /// True when everything fed is valid and no sequence is left unfinished.
  bool complete() const { return !failed_ && need_ == 0; }
  bool failed() const { return failed_; }
  void reset() { *this = utf8_validator{}; }

 private:
  std::uint8_t need_ = 0;               // continuation bytes still expected
  std::uint8_t lo_ = 0x80, hi_ = 0xBF;  // the range of the next continuation byte
  bool failed_ = false;
};

/// Which end the parser reads for: a server reads client frames, which must be masked; a
/// client reads server frames, which must not be.
enum class ws_role { server, client };

struct ws_options {
  std::size_t max_message = 1024 * 1024;  ///< a reassembled message's payload; 1009 past it
  std::size_t max_frame = 1024 * 1024;    ///< one data frame's payload; 1009 past it
  ws_role role = ws_role::server;
};

/// A whole data message or one control frame.
struct ws_message {
  ws_opcode opcode = ws_opcode::text;  ///< text, binary, ping, pong or close (never continuation)
  std::string payload;                 ///< unmasked; for close, the reason (valid UTF-8)
  std::uint16_t close_code = 0;        ///< close only: the code, or ws_close::no_status
};

enum class ws_status { need_more, message, error };

struct ws_result {
  ws_status status = ws_status::need_more;
  std::size_t consumed = 0;  ///< bytes of the input used; feed the rest next
};

/// One connection's frame parser. Feed it what arrives: it consumes bytes up to the end of one
/// message (or control frame) at most. On `message`, `message()` holds it until the next `feed`
/// (move from it freely). On `error`, `error_code()` is the close code to send (1002 protocol
/// error, 1007 invalid UTF-8, 1009 too big) and the parser stays failed. After a close message
/// the caller stops reading. Not thread-safe.
///
/// Refused with 1002: RSV bits set, reserved opcodes, a frame masked the wrong way for the
/// role, a control frame over 125 bytes or fragmented, a continuation with no message begun, a
/// new message before the last one's final fragment, a length not in its shortest form or with
/// the 64-bit length's top bit set, a close frame with a 1-byte payload or an invalid code.
class ws_parser {
 public:
  explicit ws_parser(const ws_options& options = {});

  ws_result feed(std::string_view in);

  ws_message& message() { return out_; }
  const ws_message& message() const { return out_; }
  std::uint16_t error_code() const { return error_code_; }
  std::string_view error_reason() const { return error_reason_; }
  /// Bytes held now: at most max_message + 125 (a control frame between fragments) + 14.
  std::size_t buffered_bytes() const;
  const ws_options& options() const { return options_; }

 private:
  bool fail(std::uint16_t code, std::string_view reason);
  bool on_header_start();  // the first two bytes are in
  bool on_header();        // the whole header is in
  bool on_frame_end();     // returns true when a message is ready in out_

  ws_options options_;
  bool failed_ = false;
  std::uint16_t error_code_ = 0;
  std::string_view error_reason_;

  // the frame being read
  std::array<std::uint8_t, 14> hdr_{};
  std::size_t hdr_len_ = 0;
  std::size_t hdr_need_ = 2;
  bool in_payload_ = false;
  bool fin_ = false;
  ws_opcode op_ = ws_opcode::continuation;
  bool masked_ = false;
  std::array<std::uint8_t, 4> mask_{};
  std::uint64_t remaining_ = 0;
  std::uint64_t frame_pos_ = 0;

  // the data message being reassembled
  bool in_message_ = false;
  ws_opcode msg_op_ = ws_opcode::binary;
  std::string msg_;
  utf8_validator utf8_;

  std::string control_;  // the control frame being read
  ws_message out_;       // what the last feed returned
  bool delivered_ = false;
};

struct ws_frame_options {
  bool fin = true;  ///< false for every fragment but the last
  /// Masking key: clients mask every frame; a server sends none.
  std::optional<std::array<std::uint8_t, 4>> mask;
};

/// Appends one frame, its length in the shortest form (7, 16 or 64 bits). A control frame's
/// payload is cut to 125 bytes.
void ws_encode_frame(std::string& out, ws_opcode opcode, std::string_view payload,
                     const ws_frame_options& options = {});
std::string ws_encode_frame(ws_opcode opcode, std::string_view payload,
                            const ws_frame_options& options = {});

/// Appends a close frame: the code and the reason cut to 123 bytes at a UTF-8 character
/// boundary; with ws_close::no_status, an empty payload.
void ws_encode_close(std::string& out, std::uint16_t code, std::string_view reason = {},
                     const ws_frame_options& options = {});

}  // namespace sonde::engine::web
