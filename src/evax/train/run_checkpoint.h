// Run checkpoints: evax's own training checkpoints (foreign weight files are
// evax/io/weight_file.h), one directory per optimizer step, written atomically (a temporary
// directory, every file fsynced, then renamed), the last K kept:
//   <root>/step-00001234/model.safetensors    model weights (the task's naming)
//                       trainer.safetensors  optimizer state, RNG states
//                       meta.json            step, epoch, data position, resolved config,
//                                            per-file sizes and FNV-1a checksums
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "evax/io/tensor_map.h"

namespace evax {

/// What a run checkpoint holds.
struct RunCheckpoint {
  TensorMap model;
  TensorMap trainer;
  nlohmann::json meta;
  std::string dir;  ///< where it was read from
};

/// The directory run_checkpoint_save() writes for `step` under `root` (`<root>/step-%08d`), so
/// ranks that do not write know it too.
std::string run_checkpoint_dir(const std::string& root, int64_t step);

/// Writes `<root>/step-<step>` atomically and removes all but the newest `keep_last` (>= 1).
/// Returns the directory.
std::string run_checkpoint_save(const std::string& root, int64_t step, const TensorMap& model,
                                const TensorMap& trainer, nlohmann::json meta, int keep_last);

/// Writes a checkpoint in the same layout to the named directory `dir` (e.g. `<root>/best`),
/// atomically: an existing `dir` is replaced only once the new one is complete. `meta` is stored
/// as given (plus the file checksums).
void run_checkpoint_save_at(const std::string& dir, const TensorMap& model,
                            const TensorMap& trainer, nlohmann::json meta);

/// The newest checkpoint under `root` whose files are complete and match their checksums
/// (damaged or half-written ones are skipped with a warning).
std::optional<std::string> run_checkpoint_find_latest(const std::string& root);

/// Reads a run checkpoint directory (DataError when incomplete or corrupt).
RunCheckpoint run_checkpoint_load(const std::string& dir);

/// Resolves a weights argument (an `init`, `--checkpoint` or teacher path) to a weight file: a
/// file as is; a directory with a model.safetensors (a checkpoint directory); a run directory's
/// checkpoints/best, else its newest valid checkpoint. DataError otherwise.
std::string run_weights_path(const std::string& path);

/// The "task" object of the meta.json beside a weight file (what Task::checkpoint_meta() wrote).
/// DataError naming `command` when there is no meta.json or it is not valid JSON; an empty object
/// when it has no "task".
nlohmann::json checkpoint_task_meta(const std::string& weights, const std::string& command);

/// FNV-1a 64-bit hash of a file's bytes, as hex.
std::string file_fnv1a64(const std::string& path);

}  // namespace evax
