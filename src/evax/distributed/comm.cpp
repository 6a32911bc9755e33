#include "evax/distributed/comm.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/cuda.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <map>

#include "evax/core/log.h"

namespace evax {
namespace {

bool supported_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
    case at::kDouble:
    case at::kBFloat16:
    case at::kHalf:
    case at::kInt:
    case at::kLong: return true;
    default: return false;
  }
}

/// Tensors of one dtype, reduced or broadcast as one flat buffer.
struct Group {
  at::ScalarType dtype;
  std::vector<size_t> members;
  int64_t numel = 0;
};

/// `reduce`: the dtypes must support arithmetic; a broadcast moves raw bytes of any dtype.
std::vector<Group> group_by_dtype(const std::vector<at::Tensor>& ts, const char* op, bool reduce) {
  std::vector<Group> groups;
  for (size_t i = 0; i < ts.size(); ++i) {
    EVAX_ASSERT(ts[i].defined(), op, ": tensor ", i, " is undefined");
    const at::ScalarType dt = ts[i].scalar_type();
    EVAX_CHECK(DistError, !reduce || supported_dtype(dt), op, ": tensor ", i,
               " has unsupported dtype ", dt, " (float32/64, bfloat16, float16, int32, int64)");
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const Group& g) { return g.dtype == dt; });
    if (it == groups.end()) it = groups.insert(groups.end(), Group{dt, {}, 0});
    it->members.push_back(i);
    it->numel += ts[i].numel();
  }
  return groups;
}

/// The group's data as one contiguous CPU tensor: the tensor itself when it already is one (the
/// usual case: a gradient bucket), else a packed copy that unpack() writes back.
at::Tensor pack(const std::vector<at::Tensor>& ts, const Group& g, bool* aliased) {
  if (g.members.size() == 1) {
    const at::Tensor& t = ts[g.members[0]];
    if (t.device().is_cpu() && t.is_contiguous()) {
      *aliased = true;
      return t.view({-1});
    }
  }
  *aliased = false;
  at::Tensor flat = at::empty({g.numel}, at::TensorOptions().dtype(g.dtype));
  int64_t off = 0;
  for (size_t i : g.members) {
    const int64_t n = ts[i].numel();
    flat.narrow(0, off, n).copy_(ts[i].reshape({-1}));
    off += n;
  }
  return flat;
}

void unpack(const at::Tensor& flat, std::vector<at::Tensor>& ts, const Group& g) {
  int64_t off = 0;
  for (size_t i : g.members) {
    at::Tensor& t = ts[i];
    const int64_t n = t.numel();
    t.copy_(flat.narrow(0, off, n).view(t.sizes()));
    off += n;
  }
}

/// First line of a c10 error, without the C++ backtrace.
std::string first_line(const c10::Error& e) {
  std::string m = e.what_without_backtrace();
  return m.substr(0, m.find('\n'));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Comm

double Comm::reduce_scalar(double v, ReduceOp op) {
  std::vector<at::Tensor> t{
      at::full({1}, v, at::TensorOptions().dtype(at::kDouble).device(device()))};
  all_reduce(t, op);
  return t[0].item<double>();
}

double Comm::all_reduce_sum(double v) {
  return world_size() == 1 ? v : reduce_scalar(v, ReduceOp::kSum);
}
double Comm::all_reduce_max(double v) {
  return world_size() == 1 ? v : reduce_scalar(v, ReduceOp::kMax);
}

std::vector<at::Tensor> Comm::all_gather_list(const at::Tensor& t) {
  at::Tensor all = all_gather(t);
  std::vector<at::Tensor> out;
  for (int r = 0; r < world_size(); ++r) out.push_back(all[r]);
  return out;
}

at::Tensor SingleComm::all_gather(const at::Tensor& t) {
  EVAX_ASSERT(t.defined(), "all_gather: undefined tensor");
  at::NoGradGuard no_grad;
  return t.unsqueeze(0).clone();
}

void SingleComm::broadcast(std::vector<at::Tensor>&, int root) {
  EVAX_CHECK(DistError, root == 0, "broadcast: root ", root, " is not a rank of a world of 1");
}

// ---------------------------------------------------------------------------------------------
// StoreComm

StoreComm::StoreComm(c10::intrusive_ptr<c10d::Store> store, int rank, int world_size,
                     double timeout_s)
    : Comm(rank, world_size),
      store_(std::move(store)),
      timeout_(std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000))) {
  EVAX_ASSERT(store_, "StoreComm needs a store");
  EVAX_ASSERT(world_size >= 1 && rank >= 0 && rank < world_size, "rank ", rank, " world ",
              world_size);
  EVAX_CHECK(ConfigError, timeout_s > 0, "communication timeout must be > 0 s, got ", timeout_s);
}

