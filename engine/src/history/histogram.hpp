#pragma once
/// @file histogram.hpp
/// A mergeable histogram with fixed logarithmic buckets (the scheme of DDSketch): a value v > 0
/// falls in bucket i = ceil(log(v) / log(gamma)) with gamma = (1 + a) / (1 - a), a = 1%; its
/// estimate 2 gamma^i / (gamma + 1) is within 1% of every value in the bucket. Negative values
/// mirror this; zero (and anything below 1e-9 in magnitude) has its own bucket. Two histograms
/// merge by adding counts, so per-minute histograms roll up into hours and days exactly, and a
/// quantile from the merge is what one histogram of all the values would give.

#include <cstdint>
#include <string>
#include <vector>

namespace sonde::engine::history {

class reader;

class log_histogram {
 public:
  /// Relative error bound of quantile estimates (for values of one sign).
  static constexpr double relative_error = 0.01;

  void add(double v, std::uint64_t count = 1);
  void merge(const log_histogram& o);
  std::uint64_t count() const { return total_; }
  /// The nearest-rank q-quantile (0 < q <= 1): the estimate of the value whose rank is
  /// ceil(q * count). 0 when empty.
  double quantile(double q) const;
  bool empty() const { return total_ == 0; }

  /// varint: number of non-empty buckets; per bucket: zigzag varint index delta (signed
  /// buckets first, then zero, then positive, in order) and varint count.
  void encode(std::string& out) const;
  bool decode(reader& r);

  /// The bucket index of a positive magnitude, and the estimate of a bucket.
  static int index_of(double magnitude);
  static double estimate(int index);

 private:
  struct side {
    int offset = 0;                     // index of counts[0]
    std::vector<std::uint64_t> counts;  // dense from offset
    void add(int index, std::uint64_t c);
  };
  side pos_, neg_;
  std::uint64_t zero_ = 0, total_ = 0;
};

}  // namespace sonde::engine::history
