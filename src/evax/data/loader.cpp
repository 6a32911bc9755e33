#include "evax/data/loader.h"

#include <dlfcn.h>
#include <malloc.h>

#include <algorithm>
#include <array>
#include <numeric>
#include <utility>

#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include "evax/core/error.h"
#include "evax/core/log.h"

namespace evax {

namespace {

// Stream tags, far from any epoch number, so permutation and subset streams never coincide with
// the per-sample streams Rng(seed, {epoch, index}).
constexpr uint64_t kPermutationStream = 0x7065726d75746531ull;
constexpr uint64_t kSubsetStream = 0x73756273657431ull;
// Stream tag of the chunk draws Rng(seed, {kChunkStream, epoch, position}).
constexpr uint64_t kChunkStream = 0x6368756e6b73ull;

// numpy's legacy MT19937 (randomkit / numpy/random/src/mt19937): init_genrand seeding and
// genrand_int32 output, as RandomState(int) uses them.
class Mt19937 {
 public:
  explicit Mt19937(uint32_t seed) {
    key_[0] = seed;
    for (uint32_t i = 1; i < kN; ++i)
      key_[i] = 1812433253u * (key_[i - 1] ^ (key_[i - 1] >> 30)) + i;
    pos_ = kN;
  }
  uint32_t next32() {
    if (pos_ == kN) generate();
    uint32_t y = key_[pos_++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    return y ^ (y >> 18);
  }

 private:
  static constexpr uint32_t kN = 624, kM = 397;
  void generate() {
    auto twist = [](uint32_t u, uint32_t v) {
      const uint32_t y = (u & 0x80000000u) | (v & 0x7fffffffu);
      return (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
    };
    for (uint32_t i = 0; i < kN; ++i)
      key_[i] = key_[(i + kM) % kN] ^ twist(key_[i], key_[(i + 1) % kN]);
    pos_ = 0;
  }
  uint32_t key_[kN];
  uint32_t pos_;
};

// numpy's random_interval(max) for max < 2^32: a uniform integer in [0, max] by rejection of
// next32() & (smallest all-ones mask >= max).
uint32_t numpy_interval(Mt19937& mt, uint32_t max) {
  if (max == 0) return 0;
  uint32_t mask = max;
  mask |= mask >> 1;
  mask |= mask >> 2;
  mask |= mask >> 4;
  mask |= mask >> 8;
  mask |= mask >> 16;
  uint32_t v;
  while ((v = mt.next32() & mask) > max) {
  }
  return v;
}

// Makes this thread's torch ops single-threaded. Intra-op parallelism inside loader workers only
// oversubscribes the cores the workers already fill (measured on 2 cores: 4x slower, OpenMP
// threads spinning). ATen's OpenMP backend reads the calling thread's nthreads ICV, which
// omp_set_num_threads sets for this thread only; ATen initialises it lazily per thread, so that
// runs first. Looked up at run time: libgomp comes with libtorch, not on our link line.
// glibc serves allocations over 128 KB (a decoded image, its float copy) with fresh mmaps and
// returns them on free, so every image faults its pages in again: ~15% of a worker's time on
// 1024² PNGs. Keeping freed blocks of up to 32 MB in the heap for reuse removes that. Process-wide
// and set once, when the first threaded Loader starts.
void keep_large_buffers() {
  static std::once_flag once;
  std::call_once(once, [] {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
  });
}

void single_threaded_torch() {
  (void)at::get_num_threads();
  using SetNumThreads = void (*)(int);
  static const auto set_num_threads =
      reinterpret_cast<SetNumThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (set_num_threads) set_num_threads(1);
}

torch::Tensor stack_field(const std::vector<Sample>& samples, torch::Tensor Sample::*field,
                          const char* name) {
  const bool defined = (samples[0].*field).defined();
  std::vector<torch::Tensor> parts;
  parts.reserve(samples.size());
  for (const Sample& s : samples) {
    const torch::Tensor& t = s.*field;
    EVAX_ASSERT(t.defined() == defined, "collate: Sample::", name,
                " is set in some samples but not in others");
    if (!defined) continue;
    EVAX_ASSERT(parts.empty() || t.sizes() == parts[0].sizes(),
                "collate: Sample::", name, " shapes differ: ", t.sizes(), " vs ", parts[0].sizes());
    parts.push_back(t);
  }
  return defined ? torch::stack(parts) : torch::Tensor();
}

}  // namespace

std::vector<int64_t> numpy_permutation(uint32_t seed, int64_t n) {
  EVAX_CHECK(ConfigError, n >= 0 && n <= (int64_t{1} << 32), "numpy_permutation: n = ", n,
             " is not in [0, 2^32]");
  std::vector<int64_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), 0);
  Mt19937 mt(seed);
  // RandomState.shuffle: for i = n-1 .. 1, swap x[i] with x[random_interval(i)].
  for (int64_t i = n - 1; i > 0; --i)
    std::swap(p[static_cast<size_t>(i)],
              p[numpy_interval(mt, static_cast<uint32_t>(i))]);
  return p;
}

Batch collate(const std::vector<Sample>& samples) {
  EVAX_ASSERT(!samples.empty(), "collate: no samples");
  Batch b;
  b.image = stack_field(samples, &Sample::image, "image");
  b.image2 = stack_field(samples, &Sample::image2, "image2");
  b.mask = stack_field(samples, &Sample::mask, "mask");
  b.patch_mask = stack_field(samples, &Sample::patch_mask, "patch_mask");
  b.labels = stack_field(samples, &Sample::labels, "labels");
  b.label_mask = stack_field(samples, &Sample::label_mask, "label_mask");
  b.indices = torch::empty({static_cast<int64_t>(samples.size())}, torch::kInt64);
  auto idx = b.indices.accessor<int64_t, 1>();
  for (size_t i = 0; i < samples.size(); ++i) idx[static_cast<int64_t>(i)] = samples[i].index;
  return b;
}

LoaderOptions loader_options_from_config(const ConfigView& cfg) {
  LoaderOptions o;
  o.batch_size = cfg.get<int64_t>("batch_size", o.batch_size,
                                  "images per batch on each rank (EVA-X's --batch_size); an "
                                  "optimizer step sees batch_size × ranks × accum_steps");
  cfg.check("batch_size", o.batch_size > 0, "must be > 0");
  o.workers = cfg.get<int>("workers", o.workers, "loading threads; 0 loads in the training thread");
  cfg.check("workers", o.workers >= 0, "must be >= 0");
  o.prefetch = cfg.get<int>("prefetch", o.prefetch,
                            "batches built ahead of the training loop (in flight, not yet used)");
  cfg.check("prefetch", o.prefetch >= 1, "must be >= 1");
  const int64_t seed = cfg.get<int64_t>("seed", static_cast<int64_t>(o.seed),
                                        "seed of the data order, data_pct subset, augmentation and "
                                        "initial weights; absent: the top-level seed");
  cfg.check("seed", seed >= 0, "must be >= 0");
  o.seed = static_cast<uint64_t>(seed);
  o.shuffle = cfg.get<bool>("shuffle", o.shuffle,
                            "reshuffle the samples every epoch; false: dataset order");
  o.drop_last = cfg.get<bool>("drop_last", o.drop_last,
                              "truncate each epoch to a multiple of the rank count instead of "
                              "padding it (DistributedSampler's drop_last)");
  o.drop_last_batch = cfg.get<bool>(
      "drop_last_batch", o.drop_last_batch,
      "drop each epoch's final incomplete batch (DataLoader's drop_last; EVA-X training: true)");
  o.data_pct = cfg.get<double>("data_pct", o.data_pct,
                               "fraction of the samples kept, a seeded subset cycled so epochs "
                               "keep their full length (EVA-X's --data_pct)");
  cfg.check("data_pct", o.data_pct > 0 && o.data_pct <= 1, "must lie in (0, 1]");
  o.epoch_length = cfg.get<int64_t>("epoch_length", o.epoch_length,
                                    "samples per epoch over all ranks, cut from an endless stream "
                                    "of reshuffled passes (CheXpert-style fake epochs)");
  cfg.check("epoch_length", o.epoch_length >= 0, "must be >= 0 (0 = dataset length)");
  o.row_permutation_seed = cfg.get<int64_t>(
      "row_permutation_seed", o.row_permutation_seed,
      "reorder the rows once as numpy's RandomState(seed).permutation(N) before sampling "
      "(EVA-X's CheXpert shuffle: 123); -1 = dataset order");
  cfg.check("row_permutation_seed",
            o.row_permutation_seed >= -1 && o.row_permutation_seed <= 0xffffffffll,
            "must be -1 (off) or in [0, 2^32 - 1]");
  o.chunks = cfg.get<int64_t>("chunks", o.chunks,
                              "split the rows into this many chunks: an epoch is floor(N / chunks) "
                              "positions, each read from a drawn chunk (EVA-X's CheXpert fake "
                              "epochs: 20); 0 = off");
  cfg.check("chunks", o.chunks >= 0, "must be >= 0 (0 = off)");
  cfg.check("chunks", o.chunks == 0 || (o.data_pct == 1.0 && o.epoch_length == 0),
            "must be 0 unless data_pct is 1 and epoch_length is 0 (chunks set the epoch)");
  o.chunks_used = cfg.get<int64_t>("chunks_used", o.chunks_used,
                                   "chunks the per-sample draw picks from, the first ones "
                                   "(EVA-X's CheXpert: 10 of 20, the first half of the rows)");
  cfg.check("chunks_used",
            o.chunks > 0 ? o.chunks_used >= 1 && o.chunks_used <= o.chunks : o.chunks_used == 0,
            "must be in [1, chunks] when chunks > 0, else 0");
  const std::string bad = cfg.get<std::string>("bad_files", "error",
                                               "an unreadable sample: error stops the run, skip "
                                               "loads the next valid one (counted, reported)");
  cfg.check("bad_files", bad == "error" || bad == "skip", "must be \"error\" or \"skip\"");
  o.bad_files = bad == "skip" ? BadFilePolicy::kSkip : BadFilePolicy::kError;
  return o;
}

// --- Sampler -------------------------------------------------------------------------------------

Sampler::Sampler(int64_t dataset_size, const LoaderOptions& o) : o_(o), size_(dataset_size) {
  if (dataset_size <= 0) raise<DataError>("loader: the dataset is empty");
  EVAX_CHECK(ConfigError, o.batch_size > 0, "loader: batch_size must be > 0, got ", o.batch_size);
  EVAX_CHECK(ConfigError, o.world_size >= 1 && o.rank >= 0 && o.rank < o.world_size,
             "loader: rank ", o.rank, " is not in [0, world_size = ", o.world_size, ")");
  EVAX_CHECK(ConfigError, o.data_pct > 0 && o.data_pct <= 1, "loader: data_pct must lie in (0, 1],",
             " got ", o.data_pct);
  EVAX_CHECK(ConfigError, o.epoch_length >= 0, "loader: epoch_length must be >= 0");
  EVAX_CHECK(ConfigError, o.workers >= 0 && o.prefetch >= 1,
             "loader: workers must be >= 0 and prefetch >= 1");
  EVAX_CHECK(ConfigError, o.row_permutation_seed >= -1 && o.row_permutation_seed <= 0xffffffffll,
             "loader: row_permutation_seed must be -1 (off) or in [0, 2^32 - 1], got ",
             o.row_permutation_seed);
  EVAX_CHECK(ConfigError, o.chunks >= 0, "loader: chunks must be >= 0, got ", o.chunks);
  EVAX_CHECK(ConfigError,
             o.chunks > 0 ? o.chunks_used >= 1 && o.chunks_used <= o.chunks : o.chunks_used == 0,
             "loader: chunks_used must be in [1, chunks = ", o.chunks,
             "] when chunks > 0, else 0; got ", o.chunks_used);
  EVAX_CHECK(ConfigError, o.chunks == 0 || o.data_pct == 1.0,
             "loader: chunks and data_pct < 1 exclude each other (data_pct = ", o.data_pct, ")");
  EVAX_CHECK(ConfigError, o.chunks == 0 || o.epoch_length == 0,
             "loader: chunks and epoch_length > 0 exclude each other (chunks set the epoch "
             "length; epoch_length = ", o.epoch_length, ")");
  EVAX_CHECK(ConfigError, o.chunks <= dataset_size, "loader: chunks = ", o.chunks,
             " exceeds the ", dataset_size, " samples (an epoch would be empty)");
  if (o.row_permutation_seed >= 0)
    row_perm_ = numpy_permutation(static_cast<uint32_t>(o.row_permutation_seed), dataset_size);
  if (o.data_pct < 1.0) {
    // EVA-X: random.sample(range(N), int(N * pct)), dataset length int(len(subset) / pct).
    const auto k = static_cast<int64_t>(static_cast<double>(size_) * o.data_pct);
    EVAX_CHECK(ConfigError, k >= 1, "loader: data_pct ", o.data_pct, " of ", size_,
               " samples keeps none");
    std::vector<int64_t> all(static_cast<size_t>(size_));
    std::iota(all.begin(), all.end(), 0);
    Rng rng(o.seed, {kSubsetStream});
    for (int64_t i = 0; i < k; ++i)  // partial Fisher–Yates: the first k are a uniform sample
      std::swap(all[static_cast<size_t>(i)],
                all[static_cast<size_t>(rng.uniform_int(i, size_ - 1))]);
    subset_.assign(all.begin(), all.begin() + k);
    virtual_size_ = static_cast<int64_t>(static_cast<double>(k) / o.data_pct);
  } else {
    subset_.resize(static_cast<size_t>(size_));
    std::iota(subset_.begin(), subset_.end(), 0);
    virtual_size_ = size_;
  }
  epoch_length_ = o.chunks > 0 ? size_ / o.chunks
                 : o.epoch_length > 0 ? o.epoch_length
                                      : virtual_size_;
  cycle_size_ = o.chunks > 0 ? epoch_length_ : virtual_size_;
}

int64_t Sampler::samples_per_rank() const {
  const int64_t w = o_.world_size;
  return o_.drop_last ? epoch_length_ / w : (epoch_length_ + w - 1) / w;
}

int64_t Sampler::batches_per_epoch() const {
  const int64_t n = samples_per_rank(), b = o_.batch_size;
  return o_.drop_last_batch ? n / b : (n + b - 1) / b;
}

int64_t Sampler::dataset_index(int64_t v) const {
  const int64_t p = subset_[static_cast<size_t>(v % static_cast<int64_t>(subset_.size()))];
  return row_perm_.empty() ? p : row_perm_[static_cast<size_t>(p)];
}

std::vector<int64_t> Sampler::permutation(int64_t cycle) const {
  std::vector<int64_t> p(static_cast<size_t>(cycle_size_));
  std::iota(p.begin(), p.end(), 0);
  if (!o_.shuffle) return p;
  Rng rng(o_.seed, {kPermutationStream, static_cast<uint64_t>(cycle)});
  for (int64_t i = cycle_size_ - 1; i > 0; --i)  // Fisher–Yates
    std::swap(p[static_cast<size_t>(i)], p[static_cast<size_t>(rng.uniform_int(0, i))]);
  return p;
}

std::vector<int64_t> Sampler::rank_indices(int64_t epoch) const {
  EVAX_ASSERT(epoch >= 0);
  // The epoch is a slice of the endless stream perm(0) ++ perm(1) ++ ...; without epoch_length
  // the slice is exactly perm(epoch). With chunks a permutation runs over the L positions of one
  // epoch, so the slice is perm(epoch) of [0, L) too.
  const int64_t len = epoch_length_, v = cycle_size_;
  std::vector<int64_t> all;
  all.reserve(static_cast<size_t>(len + o_.world_size));
  int64_t cycle = -1;
  std::vector<int64_t> perm;
  for (int64_t pos = epoch * len; pos < (epoch + 1) * len; ++pos) {
    if (pos / v != cycle) cycle = pos / v, perm = permutation(cycle);
    all.push_back(perm[static_cast<size_t>(pos % v)]);
  }
  // DistributedSampler: pad by repeating from the start, or truncate, to a multiple of W.
  const int64_t w = o_.world_size, total = samples_per_rank() * w;
  if (total < len) all.resize(static_cast<size_t>(total));
  for (int64_t i = 0; static_cast<int64_t>(all.size()) < total; ++i)
    all.push_back(all[static_cast<size_t>(i % len)]);
  std::vector<int64_t> mine;
  mine.reserve(static_cast<size_t>(total / w));
  for (int64_t i = o_.rank; i < total; i += w) mine.push_back(all[static_cast<size_t>(i)]);
  if (o_.chunks > 0) {
    // EVA-X's CheXpert __getitem__(i) reads row randint(0, chunks_used - 1) · L + i; here the
    // draw comes from (seed, epoch, i), so a padded repeat of a position reads the same row.
    for (int64_t& i : mine) {
      Rng rng(o_.seed, {kChunkStream, static_cast<uint64_t>(epoch), static_cast<uint64_t>(i)});
      i += rng.uniform_int(0, o_.chunks_used - 1) * len;
    }
  }
  return mine;
}

// --- Loader --------------------------------------------------------------------------------------

Loader::Loader(int64_t dataset_size, SampleFn sample, const LoaderOptions& options,
               CollateFn collate_fn, DescribeFn describe)
    : o_(options),
      sampler_(dataset_size, options),
      sample_(std::move(sample)),
      collate_(collate_fn ? std::move(collate_fn) : CollateFn(collate)),
      describe_(std::move(describe)) {
  EVAX_ASSERT(static_cast<bool>(sample_), "Loader needs a sample function");
  if (o_.workers > 0) keep_large_buffers();
}

Loader::~Loader() { stop(); }

void Loader::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
  std::lock_guard<std::mutex> lk(mu_);
  stopping_ = false;
  ready_.clear();
}

