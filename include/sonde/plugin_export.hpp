#pragma once
/// @file plugin_export.hpp
/// Turn checkers into a plugin: `SONDE_PLUGIN_EXPORT(name, description, types...)`.
///
///     #include <sonde/plugin_export.hpp>
///     #include <sonde/tcp.hpp>
///     SONDE_PLUGIN_EXPORT("tcp", "TCP connect checks",
///                         sonde::plugin_type<sonde::tcp_probe>())
///
/// `plugin_type<P>(aliases...)` adapts a checker to the C ABI of plugin.hpp: it builds the
/// option/metric tables from `P::option_table`/`P::metric_table` (string literals), converts
/// option values, runs `P::run` as a coroutine on the engine's io_context and reports the
/// outcome through the C callback. Exceptions are caught at the boundary.

#include <array>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>

#include "plugin.hpp"
#include "probe.hpp"

namespace sonde {
namespace detail {

/// Copy `text` into a fixed C buffer. A text too long keeps its beginning and its end (where
/// the reason usually is) around " ... ": a cut at the end alone would lose why.
template <std::size_t N>
void copy_bounded(char (&out)[N], const std::string& text) {
  static_assert(N > 64);
  if (text.size() < N) {
    std::memcpy(out, text.c_str(), text.size() + 1);
    return;
  }
  constexpr std::string_view gap = " ... ";
  constexpr std::size_t head = (N - 1 - gap.size()) / 3;
  constexpr std::size_t tail = N - 1 - gap.size() - head;
  std::memcpy(out, text.data(), head);
  std::memcpy(out + head, gap.data(), gap.size());
  std::memcpy(out + head + gap.size(), text.data() + text.size() - tail, tail);
  out[N - 1] = '\0';
}

inline void fill_error(sonde_error* out, const probe_error& e) {
  if (!out) return;
  out->code = static_cast<int32_t>(e.code);
  std::snprintf(out->key, sizeof out->key, "%s", e.key.c_str());
  copy_bounded(out->message, e.message);
}

/// The probe_error for an exception that escaped a probe: a system_error saying that the
/// engine ran out of descriptors or memory (ASIO throws one when, say, its reactor cannot
/// register a socket) is `resource` with the shared wording; anything else is `internal`.
inline probe_error exception_error(const std::exception& e) {
  if (auto* se = dynamic_cast<const std::system_error*>(&e);
      se && se->code().category() == std::system_category())
    if (auto x = local_exhaustion_error(se->code().value(),
                                        std::string("running a probe (") + se->what() + ")"))
      return std::move(*x);
  return probe_error{probe_errc::internal, "", std::string("exception: ") + e.what()};
}

/// Convert a C option value back into a typed option_value.
inline option_value from_c(const sonde_value& v) {
  switch (v.type) {
    case SONDE_VALUE_BOOL:
      return v.boolean != 0;
    case SONDE_VALUE_INT:
      return static_cast<std::int64_t>(v.integer);
    case SONDE_VALUE_NUMBER:
      return v.number;
    case SONDE_VALUE_DURATION:
      return duration(v.integer);
    case SONDE_VALUE_STRING_LIST: {
      std::vector<std::string> items;
      for (std::size_t i = 0; i < v.list_len; ++i) items.emplace_back(v.list[i] ? v.list[i] : "");
      return items;
    }
    default:
      return std::string(v.string ? v.string : "");
  }
}

/// Deliver a probe_result through the C callback.
inline void deliver(const probe_result& r, sonde_result_fn done, void* user) {
  sonde_result c{};
  std::array<sonde_metric, 48> inline_metrics;
  std::vector<sonde_metric> more;
  sonde_metric* ms = inline_metrics.data();
  if (r) {
    c.has_observation = 1;
    c.reason = static_cast<int32_t>(r->why);
    c.start_unix_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(r->start.time_since_epoch()).count();
    c.latency_ns = r->latency ? r->latency->count() : -1;
    c.message = r->message.c_str();
    if (r->metrics.size() > inline_metrics.size()) {
      more.resize(r->metrics.size());
      ms = more.data();
    }
    for (std::size_t i = 0; i < r->metrics.size(); ++i)
      ms[i] = sonde_metric{r->metrics[i].name.c_str(), r->metrics[i].value};
    c.metrics = ms;
    c.metric_count = r->metrics.size();
  } else {
    c.has_observation = 0;
    c.reason = static_cast<int32_t>(reason::error);
    c.latency_ns = -1;
    c.message = r.error().message.c_str();
    c.error_code = static_cast<int32_t>(r.error().code);
    c.error_key = r.error().key.c_str();
  }
  done(user, &c);
}

template <class P>
struct probe_adapter {
  struct instance {
    P probe;
    target where;
  };

