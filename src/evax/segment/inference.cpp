#include "evax/segment/inference.h"

#include <algorithm>
#include <vector>

#include "evax/core/error.h"

namespace F = torch::nn::functional;

namespace evax {

namespace {

void check_input(const torch::Tensor& x) {
  EVAX_CHECK(DataError,
             x.defined() && x.dim() == 4 && x.size(0) > 0 && x.size(2) > 0 && x.size(3) > 0,
             "segmentation inference wants a (B, C, H, W) input, got ",
             x.defined() ? x.sizes() : torch::IntArrayRef{});
}

// The network's logits checked (a wrong shape is a bug of the forward passed in) and as float
// (half-precision logits from autocast are accumulated in float32, float64 stays).
torch::Tensor checked_logits(const torch::Tensor& logits, int64_t batch) {
  EVAX_ASSERT(
      logits.defined() && logits.dim() == 4 && logits.size(0) == batch && logits.size(1) > 0,
      "segmentation forward must return (B, C, h, w) logits with B = ", batch);
  return logits.scalar_type() == torch::kFloat64 ? logits : logits.to(torch::kFloat32);
}

// mmseg's resize(mode='bilinear', align_corners=False); a same-size resize is the identity.
torch::Tensor bilinear(const torch::Tensor& x, int64_t h, int64_t w) {
  if (x.size(2) == h && x.size(3) == w) return x;
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{h, w})
                               .mode(torch::kBilinear)
                               .align_corners(false));
}

}  // namespace

torch::Tensor seg_whole_logits(const SegForward& forward, const torch::Tensor& input) {
  check_input(input);
  const auto logits = checked_logits(forward(input), input.size(0));
  return bilinear(logits, input.size(2), input.size(3));
}

torch::Tensor seg_slide_logits(const SegForward& forward, const torch::Tensor& input,
                               int64_t crop_h, int64_t crop_w, int64_t stride_h, int64_t stride_w) {
  check_input(input);
  EVAX_CHECK(ConfigError, crop_h >= 1 && crop_w >= 1 && stride_h >= 1 && stride_w >= 1,
             "slide inference needs a crop and a stride >= 1, got crop ", crop_h, "x", crop_w,
             ", stride ", stride_h, "x", stride_w);
  const int64_t b = input.size(0), h = input.size(2), w = input.size(3);
  const int64_t h_grids = std::max<int64_t>(h - crop_h + stride_h - 1, 0) / stride_h + 1;
  const int64_t w_grids = std::max<int64_t>(w - crop_w + stride_w - 1, 0) / stride_w + 1;
  torch::Tensor preds;  // allocated on the first window, when the channel count is known
  auto count = torch::zeros({b, 1, h, w}, input.options().dtype(torch::kFloat32));
  for (int64_t i = 0; i < h_grids; ++i) {
    for (int64_t j = 0; j < w_grids; ++j) {
      const int64_t y2 = std::min(i * stride_h + crop_h, h),
                    x2 = std::min(j * stride_w + crop_w, w);
      const int64_t y1 = std::max<int64_t>(y2 - crop_h, 0), x1 = std::max<int64_t>(x2 - crop_w, 0);
      const auto crop = input.slice(2, y1, y2).slice(3, x1, x2);
      const auto logits = bilinear(checked_logits(forward(crop), b), y2 - y1, x2 - x1);
      if (!preds.defined()) preds = torch::zeros({b, logits.size(1), h, w}, logits.options());
      EVAX_ASSERT(logits.size(1) == preds.size(1), "slide windows gave different channel counts");
      // Adding into the window equals mmseg's adding the zero-padded window logits.
      preds.slice(2, y1, y2).slice(3, x1, x2).add_(logits);
      count.slice(2, y1, y2).slice(3, x1, x2).add_(1);
    }
  }
  return preds / count.to(preds.scalar_type());
}

torch::Tensor seg_inference_logits(const SegForward& forward, const torch::Tensor& input,
                                   const SegInferenceOptions& o) {
  if (o.mode() == "whole") return seg_whole_logits(forward, input);
  if (o.mode() == "slide")
    return seg_slide_logits(forward, input, o.crop_size(), o.crop_size(), o.stride(), o.stride());
  raise<ConfigError>("unknown segmentation inference mode '", o.mode(), "' (whole or slide)");
}

torch::Tensor seg_resize_logits(const torch::Tensor& logits, int64_t height, int64_t width) {
  EVAX_CHECK(DataError, height >= 1 && width >= 1, "cannot resize segmentation logits to ", height,
             "x", width);
  EVAX_ASSERT(logits.defined() && logits.dim() == 4, "seg_resize_logits wants (B, C, h, w)");
  return bilinear(checked_logits(logits, logits.size(0)), height, width);
}

torch::Tensor seg_logits_to_probs(const torch::Tensor& logits) {
  EVAX_ASSERT(logits.defined() && logits.dim() == 4, "seg_logits_to_probs wants (B, C, H, W)");
  return logits.size(1) == 1 ? torch::sigmoid(logits) : torch::softmax(logits, 1);
}

torch::Tensor seg_logits_to_classes(const torch::Tensor& logits, double threshold) {
  EVAX_ASSERT(logits.defined() && logits.dim() == 4, "seg_logits_to_classes wants (B, C, H, W)");
  EVAX_CHECK(DataError, logits.size(1) <= 256, "segmentation logits have ", logits.size(1),
             " channels; class ids are uint8 (at most 256 classes)");
  // mmseg thresholds the sigmoid probability (not the logit against log(t / (1 − t))), so the
  // comparison is made on the same rounded value.
  if (logits.size(1) == 1) return (torch::sigmoid(logits) > threshold).squeeze(1).to(torch::kUInt8);
  return logits.argmax(1).to(torch::kUInt8);
}

SegInferenceResult seg_infer(const SegForward& forward, const torch::Tensor& input, int64_t height,
                             int64_t width, const SegInferenceOptions& o, bool with_probs) {
  const auto logits = seg_resize_logits(seg_inference_logits(forward, input, o), height, width);
  SegInferenceResult r;
  r.classes = seg_logits_to_classes(logits, o.threshold());
  if (with_probs) r.probs = seg_logits_to_probs(logits);
  return r;
}

}  // namespace evax
