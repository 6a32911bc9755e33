// evax demo: the main job on the embedded default. Generates synthetic chest X-rays into the run
// directory, trains a small dense teacher on them (MGCA's weights cannot be downloaded), pretrains
// a small EVA-X student against the teacher's tokens (MIM), then finetunes it on the synthetic
// findings and scores the test split, explains the finetuned model with Grad-CAM (nodule
// localisation against chance, a gallery), then segments the lung fields with UperNet on the
// same pretrained student.
#include <algorithm>
#include <exception>
#include <filesystem>

#include "commands.h"
#include "evax/core/files.h"
#include "evax/core/log.h"
#include "evax/data/synth.h"
#include "evax/data/synth_config.h"
#include "evax/explain/cam_eval.h"
#include "evax/report/run_dir.h"
#include "train_plans.h"

namespace evax::app {

SynthSummary run_synth(const SynthOptions& o);
void log_synth_summary(const SynthSummary& s, const std::string& out);

namespace {

// The demo's run and its stages in status.json: a stage is "running" from its start to its end;
// when the demo stops on an error, every unfinished one is marked stopped and the report is still
// written.
class DemoRecord {
 public:
  explicit DemoRecord(std::string dir) : dir_(std::move(dir)) { run_status_write(dir_, "running"); }
  void start(const std::string& stage_dir, const Config& cfg, const ConfigDecoder& decode) {
    record_run_context(stage_dir, cfg, DistEnv{}, decode);
    run_status_write(stage_dir, "running");
    open_.push_back(stage_dir);
  }
  void end(const std::string& stage_dir) {
    run_status_write(stage_dir, "finished");
    open_.erase(std::remove(open_.begin(), open_.end(), stage_dir), open_.end());
  }
  /// Marks the demo finished and writes its report; returns the report's path.
  std::string finish() {
    done_ = true;
    return finish_run(dir_, "finished");
  }
  ~DemoRecord() {
    if (done_) return;
    try {
      for (const auto& d : open_) run_status_write(d, "stopped", "the demo stopped in this stage");
    } catch (const std::exception&) {  // never throw while unwinding
    }
    finish_run(dir_, "stopped", "the demo stopped on an error (log.txt says which)");
  }

