// One MIM pretraining step of an EVA-X student with a frozen ViT-B teacher: images/s and peak
// memory. Prints one JSON line; bench/pretrain_step.py runs it next to the same step in timm.
#include <chrono>
#include <fstream>
#include <iostream>

#include "evax/core/cli.h"
#include "evax/core/error.h"
#include "evax/core/rng.h"
#include "evax/models/registry.h"
#include "evax/pretrain/masking.h"
#include "evax/pretrain/objective.h"
#include "evax/train/optim.h"

int main(int argc, char** argv) {
  std::string student = "eva_x_small_patch16", teacher = "mgca_vit_base_patch16";
  int64_t batch = 8, threads = 2, iters = 5, warmup = 1;
  evax::ArgParser p("bench-pretrain", "One MIM pretraining step (random weights), images/s.");
  p.option("--student", &student, "NAME", "student model");
  p.option("--teacher", &teacher, "NAME", "teacher model");
  p.option("--batch", &batch, "B", "batch size");
  p.option("--threads", &threads, "T", "intra-op threads");
  p.option("--iters", &iters, "N", "timed steps");
  p.option("--warmup", &warmup, "N", "untimed steps");
  try {
    if (!p.parse({argv + 1, argv + argc})) return 0;
    torch::set_num_threads(static_cast<int>(threads));
    torch::manual_seed(0);
    evax::TeacherTarget target(evax::model_create(teacher), teacher);
    auto so = evax::model_options(student);
    so.mim_dim(target.dim()).final_norm(true).stop_grad_conv1(true);
    evax::VisionTransformer model(so);
    std::vector<evax::NamedParam> params;
    for (auto& np : model->named_parameters()) params.push_back({np.key(), np.value()});
    evax::AdamW opt(params, evax::AdamWOptions());
    auto x = torch::randn({batch, 3, 224, 224}), xt = torch::randn({batch, 3, 224, 224});
    std::vector<torch::Tensor> masks;
    for (int64_t i = 0; i < batch; ++i) {
      evax::Rng rng(0, {static_cast<uint64_t>(i)});
      masks.push_back(evax::mask_generate(evax::MaskingOptions(), rng).flatten());
    }
    auto mask = torch::stack(masks);
    model->train();
    auto step = [&] {
      opt.zero_grad();
      auto tgt = target.compute(xt);
      auto loss = evax::mim_cosine_loss(model->forward_mim(x, mask), tgt, mask);
      loss.backward();
      opt.clip_grad_norm(3.0);
      opt.step(1e-3, 0.05);
    };
    for (int64_t i = 0; i < warmup; ++i) step();
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < iters; ++i) step();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // VmHWM, not getrusage: ru_maxrss survives fork+exec, so a child of a big Python process
    // would report the parent's peak.
    std::ifstream status("/proc/self/status");
    std::string line;
    double hwm_mb = 0;
    while (std::getline(status, line))
      if (line.rfind("VmHWM:", 0) == 0) hwm_mb = std::stod(line.substr(6)) / 1024.0;
    std::cout << "{\"impl\": \"evax\", \"images_per_s\": " << batch * iters / s
              << ", \"peak_rss_mb\": " << hwm_mb << "}" << std::endl;
  } catch (const evax::Error& e) {
    std::cerr << "bench-pretrain: " << e.what() << "\n";
    return static_cast<int>(e.exit_code());
  }
  return 0;
}
