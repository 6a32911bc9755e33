// Predicting with a segmentation checkpoint alone (`evax predict`): its meta.json records the
// architecture, classes, input convention and inference settings (SegmenterSpec), so no config is
// needed. Writes mask PNGs and overlays.
#pragma once

#include <opencv2/core.hpp>

#include <string>

#include "evax/segment/task.h"

namespace evax {

/// A segmentation model ready to predict.
struct LoadedSegmenter {
  SegmenterSpec spec;
  UperNet model{nullptr};
  std::string weights;  ///< the weight file read
  torch::Device device{torch::kCPU};
};

/// Loads `checkpoint` (a checkpoint directory, a run directory, or a model.safetensors with its
/// meta.json) strictly. DataError when it is not an evax segmentation checkpoint.
LoadedSegmenter segmenter_load(const std::string& checkpoint, const std::string& device = "auto");

/// A registered UperNet (`name`) shaped after a checkpoint and loaded from it strictly: an evax
/// segmentation checkpoint's meta.json gives the architecture; for other files (mmseg) the
/// decoder width, output channels, auxiliary head and depth are read off the tensors. `img_size`
/// > 0 sets the input side (position embedding resampled). No checkpoint: fresh weights.
UperNet upernet_for_checkpoint(const std::string& name, const std::string& checkpoint,
                               int64_t img_size, WeightLoadReport* report = nullptr);

/// A mask as an 8-bit PNG image: binary tasks 0/255 (the manifest convention), several classes
/// their ids.
cv::Mat segmentation_mask_png(const torch::Tensor& classes, int64_t num_classes);

/// The grey image (CV_32F in [0, 1]) as BGR with every foreground class tinted (alpha 0.4) and
/// outlined, for a quick look.
cv::Mat segmentation_overlay(const cv::Mat& unit, const torch::Tensor& classes);
/// segmentation_overlay of the prediction with the label's outline drawn in red on top: where
/// the model and the truth disagree.
cv::Mat segmentation_truth_overlay(const cv::Mat& unit, const torch::Tensor& pred,
                                   const torch::Tensor& truth);

}  // namespace evax
