// Mixed precision for forward passes: the C++ equivalent of `with torch.autocast(device, dtype)`.
#pragma once

#include <ATen/autocast_mode.h>

namespace evax {

/// While alive, ops on `device` tensors run in `dtype` where autocast's policy allows (matmuls,
/// convolutions, SDPA) and in float32 where it demands (softmax, norms, losses). Restores the
/// previous state on destruction; nests. `enabled = false` makes it a no-op.
class Autocast {
 public:
  Autocast(bool enabled, at::DeviceType device, at::ScalarType dtype = at::kBFloat16)
      : on_(enabled), device_(device) {
    if (!on_) return;
    prev_ = at::autocast::is_autocast_enabled(device_);
    prev_dtype_ = at::autocast::get_autocast_dtype(device_);
    at::autocast::set_autocast_enabled(device_, true);
    at::autocast::set_autocast_dtype(device_, dtype);
    at::autocast::increment_nesting();
  }
  ~Autocast() {
    if (!on_) return;
    // As torch.autocast's __exit__: the cast-weight cache lives for the outermost region.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(device_, prev_);
    at::autocast::set_autocast_dtype(device_, prev_dtype_);
  }
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  bool on_;
  at::DeviceType device_;
  bool prev_ = false;
  at::ScalarType prev_dtype_ = at::kBFloat16;
};

}  // namespace evax
