// Deterministic evaluation preprocessing shared by embed, predict and evaluation loaders.
#pragma once

#include <opencv2/core.hpp>
#include <torch/torch.h>

namespace evax {

/// EVA-X's evaluation crop fraction: 0.875 up to 224 (Resize 256 → CenterCrop 224), 1 above.
double eval_crop_pct(int64_t size);

/// A grey [0,1] image (CV_32F) → (3, size, size), timm's eval transform
/// (create_transform(size, is_training=False, crop_pct, interpolation='bicubic')): shorter side
/// resized to floor(size / crop_pct) (bicubic, antialiased like PIL; longer side truncated like
/// torchvision), centre crop (offsets rounded half to even), replicated to 3 channels,
/// (x − mean) / std. Tested against timm 1.0 in tests/data/transforms_test.cpp.
torch::Tensor eval_transform(const cv::Mat& unit, int64_t size, double crop_pct, double mean,
                             double std);

}  // namespace evax
