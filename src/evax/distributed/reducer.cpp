#include "evax/distributed/reducer.h"

#include <cmath>
#include <utility>

namespace evax {

GradReducer::GradReducer(Comm& comm, std::vector<at::Tensor> params, GradReducerOptions opts)
    : comm_(comm) {
  EVAX_CHECK(ConfigError, opts.bucket_mb > 0, "gradient bucket size must be > 0 MB, got ",
             opts.bucket_mb);
  for (auto& p : params) {
    EVAX_ASSERT(p.defined(), "GradReducer: undefined parameter");
    if (p.requires_grad()) params_.push_back(p);
  }
  const auto cap = static_cast<int64_t>(std::llround(opts.bucket_mb * 1024 * 1024));
  // Reverse order: the last layers' gradients are ready first (a later asynchronous version can
  // start those buckets during backward without changing the layout).
  Bucket cur;
  int64_t cur_bytes = 0, cur_numel = 0;
  auto close = [&]() {
    if (cur.members.empty()) return;
    const at::Tensor& p0 = params_[cur.members[0]];
    cur.flat = at::zeros({cur_numel}, p0.options().requires_grad(false));
    buckets_.push_back(std::move(cur));
    cur = Bucket{};
    cur_bytes = cur_numel = 0;
  };
  for (size_t k = params_.size(); k-- > 0;) {
    const at::Tensor& p = params_[k];
    if (!cur.members.empty()) {
      const at::Tensor& p0 = params_[cur.members[0]];
      const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
      if (p.scalar_type() != p0.scalar_type() || p.device() != p0.device() ||
          cur_bytes + bytes > cap)
        close();
    }
    cur.members.push_back(k);
    cur.offsets.push_back(cur_numel);
    cur_numel += p.numel();
    cur_bytes += p.numel() * static_cast<int64_t>(p.element_size());
  }
  close();
  const at::Device dev = params_.empty() ? comm_.device() : params_[0].device();
  has_grad_ = at::zeros({static_cast<int64_t>(params_.size())},
                        at::TensorOptions().dtype(at::kLong).device(dev));
}

void GradReducer::reduce() {
  if (comm_.world_size() == 1 || params_.empty()) return;
  at::NoGradGuard no_grad;
  // Which parameters have a gradient anywhere: decides, identically on every rank, whether a
  // locally missing gradient becomes the mean or stays undefined.
  std::vector<int64_t> local(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) local[i] = params_[i].grad().defined() ? 1 : 0;
  has_grad_.copy_(at::tensor(local, at::kLong));
  std::vector<at::Tensor> flags{has_grad_};
  comm_.all_reduce_sum(flags);
  const at::Tensor counts = has_grad_.cpu();
  const int64_t* count = counts.data_ptr<int64_t>();

  for (Bucket& b : buckets_) {
    for (size_t j = 0; j < b.members.size(); ++j) {
      const at::Tensor& p = params_[b.members[j]];
      at::Tensor slot = b.flat.narrow(0, b.offsets[j], p.numel());
      const at::Tensor& g = p.grad();
      if (g.defined()) slot.copy_(g.reshape({-1}));
      else slot.zero_();
    }
    std::vector<at::Tensor> one{b.flat};
    comm_.all_reduce_sum(one);
    b.flat.div_(comm_.world_size());
    for (size_t j = 0; j < b.members.size(); ++j) {
      at::Tensor& p = params_[b.members[j]];
      if (count[b.members[j]] == 0) continue;
      at::Tensor slot = b.flat.narrow(0, b.offsets[j], p.numel()).view(p.sizes());
      if (p.grad().defined()) p.mutable_grad().copy_(slot);
      else p.mutable_grad() = slot.clone();
    }
  }
}

void broadcast_parameters(Comm& comm, const std::vector<at::Tensor>& params,
                          const std::vector<at::Tensor>& buffers) {
  if (comm.world_size() == 1) return;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> all;
  for (const auto& t : params)
    if (t.defined()) all.push_back(t);
  for (const auto& t : buffers)
    if (t.defined()) all.push_back(t);
  comm.broadcast(all, 0);
}

}  // namespace evax
