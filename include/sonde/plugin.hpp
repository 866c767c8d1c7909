#pragma once
/// @file plugin.hpp
/// The plugin ABI: the C-layout descriptor a `sonde-<name>.so` exports, and its fingerprint.
///
/// A plugin exports two symbols:
///   - `sonde_plugin_abi_major` (const uint32_t): the ABI major it was built for. Its name never
///     changes, so an engine can tell "built for another ABI" from "not a sonde plugin".
///   - `sonde_plugin_entry_v<MAJOR>()`: returns the descriptor below.
/// The engine refuses a plugin whose ABI major differs, whose ABI minor is newer than the
/// engine's, or whose fingerprint differs from the engine's (the fingerprint pins the things
/// that must be identical for C++ objects such as asio::io_context to be shared: sonde version,
/// compiler, standard library ABI, ASIO version and configuration macros).
/// No C++ exception and no asio::error_code crosses this boundary.

#include <cstddef>  // also defines _GLIBCXX_USE_CXX11_ABI, part of the fingerprint
#include <cstdint>

#include <asio/version.hpp>

#include "version.hpp"

#define SONDE_PLUGIN_ABI_MAJOR 1
#define SONDE_PLUGIN_ABI_MINOR 0
#define SONDE_PLUGIN_ENTRY sonde_plugin_entry_v1
#define SONDE_PLUGIN_ENTRY_NAME "sonde_plugin_entry_v1"
#define SONDE_PLUGIN_ABI_SYMBOL "sonde_plugin_abi_major"
#define SONDE_PLUGIN_API extern "C" __attribute__((visibility("default")))

#define SONDE_DETAIL_STR2(x) #x
#define SONDE_DETAIL_STR(x) SONDE_DETAIL_STR2(x)

#if defined(ASIO_STANDALONE)
#define SONDE_DETAIL_FP_STANDALONE "standalone"
#else
#define SONDE_DETAIL_FP_STANDALONE "boost"
#endif
#if defined(ASIO_NO_DEPRECATED)
#define SONDE_DETAIL_FP_NODEPR ",no_deprecated"
#else
#define SONDE_DETAIL_FP_NODEPR ""
#endif
#if defined(ASIO_NO_TYPEID)
#define SONDE_DETAIL_FP_NOTYPEID ",no_typeid"
#else
#define SONDE_DETAIL_FP_NOTYPEID ""
#endif
#if defined(ASIO_DISABLE_STD_ALIGNED_ALLOC)
#define SONDE_DETAIL_FP_ALIGNED ",no_std_aligned_alloc"
#else
#define SONDE_DETAIL_FP_ALIGNED ""
#endif
#if defined(ASIO_HAS_IO_URING) || defined(ASIO_DISABLE_EPOLL)
#define SONDE_DETAIL_FP_REACTOR ",reactor=nonstd"
#else
#define SONDE_DETAIL_FP_REACTOR ""
#endif
#if defined(ASIO_SEPARATE_COMPILATION) || defined(ASIO_DYN_LINK)
#define SONDE_DETAIL_FP_SEP ",separate"
#else
#define SONDE_DETAIL_FP_SEP ""
#endif
#if defined(ASIO_ENABLE_HANDLER_TRACKING)
#define SONDE_DETAIL_FP_TRACK ",tracking"
#else
#define SONDE_DETAIL_FP_TRACK ""
#endif
#if defined(__clang__)
#define SONDE_DETAIL_FP_CXX "clang-" __clang_version__
#elif defined(__GNUC__)
#define SONDE_DETAIL_FP_CXX "gcc-" __VERSION__
#else
#define SONDE_DETAIL_FP_CXX "unknown"
#endif
#if defined(_GLIBCXX_USE_CXX11_ABI)
#define SONDE_DETAIL_FP_STDLIB "libstdc++-abi" SONDE_DETAIL_STR(_GLIBCXX_USE_CXX11_ABI)
#else
#define SONDE_DETAIL_FP_STDLIB "other-stdlib"
#endif

/// The build fingerprint of this translation unit. Engine and plugin must agree exactly.
#if defined(SONDE_FINGERPRINT_OVERRIDE)
#define SONDE_PLUGIN_FINGERPRINT SONDE_FINGERPRINT_OVERRIDE
#else
#define SONDE_PLUGIN_FINGERPRINT                                                                 \
  "sonde " SONDE_VERSION_STRING "; " SONDE_DETAIL_FP_CXX "; " SONDE_DETAIL_FP_STDLIB             \
  "; asio " SONDE_DETAIL_STR(ASIO_VERSION) " " SONDE_DETAIL_FP_STANDALONE SONDE_DETAIL_FP_NODEPR \
      SONDE_DETAIL_FP_NOTYPEID SONDE_DETAIL_FP_REACTOR SONDE_DETAIL_FP_SEP SONDE_DETAIL_FP_TRACK
