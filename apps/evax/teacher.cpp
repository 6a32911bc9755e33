// evax teacher: train a dense MIM teacher when no pretrained one can be had (the demo's stage 2):
// a plain ViT whose patch tokens learn which findings each patch shows, from bit masks.
#include "commands.h"
#include "evax/core/log.h"
#include "evax/pretrain/dense_teacher.h"
#include "evax/train/runtime.h"
#include "teacher_run.h"

namespace evax::app {

TeacherPlan teacher_plan(Config& cfg) {
  TeacherPlan p;
  p.task = dense_teacher_options_from_config(cfg);
  p.optimizer = adamw_options_from_config(cfg.view("optimizer"));
  p.trainer = trainer_options_from_config(cfg.view("train"));
  p.comm = comm_options_from_config(cfg.view("dist"));
  p.threads = cfg.get<int>("threads", 0);
  cfg.check("threads", p.threads >= 0, "must be >= 0 (0 = cores / local ranks)");
  return p;
}

FitResult teacher_execute(const TeacherPlan& p, const std::string& dir, const DistEnv& env,
                          Comm* comm, const std::string& config_yaml) {
  apply_thread_policy(p.threads, env.local_world_size);
  DenseTeacherTask task(p.task, env.rank, env.world_size, env.local_rank);
  FitResult r = trainer_fit(task, p.optimizer, p.trainer, RunContext{dir, config_yaml, comm});
  log_info("teacher training done: ", r.steps, " steps, patch BCE ", r.first_loss, " → ",
           r.last_loss, "; checkpoint ", r.last_checkpoint);
  return r;
}

int cmd_teacher(const Args& args) {
  RunArgs ra;
  int64_t max_steps = -1;
  std::string resume;
  ArgParser p("teacher",
              "Train a dense MIM teacher where no pretrained one can be had: a plain ViT whose\n"
              "final-norm patch tokens learn, through a per-token linear head, which findings each\n"
              "16x16 patch shows (bit masks, e.g. evax synth's masks/findings). Its run directory\n"
              "is then a valid target.checkpoint for evax pretrain (target.kind: teacher).");
  add_run_args(p, ra);
  p.required("--config");
  p.option("--max-steps", &max_steps, "N", "stop after N optimizer steps (checkpointing there)");
  p.option("--resume", &resume, "auto|DIR", "continue from the newest valid checkpoint or DIR");
  if (!p.parse(args)) return 0;
  Config cfg = load_run_config(ra, "");
  TeacherPlan plan = cfg.decode_all(teacher_plan);
  plan.trainer.max_steps(max_steps).resume(resume);
  DistRun run = start_distributed_run(ra, cfg, plan.comm, "teacher");
  teacher_execute(plan, run.dir, run.env, run.comm.get(), cfg.dump());
  return 0;
}

}  // namespace evax::app
