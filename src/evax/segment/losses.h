// Segmentation losses as mmseg 0.29 computes them for EVA-X's UperNet (evax_finetune.md §3.1):
// the decode head's logits are resized to the label (bilinear, align_corners false), then
// BCE-with-logits on one sigmoid channel (binary tasks) or cross-entropy over several channels,
// averaged over every pixel, with an optional soft Dice term and an auxiliary head's loss.
#pragma once

#include <torch/torch.h>

#include "evax/eval/seg_metrics.h"

namespace evax {

/// Options of segmentation_loss.
struct SegLossOptions {
  /// Weight of mmseg's DiceLoss (smooth 1, exponent 2, per image, then the mean) added to the
  /// pixel loss (0: none; EVA-X uses none).
  TORCH_ARG(double, dice_weight) = 0.0;
};

/// Pixel loss of `logits` (B, C, h, w) against `labels` (B, H, W) uint8/int64 class ids: the logits
/// are resized to H×W first. C = 1: mmseg CrossEntropyLoss(use_sigmoid=True): BCE-with-logits of
/// the squeezed channel against label ∈ {0, 1}, ignored pixels weighted 0, mean over all pixels.
/// C > 1: cross-entropy with ignore_index 255, mean over the non-ignored pixels. Labels must hold
/// 0/1/255 (C = 1) or ids < C / 255: the task validates masks when it loads them (no device sync
/// here).
torch::Tensor segmentation_loss(const torch::Tensor& logits, const torch::Tensor& labels,
                                const SegLossOptions& options = {});

/// mmseg 0.29 DiceLoss(use_sigmoid for C = 1, smooth 1, exponent 2): per image and class
/// 1 − (2·Σ p·y + 1) / (Σ p² + Σ y² + 1) over the non-ignored pixels, mean over images and classes
/// (C = 1: the foreground channel only). `logits` already at the labels' size.
torch::Tensor soft_dice_loss(const torch::Tensor& logits, const torch::Tensor& labels);

}  // namespace evax
