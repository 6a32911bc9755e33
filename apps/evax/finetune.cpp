// evax finetune: EVA-X classification finetuning (or linear probing) on one process or under
// `evax launch` / torchrun / SLURM; selects on a split, then scores the test split.
#include "evax/classify/evaluation.h"
#include "evax/core/log.h"
#include "evax/io/safetensors.h"
#include "train_plans.h"

namespace evax::app {

FinetunePlan finetune_plan(Config& cfg) {
  return {classify_options_from_config(cfg),
          train_run_options_from_config(cfg, classify_optimizer_defaults(),
                                        classify_eval_defaults())};
}

FinetuneResult finetune_execute(const FinetunePlan& p, const std::string& dir, const DistEnv& env,
                                Comm* comm, const std::string& config_yaml) {
  apply_thread_policy(p.run.threads, env.local_world_size);
  ClassifyTask task(p.task, env.rank, env.world_size, comm, env.local_rank);
  FinetuneResult r;
  r.fit = trainer_fit(task, p.run.optimizer, p.run.trainer, RunContext{dir, config_yaml, comm});
  log_info("finetuning done: ", r.fit.steps, " steps, loss ", r.fit.first_loss, " → ",
           r.fit.last_loss, r.fit.stopped_early ? " (stopped early)" : "",
           r.fit.best_step >= 0 ? "; best " + p.run.trainer.eval().metric() + " " +
                                      std::to_string(r.fit.best_value) + " at step " +
                                      std::to_string(r.fit.best_step)
                                : "");
  // Score the test split with the selected weights (best/, else the last).
  r.weights = r.fit.best_checkpoint.empty() ? r.fit.last_checkpoint : r.fit.best_checkpoint;
  task.load_model_state(safetensors_load(r.weights + "/model.safetensors"));
  const std::string split = p.task.test_split;
  if (task.rows_in(split) == 0) {
    log_warn("no ", split, " rows: skipping the test evaluation");
    return r;
  }
  log_info("scoring the ", split, " split with ", r.weights);
  r.test_metrics = classify_evaluate_split(task, split, dir + "/eval/" + split, env.rank == 0);
  return r;
}

int cmd_finetune(const Args& args) {
  return run_train_command(
      args, "finetune",
      "EVA-X classification finetuning (finetune.mode: full) or linear probing (linear):\n"
      "layer-decayed AdamW, evaluation on eval.split with checkpoints/best/ by eval.metric,\n"
      "then the test split scored into <run-dir>/eval/<split>/. Run under\n"
      "`evax launch --nproc N --`, torchrun --no-python or srun for data parallelism.",
      finetune_plan, finetune_execute);
}

}  // namespace evax::app
