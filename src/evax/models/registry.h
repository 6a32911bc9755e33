// Registered model architectures: the EVA-X family, the MGCA teacher and timm's ViT/16 family.
#pragma once

#include <string>
#include <vector>

#include "evax/core/registry.h"
#include "evax/models/vit.h"

namespace evax {

/// Architecture of a registered model: `eva_x_{tiny,small,base}_patch16`, `mgca_vit_base_patch16`,
/// `vit_{tiny,small,base,large}_patch16_{224,384}`. ConfigError for other names (lists them).
ViTOptions model_options(const std::string& name);
/// What a model expects as input: grey images replicated to 3 channels, normalised per channel.
struct InputSpec {
  double mean = 0.49185243;  ///< EVA-X statistics of the pretraining data
  double std = 0.28509309;
  int64_t size = 224;        ///< default input side
};
/// Input convention of a registered model (EVA-X: 0.49185243/0.28509309; MGCA and timm ViTs
/// trained on CXRs with 0.5/0.5).
InputSpec model_input_spec(const std::string& name);

/// Every registered model name.
std::vector<std::string> model_names();
/// Builds a registered model with a head of `num_classes` (0: none) at `img_size` (0: default).
VisionTransformer model_create(const std::string& name, int64_t num_classes = 0,
                               int64_t img_size = 0);

}  // namespace evax
