// evax pretrain: EVA-X masked image modeling, on one process or under `evax launch` / torchrun /
// SLURM (one process per GPU, or several CPU ranks).
#include "evax/core/log.h"
#include "train_plans.h"

namespace evax::app {

PretrainPlan pretrain_plan(Config& cfg) {
  return {pretrain_options_from_config(cfg), train_run_options_from_config(cfg)};
}

FitResult pretrain_execute(const PretrainPlan& p, const std::string& dir, const DistEnv& env,
                           Comm* comm, const std::string& config_yaml) {
  apply_thread_policy(p.run.threads, env.local_world_size);
  PretrainTask task(p.task, env.rank, env.world_size, env.local_rank);
  FitResult r = trainer_fit(task, p.run.optimizer, p.run.trainer, RunContext{dir, config_yaml, comm});
  log_info("pretraining done: ", r.steps, " steps, loss ", r.first_loss, " → ", r.last_loss,
           r.nan_rollbacks ? ", " + std::to_string(r.nan_rollbacks) + " NaN rollbacks" : "",
           "; checkpoint ", r.last_checkpoint);
  return r;
}

int cmd_pretrain(const Args& args) {
  return run_train_command(
      args, "pretrain",
      "EVA-X masked image modeling: the student regresses a frozen teacher's patch tokens\n"
      "(or normalised pixels) at masked patches. Run under `evax launch --nproc N --`,\n"
      "torchrun --no-python or srun for data parallelism (CPU ranks: gloo;\n"
      "GPUs: NCCL).",
      pretrain_plan, pretrain_execute);
}

}  // namespace evax::app
