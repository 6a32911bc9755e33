// One training step of an evax task on one device, in bf16 autocast or float32, random weights and
// inputs: EVA-X MIM pretraining with a frozen teacher (--task pretrain), EVA-X classifier
// finetuning (finetune) or UperNet segmentation (segment). Prints one JSON line (images/s, median
// step seconds, peak CUDA memory); tools/gpu_bench.py runs it next to the same step in timm /
// plain torch and computes MFU. Out of memory prints {"oom": true} and exits 5, so the driver can
// halve the batch.
#include <algorithm>
#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include <c10/core/CachingDeviceAllocator.h>
#include <torch/cuda.h>

#include "evax/classify/losses.h"
#include "evax/classify/model.h"
#include "evax/core/cli.h"
#include "evax/core/error.h"
#include "evax/core/rng.h"
#include "evax/models/registry.h"
#include "evax/pretrain/masking.h"
#include "evax/pretrain/objective.h"
#include "evax/segment/losses.h"
#include "evax/segment/task.h"
#include "evax/segment/upernet.h"
#include "evax/train/autocast.h"
#include "evax/train/optim.h"

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Waits for the device's queued work (steps are timed end to end, as the Python side does).
void sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize(d.index());
}

std::vector<evax::NamedParam> trainable(const torch::nn::Module& m) {
  std::vector<evax::NamedParam> out;
  for (const auto& np : m.named_parameters())
    if (np.value().requires_grad()) out.push_back({np.key(), np.value()});
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string task = "pretrain", device_name = "cuda", student = "", teacher = "mgca_vit_base_patch16";
  int64_t batch = 64, size = 0, iters = 5, warmup = 2, threads = 0;
  bool bf16 = false;
  std::string channels_last = "auto";
  evax::ArgParser p("bench-gpu-step",
                    "One training step of pretrain / finetune / segment, images/s (random weights).");
  p.option("--task", &task, "T", "pretrain, finetune or segment");
  p.option("--model", &student, "NAME",
           "model (default: eva_x_base_patch16 / eva_x_small_patch16 / upernet_eva_x_small_patch16)");
  p.option("--teacher", &teacher, "NAME", "pretraining teacher");
  p.option("--device", &device_name, "DEV", "cuda or cpu");
  p.flag("--bf16", &bf16, "bf16 autocast");
  p.option("--channels-last", &channels_last, "M",
           "segment: pyramid and heads in NHWC: on, off, auto (on CUDA, as training does)");
  p.option("--batch", &batch, "B", "batch size");
  p.option("--size", &size, "S", "input side (default 224; segment 512)");
  p.option("--iters", &iters, "N", "timed steps");
  p.option("--warmup", &warmup, "N", "untimed steps");
  p.option("--threads", &threads, "T", "intra-op threads (0: torch's default)");
  try {
    if (!p.parse({argv + 1, argv + argc})) return 0;
    if (task != "pretrain" && task != "finetune" && task != "segment")
      evax::raise<evax::UsageError>("--task must be pretrain, finetune or segment");
    if (threads > 0) torch::set_num_threads(static_cast<int>(threads));
    const torch::Device device(device_name);
    if (device.is_cuda() && !torch::cuda::is_available())
      evax::raise<evax::UsageError>("--device cuda: no CUDA device");
    if (size == 0) size = task == "segment" ? 512 : 224;
    if (student.empty())
      student = task == "pretrain"   ? "eva_x_base_patch16"
                : task == "finetune" ? "eva_x_small_patch16"
                                     : "upernet_eva_x_small_patch16";
    torch::manual_seed(0);
    const auto opts = torch::TensorOptions().device(device);
    std::function<torch::Tensor()> forward;  // forward + loss
    std::unique_ptr<evax::AdamW> opt;
    std::shared_ptr<torch::nn::Module> keep;  // the models, alive for the steps
    std::unique_ptr<evax::TeacherTarget> target;
    int64_t params = 0;

    if (task == "pretrain") {
      target = std::make_unique<evax::TeacherTarget>(evax::model_create(teacher, 0, size), teacher);
      target->to(device);
      auto so = evax::model_options(student);
      so.img_size(size).mim_dim(target->dim()).final_norm(true).stop_grad_conv1(true);
      evax::VisionTransformer model(so);
      model->to(device);
      model->train();
      opt = std::make_unique<evax::AdamW>(trainable(*model), evax::AdamWOptions());
      auto x = torch::randn({batch, 3, size, size}, opts), xt = torch::randn({batch, 3, size, size}, opts);
      evax::MaskingOptions mo;
      mo.grid(size / 16);
      if (mo.grid() < 14) mo.kind(evax::MaskKind::kUniform);  // blocks need the 14×14 grid
      std::vector<torch::Tensor> masks;
      for (int64_t i = 0; i < batch; ++i) {
        evax::Rng rng(0, {static_cast<uint64_t>(i)});
        masks.push_back(evax::mask_generate(mo, rng).flatten());
      }
      auto mask = torch::stack(masks).to(device);
      forward = [=, t = target.get()]() mutable {
        auto tgt = t->compute(xt);
        return evax::mim_cosine_loss(model->forward_mim(x, mask), tgt, mask);
      };
      keep = model.ptr();
    } else if (task == "finetune") {
      auto model = evax::classifier_build(
          evax::ClassifierOptions().model(student).img_size(size).num_classes(14).drop_path(0.1));
      model->to(device);
      model->train();
      opt = std::make_unique<evax::AdamW>(evax::classifier_param_groups(*model, 0.05, 0.55),
                                          evax::AdamWOptions().lr(1e-3).beta2(0.999).eps(1e-8));
      auto x = torch::randn({batch, 3, size, size}, opts);
      auto y = torch::randint(0, 2, {batch, 14}, opts).to(torch::kFloat32);
      forward = [=]() mutable { return evax::multilabel_bce_loss(model->forward(x), y); };
      keep = model.ptr();
    } else {
      evax::UperNet model(evax::upernet_options(student).img_size(size).drop_path_rate(0.15));
      model->to(device);
      model->set_channels_last(channels_last == "on" ||
                               (channels_last == "auto" && device.is_cuda()));
      model->train();
      opt = std::make_unique<evax::AdamW>(
          evax::make_param_groups(
              model->named_params_mmseg(), 0.01,
              [&](const std::string& n) {
                return evax::upernet_layer_decay_scale(n, model->backbone_depth(), 0.85);
              },
              evax::upernet_no_weight_decay),
          evax::segment_optimizer_defaults());
      auto x = torch::randn({batch, 3, size, size}, opts);
      auto y = torch::randint(0, 2, {batch, size, size}, opts.dtype(torch::kUInt8));
      forward = [=]() mutable { return evax::segmentation_loss(model->forward_train(x).logits, y); };
      keep = model.ptr();
    }
    for (const auto& np : opt->params()) params += np.param.numel();

    auto step = [&] {
      torch::Tensor loss;
      {
        evax::Autocast ac(bf16, device.type());
        loss = forward();
      }
      loss.backward();
      opt->clip_grad_norm(3.0);
      opt->step(1e-4, 0.05);
      opt->zero_grad();
    };
    std::vector<double> times;
    try {
      for (int64_t i = 0; i < warmup; ++i) step();
      sync(device);
      for (int64_t i = 0; i < iters; ++i) {
        const auto t0 = Clock::now();
        step();
        sync(device);
        times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      }
    } catch (const c10::OutOfMemoryError&) {
      std::cout << "{\"impl\": \"evax\", \"oom\": true, \"batch\": " << batch << "}" << std::endl;
      return 5;
    }
    double peak_gb = 0;
    if (device.is_cuda()) {
      // The caching allocator's peak, through the device-generic interface (no CUDA headers).
      namespace cda = c10::CachingDeviceAllocator;
      const auto st = c10::getDeviceAllocator(c10::kCUDA)->getDeviceStats(device.index());
      peak_gb = static_cast<double>(
                    st.allocated_bytes[static_cast<size_t>(cda::StatType::AGGREGATE)].peak) /
                1e9;
    }
    const double s = median(times);
    std::cout << "{\"impl\": \"evax\", \"task\": \"" << task << "\", \"model\": \"" << student
              << "\", \"device\": \"" << device.str() << "\", \"bf16\": " << (bf16 ? "true" : "false")
              << ", \"batch\": " << batch << ", \"size\": " << size << ", \"params\": " << params
              << ", \"step_s\": " << s << ", \"images_per_s\": " << (s > 0 ? batch / s : 0.0)
              << ", \"peak_mem_gb\": " << peak_gb << "}" << std::endl;
  } catch (const evax::Error& e) {
    std::cerr << "bench-gpu-step: " << e.what() << "\n";
    return static_cast<int>(e.exit_code());
  }
  return 0;
}
