// EVA-X's layer-wise lr decay and finetuning weight-decay rule for ViT parameter names (timm naming),
// as classification/utils/lr_decay.py (param_groups_lrd, get_layer_id_for_vit) and the model's
// no_weight_decay() define them. Plain functions of a name: train/ builds the groups from them.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

namespace evax {

/// get_layer_id_for_vit: 0 for cls_token, pos_embed and patch_embed.*, i + 1 for blocks.i.*, and
/// num_layers (= depth + 1) for everything else (fc_norm, head, and also mask_token: EVA-X's
/// classification rule has no mask-token case, unlike mmseg's LayerDecayOptimizerConstructor).
int64_t vit_layer_id(const std::string& name, int64_t depth);

/// param_groups_lrd's lr scale: layer_decay^(num_layers − layer id), num_layers = depth + 1
/// (head 1, block i layer_decay^(depth − i), embeddings layer_decay^(depth + 1)).
double vit_layer_decay_scale(const std::string& name, int64_t depth, double layer_decay);

/// EVA-X finetuning's no-weight-decay rule: every 1-D parameter (biases, norms, q_bias, v_bias)
/// and the model's no_weight_decay() names {pos_embed, cls_token}. mask_token is decayed.
bool eva_x_finetune_no_weight_decay(const std::string& name, const torch::Tensor& p);

}  // namespace evax
