// Ordered name -> tensor lists: what the checkpoint readers return and the writers take. A vector
// rather than a map keeps the file order, which the listings and round trips preserve.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace evax {

/// Named tensors in file (or insertion) order; names are unique.
using TensorMap = std::vector<std::pair<std::string, at::Tensor>>;

/// The tensor called `name`, or nullptr (linear search).
inline const at::Tensor* find(const TensorMap& map, const std::string& name) {
  for (const auto& [key, tensor] : map)
    if (key == name) return &tensor;
  return nullptr;
}

/// The tensor called `name`, or nullptr (linear search).
inline at::Tensor* find(TensorMap& map, const std::string& name) {
  for (auto& [key, tensor] : map)
    if (key == name) return &tensor;
  return nullptr;
}

/// Whether `map` holds a tensor called `name`.
inline bool contains(const TensorMap& map, const std::string& name) {
  return find(map, name) != nullptr;
}

}  // namespace evax
