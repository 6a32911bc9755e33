#include "evax/data/transforms.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "evax/core/error.h"
#include "evax/data/resample.h"

namespace F = torch::nn::functional;

namespace evax {

namespace {

void check_image(const torch::Tensor& chw, const char* what) {
  EVAX_ASSERT(chw.defined() && chw.dim() == 3 && chw.size(1) > 0 && chw.size(2) > 0, what,
              " wants a (C, H, W) image");
}

// Python's round(): half to even (std::nearbyint in the default rounding mode).
int64_t py_round(double v) { return static_cast<int64_t>(std::nearbyint(v)); }

// Bilinear (align_corners = false, no antialias, like cv2.INTER_LINEAR) or nearest (floor, like
// cv2.INTER_NEAREST).
torch::Tensor interpolate(const torch::Tensor& chw, int64_t h, int64_t w, bool nearest) {
  auto opts = F::InterpolateFuncOptions().size(std::vector<int64_t>{h, w});
  if (nearest) opts.mode(torch::kNearest);
  else opts.mode(torch::kBilinear).align_corners(false);
  return F::interpolate(chw.unsqueeze(0), opts).squeeze(0);
}

Range range_from(const ConfigView& cfg, const std::string& key, Range fallback, const char* doc) {
  const auto v = cfg.get<std::vector<double>>(key, {fallback.lo, fallback.hi}, doc);
  cfg.check(key, v.size() == 2 && v[0] > 0 && v[0] <= v[1], "must be [lo, hi] with 0 < lo <= hi");
  return {v[0], v[1]};
}

}  // namespace

torch::Tensor unit_to_tensor(const cv::Mat& unit) {
  EVAX_ASSERT(unit.type() == CV_32FC1 && !unit.empty(), "unit_to_tensor wants a CV_32F image");
  // Zero-copy: the tensor holds a reference to the Mat's (refcounted) buffer, which saves a
  // full-image copy per sample (~1 ms at 1024²).
  auto* keep = new cv::Mat(unit.isContinuous() ? unit : unit.clone());
  return torch::from_blob(keep->data, {1, keep->rows, keep->cols},
                          [keep](void*) { delete keep; }, torch::kFloat32);
}

CropBox random_resized_crop_box(Rng& rng, int64_t height, int64_t width, Range scale,
                                Range ratio) {
  EVAX_ASSERT(height > 0 && width > 0 && scale.lo <= scale.hi && ratio.lo <= ratio.hi);
  const double area = static_cast<double>(height) * static_cast<double>(width);
  const double log_lo = std::log(ratio.lo), log_hi = std::log(ratio.hi);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * rng.uniform(scale.lo, scale.hi);
    const double aspect = std::exp(rng.uniform(log_lo, log_hi));
    const int64_t w = py_round(std::sqrt(target * aspect));
    const int64_t h = py_round(std::sqrt(target / aspect));
    if (0 < w && w <= width && 0 < h && h <= height) {
      const int64_t i = rng.uniform_int(0, height - h);
      const int64_t j = rng.uniform_int(0, width - w);
      return {i, j, h, w};
    }
  }
  // Fallback: the whole image, its aspect clamped into the ratio range, centred.
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  int64_t w = width, h = height;
  if (in_ratio < ratio.lo) h = py_round(w / ratio.lo);
  else if (in_ratio > ratio.hi) w = py_round(h * ratio.hi);
  return {(height - h) / 2, (width - w) / 2, h, w};
}

torch::Tensor resize_bicubic_pil(const torch::Tensor& chw, int64_t out_h, int64_t out_w,
                                 bool quantize) {
  check_image(chw, "resize_bicubic_pil");
  EVAX_ASSERT(out_h > 0 && out_w > 0);
  // PIL resamples horizontally into a clipped (uint8) intermediate, then vertically; a single
  // 2-D float pass differs by up to ~6/255 near saturated edges when upscaling.
  torch::Tensor x = chw.to(torch::kFloat32);
  for (int64_t dim : {2, 1}) {
    const int64_t out = dim == 2 ? out_w : out_h;
    if (out == x.size(dim)) continue;
    x = bicubic_pass(x, dim, out).clamp_(0.0, 1.0);
    if (quantize) x = quantize8(x);
  }
  return x.is_same(chw) ? chw.clone(at::MemoryFormat::Contiguous) : x.contiguous();
}