 private:
  std::string dir_;
  std::vector<std::string> open_;
  bool done_ = false;
};

}  // namespace

void demo_stage_keys(Config& c) {
  c.get<std::string>("stages.teacher", "pretrain/demo_teacher.yaml",
                     "the dense teacher stage's config, relative to configs/ (evax demo "
                     "--teacher-set k=v overrides it)");
  c.get<std::string>("stages.finetune", "classify/demo.yaml",
                     "the finetuning stage's config, relative to configs/ (--finetune-set k=v)");
  c.get<std::string>("stages.segment", "segment/demo.yaml",
                     "the segmentation stage's config, relative to configs/ (--segment-set k=v)");
}

int cmd_demo(const Args& args) {
  RunArgs ra;
  std::vector<std::string> finetune_sets, teacher_sets, segment_sets;
  bool skip_finetune = false, skip_segment = false;
  ArgParser p("demo",
              "Run the main job on the embedded default (config: configs/demo.yaml):\n"
              "  1. synthetic chest X-rays into <run-dir>/data (evax synth)\n"
              "  2. a small dense teacher on their finding masks (evax teacher; config:\n"
              "     stages.teacher, into <run-dir>/teacher)\n"
              "  3. MIM pretraining of a small EVA-X student against the teacher's tokens\n"
              "     (evax pretrain)\n"
              "  4. finetuning it on the synthetic findings, then the test split scored\n"
              "     (evax finetune; config: stages.finetune, into <run-dir>/finetune)\n"
              "  5. Grad-CAM of the finetuned model on the test images' nodule boxes: localisation\n"
              "     mAP against chance maps, chosen on val, and a gallery (evax cam-eval; into\n"
              "     <run-dir>/finetune/cam; at the last block's output into cam_block_output)\n"
              "  6. UperNet segmentation of the lung fields from the same pretrained student,\n"
              "     then the test split scored (evax segment; config: stages.segment, into\n"
              "     <run-dir>/segment)");
  add_run_args(p, ra);
  p.option("--finetune-set", &finetune_sets, "KEY=VALUE",
           "override one value of the finetuning stage's config, e.g. train.epochs=2");
  p.option("--teacher-set", &teacher_sets, "KEY=VALUE",
           "override one value of the teacher stage's config, e.g. train.epochs=2");
  p.option("--segment-set", &segment_sets, "KEY=VALUE",
           "override one value of the segmentation stage's config, e.g. train.epochs=1");
  p.flag("--no-finetune", &skip_finetune, "skip the finetuning stage");
  p.flag("--no-segment", &skip_segment, "skip the segmentation stage");
  if (!p.parse(args)) return 0;
  Config cfg = load_run_config(ra, "demo.yaml");
  ra.run_dir = run_dir_resolve(ra.run_dir, cfg.name());
  cfg.apply_override("data.manifest=" + ra.run_dir + "/data/pretrain.csv");
  // A stage's config: a file named by stages.<key> (relative to the configs folder), the stage's
  // --<key>-set overrides, then its data manifest (and init) pointed into this run.
  auto stage_config = [&](const std::string& key, const std::string& fallback,
                          const std::vector<std::string>& sets, const std::string& manifest,
                          bool init_from_run, std::string* name) {
    *name = cfg.get<std::string>("stages." + key, fallback,
                                 "a stage's config, relative to configs/ (--<stage>-set k=v)");
    RunArgs a;
    a.sets = sets;
    Config c = load_run_config(a, *name);
    c.apply_override("data.manifest=" + ra.run_dir + "/data/" + manifest);
    if (init_from_run) c.apply_override("model.init=" + ra.run_dir);
    return c;
  };
  std::string ft_name, seg_name, t_name;
  Config ft_cfg = stage_config("finetune", "classify/demo.yaml", finetune_sets,
                               "classification.csv", true, &ft_name);
  // The segmentation stage: the lung masks, from the same pretrained student.
  Config seg_cfg = stage_config("segment", "segment/demo.yaml", segment_sets,
                                "segmentation_lungs.csv", true, &seg_name);
  // The teacher stage (when the pretraining target is a teacher): trained into <run-dir>/teacher.
  Config t_cfg = stage_config("teacher", "pretrain/demo_teacher.yaml", teacher_sets, "findings.csv",
                              false, &t_name);
  const bool with_teacher =
      cfg.get<std::string>("target.kind", "teacher",
                           "what masked patches regress: a frozen teacher's patch tokens or "
                           "per-patch normalised pixels") == "teacher";
  // Before any work, and unknown keys before bad values: a typo never runs with defaults.
  TeacherPlan t_plan = t_cfg.decode_all(teacher_plan);
  if (with_teacher) {
    // The pretraining target is the teacher this run trains, whatever its size.
    cfg.apply_override("target.checkpoint=" + ra.run_dir + "/teacher");
    cfg.apply_override("target.teacher=" + t_plan.task.model);
    cfg.apply_override("target.teacher_depth=" + std::to_string(t_plan.task.depth));
  }
  auto [so, plan] = cfg.decode_all([](Config& c) {
    demo_stage_keys(c);
    return std::make_pair(synth_options_from_config(c.view("synth")), pretrain_plan(c));
  });
  if (with_teacher && plan.task.views.teacher_size != t_plan.task.img_size)
    raise<ConfigError>("the teacher stage trains at data.img_size = ", t_plan.task.img_size,
                       " but pretraining feeds it data.views.teacher_size = ",
                       plan.task.views.teacher_size, ": make them equal");
  FinetunePlan ft_plan = ft_cfg.decode_all(finetune_plan);
  SegmentPlan seg_plan = seg_cfg.decode_all(segment_plan);
  so.out_dir = ra.run_dir + "/data";
  const std::string dir = start_run(ra, cfg, {}, [](Config& c) {
    demo_stage_keys(c);
    synth_options_from_config(c.view("synth"));
    pretrain_plan(c);
  });
  DemoRecord record(dir);
  const int stages =
      2 + (with_teacher ? 1 : 0) + (skip_finetune ? 0 : 2) + (skip_segment ? 0 : 1);
  int stage = 0;

  log_info("stage ", ++stage, "/", stages, ": synthetic chest X-rays (", so.n, " images at ",
           so.size, "x", so.size, ", seed ", so.seed, ")");
  log_synth_summary(run_synth(so), so.out_dir);
  DistEnv single;
  if (with_teacher) {
    log_info("stage ", ++stage, "/", stages, ": a dense teacher learns which findings each patch "
             "shows (", t_name, "; stands in for MGCA)");
    const std::string t_dir = dir + "/teacher";
    std::filesystem::create_directories(t_dir);
    write_file_atomic(t_dir + "/config.yaml", t_cfg.dump());
    record.start(t_dir, t_cfg, [](Config& c) { teacher_plan(c); });
    FitResult t = teacher_execute(t_plan, t_dir, single, nullptr, t_cfg.dump());
    record.end(t_dir);
    log_info("teacher reached patch BCE ", t.first_loss, " → ", t.last_loss);
  }
  log_info("stage ", ++stage, "/", stages, ": MIM pretraining against ",
           with_teacher ? "the teacher's patch tokens" : "the configured target");
  FitResult r = pretrain_execute(plan, dir, single, nullptr, cfg.dump());
  log_info("pretraining reached masked cosine loss ", r.first_loss, " → ", r.last_loss);
  if (!skip_finetune) {
    log_info("stage ", ++stage, "/", stages,
             ": finetuning the pretrained student on the synthetic findings (", ft_name, ")");
    const std::string ft_dir = dir + "/finetune";
    std::filesystem::create_directories(ft_dir);
    write_file_atomic(ft_dir + "/config.yaml", ft_cfg.dump());
    record.start(ft_dir, ft_cfg, [](Config& c) { finetune_plan(c); });
    FinetuneResult f = finetune_execute(ft_plan, ft_dir, single, nullptr, ft_cfg.dump());
    record.end(ft_dir);
    std::string summary = "finetuning reached " + ft_plan.run.trainer.eval().metric() + " " +
                          str_cat(f.fit.best_value) + " on " + ft_plan.task.eval_split;
    if (f.test_metrics.contains("mauc") && !f.test_metrics["mauc"].is_null())
      summary += ", test mAUC " + str_cat(f.test_metrics["mauc"].get<double>());
    log_info(summary, " (", ft_dir, "/eval/", ft_plan.task.test_split, ")");

    log_info("stage ", ++stage, "/", stages,
             ": Grad-CAM of the finetuned model on the test images' nodule boxes");
    const Manifest boxes = manifest_load(ft_plan.task.manifest);
    auto has_boxes = [&](const std::string& split) {
      for (const auto& row : boxes.select_split(split).rows)
        if (!row.boxes.empty()) return true;
      return false;
    };
    CamEvalOptions co;
    if (!has_boxes("test")) {
      log_warn("no nodule boxes in the test split: skipping the localisation scores");
    } else {
      if (!has_boxes("val")) {
        log_warn("no nodule boxes in the val split to choose the threshold on: searching it on "
                 "the test split itself (EVA-X's protocol, optimistic)");
        co.protocol("paper");
      }
      // EVA-X's layer (the last block's norm1), then the last block's output: with mean pooling
      // every token there gets the same gradient, so Grad-CAM is the classic CAM (w · token).
      const auto model = classifier_load(f.weights, "auto");
      for (const auto& [layer, sub] : {std::pair<std::string, std::string>{"", "cam"},
                                       {"blocks.-1", "cam_block_output"}}) {
        GradCamOptions g = co.cam();
        if (!layer.empty()) g.layers({layer});
        CamEvalOptions o = co;
        o.cam(g);
        const CamEvalResult cam = cam_evaluate(model, boxes, o);
        cam_eval_write(cam, ft_dir + "/" + sub);
        log_info(cam_eval_headline(cam), " [", layer.empty() ? "EVA-X's layer, the last norm1"
                                                             : "the last block's output",
                 "] (", ft_dir, "/", sub, ", gallery in ", ft_dir, "/", sub, "/gallery)");
      }
    }
  }
  if (!skip_segment) {
    log_info("stage ", ++stage, "/", stages,
             ": UperNet segmentation of the lung fields from the pretrained student (", seg_name,
             ")");
    const std::string seg_dir = dir + "/segment";
    std::filesystem::create_directories(seg_dir);
    write_file_atomic(seg_dir + "/config.yaml", seg_cfg.dump());
    record.start(seg_dir, seg_cfg, [](Config& c) { segment_plan(c); });
    SegmentResult sr = segment_execute(seg_plan, seg_dir, single, nullptr, seg_cfg.dump());
    record.end(seg_dir);
    std::string summary = "segmentation reached " + seg_plan.run.trainer.eval().metric() + " " +
                          str_cat(sr.fit.best_value) + " on " + seg_plan.task.eval_split;
    const auto& t = sr.test_metrics;
    if (t.contains("mDice_fg") && t["mDice_fg"].is_number())
      summary += ", test foreground Dice " + str_cat(t["mDice_fg"].get<double>()) +
                 " (mDice with background " + str_cat(t["mDice"].get<double>()) + ")";
    log_info(summary, " (", seg_dir, "/eval/", seg_plan.task.test_split, ")");
  }
  log_info("done: ", dir);
  // Last line: the report of every stage.
  record.finish();
  return 0;
}

}  // namespace evax::app