void Loader::start_epoch(int64_t epoch, int64_t skip_batches) {
  stop();
  const int64_t batches = batches_per_epoch();
  EVAX_CHECK(ConfigError, epoch >= 0, "loader: epoch must be >= 0, got ", epoch);
  EVAX_CHECK(ConfigError, skip_batches >= 0 && skip_batches <= batches, "loader: cannot skip ",
             skip_batches, " of ", batches, " batches");
  epoch_ = epoch;
  indices_ = sampler_.rank_indices(epoch);
  end_ = batches;
  next_build_ = next_yield_ = skip_batches;
  const int64_t n = std::min<int64_t>(o_.workers, end_ - skip_batches);
  for (int64_t i = 0; i < n; ++i) threads_.emplace_back([this] { worker(); });
}

void Loader::worker() {
  torch::NoGradGuard no_grad;  // grad mode is per thread; loading never needs autograd
  single_threaded_torch();
  while (true) {
    int64_t b;
    {
      std::unique_lock<std::mutex> lk(mu_);
      work_cv_.wait(lk, [&] {
        return stopping_ || next_build_ >= end_ || next_build_ < next_yield_ + o_.prefetch;
      });
      if (stopping_ || next_build_ >= end_) return;
      b = next_build_++;
    }
    Slot slot;
    try {
      slot = build(b);
    } catch (...) {
      slot.error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      ready_[b] = std::move(slot);
    }
    ready_cv_.notify_all();
  }
}

