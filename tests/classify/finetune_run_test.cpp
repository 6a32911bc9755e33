// End-to-end finetuning runs of the evax binary on a small synthetic set: evaluation, best/, the
// test split scored; `evax evaluate`, `evax predict` and `evax metrics` agree with it; resume ends
// bit-identical; two gloo ranks equal one; linear probing trains only the head; bad input
// (missing label columns, another model's checkpoint, an empty split, an unreadable image) fails
// with the file and the reason.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "evax/core/files.h"
#include "evax/io/safetensors.h"
#include "cli_util.h"
#include "tensor_util.h"
#include "test_util.h"

using namespace evax;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;
using test::evax_bin;
using test::shell;

namespace {

// A tiny synthetic dataset shared by the tests.
std::string dataset() {
  return test::synth_dataset("classify_synth", "--n 72 --size 64 --seed 5 --no-dicom --threads 1");
}

// The base config; a top-level key of `extra` replaces the base's entry of that key as a whole.
std::string write_config(const test::TempDir& tmp, const std::string& extra = "",
                         const std::string& name = "cfg.yaml") {
  const std::vector<std::pair<std::string, std::string>> base = {
      {"model", "model: {name: eva_x_tiny_patch16, depth: 1, drop_path: 0.1}\n"},
      {"data", "data:\n"
               "  manifest: " + dataset() + "/classification.csv\n"
               "  classes: [Cardiomegaly, Effusion, Nodule, Pneumothorax, Consolidation]\n"
               "  img_size: 64\n"
               "  crop_pct: 1.0\n"
               "  augment: {rand_augment: rand-m6-mstd0.5-inc1}\n"
               "  loader: {batch_size: 8, workers: 2}\n"},
      {"optimizer", "optimizer: {lr: 1.0e-3}\n"},
      {"train", "train: {epochs: 3, warmup_epochs: 1, schedule: fixed, log_every: 2}\n"},
      {"eval", "eval: {split: val, every: 1, metric: mauc, batch_size: 16}\n"},
      {"seed", "seed: 3\n"},
      {"threads", "threads: 1\n"}};
  return test::write_config_file(tmp / name, base, extra,
                                 "_base_: " + test::source_path("configs/classify/base.yaml") + "\n");
}

// Rows of a CSV as cells (no quoting in these files' ids).
std::vector<std::vector<std::string>> read_csv(const std::string& path) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(read_file(path));
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> cells;
    std::stringstream ls(line);
    for (std::string c; std::getline(ls, c, ',');) cells.push_back(c);
    rows.push_back(cells);
  }
  return rows;
}

std::string latest(const std::string& run) {
  std::vector<std::string> dirs;
  for (auto& e : fs::directory_iterator(run + "/checkpoints"))
    if (e.path().filename().string().rfind("step-", 0) == 0) dirs.push_back(e.path().string());
  std::sort(dirs.begin(), dirs.end());
  REQUIRE(!dirs.empty());
  return dirs.back();
}

}  // namespace

