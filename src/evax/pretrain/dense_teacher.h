// A teacher for the MIM objective trained here, for when no pretrained teacher can be had (the
// demo: MGCA's weights cannot be downloaded). A plain ViT's final-norm patch tokens are trained,
// through a linear `head` applied to every token, to say which findings each patch shows (masks
// with one bit per finding, e.g. synth's masks/findings). MGCA learns its tokens by aligning
// image regions with report words; this teacher learns them from dense synthetic ground truth.
// Its checkpoint then serves as `target.checkpoint` (the head is dropped there).
#pragma once

#include <memory>
#include <string>

#include "evax/core/config.h"
#include "evax/data/loader.h"
#include "evax/data/manifest.h"
#include "evax/models/vit.h"
#include "evax/train/trainer.h"

namespace evax {

/// What a dense teacher run needs besides the optimizer and the loop.
struct DenseTeacherOptions {
  std::string model = "vit_tiny_patch16_224";  ///< registered plain ViT
  int64_t depth = 0;        ///< blocks override (0: the model's)
  int64_t img_size = 224;   ///< input side (the MIM teacher_size it will serve)
  int64_t num_bits = 5;     ///< mask bits = outputs per patch
  std::string manifest;     ///< CSV with a `mask` column of bit masks
  std::string split = "train";
  double flip_p = 0.5;      ///< horizontal flip of image and mask together
  /// Weight of the positive term of the per-patch BCE (findings cover few patches; > 1 keeps the
  /// tokens from settling on "nothing anywhere").
  double pos_weight = 1.0;
  LoaderOptions loader;
  std::string device = "auto";
  bool bf16 = true;       ///< bf16 autocast on CUDA
  bool bf16_cpu = false;  ///< bf16 autocast on CPU too
};

/// Reads model: (name, depth), data: (manifest, split, img_size, num_bits, flip_p, loader),
/// loss.pos_weight, seed, device, bf16 and bf16_cpu.
DenseTeacherOptions dense_teacher_options_from_config(Config& cfg);

class DenseTeacherTask : public Task {
 public:
  DenseTeacherTask(const DenseTeacherOptions& o, int rank, int world, int local_rank = 0);
  std::vector<NamedParam> trainable() override;
  int64_t micro_batches_per_epoch() override { return loader_->batches_per_epoch(); }
  void start_epoch(int64_t epoch, int64_t skip) override { loader_->start_epoch(epoch, skip); }
  MicroStep forward_micro() override;
  /// timm VisionTransformer naming (the head included).
  TensorMap model_state() override;
  void load_model_state(const TensorMap& state) override;
  nlohmann::json run_identity() override;

  /// Per-patch targets (N, num_bits) of a (1, H, W) uint8 bit mask already at the input size:
  /// 1 where any pixel of the patch has the bit.
  static torch::Tensor patch_targets(const torch::Tensor& mask, int64_t patch, int64_t bits);

 private:
  Sample load(int64_t index, Rng& rng) const;

  DenseTeacherOptions opts_;
  torch::Device device_;
  Manifest manifest_;
  VisionTransformer model_{nullptr};
  double mean_ = 0.5, std_ = 0.5;
  std::unique_ptr<Loader> loader_;
};

}  // namespace evax
