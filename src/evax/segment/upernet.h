// EVA-X's segmentation model (evax_finetune.md §3.1): an EVA-X ViT, a ViTDet-style simple feature
// pyramid and mmseg 0.29's UPerHead (plus, optionally, mmseg's auxiliary FCNHead), with
// mmsegmentation's state-dict names, so EVA-X/mmseg checkpoints load 1:1.
//
//   backbone        EVA-X ViT (models/vit.h); the raw residual stream after the out_indices blocks
//                   (no final norm, cls dropped) as (B, D, G, G) maps; use_last_feat_only (EVA-X):
//                   only the last out_index's map, fed to all four levels.
//   pyramid         fpn1 = ConvT(k2 s2) → SyncBN → GELU → ConvT(k2 s2) (stride 4), fpn2 = ConvT
//                   (stride 8), fpn3 = identity (16), fpn4 = MaxPool 2 (32). EVA-X hard-codes
//                   nn.SyncBatchNorm here, so fpn1.1 always synchronises once set_comm() is called.
//   decode_head     UPerHead: PPM on level 3 (adaptive avg pool per scale → 1×1 ConvModule →
//                   bilinear back) + 3×3 bottleneck; 1×1 laterals on levels 0-2; top-down sums;
//                   3×3 fpn_convs; all levels bilinear to level 0, concatenated, 3×3
//                   fpn_bottleneck, Dropout2d, 1×1 conv_seg. Bilinear resizes: align_corners false.
//   auxiliary_head  FCNHead on level 2: one 3×3 ConvModule (256), Dropout2d, conv_seg.
//
// C++ module names are timm's for the backbone (models/vit.h) and mmseg's elsewhere, with the
// pyramid at the top (`fpn1.0.weight`); the *_mmseg functions translate to mmseg's keys:
// `backbone.` + EVA-02 names (mlp.w12/w3; B: q_proj/k_proj/v_proj without bias + q_bias/v_bias,
// mlp.w1/w2/ffn_ln/w3), `backbone.fpn1.0.weight`, `decode_head.*`, `auxiliary_head.*`, and EVA-X's
// RoPE buffers `backbone.rope.freqs_cos/sin` and `backbone.blocks.i.attn.rope.freqs_cos/sin`.
//
// Example:
//   auto net = UperNet(upernet_options("upernet_eva_x_small_patch16"));
//   WeightLoadReport r = upernet_load_file(*net, "eva_x_small_patch16_merged520k_mim.pt");
//   torch::Tensor logits = net->forward(x);  // (B, 1, H/4, W/4), resize to the label yourself
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "evax/io/tensor_map.h"
#include "evax/models/vit.h"
#include "evax/models/weights.h"
#include "evax/segment/sync_bn.h"
#include "evax/train/optim.h"

