// The one Catch2 main translation unit, compiled once.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
