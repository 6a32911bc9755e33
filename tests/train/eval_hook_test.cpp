// The trainer's evaluation hook on a toy task: when it evaluates, best/ by a metric and mode,
// early stopping, model EMA (equal to timm's ModelEmaV3 update), and stop/resume ending
// bit-identical to an uninterrupted run with all of them on, on one rank and on two.
#include <catch2/catch.hpp>

#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "distributed/dist_test_util.h"
#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/distributed/comm.h"
#include "evax/io/safetensors.h"
#include "evax/train/ema.h"
#include "evax/train/run_checkpoint.h"
#include "evax/train/trainer.h"
#include "tensor_util.h"
#include "test_util.h"

using namespace evax;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

// Linear regression on samples drawn per index (as trainer_test's ToyTask); evaluation is the MSE
// on 16 fixed held-out samples (reduced over ranks: each rank scores half and they all-reduce),
// plus an optional scripted metric (a value per evaluation) to drive best/ and early stopping.
class EvalToy : public Task {
 public:
  EvalToy(int rank, int world, int64_t batch, Comm* comm, std::vector<double> script = {})
      : rank_(rank), world_(world), batch_(batch), comm_(comm), script_(std::move(script)) {
    at::Generator g = at::detail::createCPUGenerator(11);
    w_ = at::randn({4}, g).requires_grad_(true);
    b_ = torch::zeros({1}).requires_grad_(true);
  }
  std::vector<NamedParam> trainable() override { return {{"w", w_}, {"b", b_}}; }
  int64_t micro_batches_per_epoch() override { return 32 / (batch_ * world_); }
  void start_epoch(int64_t epoch, int64_t skip) override { epoch_ = epoch, next_ = skip; }
  static std::pair<torch::Tensor, torch::Tensor> sample(int64_t i) {
    at::Generator g = at::detail::createCPUGenerator(1000 + static_cast<uint64_t>(i));
    auto x = at::randn({4}, g);
    auto y = (x * torch::tensor({0.5f, -1.0f, 2.0f, 0.25f})).sum() + 0.1 * at::randn({}, g);
    return {x, y};
  }
  MicroStep forward_micro() override {
    std::vector<torch::Tensor> xs, ys;
    for (int64_t j = 0; j < batch_; ++j) {
      const int64_t pos = next_ * batch_ * world_ + rank_ * batch_ + j;
      auto [x, y] = sample((pos * 7 + epoch_ * 3) % 32);
      xs.push_back(x), ys.push_back(y);
    }
    ++next_;
    MicroStep ms;
    ms.loss = torch::mse_loss(torch::stack(xs).matmul(w_) + b_, torch::stack(ys));
    ms.samples = batch_;
    return ms;
  }
  TensorMap model_state() override { return {{"w", w_.detach().clone()}, {"b", b_.detach().clone()}}; }
  void load_model_state(const TensorMap& s) override {
    torch::NoGradGuard ng;
    w_.copy_(*find(s, "w"));
    b_.copy_(*find(s, "b"));
  }
  nlohmann::json checkpoint_meta() override { return {{"classes", {"y"}}}; }
  bool has_evaluation() override { return true; }
  std::map<std::string, double> evaluate(int64_t epoch) override {
    torch::NoGradGuard ng;
    double sse = 0;
    for (int64_t i = rank_; i < 16; i += world_) {
      auto [x, y] = sample(100 + i);
      sse += std::pow((x.dot(w_) + b_ - y).item<double>(), 2);
    }
    if (comm_) {
      std::vector<at::Tensor> t{at::tensor({sse}, at::kDouble)};
      comm_->all_reduce_sum(t);
      sse = t[0].item<double>();
    }
    ++evals_;
    std::map<std::string, double> m{{"mse", sse / 16}, {"epoch_seen", static_cast<double>(epoch)}};
    if (!script_.empty()) m["scripted"] = script_[static_cast<size_t>(epoch - 1) % script_.size()];
    return m;
  }
  int evals() const { return evals_; }

 private:
  int rank_, world_;
  int64_t batch_;
  Comm* comm_;
  std::vector<double> script_;
  torch::Tensor w_, b_;
  int64_t epoch_ = 0, next_ = 0;
  int evals_ = 0;
};

AdamWOptions adamw() { return AdamWOptions().lr(0.05).min_lr(0.001).clip_grad(0); }

// 32 samples, batch 8 (global): 4 steps per epoch.
TrainerOptions opts(int64_t epochs) { return TrainerOptions().epochs(epochs).log_every(1).keep_last(20); }

FitResult fit(const std::string& dir, const TrainerOptions& o, std::vector<double> script = {},
              int* evals = nullptr) {
  EvalToy task(0, 1, 8, nullptr, std::move(script));
  FitResult r = trainer_fit(task, adamw(), o, RunContext{dir, "toy: 1\n", nullptr});
  if (evals) *evals = task.evals();
  return r;
}

}  // namespace

