// On a CUDA GPU: the loader's device prefetch (pinned memory, copy on a side stream, the consumer's
// stream waiting on an event) hands out the same batches as the CPU loader. Skipped (visibly)
// without a CUDA device; run by tools/gpu_check.sh on a lent GPU machine.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <vector>

#include "evax/data/loader.h"
#include "skip.h"

namespace {

// Large enough (4 MB a batch) that a missing wait on the copy would be seen as stale data.
evax::Sample big_sample(int64_t index, evax::Rng& rng) {
  evax::Sample s;
  s.image = torch::full({1, 512, 512}, static_cast<float>(index));
  s.image[0][0][0] = static_cast<float>(rng.uniform());
  s.mask = torch::full({512, 512}, index % 3, torch::kLong);
  s.labels = torch::full({3}, static_cast<float>(index % 2));
  s.label_mask = torch::ones({3});
  return s;
}

}  // namespace

TEST_CASE("GPU: the loader prefetches batches onto the device, equal to the CPU loader's") {
  if (!torch::cuda::is_available()) EVAX_SKIP("no CUDA device");
  for (int workers : {0, 3}) {
    INFO("workers " << workers);
    evax::LoaderOptions o;
    o.batch_size = 4;
    o.workers = workers;
    o.seed = 5;
    evax::Loader cpu(37, big_sample, o);
    o.device = torch::Device(torch::kCUDA, 0);
    evax::Loader gpu(37, big_sample, o);
    for (int64_t epoch : {0, 1}) {
      cpu.start_epoch(epoch);
      gpu.start_epoch(epoch);
      int64_t n = 0;
      while (auto c = cpu.next()) {
        auto g = gpu.next();
        REQUIRE(g.has_value());
        REQUIRE(g->image.is_cuda());
        REQUIRE(g->mask.is_cuda());
        CHECK(g->indices.is_cpu());
        // Work on the current stream right away, as a training step would.
        auto doubled = g->image * 2;
        CHECK(torch::equal(doubled.cpu(), c->image * 2));
        CHECK(torch::equal(g->mask.cpu(), c->mask));
        CHECK(torch::equal(g->labels.cpu(), c->labels));
        CHECK(torch::equal(g->indices, c->indices));
        ++n;
      }
      CHECK_FALSE(gpu.next().has_value());
      CHECK(n == cpu.batches_per_epoch());
    }
  }
}
