// Synchronised batch normalisation (torch.nn.SyncBatchNorm) over an evax Comm, as mmseg's SyncBN
// and EVA-X's hard-coded nn.SyncBatchNorm in the simple feature pyramid use it.
//
// The module is a drop-in for torch::nn::BatchNorm2d: the same parameters and buffers (`weight`,
// `bias`, `running_mean`, `running_var`, `num_batches_tracked`), momentum 0.1, eps 1e-5. Without
// a communicator, with a world of one, or in eval mode it computes exactly what BatchNorm2d does.
// In training with a Comm of world size > 1, the batch statistics are those of the union of every
// rank's batch: each rank's (count, mean, M2) per channel are gathered and combined as torch's
// batch_norm_gather_stats_with_counts does (Chan's formula, so no sum-of-squares cancellation and
// ranks may have different batch sizes); the running variance gets the global unbiased variance.
// Backward all-reduces the two per-channel sums the input gradient needs (Σ dy and Σ dy·x̂·σ), as
// torch's SyncBatchNorm; the weight and bias gradients stay local, for the data-parallel reducer
// to average like any other parameter's.
//
// Every rank must run the same sequence of training forwards and backwards through its SyncBN
// modules (each one is a collective).
#pragma once

#include <torch/torch.h>

namespace evax {

class Comm;

/// Options of SyncBatchNorm2d (BatchNorm2d's defaults).
struct SyncBatchNormOptions {
  /* implicit */ SyncBatchNormOptions(int64_t num_features) : num_features_(num_features) {}
  /// Channels C of the (B, C, H, W) input.
  TORCH_ARG(int64_t, num_features);
  /// Added to the variance.
  TORCH_ARG(double, eps) = 1e-5;
  /// Running statistics: new = (1 − momentum) · old + momentum · batch.
  TORCH_ARG(double, momentum) = 0.1;
};

class SyncBatchNorm2dImpl : public torch::nn::Module {
 public:
  explicit SyncBatchNorm2dImpl(SyncBatchNormOptions o);

  /// (B, C, H, W) → normalised, same shape and dtype.
  torch::Tensor forward(const torch::Tensor& x);
  /// Statistics over every rank of `comm` in training (nullptr: local statistics, as BatchNorm2d).
  /// The Comm must outlive the module's use.
  void set_comm(Comm* comm) { comm_ = comm; }
  Comm* comm() const { return comm_; }
  /// weight 1, bias 0, running mean 0, running var 1, num_batches_tracked 0.
  void reset_parameters();

  const SyncBatchNormOptions& options() const { return options_; }

  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  SyncBatchNormOptions options_;
  Comm* comm_ = nullptr;
};
TORCH_MODULE(SyncBatchNorm2d);

}  // namespace evax
