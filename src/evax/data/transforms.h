// Training-time image transforms: random resized crop, flips, centre crop, normalisation, the MIM
// two-view crop, segmentation joint transforms and a photometric distortion. RandAugment lives in
// rand_augment.h.
//
// Representation: images are float (C, H, W) torch tensors with values in [0, 1] (C = 1 for the
// grey radiographs evax reads, see unit_to_tensor); masks are (1, H, W) uint8 tensors of class ids.
// Only normalise() leaves [0, 1]: it is the last step and also replicates grey to 3 channels,
// like EVA-X's PIL `.convert('RGB')`. Every random decision takes an explicit evax::Rng, so a
// sample's augmentation depends only on the Rng it is given (the loader seeds it from
// (seed, epoch, index)).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <opencv2/core.hpp>

#include "evax/core/config.h"
#include "evax/core/rng.h"
#include "evax/data/rand_augment.h"

namespace evax {

/// EVA-X normalisation (Merged520k statistics), the same on all 3 channels.
inline constexpr double kEvaxMean = 0.49185243;
/// EVA-X normalisation standard deviation.
inline constexpr double kEvaxStd = 0.28509309;
/// MGCA teacher / timm IMAGENET_INCEPTION normalisation mean (asuka's non-CLIP teacher).
inline constexpr double kTeacherMean = 0.5;
/// MGCA teacher normalisation standard deviation.
inline constexpr double kTeacherStd = 0.5;

/// A closed interval [lo, hi].
struct Range {
  double lo = 0.0;  ///< lower end
  double hi = 0.0;  ///< upper end
};

/// A crop rectangle in pixels: torchvision's (i, j, h, w).
struct CropBox {
  int64_t top = 0;     ///< first row (i)
  int64_t left = 0;    ///< first column (j)
  int64_t height = 0;  ///< rows (h)
  int64_t width = 0;   ///< columns (w)
};

/// Resampling filters.
enum class Interp {
  kNearest,   ///< floor(dst * scale), like cv2.INTER_NEAREST / torch "nearest" (masks)
  kBilinear,  ///< cv2.INTER_LINEAR-like, no antialias (mmseg's image resize)
  kBicubic,   ///< PIL Image.resize(BICUBIC): antialiased, see resize_bicubic_pil
};

/// A CV_32F grey image in [0, 1] → (1, H, W) float tensor sharing the Mat's buffer (no copy;
/// the tensor keeps the buffer alive, writes to either show in both).
torch::Tensor unit_to_tensor(const cv::Mat& unit);

/// torchvision RandomResizedCrop.get_params: up to 10 tries of area ~ U(scale) · H·W and
/// log-aspect ~ U(log ratio), w = round(sqrt(area·ratio)), h = round(sqrt(area/ratio)) (Python's
/// round-half-even), accepted when 0 < w <= W and 0 < h <= H, then i ~ U{0..H-h}, j ~ U{0..W-w};
/// otherwise the centre crop of the whole image with its aspect clamped into `ratio`.
CropBox random_resized_crop_box(Rng& rng, int64_t height, int64_t width,
                                Range scale = {0.08, 1.0}, Range ratio = {3.0 / 4.0, 4.0 / 3.0});

/// PIL-like bicubic resize of a float (C, H, W) tensor: a horizontal then a vertical antialiased
/// bicubic pass (bicubic_pass, resample.h), each clamped to [0, 1] as PIL clips its 8-bit
/// intermediate; `quantize8` also rounds both passes to the 8-bit grid
/// (PIL's uint8 intermediates) for bit-level PIL parity on 8-bit input.
torch::Tensor resize_bicubic_pil(const torch::Tensor& chw, int64_t out_h, int64_t out_w,
                                 bool quantize8 = false);

/// Resizes an image (any C) with the given filter.
torch::Tensor resize(const torch::Tensor& chw, int64_t out_h, int64_t out_w, Interp interp);

/// Crops `box` and resizes it to out_h × out_w (torchvision F.resized_crop on a PIL image).
torch::Tensor resized_crop(const torch::Tensor& chw, const CropBox& box, int64_t out_h,
                           int64_t out_w, Interp interp = Interp::kBicubic);

/// Mirrors left-right (the last dimension); works for images and masks.
torch::Tensor hflip(const torch::Tensor& chw);

/// torchvision CenterCrop: top = round((H - h) / 2) half-to-even, same for left. DataError when the
/// image is smaller than the crop.
torch::Tensor center_crop(const torch::Tensor& chw, int64_t h, int64_t w);

/// torchvision Resize(int): the shorter side becomes `size`, the longer int(size · long / short).
torch::Tensor resize_shorter(const torch::Tensor& chw, int64_t size,
                             Interp interp = Interp::kBicubic);

/// (x - mean) / std; a 1-channel image is replicated to `channels` (3 for the ViTs).
torch::Tensor normalize(const torch::Tensor& chw, double mean, double std, int64_t channels = 3);

/// Rounds [0, 1] values to the 8-bit grid: round(255 x) / 255, clamped.
torch::Tensor quantize8(const torch::Tensor& t);

// --- MIM two views ---------------------------------------------------------------------------

/// EVA-02 `RandomResizedCropAndInterpolationWithTwoResolution` (asuka DataAugmentationForEVA):
/// one crop box, one flip decision, two bicubic outputs.
struct TwoViewOptions {
  int64_t student_size = 224;  ///< student input side
  int64_t teacher_size = 224;  ///< teacher (MGCA) input side
  /// Crop area fraction: EVA-02 asuka default (EVA-X does not state it).
  Range scale{0.2, 1.0};
  /// Crop aspect: EVA-02 default; the EVA-X paper's "randomly scale images with [3/4, 4/3]".
  Range ratio{3.0 / 4.0, 4.0 / 3.0};
  double flip_p = 0.5;                ///< horizontal flip probability (asuka: before the crop)
  double student_mean = kEvaxMean;    ///< student normalisation mean
  double student_std = kEvaxStd;      ///< student normalisation std
  double teacher_mean = kTeacherMean; ///< teacher normalisation mean
  double teacher_std = kTeacherStd;   ///< teacher normalisation std
};

/// The two normalised 3-channel views of one image.
struct TwoViews {
  torch::Tensor student;  ///< (3, student_size, student_size)
  torch::Tensor teacher;  ///< (3, teacher_size, teacher_size)
  CropBox box;            ///< region shown, in the input's (unflipped) coordinates
  bool flipped = false;   ///< both views mirrored
};

/// Draws the crop and flip from `rng` and renders both views from the same region. Flipping the
/// image before the crop (asuka) equals flipping both crops of the mirrored box, which is what is
/// done here; the box distribution is mirror-symmetric, so the two are the same in distribution.
TwoViews two_view_crop(const torch::Tensor& chw, Rng& rng, const TwoViewOptions& options);

/// Reads TwoViewOptions from `cfg` (keys: student_size, teacher_size, scale [lo, hi],
/// ratio [lo, hi], flip_p, student_mean, student_std, teacher_mean, teacher_std).
TwoViewOptions two_view_options_from_config(const ConfigView& cfg);

// --- classification --------------------------------------------------------------------------

/// EVA-X CXR14 training augmentation (timm create_transform(is_training=True) with
/// auto_augment `rand-m6-mstd0.5-inc1`, no colour jitter, no random erasing).
struct ClassifyAugmentOptions {
  int64_t size = 224;                  ///< output side
  Range scale{0.08, 1.0};              ///< RandomResizedCrop area fraction
  Range ratio{3.0 / 4.0, 4.0 / 3.0};   ///< RandomResizedCrop aspect range
  double flip_p = 0.5;                 ///< horizontal flip probability
  bool rand_augment = true;            ///< apply RandAugment after the flip
  RandAugmentOptions rand_augment_options;  ///< its settings (EVA-X: rand-m6-mstd0.5-inc1)
  double mean = kEvaxMean;             ///< normalisation mean
  double std = kEvaxStd;               ///< normalisation std
};

/// RandomResizedCrop (bicubic) → flip → RandAugment → normalise to 3 channels.
torch::Tensor classify_train_transform(const torch::Tensor& chw, Rng& rng,
                                       const ClassifyAugmentOptions& options);

/// Reads ClassifyAugmentOptions from `cfg` (keys: size, scale, ratio, flip_p, rand_augment (a
/// timm spec string such as "rand-m6-mstd0.5-inc1", or "" for none), mean, std).
ClassifyAugmentOptions classify_augment_options_from_config(const ConfigView& cfg);

// --- segmentation ----------------------------------------------------------------------------

/// An image with its mask: image float (C, H, W) in [0, 1], mask (1, H, W) uint8 class ids.
struct SegPair {
  torch::Tensor image;  ///< (C, H, W) float
  torch::Tensor mask;   ///< (1, H, W) uint8
};

/// Resizes both: the image with `image_interp`, the mask with nearest neighbour.
SegPair joint_resize(const SegPair& in, int64_t h, int64_t w,
                     Interp image_interp = Interp::kBilinear);
/// Mirrors both left-right.
SegPair joint_hflip(const SegPair& in);

/// An image size in pixels.
struct ImageSize {
  int64_t height = 0;  ///< rows
  int64_t width = 0;   ///< columns
};

/// mmcv.rescale_size with a (max_long, max_short) scale, as mmseg Resize(keep_ratio=True) uses it:
/// the larger bound limits the long edge and the smaller the short edge, s = min(max_long /
/// long_edge, max_short / short_edge) in double, and the new size is int(w·s + 0.5) ×
/// int(h·s + 0.5) (round half up, unlike Python's round). Up- or downscales. DataError when a
/// bound or the image is empty or an edge would become 0.
ImageSize keep_ratio_size(int64_t height, int64_t width, int64_t max_long, int64_t max_short);
/// Resizes an image to keep_ratio_size (mmcv.imrescale; mmseg's bilinear by default).
torch::Tensor resize_keep_ratio(const torch::Tensor& chw, int64_t max_long, int64_t max_short,
                                Interp interp = Interp::kBilinear);
/// mmseg Resize(keep_ratio=True) of an image and its mask: both to keep_ratio_size, the image
/// with `image_interp`, the mask with nearest neighbour.
SegPair joint_resize_keep_ratio(const SegPair& in, int64_t max_long, int64_t max_short,
                                Interp image_interp = Interp::kBilinear);
/// Crops `box` from both and resizes (image `image_interp`, mask nearest).
SegPair joint_resized_crop(const SegPair& in, const CropBox& box, int64_t h, int64_t w,
                           Interp image_interp = Interp::kBicubic);

/// mmseg PhotoMetricDistortion reduced to grey images (its saturation and hue steps are no-ops on
/// grey): on the 8-bit scale, brightness += U(-delta, delta) with probability p, then contrast
/// *= U(lo, hi) with probability p, each clipped to [0, 255] and truncated like mmseg's uint8 cast.
struct PhotometricOptions {
  double brightness_delta = 32.0;  ///< 8-bit units
  Range contrast{0.5, 1.5};        ///< multiplicative factor range
  double p = 0.5;                  ///< probability of each step
};

/// Applies PhotometricOptions to a [0, 1] image (result stays in [0, 1]).
torch::Tensor photometric_distortion(const torch::Tensor& chw, Rng& rng,
                                     const PhotometricOptions& options = {});

/// The EVA-X (mmseg) segmentation training pipeline after loading.
struct SegAugmentOptions {
  int64_t size = 512;        ///< square output side (keep_ratio = False)
  double flip_p = 0.5;       ///< horizontal flip probability
  bool photometric = true;   ///< apply photometric_distortion
  PhotometricOptions photo;  ///< its settings
  double mean = kEvaxMean;   ///< normalisation mean
  double std = kEvaxStd;     ///< normalisation std
};

/// Resize to size² (image bilinear, mask nearest) → flip → photometric distortion → normalise to
/// 3 channels. The mask stays (1, size, size) uint8.
SegPair segment_train_transform(const SegPair& in, Rng& rng, const SegAugmentOptions& options);

}  // namespace evax
