// AdamW over parameter groups with per-step learning rate and weight decay, written out (rather than
// torch::optim::AdamW) so its state is plain named tensors for exact checkpoints, and so a group's
// option can never be silently replaced by the optimizer default.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "evax/core/config.h"
#include "evax/io/tensor_map.h"

namespace evax {

/// AdamW hyperparameters (defaults: EVA-02 pretraining).
struct AdamWOptions {
  /// Peak learning rate.
  TORCH_ARG(double, lr) = 1.5e-3;
  /// Learning rate at the end of the cosine.
  TORCH_ARG(double, min_lr) = 1e-5;
  /// Weight decay of the decayed group.
  TORCH_ARG(double, weight_decay) = 0.05;
  /// Weight decay at the end of the cosine (= weight_decay: constant).
  TORCH_ARG(double, weight_decay_end) = -1.0;
  /// Adam beta1.
  TORCH_ARG(double, beta1) = 0.9;
  /// Adam beta2.
  TORCH_ARG(double, beta2) = 0.98;
  /// Adam epsilon.
  TORCH_ARG(double, eps) = 1e-6;
  /// Optimizer steps of linear warmup from 0.
  TORCH_ARG(int64_t, warmup_steps) = 0;
  /// Max gradient 2-norm (0: no clipping).
  TORCH_ARG(double, clip_grad) = 3.0;
};

/// Reads `optimizer:` (lr, min_lr, weight_decay, weight_decay_end, betas: [b1, b2], eps,
/// clip_grad). Warmup is set by the caller (it is given in epochs in configs).
AdamWOptions adamw_options_from_config(const ConfigView& v, AdamWOptions defaults = {});

/// A named parameter.
struct NamedParam {
  std::string name;
  torch::Tensor param;
};

/// True for parameters excluded from weight decay: 1-D tensors (norms, biases), pos_embed,
/// cls_token (EVA-02 rule; mask_token is decayed).
bool no_weight_decay(const std::string& name, const torch::Tensor& p);

class AdamW {
 public:
  AdamW(std::vector<NamedParam> params, AdamWOptions o);
  /// One step with the given lr and wd (decayed group; the other group uses wd 0).
  void step(double lr, double wd);
  void zero_grad();
  /// Global gradient 2-norm; scales gradients down to `max_norm` when above it (max_norm > 0).
  double clip_grad_norm(double max_norm);
  /// Optimizer state as named tensors (`exp_avg.<name>`, `exp_avg_sq.<name>`, `step`).
  TensorMap state() const;
  /// Restores state() output exactly (DataError when names or shapes differ).
  void load_state(const TensorMap& state);
  const std::vector<NamedParam>& params() const { return params_; }
  const AdamWOptions& options() const { return opts_; }
  int64_t steps() const { return step_; }

 private:
  std::vector<NamedParam> params_;
  std::vector<bool> decay_;
  std::vector<torch::Tensor> exp_avg_, exp_avg_sq_;
  int64_t step_ = 0;
  AdamWOptions opts_;
};

/// EVA-02's per-step schedule: linear warmup from 0 to `base` over `warmup` steps (endpoints
/// included), then cosine from `base` to `final` over the remaining `total − warmup` steps.
double cosine_schedule(double base, double final, int64_t step, int64_t total, int64_t warmup);

}  // namespace evax
