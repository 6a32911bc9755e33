// The MIM pretraining task: an EVA-X student sees a masked crop, a frozen teacher (or the pixels)
// sees the same crop unmasked, and the student's lm_head(norm(tokens)) regresses the targets at the
// masked patches (negative cosine). Plugs into the shared trainer.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "evax/core/config.h"
#include "evax/data/loader.h"
#include "evax/data/manifest.h"
#include "evax/data/transforms.h"
#include "evax/models/vit.h"
#include "evax/pretrain/masking.h"
#include "evax/pretrain/objective.h"
#include "evax/train/trainer.h"

namespace evax {

/// Everything a pretraining run needs besides the optimizer and the loop.
struct PretrainOptions {
  std::string model = "eva_x_tiny_patch16";  ///< registered student architecture
  int64_t depth = 0;                         ///< blocks override for small experiments (0: the model's)
  double drop_path = 0.0;                    ///< stochastic depth of the last block
  bool stop_grad_conv1 = true;               ///< 0.1× gradient into the patch embedding (EVA-02)
  /// Optional student initialisation, loaded strictly: every tensor must fit the student except
  /// `mask_token` and `lm_head.*` (the MIM parts: a file without them, or with an lm_head for
  /// another target width, leaves them freshly initialised); rope buffers are recomputed. Any
  /// other missing or unexpected key is a DataError naming the file and listing them.
  std::string init_checkpoint;
  std::string target = "teacher";            ///< "teacher" or "pixels"
  std::string teacher = "mgca_vit_base_patch16";  ///< registered teacher architecture
  /// Teacher weights (required for target: teacher), loaded strictly: every teacher tensor must
  /// come from the file. Dropped are only what the naming drops (an MGCA Lightning file keeps
  /// its image backbone `img_encoder_q.model.*` and drops the text encoder, projections and
  /// prototypes; rope buffers are recomputed) and a classifier `head.*` (the teacher has none).
  /// Anything else missing or unexpected is a DataError naming the file and listing them.
  std::string teacher_checkpoint;
  /// Blocks of the teacher (0: the registered model's); for teachers trained here (the demo's).
  int64_t teacher_depth = 0;
  std::string manifest;                      ///< pretraining manifest (CSV)
  std::string split = "train";               ///< rows used ("all" for every row)
  TwoViewOptions views;                      ///< crops, flip, normalisations
  MaskingOptions masking;                    ///< grid follows views.student_size / 16
  LoaderOptions loader;                      ///< batch size per rank, workers, seed
  std::string device = "auto";               ///< "auto" (CUDA when present), "cpu" or "cuda"
  bool bf16 = true;                          ///< bf16 autocast on CUDA
  /// bf16 autocast on CPU as well (fast only with AVX512-BF16/AMX; checks the bf16 path anywhere)
  bool bf16_cpu = false;
};

/// Reads model:, target:, data:, masking:, seed and device from a pretraining config.
PretrainOptions pretrain_options_from_config(Config& cfg);

class PretrainTask : public Task {
 public:
  /// `rank`/`world` shard the data (DistributedSampler semantics); `local_rank` picks the GPU.
  PretrainTask(const PretrainOptions& o, int rank, int world, int local_rank = 0);

  std::vector<NamedParam> trainable() override;
  /// The student's buffers.
  std::vector<torch::Tensor> buffers() override;
  int64_t micro_batches_per_epoch() override;
  void start_epoch(int64_t epoch, int64_t skip) override;
  MicroStep forward_micro() override;
  /// What forward_micro() does with the loader's next batch, on a given one: student images
  /// (B, 3, S, S), teacher-view images (B, 3, T, T) and the (B, N) bool mask (patch order). The
  /// seam for tests that pin inputs, mask and weights (tests/pretrain/mim_reference_test.cpp).
  MicroStep forward_batch(const torch::Tensor& images, const torch::Tensor& teacher_images,
                          const torch::Tensor& mask);
  /// Student weights in EVA-02/asuka naming (mask_token, lm_head, norm, mlp.w12 …), which the
  /// released-checkpoint loaders (eva_x.py, timm) accept.
  TensorMap model_state() override;
  void load_model_state(const TensorMap& state) override;
  /// model, depth, img_size, target, target_dim, batch_size (per rank), seed, images.
  nlohmann::json run_identity() override;

  VisionTransformer& student() { return student_; }
  const MimTarget& target() const { return *target_; }
  int64_t dataset_size() const { return manifest_.size(); }

 private:
  Sample load_sample(int64_t index, Rng& rng) const;
  bool autocast_on() const { return opts_.bf16 && (device_.is_cuda() || opts_.bf16_cpu); }

  PretrainOptions opts_;
  torch::Device device_;
  Manifest manifest_;
  VisionTransformer student_{nullptr};
  std::unique_ptr<MimTarget> target_;
  std::unique_ptr<Loader> loader_;
};

}  // namespace evax
