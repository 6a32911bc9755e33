#include "evax/train/schedule.h"

#include <cmath>

#include "evax/core/error.h"
#include "evax/train/optim.h"

namespace evax {

std::string schedule_kind_name(ScheduleKind k) {
  switch (k) {
    case ScheduleKind::kEva02Cosine: return "eva02_cosine";
    case ScheduleKind::kCosine: return "cosine";
    case ScheduleKind::kFixed: return "fixed";
    case ScheduleKind::kPoly: return "poly";
  }
  return "?";
}

ScheduleOptions schedule_options_from_config(const ConfigView& v, int64_t epochs, ScheduleOptions o) {
  const std::string name =
      v.get<std::string>("schedule", schedule_kind_name(o.kind()),
                         "shape of the lr after warmup: eva02_cosine (EVA-02), cosine (EVA-X), "
                         "fixed (EVA-X's --fixed_lr) or poly (mmseg)");
  bool known = false;
  for (auto k : {ScheduleKind::kEva02Cosine, ScheduleKind::kCosine, ScheduleKind::kFixed,
                 ScheduleKind::kPoly})
    if (name == schedule_kind_name(k)) o.kind(k), known = true;
  v.check("schedule", known, "must be one of eva02_cosine, cosine, fixed, poly");
  o.warmup_epochs(
      v.get<double>("warmup_epochs", o.warmup_epochs(),
                    "epochs of linear lr warmup, fractional allowed (EVA-X's --warmup_epochs)"));
  v.check("warmup_epochs", o.warmup_epochs() >= 0 && o.warmup_epochs() <= epochs,
          "must be in [0, epochs]");
  const bool poly = o.kind() == ScheduleKind::kPoly;
  for (const char* key : {"warmup_steps", "warmup_ratio", "power", "by_epoch"})
    v.check(key, poly || !v.has(key), "is only used by schedule: poly");
  o.warmup_steps(v.get<int64_t>("warmup_steps", o.warmup_steps(),
                                "warmup length in optimizer steps (mmseg's warmup_iters)"));
  v.check("warmup_steps", o.warmup_steps() >= -1, "must be >= 0 (-1: from warmup_epochs)");
  v.check("warmup_steps", o.warmup_steps() < 0 || !v.has("warmup_epochs"),
          "set warmup_steps or warmup_epochs, not both");
  o.warmup_ratio(
      v.get<double>("warmup_ratio", o.warmup_ratio(),
                    "fraction of the regular lr the warmup starts from (mmseg's warmup_ratio)"));
  v.check("warmup_ratio", o.warmup_ratio() >= 0 && o.warmup_ratio() <= 1, "must be in [0, 1]");
  o.power(v.get<double>("power", o.power(), "exponent of the polynomial decay (mmseg PolyLR)"));
  v.check("power", o.power() > 0, "must be > 0");
  o.by_epoch(v.get<bool>(
      "by_epoch", o.by_epoch(),
      "decay per epoch, changing the lr at epoch starts (mmseg by_epoch); false: per step"));
  return o;
}

LrSchedule::LrSchedule(ScheduleOptions o, double lr, double min_lr, int64_t epochs,
                       int64_t micro_per_epoch, int64_t accum_steps)
    : o_(o), lr_(lr), min_lr_(min_lr), epochs_(epochs), micro_per_epoch_(micro_per_epoch),
      steps_per_epoch_(micro_per_epoch / accum_steps) {
  EVAX_ASSERT(epochs >= 1 && accum_steps >= 1 && steps_per_epoch_ >= 1, "LrSchedule: epochs ",
              epochs, ", micro-batches per epoch ", micro_per_epoch, ", accum_steps ", accum_steps);
  warmup_steps_ = o.warmup_steps() >= 0
                      ? o.warmup_steps()
                      : static_cast<int64_t>(std::llround(o.warmup_epochs() * steps_per_epoch_));
}

double LrSchedule::at(int64_t step, int64_t epoch, int64_t micro) const {
  switch (o_.kind()) {
    case ScheduleKind::kEva02Cosine:
      return cosine_schedule(lr_, min_lr_, step, total_steps(), warmup_steps_);
    case ScheduleKind::kCosine:
    case ScheduleKind::kFixed: {
      // Operations in lr_sched.py's order, so values match it to the last bit.
      const double e = static_cast<double>(micro) / static_cast<double>(micro_per_epoch_) +
                       static_cast<double>(epoch);
      const double w = o_.warmup_epochs(), n = static_cast<double>(epochs_);
      if (e < w) return lr_ * e / w;
      if (o_.kind() == ScheduleKind::kFixed || n <= w) return lr_;
      return min_lr_ + (lr_ - min_lr_) * 0.5 * (1.0 + std::cos(M_PI * (e - w) / (n - w)));
    }
    case ScheduleKind::kPoly: {
      // mmcv PolyLrUpdaterHook.get_regular_lr, then LrUpdaterHook's linear warmup.
      const double progress = static_cast<double>(o_.by_epoch() ? epoch : step);
      const double max_progress = static_cast<double>(o_.by_epoch() ? epochs_ : total_steps());
      const double coeff = std::pow(1.0 - progress / max_progress, o_.power());
      const double regular = (lr_ - min_lr_) * coeff + min_lr_;
      if (step >= warmup_steps_) return regular;
      const double k = (1.0 - static_cast<double>(step) / static_cast<double>(warmup_steps_)) *
                       (1.0 - o_.warmup_ratio());
      return regular * (1.0 - k);
    }
  }
  return lr_;
}

}  // namespace evax
