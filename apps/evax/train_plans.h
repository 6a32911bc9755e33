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
#include "evax/core/log.h"
#include "evax/io/safetensors.h"
#include "evax/pretrain/dense_teacher.h"
#include "evax/report/run_dir.h"
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

/// What `evax demo` reads on top of synth and pretraining: its stages' config files.
void demo_stage_keys(Config& cfg);

/// Builds the task and runs the trainer in `dir` (rank 0 writes).
FitResult pretrain_execute(const PretrainPlan& p, const std::string& dir, const DistEnv& env,
                           Comm* comm, const std::string& config_yaml);
FitResult teacher_execute(const TeacherPlan& p, const std::string& dir, const DistEnv& env,
                          Comm* comm, const std::string& config_yaml);

/// What a training run that ends by scoring its test split reached (finetune, segment).
struct TestedRunResult {
  FitResult fit;
  std::string weights;                  ///< best/ when kept, else the last checkpoint
  nlohmann::ordered_json test_metrics;  ///< metrics.json of the test split (rank 0)
};
using FinetuneResult = TestedRunResult;
using SegmentResult = TestedRunResult;

/// Builds the task, trains in `dir`, then scores the test split with the selected weights into
/// `<dir>/eval/<test_split>/`.
FinetuneResult finetune_execute(const FinetunePlan& p, const std::string& dir, const DistEnv& env,
                                Comm* comm, const std::string& config_yaml);
SegmentResult segment_execute(const SegmentPlan& p, const std::string& dir, const DistEnv& env,
                              Comm* comm, const std::string& config_yaml);

/// The shared shape of finetune_execute / segment_execute: the trainer on `task`, a summary line
/// naming `what`, the selected weights loaded back, then `score(task, split, out_dir, write)` on
/// the plan's test split (skipped with a warning when it has no rows).
template <class TaskT, class Plan, class Score>
TestedRunResult train_then_test(TaskT& task, const Plan& p, const std::string& what,
                                const std::string& dir, const DistEnv& env, Comm* comm,
                                const std::string& config_yaml, Score score) {
  TestedRunResult r;
  r.fit = trainer_fit(task, p.run.optimizer, p.run.trainer, RunContext{dir, config_yaml, comm});
  log_info(what, " done: ", r.fit.steps, " steps, loss ", r.fit.first_loss, " → ",
           r.fit.last_loss, r.fit.stopped_early ? " (stopped early)" : "",
           r.fit.best_step >= 0 ? "; best " + p.run.trainer.eval().metric() + " " +
                                      std::to_string(r.fit.best_value) + " at step " +
                                      std::to_string(r.fit.best_step)
                                : "");
  r.weights = r.fit.best_checkpoint.empty() ? r.fit.last_checkpoint : r.fit.best_checkpoint;
  task.load_model_state(safetensors_load(r.weights + "/model.safetensors"));
  const std::string split = p.task.test_split;
  if (task.rows_in(split) == 0) {
    log_warn("no ", split, " rows: skipping the test evaluation");
    return r;
  }
  log_info("scoring the ", split, " split with ", r.weights);
  r.test_metrics = score(task, split, dir + "/eval/" + split, env.rank == 0);
  return r;
}

/// The command line every training command shares: --config (required), --set, --run-dir,
/// --log-level, --max-steps and --resume; then decode_all(plan) before any work, the distributed
/// start-up, and `execute(plan, dir, env, comm, config_yaml)`; rank 0 records the run's state in
/// status.json and writes report.html at the end (also when it stops on an error).
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
  DistRun run =
      start_distributed_run(ra, cfg, pl.run.comm, name, [plan](Config& c) { plan(c); });
  const bool main_rank = run.env.rank == 0;
  if (main_rank) run_status_write(run.dir, "running");
  try {
    execute(pl, run.dir, run.env, run.comm.get(), cfg.dump());
  } catch (const std::exception& e) {
    // The report of a stopped run still shows how far it got; the error goes on to main().
    if (main_rank) finish_run(run.dir, "stopped", e.what());
    throw;
  }
  // After the test scoring: report.html covers the finished run.
  if (main_rank) finish_run(run.dir, "finished");
  return 0;
}

}  // namespace evax::app
