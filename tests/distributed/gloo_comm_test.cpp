// The gloo backend (c10d::ProcessGroupGloo) through comm_create: ranks as threads talking over
// loopback TCP. Checks results against a serial reduction, identical bits on every rank, dead and
// missing peers, and that "auto" picks gloo on a CPU-only machine.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <chrono>
#include <cstring>
#include <iostream>

#include "dist_test_util.h"
#include "evax/distributed/comm.h"

using Catch::Matchers::Contains;
using evax::test::run_ranks;

namespace {

std::unique_ptr<evax::Comm> make(int r, int world, int port, const std::string& backend,
                                 double timeout_s = 20) {
  evax::CommOptions o;
  o.backend = backend;
  o.timeout_s = timeout_s;
  return evax::comm_create(evax::test::local_env(r, world, port), o);
}

std::vector<at::Tensor> inputs(int r) {
  at::Generator gen = at::detail::createCPUGenerator(2000 + r);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  std::vector<at::Tensor> ts;
  for (int64_t n : {1, 7, 1001, 300000}) ts.push_back(at::randn({n}, gen, f32));
  ts.push_back(at::randn({5, 3}, gen, f32).t());  // non-contiguous: staged through a copy
  ts.push_back(at::randn({17}, gen, f32.dtype(at::kDouble)));
  ts.push_back(at::randn({19}, gen, f32).to(at::kBFloat16));
  ts.push_back(at::randint(-1000, 1000, {29}, gen, f32.dtype(at::kLong)));
  return ts;
}

bool bitwise_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
  at::Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.numel() * ca.element_size()) == 0;
}

}  // namespace

TEST_CASE("gloo: this build has it, and auto picks it on a machine without GPUs") {
  REQUIRE(evax::gloo_comm_available());
  const int port = evax::test::free_port();
  std::vector<std::string> names(2);
  run_ranks(2, [&](int r) { names[r] = make(r, 2, port, "auto")->backend_name(); });
  CHECK((names == std::vector<std::string>{"gloo", "gloo"}));
}

TEST_CASE("gloo: all_reduce sum and max, broadcast and barrier match a serial reference") {
  for (int world : {2, 3}) {
    INFO("world " << world);
    const int port = evax::test::free_port();
    std::vector<at::Tensor> sum_ref, max_ref;
    for (const auto& t : inputs(0)) {
      sum_ref.push_back(t.to(at::kDouble));
      max_ref.push_back(t.clone());
    }
    for (int r = 1; r < world; ++r) {
      const auto in = inputs(r);
      for (size_t i = 0; i < in.size(); ++i) {
        sum_ref[i].add_(in[i].to(at::kDouble));
        max_ref[i] = at::maximum(max_ref[i], in[i]);
      }
    }
    std::vector<std::vector<at::Tensor>> sums(world), maxes(world), bcast(world);
    std::vector<double> scalar(world);
    run_ranks(world, [&](int r) {
      auto comm = make(r, world, port, "gloo");
      sums[r] = inputs(r);
      comm->all_reduce_sum(sums[r]);
      maxes[r] = inputs(r);
      comm->all_reduce(maxes[r], evax::ReduceOp::kMax);
      comm->barrier();
      bcast[r] = inputs(r);
      comm->broadcast(bcast[r], world - 1);
      scalar[r] = comm->all_reduce_sum(0.5 * (r + 1));
    });
    const auto root_in = inputs(world - 1);
    for (int r = 0; r < world; ++r) {
      CHECK(scalar[r] == Approx(0.5 * world * (world + 1) / 2));
      for (size_t i = 0; i < sum_ref.size(); ++i) {
        INFO("rank " << r << " tensor " << i << " " << sums[r][i].scalar_type());
        // Every rank ends with the same bits; the values are the sum up to float rounding.
        CHECK(bitwise_equal(sums[r][i], sums[0][i]));
        const double tol = sums[r][i].scalar_type() == at::kBFloat16 ? 3e-2 : 1e-5;
        CHECK(at::allclose(sums[r][i].to(at::kDouble), sum_ref[i], tol, tol));
        CHECK(bitwise_equal(maxes[r][i], max_ref[i]));
        CHECK(bitwise_equal(bcast[r][i], root_in[i]));
      }
    }
  }
}

