// The web server's RFC 6455 frame codec (engine/src/web/ws_frame.hpp): the RFC's example
// frames, fragmentation with control frames between fragments, UTF-8 checked across
// fragments, masking, every protocol error and limit with its close code, splits anywhere.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "web/ws_frame.hpp"

using namespace sonde::engine::web;

namespace {

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int c : b) s.push_back(static_cast<char>(c));
  return s;
}

struct ws_outcome {
  std::vector<ws_message> messages;
  ws_status last = ws_status::need_more;
  std::uint16_t code = 0;
  std::size_t max_buffered = 0;
};

// Feeds `data` in pieces of `step` bytes (0: all at once), collecting every message.
ws_outcome run(std::string_view data, std::size_t step = 0, const ws_options& options = {}) {
  ws_parser p(options);
  ws_outcome o;
  std::size_t off = 0;
  do {
    std::size_t n = step ? std::min(step, data.size() - off) : data.size() - off;
    std::string_view piece = data.substr(off, n);
    off += n;
    while (true) {
      auto r = p.feed(piece);
      o.max_buffered = std::max(o.max_buffered, p.buffered_bytes());
      o.last = r.status;
      piece.remove_prefix(r.consumed);
      if (r.status == ws_status::error) {
        o.code = p.error_code();
        return o;
      }
      if (r.status == ws_status::need_more) {
        REQUIRE(piece.empty());
        break;
      }
      o.messages.push_back(std::move(p.message()));
      if (piece.empty()) break;
    }
  } while (off < data.size());
  return o;
}

ws_options client() {
  ws_options o;
  o.role = ws_role::client;
  return o;
}

const std::array<std::uint8_t, 4> rfc_key = {0x37, 0xfa, 0x21, 0x3d};

std::string masked(ws_opcode op, std::string_view payload, bool fin = true) {
  return ws_encode_frame(op, payload, {.fin = fin, .mask = rfc_key});
}

// The close code `data` fails with (server role unless told), whole and byte by byte.
std::uint16_t error_of(std::string_view data, const ws_options& options = {}) {
  auto whole = run(data, 0, options);
  auto split = run(data, 1, options);
  CHECK(whole.last == split.last);
  CHECK(whole.code == split.code);
  CHECK(whole.messages.size() == split.messages.size());
  return whole.last == ws_status::error ? whole.code : 0;
}

}  // namespace

TEST_CASE("ws: the RFC 6455 section 5.7 examples", "[web][websocket]") {
  const std::string hello_unmasked = bytes({0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f});
  const std::string hello_masked =
      bytes({0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58});
  const std::string hel = bytes({0x01, 0x03, 0x48, 0x65, 0x6c});
  const std::string lo = bytes({0x80, 0x02, 0x6c, 0x6f});
  const std::string ping = bytes({0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f});
  const std::string pong_masked =
      bytes({0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58});

  // The encoder writes exactly these bytes.
  CHECK(ws_encode_frame(ws_opcode::text, "Hello") == hello_unmasked);
  CHECK(masked(ws_opcode::text, "Hello") == hello_masked);
  CHECK(ws_encode_frame(ws_opcode::text, "Hel", {.fin = false, .mask = {}}) == hel);
  CHECK(ws_encode_frame(ws_opcode::continuation, "lo") == lo);
  CHECK(ws_encode_frame(ws_opcode::ping, "Hello") == ping);
  CHECK(masked(ws_opcode::pong, "Hello") == pong_masked);

  // A client reads the unmasked ones, a server the masked ones.
  auto c = run(hello_unmasked + hel + lo + ping, 0, client());
  REQUIRE(c.messages.size() == 3);
  CHECK(c.messages[0].opcode == ws_opcode::text);
  CHECK(c.messages[0].payload == "Hello");
  CHECK(c.messages[1].opcode == ws_opcode::text);
  CHECK(c.messages[1].payload == "Hello");
  CHECK(c.messages[2].opcode == ws_opcode::ping);
  CHECK(c.messages[2].payload == "Hello");
  auto s = run(hello_masked + pong_masked);
  REQUIRE(s.messages.size() == 2);
  CHECK(s.messages[0].payload == "Hello");
  CHECK(s.messages[1].opcode == ws_opcode::pong);
  CHECK(s.messages[1].payload == "Hello");

  // 256 bytes: 16-bit length; 64 KiB: 64-bit length.
  std::string b256(256, '\x5a'), b64k(65536, '\xa5');
  auto f256 = ws_encode_frame(ws_opcode::binary, b256);
  CHECK(f256.substr(0, 4) == bytes({0x82, 0x7E, 0x01, 0x00}));
  auto f64k = ws_encode_frame(ws_opcode::binary, b64k);
  CHECK(f64k.substr(0, 10) == bytes({0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00}));
  auto big = run(f256 + f64k, 0, client());
  REQUIRE(big.messages.size() == 2);
  CHECK(big.messages[0].opcode == ws_opcode::binary);
  CHECK(big.messages[0].payload == b256);
  CHECK(big.messages[1].payload == b64k);
}

