#include "evax/train/optim.h"

#include <cmath>

#include "evax/core/error.h"

namespace evax {

AdamWOptions adamw_options_from_config(const ConfigView& v, AdamWOptions o) {
  o.lr(v.get<double>("lr", o.lr(),
                     "peak learning rate after warmup, used as given: no batch-size scaling (EVA-X "
                     "finetuning's --blr)"));
  v.check("lr", o.lr() > 0, "must be > 0");
  o.min_lr(v.get<double>(
      "min_lr", o.min_lr(),
      "learning rate at the end of the decay (EVA-X's --min_lr; unused by schedule: fixed)"));
  v.check("min_lr", o.min_lr() >= 0 && o.min_lr() <= o.lr(), "must be in [0, lr]");
  o.weight_decay(v.get<double>("weight_decay", o.weight_decay(),
                               "AdamW weight decay; biases, norms, pos_embed and cls_token get "
                               "none (EVA-X's --weight_decay)"));
  v.check("weight_decay", o.weight_decay() >= 0, "must be >= 0");
  o.weight_decay_end(v.get<double>("weight_decay_end", o.weight_decay_end(),
                                   "weight decay reached at the end by a per-step cosine from "
                                   "weight_decay (EVA-02); negative: constant"));
  auto betas = v.get<std::vector<double>>(
      "betas", {o.beta1(), o.beta2()},
      "AdamW decay rates of the running mean of the gradient and of its square");
  v.check("betas", betas.size() == 2 && betas[0] >= 0 && betas[0] < 1 && betas[1] >= 0 && betas[1] < 1,
          "must be [beta1, beta2] with each in [0, 1)");
  o.beta1(betas[0]).beta2(betas[1]);
  o.eps(v.get<double>("eps", o.eps(), "AdamW epsilon added to the denominator"));
  v.check("eps", o.eps() > 0, "must be > 0");
  o.clip_grad(v.get<double>("clip_grad", o.clip_grad(),
                            "clip the gradients' global 2-norm to this (EVA-X's --clip_grad)"));
  v.check("clip_grad", o.clip_grad() >= 0, "must be >= 0 (0 = off)");
  return o;
}

bool no_weight_decay(const std::string& name, const torch::Tensor& p) {
  auto ends = [&](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  return p.dim() <= 1 || ends(".bias") || name == "pos_embed" || name == "cls_token";
}

std::vector<std::string> ParamGroups::names(size_t g) const {
  std::vector<std::string> out;
  for (size_t i = 0; i < params.size(); ++i)
    if (group[i] == g) out.push_back(params[i].name);
  return out;
}

ParamGroups make_param_groups(std::vector<NamedParam> params, double weight_decay,
                              const LrScaleFn& lr_scale, const NoDecayFn& no_decay) {
  ParamGroups out;
  out.params = std::move(params);
  for (const auto& np : out.params) {
    const ParamGroupSpec spec{lr_scale(np.name), no_decay(np.name, np.param) ? 0.0 : weight_decay};
    size_t g = 0;
    while (g < out.specs.size() && !(out.specs[g].lr_scale == spec.lr_scale &&
                                     out.specs[g].weight_decay == spec.weight_decay))
      ++g;
    if (g == out.specs.size()) out.specs.push_back(spec);
    out.group.push_back(g);
  }
  return out;
}

ParamGroups default_param_groups(std::vector<NamedParam> params, double weight_decay) {
  return make_param_groups(
      std::move(params), weight_decay, [](const std::string&) { return 1.0; }, no_weight_decay);
}

AdamW::AdamW(std::vector<NamedParam> params, AdamWOptions o)
    : AdamW(default_param_groups(std::move(params), o.weight_decay()), o) {}

AdamW::AdamW(ParamGroups groups, AdamWOptions o) : groups_(std::move(groups)), opts_(o) {
  EVAX_ASSERT(groups_.group.size() == groups_.params.size(), "ParamGroups: ", groups_.params.size(),
              " parameters but ", groups_.group.size(), " group indices");
  for (size_t i = 0; i < groups_.params.size(); ++i) {
    EVAX_ASSERT(groups_.group[i] < groups_.specs.size(), "ParamGroups: parameter ",
                groups_.params[i].name, " has no group");
    const auto& p = groups_.params[i].param;
    exp_avg_.push_back(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    exp_avg_sq_.push_back(torch::zeros_like(p, torch::MemoryFormat::Preserve));
  }
  lr_.assign(groups_.specs.size(), 0.0);
  for (const auto& s : groups_.specs) wd_.push_back(s.weight_decay);
  set_lr(o.lr());
  EVAX_CHECK(ConfigError, o.fused() == "auto" || o.fused() == "on" || o.fused() == "off",
             "AdamW fused must be auto, on or off, got '", o.fused(), "'");
  if (o.fused() != "off" && !groups_.params.empty()) {
    const auto& first = groups_.params[0].param;
    bool same = true;  // one device and float32: the kernel's requirements
    for (const auto& np : groups_.params)
      same = same && np.param.device() == first.device() && np.param.scalar_type() == torch::kFloat32;
    fused_ = same && (o.fused() == "on" || first.is_cuda());
    if (fused_)
      fused_steps_ = torch::zeros({static_cast<int64_t>(groups_.params.size())},
                                  torch::TensorOptions().device(first.device()));
  }
}

void AdamW::set_lr(double lr) {
  for (size_t g = 0; g < lr_.size(); ++g) lr_[g] = lr * groups_.specs[g].lr_scale;
}

void AdamW::set_weight_decay(double wd) {
  for (size_t g = 0; g < wd_.size(); ++g)
    if (groups_.specs[g].weight_decay > 0) wd_[g] = wd;
}

void AdamW::zero_grad() {
  for (auto& np : groups_.params)
    if (np.param.grad().defined()) np.param.mutable_grad() = torch::Tensor();
}

double AdamW::clip_grad_norm(double max_norm) {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> norms;
  for (const auto& np : groups_.params)
    if (np.param.grad().defined()) norms.push_back(np.param.grad().to(torch::kFloat32).norm(2));
  if (norms.empty()) return 0.0;
  const double total = torch::stack(norms).norm(2).item<double>();
  if (max_norm > 0 && total > max_norm) {
    const double coef = max_norm / (total + 1e-6);
    for (auto& np : groups_.params)
      if (np.param.grad().defined()) np.param.grad().mul_(coef);
  }
  return total;
}

void AdamW::step(double lr, double wd) {
  set_lr(lr);
  set_weight_decay(wd);
  step();
}

void AdamW::step() {
  if (fused_) return fused_step();
  torch::NoGradGuard ng;
  ++step_;
  const double b1 = opts_.beta1(), b2 = opts_.beta2();
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(b2, static_cast<double>(step_));
  const double bc2_sqrt = std::sqrt(bc2);
  for (size_t i = 0; i < groups_.params.size(); ++i) {
    auto& p = groups_.params[i].param;
    const auto& g = p.grad();
    if (!g.defined()) continue;
    const double lr = lr_[groups_.group[i]], wd = wd_[groups_.group[i]];
    const double step_size = lr / bc1;
    // Decoupled weight decay, then the Adam update (torch.optim.AdamW's order and formulas).
    if (wd != 0.0) p.mul_(1.0 - lr * wd);
    exp_avg_[i].lerp_(g, 1.0 - b1);
    exp_avg_sq_[i].mul_(b2).addcmul_(g, g, 1.0 - b2);
    auto denom = (exp_avg_sq_[i].sqrt() / bc2_sqrt).add_(opts_.eps());
    p.addcdiv_(exp_avg_[i], denom, -step_size);
  }
}

void AdamW::fused_step() {
  torch::NoGradGuard ng;
  ++step_;
  // The kernel reads the (already incremented) step from a tensor per parameter, as
  // torch.optim.AdamW increments its state_steps before calling it; one fill for all of them.
  fused_steps_.fill_(static_cast<double>(step_));
  for (size_t g = 0; g < groups_.specs.size(); ++g) {
    std::vector<torch::Tensor> p, grads, m, v, steps;
    for (size_t i = 0; i < groups_.params.size(); ++i) {
      if (groups_.group[i] != g || !groups_.params[i].param.grad().defined()) continue;
      p.push_back(groups_.params[i].param);
      grads.push_back(groups_.params[i].param.grad());
      m.push_back(exp_avg_[i]);
      v.push_back(exp_avg_sq_[i]);
      steps.push_back(fused_steps_[static_cast<int64_t>(i)]);
    }
    if (p.empty()) continue;
    at::_fused_adamw_(p, grads, m, v, /*max_exp_avg_sqs=*/{}, steps, lr_[g], opts_.beta1(),
                      opts_.beta2(), wd_[g], opts_.eps(), /*amsgrad=*/false, /*maximize=*/false);
  }
}

TensorMap AdamW::state() const {
  TensorMap out;
  out.emplace_back("step", torch::tensor(step_, torch::kInt64));
  for (size_t i = 0; i < groups_.params.size(); ++i) {
    out.emplace_back("exp_avg." + groups_.params[i].name, exp_avg_[i]);
    out.emplace_back("exp_avg_sq." + groups_.params[i].name, exp_avg_sq_[i]);
  }
  return out;
}

void AdamW::load_state(const TensorMap& state) {
  const at::Tensor* s = find(state, "step");
  if (!s) raise<DataError>("optimizer state has no `step`");
  torch::NoGradGuard ng;
  for (size_t i = 0; i < groups_.params.size(); ++i) {
    for (auto* pair : {&exp_avg_, &exp_avg_sq_}) {
      const std::string key = (pair == &exp_avg_ ? "exp_avg." : "exp_avg_sq.") + groups_.params[i].name;
      const at::Tensor* t = find(state, key);
      if (!t) raise<DataError>("optimizer state lacks `", key, "`");
      if (t->sizes() != (*pair)[i].sizes())
        raise<DataError>("optimizer state `", key, "` has shape ", t->sizes(), ", expected ",
                         (*pair)[i].sizes());
      (*pair)[i].copy_(*t);
    }
  }
  step_ = s->item<int64_t>();
}

double cosine_schedule(double base, double final, int64_t step, int64_t total, int64_t warmup) {
  // asuka's cosine_scheduler: np.linspace(0, base, warmup) (endpoint included), then
  // final + (base − final)·(1 + cos(π·i / (total − warmup)))/2 for i = step − warmup.
  if (warmup > 0 && step < warmup)
    return warmup == 1 ? 0.0 : base * static_cast<double>(step) / static_cast<double>(warmup - 1);
  const int64_t span = std::max<int64_t>(1, total - warmup);
  const double t = std::min<double>(1.0, static_cast<double>(step - warmup) / span);
  return final + 0.5 * (base - final) * (1.0 + std::cos(M_PI * t));
}

}  // namespace evax
