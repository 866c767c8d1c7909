#include <catch2/catch.hpp>

#include <sonde/target.hpp>

using namespace sonde;

TEST_CASE("target: names, IPv4, IPv6 and ports", "[target]") {
  auto t = parse_target("example.com:443", port_rule::required);
  REQUIRE(t);
  CHECK(t->host == "example.com");
  CHECK(t->port == 443);
  CHECK(t->kind == host_kind::name);

  t = parse_target("127.0.0.1", port_rule::forbidden);
  REQUIRE(t);
  CHECK(t->kind == host_kind::ipv4);
  CHECK(t->port == 0);

  t = parse_target("[::1]:53", port_rule::optional, 53);
  REQUIRE(t);
  CHECK(t->host == "::1");
  CHECK(t->kind == host_kind::ipv6);
  CHECK(t->to_string() == "[::1]:53");

  t = parse_target("::1", port_rule::forbidden);
  REQUIRE(t);
  CHECK(t->kind == host_kind::ipv6);

  t = parse_target("fe80::1%lo", port_rule::forbidden);
  REQUIRE(t);
  CHECK(t->host == "fe80::1%lo");

  t = parse_target("ntp.example", port_rule::optional, 123);
  REQUIRE(t);
  CHECK(t->port == 123);
  CHECK(t->to_string() == "ntp.example:123");
}

TEST_CASE("target: malformed targets say what is wrong", "[target]") {
  struct bad {
    const char* text;
    port_rule rule;
    const char* why;
  };
  for (auto b : {bad{"", port_rule::optional, "empty"},
                 bad{"127.0.0.1", port_rule::required, "a port is required"},
                 bad{"127.0.0.1:80", port_rule::forbidden, "without a port"},
                 bad{"host:0", port_rule::required, "port must be 1-65535"},
                 bad{"host:65536", port_rule::required, "port must be 1-65535"},
                 bad{"host:http", port_rule::required, "is not a number"},
                 bad{"[::1", port_rule::required, "missing ']'"},
                 bad{"[::1]x", port_rule::required, "expected ':port'"},
                 bad{"[1.2.3.4]:80", port_rule::required, "is not an IPv6 address"},
                 bad{"300.1.1.1", port_rule::forbidden, "not a valid IPv4 address"},
                 bad{"bad host", port_rule::forbidden, "contains a space"},
                 bad{"a..b", port_rule::forbidden, "empty label"},
                 bad{"http://x", port_rule::forbidden, "contains a space or '/'"},
                 bad{"host:", port_rule::required, "empty port"},
                 bad{"1:2:3", port_rule::forbidden, "not an IPv6 address"}}) {
    auto t = parse_target(b.text, b.rule);
    INFO(b.text);
    REQUIRE_FALSE(t);
    CHECK_THAT(t.error(), Catch::Contains(b.why));
  }
}

TEST_CASE("target: the IPv4 parser accepts exactly what inet_pton accepts", "[target]") {
  auto same = [](const std::string& s) {
    unsigned char ours[4] = {}, libc[4] = {};
    const bool a = sonde::detail::parse_ipv4(s, ours);
    const bool b = inet_pton(AF_INET, s.c_str(), libc) == 1;
    INFO("\"" << s << "\"");
    REQUIRE(a == b);
    if (a) REQUIRE(std::equal(ours, ours + 4, libc));
  };
  for (const char* s : {"127.0.0.1", "0.0.0.0",   "255.255.255.255", "10.1.2.3",   "1.2.3",
                        "1.2.3.4.5", "256.1.1.1", "1.2.3.256",       "01.2.3.4",   "1.2.3.04",
                        "1.2.3.0",   "1..2.3",    ".1.2.3",          "1.2.3.",     "",
                        "1.2.3.4 ",  " 1.2.3.4",  "1.2.3.4x",        "1234.1.1.1", "0x7f.0.0.1",
                        "::1",       "localhost", "999.999.999.999", "1.2.3.-4"})
    same(s);
  // Random strings over the characters that matter.
  std::uint32_t x = 12345;
  const std::string alphabet = "0123456789.0123456789.2559x";
  for (int i = 0; i < 20000; ++i) {
    x = x * 1103515245u + 12345u;
    std::string s;
    for (std::uint32_t n = (x >> 16) % 17, k = 0; k < n; ++k) {
      x = x * 1103515245u + 12345u;
      s += alphabet[(x >> 16) % alphabet.size()];
    }
    same(s);
  }
  // Every octet value, leading zeros included.
  for (int v = 0; v < 1000; ++v) {
    same("10.0.0." + std::to_string(v));
    same("10.0.0.0" + std::to_string(v));
  }
}

TEST_CASE("target: a long invalid target keeps its reason and its echo is shortened", "[target]") {
  const std::string a10k(10'000, 'a');
  struct bad {
    std::string text;
    port_rule rule;
    const char* why;
  };
  for (const auto& b :
       {bad{a10k + ":80", port_rule::required, "host name longer than 253"},
        bad{a10k, port_rule::required, "host name longer than 253"},
        bad{"host:" + a10k, port_rule::required, "is not a number"},
        bad{"[" + a10k, port_rule::required, "missing ']'"},
        bad{"[" + a10k + "]:80", port_rule::required, "is not an IPv6 address"},
        bad{std::string(5000, '1') + ".1", port_rule::forbidden, "is not a valid IPv4 address"},
        bad{a10k + " x", port_rule::forbidden, "contains a space"},
        bad{std::string(3000, ':'), port_rule::forbidden, "not an IPv6 address"}}) {
    auto t = parse_target(b.text, b.rule);
    INFO(b.text.substr(0, 40));
    REQUIRE_FALSE(t);
    CHECK_THAT(t.error(), Catch::Contains(b.why));
    CHECK(t.error().size() < 400);
    CHECK_THAT(t.error(), Catch::Contains("characters)"));  // the echo says it was shortened
  }
}

TEST_CASE("target: quote_input escapes and shortens what it echoes", "[target]") {
  using sonde::detail::quote_input;
  CHECK(quote_input("example.com") == "\"example.com\"");
  CHECK(quote_input("a\"b\\c\n\x01") == "\"a\\\"b\\\\c\\x0a\\x01\"");
  CHECK(quote_input(std::string(100, 'x'), 10) == "\"xxxxxxxxxx...\" (100 characters)");
  CHECK(quote_input(std::string(10, 'x'), 10) == "\"xxxxxxxxxx\"");
  auto t = parse_target(std::string("a\x01") + "b", port_rule::forbidden);
  REQUIRE_FALSE(t);
  CHECK_THAT(t.error(), Catch::Contains("character '\\x01' is not allowed"));
}
