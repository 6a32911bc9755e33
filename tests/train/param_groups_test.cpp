// Parameter groups: grouping by (lr scale, decay) keeping the module's order, and AdamW with a
// per-group lr scale equal to torch::optim::AdamW with per-group lr = base × scale.
#include <catch2/catch.hpp>

#include "evax/train/optim.h"

using namespace evax;

TEST_CASE("make_param_groups groups by lr scale and decay, in first-appearance order") {
  std::vector<NamedParam> ps = {{"a.weight", torch::zeros({2, 2})}, {"a.bias", torch::zeros({2})},
                                {"b.weight", torch::zeros({2, 2})}, {"c.weight", torch::zeros({2, 2})},
                                {"c.bias", torch::zeros({2})}};
  auto scale = [](const std::string& n) { return n[0] == 'b' ? 0.5 : 1.0; };
  ParamGroups g = make_param_groups(ps, 0.05, scale, no_weight_decay);
  REQUIRE(g.specs.size() == 3);
  CHECK(g.params.size() == 5);
  CHECK(g.params[2].name == "b.weight");  // module order kept
  CHECK(g.names(0) == std::vector<std::string>{"a.weight", "c.weight"});
  CHECK(g.names(1) == std::vector<std::string>{"a.bias", "c.bias"});
  CHECK(g.names(2) == std::vector<std::string>{"b.weight"});
  CHECK(g.specs[0].lr_scale == 1.0);
  CHECK(g.specs[0].weight_decay == 0.05);
  CHECK(g.specs[1].weight_decay == 0.0);
  CHECK(g.specs[2].lr_scale == 0.5);
}

TEST_CASE("AdamW with lr scales equals torch AdamW with per-group lr, and set_lr scales each group") {
  torch::manual_seed(1);
  auto w0 = torch::randn({5, 4}), b0 = torch::randn({4}), v0 = torch::randn({4, 3});
  auto a = w0.clone().set_requires_grad(true), ab = b0.clone().set_requires_grad(true);
  auto av = v0.clone().set_requires_grad(true);
  auto c = w0.clone().set_requires_grad(true), cb = b0.clone().set_requires_grad(true);
  auto cv = v0.clone().set_requires_grad(true);
  const double base = 1e-2;
  auto scale = [](const std::string& n) { return n.rfind("head", 0) == 0 ? 1.0 : 0.25; };
  AdamW ours(make_param_groups({{"fc.weight", a}, {"fc.bias", ab}, {"head.weight", av}}, 0.05, scale,
                               no_weight_decay),
             AdamWOptions().lr(base).beta1(0.9).beta2(0.999).eps(1e-8));
  REQUIRE(ours.groups().specs.size() == 3);
  auto opts = [](double lr, double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(lr).betas({0.9, 0.999}).eps(1e-8).weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{c}, opts(base * 0.25, 0.05));
  groups.emplace_back(std::vector<torch::Tensor>{cb}, opts(base * 0.25, 0.0));
  groups.emplace_back(std::vector<torch::Tensor>{cv}, opts(base, 0.05));
  torch::optim::AdamW ref(std::move(groups), *opts(base, 0.05));
  for (int it = 0; it < 20; ++it) {
    auto x = torch::randn({3, 5});
    ours.zero_grad();
    ref.zero_grad();
    (x.matmul(a) + ab).matmul(av).pow(2).sum().backward();
    (x.matmul(c) + cb).matmul(cv).pow(2).sum().backward();
    ours.set_lr(base);
    ours.step();
    ref.step();
  }
  CHECK(ours.group_lr(0) == base * 0.25);
  CHECK(ours.group_lr(2) == base);
  const double d = std::max({(a - c).abs().max().item<double>(), (ab - cb).abs().max().item<double>(),
                             (av - cv).abs().max().item<double>()});
  INFO("max abs diff " << d);
  CHECK(d <= 1e-6);
  // A weight-decay schedule reaches only the decayed groups.
  ours.set_weight_decay(0.1);
  CHECK(ours.group_weight_decay(0) == 0.1);
  CHECK(ours.group_weight_decay(1) == 0.0);
}