TEST_CASE("finetune: evaluation hook, best/, test scoring, and evaluate/predict/metrics agree") {
  test::TempDir tmp("ft_run");
  const std::string cfg = write_config(tmp);
  const std::string run = tmp / "run";
  REQUIRE(shell(evax_bin() + " finetune --config '" + cfg + "' --run-dir '" + run + "' 2>'" +
                (tmp / "err") + "'") == 0);
  const std::string log = read_file(run + "/log.txt");
  CHECK_THAT(log, Contains("eval epoch 1") && Contains("eval epoch 3") && Contains("mauc"));
  // metrics.csv has the evaluation columns; best/ records the classifier.
  CHECK_THAT(read_file(run + "/metrics.csv"), Contains("eval/mauc") && Contains("eval/auc/Nodule"));
  auto best = test::read_json(run + "/checkpoints/best/meta.json");
  CHECK(best["metric"] == "mauc");
  CHECK(best["task"]["classes"].size() == 5);
  CHECK(best["task"]["img_size"] == 64);
  // The test split was scored with best/.
  const std::string ev = run + "/eval/test";
  auto m = test::read_json(ev + "/metrics.json");
  CHECK(m["auc"].contains("Cardiomegaly"));
  REQUIRE(fs::exists(ev + "/predictions.csv"));
  CHECK(fs::exists(ev + "/per_class.csv"));
  CHECK(fs::exists(ev + "/roc/all.png"));
  auto preds = read_csv(ev + "/predictions.csv");
  // Each test image once (no sampler padding), in manifest order.
  std::set<std::string> ids;
  for (size_t r = 1; r < preds.size(); ++r) ids.insert(preds[r][0]);
  CHECK(ids.size() == preds.size() - 1);

  // evax evaluate on the run (its best/) reproduces the same predictions.
  REQUIRE(shell(evax_bin() + " evaluate --config '" + cfg + "' --checkpoint '" + run + "' --split test --out '" +
                (tmp / "ev") + "' --run-dir '" + (tmp / "evrun") + "' 2>/dev/null") == 0);
  CHECK(read_file(tmp / "ev/predictions.csv") == read_file(ev + "/predictions.csv"));
  // evax metrics recomputes metrics.json's AUCs from the saved CSVs.
  REQUIRE(shell(evax_bin() + " metrics --task multilabel --pred '" + ev + "/predictions.csv' --target '" +
                ev + "/targets.csv' --out '" + (tmp / "m.json") + "' 2>/dev/null") == 0);
  CHECK(test::read_json(tmp / "m.json")["auc"] == m["auc"]);
  // evax predict from the checkpoint alone gives the same probabilities (fp32 rounding aside).
  std::string inputs;
  for (size_t r = 1; r <= 4; ++r) inputs += " '" + preds[r][0] + "'";
  REQUIRE(shell(evax_bin() + " predict --checkpoint '" + run + "/checkpoints/best' --out '" +
                (tmp / "p.csv") + "'" + inputs + " 2>/dev/null") == 0);
  auto p = read_csv(tmp / "p.csv");
  REQUIRE(p.size() == 5);
  CHECK(p[0] == std::vector<std::string>{"path", "Cardiomegaly", "Effusion", "Nodule",
                                         "Pneumothorax", "Consolidation"});
  for (size_t r = 1; r <= 4; ++r) {
    CHECK(p[r][0] == preds[r][0]);
    for (size_t c = 1; c <= 5; ++c) CHECK(std::stod(p[r][c]) == Approx(std::stod(preds[r][c])).margin(1e-6));
  }
  // A folder input finds the images recursively.
  REQUIRE(shell(evax_bin() + " predict --checkpoint '" + run + "' '" + dataset() + "/png' > '" +
                (tmp / "all.csv") + "' 2>/dev/null") == 0);
  CHECK(read_csv(tmp / "all.csv").size() == 73);
}

TEST_CASE("finetune: stop and resume ends bit-identical to an uninterrupted run, best/ included") {
  test::TempDir tmp("ft_resume");
  const std::string cfg = write_config(tmp, "ema: {decay: 0.9}\n"
                                            "eval: {split: val, metric: ema/mauc, batch_size: 16}\n");
  REQUIRE(shell(evax_bin() + " finetune --config '" + cfg + "' --run-dir '" + (tmp / "a") + "' 2>/dev/null") == 0);
  // 3 epochs of 5 steps (38 train images, batch 8): stop mid-epoch 2, then finish.
  REQUIRE(shell(evax_bin() + " finetune --config '" + cfg + "' --run-dir '" + (tmp / "b") +
                "' --max-steps 7 2>/dev/null") == 0);
  REQUIRE(shell(evax_bin() + " finetune --config '" + cfg + "' --run-dir '" + (tmp / "b") +
                "' --resume auto 2>/dev/null") == 0);
  for (const char* f : {"model.safetensors", "trainer.safetensors"}) {
    INFO(f);
    CHECK(test::same_maps(safetensors_load(latest(tmp / "a") + "/" + f),
                          safetensors_load(latest(tmp / "b") + "/" + f)));
  }
  CHECK(test::same_maps(safetensors_load(tmp / "a/checkpoints/best/model.safetensors"),
                        safetensors_load(tmp / "b/checkpoints/best/model.safetensors")));
  CHECK(read_file(tmp / "a/eval/test/predictions.csv") == read_file(tmp / "b/eval/test/predictions.csv"));
}

