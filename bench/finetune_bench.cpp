// One finetuning step of an EVA-X classifier (forward in train mode with drop path, multi-label
// BCE, backward, AdamW over EVA-X's layer-decay groups, zero_grad) and its evaluation throughput
// (eval-mode forward + sigmoid under NoGradGuard, as ClassifyTask::infer runs it). Prints one JSON
// line; bench/finetune_step.py runs it next to the same step in timm.
//
// --serve: build the model, print {"ready": true}, then run one command per stdin line and answer
// with one JSON line: `train` (one step, its times), `eval` (one batch, its time), `rss` (VmHWM so
// far), `quit`. finetune_step.py --interleave drives it step by step, alternating with timm, so
// both sides see the same background load on a shared machine.
//
// --profile FILE: after warmup, record `iters` training steps with the CPU profiler torch.profiler
// uses (kineto) into FILE (chrome trace; finetune_step.py --profile sums it per op next to timm's)
// and exit.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>


#include "evax/classify/losses.h"
#include "evax/classify/model.h"
#include "evax/core/cli.h"
#include "evax/core/error.h"
#include "evax/train/autocast.h"
#include "evax/train/optim.h"
#include "profile_trace.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Median: robust to a step slowed by other work on a shared machine.
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// VmHWM, not getrusage: ru_maxrss survives fork+exec, so a child of a big Python process would
// report the parent's peak.
double peak_rss_mb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0.0;
}

struct StepTimes {
  double step, fwd, bwd, opt;  // whole, forward + loss, backward, optimizer step + zero_grad
};

struct Bench {
  evax::VisionTransformer model;
  evax::AdamW opt;
  torch::Tensor x, y, xe;
  bool bf16 = false;  // bf16 autocast, as ClassifyTask with bf16_cpu (logits back to float32)

  Bench(const evax::ClassifierOptions& co, int64_t batch, int64_t eval_batch, bool bf16_)
      : model(evax::classifier_build(co)),
        opt(evax::classifier_param_groups(*model, 0.05, 0.55),
            evax::AdamWOptions().lr(1e-3).beta2(0.999).eps(1e-8).clip_grad(0)) {
    bf16 = bf16_;
    x = torch::randn({batch, 3, co.img_size(), co.img_size()});
    y = torch::randint(0, 2, {batch, co.num_classes()}).to(torch::kFloat32);
    xe = torch::randn({eval_batch, 3, co.img_size(), co.img_size()});
  }

  StepTimes train_step() {
    model->train();
    auto t0 = Clock::now();
    opt.set_lr(1e-3);  // lr_sched.adjust_learning_rate, every step (constant here)
    torch::Tensor logits;
    {
      evax::Autocast ac(bf16, torch::kCPU);
      logits = model->forward(x).to(torch::kFloat32);
    }
    auto loss = evax::multilabel_bce_loss(logits, y);
    auto t1 = Clock::now();
    loss.backward();
    auto t2 = Clock::now();
    opt.step();
    opt.zero_grad();
    auto t3 = Clock::now();
    return {seconds(t0, t3), seconds(t0, t1), seconds(t1, t2), seconds(t2, t3)};
  }

