#include "evax/models/linear.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "evax/core/cpu_dispatch.h"
#include "evax/core/log.h"

namespace F = torch::nn::functional;

namespace evax {

namespace {

std::atomic<CpuLinear>& cpu_linear_setting() {
  static std::atomic<CpuLinear> c{[] {
    const char* e = std::getenv("EVAX_CPU_LINEAR");
    if (e && std::strcmp(e, "blas") == 0) return CpuLinear::kBlas;
    if (e && std::strcmp(e, "onednn") == 0) return CpuLinear::kOneDnn;
    if (e && *e && std::strcmp(e, "auto") != 0)
      log_warn("EVAX_CPU_LINEAR='", e, "' is not blas, onednn or auto: using auto");
    return CpuLinear::kAuto;
  }()};
  return c;
}

bool onednn_enabled() {
  if (!at::hasMKLDNN() || !at::globalContext().userEnabledMkldnn()) return false;
  switch (cpu_linear_setting().load()) {
    case CpuLinear::kBlas: return false;
    case CpuLinear::kOneDnn: return true;
    case CpuLinear::kAuto: break;
  }
  static const bool mkl_fast = mkl_vendor_override_active();
  return !mkl_fast;
}

// ATen's conv backend choice (ConvParams::use_mkldnn) takes oneDNN for a float32 1×1 kernel
// when the batch is >= 16 or more than one thread runs; otherwise it would take the slow path.
bool conv_eligible(const torch::Tensor& x, const torch::Tensor& w) {
  return x.dim() == 3 && x.device().is_cpu() && x.scalar_type() == torch::kFloat32 &&
         w.scalar_type() == torch::kFloat32 && x.size(0) > 0 && x.size(1) > 0 &&
         (x.size(0) >= 16 || at::get_num_threads() > 1) && onednn_enabled();
}

// x (B, N, K) · wᵀ + b as a 1×1 convolution: (B, N, K) rows are (B, K, N, 1) channels-last, and
// the output (B, out, N, 1) is channels-last too, so (B, N, out) is a view of it.
torch::Tensor conv_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  const int64_t bs = x.size(0), n = x.size(1), k = x.size(2), out = w.size(0);
  const auto in = x.reshape({bs, n, 1, k}).permute({0, 3, 1, 2});
  const auto y = torch::conv2d(in, w.view({out, k, 1, 1}), b);
  return y.permute({0, 2, 3, 1}).reshape({bs, n, out});
}

// oneDNN's backward of a 1×1 convolution is slower than BLAS once the spatial extent (tokens per
// image) is large (2 threads, 384 → 1152: at 197 tokens forward + backward 2x faster, at 901 and
// 1025 tokens 1.1-1.2x slower; the forward is 2x faster at every size). Above kMaxTokens the
// forward and the input gradient (a forward convolution with wᵀ) stay on oneDNN and the weight
// gradient is one BLAS GEMM, as at::linear's backward computes it.
constexpr int64_t kMaxTokens = 512;

struct LongLinear : torch::autograd::Function<LongLinear> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& w, const torch::Tensor& b) {
    ctx->save_for_backward({x, w});
    return conv_linear(x, w, b);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &w = saved[1], &g = grads[0];
    const int64_t k = x.size(2), out = w.size(0);
    torch::Tensor gx, gw, gb;
    if (ctx->needs_input_grad(0)) gx = conv_linear(g, w.t().contiguous(), {});
    if (ctx->needs_input_grad(1)) gw = g.reshape({-1, out}).t().mm(x.reshape({-1, k}));
    if (ctx->needs_input_grad(2)) gb = g.reshape({-1, out}).sum(0);
    return {gx, gw, gb};
  }
};

}  // namespace

void set_cpu_linear(CpuLinear c) { cpu_linear_setting().store(c); }

std::string cpu_linear_backend() { return onednn_enabled() ? "onednn" : "blas"; }

torch::Tensor linear_forward(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  if (at::autocast::is_autocast_enabled(x.device().type())) return torch::linear(x, w, b);
  if (!conv_eligible(x, w)) return F::linear(x, w, b);
  const bool recording = torch::GradMode::is_enabled() &&
                         (x.requires_grad() || w.requires_grad() || (b.defined() && b.requires_grad()));
  if (recording && x.size(1) > kMaxTokens)  // (apply takes no undefined tensor: a zero bias)
    return LongLinear::apply(x, w, b.defined() ? b : torch::zeros({w.size(0)}, w.options()));
  return conv_linear(x, w, b);
}

}  // namespace evax
