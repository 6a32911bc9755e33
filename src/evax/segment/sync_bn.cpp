#include "evax/segment/sync_bn.h"

#include <ATen/Context.h>

#include <cstdint>
#include <vector>

#include "evax/core/error.h"
#include "evax/distributed/comm.h"

namespace evax {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// Statistics are computed in fp32 for half-precision inputs (as torch does), else in the input's
// own precision.
at::ScalarType acc_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

torch::Tensor per_channel(const torch::Tensor& v) { return v.view({1, -1, 1, 1}); }

// y = (x − mean)·invstd·w + b with global statistics; backward all-reduces Σdy and Σdy·(x − mean)
// over the ranks (torch's batch_norm_backward_reduce + all_reduce + batch_norm_backward_elemt).
struct SyncBatchNormFunction : public torch::autograd::Function<SyncBatchNormFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias,
                               const torch::Tensor& mean, const torch::Tensor& invstd,
                               double count, Comm* comm) {
    const auto acc = mean.scalar_type();
    auto xa = x.to(acc);
    auto y = (xa - per_channel(mean)) * per_channel(invstd * weight.to(acc)) +
             per_channel(bias.to(acc));
    ctx->save_for_backward({x, weight, mean, invstd});
    ctx->saved_data["count"] = count;
    ctx->saved_data["comm"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(comm));
    return y.to(x.scalar_type());
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& weight = saved[1];
    const auto& mean = saved[2];
    const auto& invstd = saved[3];
    const double count = ctx->saved_data["count"].toDouble();
    auto* comm = reinterpret_cast<Comm*>(static_cast<intptr_t>(ctx->saved_data["comm"].toInt()));
    const auto acc = mean.scalar_type();

    auto dy = grads[0].to(acc);
    auto xmu = x.to(acc) - per_channel(mean);
    auto sum_dy = dy.sum({0, 2, 3});
    auto sum_dy_xmu = (dy * xmu).sum({0, 2, 3});
    // Local weight/bias gradients: the data-parallel reducer averages them across ranks.
    torch::Tensor grad_weight, grad_bias;
    if (ctx->needs_input_grad(1)) grad_weight = (sum_dy_xmu * invstd).to(weight.scalar_type());
    if (ctx->needs_input_grad(2)) grad_bias = sum_dy.to(weight.scalar_type());
    torch::Tensor grad_input;
    if (ctx->needs_input_grad(0)) {
      // One collective for both sums, on every rank (all ranks have the same graph).
      const int64_t c = mean.size(0);
      std::vector<at::Tensor> packed{torch::cat({sum_dy, sum_dy_xmu})};
      comm->all_reduce_sum(packed);
      auto mean_dy = packed[0].slice(0, 0, c).to(acc) / count;
      auto mean_dy_xmu = packed[0].slice(0, c, 2 * c).to(acc) / count;
      grad_input = (dy - per_channel(mean_dy) -
                    xmu * per_channel(invstd * invstd * mean_dy_xmu)) *
                   per_channel(invstd * weight.to(acc));
      grad_input = grad_input.to(x.scalar_type());
    }
    return {grad_input, grad_weight, grad_bias, torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

SyncBatchNorm2dImpl::SyncBatchNorm2dImpl(SyncBatchNormOptions o) : options_(std::move(o)) {
  EVAX_ASSERT(options_.num_features() > 0, "num_features ", options_.num_features());
  const int64_t c = options_.num_features();
  weight = register_parameter("weight", torch::ones({c}));
  bias = register_parameter("bias", torch::zeros({c}));
  running_mean = register_buffer("running_mean", torch::zeros({c}));
  running_var = register_buffer("running_var", torch::ones({c}));
  num_batches_tracked = register_buffer("num_batches_tracked", torch::zeros({}, torch::kLong));
}

void SyncBatchNorm2dImpl::reset_parameters() {
  torch::NoGradGuard ng;
  weight.fill_(1);
  bias.zero_();
  running_mean.zero_();
  running_var.fill_(1);
  num_batches_tracked.zero_();
}

torch::Tensor SyncBatchNorm2dImpl::forward(const torch::Tensor& x) {
  EVAX_ASSERT(x.dim() == 4 && x.size(1) == options_.num_features(), "SyncBatchNorm2d(",
              options_.num_features(), ") input ", x.sizes());
  const double momentum = options_.momentum(), eps = options_.eps();
  if (is_training()) {
    torch::NoGradGuard ng;
    num_batches_tracked.add_(1);
  }
  if (!is_training() || comm_ == nullptr || comm_->world_size() <= 1) {
    // Exactly BatchNorm2d (LibTorch's BatchNormImplBase::forward with a fixed momentum).
    return torch::batch_norm(x, weight, bias, running_mean, running_var, is_training(), momentum,
                             eps, at::globalContext().userEnabledCuDNN());
  }

  const auto acc = acc_type(x.scalar_type());
  const int64_t c = options_.num_features();
  torch::Tensor mean, invstd;
  double count = 0;
  {
    torch::NoGradGuard ng;
    // Per rank: [count, mean (C), M2 (C)] in fp64, gathered and combined with Chan's formula.
    auto xa = x.detach().to(acc);
    const double n = static_cast<double>(x.size(0) * x.size(2) * x.size(3));
    auto local = torch::zeros({2 * c + 1}, xa.options().dtype(torch::kFloat64));
    local[0].fill_(n);
    if (n > 0) {
      auto m = xa.mean({0, 2, 3});
      local.slice(0, 1, c + 1).copy_(m);
      local.slice(0, c + 1, 2 * c + 1).copy_((xa - per_channel(m)).square().sum({0, 2, 3}));
    }
    auto all = comm_->all_gather(local).to(x.device());  // (W, 2C + 1)
    auto counts = all.select(1, 0);                      // (W)
    count = counts.sum().item<double>();
    if (count <= 1)
      raise<DataError>("SyncBatchNorm2d: expected more than 1 value per channel when training, "
                       "got ", count, " over all ranks");
    auto means = all.slice(1, 1, c + 1);  // (W, C)
    auto m2s = all.slice(1, c + 1, 2 * c + 1);
    auto w = counts.unsqueeze(1);
    auto gmean = (means * w).sum(0) / count;
    auto m2 = (m2s + w * (means - gmean).square()).sum(0);
    mean = gmean.to(acc);
    invstd = (m2 / count + eps).rsqrt().to(acc);
    running_mean.mul_(1 - momentum).add_(gmean.to(running_mean.scalar_type()), momentum);
    running_var.mul_(1 - momentum)
        .add_((m2 / (count - 1)).to(running_var.scalar_type()), momentum);
  }
  return SyncBatchNormFunction::apply(x, weight, bias, mean, invstd, count, comm_);
}

}  // namespace evax
