#pragma once
/// @file engine_info.hpp
/// Build facts of the engine.
namespace sonde::engine {
/// The plugin fingerprint this engine was built with; plugins must match it exactly.
const char* engine_fingerprint() noexcept;
/// The compiled-in install plugin directory (<prefix>/<libdir>/sonde/plugins).
const char* install_plugin_dir() noexcept;
}  // namespace sonde::engine
