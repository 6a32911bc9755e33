// Learning-rate schedules, evaluated per optimizer step from the data position alone (no state), so
// a resumed or rolled-back run gets the same values.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "evax/core/config.h"

namespace evax {

/// The shape of the lr schedule.
enum class ScheduleKind {
  /// EVA-02 pretraining (BEiT's cosine_scheduler): warmup over llround(warmup_epochs × steps per
  /// epoch) steps, linspace(0, lr) with its endpoint, then cosine per step down to min_lr.
  kEva02Cosine,
  /// EVA-X finetuning (lr_sched.adjust_learning_rate): at fractional epoch e = epoch + micro /
  /// micro-batches per epoch, lr·e/W during warmup, then cosine from lr to min_lr at e = epochs.
  kCosine,
  /// EVA-X --fixed_lr: the same warmup, then lr constant (min_lr unused).
  kFixed,
  /// mmseg PolyLR: (lr − min_lr)·(1 − progress/max)^power + min_lr over epochs (by_epoch) or steps,
  /// after mmcv's linear warmup over warmup steps: regular·(1 − (1 − it/W)(1 − warmup_ratio)).
  /// min_lr is taken before the group scale (mmcv keeps it absolute per group): equal to mmseg for
  /// min_lr = 0 (EVA-X segmentation) or lr_scale = 1.
  kPoly,
};

/// `schedule:` value of a kind ("eva02_cosine", "cosine", "fixed", "poly").
std::string schedule_kind_name(ScheduleKind k);

/// Lr schedule settings (`train:` keys; lr and min_lr are the optimizer's).
struct ScheduleOptions {
  /// Shape after warmup.
  TORCH_ARG(ScheduleKind, kind) = ScheduleKind::kEva02Cosine;
  /// Linear warmup length in epochs (fractional allowed).
  TORCH_ARG(double, warmup_epochs) = 0.0;
  /// poly: warmup length in optimizer steps (mmseg warmup_iters); -1: warmup_epochs × steps/epoch.
  TORCH_ARG(int64_t, warmup_steps) = -1;
  /// poly: warmup starts at this fraction of the regular lr (mmseg warmup_ratio).
  TORCH_ARG(double, warmup_ratio) = 0.0;
  /// poly: exponent.
  TORCH_ARG(double, power) = 1.0;
  /// poly: progress in whole epochs (mmseg by_epoch=True, lr changes at epoch starts), else steps.
  TORCH_ARG(bool, by_epoch) = false;
};

/// Reads the schedule keys of `train:` (schedule, warmup_epochs, warmup_steps, warmup_ratio, power,
/// by_epoch); `epochs` bounds warmup_epochs. The poly-only keys are refused for other schedules.
ScheduleOptions schedule_options_from_config(const ConfigView& v, int64_t epochs,
                                             ScheduleOptions defaults = {});

/// A schedule bound to a run's length.
class LrSchedule {
 public:
  /// `micro_per_epoch` micro-batches per epoch, `accum_steps` of them per optimizer step.
  LrSchedule(ScheduleOptions o, double lr, double min_lr, int64_t epochs, int64_t micro_per_epoch,
             int64_t accum_steps);
  /// The lr of the optimizer step numbered `step` (0-based, over the run) that starts at micro-batch
  /// `micro` of `epoch`.
  double at(int64_t step, int64_t epoch, int64_t micro) const;
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  int64_t total_steps() const { return epochs_ * steps_per_epoch_; }
  /// Warmup length in optimizer steps (eva02_cosine, poly).
  int64_t warmup_steps() const { return warmup_steps_; }

 private:
  ScheduleOptions o_;
  double lr_, min_lr_;
  int64_t epochs_, micro_per_epoch_, steps_per_epoch_, warmup_steps_;
};

}  // namespace evax
