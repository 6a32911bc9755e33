// End-to-end pretraining runs of the evax binary on a small synthetic set: the loss falls, a
// SIGKILLed run resumes bit-identically, an injected NaN rolls back (on one rank and on two),
// two ranks equal one, and resuming a checkpoint of another run is refused.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "evax/core/files.h"
#include "evax/io/safetensors.h"
#include "distributed/dist_test_util.h"
#include "cli_util.h"
#include "tensor_util.h"
#include "test_util.h"

using namespace evax;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;
using test::evax_bin;
using test::max_abs_diff;
using test::shell;

namespace {

// A tiny synthetic dataset shared by the tests.
std::string dataset() {
  return test::synth_dataset("pretrain_synth", "--n 48 --size 96 --seed 3 --no-dicom --threads 1");
}

// The base config; a top-level key of `extra` (e.g. a `train:` line) replaces the base's entry of
// that key as a whole (configs reject a key given twice).
std::string write_config(const test::TempDir& tmp, const std::string& extra = "") {
  const std::vector<std::pair<std::string, std::string>> base = {
      {"model", "model: {name: eva_x_tiny_patch16, depth: 2}\n"},
      {"target", "target: {kind: pixels}\n"},
      {"data", "data:\n"
               "  manifest: " + dataset() + "/pretrain.csv\n"
               "  split: all\n"
               "  views: {student_size: 96, teacher_size: 96}\n"
               "  loader: {batch_size: 8, workers: 2}\n"},
      {"masking", "masking: {kind: uniform, ratio: 0.5}\n"},
      {"optimizer", "optimizer: {lr: 3.0e-3, min_lr: 1.0e-4, weight_decay: 0.05}\n"},
      {"train", "train: {epochs: 4, warmup_epochs: 0.5, log_every: 2}\n"},
      {"seed", "seed: 7\n"},
      {"threads", "threads: 1\n"}};
  return test::write_config_file(tmp / "cfg.yaml", base, extra);
}

TensorMap final_weights(const std::string& run_dir) {
  std::vector<fs::path> dirs;
  for (auto& e : fs::directory_iterator(run_dir + "/checkpoints")) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  REQUIRE(!dirs.empty());
  return safetensors_load(dirs.back().string() + "/model.safetensors");
}

}  // namespace

TEST_CASE("pretraining on synthetic data: the masked cosine loss falls, logs and checkpoints are written") {
  test::TempDir tmp("pt_loss");
  const std::string cfg = write_config(tmp);
  REQUIRE(shell(evax_bin() + " pretrain --config '" + cfg + "' --run-dir '" + (tmp / "run") + "' 2>'" +
                (tmp / "err") + "'") == 0);
  const std::string log = read_file(tmp / "run/log.txt");
  INFO(log);
  // metrics.csv: first and last logged loss.
  std::ifstream csv(tmp / "run/metrics.csv");
  std::string header, line, first, last;
  std::getline(csv, header);
  CHECK_THAT(header, Contains("loss") && Contains("lr") && Contains("grad_norm") &&
                         Contains("mask_ratio") && Contains("images_per_s"));
  std::getline(csv, first);
  last = first;
  while (std::getline(csv, line)) last = line;
  auto col = [&](const std::string& row, const std::string& name) {
    std::vector<std::string> h, v;
    std::stringstream hs(header), vs(row);
    std::string x;
    while (std::getline(hs, x, ',')) h.push_back(x);
    while (std::getline(vs, x, ',')) v.push_back(x);
    for (size_t i = 0; i < h.size(); ++i)
      if (h[i] == name) return std::stod(v.at(i));
    FAIL("no column " << name);
    return 0.0;
  };
  const double l0 = col(first, "loss"), l1 = col(last, "loss");
  INFO("loss " << l0 << " -> " << l1);
  CHECK(l1 < l0 - 0.05);
  CHECK(col(last, "mask_ratio") == Approx(0.5).epsilon(0.05));
  CHECK(fs::exists(tmp / "run/config.yaml"));
  bool tb = false;
  for (auto& e : fs::directory_iterator(tmp / "run/tensorboard"))
    tb |= e.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  CHECK(tb);
  // The student checkpoint uses EVA-02 names, so the released-checkpoint loaders accept it.
  auto w = final_weights(tmp / "run");
  CHECK(contains(w, "mask_token"));
  CHECK(contains(w, "lm_head.weight"));
  CHECK(contains(w, "blocks.0.mlp.w12.weight"));
  // A second run into the same directory without --resume is refused.
  CHECK(shell(evax_bin() + " pretrain --config '" + cfg + "' --run-dir '" + (tmp / "run") + "' 2>/dev/null") == 2);
}

