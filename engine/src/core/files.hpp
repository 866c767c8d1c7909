#pragma once
/// @file files.hpp
/// Reading the files sonde is pointed at (task files, the state file, journals) defensively: a
/// path may name a directory, a FIFO, a device such as /dev/zero, or a file far larger than any
/// task file. Only regular files within a size limit are read; anything else is refused with a
/// message that names the file and what it is, and never blocks (a FIFO with no writer would
/// hang a plain open).

#include <cstdint>
#include <string>
#include <string_view>

#include <tl/expected.hpp>

namespace sonde::engine {

/// The largest task or state file sonde reads (a 100,000-task file is about 10 MB).
inline constexpr std::uint64_t max_config_bytes = std::uint64_t{64} << 20;

/// Why a file could not be read.
struct file_error {
  enum class kind {
    missing,      ///< no such file (callers may treat this as "empty")
    not_regular,  ///< a directory, FIFO, socket or device
    too_large,    ///< larger than the limit
    io,           ///< open or read failed (permission, I/O error)
  };
  kind what;
  std::string why;      ///< e.g. "the task file must be a regular file, and this is a FIFO"
  std::string message;  ///< "<path>: <why>", ready to show
};

/// How long a pipe may take to deliver a task file (`sonde run /dev/stdin`).
inline constexpr int pipe_read_timeout_ms = 10000;

/// The whole content of `path`, which must be a regular file (symbolic links are followed to
/// what they name) of at most `max_bytes`. `what` names the file's role in messages ("task
/// file"). Opens with O_NONBLOCK so a FIFO cannot hang the caller. With `allow_pipe` a pipe or
/// FIFO is read too (`/dev/stdin`, `<(...)`), within the size limit and pipe_read_timeout_ms;
/// one that delivers nothing (a FIFO without a writer) is refused. Thread-safe.
tl::expected<std::string, file_error> read_regular_file(const std::string& path,
                                                        std::uint64_t max_bytes, const char* what,
                                                        bool allow_pipe = false);

/// Write all of `data` at the descriptor's position (retrying after EINTR and short writes).
/// False with errno set on failure (EIO when write(2) wrote nothing). Thread-safe.
bool write_all(int fd, std::string_view data);

/// fsync a directory, so that entries created, renamed or removed in it are durable. 0, or -1
/// with errno set. Thread-safe.
int fsync_dir(const std::string& dir);

}  // namespace sonde::engine
