// Preemption inside trainer_fit on a toy task: a SIGTERM/SIGUSR1 during a step stops the loop
// after that step (mid-epoch), after the epoch's evaluation and checkpoint (an epoch's last step)
// or after the final checkpoint (the last step), always with a resumable checkpoint and
// Preempted (exit code 6); resuming ends as the uninterrupted run, best/ included. The handlers
// are the caller's again after a run without a signal.
#include <catch2/catch.hpp>

#include <signal.h>

#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include "evax/core/files.h"
#include "evax/io/safetensors.h"
#include "evax/train/preempt.h"
#include "evax/train/run_checkpoint.h"
#include "evax/train/trainer.h"
#include "tensor_util.h"
#include "test_util.h"

using namespace evax;
namespace fs = std::filesystem;

namespace {

// Linear regression on 32 fixed samples, batch 8 (4 steps an epoch), evaluated on 16 held-out
// ones; raises `signal` in this process during the forward pass of step `signal_step` (0-based).
class SignalToy : public Task {
 public:
  SignalToy(int64_t signal_step, int signal) : signal_step_(signal_step), signal_(signal) {
    at::Generator g = at::detail::createCPUGenerator(5);
    w_ = at::randn({4}, g).requires_grad_(true);
  }
  std::vector<NamedParam> trainable() override { return {{"w", w_}}; }
  int64_t micro_batches_per_epoch() override { return 4; }
  void start_epoch(int64_t epoch, int64_t skip) override {
    epoch_ = epoch, next_ = skip;
    step_ = epoch * 4 + skip;
  }
  static std::pair<torch::Tensor, torch::Tensor> sample(int64_t i) {
    at::Generator g = at::detail::createCPUGenerator(300 + static_cast<uint64_t>(i));
    auto x = at::randn({4}, g);
    return {x, (x * torch::tensor({1.0f, -2.0f, 0.5f, 3.0f})).sum() + 0.1 * at::randn({}, g)};
  }
  MicroStep forward_micro() override {
    if (step_ == signal_step_) ::raise(signal_);
    std::vector<torch::Tensor> xs, ys;
    for (int64_t j = 0; j < 8; ++j) {
      auto [x, y] = sample((next_ * 8 + j + epoch_ * 5) % 32);
      xs.push_back(x), ys.push_back(y);
    }
    ++next_, ++step_;
    MicroStep ms;
    ms.loss = torch::mse_loss(torch::stack(xs).matmul(w_), torch::stack(ys));
    ms.samples = 8;
    return ms;
  }
  TensorMap model_state() override { return {{"w", w_.detach().clone()}}; }
  void load_model_state(const TensorMap& s) override {
    torch::NoGradGuard ng;
    w_.copy_(*find(s, "w"));
  }
  bool has_evaluation() override { return true; }
  std::map<std::string, double> evaluate(int64_t) override {
    torch::NoGradGuard ng;
    double sse = 0;
    for (int64_t i = 0; i < 16; ++i) {
      auto [x, y] = sample(100 + i);
      sse += std::pow((x.dot(w_) - y).item<double>(), 2);
    }
    return {{"mse", sse / 16}};
  }

 private:
  int64_t signal_step_;
  int signal_;
  torch::Tensor w_;
  int64_t epoch_ = 0, next_ = 0, step_ = 0;
};

// 5 epochs (20 steps), evaluation every 2 epochs with best/ by mse.
TrainerOptions opts() {
  return TrainerOptions().epochs(5).log_every(1).keep_last(50).eval(
      EvalHookOptions().every(2).metric("mse").mode("min"));
}

FitResult fit(const std::string& dir, const TrainerOptions& o, int64_t signal_step = -1,
              int signal = SIGUSR1) {
  SignalToy task(signal_step, signal);
  return trainer_fit(task, AdamWOptions().lr(0.05).min_lr(0.001).clip_grad(0), o,
                     RunContext{dir, "toy: 1\n", nullptr});
}

std::string why(const std::string& ckpt) {
  return nlohmann::json::parse(read_file(ckpt + "/meta.json")).value("why", "");
}

}  // namespace

TEST_CASE("preempt: a signal during a step stops after it (mid-epoch, epoch end after the evaluation, last step) and resuming ends as the uninterrupted run") {
  test::TempDir tmp("preempt_unit");
  const FitResult full = fit(tmp / "full", opts());
  REQUIRE(full.steps == 20);
  // {step whose forward gets the signal, where the run stops, what the checkpoint there is}
  struct Case {
    int64_t signal_step, stop;
    const char* why;
    int sig;
  };
  for (const Case c : {Case{5, 6, "preempted", SIGUSR1}, Case{7, 8, "epoch end", SIGTERM},
                       Case{19, 20, "end", SIGTERM}}) {
    INFO("signal during step " << c.signal_step);
    const std::string dir = tmp / ("run" + std::to_string(c.signal_step));
    try {
      fit(dir, opts(), c.signal_step, c.sig);
      FAIL("no Preempted");
    } catch (const Preempted& e) {
      CHECK(e.exit_code() == kExitPreempted);
      CHECK(static_cast<int>(e.exit_code()) == 6);
      CHECK_THAT(e.what(), Catch::Matchers::Contains("preempted by " + signal_name(c.sig) +
                                                     " after step " + std::to_string(c.stop)));
    }
    const auto latest = run_checkpoint_find_latest(dir + "/checkpoints");
    REQUIRE(latest);
    CHECK(*latest == run_checkpoint_dir(dir + "/checkpoints", c.stop));
    CHECK(why(*latest) == c.why);
    // Stopped at the epoch end: the epoch's evaluation already ran, best/ included.
    if (c.stop == 8) CHECK(fs::exists(dir + "/checkpoints/best/model.safetensors"));
    auto o = opts();
    const FitResult resumed = fit(dir, o.resume("auto"));
    CHECK(resumed.steps == 20);
    CHECK(resumed.best_step == full.best_step);
    CHECK(resumed.best_value == full.best_value);
    CHECK(test::same_maps(safetensors_load(full.last_checkpoint + "/model.safetensors"),
                          safetensors_load(resumed.last_checkpoint + "/model.safetensors")));
    CHECK(test::same_maps(safetensors_load(full.best_checkpoint + "/model.safetensors"),
                          safetensors_load(resumed.best_checkpoint + "/model.safetensors")));
  }
}

TEST_CASE("preempt: the caller's handlers come back after a run without a signal, and stay recording after a preemption") {
  test::TempDir tmp("preempt_handlers");
  static volatile sig_atomic_t mine = 0;
  struct sigaction sa {}, old_term {}, old_usr1 {};
  sa.sa_handler = [](int) { mine = mine + 1; };
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, &old_term);
  ::sigaction(SIGUSR1, &sa, &old_usr1);
  auto o = opts();
  fit(tmp / "a", o.max_steps(3));
  ::raise(SIGUSR1);
  CHECK(mine == 1);  // our handler again
  // Preempted: a further signal while the process is on its way out is only recorded.
  CHECK_THROWS_AS(fit(tmp / "b", opts(), 2, SIGTERM), Preempted);
  ::raise(SIGTERM);  // would end this test process with the default action
  CHECK(mine == 1);
  ::sigaction(SIGTERM, &old_term, nullptr);
  ::sigaction(SIGUSR1, &old_usr1, nullptr);
}