TEST_CASE("a run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run") {
  test::TempDir tmp("pt_resume");
  const std::string cfg = write_config(tmp, "train: {epochs: 5, checkpoint_every: 3, log_every: 1}\n");
  REQUIRE(shell(evax_bin() + " pretrain --config '" + cfg + "' --run-dir '" + (tmp / "a") + "' 2>/dev/null") == 0);

  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::string out = tmp / "b.log";
    freopen(out.c_str(), "w", stderr);
    execl(evax_bin().c_str(), evax_bin().c_str(), "pretrain", "--config", cfg.c_str(), "--run-dir",
          (tmp / "b").c_str(), nullptr);
    _exit(127);
  }
  // Kill it once the step-3 checkpoint exists and training went on past it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  bool seen = false;
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(tmp / "b/checkpoints/step-00000003/meta.json")) {
      seen = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  int st = 0;
  waitpid(pid, &st, 0);
  REQUIRE(seen);
  REQUIRE(WIFSIGNALED(st));  // killed mid-run (30 steps in all), not finished
  REQUIRE(shell(evax_bin() + " pretrain --config '" + cfg + "' --run-dir '" + (tmp / "b") +
                "' --resume auto 2>'" + (tmp / "resume.log") + "'") == 0);
  CHECK_THAT(read_file(tmp / "b/log.txt"), Contains("resumed from"));
  CHECK(max_abs_diff(final_weights(tmp / "a"), final_weights(tmp / "b")) == 0.0);
}

TEST_CASE("an injected NaN rolls back to the last checkpoint, skips the batch and finishes") {
  test::TempDir tmp("pt_nan");
  const std::string cfg = write_config(tmp, "train: {epochs: 1, inject_nan_step: 2, log_every: 1}\n");
  REQUIRE(shell(evax_bin() + " pretrain --config '" + cfg + "' --run-dir '" + (tmp / "run") + "' 2>/dev/null") == 0);
  const std::string log = read_file(tmp / "run/log.txt");
  CHECK_THAT(log, Contains("non-finite loss at step 2") && Contains("1 NaN rollbacks"));
  for (const auto& kv : final_weights(tmp / "run")) CHECK(torch::isfinite(kv.second).all().item<bool>());
  // More NaNs than allowed stop the run with a clear error.
  const std::string cfg2 = write_config(tmp, "train: {epochs: 1, inject_nan_step: 1, max_nan_rollbacks: 0}\n");
  CHECK(shell(evax_bin() + " pretrain --config '" + cfg2 + "' --run-dir '" + (tmp / "run2") + "' 2>'" +
              (tmp / "err") + "'") == 3);
  CHECK_THAT(read_file(tmp / "err"), Contains("NaN/Inf"));
}

TEST_CASE("two CPU ranks give the same parameters as one rank with the same global batch") {
  test::TempDir tmp("pt_dist");
  const std::string one = write_config(tmp, "train: {epochs: 1}\n");
  REQUIRE(shell(evax_bin() + " pretrain --config '" + one + "' --run-dir '" + (tmp / "one") +
                "' --max-steps 5 --set data.loader.batch_size=8 2>/dev/null") == 0);
  for (const std::string backend : {"gloo", "store"}) {
    INFO("backend " << backend);
    const std::string run = tmp / backend;
    REQUIRE(shell(evax_bin() + " launch --nproc 2 -- pretrain --config '" + one + "' --run-dir '" + run +
                  "' --max-steps 5 --set data.loader.batch_size=4 --set dist.backend=" + backend +
                  " 2>'" + (tmp / "err") + "'") == 0);
    std::ifstream log(run + "/log.txt");
    const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
    CHECK_THAT(text, Catch::Matchers::Contains("backend " + backend));
    const double d = max_abs_diff(final_weights(tmp / "one"), final_weights(run));
    INFO("max abs parameter difference after 5 steps: " << d);
    CHECK(d <= 1e-5);
  }
}

