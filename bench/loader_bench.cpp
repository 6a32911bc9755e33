// Data-pipeline throughput: decode a PNG + RandomResizedCrop 224 + flip + RandAugment
// (rand-m6-mstd0.5-inc1) + normalise, through the evax Loader. Prints one JSON line;
// bench/loader.py runs it next to PIL + timm transforms in a torch DataLoader.
#include <chrono>
#include <iostream>

#include "evax/core/cli.h"
#include "evax/core/error.h"
#include "evax/data/loader.h"
#include "evax/data/transforms.h"
#include "evax/data/rand_augment.h"
#include "evax/io/image.h"

namespace {

// Milliseconds per image of each stage of the sample function, on this thread.
void profile(const std::string& image, int64_t n, const evax::ClassifyAugmentOptions& o) {
  using Clock = std::chrono::steady_clock;
  at::set_num_threads(1);  // as in a loader worker
  double t[5] = {0, 0, 0, 0, 0};
  evax::Rng rng(1, {});
  auto lap = [](Clock::time_point& a) {
    const auto b = Clock::now();
    const double ms = std::chrono::duration<double, std::milli>(b - a).count();
    a = b;
    return ms;
  };
  for (int64_t i = 0; i < n; ++i) {
    auto a = Clock::now();
    const cv::Mat unit = evax::image_read_unit(image, {});
    t[0] += lap(a);
    const torch::Tensor x = evax::unit_to_tensor(unit);
    t[1] += lap(a);
    const evax::CropBox box = evax::random_resized_crop_box(rng, x.size(1), x.size(2), o.scale, o.ratio);
    torch::Tensor y = evax::resized_crop(x, box, o.size, o.size);
    if (rng.bernoulli(o.flip_p)) y = evax::hflip(y);
    t[2] += lap(a);
    y = evax::rand_augment(y, rng, o.rand_augment_options);
    t[3] += lap(a);
    y = evax::normalize(y, o.mean, o.std, 3);
    t[4] += lap(a);
  }
  const char* names[5] = {"read+decode", "to_tensor", "crop+resize+flip", "rand_augment",
                          "normalize"};
  double total = 0;
  for (int k = 0; k < 5; ++k) {
    std::cout << names[k] << ": " << t[k] / n << " ms\n";
    total += t[k] / n;
  }
  std::cout << "total: " << total << " ms/image on one thread\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::string image;
  int64_t n = 256, workers = 2, batch = 32;
  evax::ArgParser p("bench-loader", "Training-transform throughput of one PNG, images/s.");
  p.option("--image", &image, "PATH", "input image").required();
  p.option("--n", &n, "N", "images per run");
  p.option("--workers", &workers, "W", "loader threads");
  p.option("--batch", &batch, "B", "batch size");
  bool prof = false;
  p.flag("--profile", &prof, "time each stage on one thread instead");
  try {
    if (!p.parse({argv + 1, argv + argc})) return 0;
    evax::ClassifyAugmentOptions aug;
    if (prof) {
      profile(image, n, aug);
      return 0;
    }
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
