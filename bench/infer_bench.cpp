// Inference throughput of a registered model: images/s of forward_features + forward_head.
// Prints one JSON line; bench/inference.py runs it next to timm and reports the ratio.
#include <chrono>
#include <iostream>

#include "evax/core/cli.h"
#include "evax/core/error.h"
#include "evax/models/registry.h"

int main(int argc, char** argv) {
  std::string model = "eva_x_small_patch16";
  int64_t batch = 32, threads = 2, iters = 10, warmup = 2, size = 224;
  evax::ArgParser p("bench-infer", "Inference images/s of one model (random weights).");
  p.option("--model", &model, "NAME", "registered model");
  p.option("--batch", &batch, "B", "batch size");
  p.option("--threads", &threads, "T", "intra-op threads");
  p.option("--iters", &iters, "N", "timed iterations");
  p.option("--warmup", &warmup, "N", "untimed iterations");
  p.option("--size", &size, "S", "input side");
  try {
    if (!p.parse({argv + 1, argv + argc})) return 0;
    torch::set_num_threads(static_cast<int>(threads));
    torch::manual_seed(0);
    auto m = evax::model_create(model, 0, size);
    m->eval();
    torch::InferenceMode im;
    auto x = torch::randn({batch, 3, size, size});
    for (int64_t i = 0; i < warmup; ++i) m->forward_head(m->forward_features(x), true);
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < iters; ++i) m->forward_head(m->forward_features(x), true);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << "{\"impl\": \"evax\", \"model\": \"" << model << "\", \"batch\": " << batch
              << ", \"threads\": " << threads << ", \"images_per_s\": " << batch * iters / s
              << "}" << std::endl;
  } catch (const evax::Error& e) {
    std::cerr << "bench-infer: " << e.what() << "\n";
    return static_cast<int>(e.exit_code());
  }
  return 0;
}
