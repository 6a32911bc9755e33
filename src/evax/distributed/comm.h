// Collective communication for data-parallel training: one abstract Comm, four backends.
//
//   single  world 1, every collective is a no-op.
//   gloo    CPU: c10d::ProcessGroupGloo, PyTorch's own CPU backend (built when Debian's
//           libgloo-dev headers are present; the wheel has the library but not the headers).
//   store   CPU: point-to-point messages through a c10d::Store (the TCP rendezvous store), so it
//           needs nothing but the store; slower than gloo, kept as the fallback.
//   nccl    GPU: c10d::ProcessGroupNCCL (compiled only with USE_C10D_NCCL and nccl.h present).
//
// Every rank must issue the same collectives in the same order with the same shapes and dtypes.
// Only rank 0 writes files (checkpoints, metrics, the run directory); the other ranks compute.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "evax/core/error.h"
#include "evax/distributed/env.h"

namespace evax {

/// A failed collective: a rank timed out, the store went away, or ranks disagree on shapes.
/// Mostly a dead or unreachable peer, hence its own exit code (4) that launchers can tell from a
/// bug (1) in the rank that failed first.
class DistError : public Error {
 public:
  using Error::Error;
  ExitCode exit_code() const override { return ExitCode::kDist; }
};

enum class ReduceOp { kSum, kMax };

/// A communicator over a fixed group of ranks. Not thread-safe: one thread per rank calls it.
class Comm {
 public:
  virtual ~Comm() = default;
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  /// "single", "gloo", "store" or "nccl".
  virtual std::string backend_name() const = 0;
  /// Device the collectives run on: CPU for single/gloo/store, cuda:<local_rank> for nccl.
  /// Tensors on other devices work too (staged through a copy on this device).
  virtual at::Device device() const = 0;

  /// Reduces every tensor elementwise across ranks, in place. Every rank ends with the same bits.
  virtual void all_reduce(std::vector<at::Tensor>& tensors, ReduceOp op) = 0;
  /// Overwrites every tensor with rank `root`'s values, in place.
  virtual void broadcast(std::vector<at::Tensor>& tensors, int root) = 0;
  /// Returns once every rank has called barrier().
  virtual void barrier() = 0;
  /// Every rank's `t` (same shape and dtype on all ranks), stacked in rank order: a
  /// [world_size, t.sizes()...] tensor on t's device. Any dtype; `t` is left unchanged.
  virtual at::Tensor all_gather(const at::Tensor& t) = 0;
  /// all_gather() as one tensor per rank, in rank order.
  std::vector<at::Tensor> all_gather_list(const at::Tensor& t);

  /// Sums across ranks, in place (see all_reduce).
  void all_reduce_sum(std::vector<at::Tensor>& tensors) { all_reduce(tensors, ReduceOp::kSum); }
  /// Sum of a scalar over ranks (metrics: loss sums, sample counts).
  double all_reduce_sum(double v);
  /// Maximum of a scalar over ranks (metrics: slowest step time).
  double all_reduce_max(double v);

 protected:
  Comm(int rank, int world_size) : rank_(rank), world_size_(world_size) {}

 private:
  double reduce_scalar(double v, ReduceOp op);
  int rank_, world_size_;
};

/// World of one: every collective returns at once.
class SingleComm : public Comm {
 public:
  SingleComm() : Comm(0, 1) {}
  std::string backend_name() const override { return "single"; }
  at::Device device() const override { return at::kCPU; }
  void all_reduce(std::vector<at::Tensor>&, ReduceOp) override {}
  void broadcast(std::vector<at::Tensor>&, int root) override;
  void barrier() override {}
  at::Tensor all_gather(const at::Tensor& t) override;
};

/// CPU collectives as point-to-point messages through a c10d::Store.
///
/// all_reduce: each tensor group (same dtype) is split into world_size chunks; rank d owns chunk
/// d, receives every rank's copy of it, reduces them in rank order 0..W-1 and sends the result
/// back to every rank. Deterministic, and bit-identical on all ranks because each chunk is
/// reduced once. Each key ("ar/<seq>/<phase>/<src>/<dst>") has one reader, who deletes it, so
/// the store does not grow. Supports float32/64, bfloat16, float16, int32, int64.
/// all_gather: each rank sends its raw bytes to every other rank (any dtype).
///
/// Rank 0's destructor waits (up to the timeout) until every rank has destroyed its StoreComm,
/// because rank 0's process hosts the TCP store the others may still be reading from.
class StoreComm : public Comm {
 public:
  /// `timeout_s` bounds each collective: a rank that waits longer for a peer throws DistError.
  StoreComm(c10::intrusive_ptr<c10d::Store> store, int rank, int world_size,
            double timeout_s = 300);
  ~StoreComm() override;
  std::string backend_name() const override { return "store"; }
  at::Device device() const override { return at::kCPU; }
  void all_reduce(std::vector<at::Tensor>& tensors, ReduceOp op) override;
  void broadcast(std::vector<at::Tensor>& tensors, int root) override;
  void barrier() override;
  at::Tensor all_gather(const at::Tensor& t) override;