  double eval_batch() {
    model->eval();
    torch::NoGradGuard ng;
    auto t0 = Clock::now();
    evax::Autocast ac(bf16, torch::kCPU);
    torch::sigmoid(model->forward(xe).to(torch::kFloat32));
    return seconds(t0, Clock::now());
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::string model_name = "eva_x_small_patch16";
  int64_t batch = 16, threads = 2, iters = 5, warmup = 2, size = 224, classes = 14;
  int64_t eval_batch = 32, eval_iters = 5, eval_warmup = 1;
  double drop_path = 0.1;
  bool serve = false, bf16 = false;
  std::string profile;
  evax::ArgParser p("bench-finetune",
                    "One finetuning step (random weights) and evaluation images/s.");
  p.option("--model", &model_name, "NAME", "registered model");
  p.option("--batch", &batch, "B", "training batch size");
  p.option("--threads", &threads, "T", "intra-op threads");
  p.option("--iters", &iters, "N", "timed training steps");
  p.option("--warmup", &warmup, "N", "untimed training steps");
  p.option("--size", &size, "S", "input side");
  p.option("--classes", &classes, "K", "labels (multi-label BCE)");
  p.option("--drop-path", &drop_path, "P", "stochastic depth of the last block");
  p.option("--eval-batch", &eval_batch, "B", "evaluation batch size");
  p.option("--eval-iters", &eval_iters, "N", "timed evaluation batches (0: skip)");
  p.option("--eval-warmup", &eval_warmup, "N", "untimed evaluation batches");
  p.flag("--bf16", &bf16, "bf16 autocast on the CPU (torch.autocast('cpu', torch.bfloat16))");
  p.flag("--serve", &serve, "run commands from stdin (train, eval, rss, quit), one per line");
  p.option("--profile", &profile, "FILE", "write a chrome trace of the timed steps and exit");
  try {
    if (!p.parse({argv + 1, argv + argc})) return 0;
    if (iters < 1 || batch < 1 || eval_batch < 1)
      evax::raise<evax::UsageError>("--iters, --batch and --eval-batch must be >= 1");
    torch::set_num_threads(static_cast<int>(threads));
    torch::manual_seed(0);
    Bench b(evax::ClassifierOptions()
                .model(model_name)
                .num_classes(classes)
                .img_size(size)
                .drop_path(drop_path),
            batch, eval_batch, bf16);

    if (serve) {
      std::cout << "{\"ready\": true}" << std::endl;
      std::string cmd;
      while (std::getline(std::cin, cmd) && cmd != "quit") {
        if (cmd == "train") {
          StepTimes t = b.train_step();
          std::cout << "{\"s\": " << t.step << ", \"forward_s\": " << t.fwd
                    << ", \"backward_s\": " << t.bwd << ", \"optimizer_s\": " << t.opt << "}"
                    << std::endl;
        } else if (cmd == "eval") {
          std::cout << "{\"s\": " << b.eval_batch() << "}" << std::endl;
        } else if (cmd == "rss") {
          std::cout << "{\"peak_rss_mb\": " << peak_rss_mb() << "}" << std::endl;
        } else {
          std::cout << "{\"error\": \"unknown command\"}" << std::endl;
        }
      }
      return 0;
    }

    std::vector<double> t_step, t_fwd, t_bwd, t_opt;
    for (int64_t i = 0; i < warmup; ++i) b.train_step();
    if (!profile.empty()) {
      evax::bench::profile_trace(profile, iters, [&] { b.train_step(); });
      return 0;
    }
    for (int64_t i = 0; i < iters; ++i) {
      StepTimes t = b.train_step();
      t_step.push_back(t.step), t_fwd.push_back(t.fwd), t_bwd.push_back(t.bwd),
          t_opt.push_back(t.opt);
    }
    const double s = median(t_step);
    const double hwm_mb = peak_rss_mb();  // the training part's peak, read before evaluation

    double eval_rate = 0;
    if (eval_iters > 0) {
      std::vector<double> t_eval;
      for (int64_t i = 0; i < eval_warmup; ++i) b.eval_batch();
      for (int64_t i = 0; i < eval_iters; ++i) t_eval.push_back(b.eval_batch());
      eval_rate = static_cast<double>(eval_batch) / median(t_eval);
    }
    std::cout << "{\"impl\": \"evax\", \"s_per_step\": " << s
              << ", \"images_per_s\": " << static_cast<double>(batch) / s
              << ", \"forward_s\": " << median(t_fwd) << ", \"backward_s\": " << median(t_bwd)
              << ", \"optimizer_s\": " << median(t_opt) << ", \"peak_rss_mb\": " << hwm_mb
              << ", \"eval_images_per_s\": " << eval_rate << "}" << std::endl;
  } catch (const evax::Error& e) {
    std::cerr << "bench-finetune: " << e.what() << "\n";
    return static_cast<int>(e.exit_code());
  }
  return 0;
}
