// evax segment: UperNet segmentation on an EVA-X backbone (EVA-X §3) on one process or under
// `evax launch` / torchrun / SLURM; selects on a split by mDice, then scores the test split.
#include "evax/core/log.h"
#include "evax/io/safetensors.h"
#include "evax/segment/evaluation.h"
#include "train_plans.h"

namespace evax::app {

SegmentPlan segment_plan(Config& cfg) {
  SegmentOptions task = segment_options_from_config(cfg);
  TrainRunOptions run = train_run_options_from_config(cfg, segment_optimizer_defaults(),
                                                      segment_eval_defaults());
  return {task, run};
}

SegmentResult segment_execute(const SegmentPlan& p, const std::string& dir, const DistEnv& env,
                              Comm* comm, const std::string& config_yaml) {
  apply_thread_policy(p.run.threads, env.local_world_size);
  SegmentTask task(p.task, env.rank, env.world_size, comm, env.local_rank);
  SegmentResult r;
  r.fit = trainer_fit(task, p.run.optimizer, p.run.trainer, RunContext{dir, config_yaml, comm});
  log_info("segmentation done: ", r.fit.steps, " steps, loss ", r.fit.first_loss, " → ",
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
  r.test_metrics = segment_evaluate_split(task, split, dir + "/eval/" + split, env.rank == 0);
  return r;
}

int cmd_segment(const Args& args) {
  return run_train_command(
      args, "segment",
      "UperNet segmentation on an EVA-X backbone (mmseg's EVA-X recipe: layer-decayed AdamW,\n"
      "poly schedule by epoch, BCE on one sigmoid channel or CE): evaluation on eval.split with\n"
      "checkpoints/best/ by eval.metric (mDice), then the test split scored into\n"
      "<run-dir>/eval/<split>/. Run under `evax launch --nproc N --`, torchrun --no-python or\n"
      "srun for data parallelism (model.norm: syncbn synchronises BatchNorm across ranks).",
      segment_plan, segment_execute);
}

}  // namespace evax::app
