#include "evax/train/ema.h"

#include <algorithm>
#include <cmath>

#include "evax/core/error.h"

namespace evax {

EmaOptions ema_options_from_config(const ConfigView& v, EmaOptions o) {
  o.decay(
      v.get<double>("decay", o.decay(),
                    "decay of the exponential moving average of the weights, per optimizer step"));
  v.check("decay", o.decay() >= 0 && o.decay() < 1, "must be in [0, 1) (0 = no EMA)");
  o.warmup(v.get<bool>(
      "warmup", o.warmup(),
      "ramp the decay up as timm's ModelEmaV3 does: min(decay, 1 - (1 + t)^-0.75) at step t"));
  o.evaluate(
      v.get<bool>("evaluate", o.evaluate(),
                  "evaluate the EMA weights too at every evaluation (metrics prefixed \"ema/\")"));
  return o;
}

ModelEma::ModelEma(const std::vector<NamedParam>& params, const std::vector<torch::Tensor>& buffers,
                   EmaOptions o)
    : o_(std::move(o)) {
  torch::NoGradGuard ng;
  for (const auto& np : params) {
    names_.push_back("ema.param." + np.name);
    live_.push_back(np.param);
  }
  for (size_t i = 0; i < buffers.size(); ++i) {
    names_.push_back("ema.buffer." + std::to_string(i));
    live_.push_back(buffers[i]);
  }
  for (const auto& t : live_) avg_.push_back(t.detach().clone());
}

double ModelEma::decay_at(int64_t step) const {
  if (!o_.warmup()) return o_.decay();
  return std::min(o_.decay(), 1.0 - std::pow(1.0 + static_cast<double>(step), -0.75));
}

void ModelEma::update(int64_t step) {
  torch::NoGradGuard ng;
  const double d = decay_at(step);
  for (size_t i = 0; i < live_.size(); ++i) {
    if (at::isFloatingType(avg_[i].scalar_type()))
      avg_[i].lerp_(live_[i].detach(), 1.0 - d);
    else
      avg_[i].copy_(live_[i]);
  }
}

void ModelEma::swap() {
  torch::NoGradGuard ng;
  for (size_t i = 0; i < live_.size(); ++i) {
    torch::Tensor keep = live_[i].detach().clone();
    live_[i].detach().copy_(avg_[i]);
    avg_[i].copy_(keep);
  }
}

TensorMap ModelEma::state() const {
  TensorMap out;
  for (size_t i = 0; i < avg_.size(); ++i) out.emplace_back(names_[i], avg_[i].detach().cpu().clone());
  return out;
}

void ModelEma::load_state(const TensorMap& state, const std::string& origin) {
  torch::NoGradGuard ng;
  for (size_t i = 0; i < avg_.size(); ++i) {
    const at::Tensor* t = find(state, names_[i]);
    if (!t) raise<DataError>("checkpoint '", origin, "' has no EMA tensor ", names_[i],
                             " (was it written with ema.decay = 0?)");
    if (!t->sizes().equals(avg_[i].sizes()))
      raise<DataError>("checkpoint '", origin, "': EMA tensor ", names_[i], " has shape ",
                       t->sizes(), ", the model ", avg_[i].sizes());
    avg_[i].copy_(*t);
  }
}

}  // namespace evax
