// Grad-CAM and Grad-CAM++ for the ViT classifiers, computed as the `grad-cam` package
// (pytorch-grad-cam 1.5: base_cam.py, grad_cam.py, grad_cam_plusplus.py, utils/image.py) does
// for a ViT with EVA-X's reshape transform (grad_cam/get_cams.py):
//
//   A = the target layer's output (B, 1 + N, D), cls token dropped, reshaped to (B, D, H/16, W/16);
//   G = dA of Σ_b logit_b[class_b] (ClassifierOutputTarget: the raw logit, summed over the batch);
//   w = mean of G over the grid (Grad-CAM) or the package's Grad-CAM++ weights;
//   cam = ReLU(Σ_d w_d·A_d); per image (cam − min) / (1e-7 + max(cam − min)) on the grid;
//   bilinear resize to (H, W) (cv2.resize INTER_LINEAR on float32: half-pixel centres, edges
//   clamped; the same numbers as torch's bilinear, align_corners false, for these upsamplings);
//   then the package's aggregation: max(·, 0), mean over the target layers, the same scaling.
//
// Example:
//   GradCamResult r = grad_cam(*model, pixels, /*classes=*/{}, GradCamOptions());
//   r.maps;     // (B, H, W) in [0, 1], for each image's top class
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "evax/models/vit.h"

namespace evax {

/// How the maps are computed.
struct GradCamOptions {
  /// "gradcam" (the package's GradCAM) or "gradcam++" (its GradCAMPlusPlus).
  TORCH_ARG(std::string, method) = "gradcam";
  /// Target layers by module name: blocks.<i>.norm1, blocks.<i>.norm2 or blocks.<i> (the block's
  /// output); i may be negative (from the end). Empty: the last block's norm1 (EVA-X).
  TORCH_ARG(std::vector<std::string>, layers) = {};
};

/// A target layer resolved on a model.
struct CamLayer {
  std::string name;      ///< as given
  int64_t block = 0;     ///< block index, 0-based
  BlockTapPoint point = BlockTapPoint::kNorm1;
};

/// Resolves a target layer name for a model of `depth` blocks. ConfigError naming the value and
/// the valid names when it is not one of them.
CamLayer cam_layer(const std::string& name, int64_t depth);

/// The maps and what they explain.
struct GradCamResult {
  torch::Tensor maps;     ///< (B, H, W) float32 in [0, 1], on the input's device
  torch::Tensor logits;   ///< (B, K) float32, the forward the gradients came from
  torch::Tensor classes;  ///< (B) int64: the class each map explains
};

/// Grad-CAM maps of `pixels` (B, 3, H, W), H and W multiples of the patch size, for the classes
/// in `classes`: empty = each image's top logit (the package's default targets), one value =
/// every image, else one per image. The model (with a head) runs in eval mode for the call; its
/// parameters are left as they are (their gradients are neither computed nor touched). ConfigError
/// for an unknown method or layer, a class out of range or a model without head.
GradCamResult grad_cam(VisionTransformerImpl& model, const torch::Tensor& pixels,
                       const std::vector<int64_t>& classes, const GradCamOptions& o = {});

/// The package's scale_cam_image without a target size: per map of (B, ...) maps,
/// (x − min) / (1e-7 + max(x − min)).
torch::Tensor cam_scale(const torch::Tensor& maps);

}  // namespace evax
