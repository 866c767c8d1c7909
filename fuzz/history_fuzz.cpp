// libFuzzer target: the history store's blob decoders (engine/src/history/codec.hpp), which
// read columns of a file anyone can edit. Input: one byte choosing the decoder, then the blob.
// Checks that decoding never reads out of bounds, that what decodes re-encodes to something
// that decodes to the same values, and that quantiles of a decoded histogram stay finite and
// ordered.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "history/codec.hpp"

namespace h = sonde::engine::history;

static void check_summary(const h::summary& s) {
  if (s.n == 0) return;
  double prev = -INFINITY;
  for (double q : {0.001, 0.5, 0.9, 0.99, 1.0}) {
    double v = s.hist.quantile(q);
    if (std::isnan(v) || v < prev) __builtin_trap();
    prev = v;
  }
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0: {
      auto m = h::decode_metrics(in);
      if (!m) return 0;
      auto again = h::decode_metrics(h::encode_metrics(*m));
      if (!again || again->size() != m->size()) __builtin_trap();
      for (std::size_t i = 0; i < m->size(); ++i) {
        double a = (*m)[i].value, b = (*again)[i].value;
        if ((*m)[i].id != (*again)[i].id || (a != b && !(std::isnan(a) && std::isnan(b))))
          __builtin_trap();
      }
      break;
    }
    case 1: {
      auto s = h::decode_summaries(in);
      if (!s) return 0;
      for (auto& [id, sm] : *s) check_summary(sm);
      auto again = h::decode_summaries(h::encode_summaries(*s));
      if (!again || again->size() != s->size()) __builtin_trap();
      break;
    }
    default: {
      h::reader r(in);
      h::summary s;
      if (!h::decode_summary(r, s)) return 0;
      check_summary(s);
      h::summary merged = s;
      merged.merge(s);
      if (merged.n != 2 * s.n || merged.hist.count() != 2 * s.hist.count()) __builtin_trap();
      std::string enc;
      h::encode_summary(enc, s);
      h::reader r2(enc);
      h::summary back;
      if (!h::decode_summary(r2, back) || back.n != s.n || !r2.done()) __builtin_trap();
      break;
    }
  }
  return 0;
}
