// Grad-CAM of images with a finetuned classifier: loading one (an evax checkpoint, or any weight
// file of a registered model with a head), the input transform for maps, class names and
// indices, and maps of a batch of images (`evax cam`, `evax cam-eval`).
//
// Example:
//   LoadedClassifier c = cam_classifier_load("runs/ft/checkpoints/best", "", "auto");
//   std::vector<cv::Mat> units = {image_read_unit("a.png")};
//   GradCamResult r = cam_units(c, units, {cam_class_index(c.spec, "Nodule")}, {}, {});
#pragma once

#include <limits>
#include <opencv2/core.hpp>
#include <optional>
#include <string>
#include <vector>

#include "evax/classify/predict.h"
#include "evax/explain/gradcam.h"

namespace evax {

/// How an image becomes the classifier's input for a map.
struct CamInputOptions {
  /// "bicubic": PIL-like antialiased bicubic (the resampling of the classifier's own evaluation
  /// transform); "bilinear": torch bilinear without antialias (EVA-X get_cams.py's torchvision
  /// tensor Resize((224, 224))).
  TORCH_ARG(std::string, resize) = "bicubic";
  /// The checkpoint's evaluation transform (shorter side to size / crop_pct, centre crop; always
  /// bicubic) instead of a plain resize to size × size: the map then covers the crop only.
  TORCH_ARG(bool, crop) = false;
  /// Normalisation mean; NaN: the checkpoint's.
  TORCH_ARG(double, mean) = std::numeric_limits<double>::quiet_NaN();
  /// Normalisation std; NaN: the checkpoint's.
  TORCH_ARG(double, std) = std::numeric_limits<double>::quiet_NaN();
  /// Input side, a multiple of 16; 0: the checkpoint's img_size.
  TORCH_ARG(int64_t, size) = 0;
};

/// A classifier to explain: an evax classifier checkpoint (classifier_load; `model`, when given,
/// must name its architecture) or, with `model` given and no meta.json beside the weights, any
/// weight file of that registered model whose state dict has a `head.weight` (loaded strictly;
/// classes named "0" … "K-1", the model's input convention, sigmoid scores). `img_size` (0: the
/// model's default) sizes the model for the latter. UsageError / DataError naming the file.
LoadedClassifier cam_classifier_load(const std::string& checkpoint, const std::string& model,
                                     const std::string& device, int64_t img_size = 0);

/// The input side maps are computed at (o.size or the checkpoint's); ConfigError unless a
/// positive multiple of 16.
int64_t cam_input_size(const ClassifierSpec& spec, const CamInputOptions& o);

/// A grey [0, 1] image → (3, S, S) model input: resize to S × S (no crop, so the map covers the
/// whole image) or the evaluation transform with `crop`, then (x − mean) / std.
torch::Tensor cam_input(const cv::Mat& unit, const ClassifierSpec& spec, const CamInputOptions& o);

/// A class by name (exact, or ChestX-ray14's "Infiltrate" for "Infiltration" and back) or by
/// index ("0" … "K-1"). ConfigError listing the classes otherwise.
int64_t cam_class_index(const ClassifierSpec& spec, const std::string& name_or_index);

/// The class a box label names (exact name or the Infiltrate/Infiltration alias), if any.
std::optional<int64_t> box_class_index(const ClassifierSpec& spec, const std::string& label);

/// Grad-CAM of images (grey [0, 1] CV_32F) under cam_input, in one batch on the classifier's
/// device; `classes` as grad_cam takes them. The result's tensors are on the CPU.
GradCamResult cam_units(const LoadedClassifier& c, const std::vector<cv::Mat>& units,
                        const std::vector<int64_t>& classes, const CamInputOptions& in,
                        const GradCamOptions& cam);

/// Grad-CAM of pre-normalised inputs (B, 3, H, W) on the classifier's device, `batch` at a time;
/// tensors on the CPU.
GradCamResult cam_pixels(const LoadedClassifier& c, const torch::Tensor& pixels,
                         const std::vector<int64_t>& classes, const GradCamOptions& cam,
                         int64_t batch = 16);

/// The probability of each image's class: sigmoid of its logit, softmax for a multi-class spec.
torch::Tensor cam_class_scores(const ClassifierSpec& spec, const torch::Tensor& logits,
                               const torch::Tensor& classes);

}  // namespace evax
