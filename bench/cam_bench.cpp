// Grad-CAM throughput: maps/s of evax's grad_cam (EVA-X's set-up: last block's norm1, top class)
// on an EVA-X classifier with random weights. Prints one JSON line; bench/cam.py runs it next to
// the grad-cam package on timm's Eva and reports the ratio.
#include <chrono>
#include <iostream>

#include "evax/classify/model.h"
#include "evax/core/cli.h"
#include "evax/core/error.h"
#include "evax/explain/gradcam.h"

int main(int argc, char** argv) {
  std::string model = "eva_x_small_patch16";
  int64_t batch = 16, threads = 2, iters = 5, warmup = 1, size = 224, classes = 14;
  evax::ArgParser p("bench-cam", "Grad-CAM maps/s of one classifier (random weights).");
  p.option("--model", &model, "NAME", "registered backbone");
  p.option("--batch", &batch, "B", "images per call");
  p.option("--threads", &threads, "T", "intra-op threads");
  p.option("--iters", &iters, "N", "timed calls");
  p.option("--warmup", &warmup, "N", "untimed calls");
  p.option("--size", &size, "S", "input side");
  p.option("--classes", &classes, "K", "head classes");
  try {
    if (!p.parse({argv + 1, argv + argc})) return 0;
    torch::set_num_threads(static_cast<int>(threads));
    torch::manual_seed(0);
    auto m = evax::classifier_build(evax::ClassifierOptions()
                                        .model(model)
                                        .img_size(size)
                                        .num_classes(classes)
                                        .drop_path(0));
    auto x = torch::randn({batch, 3, size, size});
    for (int64_t i = 0; i < warmup; ++i) evax::grad_cam(*m, x, {});
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < iters; ++i) evax::grad_cam(*m, x, {});
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << "{\"impl\": \"evax\", \"model\": \"" << model << "\", \"batch\": " << batch
              << ", \"threads\": " << threads << ", \"maps_per_s\": " << batch * iters / s << "}"
              << std::endl;
  } catch (const evax::Error& e) {
    std::cerr << "bench-cam: " << e.what() << "\n";
    return static_cast<int>(e.exit_code());
  }
  return 0;
}