StoreComm::~StoreComm() {
  // Rank 0 hosts the TCP store, and the other ranks may still be reading the last results from
  // it: rank 0 waits for everyone's goodbye before its process may exit. Skipped after a failure
  // or while an exception unwinds, when the peers may never say goodbye.
  if (world_size() == 1 || failed_ || std::uncaught_exceptions() > 0) return;
  try {
    if (rank() != 0) {
      store_->set(key("fin", 0, rank(), 0), std::vector<uint8_t>{});
      return;
    }
    for (int s = 1; s < world_size(); ++s) {
      const std::string k = key("fin", 0, s, 0);
      store_->wait({k}, timeout_);
      store_->deleteKey(k);
    }
  } catch (const std::exception& e) {
    log_warn("rank ", rank(), ": not every rank shut down its communicator cleanly: ",
             std::string(e.what()).substr(0, std::string(e.what()).find('\n')));
  }
}

std::string StoreComm::key(const char* tag, int phase, int src, int dst) const {
  return str_cat(tag, "/", seq_, "/", phase, "/", src, "/", dst);
}

// A message travels as segments of at most kSegmentBytes (libuv's TCPStore server drops a client
// that sends a value over 8 MiB): "<key>", "<key>+1", "<key>+2", ... The first segment starts
// with the message's total size, so a receiver that expects another size fails at once instead
// of waiting for segments that never come.
namespace {
constexpr size_t kSegmentBytes = 4u << 20;
constexpr size_t kHeaderBytes = sizeof(uint64_t);

size_t num_segments(size_t bytes) {
  return bytes == 0 ? 1 : (bytes + kSegmentBytes - 1) / kSegmentBytes;
}
std::string segment_key(const std::string& key, size_t i) {
  return i == 0 ? key : str_cat(key, "+", i);
}
}  // namespace

void StoreComm::send(const std::string& key, const void* data, size_t bytes) {
  const auto* p = static_cast<const uint8_t*>(data);
  try {
    for (size_t i = 0, n = num_segments(bytes); i < n; ++i) {
      const size_t off = i * kSegmentBytes, len = std::min(kSegmentBytes, bytes - off);
      std::vector<uint8_t> v;
      v.reserve(len + kHeaderBytes);
      if (i == 0) {
        const uint64_t total = bytes;
        const auto* h = reinterpret_cast<const uint8_t*>(&total);
        v.insert(v.end(), h, h + kHeaderBytes);
      }
      v.insert(v.end(), p + off, p + off + len);
      store_->set(segment_key(key, i), v);
    }
  } catch (const c10::Error& e) {
    failed_ = true;
    raise<DistError>("rank ", rank(), " could not write '", key, "' to the store: ", first_line(e));
  }
}

std::vector<uint8_t> StoreComm::take(const std::string& key, int src, const std::string& what,
                                     Clock::time_point deadline) {
  // A key that is already there must still be read after the deadline: wait at least 1 ms.
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  left = std::max(left, std::chrono::milliseconds(1));
  try {
    store_->wait({key}, left);
    std::vector<uint8_t> v = store_->get(key);
    store_->deleteKey(key);  // one reader per key: the store does not grow
    return v;
  } catch (const c10::DistNetworkError& e) {
    failed_ = true;
    raise<DistError>("rank ", rank(), " lost the store while waiting for rank ", src, " in ", what,
                     " (did rank 0 die?): ", first_line(e));
  } catch (const c10::DistStoreError& e) {
    failed_ = true;
    raise<DistError>("rank ", rank(), " timed out waiting for rank ", src, " after ",
                     timeout_.count() / 1000.0, " s in ", what, " (did a rank die?)");
  } catch (const c10::Error& e) {
    failed_ = true;
    raise<DistError>("rank ", rank(), " failed waiting for rank ", src, " in ", what, ": ",
                     first_line(e));
  }
}