torch::Tensor resize(const torch::Tensor& chw, int64_t out_h, int64_t out_w, Interp interp) {
  check_image(chw, "resize");
  switch (interp) {
    case Interp::kBicubic:
      return resize_bicubic_pil(chw, out_h, out_w);
    case Interp::kBilinear:
      if (out_h == chw.size(1) && out_w == chw.size(2)) return chw.clone();
      return interpolate(chw.to(torch::kFloat32), out_h, out_w, false);
    case Interp::kNearest: {
      if (out_h == chw.size(1) && out_w == chw.size(2)) return chw.clone();
      // torch's nearest kernel is float-only on some builds; masks round-trip exactly.
      return interpolate(chw.to(torch::kFloat32), out_h, out_w, true)
          .to(chw.scalar_type());
    }
  }
  raise<InternalError>("unknown interpolation");
}

torch::Tensor resized_crop(const torch::Tensor& chw, const CropBox& box, int64_t out_h,
                           int64_t out_w, Interp interp) {
  check_image(chw, "resized_crop");
  EVAX_ASSERT(box.top >= 0 && box.left >= 0 && box.height > 0 && box.width > 0 &&
                  box.top + box.height <= chw.size(1) && box.left + box.width <= chw.size(2),
              "crop box outside the image");
  const auto crop = chw.slice(1, box.top, box.top + box.height).slice(2, box.left,
                                                                       box.left + box.width);
  // The bicubic path reads the strided crop in place; the others want it contiguous.
  return resize(interp == Interp::kBicubic ? crop : crop.contiguous(), out_h, out_w, interp);
}

torch::Tensor hflip(const torch::Tensor& chw) { return chw.flip({-1}); }

torch::Tensor center_crop(const torch::Tensor& chw, int64_t h, int64_t w) {
  check_image(chw, "center_crop");
  const int64_t H = chw.size(1), W = chw.size(2);
  if (h > H || w > W)
    raise<DataError>("image of ", H, "x", W, " is too small for a ", h, "x", w, " centre crop");
  const int64_t top = py_round((H - h) / 2.0), left = py_round((W - w) / 2.0);
  return chw.slice(1, top, top + h).slice(2, left, left + w).contiguous();
}

torch::Tensor resize_shorter(const torch::Tensor& chw, int64_t size, Interp interp) {
  check_image(chw, "resize_shorter");
  const int64_t h = chw.size(1), w = chw.size(2);
  int64_t oh = size, ow = size;
  if (h < w) ow = size * w / h;
  else if (w < h) oh = size * h / w;
  return resize(chw, oh, ow, interp);
}

torch::Tensor normalize(const torch::Tensor& chw, double mean, double std, int64_t channels) {
  check_image(chw, "normalize");
  EVAX_ASSERT(std > 0 && (chw.size(0) == channels || chw.size(0) == 1));
  auto x = (chw.to(torch::kFloat32) - mean) / std;
  if (x.size(0) != channels) x = x.expand({channels, x.size(1), x.size(2)});
  return x.contiguous();
}

torch::Tensor quantize8(const torch::Tensor& t) {
  return t.mul(255.0).round_().clamp_(0.0, 255.0).div_(255.0);
}

// --- two views -----------------------------------------------------------------------------------

TwoViews two_view_crop(const torch::Tensor& chw, Rng& rng, const TwoViewOptions& o) {
  check_image(chw, "two_view_crop");
  TwoViews v;
  // asuka order: flip, then crop parameters, then both resizes.
  v.flipped = rng.bernoulli(o.flip_p);
  v.box = random_resized_crop_box(rng, chw.size(1), chw.size(2), o.scale, o.ratio);
  auto student = resized_crop(chw, v.box, o.student_size, o.student_size);
  auto teacher = o.teacher_size == o.student_size
                     ? student
                     : resized_crop(chw, v.box, o.teacher_size, o.teacher_size);
  if (v.flipped) student = hflip(student), teacher = hflip(teacher);
  v.student = normalize(student, o.student_mean, o.student_std, 3);
  v.teacher = normalize(teacher, o.teacher_mean, o.teacher_std, 3);
  return v;
}

