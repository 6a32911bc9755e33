// The shared trainer on a toy task (linear regression, data fixed by sample index): NaN rollback
// across ranks, the resume identity check, and the generator states in checkpoints. Ranks run as
// threads over a HashStore (StoreComm), so these tests need no network and take well under a second.
#include <catch2/catch.hpp>

#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "distributed/dist_test_util.h"
#include "evax/core/error.h"
#include "evax/distributed/comm.h"
#include "evax/io/safetensors.h"
#include "evax/train/run_checkpoint.h"
#include "evax/train/trainer.h"
#include "tensor_util.h"
#include "test_util.h"

using namespace evax;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;
using test::max_abs_diff;

namespace {

struct ToyOptions {
  int64_t batch = 4;       // per rank
  int64_t samples = 32;    // dataset size
  std::string model = "linear4";
  int rank = 0, world = 1;
};

// y = x·w* + 0.1 noise, x ~ N(0, 1)^4; sample i is drawn from its own generator, the epoch order
// is a fixed permutation of the epoch, and global batch k is split across ranks in rank order,
// so one rank with batch 2B sees exactly what two ranks with batch B see together.
class ToyTask : public Task {
 public:
  explicit ToyTask(ToyOptions o) : o_(std::move(o)) {
    at::Generator g = at::detail::createCPUGenerator(11);
    w_ = at::randn({4}, g).requires_grad_(true);
    b_ = torch::zeros({1}).requires_grad_(true);
  }
  std::vector<NamedParam> trainable() override { return {{"w", w_}, {"b", b_}}; }
  int64_t micro_batches_per_epoch() override { return o_.samples / (o_.batch * o_.world); }
  void start_epoch(int64_t epoch, int64_t skip) override { epoch_ = epoch, next_ = skip; }
  MicroStep forward_micro() override {
    std::vector<torch::Tensor> xs, ys;
    for (int64_t j = 0; j < o_.batch; ++j) {
      const int64_t pos = next_ * o_.batch * o_.world + o_.rank * o_.batch + j;
      const int64_t i = (pos * 7 + epoch_ * 3) % o_.samples;  // 7 is coprime to 32
      at::Generator g = at::detail::createCPUGenerator(1000 + static_cast<uint64_t>(i));
      auto x = at::randn({4}, g);
      xs.push_back(x);
      ys.push_back((x * torch::tensor({0.5f, -1.0f, 2.0f, 0.25f})).sum() + 0.1 * at::randn({}, g));
    }
    ++next_;
    auto x = torch::stack(xs), y = torch::stack(ys);
    MicroStep ms;
    ms.loss = torch::mse_loss(x.matmul(w_) + b_, y);
    ms.samples = o_.batch;
    return ms;
  }
  TensorMap model_state() override {
    return {{"w", w_.detach().clone()}, {"b", b_.detach().clone()}};
  }
  void load_model_state(const TensorMap& s) override {
    torch::NoGradGuard ng;
    w_.copy_(*find(s, "w"));  // (ranks are threads: no Catch assertions here)
    b_.copy_(*find(s, "b"));
  }
  nlohmann::json run_identity() override {
    return {{"model", o_.model}, {"batch_size", o_.batch}};
  }

 private:
  ToyOptions o_;
  torch::Tensor w_, b_;
  int64_t epoch_ = 0, next_ = 0;
};

AdamWOptions adamw() { return AdamWOptions().lr(0.05).min_lr(0.001).clip_grad(0); }

TrainerOptions trainer(int64_t epochs = 2) {
  return TrainerOptions().epochs(epochs).log_every(1).keep_last(10);
}

TensorMap final_model(const std::string& run_dir) {
  auto latest = run_checkpoint_find_latest(run_dir + "/checkpoints");
  REQUIRE(latest);
  return safetensors_load(*latest + "/model.safetensors");
}

// Runs `world` ranks as threads; per-rank trainer options come from `opts(rank)`.
std::vector<FitResult> fit_ranks(int world, int64_t batch, const std::string& run_dir,
                                 const std::function<TrainerOptions(int)>& opts,
                                 const std::string& model = "linear4") {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<FitResult> results(world);
  test::run_ranks(world, [&](int r) {
    StoreComm comm(store, r, world, 20);
    ToyOptions to;
    to.batch = batch, to.rank = r, to.world = world, to.model = model;
    ToyTask task(to);
    results[r] = trainer_fit(task, adamw(), opts(r), RunContext{run_dir, "toy: 1\n", &comm});
  });
  return results;
}

FitResult fit_one(int64_t batch, const std::string& run_dir, const TrainerOptions& o,
                  const std::string& model = "linear4") {
  ToyOptions to;
  to.batch = batch, to.model = model;
  ToyTask task(to);
  return trainer_fit(task, adamw(), o, RunContext{run_dir, "toy: 1\n", nullptr});
}

}  // namespace

