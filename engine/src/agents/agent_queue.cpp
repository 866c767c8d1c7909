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
#include <optional>
#include <random>

#include <nlohmann/json.hpp>

#include "agents/agent_queue.hpp"
#include "core/files.hpp"

namespace sonde::engine {

namespace {

// Version 1 segments: the magic, then records. Still read; never appended to.
constexpr char segment_magic[8] = {'S', 'O', 'N', 'D', 'E', 'Q', '1', '\n'};
// Version 2: the magic, the queue id (64 bytes, NUL-padded), the CRC-32 of those 64 bytes, then
// records. The id lets a queue whose meta.json is lost recover its identity from its segments,
// and lets a stray segment of another queue be told apart.
constexpr char segment_magic_v2[8] = {'S', 'O', 'N', 'D', 'E', 'Q', '2', '\n'};
constexpr std::size_t v2_header = 8 + 64 + 4;
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

namespace {

// What meta.json said, or why it could not be used.
struct meta_file {
  bool present = false, usable = false;
  std::string problem;   // why it is not usable ("" when usable or absent)
  std::string queue_id;  // valid even when the pointers are not
  std::uint64_t head = 1, acked = 0, next = 1, dropped = 0;
  std::optional<std::uint64_t> kept;  // records kept when it was written (absent: older file)
};

tl::expected<meta_file, std::string> read_meta(const std::string& path) {
  meta_file m;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return m;
    return tl::unexpected(errno_text("cannot read", path) +
                          "; fix its permissions or move the state directory aside");
  }
  m.present = true;
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0 && text.size() < 65536)
    text.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  auto j = nlohmann::json::parse(text, nullptr, false);
  auto unsigned_of = [&](const char* k, std::uint64_t& out) {
    auto it = j.find(k);
    if (it == j.end() || !it->is_number_unsigned()) return false;
    out = it->get<std::uint64_t>();
    return true;
  };
  if (!j.is_object()) {
    m.problem = "not a JSON object";
    return m;
  }
  if (auto q = j.find("queue_id"); q != j.end() && q->is_string() &&
                                   !q->get<std::string>().empty() &&
                                   q->get<std::string>().size() <= 64)
    m.queue_id = q->get<std::string>();
  if (!j.contains("version") || j["version"] != 1) {
    m.problem = "\"version\" is not 1";
    m.queue_id.clear();  // not ours: its id is not ours either
    return m;
  }
  for (auto [k, dst] : {std::pair{"head", &m.head}, std::pair{"acked", &m.acked},
                        std::pair{"next", &m.next}, std::pair{"dropped", &m.dropped}})
    if (!unsigned_of(k, *dst)) {
      m.problem = std::string("\"") + k + "\" missing";
      return m;
    }
  if (m.queue_id.empty()) {
    m.problem = "\"queue_id\" missing";
    return m;
  }
  std::uint64_t kept = 0;
  if (unsigned_of("kept", kept)) m.kept = kept;
  constexpr std::uint64_t limit = std::uint64_t{1} << 53;
  if (m.head == 0 || m.next == 0 || m.acked >= m.next || m.head > m.next || m.next > limit + 1 ||
      m.dropped > limit) {
    m.problem = "inconsistent pointers";
    return m;
  }
  m.usable = true;
  return m;
}

// Move a file that is not (or no longer) a usable segment out of the way, keeping its bytes
// for whoever wants to look. Returns the new name ("" if it could not be moved).
std::string move_aside(const std::string& path) {
  for (int i = 1; i < 100; ++i) {
    std::string to = path + (i == 1 ? ".bad" : ".bad." + std::to_string(i));
    struct stat st {};
    if (::stat(to.c_str(), &st) == 0) continue;
    if (::rename(path.c_str(), to.c_str()) == 0) return to;
    break;
  }
  return {};
}

}  // namespace