std::optional<Batch> Loader::next() {
  EVAX_ASSERT(epoch_ >= 0, "Loader::next before start_epoch");
  if (o_.workers == 0) {
    if (next_yield_ >= end_) return std::nullopt;
    torch::NoGradGuard no_grad;
    try {
      Slot slot = build(next_yield_++);
      return take(slot);
    } catch (...) {
      end_ = next_yield_;  // as with workers: the epoch ends at a failed batch
      throw;
    }
  }
  Slot slot;
  {
    std::unique_lock<std::mutex> lk(mu_);
    if (next_yield_ >= end_) return std::nullopt;
    ready_cv_.wait(lk, [&] { return ready_.count(next_yield_) > 0; });
    auto it = ready_.find(next_yield_);
    slot = std::move(it->second);
    ready_.erase(it);
    ++next_yield_;
  }
  work_cv_.notify_all();
  if (slot.error) {
    stop();
    end_ = next_yield_;  // the epoch ends here; the caller decides whether to go on
    std::rethrow_exception(slot.error);
  }
  return take(slot);
}

namespace {

// The batch tensors that go to the device (`indices` stays on the CPU).
std::array<torch::Tensor*, 6> device_fields(Batch& b) {
  return {&b.image, &b.image2, &b.mask, &b.patch_mask, &b.labels, &b.label_mask};
}

}  // namespace

