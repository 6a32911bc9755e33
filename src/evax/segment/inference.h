// Segmentation inference as mmseg 0.29's EncoderDecoder does it (evax_finetune.md §3.1): logits of
// the whole input or of overlapping slide windows, each resized to its input region (bilinear,
// align_corners false), then resized to the ORIGINAL image size and turned into class ids — one
// output channel: sigmoid > threshold (EVA-X: 0.3); several: argmax.
//
// Example (one image, original size h0 × w0, `x` the resized, normalised (1, 3, H, W) input):
//   auto fwd = [&](const torch::Tensor& in) { return model->forward(in); };
//   auto logits = seg_resize_logits(seg_inference_logits(fwd, x, opts), h0, w0);
//   torch::Tensor ids = seg_logits_to_classes(logits, opts.threshold())[0];  // (h0, w0) uint8
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>

namespace evax {

/// A segmentation network: (B, 3, H, W) input → (B, C, h, w) logits at any stride.
using SegForward = std::function<torch::Tensor(const torch::Tensor&)>;

/// How a segmentation model is applied at test time (mmseg test_cfg) and binarised.
struct SegInferenceOptions {
  /// "whole": one forward pass over the input (EVA-X's test_cfg); "slide": mmseg's overlapping
  /// crop_size² windows every `stride` pixels, averaged where they overlap.
  TORCH_ARG(std::string, mode) = "whole";
  /// Slide window side in input pixels (square; EVA-X's img_size).
  TORCH_ARG(int64_t, crop_size) = 512;
  /// Slide window step in input pixels.
  TORCH_ARG(int64_t, stride) = 341;
  /// One output channel: foreground where sigmoid(logit) > threshold (mmseg's default 0.3).
  TORCH_ARG(double, threshold) = 0.3;
};

/// mmseg whole_inference (encode_decode): forward(input) resized bilinearly (align_corners false)
/// to the input's H × W. Returns float (B, C, H, W) on the input's device.
torch::Tensor seg_whole_logits(const SegForward& forward, const torch::Tensor& input);

/// mmseg slide_inference: h_grids = max(H − crop_h + stride_h − 1, 0) / stride_h + 1 (integer
/// division; same for w), window (y1, x1) = (i·stride_h, j·stride_w) clamped so that it ends inside
/// the image (y2 = min(y1 + crop_h, H), y1 = max(y2 − crop_h, 0)), each window's logits resized to
/// the window, summed into the image and divided by how many windows cover each pixel. A crop
/// larger than the image uses the whole image (no padding). ConfigError for a crop or stride < 1.
torch::Tensor seg_slide_logits(const SegForward& forward, const torch::Tensor& input,
                               int64_t crop_h, int64_t crop_w, int64_t stride_h, int64_t stride_w);

/// seg_whole_logits or seg_slide_logits (square crop and stride) by `o.mode()` (ConfigError for
/// another mode or a crop / stride < 1).
torch::Tensor seg_inference_logits(const SegForward& forward, const torch::Tensor& input,
                                   const SegInferenceOptions& o);

/// (B, C, h, w) logits resized bilinearly (align_corners false) to height × width, as float
/// (mmseg's rescale to ori_shape). DataError for a size < 1.
torch::Tensor seg_resize_logits(const torch::Tensor& logits, int64_t height, int64_t width);

/// Class probabilities of (B, C, H, W) logits: sigmoid of the foreground when C = 1 (then (B, 1,
/// H, W) holds P(class 1)), softmax over C otherwise (mmseg's inference()).
torch::Tensor seg_logits_to_probs(const torch::Tensor& logits);

/// (B, H, W) uint8 class ids of (B, C, H, W) logits: C = 1 → 1 where sigmoid(logit) > threshold
/// (strictly), else 0; C > 1 → argmax over C (the first on ties). DataError for C > 256.
torch::Tensor seg_logits_to_classes(const torch::Tensor& logits, double threshold = 0.3);

/// What seg_infer returns.
struct SegInferenceResult {
  torch::Tensor classes;  ///< (B, H0, W0) uint8 class ids at the original size
  torch::Tensor probs;    ///< (B, C, H0, W0) float, seg_logits_to_probs; undefined unless asked
};

/// The whole chain: logits by `o` of the (B, 3, H, W) input, resized to the original
/// height × width, classes (and, with `with_probs`, the probabilities).
SegInferenceResult seg_infer(const SegForward& forward, const torch::Tensor& input, int64_t height,
                             int64_t width, const SegInferenceOptions& o, bool with_probs = false);

}  // namespace evax
