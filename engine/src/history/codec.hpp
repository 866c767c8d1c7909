#pragma once
/// @file codec.hpp
/// The compact binary forms the history store keeps in BLOB columns (docs/history.md
/// "Encodings"): varints, a result's metrics, and a metric's summary (count, min, max, sum and a
/// log-bucket histogram). Written by sonde and read back from a file anyone can edit, so every
/// decoder checks every length and fails cleanly (fuzz/history_fuzz.cpp).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "history/histogram.hpp"

namespace sonde::engine::history {

/// Appends LEB128 unsigned varints / zigzag signed varints.
void put_varint(std::string& out, std::uint64_t v);
void put_svarint(std::string& out, std::int64_t v);
void put_f64(std::string& out, double v);

/// A cursor over an encoded blob. Every read returns false (and leaves the cursor failed) when
/// the input ends early or is malformed.
class reader {
 public:
  explicit reader(std::string_view in) : p_(in.data()), end_(in.data() + in.size()) {}
  bool varint(std::uint64_t& v);
  bool svarint(std::int64_t& v);
  bool f64(double& v);
  bool f32(float& v);
  bool done() const { return p_ == end_; }

 private:
  const char* p_;
  const char* end_;
};

/// One named value of a result, by the store's metric-name id.
struct id_value {
  std::uint32_t id = 0;
  double value = 0;
};

/// Metrics of one result: per metric a varint (id << 2 | form) then the value in the smallest
/// exact form: 0 integer (zigzag varint), 1 float32, 2 float64.
std::string encode_metrics(const std::vector<id_value>& m);
std::optional<std::vector<id_value>> decode_metrics(std::string_view blob);

/// The summary of one metric over a bucket of time.
struct summary {
  std::uint64_t n = 0;
  double min = 0, max = 0, sum = 0;
  log_histogram hist;

  void add(double v);
  void merge(const summary& o);
  double avg() const { return n ? sum / static_cast<double>(n) : 0; }
};

/// varint n; if n > 0: f64 min, f64 max, f64 sum, then the histogram.
void encode_summary(std::string& out, const summary& s);
bool decode_summary(reader& r, summary& s);

/// Several metrics' summaries: varint count, then per metric varint id and the summary.
std::string encode_summaries(const std::vector<std::pair<std::uint32_t, summary>>& m);
std::optional<std::vector<std::pair<std::uint32_t, summary>>> decode_summaries(
    std::string_view blob);

}  // namespace sonde::engine::history
