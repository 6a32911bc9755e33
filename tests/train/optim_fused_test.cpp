// AdamW's fused path (ATen's _fused_adamw_, used on CUDA): forced on the CPU ("on"), it follows
// the written-out update within float32 rounding over several steps, groups with their own lr
// scale and weight decay included; "auto" keeps the CPU on the written-out update.
#include <catch2/catch.hpp>

#include "evax/train/optim.h"

using namespace evax;

namespace {

ParamGroups two_groups(const torch::Tensor& w, const torch::Tensor& b) {
  return make_param_groups(
      {{"fc.weight", w}, {"fc.bias", b}}, 0.05,
      [](const std::string& n) { return n == "fc.bias" ? 0.5 : 1.0; }, no_weight_decay);
}

}  // namespace

TEST_CASE("AdamW fused kernel (forced on the CPU) equals the written-out update") {
  torch::manual_seed(0);
  const auto w0 = torch::randn({6, 4}), b0 = torch::randn({4});
  auto a = w0.clone().set_requires_grad(true), ab = b0.clone().set_requires_grad(true);
  auto c = w0.clone().set_requires_grad(true), cb = b0.clone().set_requires_grad(true);
  const auto o = AdamWOptions().lr(1e-2).beta1(0.9).beta2(0.98).eps(1e-6);
  AdamW plain(two_groups(a, ab), AdamWOptions(o).fused("auto"));
  AdamW fused(two_groups(c, cb), AdamWOptions(o).fused("on"));
  CHECK_FALSE(plain.fused());  // "auto" on the CPU: the bit-exact path stays
  CHECK(fused.fused());
  for (int it = 0; it < 10; ++it) {
    const auto x = torch::randn({3, 6});
    plain.zero_grad();
    fused.zero_grad();
    (x.matmul(a) + ab).pow(2).sum().backward();
    (x.matmul(c) + cb).pow(2).sum().backward();
    plain.step(1e-2 * (1 + it % 3), 0.05);
    fused.step(1e-2 * (1 + it % 3), 0.05);
  }
  const double dw = (a - c).abs().max().item<double>(), db = (ab - cb).abs().max().item<double>();
  INFO("max abs difference after 10 steps: weight " << dw << ", bias " << db);
  CHECK(dw <= 1e-6);
  CHECK(db <= 1e-6);
  CHECK((a - w0).abs().min().item<double>() > 1e-3);  // every weight moved
  // The moments are the same state either way (checkpoints are interchangeable); exp_avg_sq
  // differs in its last bits (the kernel's own operation order), so the fused path did run.
  const TensorMap sp = plain.state(), sf = fused.state();
  REQUIRE(sp.size() == sf.size());
  for (size_t i = 0; i < sp.size(); ++i) {
    INFO(sp[i].first);
    CHECK(sp[i].first == sf[i].first);
    const auto x = sp[i].second.to(torch::kDouble), y = sf[i].second.to(torch::kDouble);
    CHECK((x - y).abs().max().item<double>() <= 1e-6 * (1 + x.abs().max().item<double>()));
  }
}

TEST_CASE("AdamW fused: a bad value is a config error") {
  auto w = torch::zeros({2}).set_requires_grad(true);
  CHECK_THROWS_AS(AdamW({{"w", w}}, AdamWOptions().fused("yes")), ConfigError);
}
