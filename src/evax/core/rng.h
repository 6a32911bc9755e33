// Counter-based randomness: every random decision derives from (seed, stream ids), so results do not
// depend on thread count, scheduling or how far another stream advanced. Reproducible across
// platforms (no std:: distributions, whose output is implementation-defined).
#pragma once

#include <cmath>
#include <cstdint>
#include <initializer_list>

namespace evax {

/// SplitMix64 finaliser: a bijective 64-bit mix.
inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// Small, fast generator (xoshiro256**) seeded from a seed and any number of stream ids.
class Rng {
 public:
  /// Seeds from `seed` and stream ids, e.g. Rng(seed, {epoch, sample_index}).
  explicit Rng(uint64_t seed, std::initializer_list<uint64_t> streams = {}) {
    uint64_t h = mix64(seed);
    for (uint64_t s : streams) h = mix64(h ^ mix64(s + 0x632BE59BD9B4E019ull));
    for (auto& w : s_) w = h = mix64(h);
  }
  /// Next raw 64 bits.
  uint64_t next() {
    const uint64_t r = rotl(s_[1] * 5, 7) * 9, t = s_[1] << 17;
    s_[2] ^= s_[0], s_[3] ^= s_[1], s_[1] ^= s_[2], s_[0] ^= s_[3], s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return r;
  }
  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  /// Uniform in [a, b) (also when a > b, like Python's random.uniform).
  double uniform(double a, double b) { return a + (b - a) * uniform(); }
  /// Uniform integer in [lo, hi] (inclusive), unbiased.
  int64_t uniform_int(int64_t lo, int64_t hi) {
    const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
    if (span == 0) return static_cast<int64_t>(next());  // full 64-bit range
    const uint64_t limit = UINT64_MAX - UINT64_MAX % span;
    uint64_t r;
    do r = next(); while (r >= limit);
    return lo + static_cast<int64_t>(r % span);
  }
  /// True with probability p.
  bool bernoulli(double p) { return uniform() < p; }
  /// Standard normal (Box–Muller; one value per call).
  double normal() {
    double u1 = uniform();
    while (u1 <= 0.0) u1 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * uniform());
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

}  // namespace evax