TEST_CASE("eval hook: every N epochs and at the end, logged as eval/ columns, best/ by metric") {
  test::TempDir tmp("eval_hook");
  int evals = 0;
  auto o = opts(5);
  o.eval(EvalHookOptions().every(2).metric("mse").mode("min"));
  FitResult r = fit(tmp / "run", o, {}, &evals);
  CHECK(evals == 3);  // epochs 2, 4 and the last (5)
  CHECK(r.last_eval.at("epoch_seen") == 5);
  // best/ holds the weights of the evaluation with the lowest mse, and says so.
  REQUIRE(!r.best_checkpoint.empty());
  auto meta = test::read_json(r.best_checkpoint + "/meta.json");
  CHECK(meta["metric"] == "mse");
  CHECK(meta["value"].get<double>() == r.best_value);
  CHECK(meta["step"].get<int64_t>() == r.best_step);
  CHECK(meta["task"]["classes"][0] == "y");
  CHECK(meta["weights"] == "raw");
  // The regression converges: the last evaluation is the best, at the last step.
  CHECK(r.best_step == 20);
  CHECK(r.best_value == r.last_eval.at("mse"));
  auto best = safetensors_load(r.best_checkpoint + "/model.safetensors");
  auto last = safetensors_load(r.last_checkpoint + "/model.safetensors");
  CHECK(test::same_maps(best, last));
  // metrics.csv: one row per step, the evaluation in the same row as the step's training log.
  const std::string csv = read_file(tmp / "run/metrics.csv");
  CHECK_THAT(csv, Contains("eval/mse"));
  int rows_step8 = 0;
  std::istringstream in(csv);
  for (std::string line; std::getline(in, line);) rows_step8 += line.rfind("8,", 0) == 0;
  CHECK(rows_step8 == 1);
  // Every checkpoint records the selection state.
  auto ck = test::read_json(r.last_checkpoint + "/meta.json");
  CHECK(ck["best"]["step"] == 20);
  CHECK(ck["task"]["classes"][0] == "y");
}

TEST_CASE("eval hook: mode max keeps the highest, later lower values do not replace best/") {
  test::TempDir tmp("eval_max");
  auto o = opts(4);
  o.eval(EvalHookOptions().every(1).metric("scripted").mode("max"));
  FitResult r = fit(tmp / "run", o, {0.5, 0.9, 0.7, 0.9});
  CHECK(r.best_value == 0.9);
  CHECK(r.best_step == 8);  // epoch 2; the equal 0.9 at epoch 4 is not an improvement
  CHECK(test::read_json(r.best_checkpoint + "/meta.json")["epoch"] == 2);
  // min_delta: 0.7 → 0.75 is not enough.
  auto o2 = opts(2);
  o2.eval(EvalHookOptions().metric("scripted").min_delta(0.1));
  FitResult r2 = fit(tmp / "delta", o2, {0.7, 0.75});
  CHECK(r2.best_step == 4);
}

TEST_CASE("eval hook: early stopping after `patience` evaluations without improvement") {
  test::TempDir tmp("eval_patience");
  auto o = opts(10);
  o.eval(EvalHookOptions().metric("scripted").patience(2));
  int evals = 0;
  FitResult r = fit(tmp / "run", o, {0.6, 0.8, 0.7, 0.8, 0.9, 0.95, 0.99, 1, 1, 1}, &evals);
  CHECK(r.stopped_early);
  CHECK(evals == 4);  // best at epoch 2, then 2 evaluations without improvement
  CHECK(r.steps == 16);
  CHECK(r.best_step == 8);
  auto meta = test::read_json(r.last_checkpoint + "/meta.json");
  CHECK(meta["why"] == "early stop");
  CHECK(meta["best"]["stopped_early"] == true);
  // Resuming a run that stopped early trains no further.
  auto o2 = o;
  o2.resume("auto");
  FitResult again = fit(tmp / "run", o2, {0.6, 0.8, 0.7, 0.8, 0.9}, &evals);
  CHECK(evals == 0);
  CHECK(again.steps == 16);
  CHECK(again.stopped_early);
}

TEST_CASE("eval hook: misconfigurations are refused by name") {
  test::TempDir tmp("eval_bad");
  auto o = opts(1);
  o.eval(EvalHookOptions().metric("auc"));
  CHECK_THROWS_WITH(fit(tmp / "a", o), Contains("eval.metric = 'auc' is not among") &&
                                           Contains("mse"));
  o.eval(EvalHookOptions().metric("ema/mse"));
  CHECK_THROWS_AS(fit(tmp / "b", o), ConfigError);
}

