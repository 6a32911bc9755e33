// StoreComm over a HashStore (ranks as threads) and a real TCPStore: exact, deterministic
// all-reduce, broadcast, barrier, key cleanup, timeouts; comm_create.
#include <catch2/catch.hpp>

#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <iostream>

#include "dist_test_util.h"
#include "evax/distributed/comm.h"

using Catch::Matchers::Contains;
using evax::test::run_ranks;

namespace {

/// Rank r's input tensors: odd sizes (empty and one element included), several dtypes, one
/// non-contiguous view.
std::vector<at::Tensor> inputs(int r) {
  at::Generator gen = at::detail::createCPUGenerator(1000 + r);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  std::vector<at::Tensor> ts;
  for (int64_t n : {0, 1, 7, 1001, 33333}) ts.push_back(at::randn({n}, gen, f32));
  ts.push_back(at::randn({5, 3}, gen, f32).t());  // non-contiguous
  ts.push_back(at::randn({17}, gen, f32.dtype(at::kDouble)));
  ts.push_back(at::randn({19}, gen, f32).to(at::kBFloat16));
  ts.push_back(at::randn({23}, gen, f32).to(at::kHalf));
  ts.push_back(at::randint(-1000, 1000, {29}, gen, f32.dtype(at::kLong)));
  ts.push_back(at::randn({3, 4, 5}, gen, f32));
  return ts;
}

bool bitwise_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
  at::Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.numel() * ca.element_size()) == 0;
}

std::vector<at::Tensor> clones(const std::vector<at::Tensor>& ts) {
  std::vector<at::Tensor> out;
  for (const auto& t : ts) out.push_back(t.clone());
  return out;
}

c10::intrusive_ptr<c10d::Store> hash_store() { return c10::make_intrusive<c10d::HashStore>(); }

}  // namespace

TEST_CASE("StoreComm: all_reduce_sum is bitwise the serial sum in rank order, on every rank") {
  for (int world : {2, 3}) {
    INFO("world " << world);
    auto store = hash_store();
    // Serial reference: rank 0 + rank 1 + ... in that order.
    std::vector<at::Tensor> ref = clones(inputs(0));
    for (int r = 1; r < world; ++r) {
      auto in = inputs(r);
      for (size_t i = 0; i < ref.size(); ++i) ref[i].add_(in[i]);
    }
    std::vector<std::vector<at::Tensor>> got(world), single(world);
    run_ranks(world, [&](int r) {
      evax::StoreComm comm(store, r, world, 5);
      got[r] = inputs(r);
      comm.all_reduce_sum(got[r]);
      // The same tensors reduced one by one (the single-tensor, no-copy path).
      single[r] = inputs(r);
      for (auto& t : single[r]) {
        std::vector<at::Tensor> one{t};
        comm.all_reduce_sum(one);
      }
    });
    for (int r = 0; r < world; ++r)
      for (size_t i = 0; i < ref.size(); ++i) {
        INFO("rank " << r << " tensor " << i);
        CHECK(bitwise_equal(got[r][i], ref[i]));
        CHECK(bitwise_equal(single[r][i], ref[i]));
      }
    CHECK(store->getNumKeys() == 0);
  }
}