TwoViewOptions two_view_options_from_config(const ConfigView& cfg) {
  TwoViewOptions o;
  o.student_size =
      cfg.get<int64_t>("student_size", o.student_size, "side in pixels of the student (ViT) input");
  cfg.check("student_size", o.student_size > 0, "must be > 0");
  o.teacher_size =
      cfg.get<int64_t>("teacher_size", o.teacher_size,
                       "side in pixels of the teacher (MGCA) input, from the same crop");
  cfg.check("teacher_size", o.teacher_size > 0, "must be > 0");
  o.scale = range_from(cfg, "scale", o.scale,
                       "[lo, hi] area of the random crop as a fraction of the image");
  cfg.check("scale", o.scale.hi <= 1.0, "must lie in (0, 1]");
  o.ratio = range_from(cfg, "ratio", o.ratio,
                       "[lo, hi] aspect ratio (width / height) of the random crop");
  o.flip_p = cfg.get<double>("flip_p", o.flip_p,
                             "probability of a horizontal flip (one decision for both views)");
  cfg.check("flip_p", o.flip_p >= 0 && o.flip_p <= 1, "must lie in [0, 1]");
  o.student_mean =
      cfg.get<double>("student_mean", o.student_mean,
                      "mean subtracted from the student input's [0, 1] pixels (default: EVA-X's)");
  o.student_std = cfg.get<double>(
      "student_std", o.student_std,
      "standard deviation the student input is divided by after the mean (default: EVA-X's)");
  cfg.check("student_std", o.student_std > 0, "must be > 0");
  o.teacher_mean =
      cfg.get<double>("teacher_mean", o.teacher_mean,
                      "mean subtracted from the teacher input's [0, 1] pixels (default: MGCA's)");
  o.teacher_std = cfg.get<double>(
      "teacher_std", o.teacher_std,
      "standard deviation the teacher input is divided by after the mean (default: MGCA's)");
  cfg.check("teacher_std", o.teacher_std > 0, "must be > 0");
  return o;
}

// --- classification ------------------------------------------------------------------------------

torch::Tensor classify_train_transform(const torch::Tensor& chw, Rng& rng,
                                       const ClassifyAugmentOptions& o) {
  check_image(chw, "classify_train_transform");
  const CropBox box = random_resized_crop_box(rng, chw.size(1), chw.size(2), o.scale, o.ratio);
  auto x = resized_crop(chw, box, o.size, o.size);
  if (rng.bernoulli(o.flip_p)) x = hflip(x);
  if (o.rand_augment) x = rand_augment(x, rng, o.rand_augment_options);
  return normalize(x, o.mean, o.std, 3);
}

ClassifyAugmentOptions classify_augment_options_from_config(const ConfigView& cfg) {
  ClassifyAugmentOptions o;
  o.size = cfg.get<int64_t>("size", o.size, "side in pixels of the square training crop");
  cfg.check("size", o.size > 0, "must be > 0");
  o.scale = range_from(cfg, "scale", o.scale,
                       "[lo, hi] area of the random resized crop as a fraction of the image");
  cfg.check("scale", o.scale.hi <= 1.0, "must lie in (0, 1]");
  o.ratio = range_from(cfg, "ratio", o.ratio,
                       "[lo, hi] aspect ratio (width / height) of the random resized crop");
  o.flip_p = cfg.get<double>("flip_p", o.flip_p, "probability of a horizontal flip");
  cfg.check("flip_p", o.flip_p >= 0 && o.flip_p <= 1, "must lie in [0, 1]");
  const std::string spec = cfg.get<std::string>("rand_augment", "rand-m6-mstd0.5-inc1",
                                                "timm RandAugment spec, applied after the flip "
                                                "(the default is EVA-X's); empty: no RandAugment");
  o.rand_augment = !spec.empty();
  if (o.rand_augment) {
    try {
      o.rand_augment_options = rand_augment_parse(spec);
    } catch (const ConfigError& e) {
      cfg.check("rand_augment", false, e.what());
    }
  }
  o.mean = cfg.get<double>(
      "mean", o.mean, "mean subtracted from the [0, 1] pixels of every channel (default: EVA-X's)");
  o.std = cfg.get<double>(
      "std", o.std,
      "standard deviation the pixels are divided by after the mean (default: EVA-X's)");
  cfg.check("std", o.std > 0, "must be > 0");
  return o;
}