TEST_CASE("trainer: a NaN loss on one rank rolls every rank back to the same checkpoint") {
  test::TempDir tmp("trainer_nan");
  // 32 samples, global batch 8: 4 steps per epoch, 8 in all. Checkpoints at steps 2, 4 and 6;
  // step 3's loss is NaN (on rank 1 only), so every rank goes back to step-2 and skips batch 3.
  auto opts = [](int rank) {
    return trainer().checkpoint_every(2).inject_nan_step(rank == 1 ? 3 : -1);
  };
  auto two = fit_ranks(2, 4, tmp / "two", opts);
  for (const auto& r : two) {
    CHECK(r.nan_rollbacks == 1);
    CHECK(r.steps == 8);
    CHECK(r.last_checkpoint == two[0].last_checkpoint);  // every rank knows the checkpoint
  }
  CHECK(fs::path(two[1].last_checkpoint).filename() == "step-00000008");
  auto one = fit_one(8, tmp / "one", trainer().checkpoint_every(2).inject_nan_step(3));
  CHECK(one.nan_rollbacks == 1);
  CHECK(one.steps == 8);
  // Same data and the same rollback; only the gradient summation order differs (one mean over 8
  // samples vs the mean of two 4-sample means), hence fp32 rounding, not bit identity.
  const double d = max_abs_diff(final_model(tmp / "one"), final_model(tmp / "two"));
  INFO("max abs difference: " << d);
  CHECK(d <= 1e-6);
  // And the rollback mattered: a run without the NaN ends elsewhere.
  fit_one(8, tmp / "clean", trainer());
  CHECK(max_abs_diff(final_model(tmp / "one"), final_model(tmp / "clean")) > 1e-3);
  // Rolling back on every rank also works to the checkpoint a run was resumed from.
  fit_ranks(2, 4, tmp / "resumed", [](int) { return trainer().max_steps(2); });
  auto resumed = fit_ranks(2, 4, tmp / "resumed", [](int rank) {
    return trainer().resume("auto").inject_nan_step(rank == 0 ? 3 : -1);
  });
  for (const auto& r : resumed) CHECK(r.nan_rollbacks == 1);
}

TEST_CASE("trainer: resume refuses a checkpoint of another run and names each differing field") {
  test::TempDir tmp("trainer_resume");
  const std::string run = tmp / "run";
  fit_one(4, run, trainer().max_steps(3));
  REQUIRE(run_checkpoint_find_latest(run + "/checkpoints"));
  auto refused = [&](const std::function<void()>& f) {
    try {
      f();
    } catch (const ConfigError& e) {
      CHECK_THAT(e.what(), Contains("cannot resume from") && Contains("step-00000003"));
      return std::string(e.what());
    }
    FAIL("resumed without an error");
    return std::string();
  };
  CHECK_THAT(refused([&] { fit_one(2, run, trainer().resume("auto")); }),
             Contains("batch_size: checkpoint 4, now 2") &&
                 Contains("micro_batches_per_epoch: checkpoint 8, now 16") &&
                 Contains("total_steps: checkpoint 16, now 32"));
  CHECK_THAT(refused([&] { fit_one(4, run, trainer().resume("auto").accum_steps(2)); }),
             Contains("accum_steps: checkpoint 1, now 2") &&
                 Contains("total_steps: checkpoint 16, now 8") && !Contains("batch_size"));
  CHECK_THAT(refused([&] { fit_one(4, run, trainer(3).resume("auto")); }),
             Contains("total_steps: checkpoint 16, now 24") && !Contains("accum_steps"));
  CHECK_THAT(refused([&] { fit_one(4, run, trainer().resume("auto"), "linear4b"); }),
             Contains("model: checkpoint \"linear4\", now \"linear4b\""));
  // Two ranks with half the batch each: the same global batch, still another run.
  CHECK_THAT(refused([&] { fit_ranks(2, 2, run, [](int) { return trainer().resume("auto"); }); }),
             Contains("world_size: checkpoint 1, now 2") && Contains("batch_size: checkpoint 4, now 2"));
  // The refusals changed nothing: the real resume ends bit-identical to an uninterrupted run.
  auto r = fit_one(4, run, trainer().resume("auto"));
  CHECK(r.steps == 16);
  fit_one(4, tmp / "straight", trainer());
  CHECK(max_abs_diff(final_model(run), final_model(tmp / "straight")) == 0.0);
}

