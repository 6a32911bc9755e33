// EVA-X's CheXpert "fake epochs" in the sampler: numpy's RandomState(seed).permutation of the rows
// (checked against the pinned venv's numpy) and the chunked epochs (chunks / chunks_used).
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "evax/core/error.h"
#include "evax/data/loader.h"
#include "skip.h"
#include "test_config.h"

using Catch::Matchers::Contains;
using evax::LoaderOptions;
using evax::Sampler;

namespace {

// np.random.RandomState(seed).permutation(n), computed by EVAX_PYTHON's numpy.
std::vector<int64_t> numpy_reference(uint32_t seed, int64_t n) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(EVAX_BINARY_DIR) / "fixtures" / "data";
  fs::create_directories(dir);
  const fs::path out =
      dir / ("numpy_permutation_" + std::to_string(seed) + "_" + std::to_string(n) + ".txt");
  const std::string cmd = std::string("\"") + EVAX_PYTHON +
                          "\" -c \"import sys, numpy as np; "
                          "r = np.random.RandomState(int(sys.argv[2])); "
                          "p = r.permutation(int(sys.argv[3])); "
                          "open(sys.argv[1], 'w').write(' '.join(map(str, p.tolist())))\" \"" +
                          out.string() + "\" " + std::to_string(seed) + " " + std::to_string(n);
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("failed: " + cmd);
  std::ifstream in(out);
  std::vector<int64_t> p;
  for (int64_t v; in >> v;) p.push_back(v);
  fs::remove(out);
  return p;
}

LoaderOptions chexpert_options() {
  LoaderOptions o;
  o.seed = 7;
  o.batch_size = 16;
  o.row_permutation_seed = 123;
  o.chunks = 20;
  o.chunks_used = 10;
  return o;
}

}  // namespace

TEST_CASE("loader chunks: numpy_permutation equals numpy's RandomState(seed).permutation(n)",
          "[loader][sampler][reference]") {
  if (std::string(EVAX_PYTHON).empty())
    EVAX_SKIP("no EVAX_PYTHON configured (the pinned venv's numpy is the reference)");
  for (uint32_t seed : {0u, 1u, 123u, 4294967295u}) {
    for (int64_t n : {1, 2, 10, 1000, 191027}) {
      INFO("seed " << seed << ", n " << n);
      const std::vector<int64_t> ref = numpy_reference(seed, n);
      REQUIRE(static_cast<int64_t>(ref.size()) == n);
      CHECK(evax::numpy_permutation(seed, n) == ref);
    }
  }
}

TEST_CASE("loader chunks: numpy_permutation pinned values", "[loader][sampler]") {
  // Printed by numpy 2.4.6: RandomState(123).permutation(10) and (191027)'s ends; also the order
  // of np.random.seed(123); np.random.shuffle(list(range(n))) (EVA-X's CheXpert shuffle).
  CHECK(evax::numpy_permutation(123, 10) == std::vector<int64_t>{4, 0, 7, 5, 8, 3, 1, 6, 9, 2});
  const auto p = evax::numpy_permutation(123, 191027);
  CHECK(std::vector<int64_t>(p.begin(), p.begin() + 5) ==
        std::vector<int64_t>{91850, 35881, 101714, 48159, 154097});
  CHECK(std::vector<int64_t>(p.end() - 3, p.end()) == std::vector<int64_t>{17730, 28030, 15725});
  CHECK(evax::numpy_permutation(5, 0).empty());
  CHECK(evax::numpy_permutation(5, 1) == std::vector<int64_t>{0});
}

TEST_CASE("loader chunks: row_permutation_seed alone reorders the rows", "[loader][sampler]") {
  LoaderOptions o;
  o.row_permutation_seed = 123;
  o.shuffle = false;
  const Sampler s(10, o);
  CHECK(s.row_permutation() == evax::numpy_permutation(123, 10));
  CHECK(s.epoch_length() == 10);
  std::vector<int64_t> read;
  for (int64_t v : s.rank_indices(0)) read.push_back(s.dataset_index(v));
  CHECK(read == evax::numpy_permutation(123, 10));  // sampler position p reads perm[p]
  o.shuffle = true;
  const Sampler shuffled(1000, o);
  std::set<int64_t> seen;
  for (int64_t v : shuffled.rank_indices(3)) seen.insert(shuffled.dataset_index(v));
  CHECK(seen.size() == 1000);  // still every row once per epoch
  // Off by default: no permutation, dataset order.
  CHECK(Sampler(10, LoaderOptions()).row_permutation().empty());
  CHECK(Sampler(10, LoaderOptions()).dataset_index(3) == 3);
}

