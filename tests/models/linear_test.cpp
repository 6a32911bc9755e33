// The ViT's linear (models/linear.h): on the CPU in float32 with two threads it runs as a 1×1
// convolution on oneDNN, which must equal x·wᵀ + b (computed in float64) in the output and in
// every gradient, deterministically, for contiguous and strided inputs, with and without bias.
#include <catch2/catch.hpp>

#include <ATen/Context.h>
#include <torch/torch.h>

#include <cstdlib>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "evax/core/cpu_dispatch.h"
#include "evax/models/linear.h"

using namespace evax;

namespace {

// Names of every autograd node behind t.
std::set<std::string> graph_nodes(const torch::Tensor& t) {
  std::set<std::string> names;
  std::function<void(const std::shared_ptr<torch::autograd::Node>&)> walk =
      [&](const std::shared_ptr<torch::autograd::Node>& n) {
        if (!n || !names.insert(n->name()).second) return;
        for (const auto& e : n->next_edges()) walk(e.function);
      };
  walk(t.grad_fn());
  return names;
}

double rel_err(const torch::Tensor& got, const torch::Tensor& want) {
  return ((got.to(torch::kFloat64) - want).norm() / want.norm()).item<double>();
}

struct ThreadsGuard {
  int saved = at::get_num_threads();
  explicit ThreadsGuard(int n) { at::set_num_threads(n); }
  ~ThreadsGuard() { at::set_num_threads(saved); }
};

}  // namespace

struct CpuLinearGuard {
  explicit CpuLinearGuard(CpuLinear c) { set_cpu_linear(c); }
  ~CpuLinearGuard() { set_cpu_linear(CpuLinear::kAuto); }
};

TEST_CASE("models: MKL's vendor check is answered by evax in this process, and MKL asks it") {
  if (std::getenv("EVAX_MKL_VENDOR_CHECK")) return;  // opted out for this run
  CHECK(mkl_vendor_override_active());
  // A float32 GEMM through ATen's MKL path: MKL's dispatcher must have reached evax's function
  // (a count of 0 would mean libtorch's calls bind elsewhere and the override does nothing).
  const auto a = torch::randn({64, 64});
  (void)torch::mm(a, a);
  CHECK(mkl_vendor_queries() > 0);
  // With the override, the automatic choice for token linears is MKL's sgemm.
  CHECK(cpu_linear_backend() == (std::getenv("EVAX_CPU_LINEAR") ? cpu_linear_backend() : "blas"));
}

