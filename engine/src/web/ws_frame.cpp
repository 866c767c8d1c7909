#include "web/ws_frame.hpp"

#include <algorithm>

namespace sonde::engine::web {

namespace {

constexpr bool is_control(ws_opcode op) {
  return (static_cast<std::uint8_t>(op) & 0x8) != 0;
}

constexpr bool known_opcode(std::uint8_t op) {
  return op <= 0x2 || (op >= 0x8 && op <= 0xA);
}

constexpr std::size_t max_control_payload = 125;

}  // namespace

bool ws_valid_close_code(std::uint16_t code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

// --- UTF-8 ---------------------------------------------------------------------------------

bool utf8_validator::feed(std::string_view bytes) {
  if (failed_) return false;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    auto b = static_cast<std::uint8_t>(bytes[i]);
    if (need_ == 0) {
      if (b < 0x80) continue;
      lo_ = 0x80;
      hi_ = 0xBF;
      if (b >= 0xC2 && b <= 0xDF) {
        need_ = 1;
      } else if (b >= 0xE0 && b <= 0xEF) {
        need_ = 2;
        if (b == 0xE0) lo_ = 0xA0;  // overlong
        if (b == 0xED) hi_ = 0x9F;  // surrogates
      } else if (b >= 0xF0 && b <= 0xF4) {
        need_ = 3;
        if (b == 0xF0) lo_ = 0x90;  // overlong
        if (b == 0xF4) hi_ = 0x8F;  // past U+10FFFF
      } else {
        failed_ = true;  // continuation byte, C0, C1, F5..FF
        return false;
      }
    } else {
      if (b < lo_ || b > hi_) {
        failed_ = true;
        return false;
      }
      --need_;
      lo_ = 0x80;
      hi_ = 0xBF;
    }
  }
  return true;
}

// --- parser --------------------------------------------------------------------------------

ws_parser::ws_parser(const ws_options& options) : options_(options) {}

std::size_t ws_parser::buffered_bytes() const {
  return hdr_len_ + msg_.size() + control_.size() + out_.payload.size();
}

bool ws_parser::fail(std::uint16_t code, std::string_view reason) {
  failed_ = true;
  error_code_ = code;
  error_reason_ = reason;
  return false;
}

bool ws_parser::on_header_start() {
  const std::uint8_t b0 = hdr_[0], b1 = hdr_[1];
  if (b0 & 0x70) return fail(ws_close::protocol_error, "reserved bits set");
  const std::uint8_t op = b0 & 0x0F;
  if (!known_opcode(op)) return fail(ws_close::protocol_error, "unknown opcode");
  fin_ = (b0 & 0x80) != 0;
  op_ = static_cast<ws_opcode>(op);
  masked_ = (b1 & 0x80) != 0;
  const std::uint8_t len7 = b1 & 0x7F;
  if (options_.role == ws_role::server && !masked_)
    return fail(ws_close::protocol_error, "unmasked client frame");
  if (options_.role == ws_role::client && masked_)
    return fail(ws_close::protocol_error, "masked server frame");
  if (is_control(op_)) {
    if (!fin_) return fail(ws_close::protocol_error, "fragmented control frame");
    if (len7 > max_control_payload) return fail(ws_close::protocol_error, "control frame too long");
  } else if (op_ == ws_opcode::continuation) {
    if (!in_message_) return fail(ws_close::protocol_error, "continuation without a message");
  } else if (in_message_) {
    return fail(ws_close::protocol_error, "new message inside a fragmented one");
  }
  hdr_need_ = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (masked_ ? 4 : 0);
  return true;
}

bool ws_parser::on_header() {
  const std::uint8_t len7 = hdr_[1] & 0x7F;
  std::size_t at = 2;
  std::uint64_t len = len7;
  if (len7 == 126) {
    len = (std::uint64_t{hdr_[2]} << 8) | hdr_[3];
    at = 4;
    if (len < 126) return fail(ws_close::protocol_error, "length not in its shortest form");
  } else if (len7 == 127) {
    len = 0;
    for (std::size_t i = 2; i < 10; ++i) len = (len << 8) | hdr_[i];
    at = 10;
    if (len >> 63) return fail(ws_close::protocol_error, "64-bit length with the top bit set");
    if (len <= 0xFFFF) return fail(ws_close::protocol_error, "length not in its shortest form");
  }
  if (masked_) std::copy_n(hdr_.begin() + static_cast<std::ptrdiff_t>(at), 4, mask_.begin());
  if (!is_control(op_)) {  // control frames are held to 125 bytes already
    if (len > options_.max_frame) return fail(ws_close::message_too_big, "frame too big");
    if (len > options_.max_message - msg_.size())
      return fail(ws_close::message_too_big, "message too big");
    if (op_ != ws_opcode::continuation) {
      in_message_ = true;
      msg_op_ = op_;
      msg_.clear();
      utf8_.reset();
    }
  } else {
    control_.clear();
  }
  remaining_ = len;
  frame_pos_ = 0;
  return true;
}

bool ws_parser::on_frame_end() {
  if (is_control(op_)) {
    out_.opcode = op_;
    out_.close_code = 0;
    if (op_ == ws_opcode::close) {
      if (control_.size() == 1) return fail(ws_close::protocol_error, "1-byte close payload");
      out_.close_code = ws_close::no_status;
      if (control_.size() >= 2) {
        auto code = static_cast<std::uint16_t>((static_cast<std::uint8_t>(control_[0]) << 8) |
                                               static_cast<std::uint8_t>(control_[1]));
        if (!ws_valid_close_code(code)) return fail(ws_close::protocol_error, "invalid close code");
        utf8_validator v;
        if (!v.feed(std::string_view(control_).substr(2)) || !v.complete())
          return fail(ws_close::invalid_payload, "close reason is not UTF-8");
        out_.close_code = code;
        control_.erase(0, 2);
      }
    }
    out_.payload = std::move(control_);
    control_.clear();
    return true;
  }
  if (!fin_) return false;
  if (msg_op_ == ws_opcode::text && !utf8_.complete())
    return fail(ws_close::invalid_payload, "text message is not UTF-8");
  out_.opcode = msg_op_;
  out_.close_code = 0;
  out_.payload = std::move(msg_);
  msg_.clear();
  in_message_ = false;
  return true;
}

ws_result ws_parser::feed(std::string_view in) {
  if (failed_) return {ws_status::error, 0};
  if (delivered_) {
    out_.payload.clear();
    delivered_ = false;
  }
  std::size_t pos = 0;
  while (true) {
    if (!in_payload_) {
      // Gather the header: two bytes, then the extended length and the mask key.
      while (hdr_len_ < hdr_need_ && pos < in.size())
        hdr_[hdr_len_++] = static_cast<std::uint8_t>(in[pos++]);
      if (hdr_len_ < hdr_need_) return {ws_status::need_more, pos};
      if (hdr_len_ == 2 && !on_header_start()) return {ws_status::error, pos};
      if (hdr_len_ < hdr_need_) continue;  // the header is longer than two bytes
      if (!on_header()) return {ws_status::error, pos};
      hdr_len_ = 0;
      hdr_need_ = 2;
      in_payload_ = true;
    }
    // The payload: unmask into the message or control buffer as it arrives.
    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, in.size() - pos));
    std::string& dst = is_control(op_) ? control_ : msg_;
    const std::size_t old = dst.size();
    dst.append(in.data() + pos, n);
    if (masked_)
      for (std::size_t i = 0; i < n; ++i)
        dst[old + i] = static_cast<char>(dst[old + i] ^ mask_[(frame_pos_ + i) & 3]);
    pos += n;
    remaining_ -= n;
    frame_pos_ += n;
    if (!is_control(op_) && msg_op_ == ws_opcode::text &&
        !utf8_.feed(std::string_view(dst).substr(old))) {
      fail(ws_close::invalid_payload, "text message is not UTF-8");
      return {ws_status::error, pos};
    }
    if (remaining_ > 0) return {ws_status::need_more, pos};
    in_payload_ = false;
    if (on_frame_end()) {
      delivered_ = true;
      return {ws_status::message, pos};
    }
    if (failed_) return {ws_status::error, pos};
  }
}