TEST_CASE("ws: length forms at their edges", "[web][websocket]") {
  for (std::size_t n : {0, 1, 125, 126, 127, 65535, 65536, 70000}) {
    std::string payload(n, 'x');
    auto f = ws_encode_frame(ws_opcode::binary, payload);
    std::size_t header = n < 126 ? 2 : n <= 65535 ? 4 : 10;
    CHECK(f.size() == header + n);
    auto o = run(masked(ws_opcode::binary, payload), 4093);
    REQUIRE(o.messages.size() == 1);
    CHECK(o.messages[0].payload == payload);
  }
  // Lengths not in their shortest form, and the 64-bit length's top bit.
  CHECK(error_of(bytes({0x82, 0xFE, 0x00, 0x7D, 1, 2, 3, 4})) == ws_close::protocol_error);
  CHECK(error_of(bytes({0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 1, 2, 3, 4})) ==
        ws_close::protocol_error);
  CHECK(error_of(bytes({0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4})) ==
        ws_close::protocol_error);
}

TEST_CASE("ws: fragmentation with a ping between fragments", "[web][websocket]") {
  const std::string stream =
      masked(ws_opcode::text, "Hel", false) + masked(ws_opcode::ping, "are you there") +
      masked(ws_opcode::continuation, "l", false) + masked(ws_opcode::pong, "") +
      masked(ws_opcode::continuation, "o") + masked(ws_opcode::binary, std::string("\0\1\2", 3));
  for (std::size_t step : {0, 1, 2, 3, 5, 7, 11}) {
    auto o = run(stream, step);
    REQUIRE(o.messages.size() == 4);
    CHECK(o.messages[0].opcode == ws_opcode::ping);
    CHECK(o.messages[0].payload == "are you there");
    CHECK(o.messages[1].opcode == ws_opcode::pong);
    CHECK(o.messages[1].payload.empty());
    CHECK(o.messages[2].opcode == ws_opcode::text);
    CHECK(o.messages[2].payload == "Hello");
    CHECK(o.messages[3].opcode == ws_opcode::binary);
    CHECK(o.messages[3].payload == std::string("\0\1\2", 3));
    CHECK(o.last == ws_status::message);
  }
  // A fragment of zero bytes is fine.
  auto z = run(masked(ws_opcode::binary, "", false) + masked(ws_opcode::continuation, "x"));
  REQUIRE(z.messages.size() == 1);
  CHECK(z.messages[0].payload == "x");
}