TEST_CASE("trainer: checkpoints hold the CPU generator and, with CUDA, every CUDA generator") {
  test::TempDir tmp("trainer_rng");
  const int devices = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  auto cuda_state = [](int i) {
    at::Generator g = at::globalContext().defaultGenerator(
        at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i)));
    return g.get_state();
  };
  auto cpu_state = [] { return at::detail::getDefaultCPUGenerator().get_state(); };
  torch::manual_seed(123);
  if (devices > 0) torch::cuda::manual_seed_all(456);
  const auto cpu0 = cpu_state();
  std::vector<torch::Tensor> cuda0;
  for (int i = 0; i < devices; ++i) cuda0.push_back(cuda_state(i));
  fit_one(4, tmp / "run", trainer().max_steps(2));  // the toy task draws no random numbers
  TensorMap st = safetensors_load(*run_checkpoint_find_latest(tmp / "run/checkpoints") +
                                  "/trainer.safetensors");
  REQUIRE(contains(st, "rng.torch_cpu"));
  CHECK(torch::equal(*find(st, "rng.torch_cpu"), cpu0));
  int saved = 0;
  for (const auto& kv : st) saved += kv.first.rfind("rng.torch_cuda.", 0) == 0;
  CHECK(saved == devices);
  // Resuming restores them.
  torch::manual_seed(999);
  if (devices > 0) torch::cuda::manual_seed_all(999);
  fit_one(4, tmp / "run", trainer().max_steps(3).resume("auto"));
  CHECK(torch::equal(cpu_state(), cpu0));
  for (int i = 0; i < devices; ++i) {
    INFO("cuda:" << i);
    CHECK(torch::equal(cuda_state(i), cuda0[i]));
  }
}

namespace {

using LogFn = std::function<std::map<std::string, double>(int rank, int64_t position)>;

// ToyTask with per-rank logs (a function of the rank and the data position) and a buffer that
// starts different on every rank.
class LogTask : public ToyTask {
 public:
  LogTask(ToyOptions o, LogFn logs)
      : ToyTask(o), rank_(o.rank), logs_(std::move(logs)), buf_(torch::full({3}, 1.0 + o.rank)) {}
  void start_epoch(int64_t epoch, int64_t skip) override {
    ToyTask::start_epoch(epoch, skip);
    pos_ = epoch * micro_batches_per_epoch() + skip;
  }
  MicroStep forward_micro() override {
    MicroStep ms = ToyTask::forward_micro();
    ms.logs = logs_(rank_, pos_++);
    return ms;
  }
  std::vector<torch::Tensor> buffers() override { return {buf_}; }
  torch::Tensor buffer() const { return buf_; }

 private:
  int rank_;
  LogFn logs_;
  torch::Tensor buf_;
  int64_t pos_ = 0;
};

// Runs `world` LogTask ranks as threads; returns each rank's buffer after the run.
std::vector<torch::Tensor> fit_log_ranks(int world, const std::string& run_dir,
                                         const TrainerOptions& o, const LogFn& logs) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<torch::Tensor> bufs(world);
  test::run_ranks(world, [&](int r) {
    StoreComm comm(store, r, world, 20);
    ToyOptions to;
    to.rank = r, to.world = world;
    LogTask task(to, logs);
    trainer_fit(task, adamw(), o, RunContext{run_dir, "toy: 1\n", world > 1 ? &comm : nullptr});
    bufs[r] = task.buffer();
  });
  return bufs;
}

