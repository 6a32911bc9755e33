// Exponential moving average of a model's weights (timm ModelEmaV3 semantics), kept beside the raw
// weights by the trainer: updated after every optimizer step, evaluated and checkpointed too.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "evax/core/config.h"
#include "evax/io/tensor_map.h"
#include "evax/train/optim.h"

namespace evax {

/// Model EMA settings (`ema:` in configs).
struct EmaOptions {
  /// Decay per optimizer step; 0 disables the EMA. In [0, 1).
  TORCH_ARG(double, decay) = 0.0;
  /// timm ModelEmaV3 warmup: the decay at step t (1-based) is min(decay, 1 − (1 + t)^−0.75), so
  /// early averages are not dominated by the random initialisation.
  TORCH_ARG(bool, warmup) = false;
  /// Evaluate the EMA weights as well at every evaluation (metrics prefixed "ema/").
  TORCH_ARG(bool, evaluate) = true;
};

/// Reads `ema:` (decay, warmup, evaluate).
EmaOptions ema_options_from_config(const ConfigView& v, EmaOptions defaults = {});

/// Averages of a model's parameters and floating-point buffers.
class ModelEma {
 public:
  /// Starts from the current values of `params` and `buffers` (copied).
  ModelEma(const std::vector<NamedParam>& params, const std::vector<torch::Tensor>& buffers,
           EmaOptions o);
  /// The decay used for optimizer step `step` (1-based: the first update is step 1).
  double decay_at(int64_t step) const;
  /// ema = decay·ema + (1 − decay)·live for every tensor (timm's lerp); integer buffers are copied.
  void update(int64_t step);
  /// Exchanges the live tensors' values with the averages (call twice to undo).
  void swap();
  /// The averages as named tensors ("ema.param.<name>", "ema.buffer.<i>"), for checkpoints.
  TensorMap state() const;
  /// Restores state() output exactly (DataError naming `origin` when tensors are missing or differ).
  void load_state(const TensorMap& state, const std::string& origin);

 private:
  EmaOptions o_;
  std::vector<std::string> names_;
  std::vector<torch::Tensor> live_, avg_;
};

}  // namespace evax
