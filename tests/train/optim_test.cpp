#include <catch2/catch.hpp>

#include <cmath>

#include "evax/train/optim.h"

using namespace evax;

TEST_CASE("AdamW matches torch::optim::AdamW step for step (decay and no-decay groups)") {
  torch::manual_seed(0);
  auto w0 = torch::randn({5, 4}), b0 = torch::randn({4});
  auto a = w0.clone().set_requires_grad(true), ab = b0.clone().set_requires_grad(true);
  auto c = w0.clone().set_requires_grad(true), cb = b0.clone().set_requires_grad(true);
  AdamW ours({{"fc.weight", a}, {"fc.bias", ab}},
             AdamWOptions().beta1(0.9).beta2(0.98).eps(1e-6).weight_decay(0.05));
  // The reference: the same two groups, every option set on both (no defaults merged in).
  auto opts = [](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(1e-2).betas({0.9, 0.98}).eps(1e-6).weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{c}, opts(0.05));
  groups.emplace_back(std::vector<torch::Tensor>{cb}, opts(0.0));
  torch::optim::AdamW ref(std::move(groups), *opts(0.05));
  for (int it = 0; it < 20; ++it) {
    auto x = torch::randn({3, 5});
    ours.zero_grad();
    ref.zero_grad();
    (x.matmul(a) + ab).pow(2).sum().backward();
    (x.matmul(c) + cb).pow(2).sum().backward();
    ours.step(1e-2, 0.05);  // fc.bias is in the no-decay group
    ref.step();
  }
  INFO("max abs diff " << (a - c).abs().max().item<double>() << " / "
                       << (ab - cb).abs().max().item<double>());
  CHECK(torch::allclose(a, c, 1e-6, 1e-6));
  CHECK(torch::allclose(ab, cb, 1e-6, 1e-6));
}

TEST_CASE("weight decay groups follow EVA-02: no decay for 1-D, bias, pos_embed, cls_token") {
  CHECK(no_weight_decay("blocks.0.norm1.weight", torch::zeros({4})));
  CHECK(no_weight_decay("blocks.0.attn.proj.bias", torch::zeros({4})));
  CHECK(no_weight_decay("pos_embed", torch::zeros({1, 5, 4})));
  CHECK(no_weight_decay("cls_token", torch::zeros({1, 1, 4})));
  CHECK_FALSE(no_weight_decay("mask_token", torch::zeros({1, 1, 4})));
  CHECK_FALSE(no_weight_decay("blocks.0.attn.qkv.weight", torch::zeros({12, 4})));
}

TEST_CASE("gradient clipping scales to the max norm and reports the norm before clipping") {
  auto p = torch::zeros({2}).set_requires_grad(true);
  AdamW opt({{"p", p}}, AdamWOptions());
  p.mutable_grad() = torch::tensor({3.0f, 4.0f});
  CHECK(opt.clip_grad_norm(1.0) == Approx(5.0));
  CHECK(p.grad().norm().item<double>() == Approx(1.0).epsilon(1e-5));
  CHECK(opt.clip_grad_norm(10.0) == Approx(1.0).epsilon(1e-5));
  CHECK(p.grad().norm().item<double>() == Approx(1.0).epsilon(1e-5));
}

TEST_CASE("state round-trips exactly") {
  torch::manual_seed(1);
  auto p = torch::randn({3, 3}).set_requires_grad(true);
  AdamW a({{"p", p}}, AdamWOptions());
  p.mutable_grad() = torch::randn({3, 3});
  a.step(1e-3, 0.05);
  auto q = p.detach().clone().set_requires_grad(true);
  AdamW b({{"p", q}}, AdamWOptions());
  b.load_state(a.state());
  CHECK(b.steps() == 1);
  auto g = torch::randn({3, 3});
  p.mutable_grad() = g.clone();
  q.mutable_grad() = g.clone();
  a.step(1e-3, 0.05);
  b.step(1e-3, 0.05);
  CHECK(torch::equal(p, q));
  CHECK_THROWS_AS(b.load_state({}), DataError);
}

TEST_CASE("cosine schedule is asuka's: linspace warmup, then cosine to the final value") {
  const double base = 1.5e-3, fin = 1e-5;
  const int64_t total = 100, warm = 10;
  CHECK(cosine_schedule(base, fin, 0, total, warm) == 0.0);
  CHECK(cosine_schedule(base, fin, 9, total, warm) == Approx(base));  // linspace endpoint
  CHECK(cosine_schedule(base, fin, 5, total, warm) == Approx(base * 5 / 9));
  CHECK(cosine_schedule(base, fin, 10, total, warm) == Approx(base));
  const int64_t i = 45;
  CHECK(cosine_schedule(base, fin, warm + i, total, warm) ==
        Approx(fin + 0.5 * (base - fin) * (1 + std::cos(M_PI * i / 90.0))));
  CHECK(cosine_schedule(base, fin, 99, total, warm) > fin);
  CHECK(cosine_schedule(0.05, 0.05, 50, total, 0) == Approx(0.05));  // constant wd
}
