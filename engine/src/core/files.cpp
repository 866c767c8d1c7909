// Defensive reads of files sonde is pointed at. See files.hpp.
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "core/files.hpp"

namespace sonde::engine {

namespace {

const char* kind_of(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO (named pipe)";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  return "not a regular file";
}

std::string size_text(std::uint64_t bytes) {
  if (bytes >= (std::uint64_t{1} << 20) && bytes % (std::uint64_t{1} << 20) == 0)
    return std::to_string(bytes >> 20) + " MiB";
  return std::to_string(bytes) + " bytes";
}

}  // namespace

tl::expected<std::string, file_error> read_regular_file(const std::string& path,
                                                        std::uint64_t max_bytes, const char* what,
                                                        bool allow_pipe) {
  using k = file_error::kind;
  auto fail = [&](k kind, const std::string& why) {
    return tl::unexpected(file_error{kind, why, path + ": " + why});
  };
  // O_NONBLOCK: opening a FIFO without a writer returns at once instead of waiting for one.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    int e = errno;
    return fail(e == ENOENT ? k::missing : k::io,
                std::string("cannot open ") + what + ": " + std::strerror(e));
  }
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } guard{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    return fail(k::io, std::string("cannot read the ") + what + ": " + std::strerror(errno));
  if (allow_pipe && S_ISFIFO(st.st_mode)) {
    // A pipe: read what arrives, within the size limit and a deadline.
    std::string text;
    char buf[65536];
    using clock = std::chrono::steady_clock;
    const auto quiet_limit = std::chrono::milliseconds(pipe_read_timeout_ms);
    auto deadline = clock::now() + quiet_limit;  // reset whenever bytes arrive
    while (true) {
      auto n = ::read(fd, buf, sizeof buf);
      if (n > 0) {
        deadline = clock::now() + quiet_limit;
        text.append(buf, static_cast<std::size_t>(n));
        if (text.size() > max_bytes)
          return fail(k::too_large, std::string("the ") + what + " (a pipe) passed the limit of " +
                                        size_text(max_bytes));
        continue;
      }
      if (n == 0) break;
      if (errno == EINTR) continue;
      if (errno != EAGAIN)
        return fail(k::io, std::string("cannot read the ") + what + ": " + std::strerror(errno));
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
      if (left.count() <= 0)
        return fail(k::io, std::string("the ") + what + " (a pipe) delivered nothing more for " +
                               std::to_string(pipe_read_timeout_ms / 1000) + " s");
      pollfd p{fd, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(left.count()));
    }
    if (text.empty())
      return fail(k::not_regular,
                  std::string("the ") + what +
                      " is a FIFO (named pipe) that delivered nothing (no writer?)");
    return text;
  }
  if (!S_ISREG(st.st_mode))
    return fail(k::not_regular, std::string("the ") + what +
                                    " must be a regular file, and this is " + kind_of(st.st_mode));
  auto size = static_cast<std::uint64_t>(st.st_size);
  if (size > max_bytes)
    return fail(k::too_large, std::string("the ") + what + " is " + size_text(size) +
                                  ", more than the limit of " + size_text(max_bytes));
  // Read to the end, never past the limit (the file may grow while it is read).
  std::string text;
  text.resize(static_cast<std::size_t>(size));
  std::size_t got = 0;
  while (true) {
    if (got == text.size()) {
      if (text.size() >= max_bytes + 1) break;
      text.resize(std::min<std::uint64_t>(max_bytes + 1, text.size() + 65536));
    }
    auto n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return fail(k::io, std::string("cannot read the ") + what + ": " + std::strerror(errno));
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  if (got > max_bytes)
    return fail(k::too_large, std::string("the ") + what + " grew past the limit of " +
                                  size_text(max_bytes) + " while it was read");
  text.resize(got);
  return text;
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    auto n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

int fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = ::fsync(fd);
  ::close(fd);
  return rc;
}

}  // namespace sonde::engine
