#include "evax/pretrain/objective.h"

#include "evax/core/error.h"

namespace F = torch::nn::functional;

namespace evax {

torch::Tensor mim_cosine_loss(const torch::Tensor& pred, const torch::Tensor& target,
                              const torch::Tensor& mask) {
  EVAX_ASSERT(pred.dim() == 3 && pred.sizes() == target.sizes(), "pred ", pred.sizes(), " target ",
              target.sizes());
  EVAX_ASSERT(mask.dim() == 2 && mask.size(0) == pred.size(0) && mask.size(1) == pred.size(1),
              "mask ", mask.sizes());
  auto m = mask.to(torch::kBool);
  // Flatten over the batch: the masked count may differ between images (block masking).
  auto p = pred.index({m}).to(torch::kFloat32);
  auto t = target.index({m}).to(torch::kFloat32);
  EVAX_ASSERT(p.size(0) > 0, "no masked patches in the batch");
  return -F::cosine_similarity(p, t, F::CosineSimilarityFuncOptions().dim(-1)).mean();
}

TeacherTarget::TeacherTarget(VisionTransformer teacher, std::string name)
    : teacher_(std::move(teacher)), name_(std::move(name)) {
  teacher_->eval();
  for (auto& p : teacher_->parameters()) p.set_requires_grad(false);
}

int64_t TeacherTarget::dim() const { return teacher_->options().embed_dim(); }

torch::Tensor TeacherTarget::compute(const torch::Tensor& x) {
  torch::NoGradGuard ng;
  teacher_->eval();  // MGCA's heads carry BatchNorm; a teacher must never train
  return teacher_->forward_features(x).slice(1, 1);
}

torch::Tensor PixelTarget::compute(const torch::Tensor& x) {
  torch::NoGradGuard ng;
  const int64_t b = x.size(0), h = x.size(2) / patch_, w = x.size(3) / patch_;
  auto g = x.select(1, 0).to(torch::kFloat32);  // grey: the three channels are equal
  auto patches = g.reshape({b, h, patch_, w, patch_}).permute({0, 1, 3, 2, 4}).reshape({b, h * w, -1});
  auto mean = patches.mean(-1, true);
  auto var = patches.var(-1, /*unbiased=*/true, /*keepdim=*/true);
  return (patches - mean) / (var + 1e-6).sqrt();
}

}  // namespace evax