Loader::Slot Loader::build(int64_t batch_number) {
  const int64_t begin = batch_number * o_.batch_size;
  const int64_t end =
      std::min<int64_t>(begin + o_.batch_size, static_cast<int64_t>(indices_.size()));
  std::vector<Sample> samples;
  samples.reserve(static_cast<size_t>(end - begin));
  for (int64_t i = begin; i < end; ++i) samples.push_back(load(indices_[static_cast<size_t>(i)]));
  Slot slot;
  slot.batch = collate_(samples);
  if (o_.device.is_cpu()) return slot;
  // Pinned host memory makes the copy truly asynchronous; a stream of the pool (not the
  // compute stream) lets it run while the step computes. The event orders the consumer after it.
  const c10::impl::VirtualGuardImpl impl(o_.device.type());
  const c10::Stream copy = impl.getStreamFromGlobalPool(o_.device);
  const c10::StreamGuard guard(copy);
  Batch& b = *slot.batch;
  for (torch::Tensor* t : device_fields(b))
    if (t->defined()) *t = t->pin_memory().to(o_.device, /*non_blocking=*/true);
  slot.copied = std::make_shared<c10::Event>(o_.device.type());
  slot.copied->record(copy);
  return slot;
}

Batch Loader::take(Slot& slot) const {
  Batch b = std::move(*slot.batch);
  if (!slot.copied) return b;
  const c10::impl::VirtualGuardImpl impl(o_.device.type());
  const c10::Stream current = impl.getStream(o_.device);
  slot.copied->block(current);
  // Allocated on the copy stream, used on the current one: the caching allocator must not hand
  // the memory out again before the current stream is done with it.
  for (torch::Tensor* t : device_fields(b))
    if (t->defined()) t->record_stream(current);
  return b;
}