// metrics.csv as rows of cells, the header first.
std::vector<std::vector<std::string>> read_csv(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::vector<std::string>> rows;
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> cells;
    size_t start = 0;
    for (size_t p; (p = line.find(',', start)) != std::string::npos; start = p + 1)
      cells.push_back(line.substr(start, p - start));
    cells.push_back(line.substr(start));
    rows.push_back(cells);
  }
  return rows;
}

size_t column(const std::vector<std::string>& header, const std::string& name) {
  auto it = std::find(header.begin(), header.end(), name);
  REQUIRE(it != header.end());
  return static_cast<size_t>(it - header.begin());
}

}  // namespace

TEST_CASE("trainer: task logs are averaged over ranks before rank 0 logs them") {
  test::TempDir tmp("trainer_logs");
  fit_log_ranks(2, tmp / "run", trainer(1), [](int rank, int64_t pos) {
    return std::map<std::string, double>{{"per_rank", rank == 0 ? 1.0 : 4.0},
                                         {"pos_rank", 10.0 * pos + rank}};
  });
  auto rows = read_csv(tmp / "run/metrics.csv");
  REQUIRE(rows.size() == 5);  // header + 4 steps
  const size_t a = column(rows[0], "per_rank"), b = column(rows[0], "pos_rank");
  for (size_t i = 1; i < rows.size(); ++i) {
    INFO("row " << i);
    CHECK(std::stod(rows[i][a]) == 2.5);
    CHECK(std::stod(rows[i][b]) == Approx(10.0 * (i - 1) + 0.5));
  }
  // Ranks that return different log keys fail together instead of mixing values up.
  CHECK_THROWS_AS(fit_log_ranks(2, tmp / "keys", trainer(1),
                                [](int rank, int64_t) {
                                  std::map<std::string, double> m{{"a", 1.0}};
                                  if (rank == 1) m["b"] = 2.0;
                                  return m;
                                }),
                  DistError);
}

TEST_CASE("trainer: metrics.csv takes columns that appear later and continues on resume") {
  test::TempDir tmp("trainer_csv");
  const std::string run = tmp / "run";
  auto late = [](int, int64_t pos) {
    std::map<std::string, double> m;
    if (pos >= 3) m["late"] = 7;  // from step 4 on
    return m;
  };
  fit_log_ranks(1, run, trainer().max_steps(2), late);
  // A row logged after the last checkpoint (the run died before the next one): resume drops it.
  { std::ofstream(run + "/metrics.csv", std::ios::app) << "3,0,1,1,1,1,1\n"; }
  fit_log_ranks(1, run, trainer().max_steps(6).resume("auto"), late);
  fit_log_ranks(1, run, trainer().resume("auto"), late);
  auto rows = read_csv(run + "/metrics.csv");
  REQUIRE(rows.size() == 17);  // header + 16 steps, each once
  CHECK(rows[0] == std::vector<std::string>{"step", "epoch", "grad_norm", "images_per_s", "loss",
                                            "lr", "wd", "late"});
  for (size_t i = 1; i < rows.size(); ++i) {
    INFO("row " << i);
    REQUIRE(rows[i].size() == rows[0].size());
    CHECK(rows[i][0] == std::to_string(i));
    CHECK(rows[i][7] == (i < 4 ? "" : "7"));
    CHECK(!rows[i][4].empty());
  }
}

TEST_CASE("trainer: buffers start as rank 0's on every rank") {
  test::TempDir tmp("trainer_buffers");
  auto bufs = fit_log_ranks(2, tmp / "run", trainer(1).max_steps(1),
                            [](int, int64_t) { return std::map<std::string, double>{}; });
  CHECK(torch::equal(bufs[0], torch::full({3}, 1.0)));
  CHECK(torch::equal(bufs[1], torch::full({3}, 1.0)));
}