#endif

extern "C" {

/// Value types; equal to sonde::option_type.
enum {
  SONDE_VALUE_BOOL = 1,
  SONDE_VALUE_INT = 2,
  SONDE_VALUE_NUMBER = 3,
  SONDE_VALUE_STRING = 4,
  SONDE_VALUE_DURATION = 5, /* nanoseconds in `integer` */
  SONDE_VALUE_STRING_LIST = 6,
};

/// A typed option value. Only the field(s) matching `type` are meaningful.
typedef struct sonde_value {
  int32_t type;
  int32_t boolean;
  int64_t integer;
  double number;
  const char* string;
  const char* const* list;
  size_t list_len;
} sonde_value;

/// One option given to `create`.
typedef struct sonde_option {
  const char* key;
  sonde_value value;
} sonde_option;

/// One row of a probe type's option table.
typedef struct sonde_option_desc {
  const char* key;
  int32_t type;
  const char* default_value; /* text, "" when none */
  const char* help;
} sonde_option_desc;

/// One row of a probe type's metric table.
typedef struct sonde_metric_desc {
  const char* name;
  const char* unit;
  const char* help;
} sonde_metric_desc;

/// A symbolic metric value usable in conditions.
typedef struct sonde_enum_desc {
  const char* metric;
  const char* name;
  double value;
} sonde_enum_desc;

/// Why `create` failed: sonde::probe_errc value, offending key ("" if none), message.
typedef struct sonde_error {
  int32_t code;
  char key[64];
  char message[512];
} sonde_error;

typedef struct sonde_metric {
  const char* name;
  double value;
} sonde_metric;

/// The outcome of one run. Pointers are valid only during the callback.
typedef struct sonde_result {
  int32_t has_observation; /* 1: observation; 0: probe_error (error_code, error_key, message) */
  int32_t reason;          /* sonde::reason */
  int64_t start_unix_ns;
  int64_t latency_ns; /* -1 when there is none */
  const char* message;
  const sonde_metric* metrics;
  size_t metric_count;
  int32_t error_code; /* sonde::probe_errc when has_observation == 0 */
  const char* error_key;
} sonde_result;

/// Completion callback: called exactly once per run, on the io_context's thread (possibly
/// before `run` returns).
typedef void (*sonde_result_fn)(void* user, const sonde_result* result);

/// One probe type a plugin provides.
typedef struct sonde_probe_type {
  const char* name;
  const char* const* aliases;
  size_t alias_count;
  const char* summary;
  const char* target_form; /* e.g. "host:port" */
  const sonde_option_desc* options;
  size_t option_count;
  const sonde_metric_desc* metrics;
  size_t metric_count;
  const sonde_enum_desc* enums;
  size_t enum_count;
  /// Validate target and options and build a probe instance. 0 on success, else fills `error`.
  /// After the table's options the engine may pass the reserved option "timeout" (duration):
  /// the run timeout, so a checker can refuse a schedule that cannot finish in time.
  int (*create)(const char* target, const sonde_option* options, size_t option_count,
                void** instance, sonde_error* error);
  /// Start one run on `io_context` (an asio::io_context*), to finish by `deadline_ns`
  /// (std::chrono::steady_clock, nanoseconds since its epoch). The instance must stay alive
  /// until `done` has been called.
  void (*run)(void* instance, void* io_context, int64_t deadline_ns, sonde_result_fn done,
              void* user);
  void (*destroy)(void* instance);
  void* reserved[8];
} sonde_probe_type;

/// What `sonde_plugin_entry_v1()` returns. Version fields first, reserved space last.
typedef struct sonde_plugin_descriptor {
  uint32_t abi_major;
  uint32_t abi_minor;
  uint32_t struct_size;
  uint32_t reserved0;
  const char* name;
  const char* version;
  const char* fingerprint;
  const char* description;
  const sonde_probe_type* types;
  size_t type_count;
  void* reserved[8];
} sonde_plugin_descriptor;

typedef const sonde_plugin_descriptor* (*sonde_plugin_entry_fn)(void);

}  // extern "C"
