// The EVA-X MIM objective: negative cosine similarity between the student's lm_head(norm(tokens))
// and target features, at masked patches only, in fp32. Targets come from a frozen teacher ViT
// (MGCA-ViT-B/16 by default: its final-norm patch tokens) or, without a teacher checkpoint, from
// per-patch normalised pixels.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

#include "evax/models/vit.h"

namespace evax {

/// −mean over masked patches of cos(pred, target). pred, target (B, N, C); mask (B, N) bool.
/// Computed in fp32 whatever the input dtype.
torch::Tensor mim_cosine_loss(const torch::Tensor& pred, const torch::Tensor& target,
                              const torch::Tensor& mask);

/// Produces (B, N, C) target features for a batch of teacher-view images.
class MimTarget {
 public:
  virtual ~MimTarget() = default;
  /// Feature width C (the student's lm_head output).
  virtual int64_t dim() const = 0;
  /// Targets for teacher-normalised images (B, 3, H, W); no gradients.
  virtual torch::Tensor compute(const torch::Tensor& teacher_images) = 0;
  virtual std::string describe() const = 0;
  /// Moves the target's weights (if any) to a device.
  virtual void to(const torch::Device&) {}
};

/// A frozen ViT teacher in eval mode: targets = its final-norm patch tokens (cls dropped).
class TeacherTarget : public MimTarget {
 public:
  TeacherTarget(VisionTransformer teacher, std::string name);
  int64_t dim() const override;
  torch::Tensor compute(const torch::Tensor& teacher_images) override;
  std::string describe() const override { return "teacher " + name_; }
  void to(const torch::Device& d) override { teacher_->to(d); }
  VisionTransformer& model() { return teacher_; }

 private:
  VisionTransformer teacher_;
  std::string name_;
};

/// Pixel targets: each patch's pixels (one channel; the inputs are grey), normalised to zero mean
/// and unit variance per patch (MAE's norm_pix). Lets pretraining run without a teacher checkpoint.
class PixelTarget : public MimTarget {
 public:
  explicit PixelTarget(int64_t patch_size) : patch_(patch_size) {}
  int64_t dim() const override { return patch_ * patch_; }
  torch::Tensor compute(const torch::Tensor& teacher_images) override;
  std::string describe() const override { return "normalised pixels"; }

 private:
  int64_t patch_;
};

}  // namespace evax
