#include "evax/data/preprocess.h"

#include <cmath>

#include "evax/core/error.h"
#include "evax/data/transforms.h"

namespace evax {

double eval_crop_pct(int64_t size) { return size <= 224 ? 0.875 : 1.0; }

torch::Tensor eval_transform(const cv::Mat& unit, int64_t size, double crop_pct, double mean,
                             double std) {
  EVAX_ASSERT(unit.type() == CV_32FC1 && !unit.empty(), "eval_transform wants a CV_32F image");
  EVAX_ASSERT(size > 0 && crop_pct > 0 && crop_pct <= 1 && std > 0);
  // timm's eval transform: Resize(floor(size / crop_pct)) → CenterCrop(size), PIL bicubic.
  const int64_t scaled = static_cast<int64_t>(std::floor(size / crop_pct));
  auto t = resize_shorter(unit_to_tensor(unit), scaled, Interp::kBicubic);
  return normalize(center_crop(t, size, size), mean, std, 3).contiguous();
}

}  // namespace evax