TEST_CASE("ModelEma: timm ModelEmaV3 update with and without warmup, swap, state round trip") {
  auto p = torch::tensor({1.0, 2.0});
  auto buf = torch::tensor({3.0});
  auto counter = torch::tensor({7}, torch::kInt64);
  ModelEma ema({{"p", p}}, {buf, counter}, EmaOptions().decay(0.9));
  p.fill_(2.0), buf.fill_(5.0), counter.fill_(8);
  ema.update(1);
  // ema = 0.9·ema + 0.1·live (lerp), integer buffers copied.
  auto st = ema.state();
  CHECK(torch::allclose(*find(st, "ema.param.p"), torch::tensor({1.1, 2.0}), 0, 1e-12));
  CHECK(find(st, "ema.buffer.0")->item<double>() == Approx(3.2).epsilon(1e-6));
  CHECK(find(st, "ema.buffer.1")->item<int64_t>() == 8);
  // Warmup: decay_t = min(decay, 1 - (1 + t)^-0.75).
  ModelEma w({{"p", p}}, {}, EmaOptions().decay(0.9999).warmup(true));
  CHECK(w.decay_at(1) == Approx(1 - std::pow(2.0, -0.75)));
  CHECK(w.decay_at(10000000) == 0.9999);
  // swap exchanges live and average values.
  ema.swap();
  CHECK(torch::allclose(p, torch::tensor({1.1, 2.0})));
  ema.swap();
  CHECK(torch::equal(p, torch::tensor({2.0, 2.0})));
  ModelEma other({{"p", p}}, {buf, counter}, EmaOptions().decay(0.9));
  other.load_state(st, "test");
  CHECK(test::same_maps(other.state(), st));
  TensorMap missing{{"ema.param.q", torch::zeros({2})}};
  CHECK_THROWS_AS(other.load_state(missing, "test"), DataError);
}

TEST_CASE("EMA in the trainer: checkpointed, evaluated (ema/ keys) and selectable for best/") {
  test::TempDir tmp("eval_ema");
  auto o = opts(3);
  o.eval(EvalHookOptions().metric("ema/mse").mode("min")).ema(EmaOptions().decay(0.5));
  FitResult r = fit(tmp / "run", o);
  CHECK(r.last_eval.count("ema/mse") == 1);
  CHECK(r.last_eval.at("ema/mse") != r.last_eval.at("mse"));
  auto trainer_state = safetensors_load(r.last_checkpoint + "/trainer.safetensors");
  const at::Tensor* ew = find(trainer_state, "ema.param.w");
  REQUIRE(ew != nullptr);
  // best/ holds the EMA weights of the selected evaluation: the last one here (converging).
  REQUIRE(r.best_step == 12);
  auto best = safetensors_load(r.best_checkpoint + "/model.safetensors");
  CHECK(torch::equal(*find(best, "w"), *ew));
  CHECK(test::read_json(r.best_checkpoint + "/meta.json")["weights"] == "ema");
  // The raw weights are not the average.
  auto raw = safetensors_load(r.last_checkpoint + "/model.safetensors");
  CHECK(!torch::equal(*find(raw, "w"), *ew));
}

TEST_CASE("stop/resume with evaluation, best/ and EMA ends bit-identical, and 2 ranks equal 1") {
  test::TempDir tmp("eval_resume");
  auto o = opts(6);
  o.eval(EvalHookOptions().every(2).metric("ema/mse").mode("min").patience(5))
      .ema(EmaOptions().decay(0.7).warmup(true));
  FitResult full = fit(tmp / "full", o);
  // Stopped mid-epoch (step 10 of 24) and at an evaluation epoch's end (step 16), then resumed.
  auto part = o;
  fit(tmp / "part", part.max_steps(10));
  fit(tmp / "part", part.max_steps(16).resume("auto"));
  auto rest = o;
  FitResult resumed = fit(tmp / "part", rest.resume("auto"));
  CHECK(resumed.steps == full.steps);
  CHECK(resumed.best_step == full.best_step);
  CHECK(resumed.best_value == full.best_value);
  for (const char* f : {"model.safetensors", "trainer.safetensors"}) {
    INFO(f);
    CHECK(test::same_maps(safetensors_load(full.last_checkpoint + "/" + f),
                          safetensors_load(resumed.last_checkpoint + "/" + f)));
  }
  CHECK(test::same_maps(safetensors_load(full.best_checkpoint + "/model.safetensors"),
                        safetensors_load(resumed.best_checkpoint + "/model.safetensors")));
  CHECK(test::read_json(full.best_checkpoint + "/meta.json")["metrics"] ==
        test::read_json(resumed.best_checkpoint + "/meta.json")["metrics"]);

  // Two ranks (batch 4 each) against one rank (batch 8): the same selection and EMA up to
  // fp32 summation order.
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<FitResult> two(2);
  test::run_ranks(2, [&](int r) {
    StoreComm comm(store, r, 2, 20);
    EvalToy task(r, 2, 4, &comm);
    two[r] = trainer_fit(task, adamw(), o, RunContext{tmp / "two", "toy: 1\n", &comm});
  });
  for (const auto& r : two) {
    CHECK(r.best_step == full.best_step);
    CHECK(r.best_value == Approx(full.best_value).epsilon(1e-5));
  }
  auto e1 = safetensors_load(full.best_checkpoint + "/model.safetensors");
  auto e2 = safetensors_load(two[0].best_checkpoint + "/model.safetensors");
  CHECK(torch::allclose(*find(e1, "w"), *find(e2, "w"), 0, 1e-6));
}