void StoreComm::recv(const std::string& key, int src, void* out, size_t bytes,
                     const std::string& what, Clock::time_point deadline) {
  auto* p = static_cast<uint8_t*>(out);
  for (size_t i = 0, n = num_segments(bytes); i < n; ++i) {
    std::vector<uint8_t> v = take(segment_key(key, i), src, what, deadline);
    size_t skip = 0;
    if (i == 0) {
      uint64_t total = 0;
      if (v.size() >= kHeaderBytes) std::memcpy(&total, v.data(), kHeaderBytes);
      if (v.size() < kHeaderBytes || total != bytes) {
        failed_ = true;
        raise<DistError>("rank ", rank(), " got ", total, " bytes from rank ", src, " in ", what,
                         ", expected ", bytes,
                         ": the ranks passed tensors of different shapes or dtypes");
      }
      skip = kHeaderBytes;
    }
    const size_t off = i * kSegmentBytes, len = std::min(kSegmentBytes, bytes - off);
    if (v.size() - skip != len) {
      failed_ = true;
      raise<DistError>("rank ", rank(), " got a malformed message '", segment_key(key, i),
                       "' from rank ", src, " in ", what);
    }
    if (len > 0) std::memcpy(p + off, v.data() + skip, len);
  }
}

void StoreComm::reduce_flat(const char* tag, at::Tensor flat, ReduceOp op) {
  const int w = world_size(), r = rank();
  const auto deadline = Clock::now() + timeout_;
  const std::string what = str_cat(tag == std::string("ba") ? "barrier #" : "all_reduce #", seq_);
  const int64_t n = flat.numel();
  const size_t es = flat.element_size();
  auto begin = [&](int c) { return n * c / w; };
  auto size = [&](int c) { return begin(c + 1) - begin(c); };
  auto* base = static_cast<uint8_t*>(flat.data_ptr());

  // Phase 0: chunk d goes to its owner, rank d. Sets do not block, so send everything first.
  for (int d = 0; d < w; ++d)
    if (d != r) send(key(tag, 0, r, d), base + begin(d) * es, size(d) * es);
  const int64_t m = size(r);
  at::Tensor mine = flat.narrow(0, begin(r), m);
  std::vector<at::Tensor> parts(w);
  for (int s = 0; s < w; ++s) {
    if (s == r) {
      parts[s] = mine;
      continue;
    }
    parts[s] = at::empty({m}, flat.options());
    recv(key(tag, 0, s, r), s, parts[s].data_ptr(), m * es, what, deadline);
  }
  if (m > 0) {
    // Fixed rank order 0..W-1: the result does not depend on who owns the chunk.
    at::Tensor acc = parts[0].clone();
    for (int s = 1; s < w; ++s) {
      if (op == ReduceOp::kSum) acc.add_(parts[s]);
      else at::maximum_out(acc, acc, parts[s]);
    }
    mine.copy_(acc);
  }
  parts.clear();

  // Phase 1: the owner sends its reduced chunk to every rank.
  for (int d = 0; d < w; ++d)
    if (d != r) send(key(tag, 1, r, d), base + begin(r) * es, m * es);
  for (int s = 0; s < w; ++s) {
    if (s == r) continue;
    recv(key(tag, 1, s, r), s, base + begin(s) * es, size(s) * es, what, deadline);
  }
  ++seq_;
}

void StoreComm::all_reduce(std::vector<at::Tensor>& tensors, ReduceOp op) {
  if (world_size() == 1) return;
  at::NoGradGuard no_grad;
  for (const Group& g : group_by_dtype(tensors, "all_reduce", true)) {
    bool aliased = false;
    at::Tensor flat = pack(tensors, g, &aliased);
    reduce_flat("ar", flat, op);
    if (!aliased) unpack(flat, tensors, g);
  }
}

