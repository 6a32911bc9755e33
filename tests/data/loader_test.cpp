#include "evax/data/loader.h"

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "evax/core/error.h"
#include "evax/data/manifest.h"
#include "evax/data/synth.h"
#include "evax/data/transforms.h"
#include "evax/io/image.h"
#include "reference_util.h"
#include "skip.h"

using Catch::Matchers::Contains;
using evax::Batch;
using evax::Loader;
using evax::LoaderOptions;
using evax::Rng;
using evax::Sample;

namespace {

// A fake dataset: the image carries the index and one draw of the sample's Rng, so both the
// order and the augmentation stream are visible in the batch.
Sample fake_sample(int64_t index, Rng& rng) {
  Sample s;
  s.image = torch::full({1, 2, 2}, static_cast<float>(index));
  s.image[0][0][0] = static_cast<float>(rng.uniform());
  s.labels = torch::full({3}, static_cast<float>(index % 2));
  s.label_mask = torch::ones({3});
  return s;
}

std::vector<Batch> run_epoch(Loader& loader, int64_t epoch, int64_t skip = 0) {
  loader.start_epoch(epoch, skip);
  std::vector<Batch> out;
  while (auto b = loader.next()) out.push_back(std::move(*b));
  return out;
}

bool same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!torch::equal(a[i].image, b[i].image) || !torch::equal(a[i].indices, b[i].indices) ||
        !torch::equal(a[i].labels, b[i].labels))
      return false;
  return true;
}

std::vector<int64_t> flat_indices(const std::vector<Batch>& batches) {
  std::vector<int64_t> out;
  for (const auto& b : batches)
    for (int64_t i = 0; i < b.size(); ++i) out.push_back(b.indices[i].item<int64_t>());
  return out;
}

}  // namespace

TEST_CASE("loader: output does not depend on the worker count", "[loader]") {
  LoaderOptions o;
  o.batch_size = 7;
  o.seed = 42;
  std::vector<std::vector<Batch>> runs;
  for (int workers : {0, 1, 3}) {
    o.workers = workers;
    o.prefetch = workers == 3 ? 2 : 4;
    Loader loader(100, fake_sample, o);
    CHECK(loader.batches_per_epoch() == 15);
    runs.push_back(run_epoch(loader, 2));
  }
  REQUIRE(runs[0].size() == 15);
  CHECK(runs[0].back().size() == 2);  // 100 = 14 · 7 + 2, last batch kept
  CHECK(same_batches(runs[0], runs[1]));
  CHECK(same_batches(runs[0], runs[2]));
  const auto idx = flat_indices(runs[0]);
  CHECK(std::set<int64_t>(idx.begin(), idx.end()).size() == 100);

  const Batch& b = runs[0][0];
  CHECK(b.image.sizes() == torch::IntArrayRef({7, 1, 2, 2}));
  CHECK(b.labels.sizes() == torch::IntArrayRef({7, 3}));
  CHECK(!b.image2.defined());
  CHECK(!b.mask.defined());
}

TEST_CASE("loader: epochs differ, resume with skip_batches is exact", "[loader]") {
  LoaderOptions o;
  o.batch_size = 8;
  o.workers = 2;
  o.seed = 3;
  o.drop_last_batch = true;
  Loader loader(50, fake_sample, o);
  CHECK(loader.batches_per_epoch() == 6);
  const auto e0 = run_epoch(loader, 0), e1 = run_epoch(loader, 1);
  REQUIRE(e0.size() == 6);
  CHECK(e0.back().size() == 8);
  CHECK(flat_indices(e0) != flat_indices(e1));
  // Same index in two epochs: different augmentation draws.
  CHECK(!same_batches(e0, e1));
  // Re-running an epoch reproduces it; resuming mid-epoch gives the same remaining batches.
  CHECK(same_batches(run_epoch(loader, 1), e1));
  const auto resumed = run_epoch(loader, 1, 4);
  REQUIRE(resumed.size() == 2);
  CHECK(same_batches(resumed, std::vector<Batch>(e1.begin() + 4, e1.end())));
  CHECK(run_epoch(loader, 1, 6).empty());
  CHECK_THROWS_AS(loader.start_epoch(1, 7), evax::ConfigError);
  // A different seed permutes differently.
  o.seed = 4;
  Loader other(50, fake_sample, o);
  CHECK(flat_indices(run_epoch(other, 0)) != flat_indices(e0));
  // Stopping early and restarting is safe (workers still in flight get stopped).
  loader.start_epoch(0);
  loader.next();
  CHECK(same_batches(run_epoch(loader, 0), e0));
}

