#pragma once
// The real plugins of the build tree plus the test fixture plugins, loaded once per test run.
#include <string>

#include "core/plugin_host.hpp"

namespace sonde::test {

inline const engine::plugin_host& plugins() {
  static engine::plugin_host* h = [] {  // never destroyed: plugins are never unloaded
    auto* p = new engine::plugin_host;
    p->load_dirs({{SONDE_TEST_PLUGIN_DIR, "test"},
                  {std::string(SONDE_TEST_FIXTURE_DIR) + "/plugins-test", "test"}});
    return p;
  }();
  return *h;
}

}  // namespace sonde::test
