#include "evax/explain/localisation.h"

#include <algorithm>
#include <cmath>

#include "evax/core/error.h"

namespace evax {

BoxScale box_scale_from_name(const std::string& name) {
  if (name == "image") return BoxScale::kImage;
  if (name == "1024") return BoxScale::k1024;
  raise<ConfigError>("box scale '", name, "' is unknown; valid: image (from the image's stored ",
                     "size), 1024 (EVA-X: coordinates / 1024 · map side, truncated)");
}

namespace {

// numpy's slice clipping of [a, b) on an axis of length n (non-negative a and b).
void clip_range(int64_t* a, int64_t* b, int64_t n) {
  *a = std::clamp<int64_t>(*a, 0, n);
  *b = std::clamp<int64_t>(*b, 0, n);
}

// The pixels [lo, hi) whose centres (j + 0.5) lie in [b0, b1) on an axis of n pixels; the pixel
// holding the centre of [b0, b1) when no centre does.
void centre_rule(double b0, double b1, int64_t n, int64_t* lo, int64_t* hi) {
  *lo = static_cast<int64_t>(std::ceil(b0 - 0.5));
  *hi = static_cast<int64_t>(std::ceil(b1 - 0.5));
  clip_range(lo, hi, n);
  if (*hi <= *lo) {
    const int64_t c = std::clamp<int64_t>(static_cast<int64_t>(std::floor((b0 + b1) / 2)), 0, n - 1);
    *lo = c, *hi = c + 1;
  }
}

}  // namespace

BoxRect box_rect(const Box& b, int64_t img_w, int64_t img_h, int64_t map_w, int64_t map_h,
                 BoxScale scale) {
  EVAX_ASSERT(img_w > 0 && img_h > 0 && map_w > 0 && map_h > 0);
  BoxRect r;
  if (scale == BoxScale::kImage) {
    const double sx = static_cast<double>(map_w) / img_w, sy = static_cast<double>(map_h) / img_h;
    centre_rule(b.x * sx, (static_cast<double>(b.x) + b.w) * sx, map_w, &r.x0, &r.x1);
    centre_rule(b.y * sy, (static_cast<double>(b.y) + b.h) * sy, map_h, &r.y0, &r.y1);
    return r;
  }
  // int(v / 1024 * side): truncation toward zero, each value on its own.
  auto t = [](double v, int64_t side) {
    return static_cast<int64_t>(std::trunc(v / 1024.0 * static_cast<double>(side)));
  };
  const int64_t x = t(b.x, map_w), y = t(b.y, map_h), w = t(b.w, map_w), h = t(b.h, map_h);
  r.x0 = x, r.x1 = x + w, r.y0 = y, r.y1 = y + h;
  clip_range(&r.x0, &r.x1, map_w);
  clip_range(&r.y0, &r.y1, map_h);
  return r;
}

std::vector<double> box_ious(const float* map, int64_t h, int64_t w, const BoxRect& r,
                             const std::vector<double>& thresholds) {
  const size_t m = thresholds.size();
  // count[c]: pixels above exactly the first c thresholds (map > t_k for k < c).
  std::vector<int64_t> all(m + 1, 0), inside(m + 1, 0);
  for (int64_t y = 0; y < h; ++y) {
    const bool row_in = y >= r.y0 && y < r.y1;
    for (int64_t x = 0; x < w; ++x) {
      // In float32, as numpy compares a float32 map with a Python float.
      const float v = map[y * w + x];
      const size_t c = static_cast<size_t>(
          std::lower_bound(thresholds.begin(), thresholds.end(), v,
                           [](double t, float val) { return static_cast<float>(t) < val; }) -
          thresholds.begin());
      ++all[c];
      if (row_in && x >= r.x0 && x < r.x1) ++inside[c];
    }
  }
  const int64_t area = r.area();
  std::vector<double> ious(m, 0.0);
  int64_t on = 0, inter = 0;
  for (size_t k = m; k-- > 0;) {  // pixels above t_k: those with c > k
    on += all[k + 1];
    inter += inside[k + 1];
    const int64_t uni = on + area - inter;
    ious[k] = uni > 0 ? static_cast<double>(inter) / static_cast<double>(uni) : 0.0;
  }
  return ious;
}

BoxPointing box_pointing(const float* map, int64_t h, int64_t w, const BoxRect& r) {
  EVAX_ASSERT(h > 0 && w > 0);
  float top = map[0];
  for (int64_t i = 1; i < h * w; ++i) top = std::max(top, map[i]);
  int64_t tops = 0, tops_in = 0;
  double mass = 0, mass_in = 0;
  for (int64_t y = 0; y < h; ++y) {
    const bool row_in = y >= r.y0 && y < r.y1;
    for (int64_t x = 0; x < w; ++x) {
      const float v = map[y * w + x];
      const bool in = row_in && x >= r.x0 && x < r.x1;
      if (v == top) ++tops, tops_in += in;
      const double pos = v > 0 ? static_cast<double>(v) : 0.0;
      mass += pos;
      if (in) mass_in += pos;
    }
  }
  BoxPointing p;
  p.chance = static_cast<double>(r.area()) / static_cast<double>(h * w);
  p.hit = static_cast<double>(tops_in) / static_cast<double>(tops);
  p.energy = mass > 0 ? mass_in / mass : p.chance;
  return p;
}

double poisson_binomial_tail(const std::vector<double>& p, int64_t k) {
  if (k <= 0) return 1.0;
  if (k > static_cast<int64_t>(p.size())) return 0.0;
  std::vector<double> dist(p.size() + 1, 0.0);  // dist[j] = P(j successes so far)
  dist[0] = 1.0;
  for (size_t i = 0; i < p.size(); ++i) {
    for (size_t j = i + 1; j > 0; --j) dist[j] = dist[j] * (1 - p[i]) + dist[j - 1] * p[i];
    dist[0] *= 1 - p[i];
  }
  double tail = 0;
  for (size_t j = static_cast<size_t>(k); j < dist.size(); ++j) tail += dist[j];
  return std::min(1.0, tail);
}

std::vector<double> cam_threshold_grid() {
  std::vector<double> t;
  for (int k = 1; k <= 60; ++k) t.push_back(k / 100.0);
  return t;
}

LocalisationScores localisation_scores(const std::vector<double>& ious) {
  LocalisationScores s;
  s.boxes = static_cast<int64_t>(ious.size());
  if (ious.empty()) return s;
  double sum = 0;
  int64_t a25 = 0, a50 = 0;
  for (double v : ious) {
    sum += v;
    a25 += v > 0.25;
    a50 += v > 0.5;
  }
  const double n = static_cast<double>(ious.size());
  s.miou = sum / n;
  s.ap25 = static_cast<double>(a25) / n;
  s.ap50 = static_cast<double>(a50) / n;
  s.map = (s.ap25 + s.ap50) / 2;
  return s;
}

namespace {
std::vector<double> column(const std::vector<std::vector<double>>& ious, size_t index) {
  std::vector<double> v;
  v.reserve(ious.size());
  for (const auto& row : ious) {
    EVAX_ASSERT(index < row.size(), "candidate ", index, " of ", row.size());
    v.push_back(row[index]);
  }
  return v;
}
}  // namespace

ThresholdChoice choose_threshold(const std::vector<std::vector<double>>& ious,
                                 const std::vector<double>& candidates) {
  EVAX_ASSERT(!candidates.empty(), "no threshold candidates");
  ThresholdChoice best;
  best.threshold = candidates[0];
  best.scores = localisation_scores(column(ious, 0));
  for (size_t k = 1; k < candidates.size(); ++k) {
    const LocalisationScores s = localisation_scores(column(ious, k));
    if (s.map > best.scores.map) best.index = k, best.threshold = candidates[k], best.scores = s;
  }
  return best;
}

LocalisationReport localisation_report(const std::vector<std::vector<double>>& ious,
                                       const std::vector<std::string>& classes, size_t index,
                                       const std::vector<BoxPointing>& hits) {
  EVAX_ASSERT(ious.size() == classes.size(), ious.size(), " boxes, ", classes.size(), " classes");
  EVAX_ASSERT(hits.empty() || hits.size() == ious.size(), hits.size(), " hits, ", ious.size(),
              " boxes");
  LocalisationReport r;
  const std::vector<double> all = column(ious, index);
  std::map<std::string, std::vector<size_t>> by_class;
  for (size_t b = 0; b < all.size(); ++b) by_class[classes[b]].push_back(b);
  auto scored = [&](const std::vector<size_t>& boxes) {
    std::vector<double> v;
    std::vector<double> chance;
    double hit = 0, energy = 0;
    int64_t outright = 0;
    for (size_t b : boxes) {
      v.push_back(all[b]);
      if (hits.empty()) continue;
      hit += hits[b].hit, energy += hits[b].energy;
      outright += hits[b].hit == 1.0;
      chance.push_back(hits[b].chance);
    }
    LocalisationScores s = localisation_scores(v);
    if (!boxes.empty() && !hits.empty()) {
      s.pointing = hit / static_cast<double>(boxes.size());
      s.energy = energy / static_cast<double>(boxes.size());
      s.pointing_p = poisson_binomial_tail(chance, outright);
    }
    return s;
  };
  for (const auto& [name, v] : by_class) r.per_class[name] = scored(v);
  std::vector<size_t> every(all.size());
  for (size_t b = 0; b < every.size(); ++b) every[b] = b;
  r.overall = scored(every);
  return r;
}

std::vector<float> uniform_map(int64_t h, int64_t w) {
  return std::vector<float>(static_cast<size_t>(h * w), 1.0f);
}

std::vector<float> centre_map(int64_t h, int64_t w) {
  const double cy = (h - 1) / 2.0, cx = (w - 1) / 2.0, sy = h / 4.0, sx = w / 4.0;
  std::vector<double> g(static_cast<size_t>(h * w));
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      const double dy = (y - cy) / sy, dx = (x - cx) / sx;
      g[y * w + x] = std::exp(-0.5 * (dx * dx + dy * dy));
    }
  const double lo = *std::min_element(g.begin(), g.end());
  double hi = 0;
  for (double& v : g) v -= lo, hi = std::max(hi, v);
  std::vector<float> out(g.size());
  for (size_t i = 0; i < g.size(); ++i) out[i] = static_cast<float>(g[i] / (1e-7 + hi));
  return out;
}

}  // namespace evax