TEST_CASE("loader: DistributedSampler semantics", "[loader][sampler]") {
  // Direct reimplementation: interleaving the ranks' lists gives the global list, which must be
  // one permutation of the dataset (the same on every rank) followed by its own first elements
  // as padding, or truncated with drop_last.
  for (int64_t n : {10, 12, 7, 2}) {
    for (int world : {1, 3, 4}) {
      for (bool drop : {false, true}) {
        CAPTURE(n, world, drop);
        LoaderOptions o;
        o.world_size = world;
        o.drop_last = drop;
        o.seed = 11;
        std::vector<std::vector<int64_t>> ranks;
        for (int r = 0; r < world; ++r) {
          o.rank = r;
          ranks.push_back(evax::Sampler(n, o).rank_indices(5));
        }
        const int64_t per = drop ? n / world : (n + world - 1) / world;
        std::vector<int64_t> global;
        for (int64_t i = 0; i < per; ++i)
          for (int r = 0; r < world; ++r) {
            REQUIRE(static_cast<int64_t>(ranks[r].size()) == per);
            global.push_back(ranks[r][i]);
          }
        const int64_t head = std::min<int64_t>(n, per * world);
        std::vector<int64_t> perm(global.begin(), global.begin() + head);
        std::vector<int64_t> sorted = perm;
        std::sort(sorted.begin(), sorted.end());
        CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());  // no repeats
        if (!drop) {
          CHECK(static_cast<int64_t>(sorted.size()) == n);
          for (size_t i = head; i < global.size(); ++i) CHECK(global[i] == global[(i - head) % n]);
        }
      }
    }
  }
  // Ranks of one epoch share one permutation; epochs use different ones.
  LoaderOptions o;
  o.seed = 1;
  CHECK(evax::Sampler(100, o).rank_indices(0) != evax::Sampler(100, o).rank_indices(1));
  CHECK(evax::Sampler(100, o).rank_indices(3) == evax::Sampler(100, o).rank_indices(3));
  o.shuffle = false;
  CHECK(evax::Sampler(5, o).rank_indices(9) == std::vector<int64_t>{0, 1, 2, 3, 4});
}

TEST_CASE("loader: padding and striding match torch's DistributedSampler", "[loader][python]") {
  if (evax::test::pil_reference().empty())
    EVAX_SKIP("EVAX_PYTHON not configured: no torch reference");
  for (auto [n, world, drop] : {std::tuple<int64_t, int, bool>{10, 3, false}, {10, 3, true},
                                {7, 4, false}, {2, 4, false}, {12, 4, true}}) {
    for (int r = 0; r < world; ++r) {
      CAPTURE(n, world, drop, r);
      LoaderOptions o;
      o.shuffle = false;
      o.world_size = world;
      o.rank = r;
      o.drop_last = drop;
      const auto want = evax::test::ref("dss/n" + std::to_string(n) + "_w" +
                                        std::to_string(world) + "_d" + std::to_string(int(drop)) +
                                        "/rank" + std::to_string(r));
      const auto got = evax::Sampler(n, o).rank_indices(0);
      REQUIRE(static_cast<int64_t>(got.size()) == want.size(0));
      for (size_t i = 0; i < got.size(); ++i)
        CHECK(got[i] == want[static_cast<int64_t>(i)].item<int64_t>());
    }
  }
}

