// The NCCL backend: a thin wrapper over c10d::ProcessGroupNCCL.
//
// Exercised only on a GPU machine: the CPU-only test suite compiles this file but never runs it.
// It is built when torch defines USE_C10D_NCCL and nccl.h and the CUDA runtime headers are on
// the include path. Use the wheel's nccl.h (site-packages/nvidia/nccl/include), not an older
// system copy: ProcessGroupNCCL::Options embeds ncclConfig_t, whose size changes between NCCL
// versions, and Options::create() allocates it in this translation unit.
#include "evax/dist/comm.h"

#if defined(USE_C10D_NCCL) && __has_include(<nccl.h>) && __has_include(<cuda_runtime_api.h>)
#define EVAX_HAS_NCCL 1
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif


namespace evax {

#ifdef EVAX_HAS_NCCL
namespace {

class NcclComm : public Comm {
 public:
  NcclComm(c10::intrusive_ptr<c10d::Store> store, const DistEnv& env, double timeout_s)
      : Comm(env.rank, env.world_size),
        device_(at::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank)) {
    // NCCL binds a communicator to the current device: select it before anything is created.
    c10::cuda::set_device(device_.index());
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
    try {
      pg_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(std::move(store), env.rank,
                                                        env.world_size, opts);
    } catch (const c10::Error& e) {
      raise<DistError>("rank ", env.rank, " could not create the NCCL process group: ",
                       e.what_without_backtrace());
    }
  }

  ~NcclComm() override {
    // An explicit shutdown lets the NCCL watchdog exit cleanly instead of warning at teardown.
    try {
      pg_->shutdown();
    } catch (...) {
    }
  }

  std::string backend_name() const override { return "nccl"; }
  at::Device device() const override { return device_; }

  void all_reduce(std::vector<at::Tensor>& tensors, ReduceOp op) override {
    c10d::AllreduceOptions o;
    o.reduceOp = op == ReduceOp::kSum ? c10d::ReduceOp::SUM : c10d::ReduceOp::MAX;
    for_each_tensor(tensors, "all_reduce", [&](std::vector<at::Tensor>& one) {
      return pg_->allreduce(one, o);
    });
  }

  void broadcast(std::vector<at::Tensor>& tensors, int root) override {
    EVAX_CHECK(DistError, root >= 0 && root < world_size(), "broadcast: root ", root,
               " is not a rank of a world of ", world_size());
    c10d::BroadcastOptions o;
    o.rootRank = root;
    for_each_tensor(tensors, "broadcast", [&](std::vector<at::Tensor>& one) {
      return pg_->broadcast(one, o);
    });
  }

  void barrier() override {
    c10d::BarrierOptions o;
    o.device_ids = {device_.index()};
    run("barrier", [&] { return pg_->barrier(o); });
  }

 private:
  template <class F>
  void run(const char* what, F&& f) {
    try {
      // wait() orders the current CUDA stream after the collective; it does not block the CPU.
      f()->wait();
    } catch (const c10::Error& e) {
      raise<DistError>("rank ", rank(), " NCCL ", what, " failed: ", e.what_without_backtrace());
    }
  }

  /// ProcessGroupNCCL takes one tensor per call (one GPU per process); non-contiguous tensors or
  /// tensors on another device go through a contiguous copy on this rank's GPU.
  template <class F>
  void for_each_tensor(std::vector<at::Tensor>& tensors, const char* what, F&& f) {
    at::NoGradGuard no_grad;
    for (at::Tensor& t : tensors) {
      EVAX_ASSERT(t.defined(), what, ": undefined tensor");
      const bool direct = t.device() == device_ && t.is_contiguous();
      std::vector<at::Tensor> one{direct ? t : t.to(device_).contiguous()};
      run(what, [&] { return f(one); });
      if (!direct) t.copy_(one[0]);
    }
  }

  at::Device device_;
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> pg_;
};

}  // namespace

bool nccl_comm_available() { return true; }

std::unique_ptr<Comm> nccl_comm_create(c10::intrusive_ptr<c10d::Store> store, const DistEnv& env,
                                       double timeout_s) {
  return std::make_unique<NcclComm>(std::move(store), env, timeout_s);
}

#else  // no NCCL in this build

bool nccl_comm_available() { return false; }

std::unique_ptr<Comm> nccl_comm_create(c10::intrusive_ptr<c10d::Store>, const DistEnv&, double) {
  raise<ConfigError>("dist backend 'nccl': this evax was built without NCCL support "
                     "(nccl.h or the CUDA headers were not found at build time)");
}

#endif

}  // namespace evax
