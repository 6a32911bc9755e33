#include "evax/classify/losses.h"

#include "evax/core/error.h"

namespace evax {

namespace {

void check_2d(const torch::Tensor& x, const char* what) {
  if (!x.defined() || x.dim() != 2)
    raise<InternalError>(what, " must be a defined (B, K) tensor");
}

void check_smoothing(double s, const char* what) {
  if (!(s >= 0.0 && s < 1.0)) raise<ConfigError>(what, ".smoothing must be in [0, 1), got ", s);
}

}  // namespace

torch::Tensor multilabel_bce_loss(const torch::Tensor& logits, const torch::Tensor& targets,
                                  const torch::Tensor& label_mask, const BceLossOptions& options) {
  check_2d(logits, "multilabel_bce_loss: logits");
  if (!targets.defined() || targets.sizes() != logits.sizes())
    raise<InternalError>("multilabel_bce_loss: targets must match logits ", logits.sizes());
  check_smoothing(options.smoothing(), "bce loss");
  auto t = targets.to(logits.scalar_type());
  if (options.smoothing() > 0) t = t * (1.0 - options.smoothing()) + 0.5 * options.smoothing();
  if (!label_mask.defined())
    return torch::nn::functional::binary_cross_entropy_with_logits(logits, t);
  if (label_mask.sizes() != logits.sizes())
    raise<InternalError>("multilabel_bce_loss: label_mask must match logits ", logits.sizes());
  const auto m = label_mask.to(logits.scalar_type());
  // Missing targets may hold anything (NaN included): zero them so 0 · loss stays 0.
  t = torch::where(m > 0, t, torch::zeros_like(t));
  const auto per = torch::nn::functional::binary_cross_entropy_with_logits(
      logits, t, torch::nn::functional::BinaryCrossEntropyWithLogitsFuncOptions().reduction(
                     torch::kNone));
  // clamp_min(1): an all-missing batch gives 0 / 1 = 0 instead of 0 / 0.
  return (per * m).sum() / m.sum().clamp_min(1.0);
}

torch::Tensor cross_entropy_loss(const torch::Tensor& logits, const torch::Tensor& target,
                                 const CrossEntropyLossOptions& options) {
  check_2d(logits, "cross_entropy_loss: logits");
  if (!target.defined() || target.dim() != 1 || target.size(0) != logits.size(0))
    raise<InternalError>("cross_entropy_loss: target must be (B,) class indices");
  check_smoothing(options.smoothing(), "cross-entropy loss");
  const auto logp = torch::log_softmax(logits, -1);
  const auto nll = -logp.gather(-1, target.to(torch::kLong).unsqueeze(1)).squeeze(1);
  if (options.smoothing() == 0) return nll.mean();
  const auto smooth = -logp.mean(-1);
  return ((1.0 - options.smoothing()) * nll + options.smoothing() * smooth).mean();
}

torch::Tensor soft_target_cross_entropy(const torch::Tensor& logits, const torch::Tensor& target) {
  check_2d(logits, "soft_target_cross_entropy: logits");
  if (!target.defined() || target.sizes() != logits.sizes())
    raise<InternalError>("soft_target_cross_entropy: target must match logits ", logits.sizes());
  return (-target.to(logits.scalar_type()) * torch::log_softmax(logits, -1)).sum(-1).mean();
}

torch::Tensor one_hot_to_index(const torch::Tensor& labels, const torch::Tensor& label_mask) {
  check_2d(labels, "one_hot_to_index: labels");
  const auto l = labels.to(torch::kCPU, torch::kFloat32);
  const bool known = !label_mask.defined() || label_mask.to(torch::kCPU).min().item<float>() > 0;
  const auto ones = (l == 1).sum(1), zeros = (l == 0).sum(1);
  const bool ok = known && (ones == 1).all().item<bool>() &&
                  (zeros == l.size(1) - 1).all().item<bool>();
  if (!ok)
    raise<DataError>("multi-class labels must be one-hot (exactly one 1, the rest 0, none "
                     "missing) in every row");
  return l.argmax(1).to(labels.device());
}

}  // namespace evax