TEST_CASE("loader: data_pct keeps a seeded subset and the epoch length", "[loader][sampler]") {
  LoaderOptions o;
  o.seed = 8;
  o.data_pct = 0.1;
  const evax::Sampler s(1000, o);
  REQUIRE(s.subset().size() == 100);
  CHECK(s.virtual_size() == 1000);
  const std::set<int64_t> subset(s.subset().begin(), s.subset().end());
  CHECK(subset.size() == 100);
  for (int64_t epoch : {0, 1}) {
    std::map<int64_t, int> count;
    for (int64_t v : s.rank_indices(epoch)) ++count[s.dataset_index(v)];
    CHECK(count.size() == 100);
    for (const auto& [index, c] : count) {
      CHECK(subset.count(index) == 1);
      CHECK(c == 10);
    }
  }
  // The subset depends only on the seed (same on every rank and epoch).
  o.rank = 1;
  o.world_size = 2;
  CHECK(evax::Sampler(1000, o).subset() == s.subset());
  o.seed = 9;
  CHECK(evax::Sampler(1000, o).subset() != s.subset());
  // EVA-X's COVIDx 1 %: 301 images, virtual length int(301 / 0.01) = 30100.
  LoaderOptions c;
  c.data_pct = 0.01;
  c.batch_size = 32;
  c.drop_last_batch = true;
  const evax::Sampler cov(30130, c);
  CHECK(cov.subset().size() == 301);
  CHECK(cov.virtual_size() == 30100);
  CHECK(cov.batches_per_epoch() == 30100 / 32);
  c.data_pct = 0.0001;
  CHECK_THROWS_AS(evax::Sampler(100, c), evax::ConfigError);
}

TEST_CASE("loader: epoch_length continues the shuffled stream", "[loader][sampler]") {
  LoaderOptions o;
  o.seed = 5;
  o.epoch_length = 4;
  const evax::Sampler s(10, o);
  CHECK(s.epoch_length() == 4);
  std::vector<int64_t> stream;
  for (int64_t e = 0; e < 5; ++e) {
    const auto ix = s.rank_indices(e);
    REQUIRE(ix.size() == 4);
    stream.insert(stream.end(), ix.begin(), ix.end());
  }
  // Positions 0..9 are one full permutation (that of a normal epoch 0), 10..19 the next one.
  LoaderOptions plain = o;
  plain.epoch_length = 0;
  const evax::Sampler full(10, plain);
  CHECK(std::vector<int64_t>(stream.begin(), stream.begin() + 10) == full.rank_indices(0));
  CHECK(std::vector<int64_t>(stream.begin() + 10, stream.end()) == full.rank_indices(1));
}

TEST_CASE("loader: bad files", "[loader]") {
  const std::set<int64_t> bad = {3, 4, 9};
  std::atomic<int> calls{0};
  const auto sample = [&](int64_t index, Rng& rng) {
    ++calls;
    if (bad.count(index))
      evax::raise<evax::DataError>("cannot decode /data/img", index, ".png: truncated file");
    return fake_sample(index, rng);
  };
  LoaderOptions o;
  o.batch_size = 4;
  o.shuffle = false;
  o.workers = 2;

  SECTION("error policy stops with the path and the reason") {
    Loader loader(12, sample, o);
    loader.start_epoch(0);
    CHECK_THROWS_WITH(loader.next(), Contains("/data/img3.png: truncated file"));
    CHECK(!loader.next().has_value());  // the epoch ended there
    CHECK(loader.skipped_files() == 0);
  }
  SECTION("a failing later batch surfaces in order") {
    const auto late = [](int64_t index, Rng& rng) {
      if (index == 9) evax::raise<evax::DataError>("cannot decode /data/img9.png: bad CRC");
      return fake_sample(index, rng);
    };
    for (int workers : {0, 3}) {
      o.workers = workers;
      Loader loader(12, late, o);
      loader.start_epoch(0);
      CHECK(loader.next()->indices[0].item<int64_t>() == 0);
      CHECK(loader.next()->indices[0].item<int64_t>() == 4);
      CHECK_THROWS_WITH(loader.next(), Contains("img9.png: bad CRC"));
      CHECK(!loader.next().has_value());
    }
  }
  SECTION("skip policy replaces deterministically and reports") {
    o.bad_files = evax::BadFilePolicy::kSkip;
    const auto describe = [](int64_t i) { return "/data/img" + std::to_string(i) + ".png"; };
    std::vector<std::vector<Batch>> runs;
    for (int workers : {0, 3}) {
      o.workers = workers;
      Loader loader(12, sample, o, {}, describe);
      runs.push_back(run_epoch(loader, 0));
      CHECK(loader.skipped_files() == 3);
      const auto sk = loader.skipped();
      REQUIRE(sk.size() == 3);
      CHECK(sk[0].index == 3);
      CHECK(sk[0].path == "/data/img3.png");
      CHECK_THAT(sk[2].reason, Contains("img9.png: truncated file"));
    }
    CHECK(same_batches(runs[0], runs[1]));
    // Dataset order 0..11; 3 and 4 become 5, 9 becomes 10. Never a zero image.
    CHECK(flat_indices(runs[0]) == std::vector<int64_t>{0, 1, 2, 5, 5, 5, 6, 7, 8, 10, 10, 11});
    // The replacement uses its own index's Rng: identical to the sample at that position.
    CHECK(torch::equal(runs[0][0].image[3], runs[0][1].image[0]));
  }
  SECTION("skip policy gives up when nothing loads") {
    o.bad_files = evax::BadFilePolicy::kSkip;
    Loader loader(3, [](int64_t, Rng&) -> Sample { throw evax::DataError("broken"); }, o);
    loader.start_epoch(0);
    CHECK_THROWS_WITH(loader.next(), Contains("no sample could be loaded"));
  }
}