void StoreComm::broadcast(std::vector<at::Tensor>& tensors, int root) {
  EVAX_CHECK(DistError, root >= 0 && root < world_size(), "broadcast: root ", root,
             " is not a rank of a world of ", world_size());
  if (world_size() == 1) return;
  at::NoGradGuard no_grad;
  for (const Group& g : group_by_dtype(tensors, "broadcast", false)) {
    const auto deadline = Clock::now() + timeout_;
    bool aliased = false;
    at::Tensor flat = pack(tensors, g, &aliased);
    const size_t bytes = flat.numel() * flat.element_size();
    if (rank() == root) {
      for (int d = 0; d < world_size(); ++d)
        if (d != root) send(key("bc", 0, root, d), flat.data_ptr(), bytes);
    } else {
      recv(key("bc", 0, root, rank()), root, flat.data_ptr(), bytes, str_cat("broadcast #", seq_),
           deadline);
      if (!aliased) unpack(flat, tensors, g);
    }
    ++seq_;
  }
}

at::Tensor StoreComm::all_gather(const at::Tensor& t) {
  EVAX_ASSERT(t.defined(), "all_gather: undefined tensor");
  at::NoGradGuard no_grad;
  std::vector<int64_t> shape{world_size()};
  shape.insert(shape.end(), t.sizes().begin(), t.sizes().end());
  at::Tensor out = at::empty(shape, t.options().device(at::kCPU));
  out[rank()].copy_(t);
  if (world_size() > 1) {
    const auto deadline = Clock::now() + timeout_;
    const std::string what = str_cat("all_gather #", seq_);
    const size_t bytes = t.numel() * t.element_size();
    // Rows of a contiguous [world, ...] tensor: rank r's data at out[r].
    auto row = [&](int r) { return static_cast<uint8_t*>(out.data_ptr()) + r * bytes; };
    for (int d = 0; d < world_size(); ++d)
      if (d != rank()) send(key("ag", 0, rank(), d), row(rank()), bytes);
    for (int s = 0; s < world_size(); ++s)
      if (s != rank()) recv(key("ag", 0, s, rank()), s, row(s), bytes, what, deadline);
    ++seq_;
  }
  return t.device().is_cpu() ? out : out.to(t.device());
}

void StoreComm::barrier() {
  if (world_size() == 1) return;
  // An all-reduce of nothing: no rank leaves phase 1 before every rank has entered phase 0.
  reduce_flat("ba", at::empty({0}, at::kFloat), ReduceOp::kSum);
}

// ---------------------------------------------------------------------------------------------
// Set-up

c10::intrusive_ptr<c10d::Store> rendezvous_store(const DistEnv& env, double timeout_s) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(env.master_port);
  o.isServer = env.rank == 0 && !env.use_agent_store;
  o.numWorkers = static_cast<size_t>(env.world_size);
  o.waitWorkers = true;
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  o.multiTenant = true;
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, o);
  } catch (const c10::Error& e) {
    raise<DistError>("rank ", env.rank, " could not ", o.isServer ? "serve" : "reach",
                     " the rendezvous store at ", env.master_addr, ":", env.master_port, ": ",
                     first_line(e));
  }
  // torchrun's agent serves one store for all restarts; each attempt gets its own key space.
  if (env.use_agent_store)
    store = c10::make_intrusive<c10d::PrefixStore>(
        str_cat("/worker/attempt_", env.restart_count), store);
  return store;
}

int cuda_device_index(const DistEnv& env) {
  const int n = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  return n > 0 ? std::max(0, env.local_rank) % n : -1;
}

std::string auto_backend(const std::vector<std::string>& identities, bool gloo_built) {
  std::vector<std::string> sorted = identities;
  std::sort(sorted.begin(), sorted.end());
  const bool own_gpus = !sorted.empty() && !sorted.front().empty() &&
                        std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end();
  return own_gpus ? "nccl" : gloo_built ? "gloo" : "store";
}