tl::expected<void, std::string> agent_queue::load() {
  const std::string meta_path = dir_ + "/meta.json";
  auto meta = read_meta(meta_path);
  if (!meta) return tl::unexpected(meta.error());

  // The segments, in the order of their names.
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

  // Scan every segment into its frames (resynchronising past damage).
  struct scanned {
    segment seg;
    std::vector<frame_ref> frames;
    std::string id;  // queue id from a v2 header ("" when v1 or damaged)
  };
  std::vector<scanned> scans;
  for (std::size_t i = 0; i < found.size(); ++i) {
    scanned sc;
    sc.seg.first_seq = found[i].first;
    sc.seg.path = dir_ + "/" + found[i].second;
    std::vector<frame_ref> frames;
    auto r = scan_segment(sc.seg, i + 1 == found.size(), frames, sc.id);
    if (!r) {
      if (sc.seg.fd >= 0) ::close(sc.seg.fd);
      return tl::unexpected(r.error());
    }
    if (sc.seg.fd < 0) continue;  // removed or moved aside
    sc.frames = std::move(frames);
    scans.push_back(std::move(sc));
  }

  // The queue's identity.
  const bool trust_meta = meta->usable;
  std::string seg_id;
  for (const auto& sc : scans)
    if (!sc.id.empty()) {
      seg_id = sc.id;
      break;
    }
  bool any_frames =
      std::any_of(scans.begin(), scans.end(), [](const scanned& sc) { return !sc.frames.empty(); });
  // A usable meta.json names the queue; else the segments' (CRC-checked) headers do; else
  // whatever id a damaged meta.json still holds.
  if (trust_meta) {
    queue_id_ = meta->queue_id;
  } else if (!seg_id.empty()) {
    queue_id_ = seg_id;
  } else if (!meta->queue_id.empty()) {
    queue_id_ = meta->queue_id;
  } else if (any_frames) {
    for (auto& sc : scans) ::close(sc.seg.fd);
    return tl::unexpected(
        meta_path + (meta->present ? " is damaged (" + meta->problem + ")" : " is missing") +
        " and the segment files are of an older format that does not record the queue's "
        "identity, so its results cannot be matched with what the central already has. Restore "
        "meta.json from a backup, or move " +
        dir_ + " aside to start a new queue (its results would be sent again as a new queue)");
  } else {
    queue_id_ = random_id();
  }
  if (!trust_meta && (meta->present || any_frames))
    warn_(meta_path + (meta->present ? " is damaged (" + meta->problem + ")" : " is missing") +
          "; recovered the queue " + queue_id_ + " from its segment files" +
          (meta->present ? " (the damaged file is replaced)" : ""));

  // Segments that belong to another queue are moved aside.
  for (auto it = scans.begin(); it != scans.end();) {
    if (!it->id.empty() && it->id != queue_id_) {
      ::close(it->seg.fd);
      std::string to = move_aside(it->seg.path);
      warn_(it->seg.path + ": a segment of another queue (" + it->id + ", this queue is " +
            queue_id_ + "); moved aside" + (to.empty() ? " failed; ignored" : " to " + to));
      it = scans.erase(it);
    } else {
      ++it;
    }
  }

  std::uint64_t meta_next = 1;
  if (trust_meta) {
    head_ = meta->head;
    acked_ = meta->acked;
    meta_next = meta->next;
    dropped_ = meta->dropped;
    meta_next_ = meta_next;
  } else {
    head_ = 0;  // from the first record found
    acked_ = 0;
    dropped_ = 0;
  }
  if (trust_meta) head_ = std::max(head_, acked_ + 1);

  // The records, in sequence order. A record at or below one already seen (a stray copy of a
  // segment) is skipped; with usable pointers, a record far beyond the numbering is not ours.
  std::uint64_t prev = 0, highest = 0, stale = 0, implausible = 0, found_counted = 0;
  const std::uint64_t plausible_end = meta_next + opts_.max_records + 1;
  for (auto& sc : scans) {
    for (const auto& f : sc.frames) {
      if (f.seq <= prev) {
        ++stale;
        continue;
      }
      if (trust_meta && f.seq >= plausible_end) {
        ++implausible;
        continue;
      }
      prev = f.seq;
      highest = std::max(highest, f.seq);
      if (!trust_meta && head_ == 0) {
        head_ = f.seq;
        acked_ = f.seq - 1;
      }
      if (f.seq >= head_) {
        recs_.push_back(rec{f.seq, sc.seg.first_seq, f.offset, f.len});
        live_bytes_ += record_header + f.len;
        if (f.seq < meta_next) ++found_counted;
      }
    }
    segs_.push_back(sc.seg);
  }
  if (stale)
    warn_(dir_ + ": " + std::to_string(stale) +
          " record(s) repeat sequence numbers already found (a copied segment?); skipped");
  if (implausible)
    warn_(dir_ + ": " + std::to_string(implausible) +
          " record(s) carry sequence numbers far beyond this queue's (" +
          std::to_string(meta_next) + "); not ours, skipped");
  if (head_ == 0) head_ = 1;
  next_ = std::max(trust_meta ? meta_next : 1, highest + 1);
  // A segment named beyond the numbering (a stray or renamed file) that holds none of our
  // records must not take new records: they would sit below its name and be refused later.
  for (auto it = segs_.begin(); it != segs_.end();) {
    bool holds = std::any_of(recs_.begin(), recs_.end(),
                             [&](const rec& r) { return r.seg_first == it->first_seq; });
    if (it->first_seq > next_ && !holds) {
      ::close(it->fd);
      if (it->size <= v2_header) {
        ::unlink(it->path.c_str());
        warn_(it->path + ": an empty segment named beyond the queue's numbering (" +
              std::to_string(next_) + "); removed");
      } else {
        std::string to = move_aside(it->path);
        warn_(it->path + ": a segment named beyond the queue's numbering (" +
              std::to_string(next_) + ") with none of its records; moved aside" +
              (to.empty() ? " failed; ignored" : " to " + to));
      }
      it = segs_.erase(it);
      dir_dirty_ = true;
    } else {
      ++it;
    }
  }
  if (!segs_.empty() && segs_.back().first_seq > next_) segs_.back().appendable = false;
  if (!trust_meta) {
    // The numbering continues after the highest number found; meta.json kept no more.
    meta_next_ = 0;
  }
  // Numbers given out, neither consumed nor found: lost with damaged files. With `kept` (the
  // records kept when meta.json was written) only real records count, not numbers that were
  // never written (a full disk: those are already counted as dropped).
  if (trust_meta) {
    std::uint64_t expected = meta->kept ? *meta->kept : meta_next - std::min(meta_next, head_);
    if (expected > found_counted) {
      std::uint64_t lost = expected - found_counted;
      warn_(dir_ + ": " + std::to_string(lost) +
            " queued result(s) were lost with damaged or missing segment files; counted as "
            "dropped");
      dropped_ += lost;
    }
  }
  meta_dirty_ = dir_dirty_ = true;
  if (!recs_.empty())
    head_ = recs_.front().seq;
  else
    head_ = next_;
  // Appends go to a fresh segment unless the last one is clean and of this format (push()).
  // Enforce the bound (it may have been lowered since the last run).
  while (!recs_.empty() && (recs_.size() > opts_.max_records || live_bytes_ > opts_.max_bytes)) {
    drop_front();
  }
  if (auto r = sync(); !r)
    warn_(r.error() + " (continuing; the queue's pointers are written at the next sync)");
  return {};
}

