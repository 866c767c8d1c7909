#pragma once
/// @file agent_queue.hpp
/// The agent's bounded on-disk queue of results (docs/agents.md, "The queue on disk").
///
/// Results are appended to segment files `seg-<first seq>.q` in a state directory, each record
/// framed as `[u32 length][u32 crc32][u64 seq][payload]` (little-endian; the CRC covers the seq
/// and the payload). `meta.json` holds the queue's identity and its persisted pointers (acked,
/// head, next sequence number, dropped count) and is replaced atomically (write a temporary
/// file, fdatasync, rename). A `lock` file (flock) keeps a second agent out of the directory.
///
/// Sequence numbers start at 1, only grow, and are never reused for a queue identity. The queue
/// keeps every record that is neither acknowledged nor dropped; when a push would exceed the
/// bound (records or bytes) the oldest records are dropped and counted in `dropped()`, which is
/// persisted. A result that cannot be written (full disk, I/O error) consumes its number and is
/// counted in `dropped()` too, so the receiver sees the gap. Reopening the directory after a
/// crash or restart restores the unacknowledged records and the numbering; damage is reported
/// through the warning callback (file and offset) and skipped (the scan resynchronises on the
/// next valid CRC-framed record; a torn tail is truncated); only records really lost are
/// counted as dropped. A missing or damaged `meta.json` is rebuilt from the segments (whose
/// header records the queue id); a stray or foreign segment file is moved aside (`.bad`).
///
/// Durability: `push` writes with write(2) only; `sync` makes every pushed record and the
/// pointers durable (one fdatasync per call); `ack` persists the new pointers at once. The agent
/// syncs once per batch of results and before it sends records it has not synced.

#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <tl/expected.hpp>

namespace sonde::engine {

/// Bounds and tuning of an agent queue.
struct agent_queue_options {
  std::uint64_t max_records = 100000;        ///< at most this many records are kept
  std::uint64_t max_bytes = 64ull << 20;     ///< record bytes on disk (framing included)
  std::uint64_t segment_bytes = 4ull << 20;  ///< a segment file is closed at this size
  std::uint32_t max_record = 1u << 20;       ///< a longer payload is refused (and a longer
                                             ///< length on disk is corruption)
  /// Test seam: called before every segment write; a non-zero errno makes that write fail as
  /// if the disk had returned it (e.g. ENOSPC).
  std::function<int()> fail_write;
};

/// One queued record.
struct queued_record {
  std::uint64_t seq = 0;
  std::string payload;
};

/// Called with one line per problem found while opening (torn tail, corrupt record, lost
/// records): each names the file and the offset.
using queue_warning = std::function<void(const std::string&)>;

/// The queue. Not thread-safe: use from one thread.
class agent_queue {
 public:
  /// Open (or create, with missing parents) the queue in `dir`. Errors: the directory cannot
  /// be created, read or locked (another agent uses it); `meta.json` is missing or damaged and
  /// the segments are of the older format that does not record the queue's identity. Each
  /// message names the file and says what to do. Damaged records, a damaged `meta.json` and
  /// foreign segment files are not errors: they are recovered from and reported to `warn`.
  static tl::expected<std::unique_ptr<agent_queue>, std::string> open(const std::string& dir,
                                                                      agent_queue_options opts = {},
                                                                      queue_warning warn = {});
  ~agent_queue();
  agent_queue(const agent_queue&) = delete;
  agent_queue& operator=(const agent_queue&) = delete;

  /// Append a record and return its sequence number; drops the oldest records first when the
  /// bound would be exceeded. Errors: payload longer than `max_record`, write errors (the
  /// segment is truncated back; nothing is half-written). A record that is refused still
  /// consumes its number and is counted in `dropped()`.
  tl::expected<std::uint64_t, std::string> push(std::string_view payload);
  /// Up to `n` of the oldest kept records (at least one if any, then as many as fit in
  /// `max_bytes` of payload), in sequence order. Errors: read errors naming the file.
  tl::expected<std::vector<queued_record>, std::string> peek(
      std::size_t n, std::size_t max_bytes = std::numeric_limits<std::size_t>::max()) const;
  /// Everything up to `seq` was received: forget it and persist the new pointers. Errors: an
  /// ack at or beyond `next_seq()` (the receiver claims numbers this queue never gave out: a
  /// forgery or a confused receiver) is refused and changes nothing; write errors.
  tl::expected<void, std::string> ack(std::uint64_t seq);
  /// Make pushed records and the pointers durable; delete fully consumed segment files.
  tl::expected<void, std::string> sync();

  /// Records kept (neither acknowledged nor dropped).
  std::size_t size() const { return recs_.size(); }
  /// Bytes of the kept records on disk (framing included).
  std::uint64_t bytes() const { return live_bytes_; }
  /// Records dropped since the queue was created (bound exceeded, or lost to corruption).
  std::uint64_t dropped() const { return dropped_; }
  /// Highest acknowledged sequence number (0: none).
  std::uint64_t acked() const { return acked_; }
  /// The number the next push gets.
  std::uint64_t next_seq() const { return next_; }
  /// Random identity of this queue (16 hex digits), fixed when the directory was created: a
  /// receiver keys its "last seq" by it, so a wiped state directory starts afresh.
  const std::string& queue_id() const { return queue_id_; }
  /// True when pushes or pointer changes are not yet durable.
  bool dirty() const { return data_dirty_ || meta_dirty_ || dir_dirty_ || next_ != meta_next_; }
  const std::string& dir() const { return dir_; }

 private:
  struct segment {
    std::uint64_t first_seq = 0;
    std::string path;
    std::uint64_t size = 0;
    mutable int fd = -1;
    bool appendable = false;  ///< clean and of the current format: new records may go here
  };
  struct frame_ref {
    std::uint64_t seq;
    std::uint32_t offset;  // of the record header in the file
    std::uint32_t len;     // payload length
  };
  struct rec {
    std::uint64_t seq;
    std::uint64_t seg_first;
    std::uint32_t offset;
    std::uint32_t len;  // payload length
  };

  agent_queue() = default;
  tl::expected<void, std::string> load();
  tl::expected<void, std::string> scan_segment(segment& s, bool last,
                                               std::vector<frame_ref>& frames, std::string& id);
  tl::expected<void, std::string> write_meta();
  tl::expected<void, std::string> roll();
  void drop_front();
  void release_segments();
  const segment* find_segment(std::uint64_t first) const;

  std::string dir_;
  agent_queue_options opts_;
  queue_warning warn_;
  int lock_fd_ = -1;
  std::string queue_id_;
  std::uint64_t head_ = 1, acked_ = 0, next_ = 1, dropped_ = 0, live_bytes_ = 0;
  std::uint64_t meta_next_ = 0;  // `next` as last written to meta.json
  std::deque<segment> segs_;
  std::deque<rec> recs_;
  bool data_dirty_ = false, meta_dirty_ = false, dir_dirty_ = false;
};

/// CRC-32 (IEEE 802.3, as zlib's crc32) of `data`, continuing from `crc`.
std::uint32_t crc32(const void* data, std::size_t size, std::uint32_t crc = 0);

}  // namespace sonde::engine