TEST_CASE("StoreComm: broadcast, barrier, max and scalar helpers") {
  const int world = 3;
  auto store = hash_store();
  std::vector<std::vector<at::Tensor>> got(world);
  std::vector<at::Tensor> maxed(world);
  std::vector<double> sums(world), maxes(world);
  std::atomic<int> before{0};
  std::vector<int> seen_before(world);
  run_ranks(world, [&](int r) {
    evax::StoreComm comm(store, r, world, 5);
    got[r] = inputs(r);
    got[r].push_back(at::full({4}, r == 1, at::kBool));  // any dtype broadcasts
    comm.broadcast(got[r], 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(50 * r));
    ++before;
    comm.barrier();
    seen_before[r] = before.load();
    sums[r] = comm.all_reduce_sum(r + 0.25);
    maxes[r] = comm.all_reduce_max(r == 1 ? 7.5 : -1.0 * r);
    std::vector<at::Tensor> m{at::tensor({1.0f * r, 5.0f - r, -3.0f})};
    comm.all_reduce(m, evax::ReduceOp::kMax);
    maxed[r] = m[0];
  });
  auto ref = inputs(1);
  for (int r = 0; r < world; ++r) {
    INFO("rank " << r);
    for (size_t i = 0; i < ref.size(); ++i) CHECK(bitwise_equal(got[r][i], ref[i]));
    CHECK(got[r].back().all().item<bool>());
    CHECK(seen_before[r] == world);  // nobody left the barrier before everyone entered
    CHECK(sums[r] == 3.75);
    CHECK(maxes[r] == 7.5);
    CHECK(at::equal(maxed[r], at::tensor({2.0f, 5.0f, -3.0f})));
  }
  CHECK(store->getNumKeys() == 0);
}

TEST_CASE("StoreComm: many consecutive collectives leave no keys behind") {
  const int world = 3, steps = 150;
  auto store = hash_store();
  std::vector<double> last(world);
  run_ranks(world, [&](int r) {
    evax::StoreComm comm(store, r, world, 5);
    for (int s = 0; s < steps; ++s) {
      std::vector<at::Tensor> t{at::full({s % 5}, 1.0 * r)};
      comm.all_reduce_sum(t);
      if (s % 10 == 0) comm.barrier();
      if (s % 7 == 0) comm.broadcast(t, s % world);
    }
    last[r] = comm.all_reduce_sum(1.0);
  });
  for (int r = 0; r < world; ++r) CHECK(last[r] == 3.0);
  CHECK(store->getNumKeys() == 0);
}

TEST_CASE("StoreComm: all_gather stacks every rank's tensor in rank order, any dtype") {
  for (int world : {2, 3}) {
    INFO("world " << world);
    auto store = hash_store();
    std::vector<std::vector<at::Tensor>> got(world), lists(world);
    run_ranks(world, [&](int r) {
      evax::StoreComm comm(store, r, world, 5);
      for (const auto& t : inputs(r)) got[r].push_back(comm.all_gather(t));
      got[r].push_back(comm.all_gather(at::full({3}, r % 2 == 1, at::kBool)));
      got[r].push_back(comm.all_gather(at::scalar_tensor(r, at::kInt)));  // 0-d: [world]
      lists[r] = comm.all_gather_list(at::full({2, 2}, static_cast<uint8_t>(r), at::kByte));
    });
    for (int r = 0; r < world; ++r) {
      INFO("rank " << r);
      for (int s = 0; s < world; ++s) {
        const auto in = inputs(s);
        for (size_t i = 0; i < in.size(); ++i) {
          INFO("from rank " << s << " tensor " << i);
          REQUIRE(got[r][i].size(0) == world);
          CHECK(bitwise_equal(got[r][i][s], in[i]));
        }
        CHECK(at::equal(got[r][in.size()][s], at::full({3}, s % 2 == 1, at::kBool)));
        CHECK(got[r][in.size() + 1][s].item<int>() == s);
        REQUIRE(lists[r].size() == static_cast<size_t>(world));
        CHECK(at::equal(lists[r][s], at::full({2, 2}, static_cast<uint8_t>(s), at::kByte)));
      }
    }
    CHECK(store->getNumKeys() == 0);
  }
  evax::SingleComm one;
  at::Tensor t = at::arange(6, at::kLong).view({2, 3});
  at::Tensor g = one.all_gather(t);
  CHECK(g.sizes() == at::IntArrayRef({1, 2, 3}));
  CHECK(at::equal(g[0], t));
}

