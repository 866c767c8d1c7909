#pragma once
/// @file detail/curl_service.hpp
/// One libcurl multi handle per io_context, driven by that io_context.
///
/// libcurl's multi interface tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when
/// to wake it (CURLMOPT_TIMERFUNCTION); the service maps these onto non-owning
/// `asio::posix::stream_descriptor` waits and one `asio::steady_timer`, and calls
/// `curl_multi_socket_action` when they fire. Finished transfers are collected with
/// `curl_multi_info_read`, removed from the multi handle (so that, with CURLOPT_FORBID_REUSE,
/// their connection closes at once) and their waiting coroutine is woken.
///
/// Ownership of sockets: curl opens and closes them. A descriptor watched by ASIO is released
/// (not closed) before curl closes the fd, from CURLOPT_CLOSESOCKETFUNCTION, which every
/// transfer started by this service installs, or on CURL_POLL_REMOVE, whichever comes first.
/// Watchers and easy handles are pooled: a probe costs no heap allocation of ours once warm.
///
/// Thread safety: none. Use the service from its io_context's thread only.

#include <curl/curl.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include <asio/error.hpp>
#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>

namespace sonde::detail {

/// One transfer in flight: what the waiting coroutine gets back. Lives in the coroutine frame.
struct curl_transfer {
  CURL* easy = nullptr;
  CURLcode result = CURLE_OK;
  bool attached = false;                 ///< in the multi handle
  bool done = false;                     ///< curl reported completion
  asio::steady_timer* waiter = nullptr;  ///< cancelled on completion to wake the coroutine
};

/// The multi handle of one io_context (see the file comment).
class curl_service final : public asio::execution_context::service {
 public:
  using key_type = curl_service;
  static inline asio::execution_context::id id;

