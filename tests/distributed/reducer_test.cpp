// GradReducer and broadcast_parameters with two ranks as threads over a HashStore.
#include <catch2/catch.hpp>

#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/torch.h>

#include "dist_test_util.h"
#include "evax/distributed/reducer.h"

using evax::test::run_ranks;

namespace {

/// A small model with the awkward cases: `side` is used by rank 0 only, `unused` by no rank and
/// `frozen` does not require grad.
struct NetImpl : torch::nn::Module {
  NetImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(10, 16));
    fc2 = register_module("fc2", torch::nn::Linear(16, 3));
    side = register_module("side", torch::nn::Linear(10, 3));
    unused = register_module("unused", torch::nn::Linear(4, 4));
    frozen = register_parameter("frozen", torch::ones({3}), /*requires_grad=*/false);
  }
  torch::Tensor forward(const torch::Tensor& x, bool use_side) {
    auto y = fc2(torch::relu(fc1(x))) * frozen;
    return use_side ? y + side(x) : y;
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, side{nullptr}, unused{nullptr};
  torch::Tensor frozen;
};
TORCH_MODULE(Net);

std::vector<torch::Tensor> grads_of(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> g;
  for (const auto& p : params) g.push_back(p.grad().defined() ? p.grad().clone() : torch::Tensor());
  return g;
}

void step(Net& net, const torch::Tensor& x, const torch::Tensor& y, bool use_side) {
  net->zero_grad(/*set_to_none=*/true);
  torch::mse_loss(net->forward(x, use_side), y).backward();
}

}  // namespace

TEST_CASE("GradReducer: every rank ends with the mean gradient, bit-identical across ranks") {
  const int world = 2;
  // Identical replicas: the same seed before each construction.
  auto replica = [] {
    torch::manual_seed(3);
    return Net();
  };
  Net base = replica();
  std::vector<torch::Tensor> xs, ys;
  for (int r = 0; r < world; ++r) {
    xs.push_back(torch::randn({8, 10}));
    ys.push_back(torch::randn({8, 3}));
  }
  // Per-rank gradients computed serially, and their mean.
  std::vector<std::vector<torch::Tensor>> local(world);
  for (int r = 0; r < world; ++r) {
    Net n = replica();
    step(n, xs[r], ys[r], r == 0);
    local[r] = grads_of(n->parameters());
  }

  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::vector<torch::Tensor>> reduced(world);
  std::vector<size_t> buckets(world), covered(world);
  std::vector<Net> nets;
  for (int r = 0; r < world; ++r) nets.push_back(replica());
  run_ranks(world, [&](int r) {
    Net& n = nets[r];
    evax::StoreComm comm(store, r, world, 5);
    evax::GradReducerOptions o;
    o.bucket_mb = 200.0 / (1024 * 1024);  // 200 bytes: several buckets
    evax::GradReducer reducer(comm, n->parameters(), o);
    buckets[r] = reducer.num_buckets();
    covered[r] = reducer.num_params();
    for (int s = 0; s < 2; ++s) {  // twice: buffers are reused between steps
      step(n, xs[r], ys[r], r == 0);
      reducer.reduce();
    }
    reduced[r] = grads_of(n->parameters());
  });

  const auto names = base->named_parameters().keys();
  CHECK(buckets[0] > 3);
  CHECK(covered[0] == names.size() - 1);  // all but `frozen`
  for (size_t i = 0; i < names.size(); ++i) {
    INFO(names[i]);
    if (names[i] == "frozen" || names[i].rfind("unused.", 0) == 0) {
      for (int r = 0; r < world; ++r) CHECK_FALSE(reduced[r][i].defined());
      continue;
    }
    torch::Tensor sum = torch::zeros_like(base->named_parameters()[names[i]]);
    for (int r = 0; r < world; ++r)
      if (local[r][i].defined()) sum += local[r][i];
    const torch::Tensor mean = sum / world;
    for (int r = 0; r < world; ++r) {
      REQUIRE(reduced[r][i].defined());
      CHECK((reduced[r][i] - mean).abs().max().item<double>() <= 1e-6);
      CHECK(torch::equal(reduced[r][i], reduced[0][i]));
    }
  }
}

TEST_CASE("broadcast_parameters: every rank gets rank 0's weights and buffers") {
  const int world = 3;
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<Net> nets;
  std::vector<torch::nn::BatchNorm1d> bns;
  for (int r = 0; r < world; ++r) {
    torch::manual_seed(100 + r);  // different initial weights on every rank
    nets.emplace_back();
    bns.emplace_back(4);
    bns.back()->running_mean.fill_(r + 1.0);
  }
  run_ranks(world, [&](int r) {
    evax::StoreComm comm(store, r, world, 5);
    auto params = nets[r]->parameters();
    for (const auto& p : bns[r]->parameters()) params.push_back(p);
    evax::broadcast_parameters(comm, params, bns[r]->buffers());
  });
  for (int r = 1; r < world; ++r) {
    auto a = nets[0]->parameters(), b = nets[r]->parameters();
    for (size_t i = 0; i < a.size(); ++i) CHECK(torch::equal(a[i], b[i]));
    CHECK(torch::equal(bns[r]->running_mean, torch::full({4}, 1.0)));
    CHECK(nets[r]->fc1->weight.requires_grad());
  }
  CHECK(store->getNumKeys() == 0);
}

TEST_CASE("GradReducer: a world of one leaves gradients alone") {
  evax::SingleComm comm;
  Net n;
  step(n, torch::randn({2, 10}), torch::randn({2, 3}), true);
  auto before = grads_of(n->parameters());
  evax::GradReducer reducer(comm, n->parameters());
  reducer.reduce();
  auto after = grads_of(n->parameters());
  for (size_t i = 0; i < before.size(); ++i)
    if (before[i].defined()) CHECK(torch::equal(before[i], after[i]));
  CHECK(reducer.num_buckets() == 1);
}