TEST_CASE("finetune: two gloo ranks equal one rank with the same global batch") {
  test::TempDir tmp("ft_dist");
  const std::string cfg = write_config(tmp, "model: {name: eva_x_tiny_patch16, depth: 1, drop_path: 0}\n");
  REQUIRE(shell(evax_bin() + " finetune --config '" + cfg + "' --run-dir '" + (tmp / "one") +
                "' --set data.loader.batch_size=8 2>/dev/null") == 0);
  REQUIRE(shell(evax_bin() + " launch --nproc 2 -- finetune --config '" + cfg + "' --run-dir '" +
                (tmp / "two") + "' --set data.loader.batch_size=4 --set dist.backend=gloo 2>'" +
                (tmp / "err") + "'") == 0);
  const double d = test::max_abs_diff(safetensors_load(latest(tmp / "one") + "/model.safetensors"),
                                      safetensors_load(latest(tmp / "two") + "/model.safetensors"));
  INFO("max abs parameter difference: " << d);
  CHECK(d <= 1e-5);
  // The gathered evaluation scores every image once, like one rank.
  auto p1 = read_csv(tmp / "one/eval/test/predictions.csv");
  auto p2 = read_csv(tmp / "two/eval/test/predictions.csv");
  REQUIRE(p1.size() == p2.size());
  for (size_t r = 1; r < p1.size(); ++r) {
    CHECK(p1[r][0] == p2[r][0]);
    for (size_t c = 1; c < p1[r].size(); ++c) CHECK(std::stod(p1[r][c]) == Approx(std::stod(p2[r][c])).margin(1e-4));
  }
}

TEST_CASE("finetune: linear probing from a checkpoint trains only the head") {
  test::TempDir tmp("ft_linear");
  const std::string full = write_config(tmp, "train: {epochs: 1, warmup_epochs: 0}\n", "full.yaml");
  REQUIRE(shell(evax_bin() + " finetune --config '" + full + "' --run-dir '" + (tmp / "init") + "' 2>/dev/null") == 0);
  const std::string cfg = write_config(
      tmp, "finetune: {mode: linear}\nmodel: {name: eva_x_tiny_patch16, depth: 1, init: " +
               (tmp / "init") + "}\n", "linear.yaml");
  REQUIRE(shell(evax_bin() + " finetune --config '" + cfg + "' --run-dir '" + (tmp / "lin") + "' 2>/dev/null") == 0);
  CHECK_THAT(read_file(tmp / "lin/log.txt"), Contains("linear probing: computing the frozen features"));
  auto before = safetensors_load(tmp / "init/checkpoints/best/model.safetensors");
  auto after = safetensors_load(latest(tmp / "lin") + "/model.safetensors");
  REQUIRE(before.size() == after.size());
  int heads_changed = 0;
  for (size_t i = 0; i < before.size(); ++i) {
    INFO(before[i].first);
    if (before[i].first.rfind("head.", 0) == 0)
      heads_changed += !torch::equal(before[i].second, after[i].second);
    else
      CHECK(torch::equal(before[i].second, after[i].second));
  }
  CHECK(heads_changed == 2);
}

TEST_CASE("finetune: bad input names the file, the key or the tensors and exits 2 or 3") {
  test::TempDir tmp("ft_bad");
  // Label columns the manifest lacks.
  const std::string cols = write_config(
      tmp, "data:\n  manifest: " + dataset() + "/classification.csv\n  classes: [Cardiomegaly, Hernia, Mass]\n"
           "  img_size: 64\n", "cols.yaml");
  CHECK(shell(evax_bin() + " finetune --config '" + cols + "' --run-dir '" + (tmp / "a") + "' 2>'" + (tmp / "e1") + "'") == 3);
  CHECK_THAT(read_file(tmp / "e1"), Contains("lacks the label column(s) Hernia, Mass"));
  // A checkpoint of another model: the mismatched tensors are listed.
  REQUIRE(shell(evax_bin() + " finetune --config '" + write_config(tmp, "train: {epochs: 1, warmup_epochs: 0}\n", "one.yaml") +
                "' --run-dir '" + (tmp / "tiny1") + "' --max-steps 1 2>/dev/null") == 0);
  const std::string other = write_config(
      tmp, "model: {name: eva_x_small_patch16, depth: 1, init: " + (tmp / "tiny1") + "}\n", "other.yaml");
  CHECK(shell(evax_bin() + " finetune --config '" + other + "' --run-dir '" + (tmp / "b") + "' 2>'" + (tmp / "e2") + "'") == 3);
  CHECK_THAT(read_file(tmp / "e2"), Contains("size mismatch") && Contains("blocks.0.attn.proj.weight"));
  // An empty split.
  const std::string empty = write_config(tmp, "data:\n  folders: {train: " + (tmp / "none") + "}\n", "empty.yaml");
  fs::create_directories(tmp / "none/a");
  fs::create_directories(tmp / "none/b");
  CHECK(shell(evax_bin() + " finetune --config '" + empty + "' --run-dir '" + (tmp / "c") + "' 2>'" + (tmp / "e3") + "'") == 3);
  CHECK_THAT(read_file(tmp / "e3"), Contains(tmp / "none"));
  // An image that does not decode, under the error policy: the file and the reason.
  fs::create_directories(tmp / "bad/train/x");
  fs::create_directories(tmp / "bad/train/y");
  fs::create_directories(tmp / "bad/val/x");
  fs::create_directories(tmp / "bad/val/y");
  for (const char* split : {"train", "val"})
    for (const char* cls : {"x", "y"})
      for (int i = 0; i < 4; ++i)
        fs::copy_file(dataset() + "/png/synth_00000" + std::to_string(i) + ".png",
                      tmp / (std::string("bad/") + split + "/" + cls + "/" + std::to_string(i) + ".png"));
  write_file_atomic(tmp / "bad/train/x/broken.png", "not a png");
  const std::string badimg = write_config(
      tmp, "data:\n  folders: {train: " + (tmp / "bad/train") + ", val: " + (tmp / "bad/val") +
               "}\n  task: multiclass\n  img_size: 64\n  loader: {batch_size: 3, workers: 1}\n", "badimg.yaml");
  CHECK(shell(evax_bin() + " finetune --config '" + badimg + "' --run-dir '" + (tmp / "d") + "' 2>'" + (tmp / "e4") + "'") == 3);
  CHECK_THAT(read_file(tmp / "e4"), Contains("broken.png"));
  // An unknown key is a config error naming its path.
  CHECK(shell(evax_bin() + " finetune --config '" + write_config(tmp, "finetune: {mode: full, layer_decy: 0.5}\n", "typo.yaml") +
              "' --run-dir '" + (tmp / "e") + "' 2>'" + (tmp / "e5") + "'") == 2);
  CHECK_THAT(read_file(tmp / "e5"), Contains("finetune.layer_decy"));
}

