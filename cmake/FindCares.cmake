# FindCares: c-ares through pkg-config (Debian 12 ships libcares.pc, no CMake config).
# Defines the imported target Cares::cares.
include_guard(GLOBAL)
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(PC_CARES QUIET libcares)
endif()
find_path(Cares_INCLUDE_DIR NAMES ares.h HINTS ${PC_CARES_INCLUDE_DIRS})
find_library(Cares_LIBRARY NAMES cares HINTS ${PC_CARES_LIBRARY_DIRS})
set(Cares_VERSION "${PC_CARES_VERSION}")
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Cares REQUIRED_VARS Cares_LIBRARY Cares_INCLUDE_DIR VERSION_VAR Cares_VERSION)
if(Cares_FOUND AND NOT TARGET Cares::cares)
  add_library(Cares::cares UNKNOWN IMPORTED)
  set_target_properties(Cares::cares PROPERTIES
    IMPORTED_LOCATION "${Cares_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${Cares_INCLUDE_DIR}")
endif()
