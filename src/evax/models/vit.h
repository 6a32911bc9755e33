// Vision Transformers of the EVA-X family and plain ViTs, with module and parameter names equal to
// timm's state_dict keys (timm `Eva` for EVA-X, timm `VisionTransformer` for the MGCA teacher), so
// weights map 1:1.
//
//   EVA-X Ti/S: fused `qkv` without bias + `q_bias`/`v_bias`, packed SwiGLU `mlp.fc1` (2H) / `fc2`.
//   EVA-X B:    `q_proj` (bias), `k_proj` (no bias), `v_proj` (bias), SwiGLU `fc1_g`/`fc1_x`, sub-LN
//               `mlp.norm`, `fc2`.
//   plain ViT:  `qkv` with bias, GELU `mlp.fc1`/`fc2`, final `norm`, cls-token pooling.
//
// Example:
//   auto m = VisionTransformer(eva_x_options("eva_x_small_patch16").num_classes(14));
//   auto tokens = m->forward_features(x);           // (B, 1 + N, D)
//   auto pooled = m->forward_head(tokens, true);    // (B, D)
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

namespace evax {

/// MLP variant of a transformer block.
enum class MlpKind {
  kGelu,         ///< fc1 → GELU → fc2 (plain ViT)
  kSwiGluPacked, ///< fc1 (2H rows: gate then value) → SiLU(gate)·value → fc2 (EVA-X Ti/S)
  kSwiGluSubLn,  ///< SiLU(fc1_g)·fc1_x → LayerNorm `norm` → fc2 (EVA-X B)
};

/// How tokens are pooled for the head.
enum class PoolKind {
  kAvg,    ///< mean of patch tokens (cls excluded), then `fc_norm` (EVA-X)
  kToken,  ///< the cls token after the final `norm` (plain ViT)
};

/// Architecture of a ViT. Defaults are EVA-X-S at 224.
struct ViTOptions {
  /// Input side in pixels (multiple of patch_size); sizes the learned position embedding.
  TORCH_ARG(int64_t, img_size) = 224;
  /// Patch side in pixels.
  TORCH_ARG(int64_t, patch_size) = 16;
  /// Input channels.
  TORCH_ARG(int64_t, in_chans) = 3;
  /// Token width D.
  TORCH_ARG(int64_t, embed_dim) = 384;
  /// Number of blocks.
  TORCH_ARG(int64_t, depth) = 12;
  /// Attention heads (head_dim = D / heads).
  TORCH_ARG(int64_t, num_heads) = 6;
  /// MLP hidden width = int(D · mlp_ratio).
  TORCH_ARG(double, mlp_ratio) = 4.0 * 2.0 / 3.0;
  /// MLP variant.
  TORCH_ARG(MlpKind, mlp) = MlpKind::kSwiGluPacked;
  /// One fused `qkv` Linear (true) or `q_proj`/`k_proj`/`v_proj` (false).
  TORCH_ARG(bool, qkv_fused) = true;
  /// EVA biases: q and v only (`q_bias`, `v_bias`, no k bias). False: a plain `qkv.bias`.
  TORCH_ARG(bool, eva_qv_bias) = true;
  /// 2-D rotary embedding on q/k of patch tokens (EVA).
  TORCH_ARG(bool, use_rope) = true;
  /// Grid the RoPE positions are scaled to: t = arange(G) · ref / G (EVA-X: 14).
  TORCH_ARG(int64_t, rope_ref_grid) = 14;
  /// Pooling for the head.
  TORCH_ARG(PoolKind, pool) = PoolKind::kAvg;
  /// Final `norm` after the blocks (plain ViT and the MIM student; EVA-X classifier: none).
  TORCH_ARG(bool, final_norm) = false;
  /// Classes of the linear `head` (0: no head).
  TORCH_ARG(int64_t, num_classes) = 0;
  /// Stochastic depth of the last block; block i gets i/(depth-1) of it.
  TORCH_ARG(double, drop_path_rate) = 0.0;
  /// LayerNorm epsilon.
  TORCH_ARG(double, norm_eps) = 1e-6;
  /// The head's initial weights are scaled by this (EVA-X: 0.001).
  TORCH_ARG(double, head_init_scale) = 0.001;
  /// Width of the MIM `lm_head` (teacher width); 0: no MIM head and no `mask_token`.
  TORCH_ARG(int64_t, mim_dim) = 0;
  /// Scale the patch-embedding gradient by 0.1 (EVA-02 `stop_grad_conv1`).
  TORCH_ARG(bool, stop_grad_conv1) = false;