// --- encoder -------------------------------------------------------------------------------

void ws_encode_frame(std::string& out, ws_opcode opcode, std::string_view payload,
                     const ws_frame_options& options) {
  if (is_control(opcode) && payload.size() > max_control_payload)
    payload = payload.substr(0, max_control_payload);
  const std::uint64_t len = payload.size();
  out.push_back(static_cast<char>((options.fin ? 0x80 : 0) | static_cast<std::uint8_t>(opcode)));
  const std::uint8_t mask_bit = options.mask ? 0x80 : 0;
  if (len < 126) {
    out.push_back(static_cast<char>(mask_bit | len));
  } else if (len <= 0xFFFF) {
    out.push_back(static_cast<char>(mask_bit | 126));
    out.push_back(static_cast<char>(len >> 8));
    out.push_back(static_cast<char>(len & 0xFF));
  } else {
    out.push_back(static_cast<char>(mask_bit | 127));
    for (int shift = 56; shift >= 0; shift -= 8)
      out.push_back(static_cast<char>((len >> shift) & 0xFF));
  }
  if (!options.mask) {
    out.append(payload);
    return;
  }
  const auto& key = *options.mask;
  for (auto k : key) out.push_back(static_cast<char>(k));
  const std::size_t old = out.size();
  out.append(payload);
  for (std::size_t i = 0; i < payload.size(); ++i)
    out[old + i] = static_cast<char>(out[old + i] ^ key[i & 3]);
}

std::string ws_encode_frame(ws_opcode opcode, std::string_view payload,
                            const ws_frame_options& options) {
  std::string out;
  out.reserve(payload.size() + 14);
  ws_encode_frame(out, opcode, payload, options);
  return out;
}

void ws_encode_close(std::string& out, std::uint16_t code, std::string_view reason,
                     const ws_frame_options& options) {
  if (code == ws_close::no_status) {
    ws_encode_frame(out, ws_opcode::close, {}, options);
    return;
  }
  constexpr std::size_t max_reason = max_control_payload - 2;
  if (reason.size() > max_reason) {
    std::size_t cut = max_reason;
    // Do not split a character: back up over continuation bytes.
    while (cut > 0 && (static_cast<std::uint8_t>(reason[cut]) & 0xC0) == 0x80) --cut;
    reason = reason.substr(0, cut);
  }
  char payload[max_control_payload];
  payload[0] = static_cast<char>(code >> 8);
  payload[1] = static_cast<char>(code & 0xFF);
  std::copy(reason.begin(), reason.end(), payload + 2);
  ws_encode_frame(out, ws_opcode::close, std::string_view(payload, reason.size() + 2), options);
}

}  // namespace sonde::engine::web