tl::expected<void, std::string> agent_queue::scan_segment(segment& s, bool last,
                                                          std::vector<frame_ref>& frames,
                                                          std::string& id) {
  s.fd = ::open(s.path.c_str(), O_RDWR | O_CLOEXEC);
  if (s.fd < 0) return tl::unexpected(errno_text("cannot open", s.path));
  struct stat st {};
  if (::fstat(s.fd, &st) != 0) return tl::unexpected(errno_text("cannot stat", s.path));
  const auto size = static_cast<std::uint64_t>(st.st_size);
  auto drop_file = [&](const std::string& why, bool keep_bytes) {
    ::close(s.fd);
    s.fd = -1;
    if (!keep_bytes) {
      if (size) warn_(s.path + ": " + why + "; removed");
      ::unlink(s.path.c_str());
    } else {
      std::string to = move_aside(s.path);
      warn_(s.path + ": " + why + "; moved aside" +
            (to.empty() ? " failed; ignored" : " to " + to));
    }
    dir_dirty_ = true;
  };
  if (size > opts_.segment_bytes + opts_.max_record + 4096) {
    drop_file("not a sonde agent queue segment (" + std::to_string(size) +
                  " bytes, larger than any segment)",
              true);
    return {};
  }
  std::string data(size, '\0');
  if (size && !read_all(s.fd, data.data(), data.size(), 0))
    return tl::unexpected(errno_text("cannot read", s.path));
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());

  // The header: v2 (magic, queue id, CRC), v1 (magic only), or damaged.
  std::uint64_t start = 0;
  bool header_ok = false;
  if (size >= v2_header && std::memcmp(p, segment_magic_v2, 8) == 0) {
    start = v2_header;
    if (crc32(p + 8, 64) == get_u32(p + 72)) {
      header_ok = true;
      std::size_t n = 0;
      while (n < 64 && p[8 + n]) ++n;
      id.assign(reinterpret_cast<const char*>(p + 8), n);
    }
  } else if (size >= 8 && std::memcmp(p, segment_magic, 8) == 0) {
    start = 8;
    header_ok = true;  // an older segment: readable, never appended to
  }
  if (!header_ok) start = 0;  // look for records anywhere

  // Walk the records; past damage, resynchronise on the next valid frame (length in bounds,
  // CRC over seq and payload matching, seq not below the segment's first number).
  auto valid_at = [&](std::uint64_t off) -> std::optional<frame_ref> {
    if (size - off < record_header) return std::nullopt;
    std::uint32_t len = get_u32(p + off), crc = get_u32(p + off + 4);
    std::uint64_t seq = get_u64(p + off + 8);
    if (len > opts_.max_record || size - off - record_header < len) return std::nullopt;
    if (seq < s.first_seq || seq == 0) return std::nullopt;
    if (record_crc(seq, p + off + record_header, len) != crc) return std::nullopt;
    return frame_ref{seq, static_cast<std::uint32_t>(off), len};
  };
  auto why_bad = [&](std::uint64_t off) -> std::string {
    if (size - off < record_header) return last ? "torn record header" : "truncated record header";
    std::uint32_t len = get_u32(p + off);
    std::uint64_t seq = get_u64(p + off + 8);
    if (len > opts_.max_record) return "corrupt record (length " + std::to_string(len) + ")";
    if (size - off - record_header < len) return last ? "torn record" : "truncated record";
    if (record_crc(seq, p + off + record_header, len) != get_u32(p + off + 4))
      return "corrupt record (CRC mismatch)";
    return "corrupt record (sequence " + std::to_string(seq) + " below the segment's first " +
           std::to_string(s.first_seq) + ")";
  };
  std::uint64_t off = start, tail_end = start;
  std::uint64_t prev = 0;
  bool damaged = false;
  while (off < size) {
    auto f = valid_at(off);
    if (f && f->seq > prev) {
      frames.push_back(*f);
      prev = f->seq;
      off += record_header + f->len;
      tail_end = off;
      continue;
    }
    // Damage at `off`: find the next valid frame.
    const std::string why = f ? "corrupt record (sequence " + std::to_string(f->seq) + " after " +
                                    std::to_string(prev) + ")"
                              : why_bad(off);
    std::uint64_t next = off + 1;
    std::optional<frame_ref> g;
    for (; next + record_header <= size; ++next)
      if ((g = valid_at(next)) && g->seq > prev) break;
    if (!g || next + record_header > size || g->seq <= prev) {
      // Nothing valid after it: a torn or damaged tail.
      if (frames.empty()) {
        // Not one valid record in the file: nothing to truncate to; keep its bytes aside.
        if (header_ok)
          drop_file(why + " at offset " + std::to_string(off) + " and no valid record after it",
                    size > start + record_header);
        if (header_ok) return {};
        break;
      }
      if (last) {
        warn_(s.path + ": " + why + " at offset " + std::to_string(off) + "; truncating " +
              std::to_string(size - off) + " byte(s) there");
        if (::ftruncate(s.fd, static_cast<off_t>(off)) != 0)
          return tl::unexpected(errno_text("cannot truncate", s.path));
        data_dirty_ = true;
      } else {
        warn_(s.path + ": " + why + " at offset " + std::to_string(off) + "; ignoring the " +
              std::to_string(size - off) + " byte(s) after it");
      }
      damaged = damaged || !last;
      break;
    }
    if (header_ok || !frames.empty())  // else: the damaged header itself (said below)
      warn_(s.path + ": " + why + " at offset " + std::to_string(off) + "; skipped " +
            std::to_string(next - off) + " byte(s) to the next valid record at offset " +
            std::to_string(next));
    damaged = true;
    off = next;
  }
  if (frames.empty() && !header_ok) {
    // No header and no record: a foreign file, or a segment torn while being created.
    bool torn_creation = size < v2_header && size <= 8 &&
                         std::memcmp(p, segment_magic_v2, static_cast<std::size_t>(size)) == 0;
    drop_file(torn_creation ? "torn while being created (no records)"
                            : "not a sonde agent queue segment (no header, no valid record)",
              !torn_creation);
    return {};
  }
  if (!header_ok)
    warn_(s.path + ": damaged segment header; " + std::to_string(frames.size()) +
          " valid record(s) recovered from it");
  s.size = frames.empty() ? start : std::max<std::uint64_t>(tail_end, start);
  if (last) s.size = std::min<std::uint64_t>(s.size, size);
  // Only a clean segment of the current format takes new records.
  s.appendable = last && header_ok && !id.empty() && !damaged && s.size >= start;
  if (s.appendable) {
    struct stat now {};
    if (::fstat(s.fd, &now) == 0) s.appendable = static_cast<std::uint64_t>(now.st_size) == s.size;
  }
  return {};
}

