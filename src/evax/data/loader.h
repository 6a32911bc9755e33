// A deterministic, multi-threaded batch loader. What a batch holds depends only on the options and
// (seed, epoch, batch number), never on the worker count or the scheduling:
//   - the sampler follows torch's DistributedSampler: one permutation of the dataset per epoch,
//     seeded by (seed, epoch) and identical on every rank, padded by wrapping to a multiple of
//     world_size (or truncated with drop_last), rank r taking positions r, r + W, r + 2W, ...;
//   - optionally EVA-X's CheXpert "fake epochs": rows reordered once by numpy's
//     RandomState(row_permutation_seed).permutation(N), each epoch floor(N / chunks) positions,
//     each reading one of the first chunks_used chunks;
//   - every sample gets its own Rng(seed, {epoch, index}) for augmentation;
//   - workers build whole batches and a bounded queue hands them out in batch order; torch ops
//     run single-threaded inside the workers (the workers already fill the cores).
// The sample function is called concurrently from the worker threads.
//
// Example:
//   LoaderOptions o; o.batch_size = 64; o.workers = 4; o.seed = 1; o.drop_last_batch = true;
//   Loader loader(rows.size(), [&](int64_t i, Rng& rng) { return make_sample(rows[i], rng); }, o);
//   for (int64_t epoch = 0; epoch < epochs; ++epoch) {
//     loader.start_epoch(epoch);
//     while (auto batch = loader.next()) train_step(*batch);
//   }
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <c10/core/Event.h>

#include "evax/core/config.h"
#include "evax/core/rng.h"
#include "evax/data/sample.h"

namespace evax {

/// What happens when a sample cannot be loaded (its function throws DataError).
enum class BadFilePolicy {
  kError,  ///< rethrow the DataError (naming the file and the reason): the run stops
  kSkip,   ///< load the next valid index instead, deterministically; counted and reported
};

/// Loader settings.
struct LoaderOptions {
  int64_t batch_size = 32;  ///< samples per batch (per rank)
  int workers = 2;          ///< loading threads; 0 loads in the thread that calls next()
  int prefetch = 4;         ///< batches in flight (built or being built, not yet consumed), >= 1
  uint64_t seed = 0;        ///< seeds the permutations, the data_pct subset and every sample Rng
  int rank = 0;             ///< this process's rank in [0, world_size)
  int world_size = 1;       ///< number of ranks sharing the epoch
  bool shuffle = true;      ///< permute each epoch (false: dataset order)
  /// DistributedSampler's drop_last: truncate the epoch to a multiple of world_size instead of
  /// padding it with its first indices.
  bool drop_last = false;
  /// DataLoader's drop_last: drop the final incomplete batch (EVA-X training: true).
  bool drop_last_batch = false;
  /// EVA-X data_pct: keep a seeded random subset of int(N · pct) samples, and make the epoch
  /// int(subset / pct) long by cycling through the subset, so iterations per epoch stay as at 100%.
  double data_pct = 1.0;
  /// Samples per epoch (before the world_size split); 0 = the (virtual) dataset length. Otherwise
  /// epochs are consecutive slices of an endless stream of per-cycle permutations (CheXpert-style
  /// "fake epochs").
  int64_t epoch_length = 0;
  /// >= 0: the rows are first reordered as numpy's RandomState(seed).permutation(N) (EVA-X's
  /// CheXpert shuffle, seed 123): sampler position p reads dataset index perm[p]; -1 = off.
  int64_t row_permutation_seed = -1;
  /// > 0: EVA-X's CheXpert fake epochs: an epoch is L = floor(N / chunks) positions (permuted
  /// when shuffle), position i reading k·L + i with k uniform in [0, chunks_used), drawn from
  /// (seed, epoch, i); 0 = off. Excludes data_pct < 1 and epoch_length > 0.
  int64_t chunks = 0;
  /// Chunks the draw picks from, the first ones: in [1, chunks] when chunks > 0, else 0.
  int64_t chunks_used = 0;
  BadFilePolicy bad_files = BadFilePolicy::kError;  ///< see BadFilePolicy
  /// Where next() hands out a batch's tensors (`indices` stay on the CPU). A CUDA device: each
  /// batch is copied to pinned memory and onto the device on a side stream by the thread that
  /// built it, so the copy overlaps the step computing on the previous batch; next() makes the
  /// current stream wait for the copy. Set by the training tasks, not by the config.
  c10::Device device = c10::kCPU;
};

/// Reads LoaderOptions from `cfg` (keys: batch_size, workers, prefetch, seed, shuffle, drop_last,
/// drop_last_batch, data_pct, epoch_length, row_permutation_seed, chunks, chunks_used, bad_files:
/// "error" | "skip"). rank and world_size are left at 0 / 1: they come from the distributed
/// set-up, not the config.
LoaderOptions loader_options_from_config(const ConfigView& cfg);

/// numpy's legacy `np.random.RandomState(seed).permutation(n)`, bit-exact (MT19937 seeded by
/// init_genrand, Fisher–Yates from the end with masked-rejection draws; the same order as
/// `np.random.seed(seed); np.random.shuffle(list(range(n)))`). n in [0, 2^32].
std::vector<int64_t> numpy_permutation(uint32_t seed, int64_t n);

/// A file the kSkip policy replaced.
struct SkippedFile {
  int64_t index = -1;  ///< dataset index
  std::string path;    ///< from the Loader's `describe`, or "" without one
  std::string reason;  ///< the DataError message
};

/// The index plan of the options, without loading anything (the sampler on its own).
class Sampler {
 public:
  /// `dataset_size` samples; ConfigError for inconsistent options.
  Sampler(int64_t dataset_size, const LoaderOptions& options);
  /// Length of the (virtual) dataset the permutations run over: N, or int(int(N·pct) / pct).
  int64_t virtual_size() const { return virtual_size_; }
  /// Samples of one epoch before the world_size split.
  int64_t epoch_length() const { return epoch_length_; }
  /// Samples of this rank per epoch.
  int64_t samples_per_rank() const;
  /// Batches of this rank per epoch.
  int64_t batches_per_epoch() const;
  /// This rank's virtual indices of `epoch`, in order (each in [0, virtual_size)).
  std::vector<int64_t> rank_indices(int64_t epoch) const;
  /// The dataset index a virtual index reads (the data_pct subset, cycled, then the row
  /// permutation).
  int64_t dataset_index(int64_t virtual_index) const;
  /// The data_pct subset (all indices when data_pct = 1), in draw order.
  const std::vector<int64_t>& subset() const { return subset_; }
  /// The row permutation (numpy_permutation(row_permutation_seed, N)); empty when off.
  const std::vector<int64_t>& row_permutation() const { return row_perm_; }