TEST_CASE("bf16 autocast end to end (bf16_cpu: the CUDA code path, run on the CPU)") {
  test::TempDir tmp("pt_bf16");
  const std::string cfg = write_config(tmp, "bf16_cpu: true\n");
  REQUIRE(shell(evax_bin() + " pretrain --config '" + cfg + "' --run-dir '" + (tmp / "run") +
                "' --max-steps 4 2>/dev/null") == 0);
  const std::string log = read_file(tmp / "run/log.txt");
  CHECK_THAT(log, Contains("device cpu, bf16 autocast"));
  std::ifstream csv(tmp / "run/metrics.csv");
  std::string header, row;
  std::getline(csv, header);
  int rows = 0;
  while (std::getline(csv, row)) {
    ++rows;
    CHECK_THAT(row, !Contains("nan") && !Contains("inf"));
  }
  CHECK(rows == 2);  // log_every 2, 4 steps
}

TEST_CASE("a rank killed mid-run (no launcher) makes the survivor exit non-zero at once") {
  test::TempDir tmp("pt_dead_rank");
  const std::string cfg = write_config(
      tmp, "train: {epochs: 100, log_every: 1}\ndist: {backend: gloo, timeout_s: 300}\n");
  const int port = test::free_port();
  pid_t pids[2];
  for (int r = 0; r < 2; ++r) {
    pids[r] = fork();
    REQUIRE(pids[r] >= 0);
    if (pids[r] == 0) {  // torchrun's variables, as `torchrun --no-python` or srun would set
      const std::string rank = std::to_string(r), p = std::to_string(port);
      setenv("RANK", rank.c_str(), 1);
      setenv("LOCAL_RANK", rank.c_str(), 1);
      setenv("WORLD_SIZE", "2", 1);
      setenv("LOCAL_WORLD_SIZE", "2", 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", p.c_str(), 1);
      const std::string err = tmp / ("rank" + rank + ".err");
      freopen(err.c_str(), "w", stderr);
      execl(evax_bin().c_str(), evax_bin().c_str(), "pretrain", "--config", cfg.c_str(), "--run-dir",
            (tmp / "run").c_str(), nullptr);
      _exit(127);
    }
  }
  // Let both train a few steps (rank 0 logs every step), then kill rank 1 without warning.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  int rows = 0;
  while (std::chrono::steady_clock::now() < deadline && rows < 4) {
    std::ifstream csv(tmp / "run/metrics.csv");
    std::string line;
    rows = -1;
    while (std::getline(csv, line)) ++rows;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill(pids[1], SIGKILL);
  const auto t0 = std::chrono::steady_clock::now();
  int st = 0;
  waitpid(pids[1], &st, 0);
  // Rank 0 must notice within seconds, far below the 300 s collective timeout.
  bool exited = false;
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60)) {
    if (waitpid(pids[0], &st, WNOHANG) == pids[0]) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!exited) {
    kill(pids[0], SIGKILL);
    waitpid(pids[0], &st, 0);
  }
  REQUIRE(rows >= 4);
  INFO("rank 0 exited " << secs << " s after rank 1 was killed: " << read_file(tmp / "rank0.err"));
  REQUIRE(exited);
  CHECK(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 4);  // DistError: a peer failure (exit code 4)
  CHECK(secs < 30);
  CHECK_THAT(read_file(tmp / "rank0.err"), Contains("gloo") && Contains("failed"));
}

TEST_CASE("gradient accumulation: 2 micro-batches of 4 equal one batch of 8") {
  test::TempDir tmp("pt_accum");
  const std::string cfg = write_config(tmp, "train: {epochs: 1}\n");
  REQUIRE(shell(evax_bin() + " pretrain --config '" + cfg + "' --run-dir '" + (tmp / "one") +
                "' --max-steps 3 --set data.loader.batch_size=8 2>/dev/null") == 0);
  REQUIRE(shell(evax_bin() + " pretrain --config '" + cfg + "' --run-dir '" + (tmp / "acc") +
                "' --max-steps 3 --set data.loader.batch_size=4 --set train.accum_steps=2 2>/dev/null") == 0);
  const double d = max_abs_diff(final_weights(tmp / "one"), final_weights(tmp / "acc"));
  INFO("max abs parameter difference after 3 steps: " << d);
  CHECK(d <= 1e-5);
  // And accumulation is not a no-op: a single micro-batch of 4 differs.
  REQUIRE(shell(evax_bin() + " pretrain --config '" + cfg + "' --run-dir '" + (tmp / "half") +
                "' --max-steps 3 --set data.loader.batch_size=4 2>/dev/null") == 0);
  CHECK(max_abs_diff(final_weights(tmp / "one"), final_weights(tmp / "half")) > 1e-4);
}

