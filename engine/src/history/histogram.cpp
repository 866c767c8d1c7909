// The log-bucket histogram. See histogram.hpp.
#include "history/histogram.hpp"

#include <algorithm>
#include <cmath>

#include "history/codec.hpp"

namespace sonde::engine::history {

namespace {

constexpr double gamma_v =
    (1 + log_histogram::relative_error) / (1 - log_histogram::relative_error);
const double log_gamma = std::log(gamma_v);
constexpr double min_magnitude = 1e-9;              // below: the zero bucket
constexpr double max_magnitude = 1e15;              // above: the top bucket
constexpr int min_index = -1037, max_index = 1728;  // index_of(1e-9), index_of(1e15)
constexpr std::uint64_t max_total = std::uint64_t{1} << 62;

}  // namespace

int log_histogram::index_of(double m) {
  m = std::clamp(m, min_magnitude, max_magnitude);
  int i = static_cast<int>(std::ceil(std::log(m) / log_gamma));
  return std::clamp(i, min_index, max_index);
}

double log_histogram::estimate(int index) {
  return 2 * std::exp(index * log_gamma) / (gamma_v + 1);
}

void log_histogram::side::add(int index, std::uint64_t c) {
  if (counts.empty()) {
    offset = index;
    counts.assign(1, 0);
  } else if (index < offset) {
    counts.insert(counts.begin(), static_cast<std::size_t>(offset - index), 0);
    offset = index;
  } else if (index >= offset + static_cast<int>(counts.size())) {
    counts.resize(static_cast<std::size_t>(index - offset + 1), 0);
  }
  counts[static_cast<std::size_t>(index - offset)] += c;
}

void log_histogram::add(double v, std::uint64_t count) {
  if (std::isnan(v) || count == 0) return;
  double m = std::fabs(v);
  if (m < min_magnitude)
    zero_ += count;
  else if (v > 0)
    pos_.add(index_of(m), count);
  else
    neg_.add(index_of(m), count);
  total_ += count;
}

void log_histogram::merge(const log_histogram& o) {
  for (std::size_t i = 0; i < o.pos_.counts.size(); ++i)
    if (o.pos_.counts[i]) pos_.add(o.pos_.offset + static_cast<int>(i), o.pos_.counts[i]);
  for (std::size_t i = 0; i < o.neg_.counts.size(); ++i)
    if (o.neg_.counts[i]) neg_.add(o.neg_.offset + static_cast<int>(i), o.neg_.counts[i]);
  zero_ += o.zero_;
  total_ += o.total_;
}

double log_histogram::quantile(double q) const {
  if (total_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total_)));
  rank = std::clamp<std::uint64_t>(rank, 1, total_);
  std::uint64_t seen = 0;
  // Most negative first: the largest magnitude of the negative side.
  for (std::size_t k = neg_.counts.size(); k-- > 0;) {
    seen += neg_.counts[k];
    if (seen >= rank) return -estimate(neg_.offset + static_cast<int>(k));
  }
  seen += zero_;
  if (seen >= rank) return 0;
  for (std::size_t k = 0; k < pos_.counts.size(); ++k) {
    seen += pos_.counts[k];
    if (seen >= rank) return estimate(pos_.offset + static_cast<int>(k));
  }
  return pos_.counts.empty() ? 0 : estimate(pos_.offset + static_cast<int>(pos_.counts.size()) - 1);
}

namespace {

void encode_side(std::string& out, const std::vector<std::uint64_t>& counts, int offset) {
  std::uint64_t n = 0;
  for (auto c : counts) n += c != 0;
  put_varint(out, n);
  std::int64_t prev = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    if (!counts[i]) continue;
    std::int64_t idx = offset + static_cast<std::int64_t>(i);
    put_svarint(out, idx - prev);
    put_varint(out, counts[i]);
    prev = idx;
  }
}

}  // namespace

void log_histogram::encode(std::string& out) const {
  encode_side(out, neg_.counts, neg_.offset);
  put_varint(out, zero_);
  encode_side(out, pos_.counts, pos_.offset);
}

bool log_histogram::decode(reader& r) {
  *this = log_histogram{};
  auto side_of = [&](side& s) {
    std::uint64_t n = 0;
    if (!r.varint(n) || n > static_cast<std::uint64_t>(max_index - min_index + 1)) return false;
    std::int64_t idx = 0;
    for (std::uint64_t k = 0; k < n; ++k) {
      std::int64_t d = 0;
      std::uint64_t c = 0;
      if (!r.svarint(d) || !r.varint(c)) return false;
      if ((k > 0 && d <= 0) || d < min_index - max_index || d > max_index - min_index) return false;
      idx += d;
      if (idx < min_index || idx > max_index || c == 0 || c > max_total - total_) return false;
      s.add(static_cast<int>(idx), c);
      total_ += c;
    }
    return true;
  };
  if (!side_of(neg_)) return false;
  std::uint64_t z = 0;
  if (!r.varint(z) || z > max_total - total_) return false;
  zero_ = z;
  total_ += z;
  return side_of(pos_);
}

}  // namespace sonde::engine::history
