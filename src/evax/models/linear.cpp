#include "evax/models/linear.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>

#include <cstdlib>
#include <cstring>

namespace F = torch::nn::functional;

namespace evax {

namespace {

bool onednn_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("EVAX_CPU_LINEAR");
    return at::hasMKLDNN() && !(e && std::strcmp(e, "blas") == 0);
  }();
  return on && at::globalContext().userEnabledMkldnn();
}

// ATen's conv backend choice (ConvParams::use_mkldnn) takes oneDNN for a float32 1×1 kernel
// when the batch is >= 16 or more than one thread runs; otherwise it would take the slow path.
// oneDNN's backward of a 1×1 convolution is slower than BLAS once the spatial extent (tokens per
// image) is large (measured on 2 threads, 384 → 1152: 197 tokens 2x faster, 901 and 1025 tokens
// 1.1-1.2x slower; the forward is 2x faster at every size), so with autograd recording, only
// up to kMaxTokens tokens take it.
constexpr int64_t kMaxTokens = 512;

bool as_conv(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  if (!(x.dim() == 3 && x.device().is_cpu() && x.scalar_type() == torch::kFloat32 &&
        w.scalar_type() == torch::kFloat32 && x.size(0) > 0 && x.size(1) > 0 &&
        (x.size(0) >= 16 || at::get_num_threads() > 1) && onednn_enabled()))
    return false;
  const bool recording = torch::GradMode::is_enabled() &&
                         (x.requires_grad() || w.requires_grad() || (b.defined() && b.requires_grad()));
  return !recording || x.size(1) <= kMaxTokens;
}

}  // namespace

std::string cpu_linear_backend() { return onednn_enabled() ? "onednn" : "blas"; }

torch::Tensor linear_forward(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  if (at::autocast::is_autocast_enabled(x.device().type())) return torch::linear(x, w, b);
  if (as_conv(x, w, b)) {
    const int64_t bs = x.size(0), n = x.size(1), k = x.size(2), out = w.size(0);
    // (B, N, K) rows → (B, K, N, 1) channels-last; the output (B, out, N, 1) is channels-last
    // too, so (B, N, out) is a view of it.
    const auto in = x.reshape({bs, n, 1, k}).permute({0, 3, 1, 2});
    const auto y = torch::conv2d(in, w.view({out, k, 1, 1}), b);
    return y.permute({0, 2, 3, 1}).reshape({bs, n, out});
  }
  return F::linear(x, w, b);
}

}  // namespace evax