TEST_CASE("finetune: evax embed writes logits for a finetuned checkpoint, equal to predict's") {
  test::TempDir tmp("ft_embed");
  const std::string cfg = write_config(
      tmp, "model: {name: eva_x_tiny_patch16, drop_path: 0}\n"
           "data:\n  manifest: " + dataset() + "/classification.csv\n"
           "  classes: [Cardiomegaly, Effusion, Nodule, Pneumothorax, Consolidation]\n"
           "  img_size: 64\n  crop_pct: 0.875\n  loader: {batch_size: 8, workers: 1}\n");
  REQUIRE(shell(evax_bin() + " finetune --config '" + cfg + "' --run-dir '" + (tmp / "run") +
                "' --max-steps 1 2>/dev/null") == 0);
  const std::string ck = latest(tmp / "run");
  const std::string img = dataset() + "/png/synth_000003.png";
  REQUIRE(shell(evax_bin() + " embed --model eva_x_tiny_patch16 --checkpoint '" + ck +
                "/model.safetensors' --image-size 64 --input '" + img + "' --out '" +
                (tmp / "e.safetensors") + "' 2>/dev/null") == 0);
  TensorMap e = safetensors_load(tmp / "e.safetensors");
  const at::Tensor* logits = find(e, "logits");
  REQUIRE(logits != nullptr);
  REQUIRE(logits->sizes() == torch::IntArrayRef({1, 5}));
  REQUIRE(shell(evax_bin() + " predict --checkpoint '" + ck + "' --out '" + (tmp / "p.csv") + "' '" + img +
                "' 2>/dev/null") == 0);
  auto p = read_csv(tmp / "p.csv");
  REQUIRE(p.size() == 2);
  for (int c = 0; c < 5; ++c)
    CHECK(std::stod(p[1][static_cast<size_t>(c) + 1]) ==
          Approx(torch::sigmoid((*logits)[0][c]).item<double>()).margin(1e-6));
}

