#include <catch2/catch.hpp>

#include <cmath>

#include "evax/pretrain/masking.h"
#include "evax/pretrain/objective.h"
#include "evax/models/registry.h"
#include "evax/models/vit.h"
#include "evax/train/autocast.h"

using namespace evax;

namespace {
int64_t count(const torch::Tensor& m) { return m.sum().item<int64_t>(); }
}  // namespace

TEST_CASE("EVA-X default: 30% of 14x14 = 59 patches") {
  MaskingOptions o;
  CHECK(o.num_masked() == 59);
  CHECK(MaskingOptions().grid(16).ratio(0.4).num_masked() == 102);
}

TEST_CASE("uniform masking is exact and deterministic") {
  MaskingOptions o;
  o.kind(MaskKind::kUniform);
  Rng a(5, {1}), b(5, {1}), c(6, {1});
  auto m1 = mask_generate(o, a), m2 = mask_generate(o, b), m3 = mask_generate(o, c);
  CHECK(count(m1) == 59);
  CHECK(torch::equal(m1, m2));
  CHECK_FALSE(torch::equal(m1, m3));
  // Every patch is equally likely: over many masks each cell is hit ~30% of the time.
  auto hits = torch::zeros({14, 14}, torch::kFloat64);
  for (int i = 0; i < 2000; ++i) {
    Rng r(1, {static_cast<uint64_t>(i)});
    hits += mask_generate(o, r).to(torch::kFloat64);
  }
  auto freq = hits / 2000;
  CHECK(freq.min().item<double>() > 0.24);
  CHECK(freq.max().item<double>() < 0.36);
}

TEST_CASE("block masking: budget, blocks, realised ratio") {
  MaskingOptions o;
  double total = 0;
  int short_count = 0;
  for (int i = 0; i < 500; ++i) {
    Rng r(3, {static_cast<uint64_t>(i)});
    auto m = mask_generate(o, r);
    const int64_t n = count(m);
    CHECK(n <= 59);
    CHECK(n >= 16);  // at least one minimum block
    short_count += n < 59;
    total += n;
  }
  const double mean_ratio = total / 500 / 196;
  INFO("realised mask ratio " << mean_ratio << ", short of budget in " << short_count << "/500");
  CHECK(mean_ratio > 0.28);
  CHECK(mean_ratio <= 0.3 + 1e-9);
}

TEST_CASE("one block round masks a rectangle of area >= min_block within the budget") {
  MaskingOptions o;
  std::vector<uint8_t> mask(196, 0);
  Rng r(11);
  int64_t added = mask_block_round(o, r, 59, mask.data());
  REQUIRE(added >= 1);
  // The masked cells form exactly one axis-aligned rectangle.
  int64_t top = 14, bottom = -1, left = 14, right = -1, n = 0;
  for (int64_t i = 0; i < 14; ++i)
    for (int64_t j = 0; j < 14; ++j)
      if (mask[i * 14 + j]) {
        top = std::min(top, i), bottom = std::max(bottom, i);
        left = std::min(left, j), right = std::max(right, j), ++n;
      }
  CHECK(n == added);
  CHECK(n == (bottom - top + 1) * (right - left + 1));
  CHECK(n <= 59);
  // A round with a budget of 0 new patches can add nothing.
  std::vector<uint8_t> full(196, 1);
  CHECK(mask_block_round(o, r, 59, full.data()) == 0);
}

TEST_CASE("cosine loss equals the direct formula at masked positions only") {
  torch::manual_seed(0);
  auto pred = torch::randn({2, 5, 7}), tgt = torch::randn({2, 5, 7});
  auto mask = torch::tensor({1, 0, 1, 0, 0, 0, 1, 1, 1, 0}, torch::kBool).reshape({2, 5});
  double sum = 0;
  int n = 0;
  for (int b = 0; b < 2; ++b)
    for (int i = 0; i < 5; ++i) {
      if (!mask[b][i].item<bool>()) continue;
      auto p = pred[b][i], t = tgt[b][i];
      sum += (p.dot(t) / (p.norm() * t.norm())).item<double>();
      ++n;
    }
  CHECK(mim_cosine_loss(pred, tgt, mask).item<double>() == Approx(-sum / n).epsilon(1e-6));
  // Unmasked positions do not matter.
  auto tgt2 = tgt.clone();
  tgt2[0][1] += 100;
  CHECK(mim_cosine_loss(pred, tgt2, mask).item<double>() ==
        Approx(mim_cosine_loss(pred, tgt, mask).item<double>()));
  // Perfect prediction gives -1 (also in bf16 inputs: computed in fp32).
  CHECK(mim_cosine_loss(tgt.to(torch::kBFloat16), tgt.to(torch::kBFloat16), mask).item<double>() ==
        Approx(-1.0).epsilon(1e-5));
}

TEST_CASE("pixel targets are per-patch normalised") {
  auto x = torch::rand({2, 3, 32, 32});
  x.select(1, 1).copy_(x.select(1, 0));
  x.select(1, 2).copy_(x.select(1, 0));
  PixelTarget t(16);
  auto y = t.compute(x);
  REQUIRE(y.sizes() == torch::IntArrayRef({2, 4, 256}));
  CHECK(y.mean(-1).abs().max().item<double>() < 1e-5);
  CHECK(y.std(-1).sub(1).abs().max().item<double>() < 1e-3);
  // Patch (0, 1) of image 0 is pixels [0:16, 16:32].
  auto p = x[0][0].slice(0, 0, 16).slice(1, 16, 32).reshape({-1});
  auto ref = (p - p.mean()) / (p.var() + 1e-6).sqrt();
  CHECK(torch::allclose(y[0][1], ref, 1e-5, 1e-5));
}

TEST_CASE("bf16 autocast: the MIM loss stays float32 and close to the fp32 loss") {
  torch::manual_seed(1);
  auto opts = model_options("eva_x_tiny_patch16");
  opts.depth(2).img_size(64).mim_dim(opts.embed_dim()).final_norm(true);
  VisionTransformer student(opts);
  student->eval();
  const auto x = torch::randn({2, 3, 64, 64});
  MaskingOptions mo;
  mo.kind(MaskKind::kUniform).grid(4).ratio(0.5);
  Rng rng(3, {0});
  const auto mask = torch::stack({mask_generate(mo, rng), mask_generate(mo, rng)}).flatten(1);
  const auto target = torch::randn({2, 16, opts.embed_dim()});
  const auto ref = mim_cosine_loss(student->forward_mim(x, mask), target, mask);
  torch::Tensor low, pred;
  {
    Autocast ac(true, at::kCPU);
    pred = student->forward_mim(x, mask);
    low = mim_cosine_loss(pred, target, mask);
  }
  CHECK(pred.scalar_type() == torch::kBFloat16);  // autocast did run the student in bf16
  CHECK(low.scalar_type() == torch::kFloat32);     // and the loss in float32
  const double d = std::abs(low.item<double>() - ref.item<double>());
  INFO("fp32 loss " << ref.item<double>() << ", bf16 autocast loss " << low.item<double>());
  CHECK(d > 0);
  CHECK(d < 0.02);
}
