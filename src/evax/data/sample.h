// What a dataset hands the loader (Sample) and what the loader hands training (Batch). Fields a
// task does not use stay undefined tensors; collate stacks a field only when every sample has it.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "evax/core/error.h"

namespace evax {

/// One training example. Images are float (C, H, W), already normalised.
struct Sample {
  torch::Tensor image;       ///< (C, H, W) float: the (student) view
  torch::Tensor image2;      ///< optional second view, e.g. the MIM teacher's (C, H2, W2)
  torch::Tensor mask;        ///< optional segmentation target, e.g. (1, H, W) uint8 class ids
  torch::Tensor patch_mask;  ///< optional MIM mask over the patch grid, (N,) bool, patch order
  torch::Tensor labels;      ///< optional (K,) float; missing labels are 0 here, see label_mask
  torch::Tensor label_mask;  ///< optional (K,) float: 1 where the label is known, 0 where missing
  int64_t index = -1;        ///< dataset index actually loaded (after bad-file replacement)
};

/// A collated batch: each defined Sample field stacked along a new first dimension.
struct Batch {
  torch::Tensor image;       ///< (B, C, H, W)
  torch::Tensor image2;      ///< (B, C, H2, W2) or undefined
  torch::Tensor mask;        ///< (B, ...) or undefined
  torch::Tensor patch_mask;  ///< (B, N) or undefined
  torch::Tensor labels;      ///< (B, K) or undefined
  torch::Tensor label_mask;  ///< (B, K) or undefined
  torch::Tensor indices;     ///< (B,) int64 dataset indices
  int64_t size() const { return indices.defined() ? indices.size(0) : 0; }
};

/// Sets `labels` and `label_mask` from manifest values (NaN = missing → label 0, mask 0; any other
/// value, -1 included, is kept with mask 1).
inline void sample_set_labels(Sample& s, const std::vector<float>& values) {
  const int64_t k = static_cast<int64_t>(values.size());
  s.labels = torch::zeros({k}, torch::kFloat32);
  s.label_mask = torch::zeros({k}, torch::kFloat32);
  auto l = s.labels.accessor<float, 1>();
  auto m = s.label_mask.accessor<float, 1>();
  for (int64_t i = 0; i < k; ++i) {
    const float v = values[static_cast<size_t>(i)];
    if (v == v) l[i] = v, m[i] = 1.0f;  // v != v only for NaN
  }
}

/// Stacks samples into a batch. Throws InternalError when a field is defined in some samples and
/// not in others, or when shapes differ (a dataset bug, not a data problem).
Batch collate(const std::vector<Sample>& samples);

}  // namespace evax