TEST_CASE("loader chunks: fake epochs read the first chunks_used chunks of the permuted rows",
          "[loader][sampler]") {
  const LoaderOptions o = chexpert_options();
  const Sampler s(1000, o);
  const int64_t len = 50;  // floor(1000 / 20)
  REQUIRE(s.epoch_length() == len);
  CHECK(s.samples_per_rank() == len);
  CHECK(s.batches_per_epoch() == 4);  // 50 = 3 · 16 + 2, last batch kept
  const std::vector<int64_t> perm = evax::numpy_permutation(123, 1000);
  std::set<int64_t> read_positions;
  std::map<int64_t, int> chunk_count;
  std::vector<std::vector<int64_t>> epochs;
  for (int64_t e = 0; e < 200; ++e) {
    const std::vector<int64_t> ix = s.rank_indices(e);
    REQUIRE(static_cast<int64_t>(ix.size()) == len);
    std::set<int64_t> offsets;
    for (int64_t v : ix) {
      CHECK(v >= 0);
      CHECK(v < 10 * len);  // p < 500: only the first 10 of 20 chunks
      offsets.insert(v % len);
      ++chunk_count[v / len];
      CHECK(s.dataset_index(v) == perm[static_cast<size_t>(v)]);
      read_positions.insert(v);
    }
    CHECK(offsets.size() == static_cast<size_t>(len));  // each offset i once: a permutation
    epochs.push_back(ix);
  }
  CHECK(read_positions.size() == 500);  // every p < 500 read at some point
  CHECK(chunk_count.size() == 10);
  for (const auto& [k, c] : chunk_count) CHECK((c > 700 && c < 1300));  // 10000 draws / 10
  // Deterministic: a fresh sampler with the same options gives the same indices...
  const Sampler again(1000, o);
  for (int64_t e : {0, 1, 57}) CHECK(again.rank_indices(e) == epochs[static_cast<size_t>(e)]);
  // ...the epochs differ in order and in the chunks drawn (per offset)...
  CHECK(epochs[0] != epochs[1]);
  auto chunks_by_offset = [&](const std::vector<int64_t>& ix) {
    std::vector<int64_t> k(static_cast<size_t>(len));
    for (int64_t v : ix) k[static_cast<size_t>(v % len)] = v / len;
    return k;
  };
  CHECK(chunks_by_offset(epochs[0]) != chunks_by_offset(epochs[1]));
  // ...and the loader seed changes them.
  LoaderOptions other = o;
  other.seed = 8;
  CHECK(Sampler(1000, other).rank_indices(0) != epochs[0]);
  // shuffle: false keeps the positions in order; the chunk draw stays.
  LoaderOptions ordered = o;
  ordered.shuffle = false;
  const std::vector<int64_t> ix = Sampler(1000, ordered).rank_indices(4);
  for (int64_t i = 0; i < len; ++i) CHECK(ix[static_cast<size_t>(i)] % len == i);
  CHECK(chunks_by_offset(ix) == chunks_by_offset(epochs[4]));  // same (seed, epoch, i) draws
  // CheXpert-v1.0-small: 191,027 frontal rows -> 9551 samples per fake epoch.
  CHECK(Sampler(191027, o).epoch_length() == 9551);
}

TEST_CASE("loader chunks: ranks shard the epoch's positions with DistributedSampler padding",
          "[loader][sampler]") {
  LoaderOptions o = chexpert_options();
  o.chunks = 21;  // L = floor(1000 / 21) = 47: odd, so 2 ranks pad (or truncate)
  const int64_t len = 47;
  const std::vector<int64_t> single = Sampler(1000, o).rank_indices(2);
  REQUIRE(static_cast<int64_t>(single.size()) == len);
  for (bool drop_last : {false, true}) {
    INFO("drop_last " << drop_last);
    o.drop_last = drop_last;
    o.world_size = 2;
    o.rank = 0;
    const std::vector<int64_t> r0 = Sampler(1000, o).rank_indices(2);
    o.rank = 1;
    const std::vector<int64_t> r1 = Sampler(1000, o).rank_indices(2);
    const size_t per_rank = drop_last ? 23 : 24;
    REQUIRE(r0.size() == per_rank);
    REQUIRE(r1.size() == per_rank);
    // Interleaved, the ranks give the single-rank epoch, padded with its first position
    // (same chunk: the draw depends on the position) or truncated.
    std::vector<int64_t> joined;
    for (size_t i = 0; i < per_rank; ++i) joined.push_back(r0[i]), joined.push_back(r1[i]);
    std::vector<int64_t> want(single.begin(), single.begin() + (drop_last ? 46 : 47));
    if (!drop_last) want.push_back(single[0]);
    CHECK(joined == want);
    std::multiset<int64_t> offsets;
    for (int64_t v : joined) offsets.insert(v % len);
    if (drop_last) {
      CHECK(offsets.size() == 46);
      CHECK(std::set<int64_t>(offsets.begin(), offsets.end()).size() == 46);
    } else {
      CHECK(std::set<int64_t>(offsets.begin(), offsets.end()).size() == 47);
      CHECK(offsets.count(single[0] % len) == 2);
    }
  }
}

