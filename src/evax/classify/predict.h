// Predicting with a finetuned classifier from its checkpoint alone: the checkpoint's meta.json
// records the architecture, class names and input convention (ClassifierSpec), so no config is
// needed (`evax predict`).
#pragma once

#include <string>
#include <vector>

#include "evax/classify/task.h"

namespace evax {

/// A finetuned classifier ready to predict.
struct LoadedClassifier {
  ClassifierSpec spec;
  VisionTransformer model{nullptr};
  std::string weights;  ///< the weight file read
  torch::Device device{torch::kCPU};
};

/// Loads `checkpoint` (a checkpoint directory such as checkpoints/best, a run directory: its best/,
/// else its newest checkpoint, or a model.safetensors with meta.json beside it), strictly.
/// DataError when it is not an evax classifier checkpoint or its tensors do not fit.
LoadedClassifier classifier_load(const std::string& checkpoint, const std::string& device = "auto");

/// The image files of `inputs`: files as given, folders searched recursively for .png, .jpg, .jpeg
/// and .dcm (any case; hidden entries skipped), each folder's images sorted by path. DataError for
/// an input that does not exist or a folder without images.
std::vector<std::string> collect_images(const std::vector<std::string>& inputs);

/// Probabilities (N, K) of the images (sigmoid for multi-label, softmax for multi-class), under
/// the checkpoint's evaluation transform, `batch` at a time. An image that cannot be read is a
/// DataError naming the file and the reason.
torch::Tensor classifier_predict(LoadedClassifier& c, const std::vector<std::string>& paths,
                                 int64_t batch = 32);

}  // namespace evax
