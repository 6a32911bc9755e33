// The classifier EVA-X finetunes: a registered ViT with its head (EVA-X: mean pooling of the patch
// tokens + `fc_norm` + linear `head`, timm `Eva(global_pool='avg')` keys; plain ViTs: cls token +
// `norm` + `head`), and its optimizer groups (EVA-X's layer decay and no-decay rule).
//
// Example:
//   auto m = classifier_build(ClassifierOptions().model("eva_x_small_patch16").num_classes(14));
//   ParamGroups g = classifier_param_groups(*m, /*weight_decay=*/0.05, /*layer_decay=*/0.55);
#pragma once

#include <string>

#include "evax/models/vit.h"
#include "evax/train/optim.h"

namespace evax {

/// Architecture of a classifier.
struct ClassifierOptions {
  /// Registered architecture (models/registry.h).
  TORCH_ARG(std::string, model) = "eva_x_small_patch16";
  /// Outputs of the linear head (>= 1).
  TORCH_ARG(int64_t, num_classes) = 14;
  /// Input side in pixels (multiple of 16); the position embedding is sized for it.
  TORCH_ARG(int64_t, img_size) = 224;
  /// Stochastic depth of the last block (EVA-X runs: 0.2; CheXpert-S 0.15).
  TORCH_ARG(double, drop_path) = 0.1;
  /// Blocks override for small experiments (0: the model's own depth).
  TORCH_ARG(int64_t, depth) = 0;
};

/// Builds the classifier with fresh weights drawn from torch's global generator (timm init; the
/// registry's head scale: 0.001 for EVA-X as EVA-X does, 1 for plain ViTs).
VisionTransformer classifier_build(const ClassifierOptions& o);

/// EVA-X's param_groups_lrd over the model's trainable parameters (in module order; frozen ones,
/// requires_grad false, are left out as param_groups_lrd does): lr scale
/// layer_decay^(depth + 1 − layer id) (models/layer_decay.h), no weight decay for 1-D parameters,
/// pos_embed and cls_token, `weight_decay` for the rest. `only`, when non-empty, keeps just the
/// parameters whose name starts with one of its prefixes (linear probing: {"fc_norm.", "head."}).
ParamGroups classifier_param_groups(VisionTransformerImpl& model, double weight_decay,
                                    double layer_decay, const std::vector<std::string>& only = {});

}  // namespace evax
