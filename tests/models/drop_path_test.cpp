// Stochastic depth in training: the block computes its residual branches only for the samples the
// mask keeps (CPU), which must equal timm's formula x + branch(x) · mask / keep with the same draws
// from the same generator, in the outputs and in every gradient.
#include <catch2/catch.hpp>

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include "evax/models/registry.h"
#include "evax/models/vit.h"

using namespace evax;

namespace {

// timm's drop_path: one Bernoulli(keep) per sample, scaled by 1 / keep in the tensor's dtype.
torch::Tensor timm_drop_path(const torch::Tensor& x, double p) {
  const double keep = 1.0 - p;
  auto m = torch::empty({x.size(0), 1, 1}, x.options()).bernoulli_(keep);
  m.div_(keep);
  return x * m;
}

}  // namespace

TEST_CASE("drop path: the kept-samples block equals timm's masked formula, outputs and gradients") {
  ViTOptions o = model_options("eva_x_tiny_patch16");
  o.img_size(64).depth(1);
  VisionTransformer vit(o);
  auto block = vit->blocks->ptr<BlockImpl>(0);
  REQUIRE(block != nullptr);
  const double p = 0.5;
  block->drop_path = p;
  block->train();
  const torch::Tensor rope = vit->rope_table(4, 4, torch::kCPU);
  torch::manual_seed(0);
  const torch::Tensor x0 = torch::randn({8, 17, o.embed_dim()});

  int partial = 0;  // seeds where a branch kept some samples but not all
  for (uint64_t seed : {1, 2, 3, 4, 5, 6}) {
    auto run = [&](bool reference) {
      for (auto& prm : block->parameters()) prm.mutable_grad() = torch::Tensor();
      torch::Tensor x = x0.clone().requires_grad_(true);
      torch::manual_seed(seed);
      torch::Tensor out;
      if (reference) {
        auto y = x + timm_drop_path(block->attn->forward(block->norm1->forward(x), rope), p);
        out = y + timm_drop_path(block->mlp->forward(block->norm2->forward(y)), p);
      } else {
        out = block->forward(x, rope);
      }
      // A loss that weighs every output element differently.
      (out * torch::linspace(-1, 1, out.numel()).view(out.sizes())).sum().backward();
      std::vector<torch::Tensor> grads{x.grad().clone()};
      for (auto& prm : block->parameters()) grads.push_back(prm.grad().clone());
      return std::make_pair(out.detach(), grads);
    };
    torch::manual_seed(seed);
    const auto m1 = torch::empty({8}).bernoulli_(0.5), m2 = torch::empty({8}).bernoulli_(0.5);
    const double k1 = m1.sum().item<double>(), k2 = m2.sum().item<double>();
    partial += (k1 > 0 && k1 < 8) || (k2 > 0 && k2 < 8);
    const auto [ref_out, ref_grads] = run(true);
    const auto [out, grads] = run(false);
    INFO("seed " << seed << ": " << k1 << " and " << k2 << " of 8 kept");
    CHECK((out - ref_out).abs().max().item<double>() < 1e-5);
    REQUIRE(grads.size() == ref_grads.size());
    for (size_t i = 0; i < grads.size(); ++i) {
      INFO("gradient " << i);
      CHECK((grads[i] - ref_grads[i]).abs().max().item<double>() <
            1e-5 * (1 + ref_grads[i].abs().max().item<double>()));
    }
  }
  CHECK(partial >= 3);  // the kept-subset path ran, not only all-kept / all-dropped
}

TEST_CASE("drop path: under CPU bf16 autocast the kept-samples block runs and matches the formula") {
  ViTOptions o = model_options("eva_x_tiny_patch16");
  o.img_size(64).depth(1);
  VisionTransformer vit(o);
  auto block = vit->blocks->ptr<BlockImpl>(0);
  block->drop_path = 0.5;
  block->train();
  const torch::Tensor rope = vit->rope_table(4, 4, torch::kCPU);
  torch::manual_seed(0);
  const torch::Tensor x = torch::randn({8, 17, o.embed_dim()});
  auto run = [&](bool reference) {
    at::autocast::set_autocast_enabled(at::kCPU, true);
    at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
    torch::manual_seed(2);  // partially kept for this seed (checked by the first test's loop)
    torch::Tensor out;
    if (reference) {
      auto y = x + timm_drop_path(block->attn->forward(block->norm1->forward(x), rope), 0.5);
      out = y + timm_drop_path(block->mlp->forward(block->norm2->forward(y)), 0.5);
    } else {
      out = block->forward(x, rope);
    }
    at::autocast::set_autocast_enabled(at::kCPU, false);
    at::autocast::clear_cache();
    return out.detach().to(torch::kFloat32);
  };
  torch::manual_seed(2);
  const auto m1 = torch::empty({8}).bernoulli_(0.5);
  const double k1 = m1.sum().item<double>();
  REQUIRE((k1 > 0 && k1 < 8));  // the kept-subset path (index_add of a bf16 branch) runs
  const torch::Tensor ref = run(true), out = run(false);
  CHECK(out.scalar_type() == torch::kFloat32);
  // bf16 GEMMs on sub-batches round like the full batch's rows, up to bf16's precision.
  CHECK((out - ref).abs().max().item<double>() < 2e-2 * (1 + ref.abs().max().item<double>()));
}

