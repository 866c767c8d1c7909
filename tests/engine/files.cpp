// Files of the wrong kind where sonde expects a task or state file: directories, FIFOs,
// devices, huge files. Each is refused with a message naming it, without blocking or reading
// without bound.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/config.hpp"
#include "core/files.hpp"

#include "support/files.hpp"

using namespace sonde::engine;
namespace fs = std::filesystem;

TEST_CASE("files: only regular files within the limit are read", "[config]") {
  sonde::test::temp_dir dir;
  auto good = dir.write("good.toml", "x = 1\n");
  auto r = read_regular_file(good, 100, "task file");
  REQUIRE(r);
  CHECK(*r == "x = 1\n");

  auto missing = read_regular_file(dir.path() + "/nope.toml", 100, "task file");
  REQUIRE(!missing);
  CHECK(missing.error().what == file_error::kind::missing);

  auto d = read_regular_file(dir.path(), 100, "task file");
  REQUIRE(!d);
  CHECK(d.error().what == file_error::kind::not_regular);
  CHECK_THAT(d.error().message, Catch::Contains("must be a regular file, and this is a directory"));

  // A FIFO with no writer: a plain open would block forever.
  std::string fifo = dir.path() + "/fifo.toml";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  auto f = read_regular_file(fifo, 100, "task file");
  REQUIRE(!f);
  CHECK_THAT(f.error().message, Catch::Contains("a FIFO"));
  // Where a pipe is allowed (the command line's task file, `sonde run /dev/stdin`), a FIFO
  // without a writer is refused at once instead of hanging the start...
  auto empty = read_regular_file(fifo, 100, "task file", true);
  REQUIRE(!empty);
  CHECK_THAT(empty.error().message, Catch::Contains("delivered nothing"));
  // ...and one with a writer is read, within the limit.
  int w = ::open(fifo.c_str(), O_RDWR);  // a writer that is there before the reader
  REQUIRE(w >= 0);
  std::thread writer([w] {
    // Many small chunks, as a generator writes them (the deadline is for silence, not a sum).
    std::string text = "x\n";
    for (int i = 0; i < 300; ++i) {
      if (i % 100 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      (void)!::write(w, text.data(), text.size());
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    ::close(w);
  });
  auto piped = read_regular_file(fifo, 1000, "task file", true);
  writer.join();
  REQUIRE(piped);
  CHECK(piped->size() == 600);

  // A symbolic link to /dev/zero: a device, refused before a byte is read.
  std::string zero = dir.path() + "/zero.toml";
  fs::create_symlink("/dev/zero", zero);
  auto z = read_regular_file(zero, 100, "task file");
  REQUIRE(!z);
  CHECK_THAT(z.error().message, Catch::Contains("a character device"));

  // Larger than the limit (sparse: no disk used).
  std::string big = dir.path() + "/big.toml";
  { std::ofstream(big) << ""; }
  fs::resize_file(big, max_config_bytes + 1);
  auto b = read_regular_file(big, max_config_bytes, "task file");
  REQUIRE(!b);
  CHECK(b.error().what == file_error::kind::too_large);
  CHECK_THAT(b.error().message, Catch::Contains("more than the limit of 64 MiB"));
}

TEST_CASE("config: a task file that is not a regular file is refused with its path", "[config]") {
  sonde::test::temp_dir dir;
  auto r = read_engine_section(dir.path());
  REQUIRE(!r);
  CHECK_THAT(r.error().front().to_string(),
             Catch::StartsWith(dir.path() + ": error: the task file must be a regular file") &&
                 Catch::Contains("this is a directory"));
  std::string zero = dir.path() + "/zero.toml";
  fs::create_symlink("/dev/zero", zero);
  r = read_engine_section(zero);
  REQUIRE(!r);
  CHECK_THAT(r.error().front().to_string(), Catch::Contains("character device"));
}