// --- segmentation --------------------------------------------------------------------------------

SegPair joint_resize(const SegPair& in, int64_t h, int64_t w, Interp image_interp) {
  return {resize(in.image, h, w, image_interp), resize(in.mask, h, w, Interp::kNearest)};
}

SegPair joint_hflip(const SegPair& in) { return {hflip(in.image), hflip(in.mask)}; }

ImageSize keep_ratio_size(int64_t height, int64_t width, int64_t max_long, int64_t max_short) {
  EVAX_CHECK(DataError, height > 0 && width > 0 && max_long > 0 && max_short > 0,
             "keep-ratio resize of a ", height, "x", width, " image to bounds ", max_long, ", ",
             max_short);
  // mmcv: max_long_edge = max(scale), max_short_edge = min(scale); the same double arithmetic
  // (exact integer operands, one division each, a product and + 0.5, then int() truncation).
  const double lo = static_cast<double>(std::min(max_long, max_short));
  const double hi = static_cast<double>(std::max(max_long, max_short));
  const double s = std::min(hi / static_cast<double>(std::max(height, width)),
                            lo / static_cast<double>(std::min(height, width)));
  const ImageSize out{static_cast<int64_t>(static_cast<double>(height) * s + 0.5),
                      static_cast<int64_t>(static_cast<double>(width) * s + 0.5)};
  EVAX_CHECK(DataError, out.height > 0 && out.width > 0, "keep-ratio resize of a ", height, "x",
             width, " image to bounds ", max_long, ", ", max_short, " gives an empty ",
             out.height, "x", out.width, " image");
  return out;
}

torch::Tensor resize_keep_ratio(const torch::Tensor& chw, int64_t max_long, int64_t max_short,
                                Interp interp) {
  check_image(chw, "resize_keep_ratio");
  const ImageSize s = keep_ratio_size(chw.size(1), chw.size(2), max_long, max_short);
  return resize(chw, s.height, s.width, interp);
}

SegPair joint_resize_keep_ratio(const SegPair& in, int64_t max_long, int64_t max_short,
                                Interp image_interp) {
  EVAX_ASSERT(in.image.size(1) == in.mask.size(1) && in.image.size(2) == in.mask.size(2),
              "image and mask sizes differ");
  const ImageSize s = keep_ratio_size(in.image.size(1), in.image.size(2), max_long, max_short);
  return joint_resize(in, s.height, s.width, image_interp);
}

SegPair joint_resized_crop(const SegPair& in, const CropBox& box, int64_t h, int64_t w,
                           Interp image_interp) {
  EVAX_ASSERT(in.image.size(1) == in.mask.size(1) && in.image.size(2) == in.mask.size(2),
              "image and mask sizes differ");
  return {resized_crop(in.image, box, h, w, image_interp),
          resized_crop(in.mask, box, h, w, Interp::kNearest)};
}

torch::Tensor photometric_distortion(const torch::Tensor& chw, Rng& rng,
                                     const PhotometricOptions& o) {
  check_image(chw, "photometric_distortion");
  // mmseg works on uint8 and casts after each step: clip to [0, 255], truncate. The epsilon keeps
  // 8-bit values that float arithmetic left a hair below an integer on that integer.
  const auto to_u8 = [](const torch::Tensor& v) { return v.clamp(0.0, 255.0).add_(1e-4).floor_(); };
  auto x = chw.to(torch::kFloat32) * 255.0;
  if (rng.bernoulli(o.p)) x = to_u8(x + rng.uniform(-o.brightness_delta, o.brightness_delta));
  if (rng.bernoulli(o.p)) x = to_u8(x * rng.uniform(o.contrast.lo, o.contrast.hi));
  return (x / 255.0).clamp_(0.0, 1.0);
}

SegPair segment_train_transform(const SegPair& in, Rng& rng, const SegAugmentOptions& o) {
  SegPair p = joint_resize(in, o.size, o.size, Interp::kBilinear);
  if (rng.bernoulli(o.flip_p)) p = joint_hflip(p);
  if (o.photometric) p.image = photometric_distortion(p.image, rng, o.photo);
  p.image = normalize(p.image, o.mean, o.std, 3);
  return p;
}

}  // namespace evax
