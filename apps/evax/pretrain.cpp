// evax pretrain: EVA-X masked image modeling, on one process or under `evax launch` / torchrun /
// SLURM (one process per GPU, or several CPU ranks).
#include "commands.h"
#include "evax/core/log.h"
#include "evax/distributed/comm.h"
#include "evax/distributed/env.h"
#include "evax/train/runtime.h"
#include "pretrain_run.h"

namespace evax::app {

PretrainPlan pretrain_plan(Config& cfg) {
  PretrainPlan p;
  p.task = pretrain_options_from_config(cfg);
  p.optimizer = adamw_options_from_config(cfg.view("optimizer"));
  p.trainer = trainer_options_from_config(cfg.view("train"));
  p.comm = comm_options_from_config(cfg.view("dist"));
  p.threads = cfg.get<int>("threads", 0);
  cfg.check("threads", p.threads >= 0, "must be >= 0 (0 = cores / local ranks)");
  return p;
}

FitResult pretrain_execute(const PretrainPlan& p, const std::string& dir, const DistEnv& env,
                           Comm* comm, const std::string& config_yaml) {
  apply_thread_policy(p.threads, env.local_world_size);
  PretrainTask task(p.task, env.rank, env.world_size, env.local_rank);
  FitResult r = trainer_fit(task, p.optimizer, p.trainer, RunContext{dir, config_yaml, comm});
  log_info("pretraining done: ", r.steps, " steps, loss ", r.first_loss, " → ", r.last_loss,
           r.nan_rollbacks ? ", " + std::to_string(r.nan_rollbacks) + " NaN rollbacks" : "",
           "; checkpoint ", r.last_checkpoint);
  return r;
}

int cmd_pretrain(const Args& args) {
  RunArgs ra;
  int64_t max_steps = -1;
  std::string resume;
  ArgParser p("pretrain",
              "EVA-X masked image modeling: the student regresses a frozen teacher's patch tokens\n"
              "(or normalised pixels) at masked patches. Run under `evax launch --nproc N --`,\n"
              "torchrun --no-python or srun for data parallelism (CPU ranks: gloo;\n"
              "GPUs: NCCL).");
  add_run_args(p, ra);
  p.required("--config");  // no silent default: a pretraining run names its recipe
  p.option("--max-steps", &max_steps, "N", "stop after N optimizer steps (checkpointing there)");
  p.option("--resume", &resume, "auto|DIR", "continue from the newest valid checkpoint or DIR");
  if (!p.parse(args)) return 0;
  Config cfg = load_run_config(ra, "");
  // Before any work, and unknown keys before bad values: a typo never runs with defaults.
  PretrainPlan plan = cfg.decode_all(pretrain_plan);
  plan.trainer.max_steps(max_steps).resume(resume);

  DistRun run = start_distributed_run(ra, cfg, plan.comm, "pretrain");
  pretrain_execute(plan, run.dir, run.env, run.comm.get(), cfg.dump());
  return 0;
}

}  // namespace evax::app
