# FindAsio: standalone ASIO (Debian's libasio-dev ships no CMake config or .pc file).
# Defines the imported target Asio::asio (header-only, ASIO_STANDALONE) and Asio_VERSION.
include_guard(GLOBAL)
find_path(Asio_INCLUDE_DIR NAMES asio.hpp asio/version.hpp)
if(Asio_INCLUDE_DIR AND EXISTS "${Asio_INCLUDE_DIR}/asio/version.hpp")
  file(STRINGS "${Asio_INCLUDE_DIR}/asio/version.hpp" _asio_ver REGEX "^#define ASIO_VERSION [0-9]+")
  string(REGEX MATCH "[0-9]+" _asio_num "${_asio_ver}")
  math(EXPR _asio_major "${_asio_num} / 100000")
  math(EXPR _asio_minor "${_asio_num} / 100 % 1000")
  math(EXPR _asio_patch "${_asio_num} % 100")
  set(Asio_VERSION "${_asio_major}.${_asio_minor}.${_asio_patch}")
endif()
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Asio REQUIRED_VARS Asio_INCLUDE_DIR VERSION_VAR Asio_VERSION)
if(Asio_FOUND AND NOT TARGET Asio::asio)
  find_package(Threads REQUIRED)
  add_library(Asio::asio INTERFACE IMPORTED)
  set_target_properties(Asio::asio PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${Asio_INCLUDE_DIR}"
    # ASIO_DISABLE_STD_ALIGNED_ALLOC: otherwise ASIO picks aligned_alloc or operator new depending
    # on whether a libstdc++ header came first in each translation unit, and engine and plugins
    # then free each other's handler memory with the wrong function (ASan: alloc-dealloc-mismatch).
    INTERFACE_COMPILE_DEFINITIONS "ASIO_STANDALONE;ASIO_NO_DEPRECATED;ASIO_DISABLE_STD_ALIGNED_ALLOC"
    INTERFACE_LINK_LIBRARIES Threads::Threads)
endif()
