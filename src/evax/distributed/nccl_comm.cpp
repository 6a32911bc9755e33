// The NCCL backend: c10d::ProcessGroupNCCL behind BackendComm.
//
// Exercised only on a GPU machine: the CPU-only test suite compiles this file but never runs it.
// It is built when torch defines USE_C10D_NCCL and nccl.h and the CUDA runtime headers are on
// the include path. Use the wheel's nccl.h (site-packages/nvidia/nccl/include), not an older
// system copy: ProcessGroupNCCL::Options embeds ncclConfig_t, whose size changes between NCCL
// versions, and Options::create() allocates it in this translation unit.
#include "evax/distributed/backend_comm.h"

#if defined(USE_C10D_NCCL) && __has_include(<nccl.h>) && __has_include(<cuda_runtime_api.h>)
#define EVAX_HAS_NCCL 1
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <unistd.h>

#include <array>

namespace evax {

#ifdef EVAX_HAS_NCCL

bool nccl_comm_available() { return true; }

std::string nccl_device_identity(const DistEnv& env) {
  const int index = cuda_device_index(env);
  if (index < 0) return "";
  std::array<char, 256> host{};
  if (gethostname(host.data(), host.size() - 1) != 0) host[0] = '\0';
  // The PCI address names the physical GPU whatever CUDA_VISIBLE_DEVICES renumbered.
  std::array<char, 32> bus{};
  if (cudaDeviceGetPCIBusId(bus.data(), static_cast<int>(bus.size()), index) != cudaSuccess)
    return str_cat(host.data(), "/cuda:", index);
  return str_cat(host.data(), "/", bus.data());
}

std::unique_ptr<Comm> nccl_comm_create(c10::intrusive_ptr<c10d::Store> store, const DistEnv& env,
                                       double timeout_s) {
  const int index = cuda_device_index(env);
  EVAX_CHECK(ConfigError, index >= 0, "dist backend 'nccl': rank ", env.rank,
             " sees no CUDA device");
  const at::Device device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
  // NCCL binds a communicator to the current device: select it before anything is created.
  c10::cuda::set_device(device.index());
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  c10::intrusive_ptr<c10d::Backend> pg;
  try {
    pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(std::move(store), env.rank, env.world_size,
                                                     opts);
  } catch (const c10::Error& e) {
    raise<DistError>("rank ", env.rank, " could not create the NCCL process group: ",
                     e.what_without_backtrace());
  }
  return std::make_unique<BackendComm>("nccl", device, env.rank, env.world_size, std::move(pg));
}

#else  // no NCCL in this build

bool nccl_comm_available() { return false; }

std::string nccl_device_identity(const DistEnv&) { return ""; }

std::unique_ptr<Comm> nccl_comm_create(c10::intrusive_ptr<c10d::Store>, const DistEnv&, double) {
  raise<ConfigError>("dist backend 'nccl': this evax was built without NCCL support "
                     "(nccl.h or the CUDA headers were not found at build time)");
}

#endif

}  // namespace evax