TEST_CASE("StoreComm over a TCPStore on 127.0.0.1") {
  const int world = 2;
  c10d::TCPStoreOptions so;
  so.port = 0;  // ephemeral
  so.isServer = true;
  so.waitWorkers = false;
  auto server = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", so);
  const int64_t keys_before = server->getNumKeys();
  // Plus 12 MB: chunks of 6 MB travel in several segments (the server takes at most 8 MiB).
  auto with_big = [](int r) {
    auto ts = inputs(r);
    ts.push_back(at::randn({3 << 20}, at::detail::createCPUGenerator(7 + r)));
    return ts;
  };
  std::vector<at::Tensor> ref = clones(with_big(0));
  for (size_t i = 0; i < ref.size(); ++i) ref[i].add_(with_big(1)[i]);
  std::vector<std::vector<at::Tensor>> got(world), bcast(world);
  run_ranks(world, [&](int r) {
    c10d::TCPStoreOptions co;
    co.port = server->getPort();
    co.waitWorkers = false;
    auto client = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", co);
    evax::StoreComm comm(client, r, world, 10);
    got[r] = with_big(r);
    comm.all_reduce_sum(got[r]);
    comm.barrier();
    bcast[r] = with_big(r);
    comm.broadcast(bcast[r], 1);
  });
  const auto in1 = with_big(1);
  for (int r = 0; r < world; ++r)
    for (size_t i = 0; i < ref.size(); ++i) {
      CHECK(bitwise_equal(got[r][i], ref[i]));
      CHECK(bitwise_equal(bcast[r][i], in1[i]));
    }
  CHECK(server->getNumKeys() == keys_before);
}

