// AdamW over parameter groups with per-step learning rate and weight decay, written out (rather than
// torch::optim::AdamW) so its state is plain named tensors for exact checkpoints, and so a group's
// option can never be silently replaced by the optimizer default.
#pragma once

#include <torch/torch.h>

#include <functional>
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
  /// ATen's fused AdamW kernel (torch.optim.AdamW(fused=True)): "auto" = when every parameter is
  /// a float32 CUDA tensor (one kernel per group instead of ~6 per parameter; the same formulas,
  /// last bits may differ), "on" = on any device (tests), "off" = never. The CPU keeps the
  /// written-out update under "auto", so CPU runs stay bit-exact.
  TORCH_ARG(std::string, fused) = "auto";
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

/// Settings shared by a group of parameters (a torch param group).
struct ParamGroupSpec {
  /// The group's lr is the scheduled lr times this (layer decay).
  double lr_scale = 1.0;
  /// Weight decay of the group (0: not decayed).
  double weight_decay = 0.0;
};

/// Parameters with their groups. Kept flat in the module's order (not regrouped) because that order
/// is the order of the global gradient norm's sum: regrouping would change its last bits.
struct ParamGroups {
  /// Parameters in the module's order.
  std::vector<NamedParam> params;
  /// group[i]: index into `specs` of params[i].
  std::vector<size_t> group;
  /// One per distinct (lr_scale, weight_decay), in order of first appearance.
  std::vector<ParamGroupSpec> specs;
  /// Names of the parameters of specs[g], in order (for logs and tests).
  std::vector<std::string> names(size_t g) const;
};

/// Scale of a parameter's lr, by name (e.g. layer decay).
using LrScaleFn = std::function<double(const std::string& name)>;
/// True when a parameter gets no weight decay.
using NoDecayFn = std::function<bool(const std::string& name, const torch::Tensor& p)>;

/// Groups `params` by (lr_scale(name), no_decay(name, p)) as EVA-X's param_groups_lrd does;
/// decayed groups get `weight_decay`, the others 0.
ParamGroups make_param_groups(std::vector<NamedParam> params, double weight_decay,
                              const LrScaleFn& lr_scale, const NoDecayFn& no_decay);

/// EVA-02 pretraining groups: lr scale 1, no decay where no_weight_decay() says so.
ParamGroups default_param_groups(std::vector<NamedParam> params, double weight_decay);

class AdamW {
 public:
  /// default_param_groups(params, o.weight_decay()).
  AdamW(std::vector<NamedParam> params, AdamWOptions o);
  /// The groups' lr_scale and weight_decay are used as given (o.weight_decay() is not).
  AdamW(ParamGroups groups, AdamWOptions o);
  /// Every group's lr = lr × its lr_scale.
  void set_lr(double lr);
  /// Weight decay of every group built with weight_decay > 0 = wd (a weight-decay schedule, as
  /// BEiT/EVA-02 apply it); the others stay at 0.
  void set_weight_decay(double wd);
  /// One step with the groups' current lr and weight decay.
  void step();
  /// set_lr(lr), set_weight_decay(wd), step().
  void step(double lr, double wd);
  void zero_grad();
  /// Global gradient 2-norm; scales gradients down to `max_norm` when above it (max_norm > 0).
  double clip_grad_norm(double max_norm);
  /// Optimizer state as named tensors (`exp_avg.<name>`, `exp_avg_sq.<name>`, `step`).
  TensorMap state() const;
  /// Restores state() output exactly (DataError when names or shapes differ).
  void load_state(const TensorMap& state);
  const std::vector<NamedParam>& params() const { return groups_.params; }
  /// Parameters and their groups as built.
  const ParamGroups& groups() const { return groups_; }
  /// Current lr of group g (set_lr × lr_scale).
  double group_lr(size_t g) const { return lr_[g]; }
  /// Current weight decay of group g.
  double group_weight_decay(size_t g) const { return wd_[g]; }
  const AdamWOptions& options() const { return opts_; }
  int64_t steps() const { return step_; }
  /// Whether step() runs ATen's fused kernel (see AdamWOptions::fused).
  bool fused() const { return fused_; }

 private:
  void fused_step();

  ParamGroups groups_;
  bool fused_ = false;            // fused_step() instead of the per-parameter update
  torch::Tensor fused_steps_;     // (params) float32 on the parameters' device: the step count
  std::vector<double> lr_, wd_;  // per group, current
  std::vector<torch::Tensor> exp_avg_, exp_avg_sq_;
  int64_t step_ = 0;
  AdamWOptions opts_;
};

/// EVA-02's per-step schedule: linear warmup from 0 to `base` over `warmup` steps (endpoints
/// included), then cosine from `base` to `final` over the remaining `total − warmup` steps.
double cosine_schedule(double base, double final, int64_t step, int64_t total, int64_t warmup);

}  // namespace evax
