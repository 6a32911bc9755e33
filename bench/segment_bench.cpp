// One training step of EVA-X's UperNet segmentation model (SegmentTask::forward_batch's step
// without the data: forward in train mode with drop path, Dropout2d and BatchNorm on batch
// statistics, the decode logits resized bilinearly to the mask and BCE-with-logits against it as
// segmentation_loss computes it, backward, AdamW over mmseg's layer-decay groups, zero_grad).
// Prints one JSON line; bench/segment_step.py runs it next to the same step in the plain-torch
// mmseg-structured reference (tools/upernet_reference.py).
//
// --serve: build the model, print {"ready": true, "params": N}, then run one command per stdin line and answer
// with one JSON line: `train` (one step, its times), `rss` (VmHWM so far), `quit`.
// segment_step.py --interleave drives it step by step, alternating with the reference, so both
// sides see the same background load on a shared machine.
//
// --profile FILE: after warmup, record `iters` training steps with the CPU profiler torch.profiler
// uses (kineto) into FILE (chrome trace; segment_step.py --profile sums it per op next to the
// reference's) and exit; --profile-shapes records the ops' input shapes too.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>


#include "evax/core/cli.h"
#include "evax/core/error.h"
#include "evax/segment/losses.h"
#include "evax/segment/task.h"
#include "evax/segment/upernet.h"
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

// SegmentTask::param_groups: mmseg's LayerDecayOptimizerConstructor groups over the mmseg names.
evax::ParamGroups segment_groups(const evax::UperNetImpl& net, double weight_decay, double rate) {
  const int64_t depth = net.backbone_depth();
  return evax::make_param_groups(
      net.named_params_mmseg(), weight_decay,
      [&](const std::string& name) { return evax::upernet_layer_decay_scale(name, depth, rate); },
      evax::upernet_no_weight_decay);
}

struct Bench {
  evax::UperNet model;
  evax::AdamW opt;
  double lr;
  torch::Tensor x, y;
  int64_t params = 0;  // trainable scalars (the reference prints its own: the same model)

  Bench(const evax::UperNetOptions& uo, int64_t batch, double layer_decay)
      : model(uo),
        opt(segment_groups(*model, evax::segment_optimizer_defaults().weight_decay(), layer_decay),
            evax::segment_optimizer_defaults()),
        lr(evax::segment_optimizer_defaults().lr()) {
    const int64_t s = uo.img_size();
    x = torch::randn({batch, 3, s, s});
    // A fixed random 0/1 mask, uint8 as the task's loader delivers it.
    y = torch::randint(0, 2, {batch, s, s}, torch::kUInt8);
    for (const auto& np : opt.groups().params) params += np.param.numel();
  }

  StepTimes train_step() {
    model->train();
    auto t0 = Clock::now();
    opt.set_lr(lr);  // the trainer sets the scheduled lr every step (constant here)
    auto loss = evax::segmentation_loss(model->forward_train(x).logits, y);
    auto t1 = Clock::now();
    loss.backward();
    auto t2 = Clock::now();
    opt.step();
    opt.zero_grad();
    auto t3 = Clock::now();
    return {seconds(t0, t3), seconds(t0, t1), seconds(t1, t2), seconds(t2, t3)};
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::string model_name = "upernet_eva_x_small_patch16";
  int64_t batch = 2, threads = 2, iters = 5, warmup = 2, size = 512;
  double drop_path = 0.15, layer_decay = 0.85;
  bool serve = false, profile_shapes = false;
  std::string profile;
  evax::ArgParser p("bench-segment", "One UperNet segmentation training step (random weights).");
  p.option("--model", &model_name, "NAME", "registered segmentation model");
  p.option("--batch", &batch, "B", "training batch size");
  p.option("--threads", &threads, "T", "intra-op threads");
  p.option("--iters", &iters, "N", "timed training steps");
  p.option("--warmup", &warmup, "N", "untimed training steps");
  p.option("--size", &size, "S", "input side (multiple of 16)");
  p.option("--drop-path", &drop_path, "P", "stochastic depth of the backbone's last block");
  p.option("--layer-decay", &layer_decay, "R", "mmseg layer-decay rate");
  p.flag("--serve", &serve, "run commands from stdin (train, rss, quit), one per line");
  p.option("--profile", &profile, "FILE", "write a chrome trace of the timed steps and exit");
  p.flag("--profile-shapes", &profile_shapes, "record the ops' input shapes in the trace");
  try {
    if (!p.parse({argv + 1, argv + argc})) return 0;
    if (iters < 1 || batch < 1) evax::raise<evax::UsageError>("--iters and --batch must be >= 1");
    torch::set_num_threads(static_cast<int>(threads));
    torch::manual_seed(0);
    Bench b(evax::upernet_options(model_name).img_size(size).drop_path_rate(drop_path), batch,
            layer_decay);

    if (serve) {
      std::cout << "{\"ready\": true, \"params\": " << b.params << "}" << std::endl;
      std::string cmd;
      while (std::getline(std::cin, cmd) && cmd != "quit") {
        if (cmd == "train") {
          StepTimes t = b.train_step();
          std::cout << "{\"s\": " << t.step << ", \"forward_s\": " << t.fwd
                    << ", \"backward_s\": " << t.bwd << ", \"optimizer_s\": " << t.opt << "}"
                    << std::endl;
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
      evax::bench::profile_trace(profile, iters, [&] { b.train_step(); }, profile_shapes);
      return 0;
    }
    for (int64_t i = 0; i < iters; ++i) {
      StepTimes t = b.train_step();
      t_step.push_back(t.step), t_fwd.push_back(t.fwd), t_bwd.push_back(t.bwd),
          t_opt.push_back(t.opt);
    }
    const double s = median(t_step);
    std::cout << "{\"impl\": \"evax\", \"s_per_step\": " << s << ", \"params\": " << b.params
              << ", \"images_per_s\": " << static_cast<double>(batch) / s
              << ", \"forward_s\": " << median(t_fwd) << ", \"backward_s\": " << median(t_bwd)
              << ", \"optimizer_s\": " << median(t_opt) << ", \"peak_rss_mb\": " << peak_rss_mb()
              << "}" << std::endl;
  } catch (const evax::Error& e) {
    std::cerr << "bench-segment: " << e.what() << "\n";
    return static_cast<int>(e.exit_code());
  }
  return 0;
}
