// The agent's on-disk queue. See agent_queue.hpp and docs/agents.md for the format.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>

#include <nlohmann/json.hpp>

#include <sonde/engine/agent_queue.hpp>

namespace sonde::engine {

namespace {

constexpr char segment_magic[8] = {'S', 'O', 'N', 'D', 'E', 'Q', '1', '\n'};
constexpr std::size_t record_header = 16;  // u32 length, u32 crc, u64 seq

std::string errno_text(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

void put_u32(unsigned char* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
void put_u64(unsigned char* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
std::uint32_t get_u32(const unsigned char* p) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
std::uint64_t get_u64(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::uint32_t record_crc(std::uint64_t seq, const void* payload, std::size_t len) {
  unsigned char s[8];
  put_u64(s, seq);
  return crc32(payload, len, crc32(s, sizeof s));
}

bool write_all(int fd, const void* data, std::size_t size, off_t at) {
  const auto* p = static_cast<const unsigned char*>(data);
  while (size) {
    ssize_t n = ::pwrite(fd, p, size, at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    at += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

bool read_all(int fd, void* data, std::size_t size, off_t at) {
  auto* p = static_cast<unsigned char*>(data);
  while (size) {
    ssize_t n = ::pread(fd, p, size, at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;  // shorter than the index says: the file changed under us
      return false;
    }
    p += n;
    at += n;
    size -= static_cast<std::size_t>(n);
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

tl::expected<void, std::string> make_dirs(const std::string& dir) {
  std::string cur;
  std::size_t pos = 0;
  while (pos <= dir.size()) {
    auto slash = dir.find('/', pos);
    if (slash == std::string::npos) slash = dir.size();
    cur = dir.substr(0, slash);
    pos = slash + 1;
    if (cur.empty()) continue;
    if (::mkdir(cur.c_str(), 0750) != 0 && errno != EEXIST)
      return tl::unexpected(errno_text("cannot create", cur));
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return tl::unexpected("cannot use " + dir + ": not a directory");
  return {};
}

std::string segment_name(std::uint64_t first) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "seg-%020llu.q", static_cast<unsigned long long>(first));
  return buf;
}

std::string random_id() {
  std::random_device rd;
  std::uint64_t v = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

std::uint32_t crc32(const void* data, std::size_t size, std::uint32_t crc) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (std::size_t i = 0; i < size; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

agent_queue::~agent_queue() {
  for (auto& s : segs_)
    if (s.fd >= 0) ::close(s.fd);
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

tl::expected<std::unique_ptr<agent_queue>, std::string> agent_queue::open(const std::string& dir,
                                                                          agent_queue_options opts,
                                                                          queue_warning warn) {
  std::unique_ptr<agent_queue> q(new agent_queue());
  q->dir_ = dir;
  while (q->dir_.size() > 1 && q->dir_.back() == '/') q->dir_.pop_back();
  q->opts_ = opts;
  if (q->opts_.max_records == 0) q->opts_.max_records = 1;
  if (q->opts_.segment_bytes < 4096) q->opts_.segment_bytes = 4096;
  q->warn_ = warn ? std::move(warn) : [](const std::string& w) {
    std::fprintf(stderr, "agent: warning: %s\n", w.c_str());
  };
  if (auto r = make_dirs(q->dir_); !r) return tl::unexpected(r.error());
  std::string lock_path = q->dir_ + "/lock";
  q->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (q->lock_fd_ < 0) return tl::unexpected(errno_text("cannot open", lock_path));
  if (::flock(q->lock_fd_, LOCK_EX | LOCK_NB) != 0)
    return tl::unexpected(errno == EWOULDBLOCK
                              ? q->dir_ + " is in use by another sonde agent (" + lock_path +
                                    " is locked); give each agent its own --state-dir"
                              : errno_text("cannot lock", lock_path));
  if (auto r = q->load(); !r) return tl::unexpected(r.error());
  return q;
}

tl::expected<void, std::string> agent_queue::load() {
  // The pointers.
  const std::string meta_path = dir_ + "/meta.json";
  std::uint64_t meta_next = 1;
  bool have_meta = false;
  {
    int fd = ::open(meta_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT) return tl::unexpected(errno_text("cannot read", meta_path));
    if (fd >= 0) {
      std::string text;
      char buf[4096];
      ssize_t n;
      while ((n = ::read(fd, buf, sizeof buf)) > 0 && text.size() < 65536)
        text.append(buf, static_cast<std::size_t>(n));
      ::close(fd);
      auto j = nlohmann::json::parse(text, nullptr, false);
      auto bad = [&](const std::string& why) {
        return tl::unexpected(meta_path + ": not a sonde agent queue meta file (" + why +
                              "); move the state directory aside to start a new queue");
      };
      if (!j.is_object()) return bad("not a JSON object");
      if (!j.contains("version") || j["version"] != 1) return bad("\"version\" is not 1");
      for (const char* k : {"head", "acked", "next", "dropped"})
        if (!j.contains(k) || !j[k].is_number_unsigned()) return bad(std::string(k) + " missing");
      if (!j.contains("queue_id") || !j["queue_id"].is_string() ||
          j["queue_id"].get<std::string>().empty() || j["queue_id"].get<std::string>().size() > 64)
        return bad("queue_id missing");
      queue_id_ = j["queue_id"].get<std::string>();
      head_ = j["head"].get<std::uint64_t>();
      acked_ = j["acked"].get<std::uint64_t>();
      meta_next = j["next"].get<std::uint64_t>();
      dropped_ = j["dropped"].get<std::uint64_t>();
      if (head_ == 0 || meta_next == 0 || acked_ >= meta_next || head_ > meta_next)
        return bad("inconsistent pointers");
      have_meta = true;
      meta_next_ = meta_next;
    }
  }
  if (!have_meta) {
    queue_id_ = random_id();
    head_ = 1;
    acked_ = 0;
    meta_next = 1;
    dropped_ = 0;
  }
  head_ = std::max(head_, acked_ + 1);

  // The segments, in sequence order.
  std::vector<std::pair<std::uint64_t, std::string>> found;
  if (DIR* d = ::opendir(dir_.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n.size() != 26 || n.rfind("seg-", 0) != 0 || n.substr(24) != ".q") continue;
      std::uint64_t first = 0;
      bool digits = true;
      for (std::size_t i = 4; i < 24; ++i) {
        if (n[i] < '0' || n[i] > '9') digits = false;
        first = first * 10 + static_cast<std::uint64_t>(n[i] - '0');
      }
      if (digits && first > 0) found.emplace_back(first, n);
    }
    ::closedir(d);
  } else {
    return tl::unexpected(errno_text("cannot list", dir_));
  }
  std::sort(found.begin(), found.end());
  for (std::size_t i = 0; i < found.size(); ++i) {
    segment s;
    s.first_seq = found[i].first;
    s.path = dir_ + "/" + found[i].second;
    segs_.push_back(s);
    if (auto r = scan_segment(segs_.back(), i + 1 == found.size()); !r) return r;
  }
  std::uint64_t last = recs_.empty() ? 0 : recs_.back().seq;
  for (const auto& s : segs_) last = std::max(last, s.first_seq - 1);
  next_ = std::max(meta_next, last + 1);
  // Numbers given out but neither kept nor consumed were lost with a damaged file.
  std::uint64_t expected = next_ - head_;
  if (expected > recs_.size()) {
    std::uint64_t lost = expected - recs_.size();
    if (have_meta && lost)
      warn_(dir_ + ": " + std::to_string(lost) +
            " queued result(s) were lost with damaged or missing segment files; counted as "
            "dropped");
    dropped_ += lost;
    meta_dirty_ = true;
  }
  if (!have_meta) meta_dirty_ = dir_dirty_ = true;
  if (!recs_.empty())
    head_ = recs_.front().seq;
  else
    head_ = next_;
  // Enforce the bound (it may have been lowered since the last run).
  while (!recs_.empty() && (recs_.size() > opts_.max_records || live_bytes_ > opts_.max_bytes)) {
    drop_front();
  }
  return sync();
}

tl::expected<void, std::string> agent_queue::scan_segment(segment& s, bool last) {
  s.fd = ::open(s.path.c_str(), O_RDWR | O_CLOEXEC);
  if (s.fd < 0) return tl::unexpected(errno_text("cannot open", s.path));
  struct stat st {};
  if (::fstat(s.fd, &st) != 0) return tl::unexpected(errno_text("cannot stat", s.path));
  const auto size = static_cast<std::uint64_t>(st.st_size);
  auto truncate_at = [&](std::uint64_t off,
                         const std::string& why) -> tl::expected<void, std::string> {
    warn_(s.path + ": " + why + " at offset " + std::to_string(off) + "; truncating " +
          std::to_string(size - off) + " byte(s) there");
    if (::ftruncate(s.fd, static_cast<off_t>(off)) != 0)
      return tl::unexpected(errno_text("cannot truncate", s.path));
    data_dirty_ = true;
    s.size = off;
    return {};
  };
  if (size < sizeof segment_magic) {
    // Torn while being created: rewrite the magic.
    if (size) warn_(s.path + ": torn segment header; rewriting it");
    if (::ftruncate(s.fd, 0) != 0 || !write_all(s.fd, segment_magic, sizeof segment_magic, 0))
      return tl::unexpected(errno_text("cannot write", s.path));
    s.size = sizeof segment_magic;
    data_dirty_ = true;
    return {};
  }
  char magic[sizeof segment_magic];
  if (!read_all(s.fd, magic, sizeof magic, 0))
    return tl::unexpected(errno_text("cannot read", s.path));
  if (std::memcmp(magic, segment_magic, sizeof magic) != 0)
    return tl::unexpected(s.path + ": not a sonde agent queue segment (bad magic)");
  // Read the file in one go (segments are small) and walk its records.
  std::string data(size - sizeof magic, '\0');
  if (!data.empty() && !read_all(s.fd, data.data(), data.size(), sizeof magic))
    return tl::unexpected(errno_text("cannot read", s.path));
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  std::uint64_t off = 0, prev = s.first_seq - 1;
  if (!recs_.empty()) prev = std::max(prev, recs_.back().seq);
  while (off < data.size()) {
    const std::uint64_t file_off = off + sizeof magic;
    if (data.size() - off < record_header)
      return truncate_at(file_off, last ? "torn record header" : "truncated record header");
    std::uint32_t len = get_u32(p + off), crc = get_u32(p + off + 4);
    std::uint64_t seq = get_u64(p + off + 8);
    if (len > opts_.max_record)
      return truncate_at(file_off, "corrupt record (length " + std::to_string(len) + ")");
    if (data.size() - off - record_header < len)
      return truncate_at(file_off, last ? "torn record" : "truncated record");
    if (record_crc(seq, p + off + record_header, len) != crc)
      return truncate_at(file_off, "corrupt record (CRC mismatch)");
    if (seq <= prev)
      return truncate_at(file_off, "corrupt record (sequence " + std::to_string(seq) + " after " +
                                       std::to_string(prev) + ")");
    prev = seq;
    if (seq >= head_) {
      recs_.push_back(rec{seq, s.first_seq, static_cast<std::uint32_t>(file_off), len});
      live_bytes_ += record_header + len;
    }
    off += record_header + len;
  }
  s.size = size;
  return {};
}

tl::expected<void, std::string> agent_queue::write_meta() {
  nlohmann::json j{{"version", 1},    {"queue_id", queue_id_}, {"head", head_},
                   {"acked", acked_}, {"next", next_},         {"dropped", dropped_}};
  std::string text = j.dump() + "\n";
  const std::string path = dir_ + "/meta.json", tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return tl::unexpected(errno_text("cannot write", tmp));
  bool ok = write_all(fd, text.data(), text.size(), 0) && ::fdatasync(fd) == 0;
  int saved = errno;
  ::close(fd);
  errno = saved;
  if (!ok) return tl::unexpected(errno_text("cannot write", tmp));
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    return tl::unexpected(errno_text("cannot rename to", path));
  meta_dirty_ = false;
  meta_next_ = next_;
  return {};
}

tl::expected<void, std::string> agent_queue::roll() {
  // The old tail's unsynced records must not depend on the next sync, which syncs the new tail.
  if (data_dirty_ && !segs_.empty() && segs_.back().fd >= 0 && ::fdatasync(segs_.back().fd) != 0)
    return tl::unexpected(errno_text("cannot sync", segs_.back().path));
  segment s;
  s.first_seq = next_;
  s.path = dir_ + "/" + segment_name(next_);
  s.fd = ::open(s.path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (s.fd < 0) return tl::unexpected(errno_text("cannot create", s.path));
  if (!write_all(s.fd, segment_magic, sizeof segment_magic, 0)) {
    std::string e = errno_text("cannot write", s.path);
    ::close(s.fd);
    ::unlink(s.path.c_str());
    return tl::unexpected(e);
  }
  s.size = sizeof segment_magic;
  segs_.push_back(std::move(s));
  dir_dirty_ = true;
  return {};
}

void agent_queue::drop_front() {
  const rec& r = recs_.front();
  live_bytes_ -= record_header + r.len;
  head_ = r.seq + 1;
  recs_.pop_front();
  ++dropped_;
  meta_dirty_ = true;
}

tl::expected<std::uint64_t, std::string> agent_queue::push(std::string_view payload) {
  if (payload.size() > opts_.max_record)
    return tl::unexpected("result of " + std::to_string(payload.size()) +
                          " bytes is longer than the queue's record limit");
  const std::uint64_t need = record_header + payload.size();
  while (!recs_.empty() &&
         (recs_.size() + 1 > opts_.max_records || live_bytes_ + need > opts_.max_bytes))
    drop_front();
  if (segs_.empty() || (segs_.back().size + need > opts_.segment_bytes &&
                        segs_.back().size > sizeof segment_magic)) {
    if (auto r = roll(); !r) return tl::unexpected(r.error());
  }
  segment& s = segs_.back();
  const std::uint64_t seq = next_;
  std::string buf(record_header, '\0');
  auto* h = reinterpret_cast<unsigned char*>(buf.data());
  put_u32(h, static_cast<std::uint32_t>(payload.size()));
  put_u32(h + 4, record_crc(seq, payload.data(), payload.size()));
  put_u64(h + 8, seq);
  buf.append(payload);
  if (!write_all(s.fd, buf.data(), buf.size(), static_cast<off_t>(s.size))) {
    std::string e = errno_text("cannot write", s.path);
    if (::ftruncate(s.fd, static_cast<off_t>(s.size)) != 0) {
      // Nothing more to do: the scan at the next start truncates the torn tail.
    }
    return tl::unexpected(e);
  }
  recs_.push_back(rec{seq, s.first_seq, static_cast<std::uint32_t>(s.size),
                      static_cast<std::uint32_t>(payload.size())});
  s.size += need;
  live_bytes_ += need;
  ++next_;
  data_dirty_ = true;
  return seq;
}

const agent_queue::segment* agent_queue::find_segment(std::uint64_t first) const {
  auto it = std::lower_bound(segs_.begin(), segs_.end(), first,
                             [](const segment& s, std::uint64_t f) { return s.first_seq < f; });
  return it != segs_.end() && it->first_seq == first ? &*it : nullptr;
}

tl::expected<std::vector<queued_record>, std::string> agent_queue::peek(
    std::size_t n, std::size_t max_bytes) const {
  std::vector<queued_record> out;
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < recs_.size() && out.size() < n; ++i) {
    const rec& r = recs_[i];
    if (!out.empty() && bytes + r.len > max_bytes) break;
    const segment* s = find_segment(r.seg_first);
    if (!s || s->fd < 0) return tl::unexpected(dir_ + ": queue index out of step with its files");
    queued_record q;
    q.seq = r.seq;
    q.payload.resize(r.len);
    if (r.len && !read_all(s->fd, q.payload.data(), r.len, r.offset + record_header))
      return tl::unexpected(errno_text("cannot read", s->path));
    bytes += r.len;
    out.push_back(std::move(q));
  }
  return out;
}

tl::expected<void, std::string> agent_queue::ack(std::uint64_t seq) {
  if (seq <= acked_) return {};
  acked_ = seq;
  while (!recs_.empty() && recs_.front().seq <= seq) {
    live_bytes_ -= record_header + recs_.front().len;
    recs_.pop_front();
  }
  head_ = std::max(head_, seq + 1);
  if (seq >= next_) next_ = seq + 1;
  meta_dirty_ = true;
  return sync();
}

void agent_queue::release_segments() {
  // A segment is consumed when every number it can hold is below head_.
  while (!segs_.empty()) {
    const std::uint64_t last_of_front = segs_.size() > 1 ? segs_[1].first_seq - 1 : next_ - 1;
    if (last_of_front >= head_ || segs_.size() == 1) break;  // the tail is kept for appending
    segment& s = segs_.front();
    if (s.fd >= 0) ::close(s.fd);
    ::unlink(s.path.c_str());
    segs_.pop_front();
    dir_dirty_ = true;
  }
}

tl::expected<void, std::string> agent_queue::sync() {
  if (data_dirty_) {
    if (!segs_.empty() && segs_.back().fd >= 0 && ::fdatasync(segs_.back().fd) != 0)
      return tl::unexpected(errno_text("cannot sync", segs_.back().path));
    data_dirty_ = false;
  }
  // Pointers first, then the files they make unnecessary. `next` is persisted with every sync
  // so that a record damaged after it was synced is counted as lost, never renumbered.
  if (meta_dirty_ || next_ != meta_next_)
    if (auto r = write_meta(); !r) return r;
  release_segments();
  if (dir_dirty_) {
    if (fsync_dir(dir_) != 0) return tl::unexpected(errno_text("cannot sync", dir_));
    dir_dirty_ = false;
  }
  return {};
}

}  // namespace sonde::engine
