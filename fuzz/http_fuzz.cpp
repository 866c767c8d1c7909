// libFuzzer target: the http checker's own parsers (target URLs and expect_status ranges).
// Input: first byte selects the parser, the rest is the text.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <sonde/http.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 3) {
    case 0: (void)sonde::detail::parse_http_url(text, false); break;
    case 1: (void)sonde::detail::parse_http_url(text, true); break;
    default: {
      std::vector<std::string> items;
      std::size_t pos = 0;
      while (pos <= text.size() && items.size() < 64) {
        auto comma = text.find(',', pos);
        items.emplace_back(text.substr(pos, comma - pos));
        if (comma == std::string_view::npos) break;
        pos = comma + 1;
      }
      (void)sonde::detail::parse_status_ranges(items);
    }
  }
  return 0;
}