TEST_CASE("ws: UTF-8 is checked across fragments", "[web][websocket]") {
  // U+20AC (E2 82 AC) split between fragments is valid.
  auto ok = run(masked(ws_opcode::text, "price: \xE2\x82", false) +
                masked(ws_opcode::continuation, "\xAC", false) +
                masked(ws_opcode::continuation, " \xF0\x9F\x98\x80"));
  REQUIRE(ok.messages.size() == 1);
  CHECK(ok.messages[0].payload == "price: \xE2\x82\xAC \xF0\x9F\x98\x80");
  // Invalid once the next fragment comes: refused at that fragment, not at the message's end.
  {
    const std::string first = masked(ws_opcode::text, "ab\xE2\x82", false);
    const std::string second = masked(ws_opcode::continuation, "A", false);
    ws_parser p;
    CHECK(p.feed(first).status == ws_status::need_more);
    auto r = p.feed(second);
    CHECK(r.status == ws_status::error);
    CHECK(p.error_code() == ws_close::invalid_payload);
    CHECK(error_of(first + second) == ws_close::invalid_payload);
  }
  // Cut short by the final fragment.
  CHECK(error_of(masked(ws_opcode::text, "ab", false) +
                 masked(ws_opcode::continuation, "\xF0\x9F\x98")) == ws_close::invalid_payload);
  // Fails fast: the bad byte is seen before the frame's payload is all there.
  {
    ws_parser p;
    std::string f = masked(ws_opcode::text, "\xFF" + std::string(1000, 'a'));
    auto r = p.feed(std::string_view(f).substr(0, 20));
    CHECK(r.status == ws_status::error);
    CHECK(p.error_code() == ws_close::invalid_payload);
  }
  for (const char* bad : {"\xC0\x80", "\xC1\xBF", "\xE0\x80\x80", "\xED\xA0\x80",
                          "\xF4\x90\x80\x80", "\xF5\x80\x80\x80", "\x80", "\xFE"})
    CHECK(error_of(masked(ws_opcode::text, bad)) == ws_close::invalid_payload);
  // Binary messages are not checked.
  CHECK(error_of(masked(ws_opcode::binary, "\xFF\xFE")) == 0);

  utf8_validator v;
  CHECK(v.feed("\xF0\x9F"));
  CHECK_FALSE(v.complete());
  CHECK(v.feed("\x98\x80"));
  CHECK(v.complete());
  CHECK(v.feed("\xED\x9F\xBF\xEE\x80\x80\xF4\x8F\xBF\xBF"));  // U+D7FF, U+E000, U+10FFFF
  CHECK(v.complete());
}

TEST_CASE("ws: protocol errors close with 1002", "[web][websocket]") {
  const auto p = ws_close::protocol_error;
  std::string rsv1 = masked(ws_opcode::text, "x");
  rsv1[0] = static_cast<char>(rsv1[0] | 0x40);
  CHECK(error_of(rsv1) == p);
  std::string rsv3 = masked(ws_opcode::text, "x");
  rsv3[0] = static_cast<char>(rsv3[0] | 0x10);
  CHECK(error_of(rsv3) == p);
  for (int op : {0x3, 0x7, 0xB, 0xF}) {
    std::string f = masked(ws_opcode::binary, "x");
    f[0] = static_cast<char>(0x80 | op);
    CHECK(error_of(f) == p);
  }
  // Masking must match the role.
  CHECK(error_of(ws_encode_frame(ws_opcode::text, "x")) == p);
  CHECK(error_of(masked(ws_opcode::text, "x"), client()) == p);
  // Control frames: at most 125 bytes, never fragmented.
  CHECK(error_of(masked(ws_opcode::ping, std::string(125, 'p'))) == 0);
  std::string long_ping = bytes({0x89, 0xFE, 0x00, 0x7E, 1, 2, 3, 4}) + std::string(126, 'p');
  CHECK(error_of(long_ping) == p);
  std::string frag_ping = masked(ws_opcode::ping, "x");
  frag_ping[0] = static_cast<char>(0x09);
  CHECK(error_of(frag_ping) == p);
  // Continuations need a message, and a message needs its end before the next.
  CHECK(error_of(masked(ws_opcode::continuation, "x")) == p);
  CHECK(error_of(masked(ws_opcode::text, "a", false) + masked(ws_opcode::text, "b")) == p);
  CHECK(error_of(masked(ws_opcode::text, "a", false) + masked(ws_opcode::binary, "b")) == p);
  // The error comes as soon as the first two bytes show it.
  ws_parser early;
  CHECK(early.feed(bytes({0xC1})).status == ws_status::need_more);
  CHECK(early.feed(bytes({0x85})).status == ws_status::error);
  CHECK(early.error_code() == p);
  CHECK_FALSE(early.error_reason().empty());
  CHECK(early.feed(masked(ws_opcode::text, "x")).status == ws_status::error);  // final
}

