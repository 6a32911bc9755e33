#include "evax/classify/model.h"

#include "evax/core/error.h"
#include "evax/models/layer_decay.h"
#include "evax/models/registry.h"

namespace evax {

VisionTransformer classifier_build(const ClassifierOptions& o) {
  if (o.num_classes() < 1) raise<ConfigError>("a classifier needs num_classes >= 1, got ", o.num_classes());
  ViTOptions v = model_options(o.model());
  if (o.img_size() % v.patch_size() != 0)
    raise<ConfigError>("img_size ", o.img_size(), " is not a multiple of the patch size ",
                       v.patch_size());
  v.img_size(o.img_size()).num_classes(o.num_classes()).drop_path_rate(o.drop_path()).mim_dim(0);
  if (o.depth() > 0) v.depth(o.depth());
  return VisionTransformer(v);
}

ParamGroups classifier_param_groups(VisionTransformerImpl& model, double weight_decay,
                                    double layer_decay, const std::vector<std::string>& only) {
  const int64_t depth = model.options().depth();
  std::vector<NamedParam> params;
  for (auto& p : model.named_parameters(true)) {
    if (!p.value().requires_grad()) continue;  // frozen: not optimised (as param_groups_lrd)
    bool keep = only.empty();
    for (const auto& prefix : only) keep = keep || p.key().rfind(prefix, 0) == 0;
    if (keep) params.push_back({p.key(), p.value()});
  }
  return make_param_groups(
      std::move(params), weight_decay,
      [&](const std::string& name) { return vit_layer_decay_scale(name, depth, layer_decay); },
      eva_x_finetune_no_weight_decay);
}

}  // namespace evax
