// The training loop shared by pretraining, finetuning and segmentation. It owns the optimizer,
// schedules, gradient reduction across ranks, clipping, checkpoints, NaN rollback and logging; it
// never branches on what the task is.
#pragma once

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "evax/core/config.h"
#include "evax/train/ema.h"
#include "evax/train/optim.h"
#include "evax/train/schedule.h"

namespace evax {

class Comm;

/// One forward pass on one micro-batch.
struct MicroStep {
  torch::Tensor loss;                   ///< scalar, fp32
  /// Extra scalars (e.g. mask_ratio): averaged over the step's micro-batches, then over ranks (a
  /// plain mean: every rank has the same batch). Every rank must return the same keys.
  std::map<std::string, double> logs;
  int64_t samples = 0;                  ///< images in the micro-batch
};

/// What the trainer trains. Implemented by the pretrain / classify / segment pipelines.
class Task {
 public:
  virtual ~Task() = default;
  /// Parameters the optimizer updates (frozen teachers excluded), with timm-style names.
  virtual std::vector<NamedParam> trainable() = 0;
  /// trainable() in optimizer groups (lr scale, weight decay); `weight_decay` is the optimizer's.
  /// Default: EVA-02 pretraining groups (default_param_groups). Finetuning adds layer decay.
  virtual ParamGroups param_groups(double weight_decay) {
    return default_param_groups(trainable(), weight_decay);
  }
  /// Buffers (e.g. BatchNorm running statistics) that every rank must start with: broadcast from
  /// rank 0 at the start, like trainable(). Default: none.
  virtual std::vector<torch::Tensor> buffers() { return {}; }
  /// Micro-batches this rank sees per epoch (equal on all ranks).
  virtual int64_t micro_batches_per_epoch() = 0;
  /// Positions the data stream at `skip` micro-batches into `epoch` (exact resume).
  virtual void start_epoch(int64_t epoch, int64_t skip) = 0;
  /// Forward on the next micro-batch (train mode). The trainer calls backward.
  virtual MicroStep forward_micro() = 0;
  /// Weights for model.safetensors, in the naming the task publishes.
  virtual TensorMap model_state() = 0;
  /// Restores model_state() output exactly.
  virtual void load_model_state(const TensorMap& state) = 0;
  /// What, besides the trainer's own settings, makes a resumed run the same run: a flat JSON
  /// object of the settings a checkpoint is only valid for (model, per-rank batch size, data
  /// seed …). Stored in every checkpoint's meta.json under "run" next to the trainer's fields
  /// (world_size, accum_steps, total_steps, micro_batches_per_epoch, which the task must not
  /// reuse) and compared field by field on resume.
  virtual nlohmann::json run_identity() { return nlohmann::json::object(); }
  /// What a reader of the checkpoint needs to use the weights without the config (e.g. class
  /// names, input size and normalisation): a JSON object stored under "task" in every
  /// checkpoint's meta.json, best/ included. Default: empty.
  virtual nlohmann::json checkpoint_meta() { return nlohmann::json::object(); }
  /// True when the task implements evaluate().
  virtual bool has_evaluation() { return false; }
  /// Evaluates the current weights on the task's evaluation split (eval mode, no gradient; the
  /// task restores train mode itself in forward_micro). Every rank calls it at the same time and
  /// must return the same metrics (gather predictions across ranks); an undefined metric is NaN.
  /// The trainer restores the torch CPU generator afterwards, so evaluating never changes training.
  virtual std::map<std::string, double> evaluate(int64_t epoch) {
    (void)epoch;
    return {};
  }
};

/// The evaluation hook (`eval:` in configs): when to evaluate and what to keep.
struct EvalHookOptions {
  /// Evaluate every N epochs and at the end of the schedule (0: only at the end).
  TORCH_ARG(int64_t, every) = 1;
  /// Metric that selects `checkpoints/best/` ("" = keep no best): a key of Task::evaluate(), or
  /// "ema/<key>" to select on the EMA weights (best/ then holds the EMA weights).
  TORCH_ARG(std::string, metric) = "";
  /// "max" (AUC, accuracy) or "min" (loss).
  TORCH_ARG(std::string, mode) = "max";
  /// Early stopping: stop after this many evaluations without improvement (0: never stop early).
  TORCH_ARG(int64_t, patience) = 0;
  /// An evaluation improves on the best only by more than this (best/ and early stopping).
  TORCH_ARG(double, min_delta) = 0.0;
};

/// Reads the trainer's keys of `eval:` (every, metric, mode, patience, min_delta); the task reads
/// its own keys of the same section (e.g. the split).
EvalHookOptions eval_hook_options_from_config(const ConfigView& v, EvalHookOptions defaults = {});

/// Loop settings (`train:` in configs).
struct TrainerOptions {
  /// Epochs of the schedule.
  TORCH_ARG(int64_t, epochs) = 1;
  /// Lr schedule (warmup, shape) between the optimizer's lr and min_lr.
  TORCH_ARG(ScheduleOptions, schedule);
  /// Stop after this many optimizer steps (checkpointing there); -1: run all epochs.
  TORCH_ARG(int64_t, max_steps) = -1;
  /// Micro-batches per optimizer step (gradient accumulation).
  TORCH_ARG(int64_t, accum_steps) = 1;
  /// Console/CSV/TensorBoard logging interval in optimizer steps.
  TORCH_ARG(int64_t, log_every) = 10;
  /// Checkpoint every N optimizer steps (0: only at epoch ends and at the end).
  TORCH_ARG(int64_t, checkpoint_every) = 0;
  /// Checkpoints kept on disk.
  TORCH_ARG(int, keep_last) = 3;
  /// NaN/Inf losses tolerated (each rolls back to the last checkpoint and skips the batch).
  TORCH_ARG(int, max_nan_rollbacks) = 3;
  /// Resume: "" (fresh run; refuses a run directory that already has checkpoints), "auto" (newest
  /// valid checkpoint of the run directory, else fresh), or a checkpoint directory. A checkpoint
  /// of a different run (its meta.json "run" fields: world size, accumulation, schedule length,
  /// micro-batches per epoch and the task's run_identity(), e.g. model and per-rank batch) is
  /// refused with a ConfigError naming every differing field: continuing it would not be the
  /// same run, so none of them may change (start a new run directory instead).
  TORCH_ARG(std::string, resume) = "";
  /// Evaluation, best checkpoint and early stopping (used when the task has_evaluation()).
  TORCH_ARG(EvalHookOptions, eval);
  /// Model EMA (decay 0: none).
  TORCH_ARG(EmaOptions, ema);
  /// Testing hook: replace the loss of this optimizer step (0-based) by NaN, once.
  TORCH_ARG(int64_t, inject_nan_step) = -1;
};

/// Reads `train:` (epochs, accum_steps, log_every, checkpoint_every, keep_last, max_nan_rollbacks,
/// inject_nan_step, and the schedule keys of schedule_options_from_config).
TrainerOptions trainer_options_from_config(const ConfigView& v, TrainerOptions defaults = {});

/// Where a run writes (rank 0 only) and what it records.
struct RunContext {
  std::string run_dir;
  std::string config_yaml;  ///< resolved config, stored in every checkpoint
  Comm* comm = nullptr;     ///< null: single process
};

/// Summary of a fit() call.
struct FitResult {
  int64_t steps = 0;            ///< optimizer steps done in total (incl. before a resume)
  double first_loss = 0;        ///< mean loss of the first logged window of this call
  double last_loss = 0;         ///< mean loss of the last logged window
  int nan_rollbacks = 0;
  std::string last_checkpoint;  ///< directory
  /// Metrics of the last evaluation of this call ("ema/" keys for the EMA weights); empty if none.
  std::map<std::string, double> last_eval;
  double best_value = std::nan("");  ///< best value of eval.metric so far (NaN: none)
  int64_t best_step = -1;            ///< step of best_value
  std::string best_checkpoint;       ///< `<run_dir>/checkpoints/best` once written, else ""
  bool stopped_early = false;        ///< early stopping ended the run
};

/// Runs the loop to the end of the schedule (or max_steps, or early stopping). With an evaluating
/// task: at the end of every eval.every-th epoch and of the schedule it evaluates (raw weights, and
/// the EMA's when kept), logs "eval/<key>" (console, metrics.csv, TensorBoard), writes
/// checkpoints/best/ when eval.metric improves, then checkpoints; the best value, its step and the
/// evaluations since it are in every checkpoint, so a resumed run decides exactly as an
/// uninterrupted one. Checkpoints hold the model, the
/// optimizer, the torch CPU generator and (when CUDA is available) every CUDA device's default
/// generator; with several ranks, rank 0 writes them, every rank reads them (the run directory
/// must be shared), and a non-finite loss on any rank rolls every rank back to the same one.
FitResult trainer_fit(Task& task, const AdamWOptions& opt, const TrainerOptions& o,
                      const RunContext& ctx);

}  // namespace evax