 public:
  int64_t grid() const { return img_size_ / patch_size_; }
  int64_t mlp_hidden() const { return static_cast<int64_t>(embed_dim_ * mlp_ratio_); }
};

/// Patch embedding: Conv2d(in_chans, D, patch, stride patch) named `proj`.
class PatchEmbedImpl : public torch::nn::Module {
 public:
  explicit PatchEmbedImpl(const ViTOptions& o);
  /// (B, C, H, W) → (B, D, H/p, W/p)
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d proj{nullptr};
};
TORCH_MODULE(PatchEmbed);

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const ViTOptions& o);
  /// x (B, N, D); rope (N - 1, 2·head_dim) = [sin | cos] for patch tokens, or undefined.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& rope);

  ViTOptions options;
  torch::nn::Linear qkv{nullptr}, q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr};
  torch::nn::Linear proj{nullptr};
  torch::Tensor q_bias, v_bias;
};
TORCH_MODULE(Attention);

class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(const ViTOptions& o);
  torch::Tensor forward(const torch::Tensor& x);

  MlpKind kind;
  torch::nn::Linear fc1{nullptr}, fc1_g{nullptr}, fc1_x{nullptr}, fc2{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(Mlp);

/// The intermediate tensors a block offers to a tap (explain/gradcam.h's target layers), each
/// (B, 1 + N, D) and named like the timm module whose output it is.
enum class BlockTapPoint {
  kNorm1,   ///< `blocks.i.norm1`: the LayerNorm output feeding the attention
  kNorm2,   ///< `blocks.i.norm2`: the LayerNorm output feeding the MLP
  kOutput,  ///< `blocks.i`: the block's output (the residual stream)
};

/// A tap on a block: called with each point's tensor during forward, it returns the tensor the
/// block continues with (the same one to observe only; e.g. a detached copy that requires grad,
/// to take gradients with respect to it).
using BlockTap = std::function<torch::Tensor(BlockTapPoint, const torch::Tensor&)>;

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const ViTOptions& o, double drop_path);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& rope);

  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  Attention attn{nullptr};
  Mlp mlp{nullptr};
  double drop_path;
  /// Optional tap (unset by default: forward's results and cost are unchanged). Whoever sets it
  /// resets it (explain/gradcam.cpp does, also when an exception leaves the forward).
  BlockTap tap;

 private:
  torch::Tensor forward_tapped(const torch::Tensor& x, const torch::Tensor& rope);
};
TORCH_MODULE(Block);

class VisionTransformerImpl : public torch::nn::Module {
 public:
  explicit VisionTransformerImpl(ViTOptions o);

  /// timm's forward_features: (B, C, H, W) → (B, 1 + N, D). H, W: any multiple of patch_size
  /// (position embedding resampled bicubically, RoPE rescaled to the reference grid).
  torch::Tensor forward_features(const torch::Tensor& x);
  /// timm's forward_head: pooled features (pre_logits) or logits.
  torch::Tensor forward_head(const torch::Tensor& tokens, bool pre_logits = false);
  /// Logits (or pooled features when num_classes == 0).
  torch::Tensor forward(const torch::Tensor& x);
  /// Intermediate features for dense heads (EVA-X segmentation's `out_indices`): the raw residual
  /// stream (B, 1 + N, D) right after each block in `indices` (strictly increasing, each below
  /// depth), before any final norm. Blocks after the last index are not run. Embedding as in
  /// forward_features (any multiple of patch_size). ConfigError for bad indices.
  std::vector<torch::Tensor> forward_blocks(const torch::Tensor& x,
                                            const std::vector<int64_t>& indices);
  /// MIM student: tokens where `mask` (B, N) is true are replaced by `mask_token`; returns
  /// lm_head(norm(patch tokens)) of shape (B, N, mim_dim).
  torch::Tensor forward_mim(const torch::Tensor& x, const torch::Tensor& mask);

  /// Sin/cos RoPE table (G_h·G_w, 2·head_dim) for a grid, as timm's RotaryEmbeddingCat builds it.
  torch::Tensor rope_table(int64_t gh, int64_t gw, const torch::Device& device) const;
  /// The position embedding for a grid (resampled when it differs from the stored one).
  torch::Tensor pos_embed_for(int64_t gh, int64_t gw) const;

  const ViTOptions& options() const { return options_; }

  PatchEmbed patch_embed{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm norm{nullptr}, fc_norm{nullptr};
  torch::nn::Linear head{nullptr}, lm_head{nullptr};
  torch::Tensor cls_token, pos_embed, mask_token;

 private:
  torch::Tensor embed(const torch::Tensor& x, const torch::Tensor& mask, torch::Tensor* rope);
  void init_weights();
  ViTOptions options_;
};
TORCH_MODULE(VisionTransformer);

/// Bicubic resampling of an absolute position embedding (1, prefix + gh·gw, D) to a new grid,
/// keeping the `prefix` (cls) slots; computed in fp32 with antialiasing like timm.
torch::Tensor resample_pos_embed(const torch::Tensor& pos, int64_t old_h, int64_t old_w,
                                 int64_t new_h, int64_t new_w, int64_t prefix = 1);

/// Fills `t` from a normal(0, std) truncated to [lo, hi] (PyTorch's trunc_normal_ algorithm).
void trunc_normal_(torch::Tensor t, double std, double lo = -2.0, double hi = 2.0);

}  // namespace evax