TEST_CASE("StoreComm: a rank that never joins makes the others fail within the timeout") {
  auto store = hash_store();
  std::string error;
  double seconds = 0;
  run_ranks(2, [&](int r) {
    if (r == 1) return;  // rank 1 "dies" before the collective
    evax::StoreComm comm(store, r, 2, 2.0);
    std::vector<at::Tensor> t{at::ones({100})};
    auto t0 = std::chrono::steady_clock::now();
    try {
      comm.all_reduce_sum(t);
    } catch (const evax::DistError& e) {
      error = e.what();
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  });
  CHECK_THAT(error, Contains("rank 0 timed out waiting for rank 1 after 2 s") &&
                        Contains("did a rank die?"));
  CHECK(seconds >= 1.9);
  CHECK(seconds < 4);
}

TEST_CASE("StoreComm: mismatched shapes and unsupported dtypes are errors") {
  auto store = hash_store();
  std::vector<std::string> errors(2);
  run_ranks(2, [&](int r) {
    evax::StoreComm comm(store, r, 2, 2.0);
    std::vector<at::Tensor> t{at::ones({r == 0 ? 10 : 12})};
    try {
      comm.all_reduce_sum(t);
    } catch (const evax::DistError& e) {
      errors[r] = e.what();
    }
  });
  CHECK_THAT(errors[0] + errors[1], Contains("different shapes"));

  // Rejected before anything is sent: the ranks stay in step.
  std::vector<std::string> dtype_errors(2), root_errors(2);
  auto store2 = hash_store();
  run_ranks(2, [&](int r) {
    evax::StoreComm comm(store2, r, 2, 2.0);
    std::vector<at::Tensor> b{at::ones({3}, at::kBool)};
    try {
      comm.all_reduce_sum(b);
    } catch (const evax::DistError& e) {
      dtype_errors[r] = e.what();
    }
    try {
      comm.broadcast(b, 2);
    } catch (const evax::DistError& e) {
      root_errors[r] = e.what();
    }
  });
  for (int r = 0; r < 2; ++r) {
    CHECK_THAT(dtype_errors[r], Contains("unsupported dtype"));
    CHECK_THAT(root_errors[r], Contains("root 2"));
  }
  CHECK(store2->getNumKeys() == 0);
}

TEST_CASE("comm_create: single process, bad options, and a store backend over TCP") {
  evax::DistEnv single;
  auto c = evax::comm_create(single);
  CHECK(c->backend_name() == "single");
  CHECK(c->world_size() == 1);
  CHECK(c->all_reduce_sum(2.5) == 2.5);
  std::vector<at::Tensor> t{at::ones({2})};
  c->all_reduce_sum(t);
  c->broadcast(t, 0);
  c->barrier();
  CHECK(at::equal(t[0], at::ones({2})));

  evax::CommOptions bad;
  bad.backend = "mpi";
  CHECK_THROWS_AS(evax::comm_create(single, bad), evax::ConfigError);
  bad.backend = "store";
  bad.timeout_s = 0;
  CHECK_THROWS_AS(evax::comm_create(single, bad), evax::ConfigError);

  const int world = 2, port = evax::test::free_port();
  std::vector<std::string> names(world);
  std::vector<double> sums(world);
  run_ranks(world, [&](int r) {
    evax::CommOptions o;
    o.backend = "store";
    o.timeout_s = 10;
    auto comm = evax::comm_create(evax::test::local_env(r, world, port), o);
    names[r] = comm->backend_name();
    sums[r] = comm->all_reduce_sum(10.0 * (r + 1));
  });
  CHECK((names == std::vector<std::string>{"store", "store"}));
  CHECK((sums == std::vector<double>{30.0, 30.0}));
}

TEST_CASE("auto backend: nccl only when every rank has its own GPU, a shared GPU is refused") {
  using V = std::vector<std::string>;
  // --gpus-per-task=1: every rank sees device 0, but the PCI addresses differ.
  CHECK(evax::auto_backend(V{"n1/0000:19:00.0", "n1/0000:3b:00.0", "n2/0000:19:00.0"}, true) ==
        "nccl");
  CHECK(evax::auto_backend(V{"n1/0000:19:00.0", "n1/0000:19:00.0"}, true) == "gloo");
  CHECK(evax::auto_backend(V{"n1/0000:19:00.0", ""}, true) == "gloo");
  CHECK(evax::auto_backend(V{"", ""}, false) == "store");
  CHECK(evax::auto_backend(V{"n1/0000:19:00.0", "n1/0000:19:00.0"}, false) == "store");
  CHECK_NOTHROW(evax::check_nccl_devices(V{"a/1", "a/2", "b/1"}));
  CHECK_THROWS_WITH(evax::check_nccl_devices(V{"a/1", "a/2", "a/1"}),
                    Catch::Contains("ranks 0 and 2 would both drive GPU a/1"));
  CHECK_THROWS_WITH(evax::check_nccl_devices(V{"a/1", ""}),
                    Catch::Contains("rank 1 has no CUDA device"));
  // A CPU-only process has no identity, so "auto" over TCP agrees on gloo (or store).
  if (!torch::cuda::is_available()) {
    CHECK(evax::nccl_device_identity(evax::DistEnv{}).empty());
    const int world = 2, port = evax::test::free_port();
    std::vector<std::string> names(world);
    run_ranks(world, [&](int r) {
      evax::CommOptions o;
      o.timeout_s = 10;
      names[r] = evax::comm_create(evax::test::local_env(r, world, port), o)->backend_name();
    });
    const std::string want = evax::gloo_comm_available() ? "gloo" : "store";
    CHECK((names == std::vector<std::string>{want, want}));
  }
}

TEST_CASE("StoreComm throughput: 2 ranks, 25 MB float32 over TCPStore", "[.][bench]") {
  const int world = 2, iters = 10;
  const int64_t n = 25 * 1024 * 1024 / 4;
  c10d::TCPStoreOptions so;
  so.port = 0;
  so.isServer = true;
  so.waitWorkers = false;
  auto server = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", so);
  std::vector<double> secs(world);
  run_ranks(world, [&](int r) {
    c10d::TCPStoreOptions co;
    co.port = server->getPort();
    co.waitWorkers = false;
    auto client = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", co);
    evax::StoreComm comm(client, r, world, 60);
    std::vector<at::Tensor> t{at::randn({n})};
    comm.all_reduce_sum(t);  // warm-up
    comm.barrier();
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) comm.all_reduce_sum(t);
    secs[r] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  });
  const double s = std::max(secs[0], secs[1]) / iters;
  std::cout << "StoreComm all_reduce 25 MB, 2 ranks: " << s * 1000 << " ms, " << 25.0 / s
            << " MB/s (buffer size / time)\n";
}
