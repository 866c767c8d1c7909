// The control state's writer thread: journal with group commit, snapshots from its own copy.
// See state_writer.hpp.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <asio/post.hpp>
#include <nlohmann/json.hpp>

#include "control/control_request.hpp"
#include "core/files.hpp"
#include "core/state.hpp"
#include "core/state_writer.hpp"

namespace sonde::engine {

using json = nlohmann::json;

std::string state_journal_path(const std::string& state_file) {
  return state_file + ".journal";
}

std::string format_state_record(const state_record& r) {
  json j{{"name", r.name}};
  j["task"] = r.task ? json(*r.task) : json(nullptr);
  j["id"] = r.id ? json(*r.id) : json(nullptr);
  j["stopped"] = r.stopped;
  j["paused"] = r.paused;
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

tl::expected<state_record, std::string> parse_state_record(std::string_view line) {
  auto j = parse_json_untrusted(line, 4);
  if (!j) return tl::unexpected(j.error());
  if (!j->is_object()) return tl::unexpected(std::string("not a JSON object"));
  state_record r;
  auto name = j->find("name");
  if (name == j->end() || !name->is_string() || name->get_ref<const std::string&>().empty())
    return tl::unexpected(std::string("\"name\" must be a non-empty string"));
  r.name = name->get<std::string>();
  if (auto t = j->find("task"); t != j->end() && !t->is_null()) {
    if (!t->is_string()) return tl::unexpected(std::string("\"task\" must be a string or null"));
    r.task = t->get<std::string>();
  }
  if (auto i = j->find("id"); i != j->end() && !i->is_null()) {
    if (!i->is_number_integer() || i->get<std::int64_t>() < 1)
      return tl::unexpected(std::string("\"id\" must be a positive integer or null"));
    r.id = i->get<std::int64_t>();
  }
  for (auto [key, dst] : {std::pair{"stopped", &r.stopped}, std::pair{"paused", &r.paused}}) {
    auto b = j->find(key);
    if (b == j->end()) continue;
    if (!b->is_boolean())
      return tl::unexpected("\"" + std::string(key) + "\" must be true or false");
    *dst = b->get<bool>();
  }
  return r;
}

state_writer::state_writer(asio::io_context& io, options opts, state_records records,
                           bool compact_now)
    : io_(io), opts_(std::move(opts)), mirror_(std::move(records)) {
  snapshot_due_ = compact_now;
  struct stat st {};
  if (::stat(opts_.path.c_str(), &st) == 0)
    snapshot_bytes_ = static_cast<std::uint64_t>(st.st_size);
  // Appends continue after the journal's last complete line: a torn tail (a crash mid-write,
  // ignored at load) is cut off before the first append.
  if (auto j = read_regular_file(state_journal_path(opts_.path), max_config_bytes, "journal")) {
    auto nl = j->rfind('\n');
    journal_bytes_ = nl == std::string::npos ? 0 : nl + 1;
  }
  thread_ = std::thread([this] { run(); });
}

state_writer::~state_writer() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  if (journal_fd_ >= 0) ::close(journal_fd_);
}

std::uint64_t state_writer::submit(state_record r) {
  std::uint64_t t = ++next_ticket_;
  {
    std::lock_guard lk(mu_);
    std::string name = r.name;
    pending_[name] = std::move(r);  // a newer record of a name replaces the older one
    pending_ticket_ = t;
    ++counters_.submitted;
  }
  cv_.notify_one();
  return t;
}

void state_writer::when_saved(std::uint64_t ticket,
                              std::function<void(const std::string& error)> f) {
  {
    std::lock_guard lk(mu_);
    if (ticket <= durable_ticket_) {
      asio::post(io_, [f = std::move(f)] { f(""); });
      return;
    }
    if (ticket <= attempted_ticket_) {  // its write failed; it is queued again
      asio::post(io_, [f = std::move(f), e = counters_.last_error] { f(e); });
      return;
    }
  }
  waiting_[ticket].push_back(std::move(f));
}

void state_writer::completed(std::uint64_t ticket, std::string error) {
  // On the loop: answer everyone waiting for this ticket or an earlier one.
  while (!waiting_.empty() && waiting_.begin()->first <= ticket) {
    auto fs = std::move(waiting_.begin()->second);
    waiting_.erase(waiting_.begin());
    for (auto& f : fs) f(error);
  }
}

state_writer::counters state_writer::stats() const {
  std::lock_guard lk(mu_);
  auto c = counters_;
  c.pending = pending_.size();
  return c;
}

void state_writer::run() {
  std::unique_lock lk(mu_);
  while (true) {
    cv_.wait(lk, [&] { return stop_ || !pending_.empty() || snapshot_due_; });
    // Stopping with nothing pending: done (a rewrite still due is not needed, the journal
    // holds everything).
    if (pending_.empty() && (!snapshot_due_ || stop_)) break;
    std::vector<state_record> batch;
    batch.reserve(pending_.size());
    for (auto& [name, r] : pending_) batch.push_back(std::move(r));
    pending_.clear();
    std::uint64_t ticket = pending_ticket_;
    bool stopping = stop_;
    bool snapshot = snapshot_due_;
    lk.unlock();

    for (auto& r : batch) {
      if (r.empty())
        mirror_.erase(r.name);
      else
        mirror_[r.name] = r;
    }
    std::string error;
    bool ok = write_batch(batch, snapshot, error);

    lk.lock();
    attempted_ticket_ = ticket;
    ++counters_.batches;
    if (ok) {
      durable_ticket_ = ticket;
      counters_.last_error.clear();
    } else {
      // Not on disk: back into the queue, unless a newer record of the name came meanwhile.
      for (auto& r : batch) pending_.try_emplace(r.name, std::move(r));
      ++counters_.failures;
      counters_.last_error = error;
    }
    lk.unlock();
    if (!ok) {
      auto now = std::chrono::steady_clock::now();
      if (last_log_ == std::chrono::steady_clock::time_point{} ||
          now - last_log_ >= std::chrono::minutes(1)) {
        last_log_ = now;
        std::fprintf(stderr,
                     "sonde: warning: control state not saved: %s (the changes are in effect; "
                     "retrying every %lldms)\n",
                     error.c_str(), static_cast<long long>(opts_.retry.count()));
      }
    }
    asio::post(io_, [this, ticket, error] { completed(ticket, error); });
    lk.lock();
    if (!ok) {
      if (stopping) break;
      cv_.wait_for(lk, opts_.retry, [&] { return stop_; });
    } else if (snapshot_due_ && pending_.empty()) {
      // The rewrite failed (the journal has everything): try again later, not at once.
      cv_.wait_for(lk, opts_.retry, [&] { return stop_ || !pending_.empty(); });
    }
  }
}

// Append the batch to the journal (one fdatasync), then, when due, rewrite the state file from
// the mirror and remove the journal. The batch is always in the journal before a snapshot
// that contains it, so a crash between the snapshot's rename and the journal's removal
// replays a journal whose last word on every name is the snapshot's: nothing reverts.
bool state_writer::write_batch(const std::vector<state_record>& batch, bool snapshot,
                               std::string& error) {
  if (opts_.before_write) opts_.before_write();
  const std::string journal = state_journal_path(opts_.path);
  auto fail = [&](const std::string& what, const std::string& file) {
    error = "cannot " + what + " " + file + ": " + std::strerror(errno);
    return false;
  };
  if (!batch.empty()) {
    std::string lines;
    for (const auto& r : batch) lines += format_state_record(r);
    if (journal_fd_ < 0) {
      std::error_code ec;
      auto dir = std::filesystem::path(journal).parent_path();
      std::filesystem::create_directories(dir, ec);
      journal_fd_ = ::open(journal.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      if (journal_fd_ < 0) return fail("open", journal);
      // The new file's directory entry must be durable too, or a synced append could vanish.
      fsync_dir(dir.string());
      torn_ = true;  // start from the length known to be good
    }
    // After a failed write the journal may end in part of a line: cut it off first.
    if (torn_ && ::ftruncate(journal_fd_, static_cast<off_t>(journal_bytes_)) != 0)
      return fail("truncate", journal);
    torn_ = false;
    if (!write_all(journal_fd_, lines)) {
      torn_ = true;  // a torn line is cut at load; the next write cuts it first
      return fail("write", journal);
    }
    if (::fdatasync(journal_fd_) != 0) {
      torn_ = true;
      return fail("sync", journal);
    }
    journal_bytes_ += lines.size();
  }
  if (!snapshot && journal_bytes_ > opts_.compact_bytes && journal_bytes_ > snapshot_bytes_)
    snapshot = true;
  if (!snapshot) return true;
  std::string text = format_state_file(mirror_);
  if (auto w = write_file_atomically(opts_.path, text); !w) {
    // The journal has everything: the snapshot is tried again at the next write.
    std::lock_guard lk(mu_);
    snapshot_due_ = true;
    return true;
  }
  snapshot_bytes_ = text.size();
  if (journal_fd_ >= 0) ::close(journal_fd_);
  journal_fd_ = -1;
  if (::unlink(journal.c_str()) != 0 && errno != ENOENT) {
    // Harmless to replay (see above), but it would grow: rewrite again next time.
    std::lock_guard lk(mu_);
    snapshot_due_ = true;
    return true;
  }
  journal_bytes_ = 0;
  std::lock_guard lk(mu_);
  snapshot_due_ = false;
  ++counters_.snapshots;
  return true;
}

}  // namespace sonde::engine
