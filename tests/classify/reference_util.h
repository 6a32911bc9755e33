// torch / timm reference losses for the classify tests (tools/classify_reference.py). Empty without
// EVAX_PYTHON: tests then skip.
#pragma once

#include <string>

#include "python_reference.h"

namespace evax::test {

inline const TensorMap& classify_reference() {
  static const TensorMap map =
      python_reference("classify_reference.py", "classify/loss_reference.safetensors");
  return map;
}

/// The reference tensor `name`.
inline at::Tensor loss_ref(const std::string& name) {
  return reference_tensor(classify_reference(), name);
}

}  // namespace evax::test
