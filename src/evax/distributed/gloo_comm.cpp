// The gloo backend: c10d::ProcessGroupGloo (compiled into libtorch_cpu) behind BackendComm.
//
// The PyPI wheel ships ProcessGroupGloo.hpp but not the gloo headers it includes; Debian's
// libgloo-dev provides them. Only forward-declared gloo types (shared_ptr<Device>) and
// libtorch's exported functions are used here, so the Debian headers' version does not have to
// match the gloo libtorch was built with. Without those headers the backend is left out and
// "auto" falls back to the store backend.
#include "evax/distributed/backend_comm.h"

#include <cstdlib>

#if __has_include(<gloo/config.h>) && __has_include(<torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>)
#define EVAX_HAS_GLOO 1
// The header is guarded by torch's build macro; TorchConfig exports it, define it if missing.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

namespace evax {

#ifdef EVAX_HAS_GLOO

bool gloo_comm_available() { return true; }

std::unique_ptr<Comm> gloo_comm_create(c10::intrusive_ptr<c10d::Store> store, const DistEnv& env,
                                       double timeout_s) {
  c10::intrusive_ptr<c10d::Backend> pg;
  try {
    auto opts = c10d::ProcessGroupGloo::Options::create(
        std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
    // As torch: GLOO_SOCKET_IFNAME picks the interface. A job on one node talks over loopback
    // (the host name may not resolve in containers); across nodes, the address the host name
    // resolves to.
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifname && *ifname)
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (env.local_world_size == env.world_size)
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    opts->threads = 2;
    pg = c10::make_intrusive<c10d::ProcessGroupGloo>(std::move(store), env.rank, env.world_size,
                                                     opts);
  } catch (const c10::Error& e) {
    raise<DistError>("rank ", env.rank, " could not create the gloo process group: ",
                     e.what_without_backtrace());
  } catch (const std::exception& e) {
    raise<DistError>("rank ", env.rank, " could not create the gloo process group: ", e.what());
  }
  return std::make_unique<BackendComm>("gloo", at::kCPU, env.rank, env.world_size, std::move(pg));
}

#else  // no gloo headers at build time

bool gloo_comm_available() { return false; }

std::unique_ptr<Comm> gloo_comm_create(c10::intrusive_ptr<c10d::Store>, const DistEnv&, double) {
  raise<ConfigError>("dist backend 'gloo': this evax was built without the gloo headers "
                     "(Debian package libgloo-dev); use the 'store' backend");
}

#endif

}  // namespace evax
