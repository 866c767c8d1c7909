// libFuzzer target: the web server's WebSocket frame codec (engine/src/web/ws_frame.hpp).
// Input: one byte of options (role, small limits, mode), one byte seeding where the input is
// split, then either the bytes of a connection (mode 0) or a payload to frame (mode 1).
// Mode 0 checks that feeding split anywhere (and byte by byte) gives the same messages and the
// same close code as feeding whole; that the parser never holds more than its limits allow and
// `need_more` takes the whole input; that what it yields keeps its promises (text and close
// reasons are UTF-8, close codes valid, control payloads <= 125 bytes, messages within
// max_message); and that every message re-encoded (fragmented, with a ping between fragments,
// masked as the role wants) parses back to itself. Mode 1 frames the payload as binary and,
// when it is UTF-8, as text, and checks the round trip.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "web/ws_frame.hpp"

namespace w = sonde::engine::web;

namespace {

struct outcome {
  std::vector<w::ws_message> messages;
  w::ws_status last = w::ws_status::need_more;
  std::uint16_t code = 0;
};

bool is_utf8(std::string_view s) {
  w::utf8_validator v;
  return v.feed(s) && v.complete();
}

void check_message(const w::ws_message& m, const w::ws_options& opt) {
  switch (m.opcode) {
    case w::ws_opcode::text:
      if (!is_utf8(m.payload)) __builtin_trap();
      [[fallthrough]];
    case w::ws_opcode::binary:
      if (m.payload.size() > opt.max_message) __builtin_trap();
      break;
    case w::ws_opcode::close:
      if (m.close_code != w::ws_close::no_status && !w::ws_valid_close_code(m.close_code))
        __builtin_trap();
      if (m.payload.size() > 123 || !is_utf8(m.payload)) __builtin_trap();
      if (m.close_code == w::ws_close::no_status && !m.payload.empty()) __builtin_trap();
      break;
    case w::ws_opcode::ping:
    case w::ws_opcode::pong:
      if (m.payload.size() > 125) __builtin_trap();
      break;
    default:
      __builtin_trap();  // never continuation
  }
}

outcome run(std::string_view data, const w::ws_options& opt, std::uint32_t seed) {
  w::ws_parser p(opt);
  outcome o;
  const std::size_t bound = opt.max_message + 125 + 14;
  std::size_t off = 0;
  do {
    std::size_t n = data.size() - off;
    if (seed == 1) {
      n = std::min<std::size_t>(n, 1);
    } else if (seed > 1) {
      seed = seed * 1103515245u + 12345u;
      n = std::min<std::size_t>(n, 1 + (seed >> 16) % 32);
    }
    std::string_view piece = data.substr(off, n);
    off += n;
    while (true) {
      auto r = p.feed(piece);
      if (r.consumed > piece.size() || p.buffered_bytes() > bound) __builtin_trap();
      piece.remove_prefix(r.consumed);
      o.last = r.status;
      if (r.status == w::ws_status::error) {
        o.code = p.error_code();
        if (o.code != w::ws_close::protocol_error && o.code != w::ws_close::invalid_payload &&
            o.code != w::ws_close::message_too_big)
          __builtin_trap();
        return o;
      }
      if (r.status == w::ws_status::need_more) {
        if (!piece.empty()) __builtin_trap();
        break;
      }
      check_message(p.message(), opt);
      o.messages.push_back(std::move(p.message()));
      if (piece.empty()) break;
    }
  } while (off < data.size());
  return o;
}

bool same(const w::ws_message& a, const w::ws_message& b) {
  return a.opcode == b.opcode && a.payload == b.payload && a.close_code == b.close_code;
}

void compare(const outcome& a, const outcome& b) {
  if (a.last != b.last || a.code != b.code || a.messages.size() != b.messages.size())
    __builtin_trap();
  for (std::size_t i = 0; i < a.messages.size(); ++i)
    if (!same(a.messages[i], b.messages[i])) __builtin_trap();
}

// Encodes `m` as the peer of a parser with `opt` would: fragments of at most max_frame bytes
// (fewer when `seed` says so), a ping after the first fragment, masked when read by a server.
std::string encode(const w::ws_message& m, const w::ws_options& opt, std::uint32_t seed) {
  w::ws_frame_options fo;
  if (opt.role == w::ws_role::server)
    fo.mask = std::array<std::uint8_t, 4>{static_cast<std::uint8_t>(seed), 0x5a,
                                          static_cast<std::uint8_t>(seed >> 8), 0xc3};
  std::string out;
  if (m.opcode == w::ws_opcode::close) {
    w::ws_encode_close(out, m.close_code, m.payload, fo);
    return out;
  }
  if (m.opcode != w::ws_opcode::text && m.opcode != w::ws_opcode::binary) {
    w::ws_encode_frame(out, m.opcode, m.payload, fo);
    return out;
  }
  std::size_t piece = std::max<std::size_t>(1, m.payload.size() / (1 + seed % 4));
  piece = std::min(piece, std::max<std::size_t>(1, opt.max_frame));
  std::string_view rest(m.payload);
  w::ws_opcode op = m.opcode;
  bool first = true;
  do {
    std::string_view part = rest.substr(0, piece);
    rest.remove_prefix(part.size());
    fo.fin = rest.empty();
    w::ws_encode_frame(out, op, part, fo);
    op = w::ws_opcode::continuation;
    if (first && !rest.empty()) {
      fo.fin = true;
      w::ws_encode_frame(out, w::ws_opcode::ping, "between", fo);
    }
    first = false;
  } while (!rest.empty());
  return out;
}

void round_trip(const w::ws_message& m, const w::ws_options& opt, std::uint32_t seed) {
  const std::string frames = encode(m, opt, seed);
  const outcome back = run(frames, opt, seed | 2);
  if (back.last != w::ws_status::message || back.messages.empty()) __builtin_trap();
  if (!same(back.messages.back(), m)) __builtin_trap();
  for (std::size_t i = 0; i + 1 < back.messages.size(); ++i)
    if (back.messages[i].opcode != w::ws_opcode::ping || back.messages[i].payload != "between")
      __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  w::ws_options opt;
  opt.role = (data[0] & 1) ? w::ws_role::client : w::ws_role::server;
  if (data[0] & 2) {
    opt.max_frame = 24;
    opt.max_message = 64;
  }
  const std::uint32_t seed = data[1];
  const std::string_view in(reinterpret_cast<const char*>(data) + 2, size - 2);

  if (data[0] & 4) {
    // Mode 1: the input is a payload.
    std::string_view payload = in.substr(0, opt.max_message);
    round_trip(w::ws_message{w::ws_opcode::binary, std::string(payload), 0}, opt, seed);
    if (is_utf8(payload))
      round_trip(w::ws_message{w::ws_opcode::text, std::string(payload), 0}, opt, seed);
    return 0;
  }

  const outcome whole = run(in, opt, 0);
  compare(whole, run(in, opt, 2u + seed));
  if (in.size() <= 4096) compare(whole, run(in, opt, 1));
  for (const auto& m : whole.messages) round_trip(m, opt, seed);
  return 0;
}
