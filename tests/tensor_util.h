// Comparing what the code under test computed or wrote: tensors, tensor maps (weights,
// checkpoints), JSON files.
#pragma once

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <string>

#include "evax/core/files.h"
#include "evax/io/tensor_map.h"

namespace evax::test {

/// max |a - b| over the elements, computed in fp64; the shapes must agree.
inline double max_abs(const at::Tensor& a, const at::Tensor& b) {
  REQUIRE(a.sizes() == b.sizes());
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

/// The largest max_abs over two maps of the same names in the same order.
inline double max_abs_diff(const TensorMap& a, const TensorMap& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i].first == b[i].first);
    m = std::max(m, max_abs(a[i].second, b[i].second));
  }
  return m;
}

/// The largest max |a - b| / max(1, max |a|) over two maps of the same names in the same order:
/// the absolute difference for tensors of magnitude <= 1, relative to the tensor's scale above
/// (BatchNorm running variances of 10-30 carry float32 noise proportional to their size).
inline double max_scaled_diff(const TensorMap& a, const TensorMap& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i].first == b[i].first);
    const double scale =
        std::max(1.0, a[i].second.numel() ? a[i].second.to(torch::kFloat64).abs().max().item<double>() : 0.0);
    m = std::max(m, max_abs(a[i].second, b[i].second) / scale);
  }
  return m;
}

/// Same names in the same order, and bit-identical tensors.
inline bool same_maps(const TensorMap& a, const TensorMap& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].first != b[i].first || !torch::equal(a[i].second, b[i].second)) return false;
  return true;
}

/// A JSON file, parsed.
inline nlohmann::json read_json(const std::string& path) {
  return nlohmann::json::parse(read_file(path));
}

}  // namespace evax::test