Sample Loader::load(int64_t virtual_index) {
  const int64_t v_size = sampler_.virtual_size();
  const bool skip = o_.bad_files == BadFilePolicy::kSkip;
  std::string last_reason;
  // Under kSkip a bad file is replaced by the next virtual index that loads, with that index's
  // own Rng, so the replacement is the same whatever the thread timing.
  for (int64_t k = 0; k < (skip ? v_size : 1); ++k) {
    const int64_t v = (virtual_index + k) % v_size;
    const int64_t index = sampler_.dataset_index(v);
    if (skip) {
      std::lock_guard<std::mutex> lk(bad_mu_);
      if (bad_.count(index)) continue;  // known bad: the same outcome as failing again
    }
    Rng rng(o_.seed, {static_cast<uint64_t>(epoch_), static_cast<uint64_t>(v)});
    try {
      Sample s = sample_(index, rng);
      s.index = index;
      return s;
    } catch (const DataError& e) {
      if (!skip) throw;
      last_reason = e.what();
      SkippedFile f{index, describe_ ? describe_(index) : std::string(), e.what()};
      bool fresh;
      {
        std::lock_guard<std::mutex> lk(bad_mu_);
        fresh = bad_.emplace(index, f).second;
      }
      if (fresh) log_warn("skipping bad file (index ", index, "): ", e.what());
    }
  }
  raise<DataError>("loader: no sample could be loaded, every file failed; last error: ",
                   last_reason.empty() ? "(all known bad)" : last_reason);
}

int64_t Loader::skipped_files() const {
  std::lock_guard<std::mutex> lk(bad_mu_);
  return static_cast<int64_t>(bad_.size());
}

std::vector<SkippedFile> Loader::skipped() const {
  std::lock_guard<std::mutex> lk(bad_mu_);
  std::vector<SkippedFile> out;
  for (const auto& [index, f] : bad_) out.push_back(f);
  return out;
}

Batch Loader::next_in_epoch() {
  std::optional<Batch> b = next();
  EVAX_ASSERT(b.has_value(), "data stream ended before the epoch's last micro-batch");
  return std::move(*b);
}

}  // namespace evax