  /// The last option list create() validated on this thread and the probe made from it. Task
  /// files built on [defaults] create thousands of probes from identical options: those are
  /// validated once and copied after that.
  struct made_from {
    std::vector<std::pair<std::string, option_value>> options;  // as given, in order
    P probe;
  };
  static bool same_options(const made_from& m, const sonde_option* opts, std::size_t n) {
    if (m.options.size() != n) return false;
    for (std::size_t i = 0; i < n; ++i) {
      const auto& [key, v] = m.options[i];
      const sonde_value& c = opts[i].value;
      if (!opts[i].key || key != opts[i].key) return false;
      if (c.type == SONDE_VALUE_STRING) {  // compared in place: no string built per task
        auto* str = std::get_if<std::string>(&v);
        if (!str || *str != (c.string ? c.string : "")) return false;
      } else if (v != from_c(c)) {
        return false;
      }
    }
    return true;
  }

  static int create(const char* target_text, const sonde_option* opts, std::size_t n, void** out,
                    sonde_error* err) noexcept {
    try {
      auto t = parse_target_for<P>(target_text ? target_text : "");
      if (!t) {
        fill_error(err, t.error());
        return -1;
      }
      if constexpr (std::is_copy_constructible_v<P>) {
        thread_local std::optional<made_from> last;
        if (last && same_options(*last, opts, n)) {
          *out = new instance{last->probe, std::move(*t)};
          return 0;
        }
        std::vector<std::pair<std::string, option_value>> given;
        given.reserve(n);
        option_set set;
        for (std::size_t i = 0; i < n; ++i) {
          given.emplace_back(opts[i].key, from_c(opts[i].value));
          set.set(given.back().first, given.back().second);
        }
        auto p = make_probe<P>(set);
        if (!p) {
          fill_error(err, p.error());
          return -1;
        }
        last.emplace(made_from{std::move(given), *p});
        *out = new instance{std::move(*p), std::move(*t)};
        return 0;
      } else {
        option_set set;
        for (std::size_t i = 0; i < n; ++i) set.set(opts[i].key, from_c(opts[i].value));
        auto p = make_probe<P>(set);
        if (!p) {
          fill_error(err, p.error());
          return -1;
        }
        *out = new instance{std::move(*p), std::move(*t)};
        return 0;
      }
    } catch (const std::exception& e) {
      fill_error(err, exception_error(e));
    } catch (...) {
      fill_error(err, probe_error{probe_errc::internal, "", "unknown exception"});
    }
    return -1;
  }

  static asio::awaitable<void> run_one(instance* inst, deadline dl, sonde_result_fn done,
                                       void* user) {
    std::optional<probe_result> r;  // no placeholder result built (and freed) on every run
    try {
      r.emplace(co_await inst->probe.run(inst->where, dl));
    } catch (const std::exception& e) {
      r.emplace(tl::unexpected(exception_error(e)));
    } catch (...) {
      r.emplace(tl::unexpected(probe_error{probe_errc::internal, "", "unknown exception"}));
    }
    deliver(*r, done, user);
  }

