// The alarm journal: lines on disk before the callback, batches, atomic rewrites, and loading
// after a crash (a torn last line is ignored, a damaged line counted, not fatal).
#include <catch2/catch.hpp>

#include <fstream>

#include "alarms/journal.hpp"

#include "support/files.hpp"

using namespace sonde::engine::alarms;
using json = nlohmann::json;

namespace {
std::string slurp(const std::string& p) {
  std::ifstream f(p);
  return {std::istreambuf_iterator<char>(f), {}};
}
}  // namespace

TEST_CASE("journal: appended records are on disk when their callback runs", "[alarm][journal]") {
  sonde::test::temp_dir dir;
  const auto path = dir.path() + "/alarms.journal";
  asio::io_context io;
  int saved = 0;
  {
    alarm_journal j(io, {path});
    for (int i = 0; i < 100; ++i)
      j.append(json{{"k", "out"}, {"id", i}}, [&, path, i](bool ok) {
        CHECK(ok);
        // On disk already: the file holds this record.
        CHECK(slurp(path).find("{\"id\":" + std::to_string(i) + ",") != std::string::npos);
        ++saved;
      });
    // The writer thread posts the callbacks: poll the loop until they have all run (5 s at most).
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (saved < 100 && std::chrono::steady_clock::now() < until) {
      io.restart();
      io.run_for(std::chrono::milliseconds(10));
    }
    CHECK(saved == 100);
    auto st = j.get_stats();
    CHECK(st.lines == 100);
    CHECK(st.batches <= 100);
    CHECK(st.errors == 0);
  }
  std::size_t bad = 0;
  auto recs = alarm_journal::load(path, bad);
  REQUIRE(recs);
  CHECK(recs->size() == 100);
  CHECK(bad == 0);
  CHECK((*recs)[99]["id"] == 99);
}

TEST_CASE("journal: a rewrite replaces the file with what is live, later appends follow it",
          "[alarm][journal]") {
  sonde::test::temp_dir dir;
  const auto path = dir.path() + "/alarms.journal";
  asio::io_context io;
  {
    alarm_journal j(io, {path});
    for (int i = 0; i < 10; ++i) j.append(json{{"k", "out"}, {"id", i}});
    j.rewrite({json{{"k", "seq"}, {"notification", 10}}, json{{"k", "out"}, {"id", 7}}});
    j.append(json{{"k", "done"}, {"ids", {7}}});
  }  // the destructor writes what is queued
  std::size_t bad = 0;
  auto recs = alarm_journal::load(path, bad);
  REQUIRE(recs);
  REQUIRE(recs->size() == 3);
  CHECK((*recs)[0]["k"] == "seq");
  CHECK((*recs)[1]["id"] == 7);
  CHECK((*recs)[2]["k"] == "done");
}

TEST_CASE("journal: loading ignores a torn last line and counts damaged ones", "[alarm][journal]") {
  sonde::test::temp_dir dir;
  const auto path = dir.write("alarms.journal",
                              "{\"k\":\"out\",\"id\":1}\nnot json\n[1,2]\n{\"no_kind\":1}\n"
                              "{\"k\":\"done\",\"ids\":[1]}\n{\"k\":\"out\",\"id\":2");
  std::size_t bad = 0;
  auto recs = alarm_journal::load(path, bad);
  REQUIRE(recs);
  CHECK(recs->size() == 2);
  CHECK(bad == 3);
  auto none = alarm_journal::load(dir.path() + "/missing", bad);
  REQUIRE(none);
  CHECK(none->empty());
  auto dirload = alarm_journal::load(dir.path(), bad);
  CHECK_FALSE(dirload);  // a directory is not a journal
}
