// evax evaluate: score a classifier (finetuning config) or segmentation (segment config)
// checkpoint on a split of the config's data.
#include "commands.h"
#include "evax/classify/evaluation.h"
#include "evax/classify/task.h"
#include "evax/core/log.h"
#include "evax/models/load.h"
#include "evax/segment/evaluation.h"
#include "evax/segment/upernet.h"
#include "evax/train/runtime.h"
#include "train_plans.h"

namespace evax::app {

namespace {

int evaluate_segmentation(Config& cfg, const RunArgs& ra, const std::string& checkpoint,
                          std::string split, std::string out) {
  SegmentPlan plan = cfg.decode_all(segment_plan);
  if (split.empty()) split = plan.task.test_split;
  if (split != "train" && split != "val" && split != "test")
    raise<UsageError>("--split must be train, val or test, got '", split, "'");
  DistRun run = start_distributed_run(ra, cfg, plan.run.comm, "evaluate",
                                      [](Config& c) { segment_plan(c); });
  apply_thread_policy(plan.run.threads, run.env.local_world_size);
  SegmentTask task(plan.task, run.env.rank, run.env.world_size, run.comm.get(), run.env.local_rank);
  const std::string weights = run_weights_path(checkpoint);
  auto rep = upernet_load_file(*task.model(), weights, /*strict=*/true);
  log_info("weights ", weights, ": ", rep.summary());
  if (out.empty()) out = run.dir + "/eval/" + split;
  auto m = segment_evaluate_split(task, split, out, run.env.rank == 0);
  if (run.env.rank == 0)
    log_info(split, " mDice ", m["mDice"].dump(), " (foreground ", m["mDice_fg"].dump(), "), mIoU ",
             m["mIoU"].dump());
  return 0;
}

}  // namespace

int cmd_evaluate(const Args& args) {
  RunArgs ra;
  std::string checkpoint, split, out;
  ArgParser p("evaluate",
              "Score a finetuned classifier on a split of the config's data: metrics.json, a\n"
              "per-class table (printed and per_class.csv), ROC curves (roc/*.png),\n"
              "predictions.csv and targets.csv (readable by `evax metrics`).\n"
              "With a segmentation config (model.name upernet_*): masks predicted at the\n"
              "original resolution, metrics.json (IoU/Dice per class, means with and without\n"
              "the background, per-image Dice distribution), per_class.csv, per_image.csv.");
  add_run_args(p, ra);
  p.required("--config");
  p.option("--checkpoint", &checkpoint, "K",
           "weights: a checkpoint directory, a run directory (its best/), a .safetensors/.pt/.pth");
  p.required("--checkpoint");
  p.option("--split", &split, "SPLIT", "train, val or test (default: the config's eval.test_split)");
  p.option("--out", &out, "DIR", "where the files go (default: <run-dir>/eval/<split>)");
  if (!p.parse(args)) return 0;
  Config cfg = load_run_config(ra, "");
  cfg.apply_override("model.init=");  // the checkpoint is loaded strictly below instead
  if (cfg.get<std::string>("model.name", "").rfind("upernet_", 0) == 0)
    return evaluate_segmentation(cfg, ra, checkpoint, split, out);
  FinetunePlan plan = cfg.decode_all(finetune_plan);
  if (split.empty()) split = plan.task.test_split;
  if (split != "train" && split != "val" && split != "test")
    raise<UsageError>("--split must be train, val or test, got '", split, "'");
  DistRun run = start_distributed_run(ra, cfg, plan.run.comm, "evaluate",
                                      [](Config& c) { finetune_plan(c); });
  apply_thread_policy(plan.run.threads, run.env.local_world_size);
  ClassifyTask task(plan.task, run.env.rank, run.env.world_size, run.comm.get(), run.env.local_rank);
  const std::string weights = run_weights_path(checkpoint);
  auto rep = load_checkpoint_into(*task.model(), weights, "classifier " + plan.task.model.model(),
                                  WeightLoadOptions().strict(true).drop_mismatched_head(false));
  log_info("weights ", weights, ": ", rep.summary());
  if (out.empty()) out = run.dir + "/eval/" + split;
  auto m = classify_evaluate_split(task, split, out, run.env.rank == 0);
  if (run.env.rank == 0 && m.contains("mauc"))
    log_info(split, " mAUC ", m["mauc"].dump(),
             m.contains("accuracy") ? ", accuracy " + m["accuracy"].dump() : std::string());
  return 0;
}

}  // namespace evax::app
