// The finetuning configs under configs/classify/: every one loads and decodes as `evax finetune`
// decodes it (no unknown key, no value out of range), and the paper runs carry EVA-X's settings
// (evax_finetune.md §2.2, §2.5, §2.7): a wrong epoch count, batch, class list or label policy fails.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "evax/classify/task.h"
#include "evax/core/config.h"
#include "evax/train/ema.h"
#include "evax/train/optim.h"
#include "evax/train/runtime.h"
#include "evax/train/trainer.h"
#include "test_util.h"

using namespace evax;
namespace fs = std::filesystem;

namespace {

// What apps/evax/finetune.cpp's finetune_plan decodes (apps/ is not linked into the tests): the
// same decoders with the same defaults, in the same order.
struct Plan {
  ClassifyOptions task;
  TrainRunOptions run;
};

Plan plan_from_config(Config& cfg) {
  return {classify_options_from_config(cfg),
          train_run_options_from_config(cfg, classify_optimizer_defaults(),
                                        classify_eval_defaults())};
}

std::string config_path(const std::string& name) {
  return test::source_path("configs/classify/" + name);
}

// Loads a config as `evax finetune --config F --set data.manifest=... [--set ...]` does and
// decodes it (decoding reads no file: the manifest need not exist).
Plan decode(const std::string& name, const std::vector<std::string>& sets = {}) {
  Config cfg = Config::load(config_path(name));
  cfg.apply_override("data.manifest=/nonexistent/manifest.csv");
  for (const auto& s : sets) cfg.apply_override(s);
  return cfg.decode_all(plan_from_config);
}

const std::vector<std::string> kCxr14 = {
    "Atelectasis",   "Cardiomegaly", "Effusion", "Infiltration",       "Mass",
    "Nodule",        "Pneumonia",    "Pneumothorax", "Consolidation", "Edema",
    "Emphysema",     "Fibrosis",     "Pleural_Thickening", "Hernia"};
const std::vector<std::string> kChexpert = {"Atelectasis", "Cardiomegaly", "Consolidation",
                                            "Edema", "Pleural Effusion"};

// What every EVA-X finetuning script shares (§2.2, §2.3): blr 1e-3 unscaled and constant after
// warmup, layer decay 0.55, wd 0.05, torch AdamW defaults, no clipping, no EMA, checkpoint-best
// by mAUC.
void check_shared(const Plan& p) {
  CHECK(p.run.optimizer.lr() == 1e-3);
  CHECK(p.run.optimizer.weight_decay() == 0.05);
  CHECK(p.run.optimizer.beta1() == 0.9);
  CHECK(p.run.optimizer.beta2() == 0.999);
  CHECK(p.run.optimizer.eps() == 1e-8);
  CHECK(p.run.optimizer.clip_grad() == 0);
  CHECK(p.task.layer_decay == 0.55);
  CHECK(p.task.mode == "full");
  CHECK(p.run.trainer.schedule().kind() == ScheduleKind::kFixed);
  CHECK(p.run.trainer.accum_steps() == 1);
  CHECK(p.run.trainer.ema().decay() == 0);
  CHECK(p.run.trainer.eval().metric() == "mauc");
  CHECK(p.run.trainer.eval().mode() == "max");
  CHECK(p.task.smoothing == 0);
  CHECK(p.task.init.empty());
  CHECK(p.task.eval_split == "val");
  CHECK(p.task.test_split == "test");
  CHECK(p.task.train_split == "train");
  CHECK(p.task.loader.drop_last_batch);
}

}  // namespace

TEST_CASE("configs: every classify config loads and decodes as evax finetune does") {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(test::source_path("configs/classify")))
    if (e.path().extension() == ".yaml") names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  // base + demo + 3 CXR14 + 2 CheXpert + 2 x 3 COVIDx.
  REQUIRE(names.size() >= 13);
  for (const auto& name : names) {
    INFO(name);
    Plan p;
    REQUIRE_NOTHROW(p = decode(name));
    CHECK(p.task.manifest == "/nonexistent/manifest.csv");
    CHECK(p.task.folders.empty());
    // EVA-X's protocol is one override away (the warning comes when the task is built).
    REQUIRE_NOTHROW(p = decode(name, {"eval.split=test"}));
    CHECK(p.task.eval_split == "test");
  }
}

