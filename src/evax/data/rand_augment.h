// RandAugment as timm's rand_augment_transform with the "increasing" op set (EVA-X CXR14:
// `rand-m6-mstd0.5-inc1`, img_mean fill 125, bicubic), on 8-bit single-channel images. Each op
// reproduces the PIL operation timm calls (ImageOps / ImageEnhance / Image.transform AFFINE with
// PIL's bicubic, a = -1, truncating to uint8); grey images keep R = G = B in timm, so one plane is
// exact. Randomness comes from an evax::Rng instead of Python's `random`.
#pragma once

#include <torch/torch.h>

#include <opencv2/core.hpp>
#include <string>

#include "evax/core/rng.h"

namespace evax {

/// timm's _RAND_INCREASING_TRANSFORMS, in timm's order.
enum class RandAugmentOp : int {
  kAutoContrast = 0,
  kEqualize,
  kInvert,
  kRotate,
  kPosterizeIncreasing,
  kSolarizeIncreasing,
  kSolarizeAdd,
  kColorIncreasing,
  kContrastIncreasing,
  kBrightnessIncreasing,
  kSharpnessIncreasing,
  kShearX,
  kShearY,
  kTranslateXRel,
  kTranslateYRel,
};
/// Number of RandAugmentOp values.
inline constexpr int kRandAugmentOps = 15;

/// timm's name of an op ("AutoContrast", "PosterizeIncreasing", ...).
const char* rand_augment_op_name(RandAugmentOp op);

/// RandAugment settings (defaults: EVA-X's rand-m6-mstd0.5-inc1 at 224 with EVA-X mean fill).
struct RandAugmentOptions {
  int num_ops = 2;             ///< ops per image, drawn uniformly with replacement ('n')
  double magnitude = 6.0;      ///< mean magnitude on the 0..10 scale ('m')
  double magnitude_std = 0.5;  ///< magnitude ~ N(m, std); infinity: U(0, m) ('mstd')
  double magnitude_max = 10.0; ///< magnitude clipped to [0, max] ('mmax')
  double prob = 0.5;           ///< probability that a drawn op is applied ('p')
  int fill = 125;              ///< 8-bit fill of geometric ops: round(255 · 0.49185243)
  double translate_pct = 0.45; ///< TranslateXRel/YRel at magnitude 10, fraction of the side
};

/// Parses a timm RandAugment spec: "rand" then dash-separated m<float>, n<int>, p<float>,
/// mstd<float> (> 100 means infinity), mmax<float>, inc<0|1>. Only the increasing op set exists
/// here, so inc0 (and t<name>) is a ConfigError.
RandAugmentOptions rand_augment_parse(const std::string& spec);

/// Applies one op at a fixed magnitude (already clipped) to a CV_8UC1 image. `negate` is timm's
/// _randomly_negate outcome for the signed ops (Rotate, the enhances, shears, translations).
cv::Mat rand_augment_apply(const cv::Mat& u8, RandAugmentOp op, double magnitude, bool negate,
                           const RandAugmentOptions& options = {});

/// Draws num_ops ops and applies each with probability `prob` and its own magnitude and sign.
cv::Mat rand_augment(const cv::Mat& u8, Rng& rng, const RandAugmentOptions& options = {});

/// rand_augment on a (1, H, W) float [0, 1] tensor: rounded to 8 bits, augmented, back to [0, 1].
torch::Tensor rand_augment(const torch::Tensor& chw, Rng& rng,
                           const RandAugmentOptions& options = {});

/// The PIL affine transform timm's geometric ops use: output pixel (x, y) samples the input at
/// (a x' + b y' + c, d x' + e y' + f) with x' = x + 0.5, y' = y + 0.5 (pixel centres), PIL's
/// bicubic (a = -1, edge-clamped neighbours, truncation to uint8); samples outside the input take
/// `fill`. `m` = {a, b, c, d, e, f} as passed to Image.transform(AFFINE).
cv::Mat affine_pil(const cv::Mat& u8, const double m[6], int fill);

}  // namespace evax
