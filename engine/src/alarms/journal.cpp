#include "alarms/journal.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <asio/post.hpp>

#include "core/files.hpp"

namespace sonde::engine::alarms {

using json = nlohmann::json;

tl::expected<std::vector<json>, std::string> alarm_journal::load(const std::string& path,
                                                                 std::size_t& bad) {
  bad = 0;
  std::vector<json> out;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return out;
  auto text = read_regular_file(path, std::size_t{1} << 30, "alarm journal", false);
  if (!text) return tl::unexpected(text.error().why);
  std::size_t pos = 0;
  while (pos < text->size()) {
    auto nl = text->find('\n', pos);
    if (nl == std::string::npos) break;  // torn last line: the crash came mid-write
    std::string_view line(text->data() + pos, nl - pos);
    pos = nl + 1;
    if (line.empty()) continue;
    auto j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("k"))
      ++bad;
    else
      out.push_back(std::move(j));
  }
  return out;
}

alarm_journal::alarm_journal(asio::io_context& io, options o) : io_(io), opts_(std::move(o)) {
  fd_ = ::open(opts_.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    stats_.errors++;
    stats_.last_error = "cannot open " + opts_.path + ": " + std::strerror(errno);
  }
  if (fd_ >= 0) {
    off_t size = ::lseek(fd_, 0, SEEK_END);
    if (size > 0) file_bytes_ = static_cast<std::uint64_t>(size);
  }
  thread_ = std::thread([this] { run(); });
}

alarm_journal::~alarm_journal() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  thread_.join();
  if (fd_ >= 0) ::close(fd_);
}

void alarm_journal::append(const json& record, std::function<void(bool)> saved) {
  std::string text = record.dump(-1, ' ', false, json::error_handler_t::replace);
  text += '\n';
  file_bytes_ += text.size();
  {
    std::lock_guard lk(mu_);
    if (queued_bytes_ + text.size() > opts_.max_queued_bytes) {
      ++stats_.overflow;
      if (saved) asio::post(io_, [saved = std::move(saved)] { saved(false); });
      return;
    }
    queued_bytes_ += text.size();
    queue_.push_back({false, std::move(text), std::move(saved)});
  }
  cv_.notify_one();
}

void alarm_journal::rewrite(std::vector<json> records) {
  std::string text;
  for (const auto& r : records) {
    text += r.dump(-1, ' ', false, json::error_handler_t::replace);
    text += '\n';
  }
  file_bytes_ = text.size();
  {
    std::lock_guard lk(mu_);
    queued_bytes_ += text.size();
    queue_.push_back({true, std::move(text), {}});
  }
  cv_.notify_one();
}

alarm_journal::stats alarm_journal::get_stats() const {
  std::lock_guard lk(mu_);
  stats s = stats_;
  s.file_bytes = file_bytes_;
  return s;
}

bool alarm_journal::write_batch(const std::string& text) {
  if (fd_ < 0) {
    fd_ = ::open(opts_.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd_ < 0) return false;
  }
  if (!write_all(fd_, text)) return false;
  if (opts_.sync && ::fdatasync(fd_) != 0) return false;
  return true;
}

bool alarm_journal::replace_file(const std::string& text) {
  std::string tmp = opts_.path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  bool ok = write_all(fd, text) && (!opts_.sync || ::fsync(fd) == 0);
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), opts_.path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return false;
  }
  auto dir = std::filesystem::path(opts_.path).parent_path().string();
  if (opts_.sync) (void)fsync_dir(dir.empty() ? "." : dir);
  if (fd_ >= 0) ::close(fd_);
  fd_ = ::open(opts_.path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC, 0600);
  return fd_ >= 0;
}

void alarm_journal::run() {
  std::unique_lock lk(mu_);
  while (true) {
    cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty() && stopping_) return;
    std::deque<item> batch;
    batch.swap(queue_);
    queued_bytes_ = 0;
    lk.unlock();
    // Appends up to the next rewrite go out in one write and one fdatasync.
    std::vector<std::pair<std::function<void(bool)>, bool>> done;
    std::string text;
    std::vector<std::function<void(bool)>> waiting;
    std::uint64_t lines = 0, batches = 0, rewrites = 0, errors = 0;
    std::string last_error;
    auto flush = [&] {
      if (text.empty() && waiting.empty()) return;
      bool ok = write_batch(text);
      if (!ok) {
        ++errors;
        last_error = opts_.path + ": " + std::strerror(errno);
      }
      ++batches;
      for (auto& w : waiting)
        if (w) done.emplace_back(std::move(w), ok);
      waiting.clear();
      text.clear();
    };
    for (auto& it : batch) {
      if (it.rewrite) {
        flush();
        if (!replace_file(it.text)) {
          ++errors;
          last_error = "rewriting " + opts_.path + ": " + std::strerror(errno);
        }
        ++rewrites;
        continue;
      }
      text += it.text;
      ++lines;
      waiting.push_back(std::move(it.saved));
    }
    flush();
    lk.lock();
    stats_.lines += lines;
    stats_.batches += batches;
    stats_.rewrites += rewrites;
    stats_.errors += errors;
    if (!last_error.empty()) stats_.last_error = last_error;
    if (!done.empty()) {
      lk.unlock();
      asio::post(io_, [done = std::move(done)]() mutable {
        for (auto& [f, ok] : done) f(ok);
      });
      lk.lock();
    }
  }
}

}  // namespace sonde::engine::alarms
