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
  return train_then_test(task, p, "finetuning", dir, env, comm, config_yaml,
                         classify_evaluate_split);
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
