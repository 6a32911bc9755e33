#include "evax/segment/losses.h"

#include "evax/core/error.h"

namespace evax {
namespace {

torch::Tensor resize_to(const torch::Tensor& logits, const torch::Tensor& labels) {
  const int64_t h = labels.size(-2), w = labels.size(-1);
  if (logits.size(2) == h && logits.size(3) == w) return logits;
  namespace F = torch::nn::functional;
  return F::interpolate(logits, F::InterpolateFuncOptions()
                                    .size(std::vector<int64_t>{h, w})
                                    .mode(torch::kBilinear)
                                    .align_corners(false));
}

void check_shapes(const torch::Tensor& logits, const torch::Tensor& labels) {
  if (logits.dim() != 4 || labels.dim() != 3 || logits.size(0) != labels.size(0))
    raise<DataError>("segmentation loss: logits ", logits.sizes(), " and labels ", labels.sizes(),
                     " do not match (expected (B, C, h, w) and (B, H, W))");
}

}  // namespace

torch::Tensor soft_dice_loss(const torch::Tensor& logits, const torch::Tensor& labels) {
  check_shapes(logits, labels);
  auto y = labels.to(torch::kLong);
  auto valid = (y != kSegIgnoreIndex).to(logits.scalar_type()).flatten(1);  // (B, P)
  torch::Tensor prob, target;                                               // (B, K, P)
  if (logits.size(1) == 1) {
    prob = torch::sigmoid(logits).flatten(2);
    target = (y == 1).to(logits.scalar_type()).flatten(1).unsqueeze(1);
  } else {
    const int64_t c = logits.size(1);
    prob = torch::softmax(logits, 1).flatten(2);
    target = torch::one_hot(y.clamp(0, c - 1), c).permute({0, 3, 1, 2}).flatten(2)
                 .to(logits.scalar_type());
  }
  prob = prob * valid.unsqueeze(1);
  target = target * valid.unsqueeze(1);
  auto num = 2 * (prob * target).sum(2) + 1;
  auto den = prob.pow(2).sum(2) + target.pow(2).sum(2) + 1;
  return (1 - num / den).mean();
}

torch::Tensor segmentation_loss(const torch::Tensor& logits_in, const torch::Tensor& labels,
                                const SegLossOptions& o) {
  check_shapes(logits_in, labels);
  auto logits = resize_to(logits_in.to(torch::kFloat32), labels);
  auto y = labels.to(torch::kLong);
  torch::Tensor loss;
  if (logits.size(1) == 1) {
    auto valid = (y != kSegIgnoreIndex).to(torch::kFloat32);
    auto per_pixel = torch::binary_cross_entropy_with_logits(
        logits.squeeze(1), (y == 1).to(torch::kFloat32), {}, {}, at::Reduction::None);
    loss = (per_pixel * valid).mean();  // mmseg: mean over all pixels, ignored ones count as 0
  } else {
    namespace F = torch::nn::functional;
    loss = F::cross_entropy(logits, y, F::CrossEntropyFuncOptions().ignore_index(kSegIgnoreIndex));
  }
  if (o.dice_weight() > 0) loss = loss + o.dice_weight() * soft_dice_loss(logits, labels);
  return loss;
}

}  // namespace evax