  static void run(void* inst, void* io, std::int64_t deadline_ns, sonde_result_fn done,
                  void* user) noexcept {
    try {
      auto& ctx = *static_cast<asio::io_context*>(io);
      deadline dl{
          std::chrono::duration_cast<clock::duration>(std::chrono::nanoseconds(deadline_ns))};
      asio::co_spawn(ctx, run_one(static_cast<instance*>(inst), dl, done, user), asio::detached);
    } catch (const std::exception& e) {
      auto pe = exception_error(e);
      if (pe.code == probe_errc::internal) pe = probe_error{probe_errc::resource, "", e.what()};
      deliver(tl::unexpected(std::move(pe)), done, user);
    }
  }

  static void destroy(void* inst) noexcept { delete static_cast<instance*>(inst); }

  static const std::vector<sonde_option_desc>& options() {
    static const std::vector<sonde_option_desc> v = [] {
      std::vector<sonde_option_desc> out;
      for (const auto& o : P::option_table)
        out.push_back(
            {o.key.data(), static_cast<int32_t>(o.type), o.default_value.data(), o.help.data()});
      return out;
    }();
    return v;
  }
  static const std::vector<sonde_metric_desc>& metrics() {
    static const std::vector<sonde_metric_desc> v = [] {
      std::vector<sonde_metric_desc> out;
      for (const auto& m : P::metric_table)
        out.push_back({m.name.data(), m.unit.data(), m.help.data()});
      return out;
    }();
    return v;
  }
  static const std::vector<sonde_enum_desc>& enums() {
    static const std::vector<sonde_enum_desc> v = [] {
      std::vector<sonde_enum_desc> out;
      if constexpr (requires { P::metric_enums; }) {
        for (const auto& e : P::metric_enums)
          out.push_back({e.metric.data(), e.name.data(), e.value});
      }
      return out;
    }();
    return v;
  }
};

}  // namespace detail

/// The C descriptor of checker P, with optional aliases (string literals).
template <probe P>
sonde_probe_type plugin_type(std::initializer_list<const char*> aliases = {}) {
  static const std::vector<const char*> alias_storage(aliases);
  using A = detail::probe_adapter<P>;
  sonde_probe_type t{};
  t.name = P::kind.data();
  t.aliases = alias_storage.data();
  t.alias_count = alias_storage.size();
  t.summary = P::summary.data();
  t.target_form = P::target_form.data();
  t.options = A::options().data();
  t.option_count = A::options().size();
  t.metrics = A::metrics().data();
  t.metric_count = A::metrics().size();
  t.enums = A::enums().data();
  t.enum_count = A::enums().size();
  t.create = &A::create;
  t.run = &A::run;
  t.destroy = &A::destroy;
  return t;
}

}  // namespace sonde

/// Define the plugin's exported symbols. `...` is one or more sonde::plugin_type<P>(...).
#define SONDE_PLUGIN_EXPORT(NAME, DESCRIPTION, ...)                                \
  SONDE_PLUGIN_API const uint32_t sonde_plugin_abi_major = SONDE_PLUGIN_ABI_MAJOR; \
  SONDE_PLUGIN_API const sonde_plugin_descriptor* SONDE_PLUGIN_ENTRY(void) {       \
    static const sonde_probe_type types[] = {__VA_ARGS__};                         \
    static const sonde_plugin_descriptor d = {SONDE_PLUGIN_ABI_MAJOR,              \
                                              SONDE_PLUGIN_ABI_MINOR,              \
                                              sizeof(sonde_plugin_descriptor),     \
                                              0,                                   \
                                              NAME,                                \
                                              SONDE_VERSION_STRING,                \
                                              SONDE_PLUGIN_FINGERPRINT,            \
                                              DESCRIPTION,                         \
                                              types,                               \
                                              sizeof(types) / sizeof(types[0]),    \
                                              {}};                                 \
    return &d;                                                                     \
  }