  explicit curl_service(asio::io_context& ctx) : service(ctx), ctx_(ctx), timer_(ctx) {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    multi_ = curl_multi_init();
    if (!multi_) return;
    curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &curl_service::on_socket);
    curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
    curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &curl_service::on_timer);
    curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
  }
  ~curl_service() override { shutdown(); }

  void shutdown() override {
    if (multi_) {
      while (!attached_.empty()) detach(*attached_.back());  // detach pops it
      curl_multi_cleanup(multi_);
      multi_ = nullptr;
    }
    for (CURL* e : spare_easy_) curl_easy_cleanup(e);
    spare_easy_.clear();
    for (auto& w : by_fd_)
      if (w) release(*w);
    by_fd_.clear();
    timer_.cancel();
  }

  /// Whether curl_multi_init succeeded.
  bool ok() const noexcept { return multi_ != nullptr; }

  /// An easy handle in its default state (pooled; curl_easy_reset on return), or nullptr.
  CURL* acquire_easy() {
    if (!spare_easy_.empty()) {
      CURL* e = spare_easy_.back();
      spare_easy_.pop_back();
      return e;
    }
    return curl_easy_init();
  }
  /// Give an easy handle back (it must not be attached).
  void release_easy(CURL* e) {
    if (!e) return;
    curl_easy_reset(e);
    if (spare_easy_.size() < 256)
      spare_easy_.push_back(e);
    else
      curl_easy_cleanup(e);
  }

  /// Prepare `t.easy` for this service (close-socket callback, private pointer) and start it.
  /// Returns curl's error when the multi handle refuses it.
  CURLMcode start(curl_transfer& t) {
    curl_easy_setopt(t.easy, CURLOPT_CLOSESOCKETFUNCTION, &curl_service::on_close_socket);
    curl_easy_setopt(t.easy, CURLOPT_CLOSESOCKETDATA, this);
    curl_easy_setopt(t.easy, CURLOPT_PRIVATE, &t);
    CURLMcode rc = curl_multi_add_handle(multi_, t.easy);
    if (rc != CURLM_OK) return rc;
    t.attached = true;
    attached_.push_back(&t);
    // curl_multi_add_handle asks for a 0 ms timeout through on_timer; nothing else to do.
    return CURLM_OK;
  }

  /// Stop `t` if still running (deadline, or the coroutine went away). Idempotent.
  void cancel(curl_transfer& t) {
    if (t.attached) detach(t);
  }

 private:
  struct watcher {
    explicit watcher(asio::io_context& ctx) : desc(ctx) {}
    asio::posix::stream_descriptor desc;
    unsigned generation = 0;  ///< bumped on every release: stale handlers ignore themselves
    int fd = -1;
    bool want_read = false, want_write = false, reading = false, writing = false;
  };

  void detach(curl_transfer& t) {
    t.attached = false;
    for (auto& p : attached_)
      if (p == &t) {
        p = attached_.back();
        attached_.pop_back();
        break;
      }
    if (multi_) curl_multi_remove_handle(multi_, t.easy);
  }

  static void release(watcher& w) {
    ++w.generation;
    w.want_read = w.want_write = w.reading = w.writing = false;
    if (w.desc.is_open()) {
      asio::error_code ignored;
      w.desc.cancel(ignored);
      (void)w.desc.release();  // curl owns the fd and closes it
    }
    w.fd = -1;
  }

  watcher* find(int fd) {
    if (fd < 0 || static_cast<std::size_t>(fd) >= by_fd_.size()) return nullptr;
    watcher* w = by_fd_[static_cast<std::size_t>(fd)].get();
    return w && w->fd == fd ? w : nullptr;
  }

  watcher& watch(int fd) {
    auto i = static_cast<std::size_t>(fd);
    if (i >= by_fd_.size()) by_fd_.resize(i + 64);
    auto& slot = by_fd_[i];
    if (!slot) slot = std::make_unique<watcher>(ctx_);  // kept for the next socket on this fd
    if (slot->fd != fd) {
      asio::error_code ec;
      slot->desc.assign(fd, ec);
      slot->fd = ec ? -1 : fd;
    }
    return *slot;
  }

  static int on_socket(CURL*, curl_socket_t fd, int what, void* userp, void*) {
    auto* self = static_cast<curl_service*>(userp);
    if (what == CURL_POLL_REMOVE) {
      if (watcher* w = self->find(fd)) release(*w);
      return 0;
    }
    watcher& w = self->watch(fd);
    if (w.fd != fd) return -1;  // could not register: curl fails the transfer
    w.want_read = what == CURL_POLL_IN || what == CURL_POLL_INOUT;
    w.want_write = what == CURL_POLL_OUT || what == CURL_POLL_INOUT;
    self->arm(w);
    return 0;
  }

  static int on_close_socket(void* clientp, curl_socket_t fd) {
    auto* self = static_cast<curl_service*>(clientp);
    if (watcher* w = self->find(fd)) release(*w);
    return ::close(fd);
  }

  static int on_timer(CURLM*, long timeout_ms, void* userp) {
    auto* self = static_cast<curl_service*>(userp);
    if (timeout_ms < 0) {
      self->timer_.cancel();
      return 0;
    }
    // Never call back into curl from here: the timer fires from the event loop.
    self->timer_.expires_after(std::chrono::milliseconds(timeout_ms));
    self->timer_.async_wait([self](asio::error_code ec) {
      if (ec || !self->multi_) return;
      int running = 0;
      curl_multi_socket_action(self->multi_, CURL_SOCKET_TIMEOUT, 0, &running);
      self->collect();
    });
    return 0;
  }

  void arm(watcher& w) {
    const unsigned gen = w.generation;
    if (w.want_read && !w.reading) {
      w.reading = true;
      w.desc.async_wait(asio::posix::descriptor_base::wait_read,
                        [this, &w, gen](asio::error_code ec) {
                          if (w.generation != gen) return;
                          w.reading = false;
                          if (ec || !multi_ || !w.want_read) return;
                          act(w, CURL_CSELECT_IN);
                        });
    }
    if (w.want_write && !w.writing) {
      w.writing = true;
      w.desc.async_wait(asio::posix::descriptor_base::wait_write,
                        [this, &w, gen](asio::error_code ec) {
                          if (w.generation != gen) return;
                          w.writing = false;
                          if (ec || !multi_ || !w.want_write) return;
                          act(w, CURL_CSELECT_OUT);
                        });
    }
  }

  void act(watcher& w, int events) {
    const unsigned gen = w.generation;
    const int fd = w.fd;
    int running = 0;
    curl_multi_socket_action(multi_, fd, events, &running);
    if (w.generation == gen) arm(w);  // still the same socket: keep watching what curl wants
    collect();
  }

  /// Hand finished transfers back to their coroutines.
  void collect() {
    int left = 0;
    while (CURLMsg* m = curl_multi_info_read(multi_, &left)) {
      if (m->msg != CURLMSG_DONE) continue;
      curl_transfer* t = nullptr;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &t);
      CURLcode result = m->data.result;  // m is invalid once the handle is removed
      if (!t) continue;
      t->result = result;
      t->done = true;
      detach(*t);  // closes the connection now (FORBID_REUSE)
      if (t->waiter) {
        t->waiter->cancel();
      }
    }
  }

  asio::io_context& ctx_;
  asio::steady_timer timer_;
  CURLM* multi_ = nullptr;
  std::vector<std::unique_ptr<watcher>> by_fd_;  ///< indexed by fd; entries reused
  std::vector<curl_transfer*> attached_;
  std::vector<CURL*> spare_easy_;
};

}  // namespace sonde::detail
