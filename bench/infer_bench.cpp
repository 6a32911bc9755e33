// Inference throughput of a registered model: images/s of forward_features + forward_head, in
// float32 or under bf16 autocast (--bf16). Prints one JSON line; bench/inference.py runs it next to
// timm and reports the ratio. With --checkpoint/--input/--features (inference.py --precision) the
// model gets given weights, times the given pixels and writes their pooled features.
#include <chrono>

#include <iostream>

#include "evax/core/cli.h"
#include "evax/core/error.h"
#include "evax/io/safetensors.h"
#include "evax/models/load.h"
#include "evax/models/registry.h"
#include "evax/train/autocast.h"
#include "profile_trace.h"

int main(int argc, char** argv) {
  std::string model = "eva_x_small_patch16";
  int64_t batch = 32, threads = 2, iters = 10, warmup = 2, size = 224;
  std::string checkpoint, input, features;
  bool bf16 = false;
  evax::ArgParser p("bench-infer", "Inference images/s of one model (random weights).");
  p.option("--model", &model, "NAME", "registered model");
  p.option("--batch", &batch, "B", "batch size");
  p.option("--threads", &threads, "T", "intra-op threads");
  p.option("--iters", &iters, "N", "timed iterations");
  p.option("--warmup", &warmup, "N", "untimed iterations");
  p.option("--size", &size, "S", "input side");
  p.flag("--bf16", &bf16, "bf16 autocast (torch.autocast('cpu', torch.bfloat16))");
  p.option("--checkpoint", &checkpoint, "FILE", "weights (default: random, seed 0)");
  p.option("--input", &input, "X.safetensors", "`pixel_values` to time (default: random)");
  p.option("--features", &features, "OUT", "write the input's pooled features (float32)");
  std::string profile;
  p.option("--profile", &profile, "FILE", "write a chrome trace of the timed iterations and exit");
  try {
    if (!p.parse({argv + 1, argv + argc})) return 0;
    torch::set_num_threads(static_cast<int>(threads));
    torch::manual_seed(0);
    auto m = checkpoint.empty() ? evax::model_create(model, 0, size)
                                : evax::model_load(model, checkpoint, 0, size).model;
    m->eval();
    torch::InferenceMode im;
    torch::Tensor x = torch::randn({batch, 3, size, size});
    if (!input.empty()) {
      const evax::TensorMap t = evax::safetensors_load(input);
      const at::Tensor* pv = evax::find(t, "pixel_values");
      if (!pv) evax::raise<evax::DataError>("'", input, "' has no `pixel_values`");
      x = pv->to(torch::kFloat32);
      batch = x.size(0);
    }
    evax::Autocast ac(bf16, torch::kCPU);
    auto run = [&] { return m->forward_head(m->forward_features(x), true); };
    for (int64_t i = 0; i < warmup; ++i) run();
    if (!profile.empty()) {
      evax::bench::profile_trace(profile, iters, [&] { run(); });
      return 0;
    }
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < iters; ++i) run();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!features.empty())
      evax::safetensors_save(features, evax::TensorMap{{"pooled", run().to(torch::kFloat32)}}, {});
    std::cout << "{\"impl\": \"evax\", \"model\": \"" << model << "\", \"batch\": " << batch
              << ", \"threads\": " << threads << ", \"bf16\": " << (bf16 ? "true" : "false")
              << ", \"images_per_s\": " << batch * iters / s << "}" << std::endl;
  } catch (const evax::Error& e) {
    std::cerr << "bench-infer: " << e.what() << "\n";
    return static_cast<int>(e.exit_code());
  }
  return 0;
}