namespace evax {

class Comm;

/// Architecture of an UperNet on an EVA-X backbone. Defaults: EVA-X's upernet_eva_x_small config
/// with the per-dataset binary setting (2 classes, one sigmoid channel).
struct UperNetOptions {
  /// Registered EVA-X ViT (models/registry.h): eva_x_{tiny,small,base}_patch16.
  TORCH_ARG(std::string, backbone) = "eva_x_small_patch16";
  /// Input side in pixels (multiple of 16, >= 32): sizes pos_embed and the RoPE buffers.
  TORCH_ARG(int64_t, img_size) = 512;
  /// Backbone blocks (0: the backbone's own depth; small values for tests).
  TORCH_ARG(int64_t, depth) = 0;
  /// Blocks whose output feeds the pyramid (strictly increasing, below the depth).
  TORCH_ARG(std::vector<int64_t>, out_indices) = std::vector<int64_t>{3, 5, 7, 11};
  /// Only the last out_index block's tokens, fed to all four levels (EVA-X); else one block each.
  TORCH_ARG(bool, use_last_feat_only) = true;
  /// Channels of the decode head's ConvModules.
  TORCH_ARG(int64_t, channels) = 256;
  /// PPM pooling scales.
  TORCH_ARG(std::vector<int64_t>, pool_scales) = std::vector<int64_t>{1, 2, 3, 6};
  /// Dropout2d before conv_seg (0: none).
  TORCH_ARG(double, dropout) = 0.1;
  /// Classes of the task, background included (mmseg num_classes).
  TORCH_ARG(int64_t, num_classes) = 2;
  /// Output channels: 1 (one sigmoid channel, binary) or num_classes (softmax).
  TORCH_ARG(int64_t, out_channels) = 1;
  /// mmseg's auxiliary FCNHead on pyramid level 2 (EVA-X: none).
  TORCH_ARG(bool, aux_head) = false;
  /// Stochastic depth of the backbone's last block (EVA-X segmentation: 0.15).
  TORCH_ARG(double, drop_path_rate) = 0.15;
  /// Norm of the heads' ConvModules: "bn" (per-rank statistics, EVA-X's norm_cfg) or "syncbn"
  /// (statistics over all ranks once set_comm() is called).
  TORCH_ARG(std::string, norm) = "bn";
};

/// Channels of the auxiliary FCNHead (mmseg's usual 256).
inline constexpr int64_t kUperNetAuxChannels = 256;

/// The registered UperNets: upernet_eva_x_{tiny,small,base}_patch16.
std::vector<std::string> upernet_model_names();
/// Options of a registered UperNet; ConfigError listing the names for others.
UperNetOptions upernet_options(const std::string& name);

/// mmcv ConvModule as mmseg builds it: `conv` without bias (a norm follows), `bn`, ReLU.
class ConvModuleImpl : public torch::nn::Module {
 public:
  ConvModuleImpl(int64_t in, int64_t out, int64_t kernel, int64_t padding);
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Conv2d conv{nullptr};
  SyncBatchNorm2d bn{nullptr};
};
TORCH_MODULE(ConvModule);

/// mmseg 0.29 UPerHead (with BaseDecodeHead's conv_seg and dropout).
class UPerHeadImpl : public torch::nn::Module {
 public:
  UPerHeadImpl(const std::vector<int64_t>& in_channels, int64_t channels,
               const std::vector<int64_t>& pool_scales, int64_t out_channels, double dropout);
  /// One map per level, finest first → logits at level 0's size.
  torch::Tensor forward(const std::vector<torch::Tensor>& inputs);

  torch::nn::Conv2d conv_seg{nullptr};
  torch::nn::Dropout2d dropout{nullptr};  ///< null when the ratio is 0
  torch::nn::ModuleList psp_modules{nullptr};  ///< per scale: Sequential(pool "0", ConvModule "1")
  ConvModule bottleneck{nullptr};
  torch::nn::ModuleList lateral_convs{nullptr}, fpn_convs{nullptr};
  ConvModule fpn_bottleneck{nullptr};
};
TORCH_MODULE(UPerHead);

/// mmseg 0.29 FCNHead with num_convs 1, kernel 3, concat_input false (the usual auxiliary head).
class FCNHeadImpl : public torch::nn::Module {
 public:
  FCNHeadImpl(int64_t in_channels, int64_t channels, int64_t out_channels, double dropout);
  /// The selected map (B, in, h, w) → logits (B, out, h, w).
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Conv2d conv_seg{nullptr};
  torch::nn::Dropout2d dropout{nullptr};
  torch::nn::Sequential convs{nullptr};
};
TORCH_MODULE(FCNHead);

/// What forward_train computes.
struct UperNetOutput {
  torch::Tensor logits;  ///< decode head (B, out_channels, H/4, W/4)
  torch::Tensor aux;     ///< auxiliary head (B, out_channels, H/16, W/16); undefined without one
};

class UperNetImpl : public torch::nn::Module {
 public:
  /// Fresh weights from torch's global generator, initialised as EVA-X/mmseg do: Linear
  /// trunc_normal(.02) (bias 0), pos_embed/cls_token trunc_normal(.02), ConvT and patch conv
  /// PyTorch's defaults, ConvModule convs kaiming_normal(fan_out, relu), conv_seg normal(0, .01)
  /// with bias 0, norms weight 1 bias 0. ConfigError for inconsistent options.
  explicit UperNetImpl(UperNetOptions o);