TEST_CASE("models: the CPU float32 linear (oneDNN 1x1 convolution) equals x·wᵀ + b, with gradients") {
  ThreadsGuard threads(2);
  CpuLinearGuard onednn(CpuLinear::kOneDnn);
  if (!at::hasMKLDNN()) {
    CHECK(cpu_linear_backend() == "blas");
    return;
  }
  REQUIRE(cpu_linear_backend() == "onednn");
  torch::manual_seed(0);
  for (bool bias : {true, false})
    for (bool strided : {false, true}) {
      INFO("bias " << bias << ", strided input " << strided);
      const int64_t b = 3, n = 37, k = 48, out = 40;
      torch::Tensor x = strided ? torch::randn({b, k, n}).transpose(1, 2) : torch::randn({b, n, k});
      x.requires_grad_(true);
      auto w = (torch::randn({out, k}) * 0.2).requires_grad_(true);
      auto bb = bias ? torch::randn({out}).requires_grad_(true) : torch::Tensor();
      const auto y = linear_forward(x, w, bb);
      REQUIRE(y.sizes() == torch::IntArrayRef({b, n, out}));
      if (cpu_linear_backend() == "onednn")
        CHECK(graph_nodes(y).count("ConvolutionBackward0") == 1);  // the path is really taken
      // Reference in float64.
      const auto xd = x.detach().to(torch::kFloat64), wd = w.detach().to(torch::kFloat64);
      auto want = torch::matmul(xd, wd.t());
      if (bias) want = want + bb.detach().to(torch::kFloat64);
      CHECK(rel_err(y.detach(), want) < 1e-6);
      const auto g = torch::randn({b, n, out});
      y.backward(g);
      const auto gd = g.to(torch::kFloat64);
      CHECK(rel_err(x.grad(), torch::matmul(gd, wd)) < 1e-6);
      CHECK(rel_err(w.grad(), torch::matmul(gd.reshape({-1, out}).t(), xd.reshape({-1, k}))) < 1e-6);
      if (bias) CHECK(rel_err(bb.grad(), gd.sum(std::vector<int64_t>{0, 1})) < 1e-6);
      // Deterministic: the same call again gives the same bits.
      const auto y2 = linear_forward(x.detach(), w.detach(), bias ? bb.detach() : torch::Tensor());
      CHECK(torch::equal(y.detach(), y2));
    }
  // Beyond 512 tokens per image, training takes the convolution forward with a BLAS weight
  // gradient (a custom autograd node); its output and gradients equal the reference too.
  if (cpu_linear_backend() == "onednn") {
    for (bool bias : {true, false}) {
      INFO("long sequence, bias " << bias);
      auto xl = torch::randn({2, 600, 24}, torch::requires_grad());
      auto wl = (torch::randn({20, 24}) * 0.2).requires_grad_(true);
      auto bl = bias ? torch::randn({20}).requires_grad_(true) : torch::Tensor();
      const auto y = linear_forward(xl, wl, bl);
      bool custom = false;
      for (const auto& name : graph_nodes(y)) custom |= name.find("LongLinear") != std::string::npos;
      CHECK(custom);
      const auto xd = xl.detach().to(torch::kFloat64), wd = wl.detach().to(torch::kFloat64);
      auto want = torch::matmul(xd, wd.t());
      if (bias) want = want + bl.detach().to(torch::kFloat64);
      CHECK(rel_err(y.detach(), want) < 1e-6);
      const auto g = torch::randn({2, 600, 20});
      y.backward(g);
      const auto gd = g.to(torch::kFloat64);
      CHECK(rel_err(xl.grad(), torch::matmul(gd, wd)) < 1e-6);
      CHECK(rel_err(wl.grad(), torch::matmul(gd.reshape({-1, 20}).t(), xd.reshape({-1, 24}))) < 1e-6);
      if (bias) CHECK(rel_err(bl.grad(), gd.sum(std::vector<int64_t>{0, 1})) < 1e-6);
      // Only the weight needs a gradient (a frozen input): no input gradient is computed.
      auto xf = torch::randn({2, 600, 24});
      auto wf = torch::randn({20, 24}, torch::requires_grad());
      linear_forward(xf, wf, {}).sum().backward();
      CHECK(rel_err(wf.grad(), xf.to(torch::kFloat64).reshape({-1, 24}).sum(0).expand({20, 24})) < 1e-6);
    }
  }
  // 2-D inputs and one thread with a small batch keep F::linear (no convolution node).
  auto x2 = torch::randn({5, 8}, torch::requires_grad());
  auto w2 = torch::randn({4, 8}, torch::requires_grad());
  CHECK(graph_nodes(linear_forward(x2, w2, {})).count("ConvolutionBackward0") == 0);
  at::set_num_threads(1);
  auto x3 = torch::randn({2, 9, 8}, torch::requires_grad());
  CHECK(graph_nodes(linear_forward(x3, w2, {})).count("ConvolutionBackward0") == 0);
  auto x4 = torch::randn({16, 9, 8}, torch::requires_grad());
  CHECK(graph_nodes(linear_forward(x4, w2, {})).count("ConvolutionBackward0") ==
        (cpu_linear_backend() == "onednn" ? 1u : 0u));
  // kBlas: F::linear everywhere.
  set_cpu_linear(CpuLinear::kBlas);
  CHECK(cpu_linear_backend() == "blas");
  CHECK(graph_nodes(linear_forward(x4, w2, {})).count("ConvolutionBackward0") == 0);
}
