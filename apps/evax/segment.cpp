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
  return train_then_test(task, p, "segmentation", dir, env, comm, config_yaml,
                         segment_evaluate_split);
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
