// The training commands (pretrain, teacher, finetune) as reusable steps: each decodes its task's
// options plus the shared training settings (a plan), then builds its task and runs the trainer.
// `evax demo` chains them.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "commands.h"
#include "evax/classify/task.h"
#include "evax/core/config.h"
#include "evax/distributed/comm.h"
#include "evax/distributed/env.h"
#include "evax/pretrain/dense_teacher.h"
#include "evax/pretrain/task.h"
#include "evax/segment/task.h"
#include "evax/train/runtime.h"
#include "evax/train/trainer.h"

namespace evax::app {

/// A training command's decoded config: its task's options and the shared training settings.
template <class TaskOptions>
struct TrainPlan {
  TaskOptions task;
  TrainRunOptions run;
};

using PretrainPlan = TrainPlan<PretrainOptions>;
using TeacherPlan = TrainPlan<DenseTeacherOptions>;
using FinetunePlan = TrainPlan<ClassifyOptions>;
using SegmentPlan = TrainPlan<SegmentOptions>;

/// Decodes a pretraining config: model, target, data, masking and the shared settings (no I/O).
PretrainPlan pretrain_plan(Config& cfg);
/// Decodes a dense teacher config (no I/O).
TeacherPlan teacher_plan(Config& cfg);
/// Decodes a finetuning config: model, finetune, data, loss, eval, ema and the shared settings.
FinetunePlan finetune_plan(Config& cfg);

/// Decodes a segmentation config: model, segment, data, loss, eval, ema and the shared settings.
SegmentPlan segment_plan(Config& cfg);

/// Builds the task and runs the trainer in `dir` (rank 0 writes).
FitResult pretrain_execute(const PretrainPlan& p, const std::string& dir, const DistEnv& env,
                           Comm* comm, const std::string& config_yaml);
FitResult teacher_execute(const TeacherPlan& p, const std::string& dir, const DistEnv& env,
                          Comm* comm, const std::string& config_yaml);

/// What a finetuning run reached.
struct FinetuneResult {
  FitResult fit;
  std::string weights;                  ///< best/ when kept, else the last checkpoint
  nlohmann::ordered_json test_metrics;  ///< metrics.json of the test split (rank 0)
};
/// Builds the task, trains in `dir`, then scores the test split with the selected weights into
/// `<dir>/eval/<test_split>/`.
FinetuneResult finetune_execute(const FinetunePlan& p, const std::string& dir, const DistEnv& env,
                                Comm* comm, const std::string& config_yaml);

/// What a segmentation run reached.
struct SegmentResult {
  FitResult fit;
  std::string weights;                  ///< best/ when kept, else the last checkpoint
  nlohmann::ordered_json test_metrics;  ///< metrics.json of the test split (rank 0)
};
/// Builds the task, trains in `dir`, then scores the test split with the selected weights into
/// `<dir>/eval/<test_split>/`.
SegmentResult segment_execute(const SegmentPlan& p, const std::string& dir, const DistEnv& env,
                              Comm* comm, const std::string& config_yaml);

/// The command line every training command shares: --config (required), --set, --run-dir,
/// --log-level, --max-steps and --resume; then decode_all(plan) before any work, the distributed
/// start-up, and `execute(plan, dir, env, comm, config_yaml)`.
template <class Plan, class Execute>
int run_train_command(const Args& args, const std::string& name, const std::string& summary,
                      Plan (*plan)(Config&), Execute execute) {
  RunArgs ra;
  int64_t max_steps = -1;
  std::string resume;
  ArgParser p(name, summary);
  add_run_args(p, ra);
  p.required("--config");  // no silent default: a training run names its recipe
  p.option("--max-steps", &max_steps, "N", "stop after N optimizer steps (checkpointing there)");
  p.option("--resume", &resume, "auto|DIR", "continue from the newest valid checkpoint or DIR");
  if (!p.parse(args)) return 0;
  Config cfg = load_run_config(ra, "");
  // Before any work, and unknown keys before bad values: a typo never runs with defaults.
  Plan pl = cfg.decode_all(plan);
  pl.run.trainer.max_steps(max_steps).resume(resume);
  DistRun run = start_distributed_run(ra, cfg, pl.run.comm, name);
  execute(pl, run.dir, run.env, run.comm.get(), cfg.dump());
  return 0;
}

}  // namespace evax::app
