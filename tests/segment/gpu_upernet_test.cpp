// On a CUDA GPU: UperNet's channels-last path (what segmentation training and `evax segment
// predict` use on CUDA) against NCHW on the same GPU and against the float32 CPU model. Skipped
// (visibly) without a CUDA device; run by tools/gpu_check.sh on a lent GPU machine.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "evax/segment/upernet.h"
#include "evax/train/autocast.h"
#include "skip.h"

namespace {

double rel_l2(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a.to(torch::kFloat64) - b.to(torch::kFloat64)).norm() / b.to(torch::kFloat64).norm())
      .item<double>();
}

}  // namespace

TEST_CASE("GPU: UperNet channels-last on CUDA, float32 and bf16, matches NCHW and the CPU") {
  if (!torch::cuda::is_available()) EVAX_SKIP("no CUDA device");
  const auto o = evax::UperNetOptions()
                     .backbone("eva_x_tiny_patch16")
                     .depth(2)
                     .img_size(128)
                     .out_indices({0, 1})
                     .channels(64)
                     .dropout(0)
                     .drop_path_rate(0);
  torch::manual_seed(4);
  evax::UperNet cpu(o);
  cpu->eval();
  torch::manual_seed(4);
  evax::UperNet nhwc(o);
  nhwc->to(torch::kCUDA);
  nhwc->set_channels_last(true);
  nhwc->eval();
  torch::manual_seed(9);
  const auto x = torch::randn({2, 3, 128, 128});
  torch::NoGradGuard ng;
  const auto ref = cpu->forward(x);
  const auto f32 = nhwc->forward(x.cuda()).cpu();
  // cuDNN may use TF32 for float32 convolutions and matmuls: ~1e-3 relative.
  CHECK(rel_l2(f32, ref) < 1e-2);
  torch::Tensor bf;
  {
    evax::Autocast ac(true, torch::kCUDA);
    bf = nhwc->forward(x.cuda()).to(torch::kFloat32).cpu();
  }
  const double d = rel_l2(bf, ref);
  INFO("bf16 channels-last vs float32 CPU: relative L2 " << d);
  CHECK(d < 0.05);
  nhwc->set_channels_last(false);
  CHECK(rel_l2(nhwc->forward(x.cuda()).cpu(), f32) < 1e-2);
}
