// SyncBatchNorm2d (segment/sync_bn.h): over 2 ranks (threads over a HashStore, StoreComm) the
// ranks' slices of a batch must give what torch::nn::BatchNorm2d gives on the whole batch:
// outputs, input gradients, the sum over ranks of the weight/bias gradients (the data-parallel
// reducer averages them; the reference loss is the sum of the ranks' losses), running statistics
// and num_batches_tracked. In fp64, so the tolerance can be tight. Without a communicator the
// module is BatchNorm2d, bit for bit. Measured: every difference below 1e-15.
#include <catch2/catch.hpp>

#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "distributed/dist_test_util.h"
#include "evax/distributed/comm.h"
#include "evax/segment/sync_bn.h"
#include "tensor_util.h"

using namespace evax;
using test::max_abs;

namespace {

constexpr double kTol = 1e-10;  // fp64

struct BnResult {
  torch::Tensor y, dx, dw, db, running_mean, running_var;
  int64_t tracked = 0;
};

// Full-batch BatchNorm2d: two training steps (the second output and gradients are returned, the
// running statistics after both), then one eval output.
struct Setup {
  int64_t c = 3;
  torch::Tensor weight, bias, x1, x2, g1, g2, x_eval;
  Setup() {
    torch::manual_seed(11);
    auto o = torch::TensorOptions().dtype(torch::kFloat64);
    weight = 1 + 0.3 * torch::randn({c}, o);
    bias = 0.2 * torch::randn({c}, o);
    // Per-channel offsets and scales, so mean and variance matter.
    auto shift = torch::tensor({2.0, -1.0, 0.5}, o).view({1, c, 1, 1});
    auto scale = torch::tensor({0.5, 3.0, 1.0}, o).view({1, c, 1, 1});
    x1 = torch::randn({4, c, 5, 6}, o) * scale + shift;
    x2 = torch::randn({4, c, 5, 6}, o) * scale - shift;
    g1 = torch::randn({4, c, 5, 6}, o);
    g2 = torch::randn({4, c, 5, 6}, o);
    x_eval = torch::randn({2, c, 5, 6}, o);
  }
};

BnResult reference(const Setup& s, torch::Tensor* y_eval) {
  torch::nn::BatchNorm2d bn(s.c);
  bn->to(torch::kFloat64);
  {
    torch::NoGradGuard ng;
    bn->weight.copy_(s.weight);
    bn->bias.copy_(s.bias);
  }
  bn->train();
  (bn->forward(s.x1) * s.g1).sum().backward();
  bn->weight.mutable_grad().reset();
  bn->bias.mutable_grad().reset();
  auto x = s.x2.clone().requires_grad_(true);
  auto y = bn->forward(x);
  (y * s.g2).sum().backward();
  BnResult r{y.detach(), x.grad(), bn->weight.grad(), bn->bias.grad(),
             bn->running_mean.clone(), bn->running_var.clone(),
             bn->num_batches_tracked.item<int64_t>()};
  bn->eval();
  torch::NoGradGuard ng;
  *y_eval = bn->forward(s.x_eval);
  return r;
}

// The same on one rank's rows [begin, end) of each batch.
BnResult on_rank(const Setup& s, Comm* comm, int64_t begin, int64_t end, torch::Tensor* y_eval) {
  SyncBatchNorm2d bn(s.c);
  bn->to(torch::kFloat64);
  {
    torch::NoGradGuard ng;
    bn->weight.copy_(s.weight);
    bn->bias.copy_(s.bias);
  }
  bn->set_comm(comm);
  bn->train();
  (bn->forward(s.x1.slice(0, begin, end)) * s.g1.slice(0, begin, end)).sum().backward();
  bn->weight.mutable_grad().reset();
  bn->bias.mutable_grad().reset();
  auto x = s.x2.slice(0, begin, end).clone().requires_grad_(true);
  auto y = bn->forward(x);
  (y * s.g2.slice(0, begin, end)).sum().backward();
  BnResult r{y.detach(), x.grad(), bn->weight.grad(), bn->bias.grad(),
             bn->running_mean.clone(), bn->running_var.clone(),
             bn->num_batches_tracked.item<int64_t>()};
  bn->eval();
  torch::NoGradGuard ng;
  *y_eval = bn->forward(s.x_eval);
  return r;
}

void check_two_ranks(int64_t split) {
  const Setup s;
  torch::Tensor ref_eval;
  const BnResult want = reference(s, &ref_eval);

  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<BnResult> got(2);
  std::vector<torch::Tensor> evals(2);
  test::run_ranks(2, [&](int r) {
    StoreComm comm(store, r, 2, 20);
    got[r] = r == 0 ? on_rank(s, &comm, 0, split, &evals[0])
                    : on_rank(s, &comm, split, 4, &evals[1]);
  });

  const double dy = max_abs(torch::cat({got[0].y, got[1].y}), want.y);
  const double dx = max_abs(torch::cat({got[0].dx, got[1].dx}), want.dx);
  const double dw = max_abs(got[0].dw + got[1].dw, want.dw);
  const double db = max_abs(got[0].db + got[1].db, want.db);
  INFO("split " << split << ": y " << dy << ", dx " << dx << ", dweight " << dw << ", dbias "
                << db);
  CHECK(dy < kTol);
  CHECK(dx < kTol);
  CHECK(dw < kTol);
  CHECK(db < kTol);
  for (int r = 0; r < 2; ++r) {
    INFO("rank " << r);
    CHECK(max_abs(got[r].running_mean, want.running_mean) < kTol);
    CHECK(max_abs(got[r].running_var, want.running_var) < kTol);
    CHECK(got[r].tracked == want.tracked);
    CHECK(max_abs(evals[r], ref_eval) < kTol);
  }
  // Rank 0's slice with its own statistics is far off: the comparison can fail.
  torch::Tensor unused;
  const BnResult local = on_rank(s, nullptr, 0, split, &unused);
  CHECK(max_abs(local.y, want.y.slice(0, 0, split)) > 1e-2);
  CHECK(max_abs(local.running_var, want.running_var) > 1e-3);
}

}  // namespace

TEST_CASE("SyncBatchNorm2d over 2 ranks equals BatchNorm2d on the whole batch") {
  SECTION("equal halves") { check_two_ranks(2); }
  SECTION("unequal slices (3 and 1 samples)") { check_two_ranks(3); }
}

TEST_CASE("SyncBatchNorm2d without a communicator is BatchNorm2d") {
  const Setup s;
  torch::Tensor ref_eval, got_eval;
  const BnResult want = reference(s, &ref_eval);
  const BnResult got = on_rank(s, nullptr, 0, 4, &got_eval);
  CHECK(torch::equal(got.y, want.y));
  CHECK(torch::equal(got.dx, want.dx));
  CHECK(torch::equal(got.dw, want.dw));
  CHECK(torch::equal(got.db, want.db));
  CHECK(torch::equal(got.running_mean, want.running_mean));
  CHECK(torch::equal(got.running_var, want.running_var));
  CHECK(got.tracked == 2);
  CHECK(torch::equal(got_eval, ref_eval));

  // Same names as BatchNorm2d's state.
  SyncBatchNorm2d bn(4);
  std::vector<std::string> names;
  for (const auto& p : bn->named_parameters()) names.push_back(p.key());
  for (const auto& b : bn->named_buffers()) names.push_back(b.key());
  CHECK(names == std::vector<std::string>{"weight", "bias", "running_mean", "running_var",
                                          "num_batches_tracked"});
  CHECK(bn->options().eps() == 1e-5);
  CHECK(bn->options().momentum() == 0.1);
}
