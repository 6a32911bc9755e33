// evax pretrain: EVA-X masked image modeling, on one process or under `evax launch` / torchrun /
// SLURM (one process per GPU, or several CPU ranks).
#include <thread>

#include "commands.h"
#include "evax/core/log.h"
#include "evax/distributed/comm.h"
#include "evax/distributed/env.h"
#include "pretrain_run.h"

namespace evax::app {

PretrainPlan pretrain_plan(Config& cfg) {
  PretrainPlan p;
  p.task = pretrain_options_from_config(cfg);
  p.optimizer = adamw_options_from_config(cfg.view("optimizer"));
  p.trainer = trainer_options_from_config(cfg.view("train"));
  p.comm.backend = cfg.get<std::string>("dist.backend", p.comm.backend);
  const std::string& b = p.comm.backend;
  cfg.check("dist.backend", b == "auto" || b == "gloo" || b == "store" || b == "nccl",
            "must be auto, gloo, store or nccl");
  p.comm.timeout_s = cfg.get<double>("dist.timeout_s", p.comm.timeout_s);
  cfg.check("dist.timeout_s", p.comm.timeout_s > 0, "must be > 0");
  p.threads = cfg.get<int>("threads", 0);
  cfg.check("threads", p.threads >= 0, "must be >= 0 (0 = cores / local ranks)");
  return p;
}

FitResult pretrain_execute(const PretrainPlan& p, const std::string& dir, const DistEnv& env,
                           Comm* comm, const std::string& config_yaml) {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  torch::set_num_threads(p.threads > 0 ? p.threads
                                       : std::max(1, cores / std::max(1, env.local_world_size)));
  PretrainTask task(p.task, env.rank, env.world_size);
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

  const DistEnv env = dist_env_from_environment();
  if (env.world_size > 1 && ra.run_dir.empty())
    raise<UsageError>("evax pretrain: distributed runs need --run-dir (all ranks must agree on it)");
  std::unique_ptr<Comm> comm;
  if (env.world_size > 1) comm = comm_create(env, plan.comm);
  std::string dir;
  if (env.rank == 0) {
    dir = start_run(ra, cfg);
  } else {
    dir = ra.run_dir;
    LogOptions lo;
    lo.rank = env.rank;
    lo.level = log_level_from_string(ra.log_level);
    log_init(lo);
  }
  if (comm) {
    log_info("distributed: ", describe(env), ", backend ", comm->backend_name());
    comm->barrier();  // rank 0 has created the run directory
  }
  pretrain_execute(plan, dir, env, comm.get(), cfg.dump());
  return 0;
}

}  // namespace evax::app
