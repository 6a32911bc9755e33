// PIL / timm / torchvision reference tensors for the transform and sampler tests
// (tools/pil_reference.py). Empty without EVAX_PYTHON: tests then skip.
#pragma once

#include <string>

#include "python_reference.h"

namespace evax::test {

inline const TensorMap& pil_reference() {
  static const TensorMap map = python_reference("pil_reference.py", "data/pil_reference.safetensors");
  return map;
}

/// The reference tensor `name`.
inline at::Tensor ref(const std::string& name) { return reference_tensor(pil_reference(), name); }

}  // namespace evax::test
