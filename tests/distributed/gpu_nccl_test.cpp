// On CUDA GPUs: the NCCL backend's all_reduce across one rank per GPU present equals a serial
// sum, with the same bits on every rank. Skipped (visibly) without a CUDA device; run by
// tools/gpu_check.sh on a lent GPU machine.
//
// With one GPU the communicator has one rank: NCCL (since 2.5) refuses two ranks of one
// communicator on the same device ("Duplicate GPU detected", ncclInvalidUsage), so two ranks on
// one GPU are not an NCCL configuration; the single-rank communicator still initialises NCCL and
// runs its all-reduce kernel. Two ranks sharing one GPU train through gloo (CPU staging).
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <cstring>

#include "dist_test_util.h"
#include "evax/distributed/comm.h"
#include "skip.h"

namespace {

std::vector<at::Tensor> inputs(int r) {
  at::Generator gen = at::detail::createCPUGenerator(3000 + r);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  std::vector<at::Tensor> ts;
  for (int64_t n : {1, 7, 1001, 300000}) ts.push_back(at::randn({n}, gen, f32));
  ts.push_back(at::randn({19}, gen, f32).to(at::kBFloat16));
  ts.push_back(at::randn({17}, gen, f32.dtype(at::kDouble)));
  return ts;
}

}  // namespace

TEST_CASE("GPU: NCCL all_reduce across the GPUs present equals a serial sum on every rank") {
  if (!torch::cuda::is_available()) EVAX_SKIP("no CUDA device");
  INFO("a CUDA machine must build the NCCL backend (torch with USE_C10D_NCCL, nccl.h found)");
  REQUIRE(evax::nccl_comm_available());
  const int world = static_cast<int>(torch::cuda::device_count());
  const int port = evax::test::free_port();
  std::vector<at::Tensor> ref;
  for (const auto& t : inputs(0)) ref.push_back(t.to(at::kDouble));
  for (int r = 1; r < world; ++r) {
    const auto in = inputs(r);
    for (size_t i = 0; i < in.size(); ++i) ref[i].add_(in[i].to(at::kDouble));
  }
  std::vector<std::vector<at::Tensor>> out(world);
  std::vector<std::string> devices(world);
  evax::test::run_ranks(world, [&](int r) {
    const evax::DistEnv env = evax::test::local_env(r, world, port);
    auto comm = evax::nccl_comm_create(evax::rendezvous_store(env, 60), env, 60);
    devices[r] = comm->device().str();
    std::vector<at::Tensor> ts;
    for (const auto& t : inputs(r)) ts.push_back(t.to(comm->device()));
    comm->all_reduce_sum(ts);
    // A CPU tensor is staged through the communicator's device.
    std::vector<at::Tensor> cpu{inputs(r)[2].clone()};
    comm->all_reduce_sum(cpu);
    comm->barrier();
    for (auto& t : ts) out[r].push_back(t.cpu());
    out[r].push_back(cpu[0]);
  });
  INFO("world " << world);
  for (int r = 0; r < world; ++r) {
    CHECK(devices[r] == "cuda:" + std::to_string(r));
    REQUIRE(out[r].size() == ref.size() + 1);
    for (size_t i = 0; i < ref.size(); ++i) {
      INFO("rank " << r << ", tensor " << i << " (" << out[r][i].scalar_type() << ")");
      // bf16 sums round to 8 bits; float32 sums in another order differ in the last bits.
      const double tol = out[r][i].scalar_type() == at::kBFloat16 ? 2e-2 : 1e-5;
      const double err = (out[r][i].to(at::kDouble) - ref[i]).abs().max().item<double>();
      CHECK(err <= tol * (1 + ref[i].abs().max().item<double>()));
      // Every rank ends with the same bits.
      const at::Tensor a = out[r][i].contiguous(), b = out[0][i].contiguous();
      CHECK(std::memcmp(a.data_ptr(), b.data_ptr(), a.numel() * a.element_size()) == 0);
    }
    CHECK((out[r].back().to(at::kDouble) - ref[2]).abs().max().item<double>() <= 1e-3);
  }
}

TEST_CASE("GPU: one rank more than GPUs: nccl is refused naming the shared GPU, auto picks gloo") {
  if (!torch::cuda::is_available()) EVAX_SKIP("no CUDA device");
  REQUIRE(evax::nccl_comm_available());
  const int world = static_cast<int>(torch::cuda::device_count()) + 1;
  std::vector<std::string> errors(world), names(world);
  int port = evax::test::free_port();
  evax::test::run_ranks(world, [&](int r) {
    evax::CommOptions o;
    o.backend = "nccl";
    o.timeout_s = 30;
    try {
      evax::comm_create(evax::test::local_env(r, world, port), o);
    } catch (const evax::ConfigError& e) {
      errors[r] = e.what();
    }
  });
  for (int r = 0; r < world; ++r) {
    INFO("rank " << r);
    CHECK_THAT(errors[r], Catch::Contains("ranks 0 and " + std::to_string(world - 1) +
                                          " would both drive GPU"));
  }
  port = evax::test::free_port();
  evax::test::run_ranks(world, [&](int r) {
    evax::CommOptions o;
    o.timeout_s = 30;
    names[r] = evax::comm_create(evax::test::local_env(r, world, port), o)->backend_name();
  });
  for (int r = 0; r < world; ++r) CHECK(names[r] == (evax::gloo_comm_available() ? "gloo" : "store"));
}