TEST_CASE("ws: close frames", "[web][websocket]") {
  std::string c;
  ws_encode_close(c, ws_close::normal, "bye", {.fin = true, .mask = rfc_key});
  auto o = run(c);
  REQUIRE(o.messages.size() == 1);
  CHECK(o.messages[0].opcode == ws_opcode::close);
  CHECK(o.messages[0].close_code == 1000);
  CHECK(o.messages[0].payload == "bye");
  auto empty = run(masked(ws_opcode::close, ""));
  REQUIRE(empty.messages.size() == 1);
  CHECK(empty.messages[0].close_code == ws_close::no_status);

  CHECK(error_of(masked(ws_opcode::close, "\x03")) == ws_close::protocol_error);
  for (int code : {0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535}) {
    std::string payload = bytes({code >> 8, code & 0xFF});
    CHECK(error_of(masked(ws_opcode::close, payload)) == ws_close::protocol_error);
  }
  for (int code : {1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999}) {
    std::string payload = bytes({code >> 8, code & 0xFF});
    CHECK(error_of(masked(ws_opcode::close, payload)) == 0);
  }
  CHECK(error_of(masked(ws_opcode::close, bytes({0x03, 0xE8, 0xFF}))) == ws_close::invalid_payload);

  // The encoder: no_status is an empty payload; a long reason is cut at a character boundary.
  std::string none;
  ws_encode_close(none, ws_close::no_status);
  CHECK(none == bytes({0x88, 0x00}));
  std::string reason;
  for (int i = 0; i < 60; ++i) reason += "\xC3\xA9";  // 120 bytes of 'é'
  reason = "ab" + reason;                             // 122: the 62nd 'é' would end at 124
  reason += "\xC3\xA9";
  std::string long_close;
  ws_encode_close(long_close, 1001, reason);
  REQUIRE(long_close.size() == 2 + 2 + 122);
  auto back = run(long_close, 0, client());
  REQUIRE(back.messages.size() == 1);
  CHECK(back.messages[0].payload == reason.substr(0, 122));
  // A control frame's payload is cut to 125 bytes.
  CHECK(ws_encode_frame(ws_opcode::ping, std::string(200, 'p')).size() == 2 + 125);
}

TEST_CASE("ws: message and frame limits close with 1009", "[web][websocket]") {
  ws_options small;
  small.max_frame = 16;
  small.max_message = 40;
  const std::size_t bound = small.max_message + 125 + 14;
  CHECK(error_of(masked(ws_opcode::binary, std::string(16, 'a')), small) == 0);
  CHECK(error_of(masked(ws_opcode::binary, std::string(17, 'a')), small) ==
        ws_close::message_too_big);
  std::string forty = masked(ws_opcode::binary, std::string(16, 'a'), false) +
                      masked(ws_opcode::continuation, std::string(16, 'a'), false) +
                      masked(ws_opcode::ping, std::string(125, 'p')) +
                      masked(ws_opcode::continuation, std::string(8, 'a'));
  auto o = run(forty, 1, small);
  CHECK(o.messages.size() == 2);
  CHECK(o.max_buffered <= bound);
  std::string forty_one = masked(ws_opcode::binary, std::string(16, 'a'), false) +
                          masked(ws_opcode::continuation, std::string(16, 'a'), false) +
                          masked(ws_opcode::continuation, std::string(9, 'a'));
  CHECK(error_of(forty_one, small) == ws_close::message_too_big);
  // Refused from the header: the payload is never buffered.
  ws_parser p(small);
  std::string huge = masked(ws_opcode::binary, std::string(100000, 'a'));
  auto r = p.feed(std::string_view(huge).substr(0, 14));
  CHECK(r.status == ws_status::error);
  CHECK(p.error_code() == ws_close::message_too_big);
  CHECK(p.buffered_bytes() <= 14);
  // The default limit is 1 MiB.
  ws_parser d;
  CHECK(d.feed(bytes({0x82, 0xFF, 0, 0, 0, 0, 0, 0x10, 0, 1, 1, 2, 3, 4})).status ==
        ws_status::error);
  CHECK(d.error_code() == ws_close::message_too_big);
}

TEST_CASE("ws: masking with every offset and a round trip", "[web][websocket]") {
  std::string payload;
  for (int i = 0; i < 300; ++i) payload.push_back(static_cast<char>(i * 7));
  for (std::array<std::uint8_t, 4> key : {std::array<std::uint8_t, 4>{0, 0, 0, 0},
                                          std::array<std::uint8_t, 4>{0xff, 1, 0x80, 0x7f}}) {
    std::string f = ws_encode_frame(ws_opcode::binary, payload, {.fin = true, .mask = key});
    CHECK(f.substr(4, 4) == std::string(key.begin(), key.end()));
    CHECK((f.substr(8) != payload || key[0] == 0));
    for (std::size_t step : {0, 1, 3, 4, 5, 64}) {
      auto o = run(f, step);
      REQUIRE(o.messages.size() == 1);
      CHECK(o.messages[0].payload == payload);
    }
  }
}