 private:
  std::vector<int64_t> permutation(int64_t cycle) const;
  LoaderOptions o_;
  int64_t size_ = 0, virtual_size_ = 0, epoch_length_ = 0;
  int64_t cycle_size_ = 0;  // what one permutation runs over: virtual_size_, or L with chunks
  std::vector<int64_t> subset_, row_perm_;
};

/// Multi-threaded, ordered, deterministic batch loader.
///
/// Process-wide side effect: the first Loader with workers raises glibc's mmap and trim
/// thresholds (32 MB / 512 MB) so that freed image buffers are reused instead of being returned
/// to the kernel and faulted in again for every sample.
class Loader {
 public:
  /// Builds one sample: `index` is a dataset index in [0, dataset_size), `rng` its own stream.
  using SampleFn = std::function<Sample(int64_t index, Rng& rng)>;
  /// Stacks samples into a batch (default: collate).
  using CollateFn = std::function<Batch(const std::vector<Sample>&)>;
  /// Names a dataset index in reports, e.g. its file path (optional).
  using DescribeFn = std::function<std::string(int64_t index)>;

  Loader(int64_t dataset_size, SampleFn sample, const LoaderOptions& options,
         CollateFn collate_fn = {}, DescribeFn describe = {});
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// Starts (or restarts) an epoch at batch `skip_batches` (exact resume: the remaining batches
  /// equal those of an uninterrupted epoch). Stops any batches still in flight.
  void start_epoch(int64_t epoch, int64_t skip_batches = 0);
  /// The next batch in order, or nullopt at the end of the epoch. Rethrows a worker's exception.
  std::optional<Batch> next();
  /// next() for a consumer that takes exactly batches_per_epoch() batches (a training task's
  /// micro-batches): running past the epoch's end is an internal error.
  Batch next_in_epoch();
  /// Batches per epoch on this rank.
  int64_t batches_per_epoch() const { return sampler_.batches_per_epoch(); }
  /// The sampler (index plan).
  const Sampler& sampler() const { return sampler_; }
  /// Number of distinct files replaced under BadFilePolicy::kSkip so far.
  int64_t skipped_files() const;
  /// Those files, in dataset-index order.
  std::vector<SkippedFile> skipped() const;

 private:
  struct Slot {
    std::optional<Batch> batch;
    std::exception_ptr error;
    std::shared_ptr<c10::Event> copied;  ///< recorded after the device copy (CUDA only)
  };
  Slot build(int64_t batch_number);
  /// Makes the current stream wait for the slot's copy and marks its tensors as used there.
  Batch take(Slot& slot) const;
  Sample load(int64_t virtual_index);
  void worker();
  void stop();

  LoaderOptions o_;
  Sampler sampler_;
  SampleFn sample_;
  CollateFn collate_;
  DescribeFn describe_;

  // Epoch state; guarded by mu_ while workers run.
  int64_t epoch_ = -1;
  std::vector<int64_t> indices_;  // this rank's virtual indices of the epoch
  int64_t end_ = 0, next_build_ = 0, next_yield_ = 0;
  bool stopping_ = false;
  std::map<int64_t, Slot> ready_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable work_cv_, ready_cv_;

  mutable std::mutex bad_mu_;
  std::map<int64_t, SkippedFile> bad_;  // dataset index → why
};

}  // namespace evax
