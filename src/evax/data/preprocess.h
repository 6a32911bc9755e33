// Deterministic evaluation preprocessing shared by embed, predict and evaluation loaders.
#pragma once

#include <opencv2/core.hpp>
#include <torch/torch.h>

namespace evax {

/// EVA-X's evaluation crop fraction: 0.875 up to 224 (Resize 256 → CenterCrop 224), 1 above.
double eval_crop_pct(int64_t size);

/// A grey [0,1] image (CV_32F) → (3, size, size): shorter side resized to round(size / crop_pct)
/// (bicubic, antialiased like PIL), centre crop, replicated to 3 channels, (x − mean) / std.
torch::Tensor eval_transform(const cv::Mat& unit, int64_t size, double crop_pct, double mean,
                             double std);

}  // namespace evax