  /// Decode-head logits (B, out_channels, H/4, W/4), not resized. H, W: multiples of 16.
  torch::Tensor forward(const torch::Tensor& x);
  /// Decode and auxiliary logits from one backbone pass.
  UperNetOutput forward_train(const torch::Tensor& x);
  /// The four pyramid maps (strides 4, 8, 16, 32), D channels each.
  std::vector<torch::Tensor> forward_pyramid(const torch::Tensor& x);

  /// Runs the pyramid and the heads in channels-last (NHWC) memory format: their 4-D weights are
  /// stored NHWC (values unchanged) and the token maps enter as NHWC, the layout tensor-core
  /// convolutions and oneDNN prefer; false restores NCHW. Outputs equal up to rounding. Call after
  /// loading weights and moving to the device.
  void set_channels_last(bool on);
  /// Whether set_channels_last(true) is in effect.
  bool channels_last() const { return channels_last_; }

  /// Synchronises BatchNorm statistics over `comm` in training: always the pyramid's fpn1.1 (as
  /// EVA-X's nn.SyncBatchNorm), the heads' too when norm is "syncbn". nullptr: local again.
  void set_comm(Comm* comm);

  /// Parameters that require grad, in module order, under mmseg names.
  std::vector<NamedParam> named_params_mmseg() const;
  /// Every BatchNorm buffer (running_mean, running_var, num_batches_tracked), in module order.
  std::vector<torch::Tensor> norm_buffers() const;
  /// mmseg's state dict: parameters and buffers (BatchNorm statistics, and EVA-X's RoPE buffers
  /// computed for the img_size grid), in module order. Tensors share the model's storage.
  TensorMap state_dict_mmseg() const;
  /// Loads an mmseg-named state dict (a leading `module.` is stripped; RoPE buffers are accepted
  /// and ignored: recomputed; a pos_embed of another square grid is resampled). Shape mismatches
  /// are DataErrors; with `strict`, missing and unexpected keys too (counted and listed).
  WeightLoadReport load_state_dict_mmseg(const TensorMap& sd, bool strict = true);
  /// Loads the backbone from an EVA-X ViT state dict in any naming evax reads (released MIM files
  /// in EVA-02 naming, timm, finetuned classifiers, evax pretraining checkpoints) or from an
  /// mmseg state dict's `backbone.` part: pos_embed resampled to the grid, norm / fc_norm / head /
  /// mask_token / lm_head ignored (noted). `strict`: other missing or unexpected keys are
  /// DataErrors. The pyramid and heads keep their weights.
  WeightLoadReport load_backbone(const TensorMap& sd, bool strict = false);
  /// load_backbone() from a weight file (any format weight_file_read reads).
  WeightLoadReport load_backbone(const std::string& path, bool strict = false);

  const UperNetOptions& options() const { return options_; }
  /// Blocks of the backbone as built (the depth override applied).
  int64_t backbone_depth() const;
  /// Token grid side at img_size.
  int64_t grid() const { return options_.img_size() / 16; }

  VisionTransformer backbone{nullptr};
  torch::nn::Sequential fpn1{nullptr}, fpn2{nullptr};
  torch::nn::MaxPool2d fpn4{nullptr};
  UPerHead decode_head{nullptr};
  FCNHead auxiliary_head{nullptr};  ///< null without aux_head

 private:
  /// (mmseg name, tensor) of every parameter (and buffer), in module order, without RoPE.
  TensorMap mmseg_entries(bool buffers) const;
  UperNetOptions options_;
  bool channels_last_ = false;
};
TORCH_MODULE(UperNet);

/// Loads a weight file into `model`: a directory resolves as run_weights_path does; an mmseg
/// segmentation checkpoint (`state_dict` nesting, `decode_head.` keys: EVA-X/mmseg or evax's own
/// segmentation checkpoints) goes through load_state_dict_mmseg(strict), anything else is taken
/// as backbone weights (load_backbone(strict)). DataErrors name the file.
WeightLoadReport upernet_load_file(UperNetImpl& model, const std::string& path,
                                   bool strict = false);

}  // namespace evax
