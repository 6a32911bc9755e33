// evax finetune: EVA-X classification finetuning (or linear probing) on one process or under
// `evax launch` / torchrun / SLURM; selects on a split, then scores the test split.
#include "commands.h"
#include "evax/classify/evaluation.h"
#include "evax/core/log.h"
#include "evax/io/safetensors.h"
#include "evax/train/runtime.h"
#include "finetune_run.h"

namespace evax::app {

FinetunePlan finetune_plan(Config& cfg) {
  FinetunePlan p;
  p.task = classify_options_from_config(cfg);
  // EVA-X finetuning's optimizer: torch AdamW defaults, no clipping [eva-x code].
  p.optimizer = adamw_options_from_config(
      cfg.view("optimizer"), AdamWOptions().lr(1e-3).min_lr(1e-6).beta2(0.999).eps(1e-8).clip_grad(0));
  p.trainer = trainer_options_from_config(cfg.view("train"));
  p.trainer.eval(eval_hook_options_from_config(cfg.view("eval"),
                                               EvalHookOptions().metric("mauc").mode("max")));
  p.trainer.ema(ema_options_from_config(cfg.view("ema")));
  p.comm = comm_options_from_config(cfg.view("dist"));
  p.threads = cfg.get<int>("threads", 0);
  cfg.check("threads", p.threads >= 0, "must be >= 0 (0 = cores / local ranks)");
  return p;
}

FinetuneResult finetune_execute(const FinetunePlan& p, const std::string& dir, const DistEnv& env,
                                Comm* comm, const std::string& config_yaml) {
  apply_thread_policy(p.threads, env.local_world_size);
  ClassifyTask task(p.task, env.rank, env.world_size, comm, env.local_rank);
  FinetuneResult r;
  r.fit = trainer_fit(task, p.optimizer, p.trainer, RunContext{dir, config_yaml, comm});
  log_info("finetuning done: ", r.fit.steps, " steps, loss ", r.fit.first_loss, " → ",
           r.fit.last_loss, r.fit.stopped_early ? " (stopped early)" : "",
           r.fit.best_step >= 0 ? "; best " + p.trainer.eval().metric() + " " +
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
  RunArgs ra;
  int64_t max_steps = -1;
  std::string resume;
  ArgParser p("finetune",
              "EVA-X classification finetuning (finetune.mode: full) or linear probing (linear):\n"
              "layer-decayed AdamW, evaluation on eval.split with checkpoints/best/ by eval.metric,\n"
              "then the test split scored into <run-dir>/eval/<split>/. Run under\n"
              "`evax launch --nproc N --`, torchrun --no-python or srun for data parallelism.");
  add_run_args(p, ra);
  p.required("--config");
  p.option("--max-steps", &max_steps, "N", "stop after N optimizer steps (checkpointing there)");
  p.option("--resume", &resume, "auto|DIR", "continue from the newest valid checkpoint or DIR");
  if (!p.parse(args)) return 0;
  Config cfg = load_run_config(ra, "");
  FinetunePlan plan = cfg.decode_all(finetune_plan);
  plan.trainer.max_steps(max_steps).resume(resume);
  DistRun run = start_distributed_run(ra, cfg, plan.comm, "finetune");
  finetune_execute(plan, run.dir, run.env, run.comm.get(), cfg.dump());
  return 0;
}

}  // namespace evax::app