TEST_CASE("finetune: multi-class AUC scores are softmax probabilities or EVA-X's per-logit sigmoid") {
  test::TempDir tmp("ft_mc_scores");
  // Three classes as folders (the ImageFolder convention), four images each per split.
  int k = 0;
  for (const char* split : {"train", "val", "test"})
    for (const char* cls : {"x", "y", "z"})
      for (int i = 0; i < 4; ++i, ++k) {
        fs::create_directories(tmp / (std::string("mc/") + split + "/" + cls));
        char name[32];
        std::snprintf(name, sizeof name, "/png/synth_%06d.png", k % 72);
        fs::copy_file(dataset() + name, tmp / (std::string("mc/") + split + "/" + cls + "/" +
                                                std::to_string(i) + ".png"));
      }
  const std::string cfg = write_config(
      tmp, "data:\n  folders: {train: " + (tmp / "mc/train") + ", val: " + (tmp / "mc/val") +
               ", test: " + (tmp / "mc/test") + "}\n  task: multiclass\n  img_size: 64\n"
               "  crop_pct: 1.0\n  loader: {batch_size: 4, workers: 1}\n");
  REQUIRE(shell(evax_bin() + " finetune --config '" + cfg + "' --run-dir '" + (tmp / "run") +
                "' --max-steps 2 2>/dev/null") == 0);
  const std::string ck = latest(tmp / "run");
  for (const char* s : {"softmax", "sigmoid"})
    REQUIRE(shell(evax_bin() + " evaluate --config '" + cfg + "' --checkpoint '" + ck +
                  "' --split test --set eval.auc_scores=" + s + " --out '" + (tmp / s) +
                  "' --run-dir '" + (tmp / (std::string("r") + s)) + "' 2>/dev/null") == 0);
  auto soft = read_csv(tmp / "softmax/predictions.csv"), sig = read_csv(tmp / "sigmoid/predictions.csv");
  REQUIRE(soft.size() == 13);
  REQUIRE(sig.size() == 13);
  for (size_t r = 1; r < soft.size(); ++r) {
    REQUIRE(soft[r][0] == sig[r][0]);
    double sum = 0;
    for (size_t c = 1; c <= 3; ++c) sum += std::stod(soft[r][c]);
    CHECK(sum == Approx(1.0).margin(1e-5));
    // Same logits: logit(sigmoid_i) - logit(sigmoid_j) = l_i - l_j = log(softmax_i / softmax_j).
    auto logit = [](double p) { return std::log(p / (1 - p)); };
    for (size_t c = 2; c <= 3; ++c)
      CHECK(logit(std::stod(sig[r][c])) - logit(std::stod(sig[r][1])) ==
            Approx(std::log(std::stod(soft[r][c]) / std::stod(soft[r][1]))).margin(1e-4));
  }
  auto ms = test::read_json(tmp / "softmax/metrics.json"), mg = test::read_json(tmp / "sigmoid/metrics.json");
  CHECK(ms["accuracy"] == mg["accuracy"]);  // argmax is the same either way
  // Each metrics.json's AUCs are those of its own predictions (evax metrics equals sklearn).
  for (const char* s : {"softmax", "sigmoid"}) {
    REQUIRE(shell(evax_bin() + " metrics --task multiclass --pred '" + (tmp / s) + "/predictions.csv' --target '" +
                  (tmp / s) + "/targets.csv' --out '" + (tmp / s) + "/m.json' 2>/dev/null") == 0);
    CHECK(test::read_json(tmp / s + "/m.json")["auc"] == test::read_json(tmp / s + "/metrics.json")["auc"]);
  }
  // Anything else is a config error naming the key.
  CHECK(shell(evax_bin() + " evaluate --config '" + cfg + "' --checkpoint '" + ck +
              "' --set eval.auc_scores=probit --out '" + (tmp / "bad") + "' 2>'" + (tmp / "err") + "'") == 2);
  CHECK_THAT(read_file(tmp / "err"), Contains("eval.auc_scores"));
}

TEST_CASE("finetune: CheXpert-style fake epochs train on the chunks, evaluation still reads every row") {
  test::TempDir tmp("ft_chunks");
  // 4 chunks, the first 2 drawn from, rows permuted as numpy's RandomState(123) (the CheXpert
  // configs' settings, scaled down); evaluation and the test scoring must see every row once.
  const std::string cfg = write_config(
      tmp, "train: {epochs: 2, warmup_epochs: 0, schedule: fixed, log_every: 1}\n"
           "data:\n"
           "  manifest: " + dataset() + "/classification.csv\n"
           "  classes: [Cardiomegaly, Effusion, Nodule, Pneumothorax, Consolidation]\n"
           "  img_size: 64\n"
           "  crop_pct: 1.0\n"
           "  augment: {rand_augment: \"\"}\n"
           "  loader: {batch_size: 4, workers: 1, row_permutation_seed: 123, chunks: 4, chunks_used: 2}\n");
  const std::string run = tmp / "run";
  REQUIRE(shell(evax_bin() + " finetune --config '" + cfg + "' --run-dir '" + run + "' 2>'" +
                (tmp / "err") + "'") == 0);
  const auto m = test::read_json(run + "/eval/test/metrics.json");
  const auto preds = read_csv(run + "/eval/test/predictions.csv");
  size_t test_rows = 0;
  for (const auto& r : read_csv(dataset() + "/classification.csv"))
    test_rows += std::find(r.begin(), r.end(), "test") != r.end();
  CHECK(preds.size() == test_rows + 1);  // header + every test row once
  CHECK(m.contains("mauc"));
}