TEST_CASE("a NaN with two gloo ranks rolls both back and ends as one rank with the same NaN") {
  test::TempDir tmp("pt_dist_nan");
  // 48 images, global batch 8: 6 steps an epoch. Checkpoint at step 2 (and 4); step 3's loss is
  // NaN, so the run returns to step-2 on every rank and skips that batch.
  const std::string cfg = write_config(
      tmp, "train: {epochs: 1, checkpoint_every: 2, inject_nan_step: 3, log_every: 1}\n");
  REQUIRE(shell(evax_bin() + " pretrain --config '" + cfg + "' --run-dir '" + (tmp / "one") +
                "' --max-steps 5 --set data.loader.batch_size=8 2>/dev/null") == 0);
  const int rc = shell(evax_bin() + " launch --nproc 2 -- pretrain --config '" + cfg + "' --run-dir '" +
                       (tmp / "two") + "' --max-steps 5 --set data.loader.batch_size=4" +
                       " --set dist.backend=gloo 2>'" + (tmp / "err") + "'");
  INFO(read_file(tmp / "err"));
  REQUIRE(rc == 0);
  for (const char* run : {"one", "two"}) {
    INFO(run);
    const std::string log = read_file(tmp / (std::string(run) + "/log.txt"));
    CHECK_THAT(log, Contains("non-finite loss at step 3") && Contains("step-00000002") &&
                        Contains("5 steps") && Contains("1 NaN rollbacks"));
  }
  // Same data, same rollback; not bit-identical because one rank averages the gradient over 8
  // images at once while two ranks average 4 each and then the two means (fp32 rounding).
  const double d = max_abs_diff(final_weights(tmp / "one"), final_weights(tmp / "two"));
  INFO("max abs parameter difference after 5 steps: " << d);
  CHECK(d <= 1e-5);
}

TEST_CASE("resuming with another batch, world size, schedule or model is refused by name") {
  test::TempDir tmp("pt_resume_check");
  const std::string cfg = write_config(tmp, "train: {epochs: 2}\n");
  const std::string run = tmp / "run";
  REQUIRE(shell(evax_bin() + " pretrain --config '" + cfg + "' --run-dir '" + run +
                "' --max-steps 2 2>/dev/null") == 0);
  auto resume = [&](const std::string& args, const std::string& prefix = "") {
    const int rc = shell(evax_bin() + " " + prefix + "pretrain --config '" + cfg + "' --run-dir '" + run +
                         "' --resume auto " + args + " 2>'" + (tmp / "err") + "'");
    const std::string err = read_file(tmp / "err");
    INFO(err);
    CHECK(rc == 2);
    CHECK_THAT(err, Contains("cannot resume from") && Contains("step-00000002"));
    return err;
  };
  // Every differing field is listed (one process per case keeps the test short).
  CHECK_THAT(resume("--set data.loader.batch_size=4 --set train.accum_steps=2 --set train.epochs=3"),
             Contains("batch_size: checkpoint 8, now 4") &&
                 Contains("micro_batches_per_epoch: checkpoint 6, now 12") &&
                 Contains("accum_steps: checkpoint 1, now 2") &&
                 Contains("total_steps: checkpoint 12, now 18"));
  CHECK_THAT(resume("--set model.name=eva_x_small_patch16 --set model.depth=3"),
             Contains("model: checkpoint \"eva_x_tiny_patch16\", now \"eva_x_small_patch16\"") &&
                 Contains("depth: checkpoint 2, now 3") && !Contains("batch_size"));
  CHECK_THAT(resume("--set data.loader.batch_size=4", "launch --nproc 2 -- "),
             Contains("world_size: checkpoint 1, now 2"));
  // Nothing was touched: the same settings resume and finish.
  REQUIRE(shell(evax_bin() + " pretrain --config '" + cfg + "' --run-dir '" + run +
                "' --resume auto --max-steps 3 2>/dev/null") == 0);
  CHECK_THAT(read_file(run + "/log.txt"), Contains("resumed from"));
}
