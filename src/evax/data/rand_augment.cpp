#include "evax/data/rand_augment.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <opencv2/core.hpp>
#include <vector>

#include "evax/core/error.h"

namespace evax {

namespace {

constexpr double kLevelDenom = 10.0;  // timm _LEVEL_DENOM

using Lut = std::array<uint8_t, 256>;

cv::Mat apply_lut(const cv::Mat& u8, const Lut& lut) {
  cv::Mat out(u8.size(), CV_8UC1);
  for (int y = 0; y < u8.rows; ++y) {
    const uint8_t* s = u8.ptr<uint8_t>(y);
    uint8_t* d = out.ptr<uint8_t>(y);
    for (int x = 0; x < u8.cols; ++x) d[x] = lut[s[x]];
  }
  return out;
}

std::array<int64_t, 256> histogram(const cv::Mat& u8) {
  std::array<int64_t, 256> h{};
  for (int y = 0; y < u8.rows; ++y) {
    const uint8_t* s = u8.ptr<uint8_t>(y);
    for (int x = 0; x < u8.cols; ++x) ++h[s[x]];
  }
  return h;
}

// ImageOps.autocontrast(cutoff=0): stretch [lo, hi] to [0, 255], truncating like int().
cv::Mat auto_contrast(const cv::Mat& u8) {
  const auto h = histogram(u8);
  int lo = 0, hi = 255;
  while (lo < 256 && h[lo] == 0) ++lo;
  while (hi >= 0 && h[hi] == 0) --hi;
  if (hi <= lo) return u8.clone();
  const double scale = 255.0 / (hi - lo), offset = -lo * scale;
  Lut lut;
  for (int i = 0; i < 256; ++i) {
    const int v = static_cast<int>(i * scale + offset);  // int() truncates toward zero
    lut[i] = static_cast<uint8_t>(std::clamp(v, 0, 255));
  }
  return apply_lut(u8, lut);
}

// ImageOps.equalize: cumulative histogram LUT with PIL's integer steps.
cv::Mat equalize(const cv::Mat& u8) {
  const auto h = histogram(u8);
  int64_t total = 0, last = 0, nonzero = 0;
  for (int i = 0; i < 256; ++i)
    if (h[i]) total += h[i], last = h[i], ++nonzero;
  if (nonzero <= 1) return u8.clone();
  const int64_t step = (total - last) / 255;
  if (step == 0) return u8.clone();
  Lut lut;
  int64_t n = step / 2;
  for (int i = 0; i < 256; ++i) {
    lut[i] = static_cast<uint8_t>(std::min<int64_t>(n / step, 255));
    n += h[i];
  }
  return apply_lut(u8, lut);
}

// Image.blend(degenerate, image, factor) for 8-bit: float arithmetic, truncation, clipping when
// extrapolating (factor outside [0, 1]).
uint8_t blend_px(int d, int v, float alpha) {
  const float t = static_cast<float>(d) + alpha * static_cast<float>(v - d);
  if (t <= 0.0f) return 0;
  if (t >= 255.0f) return 255;
  return static_cast<uint8_t>(t);
}

cv::Mat blend(const cv::Mat& degenerate, const cv::Mat& u8, double factor) {
  const float alpha = static_cast<float>(factor);
  cv::Mat out(u8.size(), CV_8UC1);
  for (int y = 0; y < u8.rows; ++y) {
    const uint8_t* d = degenerate.ptr<uint8_t>(y);
    const uint8_t* s = u8.ptr<uint8_t>(y);
    uint8_t* o = out.ptr<uint8_t>(y);
    for (int x = 0; x < u8.cols; ++x) o[x] = blend_px(d[x], s[x], alpha);
  }
  return out;
}

// ImageEnhance.Contrast: blend with a flat image at the rounded mean.
cv::Mat contrast(const cv::Mat& u8, double factor) {
  const auto h = histogram(u8);
  double sum = 0;
  for (int i = 0; i < 256; ++i) sum += static_cast<double>(i) * h[i];
  const int mean = static_cast<int>(sum / static_cast<double>(u8.total()) + 0.5);
  return blend(cv::Mat(u8.size(), CV_8UC1, cv::Scalar(mean)), u8, factor);
}

// ImageEnhance.Sharpness: blend with ImageFilter.SMOOTH ([1 1 1; 1 5 1; 1 1 1] / 13, rounded;
// PIL leaves the one-pixel border unfiltered).
cv::Mat sharpness(const cv::Mat& u8, double factor) {
  cv::Mat smooth = u8.clone();
  for (int y = 1; y + 1 < u8.rows; ++y) {
    const uint8_t* a = u8.ptr<uint8_t>(y - 1);
    const uint8_t* b = u8.ptr<uint8_t>(y);
    const uint8_t* c = u8.ptr<uint8_t>(y + 1);
    uint8_t* o = smooth.ptr<uint8_t>(y);
    for (int x = 1; x + 1 < u8.cols; ++x) {
      const int s = a[x - 1] + a[x] + a[x + 1] + b[x - 1] + 5 * b[x] + b[x + 1] + c[x - 1] + c[x] +
                    c[x + 1];
      o[x] = static_cast<uint8_t>(std::min(255, (2 * s + 13) / 26));  // round(s / 13)
    }
  }
  return blend(smooth, u8, factor);
}

// timm's _enhance_increasing_level_to_arg.
double enhance_factor(double magnitude, bool negate) {
  const double level = magnitude / kLevelDenom * 0.9;
  return std::max(0.1, 1.0 + (negate ? -level : level));
}

double signed_level(double magnitude, double max, bool negate) {
  const double v = magnitude / kLevelDenom * max;
  return negate ? -v : v;
}

// PIL's bicubic for transforms (Geometry.c BICUBIC): the a = -1 cubic convolution in Horner form
// over the taps v1..v4 at -1, 0, 1, 2. The form matters: flat regions give exactly v2, where the
// weighted sum can land a hair below an integer and truncate one lower.
inline double pil_cubic(double v1, double v2, double v3, double v4, double d) {
  const double p2 = v3 - v1, p3 = 2 * (v1 - v2) + v3 - v4, p4 = -v1 + v2 - v3 + v4;
  return v2 + d * (p2 + d * (p3 + d * p4));
}

}  // namespace

const char* rand_augment_op_name(RandAugmentOp op) {
  static const char* const names[kRandAugmentOps] = {
      "AutoContrast",        "Equalize",           "Invert",
      "Rotate",              "PosterizeIncreasing", "SolarizeIncreasing",
      "SolarizeAdd",         "ColorIncreasing",    "ContrastIncreasing",
      "BrightnessIncreasing", "SharpnessIncreasing", "ShearX",
      "ShearY",              "TranslateXRel",      "TranslateYRel"};
  const int i = static_cast<int>(op);
  EVAX_ASSERT(i >= 0 && i < kRandAugmentOps);
  return names[i];
}

cv::Mat affine_pil(const cv::Mat& u8, const double m[6], int fill) {
  EVAX_ASSERT(u8.type() == CV_8UC1);
  const int w = u8.cols, h = u8.rows;
  const uint8_t fv = static_cast<uint8_t>(std::clamp(fill, 0, 255));
  cv::Mat out(u8.size(), CV_8UC1);
  for (int y = 0; y < h; ++y) {
    uint8_t* o = out.ptr<uint8_t>(y);
    for (int x = 0; x < w; ++x) {
      double xin = m[0] * (x + 0.5) + m[1] * (y + 0.5) + m[2];
      double yin = m[3] * (x + 0.5) + m[4] * (y + 0.5) + m[5];
      if (xin < 0.0 || xin >= w || yin < 0.0 || yin >= h) {
        o[x] = fv;
        continue;
      }
      xin -= 0.5, yin -= 0.5;
      const int ix = static_cast<int>(std::floor(xin)), iy = static_cast<int>(std::floor(yin));
      const double dx = xin - ix, dy = yin - iy;
      int cols[4];
      for (int k = 0; k < 4; ++k) cols[k] = std::clamp(ix - 1 + k, 0, w - 1);
      // A zero fraction makes pil_cubic return its second sample exactly (v2 + 0 · finite), so
      // skipping the other evaluations changes no bit; translations and shears hit this on one
      // axis for every pixel.
      double rows[4];
      for (int r = 0; r < 4; ++r) {
        if (dy == 0.0 && r != 1) continue;
        const uint8_t* row = u8.ptr<uint8_t>(std::clamp(iy - 1 + r, 0, h - 1));
        rows[r] = dx == 0.0 ? row[cols[1]]
                            : pil_cubic(row[cols[0]], row[cols[1]], row[cols[2]], row[cols[3]], dx);
      }
      const double v = dy == 0.0 ? rows[1] : pil_cubic(rows[0], rows[1], rows[2], rows[3], dy);
      o[x] = v <= 0.0 ? 0 : v >= 255.0 ? 255 : static_cast<uint8_t>(v);
    }
  }
  return out;
}

cv::Mat rand_augment_apply(const cv::Mat& u8, RandAugmentOp op, double magnitude, bool negate,
                           const RandAugmentOptions& o) {
  EVAX_ASSERT(u8.type() == CV_8UC1 && !u8.empty(), "RandAugment wants a CV_8UC1 image");
  const double mag = magnitude;
  switch (op) {
    case RandAugmentOp::kAutoContrast:
      return auto_contrast(u8);
    case RandAugmentOp::kEqualize:
      return equalize(u8);
    case RandAugmentOp::kInvert: {
      Lut lut;
      for (int i = 0; i < 256; ++i) lut[i] = static_cast<uint8_t>(255 - i);
      return apply_lut(u8, lut);
    }
    case RandAugmentOp::kRotate: {
      // Image.rotate(deg, BICUBIC, fillcolor) about the centre (w/2, h/2), counter-clockwise.
      const double deg = signed_level(mag, 30.0, negate);
      if (std::fmod(deg, 360.0) == 0.0) return u8.clone();
      const double a = -deg * M_PI / 180.0, c = std::cos(a), s = std::sin(a);
      const double cx = u8.cols / 2.0, cy = u8.rows / 2.0;
      const double m[6] = {c, s, c * -cx + s * -cy + cx, -s, c, -s * -cx + c * -cy + cy};
      return affine_pil(u8, m, o.fill);
    }
    case RandAugmentOp::kPosterizeIncreasing: {
      const int bits = 4 - static_cast<int>(mag / kLevelDenom * 4);
      if (bits >= 8) return u8.clone();
      const int mask = ~((1 << (8 - bits)) - 1) & 0xFF;
      Lut lut;
      for (int i = 0; i < 256; ++i) lut[i] = static_cast<uint8_t>(i & mask);
      return apply_lut(u8, lut);
    }
    case RandAugmentOp::kSolarizeIncreasing: {
      const int thresh = 256 - std::min(256, static_cast<int>(mag / kLevelDenom * 256));
      Lut lut;
      for (int i = 0; i < 256; ++i) lut[i] = static_cast<uint8_t>(i < thresh ? i : 255 - i);
      return apply_lut(u8, lut);
    }
    case RandAugmentOp::kSolarizeAdd: {
      const int add = std::min(128, static_cast<int>(mag / kLevelDenom * 110));
      Lut lut;
      for (int i = 0; i < 256; ++i)
        lut[i] = static_cast<uint8_t>(i < 128 ? std::min(255, i + add) : i);
      return apply_lut(u8, lut);
    }
    case RandAugmentOp::kColorIncreasing:
      // ImageEnhance.Color blends with the image's own luminance: a no-op when R = G = B.
      return u8.clone();
    case RandAugmentOp::kContrastIncreasing:
      return contrast(u8, enhance_factor(mag, negate));
    case RandAugmentOp::kBrightnessIncreasing:
      return blend(cv::Mat::zeros(u8.size(), CV_8UC1), u8, enhance_factor(mag, negate));
    case RandAugmentOp::kSharpnessIncreasing:
      return sharpness(u8, enhance_factor(mag, negate));
    case RandAugmentOp::kShearX: {
      const double m[6] = {1, signed_level(mag, 0.3, negate), 0, 0, 1, 0};
      return affine_pil(u8, m, o.fill);
    }
    case RandAugmentOp::kShearY: {
      const double m[6] = {1, 0, 0, signed_level(mag, 0.3, negate), 1, 0};
      return affine_pil(u8, m, o.fill);
    }
    case RandAugmentOp::kTranslateXRel: {
      const double m[6] = {1, 0, signed_level(mag, o.translate_pct, negate) * u8.cols, 0, 1, 0};
      return affine_pil(u8, m, o.fill);
    }
    case RandAugmentOp::kTranslateYRel: {
      const double m[6] = {1, 0, 0, 0, 1, signed_level(mag, o.translate_pct, negate) * u8.rows};
      return affine_pil(u8, m, o.fill);
    }
  }
  raise<InternalError>("unknown RandAugment op ", static_cast<int>(op));
}

cv::Mat rand_augment(const cv::Mat& u8, Rng& rng, const RandAugmentOptions& o) {
  // timm picks all ops first (np.random.choice with replacement), then applies them in turn.
  std::vector<RandAugmentOp> ops;
  for (int k = 0; k < o.num_ops; ++k)
    ops.push_back(static_cast<RandAugmentOp>(rng.uniform_int(0, kRandAugmentOps - 1)));
  cv::Mat img = u8;
  for (RandAugmentOp op : ops) {
    if (o.prob < 1.0 && rng.uniform() > o.prob) continue;
    double mag = o.magnitude;
    if (std::isinf(o.magnitude_std)) mag = rng.uniform(0.0, mag);
    else if (o.magnitude_std > 0) mag = mag + o.magnitude_std * rng.normal();
    mag = std::max(0.0, std::min(mag, o.magnitude_max));
    const bool negate = rng.uniform() > 0.5;  // drawn for every op; only signed ops read it
    img = rand_augment_apply(img, op, mag, negate, o);
  }
  return img.data == u8.data ? u8.clone() : img;
}

torch::Tensor rand_augment(const torch::Tensor& chw, Rng& rng, const RandAugmentOptions& o) {
  EVAX_ASSERT(chw.dim() == 3 && chw.size(0) == 1, "RandAugment wants a (1, H, W) image");
  const auto u8t = chw.mul(255.0).round_().clamp_(0, 255).to(torch::kUInt8).contiguous();
  const cv::Mat u8(static_cast<int>(chw.size(1)), static_cast<int>(chw.size(2)), CV_8UC1,
                   u8t.data_ptr<uint8_t>());
  cv::Mat out = rand_augment(u8, rng, o);
  if (!out.isContinuous()) out = out.clone();
  return torch::from_blob(out.data, {1, out.rows, out.cols}, torch::kUInt8)
      .to(torch::kFloat32)
      .div_(255.0);
}

RandAugmentOptions rand_augment_parse(const std::string& spec) {
  RandAugmentOptions o;
  std::vector<std::string> parts(1);
  for (char c : spec) {
    if (c == '-') parts.emplace_back();
    else parts.back() += c;
  }
  if (parts[0] != "rand")
    raise<ConfigError>("RandAugment spec '", spec, "' must start with 'rand'");
  const auto number = [&](const std::string& part, size_t skip) {
    const std::string v = part.substr(skip);
    char* end = nullptr;
    const double d = std::strtod(v.c_str(), &end);
    if (v.empty() || end != v.c_str() + v.size())
      raise<ConfigError>("RandAugment spec '", spec, "': bad number in '", part, "'");
    return d;
  };
  bool increasing = false;
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p.rfind("mstd", 0) == 0) {
      const double v = number(p, 4);
      o.magnitude_std = v > 100 ? std::numeric_limits<double>::infinity() : v;
    } else if (p.rfind("mmax", 0) == 0) {
      o.magnitude_max = number(p, 4);
    } else if (p.rfind("inc", 0) == 0) {
      increasing = number(p, 3) != 0;
    } else if (p.rfind("m", 0) == 0) {
      o.magnitude = number(p, 1);
    } else if (p.rfind("n", 0) == 0) {
      o.num_ops = static_cast<int>(number(p, 1));
    } else if (p.rfind("p", 0) == 0) {
      o.prob = number(p, 1);
    } else {
      raise<ConfigError>("RandAugment spec '", spec, "': unsupported section '", p, "'");
    }
  }
  if (!increasing)
    raise<ConfigError>("RandAugment spec '", spec,
                       "': only the increasing op set (inc1) is implemented");
  if (o.num_ops < 0 || o.prob < 0 || o.prob > 1 || o.magnitude < 0 || o.magnitude_max <= 0)
    raise<ConfigError>("RandAugment spec '", spec, "': value out of range");
  return o;
}

}  // namespace evax
