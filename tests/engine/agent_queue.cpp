// The agent's on-disk queue: order, acks, restarts, torn tails, the bound, hostile files.
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "agents/agent.hpp"
#include "agents/agent_queue.hpp"

#include "support/files.hpp"

using namespace sonde::engine;
namespace fs = std::filesystem;

namespace {

std::unique_ptr<agent_queue> open_q(const std::string& dir, agent_queue_options o = {},
                                    std::vector<std::string>* warnings = nullptr) {
  auto q = agent_queue::open(dir, o, [warnings](const std::string& w) {
    if (warnings) warnings->push_back(w);
  });
  if (!q) FAIL(q.error());
  return std::move(*q);
}

std::vector<std::uint64_t> seqs(const agent_queue& q, std::size_t n = 1000000) {
  std::vector<std::uint64_t> out;
  auto p = q.peek(n);
  REQUIRE(p);
  for (auto& r : *p) out.push_back(r.seq);
  return out;
}

std::vector<std::string> segment_files(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("seg-", 0) == 0) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("agent_queue: pushes keep their order and acks forget the prefix", "[agent_queue]") {
  sonde::test::temp_dir d;
  auto q = open_q(d.path() + "/q");
  for (int i = 1; i <= 10; ++i) {
    auto s = q->push("{\"i\":" + std::to_string(i) + "}");
    REQUIRE(s);
    CHECK(*s == static_cast<std::uint64_t>(i));
  }
  auto p = q->peek(3);
  REQUIRE(p);
  REQUIRE(p->size() == 3);
  CHECK((*p)[0].seq == 1);
  CHECK((*p)[0].payload == "{\"i\":1}");
  CHECK((*p)[2].payload == "{\"i\":3}");
  REQUIRE(q->ack(4));
  CHECK(q->size() == 6);
  CHECK(seqs(*q).front() == 5);
  CHECK(q->acked() == 4);
  REQUIRE(q->ack(2));  // an old ack changes nothing
  CHECK(q->size() == 6);
  // peek's byte budget still returns at least one record
  auto one = q->peek(100, 1);
  REQUIRE(one);
  CHECK(one->size() == 1);
  REQUIRE(q->ack(10));
  CHECK(q->size() == 0);
  CHECK(q->bytes() == 0);
  CHECK(*q->push("x") == 11);
}

TEST_CASE("agent_queue: reopening keeps unacked records, numbering and identity", "[agent_queue]") {
  sonde::test::temp_dir d;
  std::string dir = d.path() + "/q", id;
  {
    agent_queue_options o;
    o.segment_bytes = 4096;  // several segments
    auto q = open_q(dir, o);
    id = q->queue_id();
    CHECK(id.size() == 16);
    std::string payload(300, 'p');
    for (int i = 0; i < 50; ++i) REQUIRE(q->push(payload + std::to_string(i)));
    REQUIRE(q->ack(20));
    REQUIRE(q->sync());
    CHECK(segment_files(dir).size() > 2);
  }
  {
    agent_queue_options o;
    o.segment_bytes = 4096;
    auto q = open_q(dir, o);
    CHECK(q->queue_id() == id);
    CHECK(q->size() == 30);
    CHECK(q->acked() == 20);
    auto p = q->peek(1);
    REQUIRE(p);
    CHECK((*p)[0].seq == 21);
    CHECK((*p)[0].payload == std::string(300, 'p') + "20");
    CHECK(*q->push("next") == 51);
    REQUIRE(q->ack(51));
    REQUIRE(q->sync());
    CHECK(segment_files(dir).size() == 1);  // consumed segments are deleted
  }
  {
    auto q = open_q(dir);
    CHECK(q->size() == 0);
    CHECK(q->next_seq() == 52);  // numbers are never reused
  }
}

TEST_CASE("agent_queue: a second agent cannot open the same directory", "[agent_queue]") {
  sonde::test::temp_dir d;
  auto q = open_q(d.path());
  auto q2 = agent_queue::open(d.path());
  REQUIRE_FALSE(q2);
  CHECK_THAT(q2.error(), Catch::Contains("in use by another sonde agent"));
}

TEST_CASE("agent_queue: a torn tail is truncated with a warning naming file and offset",
          "[agent_queue]") {
  sonde::test::temp_dir d;
  std::string dir = d.path() + "/q";
  {
    auto q = open_q(dir);
    for (int i = 0; i < 5; ++i) REQUIRE(q->push("record-" + std::to_string(i)));
    REQUIRE(q->sync());
  }
  auto seg = segment_files(dir).at(0);
  auto size = fs::file_size(seg);
  SECTION("half a record at the end (crash during a write of an unsynced record)") {
    { std::ofstream(seg, std::ios::app | std::ios::binary) << std::string("\x20\x00\x00", 3); }
    std::vector<std::string> w;
    auto q = open_q(dir, {}, &w);
    REQUIRE(w.size() == 1);
    CHECK_THAT(w[0], Catch::Contains(seg) && Catch::Contains("offset " + std::to_string(size)));
    CHECK(q->size() == 5);
    CHECK(q->dropped() == 0);
    CHECK(fs::file_size(seg) == size);
    CHECK(*q->push("more") == 6);
  }
  SECTION("the last synced record damaged: truncated and counted as dropped") {
    fs::resize_file(seg, size - 3);
    std::vector<std::string> w;
    auto q = open_q(dir, {}, &w);
    REQUIRE(w.size() == 2);  // the torn record, and the loss
    CHECK_THAT(w[0], Catch::Contains("torn record"));
    CHECK(q->size() == 4);
    CHECK(q->dropped() == 1);
    CHECK(*q->push("more") == 6);  // 5 may have been sent: never reused
  }
  SECTION("a flipped bit fails the CRC") {
    {
      std::fstream f(seg, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(static_cast<std::streamoff>(size - 2));
      f.put('X');
    }
    std::vector<std::string> w;
    auto q = open_q(dir, {}, &w);
    REQUIRE_FALSE(w.empty());
    CHECK_THAT(w[0], Catch::Contains("CRC mismatch"));
    CHECK(q->size() == 4);
  }
}

TEST_CASE("agent_queue: past the bound the oldest are dropped and counted exactly",
          "[agent_queue]") {
  sonde::test::temp_dir d;
  std::string dir = d.path() + "/q";
  SECTION("by count") {
    {
      agent_queue_options o;
      o.max_records = 10;
      auto q = open_q(dir, o);
      for (int i = 0; i < 25; ++i) REQUIRE(q->push("r" + std::to_string(i)));
      CHECK(q->size() == 10);
      CHECK(q->dropped() == 15);
      CHECK(seqs(*q).front() == 16);
      REQUIRE(q->sync());
    }
    agent_queue_options o;
    o.max_records = 10;
    auto q = open_q(dir, o);
    CHECK(q->dropped() == 15);
    CHECK(seqs(*q) == std::vector<std::uint64_t>{16, 17, 18, 19, 20, 21, 22, 23, 24, 25});
  }
  SECTION("by bytes") {
    agent_queue_options o;
    o.max_bytes = 4096;
    auto q = open_q(dir, o);
    std::string payload(100, 'b');  // 116 bytes framed
    for (int i = 0; i < 100; ++i) REQUIRE(q->push(payload));
    CHECK(q->size() == 4096 / 116);
    CHECK(q->dropped() == 100 - 4096 / 116);
    CHECK(q->bytes() <= 4096);
  }
  SECTION("a lowered bound applies at the next start") {
    {
      auto q = open_q(dir);
      for (int i = 0; i < 20; ++i) REQUIRE(q->push("r"));
      REQUIRE(q->sync());
    }
    agent_queue_options o;
    o.max_records = 5;
    auto q = open_q(dir, o);
    CHECK(q->size() == 5);
    CHECK(q->dropped() == 15);
  }
}

TEST_CASE("agent_queue: hostile or corrupt files give errors, not crashes", "[agent_queue]") {
  sonde::test::temp_dir d;
  std::string dir = d.path() + "/q";
  {
    auto q = open_q(dir);
    for (int i = 0; i < 3; ++i) REQUIRE(q->push("r"));
    REQUIRE(q->sync());
  }
  const std::string id = open_q(dir)->queue_id();
  std::vector<std::string> w;
  SECTION("meta.json is not ours: rebuilt from the segments, same identity") {
    std::ofstream(dir + "/meta.json") << "{\"version\": 7}";
    auto q = open_q(dir, {}, &w);
    REQUIRE_FALSE(w.empty());
    CHECK_THAT(w[0], Catch::Contains("meta.json is damaged") && Catch::Contains("recovered"));
    CHECK(q->queue_id() == id);
    CHECK(seqs(*q) == std::vector<std::uint64_t>{1, 2, 3});
    CHECK(q->next_seq() == 4);
  }
  SECTION("meta.json with inconsistent pointers (a forged ack near 2^64): rebuilt") {
    std::ofstream(dir + "/meta.json")
        << R"({"version":1,"queue_id":"ab","head":1,"acked":18446744073709551615,)"
        << R"("next":18446744073709551615,"dropped":0})";
    auto q = open_q(dir, {}, &w);
    CHECK(q->queue_id() == id);  // the segments' CRC-checked header wins over a damaged file
    CHECK(seqs(*q) == std::vector<std::uint64_t>{1, 2, 3});
    CHECK(*q->push("r") == 4);
  }
  SECTION("a segment with a foreign header is moved aside, nothing is lost") {
    std::ofstream(dir + "/seg-00000000000000000100.q") << "GIF89a.........";
    auto q = open_q(dir, {}, &w);
    REQUIRE(w.size() == 1);
    CHECK_THAT(w[0],
               Catch::Contains("seg-00000000000000000100.q") && Catch::Contains("moved aside"));
    CHECK(fs::exists(dir + "/seg-00000000000000000100.q.bad"));
    CHECK(q->size() == 3);
    CHECK(q->dropped() == 0);
    CHECK(*q->push("r") == 4);
  }
  SECTION("a huge length field") {
    auto seg = segment_files(dir).at(0);
    std::ofstream(seg, std::ios::app | std::ios::binary)
        << std::string("\xff\xff\xff\x7f", 4) << std::string(40, 'z');
    std::vector<std::string> w;
    auto q = open_q(dir, {}, &w);
    REQUIRE(w.size() == 1);
    CHECK_THAT(w[0], Catch::Contains("corrupt record (length"));
    CHECK(q->size() == 3);
  }
  SECTION("random garbage after the header never crashes") {
    std::mt19937 rng(42);
    auto seg = segment_files(dir).at(0);
    for (int round = 0; round < 50; ++round) {
      std::string junk(static_cast<std::size_t>(rng() % 300), '\0');
      for (auto& c : junk) c = static_cast<char>(rng());
      {
        std::ofstream f(seg, std::ios::binary | std::ios::trunc);
        f << "SONDEQ1\n" << junk;
      }
      auto q = agent_queue::open(dir, {}, [](const std::string&) {});
      if (q) {
        auto p = (*q)->peek(100);
        CHECK(p);
        CHECK((*q)->push("after"));
      }
    }
  }
  SECTION("an oversized payload is refused at push") {
    agent_queue_options o;
    o.max_record = 16;
    auto q = open_q(dir, o);
    CHECK_FALSE(q->push(std::string(17, 'x')));
    CHECK(q->push(std::string(16, 'x')));
  }
}

namespace {
// Offset of record `k` (1-based) in the first segment of a fresh queue whose records all have
// payloads of `len` bytes: the v2 header is 76 bytes, each record 16 + len.
std::streamoff record_offset(int k, std::size_t len) {
  return static_cast<std::streamoff>(76 + static_cast<std::size_t>(k - 1) * (16 + len));
}
void flip_byte(const std::string& file, std::streamoff at) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(at);
  char c = 0;
  f.get(c);
  f.seekp(at);
  f.put(static_cast<char>(c ^ 0x5a));
}
std::vector<std::uint64_t> range(std::uint64_t from, std::uint64_t to) {
  std::vector<std::uint64_t> v;
  for (auto i = from; i <= to; ++i) v.push_back(i);
  return v;
}
}  // namespace

TEST_CASE("agent_queue: damage skips to the next valid record and counts only real losses",
          "[agent_queue]") {
  sonde::test::temp_dir d;
  std::string dir = d.path() + "/q";
  {
    auto q = open_q(dir);
    for (int i = 10; i < 30; ++i) REQUIRE(q->push("record-" + std::to_string(i)));  // 9 bytes
    REQUIRE(q->ack(5));
    REQUIRE(q->sync());
  }
  auto seg = segment_files(dir).at(0);
  std::vector<std::string> w;
  SECTION("a flipped byte in an acknowledged record loses nothing") {
    flip_byte(seg, record_offset(3, 9) + 16 + 2);  // in record 3's payload
    auto q = open_q(dir, {}, &w);
    REQUIRE_FALSE(w.empty());
    CHECK_THAT(w[0], Catch::Contains("CRC mismatch") && Catch::Contains("next valid record"));
    CHECK(seqs(*q) == range(6, 20));
    CHECK(q->dropped() == 0);
  }
  SECTION("a flipped byte in an unacknowledged record loses that record only") {
    flip_byte(seg, record_offset(10, 9) + 16 + 4);
    auto q = open_q(dir, {}, &w);
    auto expect = range(6, 9);
    for (auto s : range(11, 20)) expect.push_back(s);
    CHECK(seqs(*q) == expect);
    CHECK(q->dropped() == 1);
    REQUIRE(q->sync());
    // The next start counts nothing again.
    q.reset();
    w.clear();
    auto q2 = open_q(dir, {}, &w);
    CHECK(q2->dropped() == 1);
    CHECK(q2->size() == 14);
  }
  SECTION("a damaged length field: resynchronised on the next frame") {
    flip_byte(seg, record_offset(12, 9) + 3);  // the top byte of record 12's length
    auto q = open_q(dir, {}, &w);
    CHECK(q->size() == 14);
    CHECK(q->dropped() == 1);
    CHECK(seqs(*q).back() == 20);
    CHECK(*q->push("more") == 21);  // goes to a fresh segment: the damaged one is not appended to
    q.reset();
    auto q2 = open_q(dir, {}, &w);
    CHECK(seqs(*q2).back() == 21);
    CHECK(q2->dropped() == 1);
  }
  SECTION("a damaged segment header: the records are recovered") {
    {
      std::fstream f(seg, std::ios::in | std::ios::out | std::ios::binary);
      f.write("XXXXXXXX", 8);
    }
    auto q = open_q(dir, {}, &w);
    REQUIRE_FALSE(w.empty());
    CHECK_THAT(w[0], Catch::Contains("damaged segment header"));
    CHECK(seqs(*q) == range(6, 20));
    CHECK(q->dropped() == 0);
    CHECK(*q->push("more") == 21);
    q.reset();
    auto q2 = open_q(dir, {}, &w);
    CHECK(seqs(*q2) == range(6, 21));
  }
}

TEST_CASE("agent_queue: a missing meta.json is rebuilt with the same identity", "[agent_queue]") {
  sonde::test::temp_dir d;
  std::string dir = d.path() + "/q", id;
  {
    auto q = open_q(dir);
    id = q->queue_id();
    for (int i = 0; i < 10; ++i) REQUIRE(q->push("r" + std::to_string(i)));
    REQUIRE(q->ack(4));
    REQUIRE(q->sync());
  }
  fs::remove(dir + "/meta.json");
  std::vector<std::string> w;
  auto q = open_q(dir, {}, &w);
  REQUIRE_FALSE(w.empty());
  CHECK_THAT(w[0], Catch::Contains("meta.json is missing") && Catch::Contains(id));
  // Same queue id: the central answers its last seq (4) at hello, the agent acknowledges up
  // to it before sending, so nothing is sent twice although the acknowledged records still in
  // the tail segment are found again.
  CHECK(q->queue_id() == id);
  CHECK(seqs(*q) == range(1, 10));
  REQUIRE(q->ack(4));
  CHECK(seqs(*q) == range(5, 10));
  CHECK(q->dropped() == 0);
  CHECK(q->next_seq() == 11);
  CHECK(fs::exists(dir + "/meta.json"));
}

TEST_CASE("agent_queue: an old-format queue without meta.json is refused with what to do",
          "[agent_queue]") {
  sonde::test::temp_dir d;
  std::string dir = d.path() + "/q";
  fs::create_directories(dir);
  {
    // A version 1 segment (no queue id in its header) holding one record, seq 1.
    std::string payload = "{}";
    std::string rec(16, '\0');
    auto put = [&](std::size_t at, std::uint64_t v, int n) {
      for (int i = 0; i < n; ++i)
        rec[at + static_cast<std::size_t>(i)] = static_cast<char>(v >> (8 * i));
    };
    unsigned char seq[8] = {1, 0, 0, 0, 0, 0, 0, 0};
    put(0, payload.size(), 4);
    put(4, crc32(payload.data(), payload.size(), crc32(seq, 8)), 4);
    put(8, 1, 8);
    std::ofstream(dir + "/seg-00000000000000000001.q", std::ios::binary) << "SONDEQ1\n"
                                                                         << rec << payload;
  }
  auto q = agent_queue::open(dir, {}, [](const std::string&) {});
  REQUIRE_FALSE(q);
  CHECK_THAT(q.error(), Catch::Contains("meta.json is missing") &&
                            Catch::Contains("Restore meta.json") && Catch::Contains("move"));
}

TEST_CASE("agent_queue: stray segment files cause no phantom drops", "[agent_queue]") {
  sonde::test::temp_dir d;
  std::string dir = d.path() + "/q";
  {
    auto q = open_q(dir);
    for (int i = 0; i < 5; ++i) REQUIRE(q->push("r" + std::to_string(i)));
    REQUIRE(q->sync());
  }
  auto seg = segment_files(dir).at(0);
  SECTION("an empty file with a large number") {
    std::ofstream(dir + "/seg-00000000000000100000.q");
  }
  SECTION("a copy of a segment under a larger number") {
    fs::copy_file(seg, dir + "/seg-00000000000000000050.q");
  }
  SECTION("a copy of a segment under a smaller name sorts first") {
    fs::rename(seg, dir + "/seg-00000000000000000002.q");  // records 1..5 in a file named 2
    fs::copy_file(dir + "/seg-00000000000000000002.q", seg);
  }
  std::vector<std::string> w;
  auto q = open_q(dir, {}, &w);
  CHECK(q->dropped() == 0);
  CHECK(q->next_seq() == 6);
  CHECK(seqs(*q) == range(1, 5));
  CHECK(*q->push("r5") == 6);
  REQUIRE(q->sync());
  q.reset();
  auto q2 = open_q(dir, {}, &w);
  CHECK(q2->dropped() == 0);
  INFO(Catch::Detail::stringify(w));
  CHECK(seqs(*q2) == range(1, 6));
}

TEST_CASE("agent_queue: a result that cannot be written is counted and leaves a gap",
          "[agent_queue]") {
  sonde::test::temp_dir d;
  std::string dir = d.path() + "/q";
  int fail = 0;  // writes still to fail
  agent_queue_options o;
  o.fail_write = [&fail] { return fail > 0 ? (--fail, ENOSPC) : 0; };
  {
    auto q = open_q(dir, o);
    REQUIRE(q->push("a"));
    REQUIRE(q->push("b"));
    fail = 3;
    for (int i = 0; i < 3; ++i) {
      auto r = q->push("lost");
      REQUIRE_FALSE(r);
      CHECK_THAT(r.error(), Catch::Contains("No space left on device"));
    }
    CHECK(q->dropped() == 3);
    CHECK(*q->push("c") == 6);  // numbers 3..5 were consumed: the receiver sees the gap
    CHECK(seqs(*q) == std::vector<std::uint64_t>{1, 2, 6});
    REQUIRE(q->sync());
  }
  std::vector<std::string> w;
  auto q = open_q(dir, {}, &w);
  CHECK(q->dropped() == 3);  // counted once, not again as "lost with damaged files"
  CHECK(w.empty());
  CHECK(seqs(*q) == std::vector<std::uint64_t>{1, 2, 6});
}

TEST_CASE("agent_queue: an ack beyond what was written is refused", "[agent_queue]") {
  sonde::test::temp_dir d;
  std::string dir = d.path() + "/q";
  {
    auto q = open_q(dir);
    for (int i = 0; i < 3; ++i) REQUIRE(q->push("r"));
    auto r = q->ack(18446744073709551615ull);
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error(), Catch::Contains("beyond what this queue has written"));
    CHECK_FALSE(q->ack(4));
    CHECK(q->acked() == 0);
    CHECK(q->size() == 3);
    CHECK(q->next_seq() == 4);
    REQUIRE(q->ack(3));
    REQUIRE(q->sync());
  }
  auto q = open_q(dir);  // starts: the pointers were never corrupted
  CHECK(q->next_seq() == 4);
  CHECK(q->acked() == 3);
}

TEST_CASE("agent: --queue-max accepts counts, sizes and both", "[agent_queue]") {
  auto a = parse_queue_max("5");
  REQUIRE(a);
  CHECK(a->max_records == 5);
  CHECK(a->max_bytes == 64ull << 20);
  auto b = parse_queue_max("16MB");
  REQUIRE(b);
  CHECK(b->max_bytes == 16ull << 20);
  CHECK(b->max_records == 100000);
  auto c = parse_queue_max("1000,512KB");
  REQUIRE(c);
  CHECK(c->max_records == 1000);
  CHECK(c->max_bytes == 512ull << 10);
  CHECK_FALSE(parse_queue_max(""));
  CHECK_FALSE(parse_queue_max("0"));
  CHECK_FALSE(parse_queue_max("12XB"));
  CHECK_FALSE(parse_queue_max("5,6"));
  CHECK_FALSE(parse_queue_max("MB"));
}
