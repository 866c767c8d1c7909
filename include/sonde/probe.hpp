#pragma once
/// @file probe.hpp
/// The uniform probe interface and the small pieces every checker shares.
///
/// A checker is a type `P` with
///   - `static constexpr std::string_view kind`                   the type name ("tcp")
///   - `struct options`                                          documented defaults
///   - `static constexpr port_rule target_ports`, `default_port` how targets are parsed
///   - `option_table`, `metric_table` (see options.hpp)
///   - `static tl::expected<options, probe_error> options_from(const option_set&)`
///   - `static tl::expected<P, probe_error> make(options)`         the validating factory
///   - `asio::awaitable<tl::expected<observation, probe_error>> run(target, deadline) const`
/// The coroutine runs on the caller's executor (an io_context executor), never blocks it, and
/// finishes by the deadline. The probe object must outlive the coroutine.

#include <chrono>
#include <concepts>
#include <span>
#include <string_view>

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/this_coro.hpp>
#include <tl/expected.hpp>

#include "error.hpp"
#include "options.hpp"
#include "result.hpp"
#include "target.hpp"

namespace sonde {

/// The monotonic clock every probe measures with.
using clock = std::chrono::steady_clock;
/// The time by which a probe run must have finished.
using deadline = clock::time_point;

/// What a probe run produces: an observation, or the reason it could not run.
using probe_result = tl::expected<observation, probe_error>;

/// The uniform probe interface (see the file comment).
template <class P>
concept probe = requires(const P& p, const option_set& set, target t, deadline d) {
  { P::kind } -> std::convertible_to<std::string_view>;
  typename P::options;
  { P::options_from(set) } -> std::same_as<tl::expected<typename P::options, probe_error>>;
  { P::make(std::declval<typename P::options>()) } -> std::same_as<tl::expected<P, probe_error>>;
  { p.run(t, d) } -> std::same_as<asio::awaitable<probe_result>>;
};

/// Build a probe of type P from option values: options_from + make.
template <probe P>
tl::expected<P, probe_error> make_probe(const option_set& set) {
  auto opts = P::options_from(set);
  if (!opts) return tl::unexpected(opts.error());
  return P::make(std::move(*opts));
}

/// Parse a target for probe type P (its port rule and default port).
template <class P>
tl::expected<target, probe_error> parse_target_for(std::string_view text) {
  auto t = parse_target(text, P::target_ports, P::default_port);
  if (!t) return tl::unexpected(probe_error{probe_errc::invalid_target, "target", t.error()});
  return std::move(*t);
}

namespace detail {
/// The io_context behind a coroutine's executor. The toolkit's shared services (resolver,
/// ICMP sockets) are per io_context.
inline asio::io_context& io_context_of(const asio::any_io_executor& ex) {
  return static_cast<asio::io_context&>(asio::query(ex, asio::execution::context));
}
/// Wall-clock now, for observation::start.
inline std::chrono::system_clock::time_point wall_now() {
  return std::chrono::system_clock::now();
}
/// Remaining time until `d`, never negative.
inline clock::duration remaining(deadline d) {
  auto r = d - clock::now();
  return r < clock::duration::zero() ? clock::duration::zero() : r;
}
}  // namespace detail

}  // namespace sonde