 private:
  using Clock = std::chrono::steady_clock;
  void reduce_flat(const char* tag, at::Tensor flat, ReduceOp op);
  void send(const std::string& key, const void* data, size_t bytes);
  void recv(const std::string& key, int src, void* out, size_t bytes, const std::string& what,
            Clock::time_point deadline);
  std::vector<uint8_t> take(const std::string& key, int src, const std::string& what,
                            Clock::time_point deadline);
  std::string key(const char* tag, int phase, int src, int dst) const;

  c10::intrusive_ptr<c10d::Store> store_;
  std::chrono::milliseconds timeout_;
  uint64_t seq_ = 0;
  bool failed_ = false;  ///< a collective failed: the peers are out of step
};

/// Communicator set-up.
struct CommOptions {
  /// "auto" (nccl when every rank has its own GPU, else gloo, else store), "gloo", "store" or
  /// "nccl".
  std::string backend = "auto";
  /// Seconds a rank waits for its peers (rendezvous and each collective) before DistError.
  double timeout_s = 300;
};

/// Connects to the job's rendezvous store and builds the communicator. A world of one gets
/// SingleComm without touching the network. Throws ConfigError for a bad option and DistError
/// when the store cannot be reached.
std::unique_ptr<Comm> comm_create(const DistEnv& env, const CommOptions& opts = {});

/// The rendezvous store comm_create uses: a c10d::TCPStore at master_addr:master_port served by
/// rank 0 (or, under a torchrun agent, a client of the agent's store under
/// "/worker/attempt_<restart_count>", as torch's own env:// rendezvous does).
c10::intrusive_ptr<c10d::Store> rendezvous_store(const DistEnv& env, double timeout_s);

/// Whether this build has the NCCL backend.
bool nccl_comm_available();
/// The CUDA device a rank computes on and NCCL binds to: local_rank modulo the visible devices
/// (one per rank under torchrun or `--gpus-per-node`; device 0 under `--gpus-per-task=1`).
int cuda_device_index(const DistEnv& env);
/// What identifies this rank's GPU across the job, "<host>/<PCI domain:bus:device>" (or the
/// device index where the build cannot ask CUDA); "" when this process has no CUDA device or the
/// build has no NCCL.
std::string nccl_device_identity(const DistEnv& env);
/// The backend "auto" resolves to, given every rank's nccl_device_identity() (index = rank):
/// nccl when every rank has its own GPU, else gloo (when built), else store.
std::string auto_backend(const std::vector<std::string>& identities, bool gloo_built);
/// ConfigError when two ranks would drive the same GPU (NCCL refuses "Duplicate GPU"), naming
/// the ranks and the device, or a rank has none.
void check_nccl_devices(const std::vector<std::string>& identities);
/// An NCCL communicator on cuda:cuda_device_index(env). Throws ConfigError when the build lacks
/// NCCL.
std::unique_ptr<Comm> nccl_comm_create(c10::intrusive_ptr<c10d::Store> store, const DistEnv& env,
                                       double timeout_s);

/// Whether this build has the gloo backend (Debian's libgloo-dev headers were found).
bool gloo_comm_available();
/// A gloo communicator on the CPU: loopback when every rank is on this node, else the interface
/// GLOO_SOCKET_IFNAME names or the host name's address. Throws ConfigError when the build lacks
/// gloo.
std::unique_ptr<Comm> gloo_comm_create(c10::intrusive_ptr<c10d::Store> store, const DistEnv& env,
                                       double timeout_s);

}  // namespace evax