TEST_CASE("loader: collate checks its inputs", "[loader]") {
  Rng rng(1);
  Sample a = fake_sample(0, rng), b = fake_sample(1, rng);
  b.image2 = torch::zeros({1});
  CHECK_THROWS_AS(evax::collate({a, b}), evax::InternalError);
  b.image2 = torch::Tensor();
  b.image = torch::zeros({1, 3, 3});
  CHECK_THROWS_AS(evax::collate({a, b}), evax::InternalError);
  std::vector<float> values = {1.0f, std::nanf(""), 0.0f};
  evax::sample_set_labels(a, values);
  CHECK(torch::equal(a.labels, torch::tensor({1.0f, 0.0f, 0.0f})));
  CHECK(torch::equal(a.label_mask, torch::tensor({1.0f, 0.0f, 1.0f})));
}

TEST_CASE("loader: a segmentation target and a MIM patch mask travel side by side", "[loader]") {
  Rng rng(2);
  std::vector<Sample> samples;
  for (int i = 0; i < 2; ++i) {
    Sample s = fake_sample(i, rng);
    s.mask = torch::full({1, 4, 4}, i, torch::kUInt8);                // class ids
    s.patch_mask = torch::tensor({i == 0, true, false}, torch::kBool);  // patch order
    samples.push_back(s);
  }
  const evax::Batch b = evax::collate(samples);
  REQUIRE(b.mask.defined());
  REQUIRE(b.patch_mask.defined());
  CHECK(b.mask.sizes() == torch::IntArrayRef({2, 1, 4, 4}));
  CHECK(b.patch_mask.sizes() == torch::IntArrayRef({2, 3}));
  CHECK(b.mask[1].max().item<int>() == 1);
  CHECK(b.patch_mask[0][0].item<bool>());
  CHECK_FALSE(b.patch_mask[1][0].item<bool>());
  CHECK_FALSE(b.patch_mask[0][2].item<bool>());
}

TEST_CASE("loader: config decoder", "[loader]") {
  auto cfg = evax::Config::parse(
      "data:\n  batch_size: 16\n  workers: 0\n  data_pct: 0.1\n  bad_files: skip\n"
      "bad:\n  bad_files: ignore\n",
      "test");
  const auto o = evax::loader_options_from_config(cfg.view("data"));
  CHECK(o.batch_size == 16);
  CHECK(o.workers == 0);
  CHECK(o.data_pct == 0.1);
  CHECK(o.bad_files == evax::BadFilePolicy::kSkip);
  CHECK_THROWS_AS(evax::loader_options_from_config(cfg.view("bad")), evax::ConfigError);
}

