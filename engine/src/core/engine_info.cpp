// Build facts of the engine itself (its plugin fingerprint is computed in this TU's
// configuration, which matches the plugins' because both use sonde::probes).
#include "core/engine_info.hpp"
#include <sonde/plugin.hpp>

namespace sonde::engine {
const char* engine_fingerprint() noexcept {
  return SONDE_PLUGIN_FINGERPRINT;
}
const char* install_plugin_dir() noexcept {
  return SONDE_INSTALL_PLUGIN_DIR;
}
}  // namespace sonde::engine
