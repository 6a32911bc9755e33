// Autocast: ops run in bf16 inside, float32 outside, state restored and nesting respected.
#include "evax/train/autocast.h"

#include <catch2/catch.hpp>
#include <torch/torch.h>

TEST_CASE("Autocast on CPU: bf16 matmuls inside, float32 again after, nesting restores") {
  torch::manual_seed(0);
  torch::nn::Linear lin(16, 8);
  const auto x = torch::randn({4, 16});
  const auto ref = lin(x);
  REQUIRE(ref.scalar_type() == torch::kFloat32);
  REQUIRE_FALSE(at::autocast::is_autocast_enabled(at::kCPU));
  {
    evax::Autocast outer(true, at::kCPU);
    const auto y = lin(x);
    CHECK(y.scalar_type() == torch::kBFloat16);
    CHECK((y.to(torch::kFloat32) - ref).abs().max().item<double>() < 0.05);
    {
      evax::Autocast off(false, at::kCPU);  // disabled guard: no change
      CHECK(lin(x).scalar_type() == torch::kBFloat16);
    }
    {
      evax::Autocast inner(true, at::kCPU);
      CHECK(lin(x).scalar_type() == torch::kBFloat16);
    }
    CHECK(at::autocast::is_autocast_enabled(at::kCPU));  // the inner guard left it on
  }
  CHECK_FALSE(at::autocast::is_autocast_enabled(at::kCPU));
  CHECK(lin(x).scalar_type() == torch::kFloat32);
  // A guard for another device leaves CPU ops alone.
  evax::Autocast cuda(true, at::kCUDA);
  CHECK(lin(x).scalar_type() == torch::kFloat32);
}