TEST_CASE("configs: the CXR14 runs carry EVA-X's vit_ti, vit_s and vit_b settings") {
  struct Run {
    std::string file, model;
    int64_t batch, epochs;
  };
  for (const Run& r : {Run{"cxr14_eva_x_ti.yaml", "eva_x_tiny_patch16", 256, 45},
                       Run{"cxr14_eva_x_s.yaml", "eva_x_small_patch16", 256, 30},
                       Run{"cxr14_eva_x_b.yaml", "eva_x_base_patch16", 128, 10}}) {
    INFO(r.file);
    const Plan p = decode(r.file);
    check_shared(p);
    CHECK(p.task.model.model() == r.model);
    CHECK(p.task.model.depth() == 0);
    CHECK(p.task.model.drop_path() == 0.2);
    CHECK(p.task.model.img_size() == 224);
    CHECK(p.task.classes == kCxr14);
    CHECK_FALSE(p.task.multiclass);
    CHECK(p.task.train_transform == "augment");
    CHECK(p.task.augment.rand_augment);
    CHECK(p.task.augment.scale.lo == 0.08);
    CHECK(p.task.augment.flip_p == 0.5);
    CHECK(p.task.crop_pct == 0.875);
    CHECK(p.task.loader.batch_size == r.batch);
    CHECK(p.task.loader.data_pct == 1.0);
    CHECK(p.task.loader.epoch_length == 0);
    CHECK(p.task.loader.seed == 0);
    CHECK(p.run.trainer.epochs() == r.epochs);
    CHECK(p.run.trainer.schedule().warmup_epochs() == 5);
    CHECK(p.run.trainer.eval().every() == 5);
    CHECK(p.task.uncertain.policy == "error");  // CXR14 has no uncertain labels
  }
}

TEST_CASE("configs: the CheXpert runs carry EVA-X's label policy, transforms and fake epochs") {
  const Plan ti = decode("chexpert_eva_x_ti.yaml");
  const Plan s = decode("chexpert_eva_x_s.yaml");
  for (const Plan* p : {&ti, &s}) {
    check_shared(*p);
    CHECK(p->task.classes == kChexpert);
    CHECK_FALSE(p->task.multiclass);
    CHECK(p->task.missing_as_zero);
    CHECK(p->task.uncertain.policy == "zeros");
    CHECK(p->task.uncertain.ones == std::vector<std::string>{"Atelectasis", "Edema"});
    CHECK(p->task.model.img_size() == 224);
    CHECK(p->task.train_transform == "resize_crop");
    CHECK(p->task.loader.batch_size == 256);
    CHECK(p->task.loader.epoch_length == 0);  // the fake epochs come from chunks
    CHECK(p->task.loader.row_permutation_seed == 123);
    CHECK(p->task.loader.chunks == 20);
    CHECK(p->task.loader.chunks_used == 10);
    CHECK(p->task.loader.data_pct == 1.0);
    CHECK(p->run.trainer.schedule().warmup_epochs() == 0);
    CHECK(p->run.trainer.eval().every() == 1);
  }
  CHECK(ti.task.model.model() == "eva_x_tiny_patch16");
  CHECK(ti.task.uncertain.smooth);
  CHECK(ti.task.crop_pct == 1.0);  // Resize(224) + CenterCrop(224)
  CHECK(ti.task.model.drop_path() == 0.2);
  CHECK(ti.run.trainer.epochs() == 100);
  CHECK(ti.task.loader.seed == 0);

  CHECK(s.task.model.model() == "eva_x_small_patch16");
  CHECK_FALSE(s.task.uncertain.smooth);
  CHECK(s.task.crop_pct == 0.875);  // Resize(256) + CenterCrop(224)
  CHECK(s.task.model.drop_path() == 0.15);
  CHECK(s.run.trainer.epochs() == 60);
  CHECK(s.task.loader.seed == 14);
}

TEST_CASE("configs: the COVIDx runs and their data_pct variants carry EVA-X's settings") {
  struct Run {
    std::string stem;
    std::vector<std::string> classes;
  };
  for (const Run& r : {Run{"covidx3_eva_x_s", {"normal", "pneumonia", "COVID-19"}},
                       Run{"covidx4_eva_x_s", {"negative", "positive"}}}) {
    for (const auto& [suffix, pct] : {std::pair<std::string, double>{"", 1.0},
                                      {"_pct10", 0.1},
                                      {"_pct1", 0.01}}) {
      const std::string file = r.stem + suffix + ".yaml";
      INFO(file);
      const Plan p = decode(file);
      check_shared(p);
      CHECK(p.task.model.model() == "eva_x_small_patch16");
      CHECK(p.task.model.drop_path() == 0.2);
      CHECK(p.task.model.img_size() == 480);
      CHECK(p.task.classes == r.classes);
      CHECK(p.task.multiclass);
      CHECK(p.task.auc_scores == "sigmoid");  // EVA-X's mAUC (and so its best checkpoint)
      CHECK(p.task.train_transform == "resize_crop");
      CHECK(p.task.crop_pct == 1.0);
      CHECK(p.task.loader.batch_size == 128);
      CHECK(p.task.loader.data_pct == pct);
      CHECK(p.task.loader.epoch_length == 0);
      CHECK(p.task.loader.seed == 0);
      CHECK(p.run.trainer.epochs() == 10);
      CHECK(p.run.trainer.schedule().warmup_epochs() == 1);
      CHECK(p.run.trainer.eval().every() == 1);
    }
  }
}
