// Loading weights into evax ViTs from any supported naming: timm (Eva / VisionTransformer), the
// EVA-02/asuka naming of the released EVA-X files, and MGCA Lightning files. Detection is
// automatic and reported; missing and unexpected keys are listed.
#pragma once

#include <string>
#include <vector>

#include "evax/io/tensor_map.h"
#include "evax/models/vit.h"

namespace evax {

/// Key naming of a state dict.
enum class WeightNaming {
  kTimm,   ///< timm Eva / VisionTransformer keys (what evax modules are named)
  kEva02,  ///< EVA-02/asuka: mlp.w12/w1/w2/w3, mlp.ffn_ln, attn.q_bias with q_proj (B), rope.*
  kMgca,   ///< MGCA Lightning: image backbone under `img_encoder_q.model.`
};

/// "timm", "eva02" or "mgca".
const char* weight_naming_name(WeightNaming n);
/// Parses "timm" / "evax" / "eva02" (ConfigError otherwise).
WeightNaming weight_naming_from_string(const std::string& s);

/// Guesses the naming of a flat state dict from its keys.
WeightNaming detect_naming(const TensorMap& sd);

/// What a weight load did.
struct WeightLoadReport {
  WeightNaming naming = WeightNaming::kTimm;  ///< detected naming
  size_t loaded = 0;                          ///< tensors copied into the model
  std::vector<std::string> missing;           ///< model keys the checkpoint lacks
  std::vector<std::string> unexpected;        ///< checkpoint keys the model lacks
  std::vector<std::string> notes;             ///< renames, drops, resamples (one line each)
  /// One-paragraph human summary.
  std::string summary() const;
};

/// Options of load_weights().
struct WeightLoadOptions {
  /// Missing or unexpected keys are errors (else reported only).
  TORCH_ARG(bool, strict) = false;
  /// Resample a position embedding whose grid differs from the model's (bicubic, cls kept).
  TORCH_ARG(bool, resample_pos_embed) = true;
  /// Drop a checkpoint `head.*` whose shape differs from the model's (new class count).
  TORCH_ARG(bool, drop_mismatched_head) = true;
  /// Keys (timm naming, after the naming's own renames and drops, see map_to_timm) the caller
  /// documents it can do without: even in strict mode they may be missing from the checkpoint
  /// (the model keeps its initialisation) or unused by the model, and a checkpoint tensor among
  /// them whose shape differs from the model's is skipped with a note instead of failing. An entry
  /// ending in '.' matches every key under that prefix ("lm_head."), others match exactly
  /// ("mask_token").
  TORCH_ARG(std::vector<std::string>, droppable) = {};
};

/// Renames `sd` (in `naming`) to timm keys as eva_x.py's checkpoint filter does: rope buffers are
/// dropped and, for MIM weights going into a model without MIM head (or, with `model` null, into a
/// timm `Eva` classifier), `mask_token`/`lm_head.*` are dropped and the final `norm.*` becomes
/// `fc_norm.*`. `keep_mim` keeps MIM tensors as they are. `notes` gets one line per rule that fired.
TensorMap map_to_timm(const TensorMap& sd, WeightNaming naming, const VisionTransformerImpl* model,
                      std::vector<std::string>* notes, bool keep_mim = false);

/// The registered architecture a timm-named state dict fits best ("" when none), judged by widths,
/// depth and block layout.
std::string guess_architecture(const TensorMap& timm_sd);

/// Copies a state dict (any naming) into `model`, casting to the model's dtype. Shape mismatches are
/// DataErrors (like PyTorch); so are missing/unexpected keys in strict mode (except the options'
/// `droppable` ones; the message counts and lists the others, at most 8 of each), and a load
/// where nothing matches.
WeightLoadReport load_weights(VisionTransformerImpl& model, const TensorMap& sd,
                              const WeightLoadOptions& opts = {});

/// The model's state dict in timm naming (parameters, in registration order).
TensorMap state_dict_timm(const VisionTransformerImpl& model);
/// timm naming → EVA-02/asuka naming (what the released EVA-X files and the MIM student use).
TensorMap map_timm_to_eva02(const TensorMap& sd);

}  // namespace evax
