// Weight files: single-file checkpoints of any supported format (released EVA-X/EVA-02, timm and
// MGCA/Lightning files, `evax convert` output): torch.save zip files (.pt/.pth/.ckpt, torch >= 1.6)
// and safetensors. Detects the format by magic bytes, lists the top level for `evax inspect` and
// picks the model weights out of training checkpoints (EVA-02, timm, Lightning, plain dicts).
// evax's own run checkpoint directories are evax/train/run_checkpoint.h.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "evax/io/tensor_map.h"
#include "evax/io/torch_pickle.h"

namespace evax {

/// One top-level entry of a weight file, for listings.
struct WeightFileEntry {
  std::string key;          ///< dict key (or tensor name for safetensors)
  std::string description;  ///< e.g. "dict (312 entries, 310 tensors)", "argparse.Namespace"
};

/// What a weight file holds.
struct WeightFileContents {
  std::string path;
  std::string format;                    ///< "torch-zip" or "safetensors"
  std::vector<WeightFileEntry> entries;  ///< the top level, in file order
  /// Every tensor found (dicts, lists, tuples, object state), names joined with '.'; views of
  /// one storage share memory.
  TensorMap tensors;
  std::map<std::string, std::string> metadata;  ///< safetensors `__metadata__`
  std::shared_ptr<const PickleTree> pickle;     ///< torch-zip: the whole unpickled tree
};

/// Reads a weight file, detecting the format by its first bytes. Throws DataError for empty,
/// unknown, legacy (pre-1.6 torch) and malformed files.
WeightFileContents weight_file_read(const std::string& path);

/// The model weights: the first of the top-level keys `model`, `module`, `model_ema`,
/// `state_dict` that holds tensors, else the top level itself. Nested dicts are flattened with
/// '.'; a pickled nn.Module (`torch.save(model)`) gives what its state_dict() would. `chosen_key`
/// receives the key ("" for the top level), `skipped` the number of non-tensor values left out.
/// No dtype conversion. DataError when no tensors are found.
TensorMap weight_file_state_dict(const WeightFileContents& contents,
                                 std::string* chosen_key = nullptr, int64_t* skipped = nullptr);

/// Floating-point tensors cast to `type`; integer and bool tensors (counters, masks) unchanged.
TensorMap tensors_to(const TensorMap& tensors, at::ScalarType type);

}  // namespace evax
