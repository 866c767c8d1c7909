#pragma once
// Driving a plugin through its C entry points, as the engine does: load the shared object and
// run one instance once on a fresh io_context, capturing what the result callback saw.
#include <dlfcn.h>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <asio/io_context.hpp>
#include <sonde/plugin.hpp>
#include <sonde/probe.hpp>

namespace sonde::test {

/// The descriptor of the build tree's sonde-<name>.so, opened with dlopen (never closed:
/// plugins are never unloaded). Throws when the file or its entry point is missing.
inline const sonde_plugin_descriptor* plugin_descriptor(const std::string& name) {
  const std::string path = std::string(SONDE_TEST_PLUGIN_DIR) + "/sonde-" + name + ".so";
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) throw std::runtime_error("dlopen " + path + ": " + dlerror());
  auto entry =
      reinterpret_cast<const sonde_plugin_descriptor* (*)()>(dlsym(h, SONDE_PLUGIN_ENTRY_NAME));
  if (!entry) throw std::runtime_error(path + ": no " SONDE_PLUGIN_ENTRY_NAME);
  return entry();
}

/// What one run reported through the C result callback.
struct c_result {
  bool done = false;
  int has_observation = -1;
  int reason = -1;
  std::string message;
  std::vector<std::pair<std::string, double>> metrics;

  std::optional<double> metric(std::string_view name) const {
    for (const auto& [n, v] : metrics)
      if (n == name) return v;
    return std::nullopt;
  }
};

/// Run instance `inst` of type `t` once, with a deadline `timeout` from now, on its own
/// io_context.
inline c_result run_c(const sonde_probe_type& t, void* inst, std::chrono::milliseconds timeout) {
  c_result out;
  asio::io_context io;
  const auto dl = std::chrono::duration_cast<std::chrono::nanoseconds>(
                      (clock::now() + timeout).time_since_epoch())
                      .count();
  t.run(
      inst, &io, dl,
      [](void* user, const sonde_result* r) {
        auto* o = static_cast<c_result*>(user);
        o->done = true;
        o->has_observation = r->has_observation;
        o->reason = r->reason;
        o->message = r->message ? r->message : "";
        for (std::size_t i = 0; i < r->metric_count; ++i)
          o->metrics.emplace_back(r->metrics[i].name ? r->metrics[i].name : "?",
                                  r->metrics[i].value);
      },
      &out);
  io.run();
  return out;
}

}  // namespace sonde::test
