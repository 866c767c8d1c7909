#pragma once
/// @file version.hpp
/// sonde's version, as macros (for the plugin fingerprint) and as a constant.

#define SONDE_VERSION_MAJOR 0
#define SONDE_VERSION_MINOR 1
#define SONDE_VERSION_PATCH 0
#define SONDE_VERSION_STRING "0.1.0"

namespace sonde {
/// The toolkit's version string, "MAJOR.MINOR.PATCH".
inline constexpr const char* version_string = SONDE_VERSION_STRING;
}  // namespace sonde
