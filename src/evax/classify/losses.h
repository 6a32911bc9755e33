// Classification losses as EVA-X finetuning uses them (evax_finetune.md §2.6): BCE-with-logits for
// the multi-label sets (CXR14, CheXpert) and cross-entropy for the multi-class ones (COVIDx), plus
// the timm variants train.py can switch on (label smoothing, mixup soft targets).
//
// Example:
//   auto loss = multilabel_bce_loss(logits, batch.labels, batch.label_mask);
//   auto ce = cross_entropy_loss(logits, one_hot_to_index(batch.labels, batch.label_mask),
//                                CrossEntropyLossOptions().smoothing(0.1));
#pragma once

#include <torch/torch.h>

namespace evax {

/// Options of multilabel_bce_loss.
struct BceLossOptions {
  /// timm BinaryCrossEntropy(smoothing, smooth_dense=True): each known target y becomes
  /// y·(1 − smoothing) + smoothing/2 (towards 0.5). EVA-X runs use 0. In [0, 1).
  TORCH_ARG(double, smoothing) = 0.0;
};

/// Multi-label BCE-with-logits, mean over the known labels:
///   sum(mask · bce(logits, smooth(targets))) / sum(mask).
/// `logits`, `targets` and `label_mask` are (B, K); an undefined `label_mask` means all known,
/// which is exactly torch's BCEWithLogitsLoss(reduction='mean') — EVA-X's loss (its label
/// policies fill every label, so it never masks). Masked entries get zero gradient whatever their
/// target holds; a batch with no known label gives 0 (with zero gradient), not NaN. Targets must be
/// in [0, 1]: resolve uncertain (-1) labels with a label policy first.
torch::Tensor multilabel_bce_loss(const torch::Tensor& logits, const torch::Tensor& targets,
                                  const torch::Tensor& label_mask = {},
                                  const BceLossOptions& options = {});

/// Options of cross_entropy_loss.
struct CrossEntropyLossOptions {
  /// timm LabelSmoothingCrossEntropy (= torch cross_entropy(label_smoothing)):
  /// (1 − s)·nll + s·mean_k(−log p_k). EVA-X COVIDx runs use 0. In [0, 1).
  TORCH_ARG(double, smoothing) = 0.0;
};

/// Multi-class cross-entropy of (B, K) logits against (B,) int64 class indices, mean over the batch.
torch::Tensor cross_entropy_loss(const torch::Tensor& logits, const torch::Tensor& target,
                                 const CrossEntropyLossOptions& options = {});

/// timm SoftTargetCrossEntropy: mean_b sum_k(−t_bk · log_softmax(x)_bk) for (B, K) soft targets
/// (e.g. mixup/cutmix; EVA-X's recipes set mixup = cutmix = 0, so they never use it).
torch::Tensor soft_target_cross_entropy(const torch::Tensor& logits, const torch::Tensor& target);

/// Class indices (B,) int64 from one-hot manifest labels (B, K) (the multi-class manifests,
/// e.g. COVIDx and image folders). DataError when a row is not exactly one 1 and K−1 zeros, all
/// known (`label_mask` may be undefined = all known).
torch::Tensor one_hot_to_index(const torch::Tensor& labels, const torch::Tensor& label_mask = {});

}  // namespace evax
