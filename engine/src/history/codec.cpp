// The history store's binary encodings. See codec.hpp.
#include "history/codec.hpp"

#include <bit>
#include <cmath>
#include <cstring>

namespace sonde::engine::history {

void put_varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void put_svarint(std::string& out, std::int64_t v) {
  put_varint(out, (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63));
}

void put_f64(std::string& out, double v) {
  auto bits = std::bit_cast<std::uint64_t>(v);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
}

namespace {
void put_f32(std::string& out, float v) {
  auto bits = std::bit_cast<std::uint32_t>(v);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
}
}  // namespace

bool reader::varint(std::uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (p_ == end_) return false;
    auto b = static_cast<unsigned char>(*p_++);
    if (shift == 63 && b > 1) return false;
    v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

bool reader::svarint(std::int64_t& v) {
  std::uint64_t u = 0;
  if (!varint(u)) return false;
  v = static_cast<std::int64_t>(u >> 1) ^ -static_cast<std::int64_t>(u & 1);
  return true;
}

bool reader::f64(double& v) {
  if (end_ - p_ < 8) return false;
  std::uint64_t bits = 0;
  for (int i = 0; i < 8; ++i)
    bits |= static_cast<std::uint64_t>(static_cast<unsigned char>(p_[i])) << (8 * i);
  p_ += 8;
  v = std::bit_cast<double>(bits);
  return true;
}

bool reader::f32(float& v) {
  if (end_ - p_ < 4) return false;
  std::uint32_t bits = 0;
  for (int i = 0; i < 4; ++i)
    bits |= static_cast<std::uint32_t>(static_cast<unsigned char>(p_[i])) << (8 * i);
  p_ += 4;
  v = std::bit_cast<float>(bits);
  return true;
}

std::string encode_metrics(const std::vector<id_value>& m) {
  std::string out;
  out.reserve(m.size() * 5);
  for (const auto& [id, v] : m) {
    if (std::isfinite(v) && v == std::trunc(v) && std::fabs(v) < 9007199254740992.0) {
      put_varint(out, std::uint64_t{id} << 2);
      put_svarint(out, static_cast<std::int64_t>(v));
    } else if (static_cast<double>(static_cast<float>(v)) == v || std::isnan(v)) {
      put_varint(out, (std::uint64_t{id} << 2) | 1);
      put_f32(out, static_cast<float>(v));
    } else {
      put_varint(out, (std::uint64_t{id} << 2) | 2);
      put_f64(out, v);
    }
  }
  return out;
}

std::optional<std::vector<id_value>> decode_metrics(std::string_view blob) {
  std::vector<id_value> out;
  reader r(blob);
  while (!r.done()) {
    std::uint64_t key = 0;
    if (!r.varint(key) || (key >> 2) > 0xffffffffu) return std::nullopt;
    id_value iv;
    iv.id = static_cast<std::uint32_t>(key >> 2);
    switch (key & 3) {
      case 0: {
        std::int64_t i = 0;
        if (!r.svarint(i)) return std::nullopt;
        iv.value = static_cast<double>(i);
        break;
      }
      case 1: {
        float f = 0;
        if (!r.f32(f)) return std::nullopt;
        iv.value = f;
        break;
      }
      case 2:
        if (!r.f64(iv.value)) return std::nullopt;
        break;
      default:
        return std::nullopt;
    }
    out.push_back(iv);
  }
  return out;
}

void summary::add(double v) {
  if (std::isnan(v)) return;
  if (n == 0) {
    min = max = v;
  } else {
    min = std::min(min, v);
    max = std::max(max, v);
  }
  sum += v;
  ++n;
  hist.add(v);
}

void summary::merge(const summary& o) {
  if (o.n == 0) return;
  if (n == 0) {
    min = o.min;
    max = o.max;
  } else {
    min = std::min(min, o.min);
    max = std::max(max, o.max);
  }
  sum += o.sum;
  n += o.n;
  hist.merge(o.hist);
}

void encode_summary(std::string& out, const summary& s) {
  put_varint(out, s.n);
  if (s.n == 0) return;
  put_f64(out, s.min);
  put_f64(out, s.max);
  put_f64(out, s.sum);
  s.hist.encode(out);
}

bool decode_summary(reader& r, summary& s) {
  s = summary{};
  if (!r.varint(s.n)) return false;
  if (s.n == 0) return true;
  if (!r.f64(s.min) || !r.f64(s.max) || !r.f64(s.sum)) return false;
  if (!s.hist.decode(r)) return false;
  return s.hist.count() == s.n && !std::isnan(s.min) && !std::isnan(s.max) && s.min <= s.max;
}

std::string encode_summaries(const std::vector<std::pair<std::uint32_t, summary>>& m) {
  std::string out;
  put_varint(out, m.size());
  for (const auto& [id, s] : m) {
    put_varint(out, id);
    encode_summary(out, s);
  }
  return out;
}

std::optional<std::vector<std::pair<std::uint32_t, summary>>> decode_summaries(
    std::string_view blob) {
  std::vector<std::pair<std::uint32_t, summary>> out;
  if (blob.empty()) return out;
  reader r(blob);
  std::uint64_t n = 0;
  if (!r.varint(n) || n > blob.size()) return std::nullopt;
  for (std::uint64_t k = 0; k < n; ++k) {
    std::uint64_t id = 0;
    summary s;
    if (!r.varint(id) || id > 0xffffffffu || !decode_summary(r, s)) return std::nullopt;
    out.emplace_back(static_cast<std::uint32_t>(id), std::move(s));
  }
  if (!r.done()) return std::nullopt;
  return out;
}

}  // namespace sonde::engine::history