tl::expected<void, std::string> agent_queue::write_meta() {
  nlohmann::json j{{"version", 1},        {"queue_id", queue_id_}, {"head", head_},
                   {"acked", acked_},     {"next", next_},         {"dropped", dropped_},
                   {"kept", recs_.size()}};
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
  if (opts_.fail_write)
    if (int e = opts_.fail_write(); e != 0) {
      errno = e;
      return tl::unexpected(errno_text("cannot create", dir_ + "/" + segment_name(next_)));
    }
  segment s;
  s.first_seq = next_;
  s.path = dir_ + "/" + segment_name(next_);
  s.fd = ::open(s.path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
  if (s.fd < 0 && errno == EEXIST) {
    // A file of that name that the scan did not keep (damaged or not ours): keep its bytes.
    std::string to = move_aside(s.path);
    warn_(s.path + ": already exists; moved aside" + (to.empty() ? " failed" : " to " + to));
    s.fd = ::open(s.path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
  }
  if (s.fd < 0) return tl::unexpected(errno_text("cannot create", s.path));
  unsigned char header[v2_header] = {};
  std::memcpy(header, segment_magic_v2, 8);
  std::memcpy(header + 8, queue_id_.data(), std::min<std::size_t>(queue_id_.size(), 64));
  put_u32(header + 72, crc32(header + 8, 64));
  if (!write_all(s.fd, header, sizeof header, 0)) {
    std::string e = errno_text("cannot write", s.path);
    ::close(s.fd);
    ::unlink(s.path.c_str());
    return tl::unexpected(e);
  }
  s.size = sizeof header;
  s.appendable = true;
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
  // A result that cannot be queued still consumes its number and is counted as dropped: the
  // receiver sees the gap, and `dropped` says how many.
  auto lose = [&](std::string why) -> tl::expected<std::uint64_t, std::string> {
    ++next_;
    ++dropped_;
    meta_dirty_ = true;
    return tl::unexpected(std::move(why));
  };
  if (payload.size() > opts_.max_record)
    return lose("result of " + std::to_string(payload.size()) +
                " bytes is longer than the queue's record limit");
  const std::uint64_t need = record_header + payload.size();
  while (!recs_.empty() &&
         (recs_.size() + 1 > opts_.max_records || live_bytes_ + need > opts_.max_bytes))
    drop_front();
  if (segs_.empty() || !segs_.back().appendable ||
      (segs_.back().size + need > opts_.segment_bytes && segs_.back().size > v2_header)) {
    if (auto r = roll(); !r) return lose(r.error());
  }
  segment& s = segs_.back();
  const std::uint64_t seq = next_;
  std::string buf(record_header, '\0');
  auto* h = reinterpret_cast<unsigned char*>(buf.data());
  put_u32(h, static_cast<std::uint32_t>(payload.size()));
  put_u32(h + 4, record_crc(seq, payload.data(), payload.size()));
  put_u64(h + 8, seq);
  buf.append(payload);
  int fault = opts_.fail_write ? opts_.fail_write() : 0;
  if (fault != 0 || !write_all(s.fd, buf.data(), buf.size(), static_cast<off_t>(s.size))) {
    if (fault != 0) errno = fault;
    std::string e = errno_text("cannot write", s.path);
    if (::ftruncate(s.fd, static_cast<off_t>(s.size)) != 0) {
      // Nothing more to do: the scan at the next start truncates the torn tail.
    }
    return lose(e);
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
  if (seq >= next_)
    return tl::unexpected("acknowledgement of seq " + std::to_string(seq) +
                          " is beyond what this queue has written (up to " +
                          std::to_string(next_ - 1) + "); not applied");
  if (seq <= acked_) return {};
  acked_ = seq;
  while (!recs_.empty() && recs_.front().seq <= seq) {
    live_bytes_ -= record_header + recs_.front().len;
    recs_.pop_front();
  }
  head_ = std::max(head_, seq + 1);
  meta_dirty_ = true;
  return sync();
}

void agent_queue::release_segments() {
  // A segment is consumed when every number it can hold is below head_.
  while (!segs_.empty()) {
    const std::uint64_t last_of_front = segs_.size() > 1 ? segs_[1].first_seq - 1 : next_ - 1;
    if (last_of_front >= head_ || segs_.size() == 1) break;  // the tail is kept for appending
    segment& s = segs_.front();
    // Never a segment a kept record still lives in (possible when files were renamed or
    // copied by hand: records then need not sit below the next segment's name).
    if (std::any_of(recs_.begin(), recs_.end(),
                    [&](const rec& r) { return r.seg_first == s.first_seq; }))
      break;
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
