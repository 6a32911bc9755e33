#include "evax/distributed/backend_comm.h"

#include <utility>

namespace evax {

BackendComm::BackendComm(std::string name, at::Device device, int rank, int world_size,
                         c10::intrusive_ptr<c10d::Backend> backend)
    : Comm(rank, world_size), name_(std::move(name)), device_(device),
      backend_(std::move(backend)) {}

BackendComm::~BackendComm() {
  // An explicit shutdown lets NCCL's watchdog exit cleanly instead of warning at teardown.
  try {
    backend_->shutdown();
  } catch (...) {
  }
}

template <class F>
void BackendComm::run(const char* what, F&& f) {
  try {
    // For NCCL, wait() orders the current CUDA stream after the collective without blocking the
    // CPU; for gloo it blocks until done (or the backend's timeout, or a peer's socket closes).
    f()->wait();
  } catch (const c10::Error& e) {
    raise<DistError>("rank ", rank(), " ", name_, " ", what, " failed: ",
                     e.what_without_backtrace());
  } catch (const std::exception& e) {
    raise<DistError>("rank ", rank(), " ", name_, " ", what, " failed: ", e.what());
  }
}

// c10d backends take one tensor per process and call (a list means "one per local device" and
// would be reduced together); non-contiguous tensors or tensors on another device are staged
// through a contiguous copy on this rank's device.
template <class F>
void BackendComm::for_each_tensor(std::vector<at::Tensor>& tensors, const char* what, F&& f) {
  at::NoGradGuard no_grad;
  for (at::Tensor& t : tensors) {
    EVAX_ASSERT(t.defined(), what, ": undefined tensor");
    const bool direct = t.device() == device_ && t.is_contiguous();
    std::vector<at::Tensor> one{direct ? t : t.to(device_).contiguous()};
    run(what, [&] { return f(one); });
    if (!direct) t.copy_(one[0]);
  }
}

void BackendComm::all_reduce(std::vector<at::Tensor>& tensors, ReduceOp op) {
  c10d::AllreduceOptions o;
  o.reduceOp = op == ReduceOp::kSum ? c10d::ReduceOp::SUM : c10d::ReduceOp::MAX;
  for_each_tensor(tensors, "all_reduce",
                  [&](std::vector<at::Tensor>& one) { return backend_->allreduce(one, o); });
}

void BackendComm::broadcast(std::vector<at::Tensor>& tensors, int root) {
  EVAX_CHECK(DistError, root >= 0 && root < world_size(), "broadcast: root ", root,
             " is not a rank of a world of ", world_size());
  c10d::BroadcastOptions o;
  o.rootRank = root;
  for_each_tensor(tensors, "broadcast",
                  [&](std::vector<at::Tensor>& one) { return backend_->broadcast(one, o); });
}

at::Tensor BackendComm::all_gather(const at::Tensor& t) {
  EVAX_ASSERT(t.defined(), "all_gather: undefined tensor");
  at::NoGradGuard no_grad;
  std::vector<int64_t> shape{world_size()};
  shape.insert(shape.end(), t.sizes().begin(), t.sizes().end());
  at::Tensor out = at::empty(shape, t.options().device(device_));
  // One input per process; the outputs are the rows of `out` (contiguous views).
  std::vector<at::Tensor> in{t.to(device_).contiguous()};
  std::vector<std::vector<at::Tensor>> rows(1);
  for (int r = 0; r < world_size(); ++r) rows[0].push_back(out[r]);
  c10d::AllgatherOptions o;
  run("all_gather", [&] { return backend_->allgather(rows, in, o); });
  return t.device() == device_ ? out : out.to(t.device());
}

void BackendComm::barrier() {
  c10d::BarrierOptions o;
  if (device_.is_cuda()) o.device_ids = {device_.index()};
  run("barrier", [&] { return backend_->barrier(o); });
}

}  // namespace evax