TEST_CASE("loader chunks: the loader yields the sampled rows, drop_last_batch and resume",
          "[loader]") {
  LoaderOptions o = chexpert_options();
  o.drop_last_batch = true;
  o.workers = 2;
  auto sample = [](int64_t, evax::Rng& rng) {
    evax::Sample s;
    s.image = torch::full({1, 1, 1}, static_cast<float>(rng.uniform()));
    s.labels = torch::zeros({1});
    return s;
  };
  evax::Loader loader(1000, sample, o);
  REQUIRE(loader.batches_per_epoch() == 3);  // floor(50 / 16)
  const Sampler& s = loader.sampler();
  for (int64_t e : {0, 5}) {
    const std::vector<int64_t> v = s.rank_indices(e);
    loader.start_epoch(e);
    std::vector<int64_t> got;
    std::vector<evax::Batch> batches;
    while (auto b = loader.next()) {
      CHECK(b->size() == 16);
      for (int64_t i = 0; i < b->size(); ++i) got.push_back(b->indices[i].item<int64_t>());
      batches.push_back(std::move(*b));
    }
    REQUIRE(got.size() == 48);
    for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == s.dataset_index(v[i]));
    // Exact resume at batch 2.
    loader.start_epoch(e, 2);
    auto b = loader.next();
    REQUIRE(b.has_value());
    CHECK(torch::equal(b->indices, batches[2].indices));
    CHECK(torch::equal(b->image, batches[2].image));
    CHECK_FALSE(loader.next().has_value());
  }
}

TEST_CASE("loader chunks: bad combinations are ConfigErrors naming the keys", "[loader]") {
  auto sampler_error = [](const LoaderOptions& o, int64_t n = 1000) {
    try {
      Sampler s(n, o);
    } catch (const evax::ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  LoaderOptions o = chexpert_options();
  o.chunks_used = 21;
  CHECK_THAT(sampler_error(o), Contains("chunks_used"));
  o.chunks_used = 0;
  CHECK_THAT(sampler_error(o), Contains("chunks_used"));
  o = chexpert_options();
  o.data_pct = 0.5;
  CHECK_THAT(sampler_error(o), Contains("chunks") && Contains("data_pct"));
  o = chexpert_options();
  o.epoch_length = 9551;
  CHECK_THAT(sampler_error(o), Contains("chunks") && Contains("epoch_length"));
  o = chexpert_options();
  CHECK_THAT(sampler_error(o, 19), Contains("chunks"));  // L = 0
  CHECK(sampler_error(o, 20) == "no error");               // L = 1
  o = chexpert_options();
  o.row_permutation_seed = -2;
  CHECK_THAT(sampler_error(o), Contains("row_permutation_seed"));

  auto cfg = evax::Config::parse(
      "ok:\n  row_permutation_seed: 123\n  chunks: 20\n  chunks_used: 10\n"
      "used_over:\n  chunks: 20\n  chunks_used: 21\n"
      "used_without:\n  chunks_used: 3\n"
      "pct:\n  chunks: 20\n  chunks_used: 10\n  data_pct: 0.5\n"
      "len:\n  chunks: 20\n  chunks_used: 10\n  epoch_length: 9551\n"
      "seed:\n  row_permutation_seed: 4294967296\n",
      "test");
  const LoaderOptions ok = evax::loader_options_from_config(cfg.view("ok"));
  CHECK(ok.row_permutation_seed == 123);
  CHECK(ok.chunks == 20);
  CHECK(ok.chunks_used == 10);
  const LoaderOptions def = evax::loader_options_from_config(cfg.view("absent"));
  CHECK(def.row_permutation_seed == -1);
  CHECK(def.chunks == 0);
  CHECK(def.chunks_used == 0);
  auto config_error = [&](const char* view) {
    try {
      evax::loader_options_from_config(cfg.view(view));
    } catch (const evax::ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(config_error("used_over"), Contains("used_over.chunks_used"));
  CHECK_THAT(config_error("used_without"), Contains("used_without.chunks_used"));
  CHECK_THAT(config_error("pct"), Contains("pct.chunks") && Contains("data_pct"));
  CHECK_THAT(config_error("len"), Contains("len.chunks") && Contains("epoch_length"));
  CHECK_THAT(config_error("seed"), Contains("seed.row_permutation_seed"));
}
