// Data-pipeline throughput: decode a PNG + RandomResizedCrop 224 + flip + RandAugment
// (rand-m6-mstd0.5-inc1) + normalise, through the evax Loader. Prints one JSON line;
// bench/loader.py runs it next to PIL + timm transforms in a torch DataLoader.
#include <chrono>
#include <iostream>

#include "evax/core/cli.h"
#include "evax/core/error.h"
#include "evax/data/loader.h"
#include "evax/data/transforms.h"
#include "evax/io/image.h"

int main(int argc, char** argv) {
  std::string image;
  int64_t n = 256, workers = 2, batch = 32;
  evax::ArgParser p("bench-loader", "Training-transform throughput of one PNG, images/s.");
  p.option("--image", &image, "PATH", "input image").required();
  p.option("--n", &n, "N", "images per run");
  p.option("--workers", &workers, "W", "loader threads");
  p.option("--batch", &batch, "B", "batch size");
  try {
    if (!p.parse({argv + 1, argv + argc})) return 0;
    evax::ClassifyAugmentOptions aug;
    evax::LoaderOptions lo;
    lo.batch_size = batch;
    lo.workers = static_cast<int>(workers);
    auto sample = [&](int64_t, evax::Rng& rng) {
      evax::Sample s;
      s.image = evax::classify_train_transform(evax::unit_to_tensor(evax::image_read_unit(image, {})),
                                               rng, aug);
      return s;
    };
    evax::Loader loader(n, sample, lo);
    loader.start_epoch(0);  // warm-up epoch: thread start, codec init
    while (loader.next()) {
    }
    auto t0 = std::chrono::steady_clock::now();
    loader.start_epoch(1);
    int64_t seen = 0;
    while (auto b = loader.next()) seen += b->size();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << "{\"impl\": \"evax\", \"workers\": " << workers << ", \"images_per_s\": " << seen / s
              << "}" << std::endl;
  } catch (const evax::Error& e) {
    std::cerr << "bench-loader: " << e.what() << "\n";
    return static_cast<int>(e.exit_code());
  }
  return 0;
}
