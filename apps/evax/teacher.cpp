// evax teacher: train a dense MIM teacher when no pretrained one can be had (the demo's stage 2):
// a plain ViT whose patch tokens learn which findings each patch shows, from bit masks.
#include "evax/core/log.h"
#include "train_plans.h"

namespace evax::app {

TeacherPlan teacher_plan(Config& cfg) {
  return {dense_teacher_options_from_config(cfg), train_run_options_from_config(cfg)};
}

FitResult teacher_execute(const TeacherPlan& p, const std::string& dir, const DistEnv& env,
                          Comm* comm, const std::string& config_yaml) {
  apply_thread_policy(p.run.threads, env.local_world_size);
  DenseTeacherTask task(p.task, env.rank, env.world_size, env.local_rank);
  FitResult r = trainer_fit(task, p.run.optimizer, p.run.trainer, RunContext{dir, config_yaml, comm});
  log_info("teacher training done: ", r.steps, " steps, patch BCE ", r.first_loss, " → ",
           r.last_loss, "; checkpoint ", r.last_checkpoint);
  return r;
}

int cmd_teacher(const Args& args) {
  return run_train_command(
      args, "teacher",
      "Train a dense MIM teacher where no pretrained one can be had: a plain ViT whose\n"
      "final-norm patch tokens learn, through a per-token linear head, which findings each\n"
      "16x16 patch shows (bit masks, e.g. evax synth's masks/findings). Its run directory\n"
      "is then a valid target.checkpoint for evax pretrain (target.kind: teacher).",
      teacher_plan, teacher_execute);
}

}  // namespace evax::app