TEST_CASE("gloo: all_gather stacks every rank's tensor in rank order, several dtypes") {
  for (int world : {2, 3}) {
    INFO("world " << world);
    const int port = evax::test::free_port();
    std::vector<std::vector<at::Tensor>> got(world), lists(world);
    run_ranks(world, [&](int r) {
      auto comm = make(r, world, port, "gloo");
      for (const auto& t : inputs(r)) got[r].push_back(comm->all_gather(t));
      got[r].push_back(comm->all_gather(at::scalar_tensor(r, at::kInt)));  // 0-d: [world]
      lists[r] = comm->all_gather_list(at::full({2, 2}, static_cast<uint8_t>(r), at::kByte));
    });
    for (int r = 0; r < world; ++r) {
      INFO("rank " << r);
      for (int s = 0; s < world; ++s) {
        const auto in = inputs(s);
        for (size_t i = 0; i < in.size(); ++i) {
          INFO("from rank " << s << " tensor " << i << " " << in[i].scalar_type());
          REQUIRE(got[r][i].size(0) == world);
          CHECK(bitwise_equal(got[r][i][s], in[i]));
        }
        CHECK(got[r][in.size()][s].item<int>() == s);
        REQUIRE(lists[r].size() == static_cast<size_t>(world));
        CHECK(at::equal(lists[r][s], at::full({2, 2}, static_cast<uint8_t>(s), at::kByte)));
      }
    }
  }
}

TEST_CASE("gloo: a peer that dies mid-run makes the others fail quickly, not hang") {
  const int port = evax::test::free_port();
  std::string error;
  double seconds = 0;
  run_ranks(2, [&](int r) {
    auto comm = make(r, 2, port, "gloo", 30);
    std::vector<at::Tensor> t{at::ones({1000})};
    comm->all_reduce_sum(t);
    if (r == 1) return;  // rank 1 "dies": its process group and sockets go away
    auto t0 = std::chrono::steady_clock::now();
    try {
      for (int i = 0; i < 100; ++i) comm->all_reduce_sum(t);
    } catch (const evax::DistError& e) {
      error = e.what();
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  });
  CHECK_THAT(error, Contains("rank 0 gloo all_reduce failed"));
  CHECK(seconds < 30);  // well before the collective timeout
}

TEST_CASE("gloo: a rank that never joins makes the others fail within the timeout") {
  const int port = evax::test::free_port();
  std::string error;
  double seconds = 0;
  run_ranks(2, [&](int r) {
    if (r == 1) return;
    auto t0 = std::chrono::steady_clock::now();
    try {
      make(r, 2, port, "gloo", 3);
    } catch (const evax::DistError& e) {
      error = e.what();
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  });
  CHECK_THAT(error, Contains("rank 0 could not serve the rendezvous store"));
  CHECK(seconds >= 2.9);
  CHECK(seconds < 15);
}

TEST_CASE("gloo throughput: 2 ranks, 25 MB float32", "[.][bench]") {
  const int world = 2, iters = 10, port = evax::test::free_port();
  const int64_t n = 25 * 1024 * 1024 / 4;
  std::vector<double> secs(world);
  run_ranks(world, [&](int r) {
    auto comm = make(r, world, port, "gloo", 60);
    std::vector<at::Tensor> t{at::randn({n})};
    comm->all_reduce_sum(t);  // warm-up
    comm->barrier();
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) comm->all_reduce_sum(t);
    secs[r] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  });
  const double s = std::max(secs[0], secs[1]) / iters;
  std::cout << "gloo all_reduce 25 MB, 2 ranks: " << s * 1000 << " ms, " << 25.0 / s
            << " MB/s (buffer size / time)\n";
}
