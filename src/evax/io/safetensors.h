// safetensors files (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}} and one
// data section. Files written here are byte-identical to `safetensors.torch.save_file` output.
#pragma once

#include <map>
#include <string>

#include "evax/io/tensor_map.h"

namespace evax {

/// Reads every tensor of a safetensors file into CPU tensors, in data-offset order; the header's
/// `__metadata__` goes to `metadata` when given. Throws DataError naming the file and the defect.
TensorMap safetensors_load(const std::string& path,
                           std::map<std::string, std::string>* metadata = nullptr);

/// Writes `tensors` (contiguous CPU copies; dtypes F64/F32/F16/BF16/I64/I32/I16/I8/U8/BOOL) and
/// `metadata` atomically: temporary file, fsync, rename. Names must be unique.
void safetensors_save(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace evax