namespace {

// MIM pretraining samples from a manifest: decode, two views.
Loader::SampleFn mim_sample(const evax::Manifest& m, const evax::TwoViewOptions& views) {
  return [&m, views](int64_t index, Rng& rng) {
    const auto img = evax::unit_to_tensor(evax::image_read_unit(m.rows[index].path));
    auto v = evax::two_view_crop(img, rng, views);
    Sample s;
    s.image = std::move(v.student);
    s.image2 = std::move(v.teacher);
    return s;
  };
}

}  // namespace

TEST_CASE("loader: synthetic PNGs through the MIM two-view transform", "[loader]") {
  evax::test::TempDir dir("loader-synth");
  evax::SynthOptions so;
  so.out_dir = dir.str();
  so.n = 16;
  so.size = 64;
  so.write_dicom = false;
  so.threads = 1;
  evax::synth_generate(so);
  const evax::Manifest m = evax::manifest_load(dir / "pretrain.csv");
  evax::TwoViewOptions views;
  views.student_size = 48;
  views.teacher_size = 32;
  LoaderOptions o;
  o.batch_size = 5;
  o.workers = 2;
  o.drop_last_batch = true;
  Loader loader(m.size(), mim_sample(m, views), o);
  const auto batches = run_epoch(loader, 0);
  REQUIRE(batches.size() == 3);
  CHECK(batches[0].image.sizes() == torch::IntArrayRef({5, 3, 48, 48}));
  CHECK(batches[0].image2.sizes() == torch::IntArrayRef({5, 3, 32, 32}));
  // A missing file is a DataError naming it.
  evax::Manifest broken = m;
  broken.rows[2].path = dir / "png/missing.png";
  o.shuffle = false;
  Loader bad(broken.size(), mim_sample(broken, views), o);
  bad.start_epoch(0);
  CHECK_THROWS_WITH(bad.next(), Contains("missing.png"));
}

// Throughput benchmark (hidden; run with `test_data "[.bench]"`): 256² synthetic PNGs through
// decode + MIM two views (224 + 224) with 2 workers.
TEST_CASE("loader: MIM throughput on 256^2 PNGs", "[.bench]") {
  evax::test::TempDir dir("loader-bench");
  evax::SynthOptions so;
  so.out_dir = dir.str();
  so.n = 256;
  so.size = 256;
  so.write_dicom = false;
  evax::synth_generate(so);
  const evax::Manifest m = evax::manifest_load(dir / "pretrain.csv");
  for (int workers : {1, 2}) {
    LoaderOptions o;
    o.batch_size = 32;
    o.workers = workers;
    o.drop_last_batch = true;
    Loader loader(m.size(), mim_sample(m, evax::TwoViewOptions{}), o);
    run_epoch(loader, 0);  // warm-up (file cache, allocator)
    const auto t0 = std::chrono::steady_clock::now();
    int64_t images = 0;
    for (int64_t e = 1; e <= 2; ++e)
      for (const auto& b : run_epoch(loader, e)) images += b.size();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("MIM loader, %d worker(s): %.0f images/s\n", workers, images / s);
  }
  // Where a sample's time goes (one thread).
  double t_read = 0, t_views = 0;
  Rng rng(1);
  for (int rep = 0; rep < 2; ++rep)
    for (const auto& row : m.rows) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto img = evax::unit_to_tensor(evax::image_read_unit(row.path));
      const auto t1 = std::chrono::steady_clock::now();
      evax::two_view_crop(img, rng, evax::TwoViewOptions{});
      const auto t2 = std::chrono::steady_clock::now();
      t_read += std::chrono::duration<double>(t1 - t0).count();
      t_views += std::chrono::duration<double>(t2 - t1).count();
    }
  const double n = 2.0 * static_cast<double>(m.rows.size());
  std::printf("per image: decode %.2f ms, two views %.2f ms\n", 1e3 * t_read / n,
              1e3 * t_views / n);
}