void check_nccl_devices(const std::vector<std::string>& identities) {
  std::map<std::string, size_t> first;
  for (size_t r = 0; r < identities.size(); ++r) {
    EVAX_CHECK(ConfigError, !identities[r].empty(), "dist backend 'nccl': rank ", r,
               " has no CUDA device (NCCL needs one GPU per rank; use backend gloo or auto)");
    const auto [it, fresh] = first.emplace(identities[r], r);
    EVAX_CHECK(ConfigError, fresh, "dist backend 'nccl': ranks ", it->second, " and ", r,
               " would both drive GPU ", identities[r],
               " (NCCL needs one GPU per rank: give each rank its own GPU, e.g. SLURM "
               "--gpus-per-node equal to --ntasks-per-node, or use backend gloo)");
  }
}

std::unique_ptr<Comm> comm_create(const DistEnv& env, const CommOptions& opts) {
  const std::string& b = opts.backend;
  EVAX_CHECK(ConfigError, b == "auto" || b == "gloo" || b == "store" || b == "nccl",
             "unknown dist backend '", b, "' (valid: auto, gloo, store, nccl)");
  EVAX_CHECK(ConfigError, opts.timeout_s > 0, "dist timeout must be > 0 s, got ", opts.timeout_s);
  if (env.world_size == 1) return std::make_unique<SingleComm>();
  if (b == "nccl") {
    EVAX_CHECK(ConfigError, nccl_comm_available(),
               "dist backend 'nccl': this evax was built without NCCL support");
    EVAX_CHECK(ConfigError, torch::cuda::is_available(),
               "dist backend 'nccl' needs CUDA, and none is available");
  }

  auto store = rendezvous_store(env, opts.timeout_s);
  // Rank 0 decides: for auto and nccl it collects every rank's GPU (host + PCI address), so that
  // NCCL is chosen only when each rank has its own (under --gpus-per-task=1 every rank sees one
  // device 0, yet they differ) and a shared GPU is refused here, not as NCCL's "Duplicate GPU".
  // Every rank then compares its own choice with rank 0's verdict before building anything that
  // could hang. Rank 0 reads N keys: O(N) store traffic.
  std::string backend = b;
  try {
    const auto wait = std::chrono::milliseconds(static_cast<int64_t>(opts.timeout_s * 1000));
    const std::string k = "evax/backend";
    const bool exchange = b == "auto" || b == "nccl";
    if (exchange)
      store->set("evax/gpu/" + std::to_string(env.rank), "=" + nccl_device_identity(env));
    if (env.rank == 0) {
      std::string verdict = b;
      if (exchange) {
        std::vector<std::string> ids;
        for (int r = 0; r < env.world_size; ++r) {
          const std::string key = "evax/gpu/" + std::to_string(r);
          store->wait({key}, wait);
          ids.push_back(store->get_to_str(key).substr(1));
        }
        if (b == "auto") verdict = auto_backend(ids, gloo_comm_available());
        if (verdict == "nccl") {
          try {
            check_nccl_devices(ids);
          } catch (const ConfigError& e) {
            verdict = std::string("!") + e.what();
          }
        }
      }
      store->set(k, verdict);
    }
    store->wait({k}, wait);
    const std::string root = store->get_to_str(k);
    if (!root.empty() && root[0] == '!') raise<ConfigError>(root.substr(1));
    if (b == "auto") backend = root;
    EVAX_CHECK(ConfigError, root == backend, "rank ", env.rank, " chose dist backend '", backend,
               "' but rank 0 chose '", root, "' (set the backend identically on every rank)");
  } catch (const c10::Error& e) {
    raise<DistError>("rank ", env.rank, " could not agree on the backend with rank 0: ",
                     first_line(e));
  }

  std::unique_ptr<Comm> comm;
  if (backend == "nccl") comm = nccl_comm_create(store, env, opts.timeout_s);
  else if (backend == "gloo") comm = gloo_comm_create(store, env, opts.timeout_s);
  else comm = std::make_unique<StoreComm>(store, env.rank, env.world_size, opts.timeout_s);
  log_info("distributed: ", describe(env), ", backend ", comm->backend_name());
  return comm;
}

}  // namespace evax
