// Building a registered model and filling it from a checkpoint file in one call.
#pragma once

#include <string>

#include "evax/models/registry.h"
#include "evax/models/weights.h"

namespace evax {

/// A model plus what loading its weights did.
struct LoadedModel {
  VisionTransformer model{nullptr};
  WeightLoadReport report;       ///< empty when no checkpoint was given
  std::string checkpoint_key;    ///< where the weights sat in the file ("" = top level)
};

/// Reads `checkpoint` (any supported file and naming) into `model` with load_weights(). A
/// DataError names the file and `what` (e.g. "teacher mgca_vit_base_patch16"), then
/// load_weights()'s reason (in strict mode: the missing and unexpected keys, counted and listed).
/// `checkpoint_key`, when given, receives where the weights sat in the file.
WeightLoadReport load_checkpoint_into(VisionTransformerImpl& model, const std::string& checkpoint,
                                      const std::string& what, const WeightLoadOptions& opts = {},
                                      std::string* checkpoint_key = nullptr);

/// Creates `name` at `img_size` (0: the model's default) with `num_classes` outputs and, when
/// `checkpoint` is not empty, loads it (any supported file and naming; see load_checkpoint_into).
LoadedModel model_load(const std::string& name, const std::string& checkpoint,
                       int64_t num_classes = 0, int64_t img_size = 0,
                       const WeightLoadOptions& opts = {});

}  // namespace evax
