// Data-parallel gradient averaging: after backward(), every rank calls GradReducer::reduce() and
// ends with the same gradients, the mean over ranks. Synchronous and deterministic.
#pragma once

#include <vector>

#include <ATen/ATen.h>

#include "evax/distributed/comm.h"

namespace evax {

/// Gradient bucketing.
struct GradReducerOptions {
  /// Target bucket size in MB; a larger parameter gets a bucket of its own.
  double bucket_mb = 25;
};

/// Averages the gradients of a fixed parameter list across ranks.
///
/// Parameters that require grad are packed, in reverse order (the order backward produces them),
/// into buckets of one dtype and device. Each bucket is flattened, summed with one all-reduce and
/// divided by the world size. A parameter without a gradient on some rank contributes zeros
/// there, so every rank sends the same layout; it ends with the mean gradient on every rank,
/// unless no rank had one, in which case it stays without a gradient everywhere (as it would in
/// a single process, so optimizers skip it). Every rank must build its reducer from the same
/// model (same parameter shapes, order and requires_grad flags).
class GradReducer {
 public:
  GradReducer(Comm& comm, std::vector<at::Tensor> params, GradReducerOptions opts = {});

  /// Averages the gradients across ranks; call on every rank after backward().
  void reduce();
  /// Number of buckets (one all-reduce each).
  size_t num_buckets() const { return buckets_.size(); }
  /// Parameters covered (those that require grad).
  size_t num_params() const { return params_.size(); }

 private:
  struct Bucket {
    std::vector<size_t> members;  ///< indices into params_
    std::vector<int64_t> offsets;  ///< element offset of each member in `flat`
    at::Tensor flat;              ///< reused between steps
  };
  Comm& comm_;
  std::vector<at::Tensor> params_;
  std::vector<Bucket> buckets_;
  at::Tensor has_grad_;  ///< per parameter, number of ranks that had a gradient
};

/// Copies rank 0's parameters and buffers to every rank (call once before training, after any
/// checkpoint load on rank 0), so that all ranks start from identical weights.
void broadcast_parameters(Comm& comm, const std::vector<at::Tensor>& params,
                          const std::vector<at::Tensor>& buffers);

}  // namespace evax
